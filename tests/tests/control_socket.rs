//! The control socket and `evshift ctl` against real clusters: two event stores, a control
//! store, the real evshift binary.

mod control_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use control_support::{ctl, insert_route, run, stored_route, ControlSetup};
use evshift_tests::{evshift_binary, free_port, seed_events};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_lists_every_store_with_its_reachability() {
    // A third store where nothing listens.
    let ghost_port = free_port();
    let setup = ControlSetup::start_with(|config| {
        config.with_store(
            "ghost",
            &format!("postgres://postgres@127.0.0.1:{ghost_port}/app"),
            false,
        )
    })
    .await;

    let stores = setup.ctl(&["--json", "stores"]).await.ok_json();
    let by_id = |id: &str| -> Value {
        stores
            .as_array()
            .expect("a list")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no store {id} in {stores}"))
    };
    let shared = by_id("shared");
    assert_eq!(shared["reachable"], true, "{shared}");
    assert_eq!(shared["default"], true);
    assert_eq!(shared["database"], "postgres");
    assert_eq!(
        shared["address"],
        format!("127.0.0.1:{}", setup.shared.port())
    );
    let dedicated = by_id("dedicated");
    assert_eq!(dedicated["reachable"], true, "{dedicated}");
    assert_eq!(dedicated["default"], false);
    let ghost = by_id("ghost");
    assert_eq!(ghost["reachable"], false, "{ghost}");
    assert!(ghost["error"].as_str().is_some_and(|e| !e.is_empty()));

    // The table: a header and one aligned row per store.
    let text = setup.ctl(&["stores"]).await;
    let lines: Vec<&str> = text.ok().lines().collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("ID "), "{lines:?}");
    let column = lines[0].find("ADDRESS").unwrap();
    for line in &lines[1..] {
        assert_eq!(line.find("127.0.0.1"), Some(column), "{lines:?}");
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ghost ") && l.contains(" no")));

    // EVSHIFT_SOCKET stands in for --socket.
    let mut command = std::process::Command::new(evshift_binary().unwrap());
    command
        .args(["ctl", "stores"])
        .env("EVSHIFT_SOCKET", &setup.socket);
    run(command).await.ok();

    // The socket is private to its owner.
    let mode = std::fs::metadata(&setup.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_places_a_tenant_without_events_and_routes_show_it() {
    let setup = ControlSetup::start().await;
    let tenant = Uuid::new_v4();

    // Before: no route, the default store.
    let route = setup.route_of(tenant).await;
    assert_eq!(route["store"], "shared");
    assert_eq!(route["assigned"], false);

    let out = setup
        .ctl(&["assign", &tenant.to_string(), "dedicated"])
        .await;
    assert_eq!(
        out.ok().trim(),
        format!("tenant {tenant} assigned to store dedicated")
    );

    // In this process's table as soon as assign returned, and in the control store.
    let route = setup.route_of(tenant).await;
    assert_eq!(route["store"], "dedicated", "{route}");
    assert_eq!(route["assigned"], true);
    assert_eq!(route["migration_state"], Value::Null);
    let control = setup.control_db().await;
    assert_eq!(
        stored_route(&control, tenant).await.as_deref(),
        Some("dedicated")
    );

    let listing = setup.ctl(&["routes"]).await;
    let row = listing
        .ok()
        .lines()
        .find(|l| l.starts_with(&tenant.to_string()))
        .unwrap_or_else(|| panic!("{tenant} not in {listing:?}"));
    assert!(row.contains("dedicated") && row.contains("yes"), "{row}");
    let all = setup.ctl(&["--json", "routes"]).await.ok_json();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    // Still without events, it may be placed again.
    setup
        .ctl(&["assign", &tenant.to_string(), "shared"])
        .await
        .ok();
    assert_eq!(setup.route_of(tenant).await["store"], "shared");
    assert_eq!(
        stored_route(&control, tenant).await.as_deref(),
        Some("shared")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_refuses_tenants_with_events_unknown_stores_and_bad_arguments() {
    let setup = ControlSetup::start().await;
    // Events in the store that is NOT the default: every store is asked.
    let busy = Uuid::new_v4();
    let dedicated = setup.dedicated.connect("postgres").await.unwrap();
    seed_events(&dedicated, &[busy], 3, 3).await.unwrap();

    let out = setup.ctl(&["assign", &busy.to_string(), "shared"]).await;
    let line = out.refused("TenantHasEventsError");
    assert!(
        line.contains("dedicated") && line.contains("migrate"),
        "{line}"
    );
    let control = setup.control_db().await;
    assert_eq!(stored_route(&control, busy).await, None);

    let fresh = Uuid::new_v4();
    let out = setup.ctl(&["assign", &fresh.to_string(), "nowhere"]).await;
    let line = out.refused("StoreNotFoundError");
    assert!(line.contains("nowhere"), "{line}");

    // The JSON form of an error: the reply on stdout, the one line on stderr, status 1.
    let out = setup
        .ctl(&["--json", "assign", &fresh.to_string(), "nowhere"])
        .await;
    out.refused("StoreNotFoundError");
    let reply: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(reply["error"]["kind"], "StoreNotFoundError");

    // Bad command lines are clap usage errors, status 2.
    for args in [
        &["assign", "not-a-uuid", "shared"][..],
        &["assign", &fresh.to_string()],
        &["frobnicate"],
    ] {
        let out = setup.ctl(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_control_store_routes_answer_and_assign_is_refused() {
    let setup = ControlSetup::start_with(|mut config| {
        config.control = None;
        config
    })
    .await;
    let routes = setup.ctl(&["--json", "routes"]).await.ok_json();
    assert_eq!(routes, serde_json::json!([]));
    let tenant = Uuid::new_v4().to_string();
    setup
        .ctl(&["assign", &tenant, "dedicated"])
        .await
        .refused("NoControlStoreError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cannot_reach_the_socket_is_one_line_and_status_1() {
    let missing = std::env::temp_dir().join(format!("evshift-none-{}.sock", free_port()));
    let out = ctl(&missing, &["stores"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains(&missing.display().to_string()));
}

/// A raw client of the socket: one line out, one line back.
struct RawSocket {
    reader: RawSocketReader,
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// The reading side of a raw client.
struct RawSocketReader(BufReader<tokio::net::unix::OwnedReadHalf>);

impl RawSocketReader {
    async fn reply(&mut self) -> Value {
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(30), self.0.read_line(&mut reply))
            .await
            .expect("a reply in time")
            .unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
    }
}

impl RawSocket {
    async fn connect(setup: &ControlSetup) -> RawSocket {
        let stream = UnixStream::connect(&setup.socket).await.unwrap();
        let (read, writer) = stream.into_split();
        RawSocket {
            reader: RawSocketReader(BufReader::new(read)),
            writer,
        }
    }

    async fn request(&mut self, line: &[u8]) -> Value {
        self.writer.write_all(line).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
        self.reader.reply().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_invalid_request_replies_and_the_socket_keeps_answering() {
    let setup = ControlSetup::start().await;
    let mut socket = RawSocket::connect(&setup).await;
    let bad: [&[u8]; 9] = [
        b"this is not json",
        b"{\"command\":\"frobnicate\"}",
        b"{\"command\":\"routes\",\"tenant\":\"not-a-uuid\"}",
        b"{\"command\":\"assign\",\"tenant\":\"7f8e2c4a-1111-4222-8333-444455556666\"}",
        b"{\"tenant\":\"7f8e2c4a-1111-4222-8333-444455556666\"}",
        b"[\"stores\"]",
        b"",
        b"\xff\xfe\xfd",
        b"{\"command\":\"stores\",\"verbose\":true}",
    ];
    for line in bad {
        let reply = socket.request(line).await;
        assert_eq!(
            reply["error"]["kind"],
            "InvalidRequestError",
            "{:?} -> {reply}",
            String::from_utf8_lossy(line)
        );
        assert!(reply["error"]["message"].as_str().is_some());
    }
    // Same connection, still answering.
    let reply = socket.request(b"{\"command\":\"routes\"}").await;
    assert_eq!(reply["ok"], serde_json::json!([]), "{reply}");
    let reply = socket.request(b"{\"command\":\"stores\"}").await;
    assert_eq!(reply["ok"].as_array().map(Vec::len), Some(2), "{reply}");

    // A line over 64 KiB: an error reply, then the connection is closed.
    let stream = UnixStream::connect(&setup.socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let huge = vec![b'x'; 100 * 1024];
    // The server may close before it read everything; the write's outcome does not matter.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&huge).await;
        let _ = write.write_all(b"\n").await;
    });
    let mut long = RawSocketReader(BufReader::new(read));
    let reply = long.reply().await;
    assert_eq!(reply["error"]["kind"], "InvalidRequestError", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    let mut rest = Vec::new();
    // EOF, or a reset because unread bytes were discarded: either way, nothing more.
    let _ = long.0.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    writer.await.unwrap();

    // Other connections are unaffected.
    let reply = socket.request(b"{\"command\":\"routes\"}").await;
    assert!(reply.get("ok").is_some(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_written_by_another_instance_appear_without_restart() {
    // Periodic refresh is off (an hour): only LISTEN/NOTIFY can bring these changes in.
    let setup = ControlSetup::start().await;
    let control = setup.control_db().await;
    let tenant = Uuid::new_v4();

    insert_route(&control, tenant, "dedicated").await;
    setup.wait_for_store(tenant, "dedicated", true).await;

    // A migration phase written by another instance shows too.
    control
        .execute(
            "UPDATE tenant_routing SET migration_state = 'DUAL_WRITE', \
             target_store_id = 'shared', migration_id = 42 WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + control_support::DEADLINE;
    loop {
        let route = setup.route_of(tenant).await;
        if route["migration_state"] == "DUAL_WRITE" {
            assert_eq!(route["target_store"], "shared");
            assert_eq!(route["migration_id"], 42);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{route}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An active migration refuses assign.
    setup
        .ctl(&["assign", &tenant.to_string(), "shared"])
        .await
        .refused("TenantMigratingError");

    // A deleted route: back to the default store.
    control
        .execute(
            "DELETE FROM tenant_routing WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    setup.wait_for_store(tenant, "shared", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_store_outage_keeps_routes_in_memory_and_the_refresher_reconnects() {
    let setup = ControlSetup::start().await;
    let before = Uuid::new_v4();
    setup
        .ctl(&["assign", &before.to_string(), "dedicated"])
        .await
        .ok();

    setup.control.stop_immediate().await.unwrap();

    // Routing needs no control store: the table in memory answers.
    let route = setup.route_of(before).await;
    assert_eq!(route["store"], "dedicated", "{route}");
    // Writing a route does.
    let during = Uuid::new_v4();
    setup
        .ctl(&["assign", &during.to_string(), "dedicated"])
        .await
        .refused("ControlStoreUnavailableError");

    setup.control.start_again().await.unwrap();

    // A route written by someone else after the restart reaches this process: the refresher
    // reconnected and listens again (periodic refresh is off).
    let control = setup.control_db().await;
    let after = Uuid::new_v4();
    insert_route(&control, after, "dedicated").await;
    setup.wait_for_store(after, "dedicated", true).await;

    // And the control socket's own connection comes back on the next command.
    setup
        .ctl(&["assign", &during.to_string(), "dedicated"])
        .await
        .ok();
    assert_eq!(
        stored_route(&control, during).await.as_deref(),
        Some("dedicated")
    );
}

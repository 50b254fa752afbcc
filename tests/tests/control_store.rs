//! evshift's start-up with a control store: the schema, several instances sharing one control
//! store, an unreachable control store, and the control socket's file.

mod control_support;

use std::process::Command;

use control_support::{
    ctl, run, start_clusters, stored_route, with_refresh_ms, NO_PERIODIC_REFRESH_MS,
};
use evshift_tests::{evshift_binary, free_port, EvshiftConfig, EvshiftProcess, PgCluster};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

/// Runs `evshift serve` with `config`, which must make it exit at start-up with status 1.
async fn serve_expecting_failure(config: &EvshiftConfig) -> control_support::CtlOutput {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config.to_toml()).unwrap();
    let mut command = Command::new(evshift_binary().unwrap());
    command.arg("serve").arg("--config").arg(file.path());
    let out = tokio::time::timeout(control_support::DEADLINE, run(command))
        .await
        .expect("evshift should have exited at start-up");
    assert_eq!(out.code, Some(1), "{out:?}");
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("evshift: "))
        .count();
    assert_eq!(errors, 1, "one error line: {out:?}");
    out
}

fn two_store_config(
    shared: &PgCluster,
    dedicated: &PgCluster,
    control: &PgCluster,
) -> EvshiftConfig {
    EvshiftConfig::new(free_port())
        .with_store("shared", &shared.url("postgres"), true)
        .with_store("dedicated", &dedicated.url("postgres"), false)
        .with_control(&control.url("postgres"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_share_one_control_store() {
    let (shared, dedicated, control) = start_clusters().await;
    let a = two_store_config(&shared, &dedicated, &control);
    let b = two_store_config(&shared, &dedicated, &control);
    // Both apply the schema at the same moment; the advisory lock serialises them.
    let (text_a, text_b) = (
        with_refresh_ms(&a, NO_PERIODIC_REFRESH_MS),
        with_refresh_ms(&b, NO_PERIODIC_REFRESH_MS),
    );
    let (proxy_a, proxy_b) = tokio::try_join!(
        EvshiftProcess::start(&text_a),
        EvshiftProcess::start(&text_b)
    )
    .expect("both instances start");

    // One control store, one schema: a route assigned through A reaches B.
    let tenant = Uuid::new_v4();
    ctl(
        &a.control_socket,
        &["assign", &tenant.to_string(), "dedicated"],
    )
    .await
    .ok();
    let deadline = std::time::Instant::now() + control_support::DEADLINE;
    loop {
        let route = ctl(
            &b.control_socket,
            &["--json", "routes", &tenant.to_string()],
        )
        .await
        .ok_json();
        if route["store"] == "dedicated" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw the route: {route}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Restarting an instance re-applies the schema (idempotent) and loads the routes.
    let mut proxy_a = proxy_a;
    proxy_a.restart().await.expect("restart A");
    let route = ctl(
        &a.control_socket,
        &["--json", "routes", &tenant.to_string()],
    )
    .await
    .ok_json();
    assert_eq!(route["store"], "dedicated", "{route}");
    let client = control.connect("postgres").await.unwrap();
    assert_eq!(
        stored_route(&client, tenant).await.as_deref(),
        Some("dedicated")
    );
    drop(proxy_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_half_written_migrations_and_notifies_changes() {
    let (shared, dedicated, control) = start_clusters().await;
    let config = two_store_config(&shared, &dedicated, &control);
    let _proxy = EvshiftProcess::start(&config.to_toml()).await.unwrap();
    let client = control.connect("postgres").await.unwrap();
    let tenant = Uuid::new_v4();
    for bad in [
        "INSERT INTO tenant_routing (tenant_id, store_id, migration_state) \
         VALUES ($1, 'shared', 'MOVING')",
        "INSERT INTO tenant_routing (tenant_id, store_id, migration_state) \
         VALUES ($1, 'shared', 'DUAL_WRITE')",
    ] {
        let error = client.execute(bad, &[&tenant]).await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::CHECK_VIOLATION), "{bad}");
    }

    // Every change is announced on evshift_routing with the tenant id.
    let (_listener, mut payloads) = listen(&control, "evshift_routing").await;
    for change in [
        "INSERT INTO tenant_routing (tenant_id, store_id) VALUES ($1, 'shared')",
        "UPDATE tenant_routing SET store_id = 'dedicated' WHERE tenant_id = $1",
        "DELETE FROM tenant_routing WHERE tenant_id = $1",
    ] {
        client.execute(change, &[&tenant]).await.unwrap();
        let payload = tokio::time::timeout(control_support::DEADLINE, payloads.recv())
            .await
            .expect("a notification in time")
            .expect("the listening connection is open");
        assert_eq!(payload, tenant.to_string(), "{change}");
    }
}

/// A connection that listens on `channel` (keep the client), and the payloads of its
/// notifications.
async fn listen(
    cluster: &PgCluster,
    channel: &str,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(&cluster.url("postgres"), NoTls)
        .await
        .unwrap();
    let (sender, receiver) = mpsc::unbounded_channel();
    // tokio-postgres hands out notifications only through poll_message.
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message {
                let _ = sender.send(note.payload().to_string());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    (client, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_control_store_fails_start_up_with_one_line() {
    let store = PgCluster::start("shared").await.unwrap();
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let config = EvshiftConfig::new(free_port())
        .with_store("shared", &store.url("postgres"), true)
        .with_control(&nowhere);
    let out = serve_expecting_failure(&config).await;
    assert!(out.stderr.contains("control store unavailable"), "{out:?}");
    assert!(!config.control_socket.exists(), "no socket is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_control_socket_is_refused_and_a_stale_one_replaced() {
    let store = PgCluster::start("shared").await.unwrap();
    let first = EvshiftConfig::new(free_port()).with_store("shared", &store.url("postgres"), true);
    let mut proxy = EvshiftProcess::start(&first.to_toml()).await.unwrap();

    // Another instance configured with the same socket path does not start. (Run directly:
    // the harness's EvshiftProcess removes its socket path when a start fails.)
    let mut second =
        EvshiftConfig::new(free_port()).with_store("shared", &store.url("postgres"), true);
    second.control_socket = first.control_socket.clone();
    let out = serve_expecting_failure(&second).await;
    assert!(
        out.stderr
            .contains("another process serves the control socket"),
        "{out:?}"
    );
    ctl(&first.control_socket, &["stores"]).await.ok();

    // SIGKILL leaves the socket file behind; the next start replaces it.
    proxy.kill().unwrap();
    assert!(first.control_socket.exists());
    proxy.restart().await.unwrap();
    ctl(&first.control_socket, &["stores"]).await.ok();

    // A path that is not a socket is never removed.
    let mut third =
        EvshiftConfig::new(free_port()).with_store("shared", &store.url("postgres"), true);
    let plain = tempfile::NamedTempFile::new().unwrap();
    third.control_socket = plain.path().to_path_buf();
    let out = serve_expecting_failure(&third).await;
    assert!(out.stderr.contains("not a socket"), "{out:?}");
    assert!(plain.path().is_file());
}

//! Bad migration commands: unknown tenants, stores and migrations, a tenant sent to the store
//! it is on, a target whose schema differs, malformed socket lines. Each gets one clear error
//! and changes nothing.

mod control_support;
mod migration_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use evshift_tests::{count_events, seed_events, tenant_ids};
use migration_support::{MigrationSetup, TEST_MIGRATION};
use serde_json::Value;
use uuid::Uuid;

/// A database `odd` on the dedicated cluster whose `events.payload` is `json`, not `jsonb`.
const ODD_SCHEMA: &str = "CREATE TABLE events (
    global_position bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,
    aggregate_id uuid NOT NULL, aggregate_type varchar(255) NOT NULL,
    event_type varchar(255) NOT NULL, tenant_id uuid, actor_id varchar(255),
    version integer NOT NULL, timestamp timestamptz NOT NULL, payload json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), txid xid8)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_refused_and_change_nothing() {
    let setup = MigrationSetup::start_with(TEST_MIGRATION, |config| config).await;
    let tenant = tenant_ids(1)[0];
    let source = setup.shared_db().await;
    seed_events(&source, &[tenant], 100, 10).await.unwrap();
    let t = tenant.to_string();
    let unknown = Uuid::new_v4().to_string();

    let refusals: [(&[&str], &str); 12] = [
        (
            &["migrate", &unknown, "--to", "dedicated"],
            "TenantNotFoundError",
        ),
        (&["migrate", &t, "--to", "nowhere"], "StoreNotFoundError"),
        (&["migrate", &t, "--to", "shared"], "SameStoreError"),
        (
            &["migrate", &t, "--to", "dedicated", "--batch-size", "0"],
            "InvalidRequestError",
        ),
        (&["status", "999"], "MigrationNotFoundError"),
        (&["status", &t], "MigrationNotFoundError"),
        (&["watch", "999"], "MigrationNotFoundError"),
        (&["pause", "999"], "MigrationNotFoundError"),
        (&["resume", &t], "MigrationNotFoundError"),
        (&["abort", "999"], "MigrationNotFoundError"),
        (&["audit", "999"], "MigrationNotFoundError"),
        (&["audit", &unknown], "MigrationNotFoundError"),
    ];
    for (args, kind) in refusals {
        let line = setup.ctl(args).await.refused(kind).to_string();
        assert!(line.len() < 300, "{line}");
    }
    // Arguments that are not ids at all are usage errors.
    for args in [&["pause", "abc"][..], &["status", "-1"], &["migrate", &t]] {
        assert_eq!(setup.ctl(args).await.code, Some(2), "{args:?}");
    }

    // Malformed lines on the socket: one InvalidRequestError each, the connection stays usable.
    let socket = UnixStream::connect(&setup.config.control_socket).unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut writer = socket;
    for line in [
        r#"{"command":"migrate","tenant":"nope","to":"dedicated"}"#,
        r#"{"command":"migrate","tenant":"7f8e2c4a-1111-4222-8333-444455556666"}"#,
        r#"{"command":"pause"}"#,
        r#"{"command":"status","migration":"abc"}"#,
        r#"{"command":"abort","migration":-4}"#,
        r#"{"command":"audit","migration":"1","force":true}"#,
        "migrate everything now",
    ] {
        writer.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(
            reply["error"]["kind"], "InvalidRequestError",
            "{line}: {reply}"
        );
    }
    writer.write_all(b"{\"command\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["ok"], serde_json::json!([]));

    // Nothing changed anywhere.
    let control = setup.control_db().await;
    for table in ["tenant_migrations", "tenant_routing", "migration_audit_log"] {
        let rows: i64 = control
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table}");
    }
    let target = setup.dedicated_db().await;
    assert_eq!(count_events(&target, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_another_schema_is_refused() {
    let (shared, dedicated, control) = control_support::start_clusters().await;
    dedicated.create_database("odd").await.unwrap();
    let odd = dedicated.connect("odd").await.unwrap();
    odd.batch_execute(ODD_SCHEMA).await.unwrap();
    dedicated.create_database("empty").await.unwrap();
    let config = evshift_tests::EvshiftConfig::new(evshift_tests::free_port())
        .with_store("shared", &shared.url("postgres"), true)
        .with_store("odd", &dedicated.url("odd"), false)
        .with_store("empty", &dedicated.url("empty"), false)
        .with_control(&control.url("postgres"));
    let _proxy = evshift_tests::EvshiftProcess::start(&migration_support::config_text(
        &config,
        TEST_MIGRATION,
    ))
    .await
    .unwrap();
    let tenant = tenant_ids(1)[0];
    let source = shared.connect("postgres").await.unwrap();
    seed_events(&source, &[tenant], 1_000, 10).await.unwrap();

    let refused = control_support::ctl(
        &config.control_socket,
        &["migrate", &tenant.to_string(), "--to", "odd"],
    )
    .await;
    let line = refused.refused("SchemaMismatchError");
    assert!(
        line.contains("events.payload is json, expected jsonb"),
        "{line}"
    );
    let tables: i64 = odd
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing created on a store with another schema");

    // A database without the schema gets it, and the copy proceeds.
    let output = control_support::ctl(
        &config.control_socket,
        &["--json", "migrate", &tenant.to_string(), "--to", "empty"],
    )
    .await
    .ok_json();
    let id = output["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + migration_support::MIGRATION_DEADLINE;
    loop {
        let status = control_support::ctl(
            &config.control_socket,
            &["--json", "status", &id.to_string()],
        )
        .await
        .ok_json();
        if status["state"] == "DUAL_WRITE" && status["events_copied"] == 1_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let empty = dedicated.connect("empty").await.unwrap();
    evshift_tests::assert_same_events(&source, &empty, tenant)
        .await
        .unwrap();
}

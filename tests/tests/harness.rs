//! Tests of the test harness itself, against real PostgreSQL servers.

use anyhow::{Context, Result};
use evshift_tests::{
    append_event, apply_event_store_schema, assert_same_events, count_events, seed_events,
    single_store_config, tenant_aggregates, tenant_event_rows, tenant_ids, AppendOutcome,
    EvshiftProcess, PgCluster,
};
use uuid::Uuid;

/// A started cluster with database `app` holding the event-store schema.
async fn store(name: &str) -> Result<PgCluster> {
    let cluster = PgCluster::start(name).await?;
    cluster.create_database("app").await?;
    apply_event_store_schema(&cluster.connect("app").await?).await?;
    Ok(cluster)
}

#[tokio::test]
async fn two_clusters_run_side_by_side_and_share_nothing() -> Result<()> {
    let (a, b) = tokio::try_join!(PgCluster::start("a"), PgCluster::start("b"))?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert!(a.is_running() && b.is_running());

    a.connect("postgres")
        .await?
        .batch_execute("CREATE TABLE only_in_a (x int)")
        .await?;
    let in_b = b
        .connect("postgres")
        .await?
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a'", &[])
        .await?;
    assert!(in_b.is_none(), "a table created in a is visible in b");

    // The TCP URL works too (trust on loopback).
    let (client, connection) = tokio_postgres::connect(&a.url("postgres"), tokio_postgres::NoTls)
        .await
        .context("connect by url")?;
    tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test]
async fn schema_applies_twice_with_the_library_names() -> Result<()> {
    let cluster = store("schema").await?;
    let client = cluster.connect("app").await?;
    apply_event_store_schema(&client).await?;

    let constraints: Vec<String> = client
        .query(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = 'events'::regclass
              ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        constraints,
        [
            "events_event_id_key",
            "events_pkey",
            "uq_events_aggregate_version"
        ]
    );
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'events'",
            &[],
        )
        .await?
        .get(0);
    // Three constraint indexes plus the eight listed in eventsource-sql.md.
    assert_eq!(indexes, 11);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN
               ('events', 'snapshots', 'projection_checkpoints', 'event_outbox')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(tables, 4);
    let horizon: String = client
        .query_one("SELECT eventsource_feed_horizon()", &[])
        .await?
        .get(0);
    assert!(horizon.parse::<u64>().is_ok(), "horizon {horizon:?}");
    Ok(())
}

#[tokio::test]
async fn seeding_three_tenants_gives_exact_counts_and_streams() -> Result<()> {
    let cluster = store("seed").await?;
    let client = cluster.connect("app").await?;
    let tenants = tenant_ids(3);

    let summary = seed_events(&client, &tenants, 1000, 10).await?;
    assert_eq!(summary.total_events, 3000);
    assert_eq!(summary.aggregates_per_tenant, 100);
    assert_eq!(count_events(&client, None).await?, 3000);
    for &tenant in &tenants {
        assert_eq!(count_events(&client, Some(tenant)).await?, 1000);
        let aggregates = tenant_aggregates(&client, tenant).await?;
        assert_eq!(aggregates.len(), 100);
        assert!(aggregates.iter().all(|&(_, version)| version == 10));
    }
    assert_eq!(count_events(&client, Some(Uuid::nil())).await?, 0);

    // Every stream holds versions 1..=10 exactly once and starts with OrderCreated.
    let bad_streams: i64 = client
        .query_one(
            "SELECT count(*) FROM (
                SELECT aggregate_id FROM events GROUP BY aggregate_id
                HAVING min(version) <> 1 OR max(version) <> 10 OR count(*) <> 10
                    OR count(*) FILTER (WHERE event_type = 'OrderCreated' AND version = 1) <> 1
             ) s",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(bad_streams, 0);
    Ok(())
}

#[tokio::test]
async fn append_event_follows_optimistic_concurrency() -> Result<()> {
    let cluster = store("append").await?;
    let mut client = cluster.connect("app").await?;
    let tenant = tenant_ids(1)[0];
    seed_events(&client, &[tenant], 20, 10).await?;
    let (aggregate, version) = tenant_aggregates(&client, tenant).await?[0];
    assert_eq!(version, 10);

    let appended = append_event(&mut client, tenant, aggregate, 10).await?;
    let AppendOutcome::Appended {
        version,
        global_position,
        ..
    } = appended
    else {
        panic!("expected an append, got {appended:?}");
    };
    assert_eq!(version, 11);
    assert!(global_position > 20);

    let stale = append_event(&mut client, tenant, aggregate, 10).await?;
    assert_eq!(
        stale,
        AppendOutcome::VersionMismatch {
            expected: 10,
            actual: 11
        }
    );

    let fresh = append_event(&mut client, tenant, Uuid::new_v4(), 0).await?;
    assert!(matches!(fresh, AppendOutcome::Appended { version: 1, .. }));
    assert_eq!(count_events(&client, Some(tenant)).await?, 22);
    Ok(())
}

#[tokio::test]
async fn stop_immediate_then_start_again_keeps_the_data() -> Result<()> {
    let cluster = store("restart").await?;
    let port = cluster.port();
    let tenants = tenant_ids(2);
    {
        let client = cluster.connect("app").await?;
        seed_events(&client, &tenants, 500, 5).await?;
    }
    // An append acknowledged just before the crash must survive it.
    let mut client = cluster.connect("app").await?;
    let (aggregate, version) = tenant_aggregates(&client, tenants[0]).await?[0];
    let appended = append_event(&mut client, tenants[0], aggregate, version).await?;
    assert!(matches!(appended, AppendOutcome::Appended { .. }));
    let before = tenant_event_rows(&client, tenants[0]).await?;

    cluster.stop_immediate().await?;
    assert!(!cluster.is_running());
    assert!(cluster.connect("app").await.is_err());

    cluster.start_again().await?;
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    let client = cluster.connect("app").await?;
    assert_eq!(count_events(&client, None).await?, 1001);
    assert_eq!(tenant_event_rows(&client, tenants[0]).await?, before);
    assert!(cluster
        .log_contents()
        .contains("database system was interrupted"));
    Ok(())
}

#[tokio::test]
async fn compare_finds_a_changed_and_a_missing_row() -> Result<()> {
    let (a, b) = tokio::try_join!(store("cmp-a"), store("cmp-b"))?;
    let (client_a, client_b) = (a.connect("app").await?, b.connect("app").await?);
    let tenants = tenant_ids(2);
    // Different interleaving on each side: only global_position differs, which is ignored.
    seed_events(&client_a, &tenants, 200, 10).await?;
    seed_events(&client_b, &[tenants[1], tenants[0]], 200, 10).await?;
    assert_same_events(&client_a, &client_b, tenants[0]).await?;

    let changed: Uuid = client_b
        .query_one(
            "UPDATE events SET payload = payload || '{\"quantity\": 99}'
              WHERE event_id = (SELECT min(event_id::text)::uuid FROM events WHERE tenant_id = $1)
              RETURNING event_id",
            &[&tenants[0]],
        )
        .await?
        .get(0);
    let report = assert_same_events(&client_a, &client_b, tenants[0])
        .await
        .expect_err("a changed payload must be reported")
        .to_string();
    assert!(report.contains(&changed.to_string()), "{report}");
    assert!(report.contains("payload: a="), "{report}");
    assert!(
        report.contains("1 changed, 0 only in a, 0 only in b"),
        "{report}"
    );

    client_b
        .execute("DELETE FROM events WHERE event_id = $1", &[&changed])
        .await?;
    let report = assert_same_events(&client_a, &client_b, tenants[0])
        .await
        .expect_err("a missing row must be reported")
        .to_string();
    assert!(
        report.contains("0 changed, 1 only in a, 0 only in b"),
        "{report}"
    );
    // The other tenant is untouched.
    assert_same_events(&client_a, &client_b, tenants[1]).await?;
    Ok(())
}

#[tokio::test]
async fn use_auth_switches_host_authentication() -> Result<()> {
    let mut cluster = PgCluster::start("auth").await?;
    cluster.set_password("app", "s3cret'x").await?;
    cluster.use_auth("scram-sha-256").await?;
    assert!(cluster.connect_as("postgres", "app", None).await.is_err());
    assert!(cluster
        .connect_as("postgres", "app", Some("wrong"))
        .await
        .is_err());
    cluster
        .connect_as("postgres", "app", Some("s3cret'x"))
        .await?;
    // The URL form percent-encodes the password.
    let url = cluster.url_with_password("app", "s3cret'x", "postgres");
    let (_client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    drop(connection);
    // Administrative connections use the always-trusted unix socket.
    cluster.connect("postgres").await?;

    cluster.set_md5_password("legacy", "old").await?;
    cluster.use_auth("md5").await?;
    cluster
        .connect_as("postgres", "legacy", Some("old"))
        .await?;

    cluster.use_auth("trust").await?;
    cluster.connect_as("postgres", "app", None).await?;
    assert!(cluster.use_auth("ident").await.is_err());
    Ok(())
}

/// A stand-in for `evshift serve --config FILE`: a Python listener on the configured port, so
/// that the process handling is tested before the proxy exists.
const FAKE_EVSHIFT: &str = r#"#!/usr/bin/env python3
import socket, sys, tomllib
with open(sys.argv[3], "rb") as f:
    host, port = tomllib.load(f)["listen"].rsplit(":", 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, int(port)))
server.listen()
print("fake evshift listening", flush=True)
while True:
    server.accept()[0].close()
"#;

#[tokio::test]
async fn evshift_process_starts_kills_and_restarts() -> Result<()> {
    if std::process::Command::new("python3")
        .args(["-c", "import tomllib"])
        .output()
        .map_or(true, |out| !out.status.success())
    {
        eprintln!("skipped: needs python3 >= 3.11 for the stand-in binary");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fake = dir.path().join("fake-evshift");
    std::fs::write(&fake, FAKE_EVSHIFT)?;
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let port = evshift_tests::free_port();
    let config = single_store_config(port, "postgres://postgres@127.0.0.1:1/app");
    let mut process = EvshiftProcess::start_with_binary(&fake, &config).await?;
    assert_eq!(process.addr().port(), port);
    assert_eq!(
        process.url("app", "db"),
        format!("postgres://app@127.0.0.1:{port}/db")
    );
    assert!(process.is_running());
    assert!(std::fs::read_to_string(process.config_path())?.contains("[[stores]]"));

    process.kill()?;
    assert!(!process.is_running());
    assert!(tokio::net::TcpStream::connect(process.addr())
        .await
        .is_err());

    process.restart().await?;
    assert!(process.is_running());
    tokio::net::TcpStream::connect(process.addr()).await?;
    assert_eq!(
        process
            .log_contents()
            .matches("fake evshift listening")
            .count(),
        2
    );

    // A binary that exits at once is reported with its output, not waited on for 10 s.
    let failing = dir.path().join("failing-evshift");
    std::fs::write(&failing, "#!/bin/sh\necho bad config >&2\nexit 2\n")?;
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let error = EvshiftProcess::start_with_binary(&failing, &config)
        .await
        .err()
        .context("a port in use must be reported")?;
    assert!(
        format!("{error:#}").contains("already accepts"),
        "{error:#}"
    );
    let other_config = single_store_config(
        evshift_tests::free_port(),
        "postgres://postgres@127.0.0.1:1/app",
    );
    let error = EvshiftProcess::start_with_binary(&failing, &other_config)
        .await
        .err()
        .context("a failing binary must not start")?;
    assert!(format!("{error:#}").contains("bad config"), "{error:#}");
    Ok(())
}

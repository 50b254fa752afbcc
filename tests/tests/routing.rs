//! Tenant routing across two real stores: every eventsource statement lands on the store that
//! holds its tenant, asserted by reading each store directly.

mod common;

use common::routed::*;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_eventsource_statement_lands_on_its_tenants_store() {
    let setup = Routed::start().await;
    let mut client = setup.connect().await;
    let shared = setup.direct_shared().await;
    let dedicated = setup.direct_dedicated().await;

    for (tenant, home, other) in [
        (setup.shared_tenant, &shared, &dedicated),
        (setup.dedicated_tenant, &dedicated, &shared),
    ] {
        // Appends: a new aggregate, then the same aggregate again.
        let aggregate = Uuid::new_v4();
        let (first, _) = append(&mut client, tenant, aggregate).await.unwrap();
        append(&mut client, tenant, aggregate).await.unwrap();
        assert_eq!(count_on(home, tenant).await, 2);
        assert_eq!(count_on(other, tenant).await, 0);

        // The version read names only the aggregate: it must see the home store's rows.
        let version: i32 = client
            .query_one(VERSION_READ, &[&aggregate, &AGGREGATE_TYPE])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, 2);

        // Stream read, event_exists: aggregate and event keys.
        let rows = client
            .query(READ_STREAM, &[&aggregate, &AGGREGATE_TYPE, &1i32])
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get::<_, Uuid>("event_id"), first);
        let exists = client.query(EVENT_EXISTS, &[&first]).await.unwrap();
        assert_eq!(exists.len(), 1);

        // read_all, current_position, read_category: the tenant in the statement.
        let horizon: String = client.query_one(HORIZON, &[]).await.unwrap().get(0);
        let all = client
            .query(READ_ALL, &[&horizon, &0i64, &tenant, &100i64])
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        let position: Option<i64> = client
            .query_one(CURRENT_POSITION, &[&horizon, &tenant])
            .await
            .unwrap()
            .get(0);
        assert!(position.is_some());
        let since = std::time::SystemTime::UNIX_EPOCH;
        let category = client
            .query(READ_CATEGORY, &[&AGGREGATE_TYPE, &tenant, &since])
            .await
            .unwrap();
        assert_eq!(category.len(), 2);

        // Outbox (tenant column) and snapshots (aggregate column).
        let outbox_event = Uuid::new_v4();
        client
            .execute(
                INSERT_OUTBOX,
                &[
                    &outbox_event,
                    &"OrderPlaced",
                    &aggregate,
                    &AGGREGATE_TYPE,
                    &tenant,
                    &serde_json::json!({}),
                ],
            )
            .await
            .unwrap();
        let state = serde_json::json!({"total": 2});
        client
            .execute(SAVE_SNAPSHOT, &[&aggregate, &AGGREGATE_TYPE, &2i32, &state])
            .await
            .unwrap();
        let snapshot = client
            .query_one(LOAD_SNAPSHOT, &[&aggregate, &AGGREGATE_TYPE])
            .await
            .unwrap();
        assert_eq!(snapshot.get::<_, i32>(0), 2);
        for (store, expected) in [(home, 1i64), (other, 0)] {
            let n: i64 = store
                .query_one(
                    "SELECT count(*) FROM event_outbox WHERE tenant_id = $1",
                    &[&tenant],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, expected);
            let n: i64 = store
                .query_one(
                    "SELECT count(*) FROM snapshots WHERE aggregate_id = $1",
                    &[&aggregate],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, expected);
        }
    }

    // Checkpoints carry no tenant: the default store.
    client
        .execute(
            SAVE_CHECKPOINT,
            &[
                &"projection-a",
                &Uuid::new_v4(),
                &"OrderPlaced",
                &7i64,
                &r#"{"s":"shared","k":[7]}"#,
            ],
        )
        .await
        .unwrap();
    let n: i64 = shared
        .query_one("SELECT count(*) FROM projection_checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let n: i64 = dedicated
        .query_one("SELECT count(*) FROM projection_checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_conflict_passes_through_with_its_constraint() {
    let setup = Routed::start().await;
    let mut client = setup.connect().await;
    let aggregate = Uuid::new_v4();
    append(&mut client, setup.dedicated_tenant, aggregate)
        .await
        .unwrap();
    // A second writer that read version 0 too: the unique constraint answers.
    let tx = client.transaction().await.unwrap();
    let event = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: aggregate,
        tenant_id: setup.dedicated_tenant,
        version: 1,
    };
    let error = insert_event(&tx, &event).await.unwrap_err();
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(db.constraint(), Some("uq_events_aggregate_version"));
    tx.rollback().await.unwrap();
    // A duplicate event id names the other constraint.
    let duplicate = NewEvent {
        event_id: event.event_id,
        aggregate_id: Uuid::new_v4(),
        tenant_id: setup.dedicated_tenant,
        version: 1,
    };
    insert_event(&client, &duplicate).await.unwrap();
    let again = NewEvent {
        event_id: event.event_id,
        aggregate_id: Uuid::new_v4(),
        tenant_id: setup.dedicated_tenant,
        version: 1,
    };
    let error = insert_event(&client, &again).await.unwrap_err();
    assert_eq!(
        error.as_db_error().unwrap().constraint(),
        Some("events_event_id_key")
    );
    assert_eq!(
        count_on(&setup.direct_dedicated().await, setup.dedicated_tenant).await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_uses_the_horizon_of_the_store_that_answers() {
    let setup = Routed::start().await;
    let shared = setup.direct_shared().await;
    let mut dedicated = setup.direct_dedicated().await;
    let tenant = setup.dedicated_tenant;
    // Push the shared store's transaction ids far ahead of the dedicated store's, so that a
    // horizon taken on the shared store is meaningless (too high) on the dedicated one.
    let burn: String = (0..3000)
        .map(|_| "BEGIN; SELECT pg_current_xact_id(); COMMIT;")
        .collect();
    shared.batch_execute(&burn).await.unwrap();

    // T1 holds a low position open on the dedicated store; T2 commits a higher one after it.
    let t1 = dedicated.transaction().await.unwrap();
    let slow = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: Uuid::new_v4(),
        tenant_id: tenant,
        version: 1,
    };
    let slow_position = insert_event(&t1, &slow).await.unwrap();
    let other = setup.direct_dedicated().await;
    let fast = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: Uuid::new_v4(),
        tenant_id: tenant,
        version: 1,
    };
    let fast_position = insert_event(&other, &fast).await.unwrap();
    assert!(fast_position > slow_position);

    // The subscriber asks the horizon (answered by the default store) and reads all of the
    // tenant's events: the committed T2 row must not be returned while T1 is open, or the
    // subscriber would skip T1's lower position for ever.
    let client = setup.connect().await;
    let horizon: String = client.query_one(HORIZON, &[]).await.unwrap().get(0);
    let rows = client
        .query(READ_ALL, &[&horizon, &0i64, &tenant, &100i64])
        .await
        .unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get("event_id")).collect();
    assert!(
        !ids.contains(&fast.event_id),
        "a row above the dedicated store's horizon leaked"
    );
    let position: Option<i64> = client
        .query_one(CURRENT_POSITION, &[&horizon, &tenant])
        .await
        .unwrap()
        .get(0);
    assert_eq!(position, None);

    t1.commit().await.unwrap();
    let horizon: String = client.query_one(HORIZON, &[]).await.unwrap().get(0);
    let rows = client
        .query(READ_ALL, &[&horizon, &0i64, &tenant, &100i64])
        .await
        .unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get("event_id")).collect();
    assert_eq!(ids, vec![slow.event_id, fast.event_id]);
    drop(dedicated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_pipelines_across_both_stores() {
    let setup = Routed::start().await;
    let mut client = setup.connect().await;
    let tenants = [setup.shared_tenant, setup.dedicated_tenant];
    let mut aggregates = Vec::new();
    for tenant in tenants {
        let aggregate = Uuid::new_v4();
        append(&mut client, tenant, aggregate).await.unwrap();
        aggregates.push(aggregate);
    }
    // One prepared statement, bound alternately for aggregates on both stores.
    let statement = client.prepare(READ_STREAM).await.unwrap();
    for _ in 0..5 {
        for aggregate in &aggregates {
            let rows = client
                .query(&statement, &[aggregate, &AGGREGATE_TYPE, &1i32])
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].get::<_, Uuid>("aggregate_id"), *aggregate);
        }
    }
    // A pipeline that alternates stores: answers come back in order.
    let futures = (0..40).map(|i| {
        let client = &client;
        let statement = &statement;
        let aggregate = aggregates[i % 2];
        async move {
            let rows = client
                .query(statement, &[&aggregate, &AGGREGATE_TYPE, &1i32])
                .await?;
            Ok::<_, tokio_postgres::Error>((aggregate, rows))
        }
    });
    for (aggregate, rows) in futures::future::try_join_all(futures).await.unwrap() {
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, Uuid>("aggregate_id"), aggregate);
    }
    // Pipelined inserts for both tenants.
    let insert = client.prepare(INSERT_EVENT).await.unwrap();
    let now = std::time::SystemTime::now();
    let payload = serde_json::json!({});
    let inserts = (0..20).map(|i| {
        let client = &client;
        let insert = &insert;
        let tenant = tenants[i % 2];
        let payload = &payload;
        async move {
            let event = Uuid::new_v4();
            let aggregate = Uuid::new_v4();
            client
                .query_one(
                    insert,
                    &[
                        &event,
                        &"E",
                        &AGGREGATE_TYPE,
                        &aggregate,
                        &tenant,
                        &"a",
                        &1i32,
                        &now,
                        payload,
                    ],
                )
                .await
        }
    });
    futures::future::try_join_all(inserts).await.unwrap();
    assert_eq!(
        count_on(&setup.direct_shared().await, setup.shared_tenant).await,
        11
    );
    assert_eq!(
        count_on(&setup.direct_dedicated().await, setup.dedicated_tenant).await,
        11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_store_transaction_fails_with_0a000_and_writes_nothing() {
    let setup = Routed::start().await;
    let mut client = setup.connect().await;
    let tx = client.transaction().await.unwrap();
    let on_shared = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: Uuid::new_v4(),
        tenant_id: setup.shared_tenant,
        version: 1,
    };
    insert_event(&tx, &on_shared).await.unwrap();
    let on_dedicated = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: Uuid::new_v4(),
        tenant_id: setup.dedicated_tenant,
        version: 1,
    };
    let error = insert_event(&tx, &on_dedicated).await.unwrap_err();
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(
        db.message().contains("\"shared\"") && db.message().contains("\"dedicated\""),
        "{}",
        db.message()
    );
    // The transaction is aborted on the store: COMMIT cannot keep the first insert.
    tx.commit().await.unwrap();
    assert_eq!(
        count_on(&setup.direct_shared().await, setup.shared_tenant).await,
        0
    );
    assert_eq!(
        count_on(&setup.direct_dedicated().await, setup.dedicated_tenant).await,
        0
    );
    // The session goes on.
    append(&mut client, setup.dedicated_tenant, Uuid::new_v4())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_fails_only_its_tenants() {
    let setup = Routed::start().await;
    let mut client = setup.connect().await;
    let dedicated_aggregate = Uuid::new_v4();
    append(&mut client, setup.dedicated_tenant, dedicated_aggregate)
        .await
        .unwrap();
    let shared_aggregate = Uuid::new_v4();
    append(&mut client, setup.shared_tenant, shared_aggregate)
        .await
        .unwrap();
    setup.dedicated.stop_immediate().await.unwrap();

    let error = append(&mut client, setup.dedicated_tenant, dedicated_aggregate)
        .await
        .unwrap_err();
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error expected: {error}"));
    assert_eq!(db.code().code(), "08006", "{}", db.message());
    assert!(db.message().contains("\"dedicated\""), "{}", db.message());
    // The shared tenant keeps working, on the same client session and on new ones: its
    // aggregates are found on the default store, which is asked first.
    append(&mut client, setup.shared_tenant, shared_aggregate)
        .await
        .unwrap();
    let mut fresh = setup.connect().await;
    append(&mut fresh, setup.shared_tenant, shared_aggregate)
        .await
        .unwrap();
    // A brand-new aggregate cannot be proven new while a store is unreachable: evshift fails
    // the version read with 08006 rather than guess (DESIGN §3), naming the store.
    let error = append(&mut fresh, setup.shared_tenant, Uuid::new_v4())
        .await
        .unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("\"dedicated\""), "{}", db.message());
    // Reads of the dedicated tenant's aggregate fail too (its lookup cannot be answered
    // wrongly by the shared store), with 08006.
    let error = fresh
        .query(READ_STREAM, &[&dedicated_aggregate, &AGGREGATE_TYPE, &1i32])
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("08006"));
    // The store comes back: its tenant works again without restarting evshift.
    setup.dedicated.start_again().await.unwrap();
    append(&mut client, setup.dedicated_tenant, Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(
        count_on(&setup.direct_dedicated().await, setup.dedicated_tenant).await,
        2
    );
    assert_eq!(
        count_on(&setup.direct_shared().await, setup.shared_tenant).await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_tenant_routes_keyless_statements() {
    let setup = Routed::start().await;
    let client = setup.connect().await;
    let dedicated = setup.direct_dedicated().await;
    dedicated
        .batch_execute("CREATE TABLE notes (v text)")
        .await
        .unwrap();
    // Without a session tenant, a keyless statement goes to the default store, which lacks it.
    assert!(client
        .simple_query("INSERT INTO notes VALUES ('x')")
        .await
        .is_err());
    client
        .simple_query(&format!(
            "SET evshift.tenant_id = '{}'",
            setup.dedicated_tenant
        ))
        .await
        .unwrap();
    client
        .simple_query("INSERT INTO notes VALUES ('y')")
        .await
        .unwrap();
    let n: i64 = dedicated
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // The startup option works the same way.
    let url = format!(
        "{}?options=-c%20evshift.tenant_id%3D{}",
        setup.proxy.url("app", "postgres"),
        setup.dedicated_tenant
    );
    let by_option = common::connect_url(&url).await.unwrap();
    by_option
        .simple_query("INSERT INTO notes VALUES ('z')")
        .await
        .unwrap();
    let n: i64 = dedicated
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_session_settings_follow_the_session_tenant_across_stores() {
    let setup = Routed::start().await;
    let client = setup.connect().await;
    // A session setting made while on the default store...
    client
        .batch_execute("SET application_name = 'evshift-routing-test'")
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "SET evshift.tenant_id = '{}'",
            setup.dedicated_tenant
        ))
        .await
        .unwrap();
    // ...is replayed on the dedicated store the first time the session goes there.
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "evshift-routing-test");
    let port: i32 = client
        .query_one("SELECT current_setting('port')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, i32::from(setup.dedicated.port()));

    // COPY FROM STDIN in the extended protocol (tokio-postgres sends Sync with the Execute;
    // the store ignores it until CopyDone): rows land on the tenant's store and the session
    // goes on.
    let sink = client
        .copy_in::<_, bytes::Bytes>(
            "COPY events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload) FROM STDIN",
        )
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let mut rows = String::new();
    let aggregate = Uuid::new_v4();
    for v in 1..=50 {
        rows.push_str(&format!(
            "{}\tE\tOrder\t{aggregate}\t{}\tcopy\t{v}\t2026-01-01 00:00:00+00\t{{}}\n",
            Uuid::new_v4(),
            setup.dedicated_tenant
        ));
    }
    use futures::SinkExt;
    sink.send(bytes::Bytes::from(rows)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 50);
    let version: i32 = client
        .query_one(VERSION_READ, &[&aggregate, &AGGREGATE_TYPE])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 50);
    assert_eq!(
        count_on(&setup.direct_dedicated().await, setup.dedicated_tenant).await,
        50
    );
    assert_eq!(
        count_on(&setup.direct_shared().await, setup.dedicated_tenant).await,
        0
    );
}

/// Bind and Execute of a statement outside the deferred transaction (a new aggregate's
/// version read) arrive before their Sync: evshift sends them at once, and the Sync that
/// follows must end that batch where it started, without beginning the transaction in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_arriving_after_its_execute_keeps_the_batch_outside_the_transaction() {
    use common::raw::{message, query, RawClient};

    let setup = Routed::start().await;
    let addr = setup.proxy.addr().to_string();
    let (mut client, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    let no_error = |messages: &[common::raw::Received]| {
        assert!(common::raw::first_error(messages).is_none(), "{messages:?}")
    };
    client.send(&query(b"BEGIN")).await.unwrap();
    no_error(&client.read_until_ready().await.unwrap());
    let mut parse = b"v\0SELECT COALESCE(MAX(version), 0) FROM events \
        WHERE aggregate_id = $1 AND aggregate_type = $2\0"
        .to_vec();
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'S', &[]));
    client.send(&batch).await.unwrap();
    no_error(&client.read_until_ready().await.unwrap());

    let aggregate = Uuid::new_v4().to_string();
    let mut bind = b"\0v\0".to_vec();
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&2i16.to_be_bytes());
    for value in [aggregate.as_bytes(), b"Order"] {
        bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
        bind.extend_from_slice(value);
    }
    bind.extend_from_slice(&0i16.to_be_bytes());
    let mut execute = message(b'B', &bind);
    execute.extend(message(b'E', b"\0\0\0\0\0"));
    client.send(&execute).await.unwrap();
    // Give evshift the time to take the Execute on its own; there is nothing to wait for, as
    // the store answers only at the Sync.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    client.send(&message(b'S', &[])).await.unwrap();
    let answers = client.read_until_ready().await.unwrap();
    no_error(&answers);
    let tags: Vec<u8> = answers.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"2DCZ", "{answers:?}");

    // The transaction goes on and commits on the tenant's store.
    let insert = format!(
        "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
         version, timestamp, payload) VALUES ('{}', 'Opened', 'Order', '{aggregate}', '{}', 1, \
         now(), '{{}}')",
        Uuid::new_v4(),
        setup.dedicated_tenant
    );
    client.send(&query(insert.as_bytes())).await.unwrap();
    no_error(&client.read_until_ready().await.unwrap());
    client.send(&query(b"COMMIT")).await.unwrap();
    no_error(&client.read_until_ready().await.unwrap());
    let dedicated = setup.direct_dedicated().await;
    assert!(count_on(&dedicated, setup.dedicated_tenant).await > 0);
}

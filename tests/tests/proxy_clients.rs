//! Real clients through the real proxy in front of one real store: tokio-postgres (simple and
//! extended protocol), psql, pgbench. Every effect is checked on the store directly.

mod common;

use std::time::{Duration, Instant};

use common::raw::RawClient;
use common::SingleStore;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_multi_statement_and_notices() {
    let setup = SingleStore::start().await;
    let client = setup.connect().await;
    let messages = client
        .simple_query("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT v FROM t ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["a", "b"]);
    let direct = setup.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // A NOTICE reaches the client before the command completes.
    let (mut c, _) = RawClient::connect_ready(&setup.proxy_addr(), "app")
        .await
        .unwrap();
    c.send(&common::raw::query(
        b"DO $$ BEGIN RAISE NOTICE 'hello from the store'; END $$",
    ))
    .await
    .unwrap();
    let got = c.read_until_ready().await.unwrap();
    assert!(got.iter().any(
        |m| m.tag == b'N' && String::from_utf8_lossy(&m.body).contains("hello from the store")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_relays_store_parameters_and_issues_own_backend_key() {
    let setup = SingleStore::start().await;
    let (_c, got) = RawClient::connect_ready(&setup.proxy_addr(), "app")
        .await
        .unwrap();
    let params: Vec<String> = got
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| {
            String::from_utf8_lossy(&m.body)
                .split('\0')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for expected in [
        "server_version",
        "client_encoding",
        "DateStyle",
        "integer_datetimes",
        "standard_conforming_strings",
    ] {
        assert!(
            params.iter().any(|p| p == expected),
            "{expected} missing from {params:?}"
        );
    }
    let key = got.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    let evshift_pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    // The store's own pids are small; evshift's are random. They must not be the store's.
    let direct = setup.direct().await;
    let store_pids: Vec<i32> = direct
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!store_pids.contains(&evshift_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_parameters_and_prepared_reuse() {
    let setup = SingleStore::start().await;
    let client = setup.connect().await;
    let id = uuid::Uuid::new_v4();
    let payload = serde_json::json!({"amount": 12.5, "items": [1, 2, 3]});
    let row = client
        .query_one(
            "SELECT $1::int8 + 1, $2::text, $3::bytea, $4::uuid, $5::jsonb, $6::float8",
            &[&41i64, &"héllo", &vec![0u8, 1, 255], &id, &payload, &2.5f64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "héllo");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
    assert_eq!(row.get::<_, uuid::Uuid>(3), id);
    assert_eq!(row.get::<_, serde_json::Value>(4), payload);
    assert_eq!(row.get::<_, f64>(5), 2.5);

    let statement = client.prepare("SELECT $1::int4 * 2").await.unwrap();
    for i in 0..20 {
        let v: i32 = client.query_one(&statement, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i * 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_fifty_queries_answers_in_order() {
    let setup = SingleStore::start().await;
    let client = setup.connect().await;
    let statement = client
        .prepare("SELECT $1::int4, pg_backend_pid()")
        .await
        .unwrap();
    // tokio-postgres pipelines requests whose futures are polled together.
    let futures = (0..50).map(|i| {
        let client = &client;
        let statement = &statement;
        async move { client.query_one(statement, &[&i]).await }
    });
    let rows = futures::future::try_join_all(futures).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), i as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let setup = SingleStore::start().await;
    let client = setup.connect().await;
    client
        .batch_execute("CREATE TABLE c (id int, v text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tvalue {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 10_000);

    let direct = setup.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);

    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), data);

    // A COPY the client aborts leaves nothing behind.
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY c FROM STDIN")
        .await
        .unwrap();
    drop(sink);
    client.simple_query("SELECT 1").await.unwrap();
    let n: i64 = direct
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_a_transaction_then_rollback() {
    let setup = SingleStore::start().await;
    let mut client = setup.connect().await;
    client
        .batch_execute("CREATE TABLE r (id int primary key)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO r VALUES (1)", &[]).await.unwrap();
    let error = tx
        .execute("INSERT INTO r VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(error.as_db_error().unwrap().constraint(), Some("r_pkey"));
    let error = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    let direct = setup.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM r", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The session is usable again.
    client
        .execute("INSERT INTO r VALUES (2)", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_statement() {
    let setup = SingleStore::start().await;
    let client = setup.connect().await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    // Wait until the store is running the sleep, so the cancel has something to hit.
    let direct = setup.direct().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the sleep never started");
        tokio::task::yield_now().await;
    }
    token.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), sleeper)
        .await
        .expect("the cancel did not stop the statement")
        .unwrap();
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_transaction_leaves_nothing_behind() {
    let setup = SingleStore::start().await;
    let direct = setup.direct().await;
    direct
        .batch_execute("CREATE TABLE v (id int primary key)")
        .await
        .unwrap();
    let before: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let (client, connection) = tokio_postgres::connect(&setup.proxy.url("app", "postgres"), NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute("BEGIN; INSERT INTO v VALUES (1)")
        .await
        .unwrap();
    let store_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Vanish: stop driving the connection and drop the socket without Terminate.
    driver.abort();
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&store_pid],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backend session outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n: i64 = direct
        .query_one("SELECT count(*) FROM v", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the open transaction must be rolled back");
    let after: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before, "no backend session may leak");
    // The row lock is gone too: another session can take the key.
    direct
        .execute("INSERT INTO v VALUES (1)", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients() {
    let setup = SingleStore::start().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = setup.proxy.url("app", "postgres");
        tasks.push(tokio::spawn(async move {
            let client = common::connect_url(&url).await.unwrap();
            let mut sum = 0i64;
            for j in 0..25i64 {
                let v: i64 = client
                    .query_one("SELECT $1::int8", &[&(i * 100 + j)])
                    .await
                    .unwrap()
                    .get(0);
                sum += v;
            }
            sum
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let expected: i64 = (0..40i64)
        .map(|i| (0..25i64).map(|j| i * 100 + j).sum::<i64>())
        .sum();
    assert_eq!(total, expected);
}

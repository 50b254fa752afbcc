//! Authentication on both sides of the proxy: clients to evshift (trust, md5, scram-sha-256)
//! and evshift to a store that demands md5 or SCRAM.

mod common;

use common::{connect_url, SingleStore};
use evshift_tests::PgCluster;

const USERS: &[(&str, &str)] = &[("app", "s3cret-app"), ("ops", "ops-pass")];

async fn proxy_with_client_auth(method: &str) -> SingleStore {
    let store = PgCluster::start("shared").await.unwrap();
    SingleStore::start_with(store, |c| c.with_auth(method, USERS)).await
}

fn url(setup: &SingleStore, user: &str, password: &str) -> String {
    let addr = setup.proxy.addr();
    format!("postgres://{user}:{password}@{addr}/anydb")
}

async fn assert_refused_with_28p01(setup: &SingleStore, user: &str, password: &str) {
    let error = connect_url(&url(setup, user, password))
        .await
        .expect_err("must be refused");
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("server error expected: {error}"));
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message().contains(&format!("\"{user}\"")),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_accepts_the_right_password_only() {
    let setup = proxy_with_client_auth("scram-sha-256").await;
    let client = connect_url(&url(&setup, "app", "s3cret-app"))
        .await
        .unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    connect_url(&url(&setup, "ops", "ops-pass")).await.unwrap();
    assert_refused_with_28p01(&setup, "app", "wrong").await;
    assert_refused_with_28p01(&setup, "nobody", "s3cret-app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_accepts_the_right_password_only() {
    let setup = proxy_with_client_auth("md5").await;
    let client = connect_url(&url(&setup, "app", "s3cret-app"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_refused_with_28p01(&setup, "app", "wrong").await;
    assert_refused_with_28p01(&setup, "nobody", "x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_with_a_user_list_admits_only_those_users() {
    let setup = proxy_with_client_auth("trust").await;
    connect_url(&setup.proxy.url("app", "db")).await.unwrap();
    let error = connect_url(&setup.proxy.url("stranger", "db"))
        .await
        .expect_err("must fail");
    assert_eq!(error.as_db_error().unwrap().code().code(), "28000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evshift_authenticates_to_stores_that_demand_scram_or_md5() {
    for method in ["scram-sha-256", "md5"] {
        let mut store = PgCluster::start("shared").await.unwrap();
        let admin = store.connect("postgres").await.unwrap();
        admin
            .batch_execute("CREATE ROLE evshift LOGIN")
            .await
            .unwrap();
        admin
            .batch_execute("CREATE DATABASE app OWNER evshift")
            .await
            .unwrap();
        if method == "md5" {
            store
                .set_md5_password("evshift", "store-pass")
                .await
                .unwrap();
        } else {
            store.set_password("evshift", "store-pass").await.unwrap();
        }
        store.use_auth(method).await.unwrap();
        let store_url = format!(
            "postgres://evshift:store-pass@127.0.0.1:{}/app",
            store.port()
        );
        let setup = SingleStore::start_with(store, |mut c| {
            c.stores[0].url = store_url.clone();
            c
        })
        .await;
        // The client authenticates to evshift (trust); evshift to the store with its own
        // credentials.
        let client = setup.connect().await;
        let row = client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "evshift", "{method}");
        assert_eq!(row.get::<_, &str>(1), "app", "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_evshift_passes_its_error_through() {
    let mut store = PgCluster::start("shared").await.unwrap();
    store.use_auth("scram-sha-256").await.unwrap();
    store.set_password("postgres", "right").await.unwrap();
    let store_url = format!(
        "postgres://postgres:wrong@127.0.0.1:{}/postgres",
        store.port()
    );
    let setup = SingleStore::start_with(store, |mut c| {
        c.stores[0].url = store_url.clone();
        c
    })
    .await;
    let error = setup.try_connect().await.expect_err("must fail");
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message().contains("store \"shared\""),
        "{}",
        db.message()
    );
}

//! Bad input through the real proxy: each case gets a clear error with a proper SQLSTATE or the
//! close the protocol requires, and a healthy session next to it keeps working.

mod common;

use common::raw::{self, first_error, RawClient};
use common::SingleStore;

/// A session opened before the abuse must still answer afterwards.
async fn assert_still_serving(client: &tokio_postgres::Client) {
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_hostile_startup_packets_get_protocol_errors() {
    let setup = SingleStore::start().await;
    let healthy = setup.connect().await;
    let addr = setup.proxy_addr();

    // An HTTP request is not a startup packet: its "length" is absurd.
    let mut c = RawClient::connect(&addr).await.unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    assert_eq!(
        first_error(&got).and_then(|e| e.sqlstate()).as_deref(),
        Some("08P01")
    );

    // A length word below the minimum.
    let mut c = RawClient::connect(&addr).await.unwrap();
    c.send(&[0, 0, 0, 2]).await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    assert_eq!(
        first_error(&got).and_then(|e| e.sqlstate()).as_deref(),
        Some("08P01")
    );

    // Protocol 2.0 is refused with feature_not_supported.
    let mut packet = raw::startup_packet("app", "db");
    packet[4..8].copy_from_slice(&[0, 2, 0, 0]);
    let mut c = RawClient::connect(&addr).await.unwrap();
    c.send(&packet).await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    let error = first_error(&got).expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("0A000"));
    assert!(error.error_field(b'M').unwrap().contains("protocol 2.0"));

    assert_still_serving(&healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_requests_are_refused_with_n_then_startup_proceeds() {
    let setup = SingleStore::start().await;
    let addr = setup.proxy_addr();
    for code in [80877103i32, 80877104] {
        let mut c = RawClient::connect(&addr).await.unwrap();
        let mut request = 8i32.to_be_bytes().to_vec();
        request.extend_from_slice(&code.to_be_bytes());
        c.send(&request).await.unwrap();
        assert_eq!(c.read_byte().await.unwrap(), b'N');
        c.send(&raw::startup_packet("app", "db")).await.unwrap();
        let got = c.read_until_ready().await.unwrap();
        assert!(got.iter().any(|m| m.tag == b'K'), "BackendKeyData expected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_end_only_their_own_session() {
    let setup = SingleStore::start().await;
    let healthy = setup.connect().await;
    let addr = setup.proxy_addr();

    // Unknown message type.
    let (mut c, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    c.send(&raw::message(b'!', b"whatever")).await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    let error = first_error(&got).expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert!(error.error_field(b'M').unwrap().contains("message type"));

    // A declared length over the limit: refused before the bytes are buffered.
    let (mut c, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    c.send(&[b'Q', 0x7f, 0xff, 0xff, 0xf0]).await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    let error = first_error(&got).expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert!(error.error_field(b'M').unwrap().contains("over the limit"));

    // A negative length.
    let (mut c, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    c.send(&[b'Q', 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let got = c.read_until_closed().await.unwrap();
    assert_eq!(
        first_error(&got).and_then(|e| e.sqlstate()).as_deref(),
        Some("08P01")
    );

    assert_still_serving(&healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_query_is_an_error_and_the_session_goes_on() {
    let setup = SingleStore::start().await;
    let addr = setup.proxy_addr();
    let (mut c, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    c.send(&raw::query(b"SELECT '\xff\xfe'")).await.unwrap();
    let got = c.read_until_ready().await.unwrap();
    assert_eq!(
        first_error(&got).and_then(|e| e.sqlstate()).as_deref(),
        Some("22021")
    );
    // The same session still works.
    c.send(&raw::query(b"SELECT 1")).await.unwrap();
    let got = c.read_until_ready().await.unwrap();
    assert!(
        got.iter().any(|m| m.tag == b'D'),
        "a DataRow expected, got {got:?}"
    );
    assert!(first_error(&got).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_is_08006_naming_the_store() {
    let setup = SingleStore::start().await;
    setup.store.stop_immediate().await.unwrap();
    let error = setup.try_connect().await.expect_err("connect must fail");
    let db = error
        .as_db_error()
        .expect("a server error, not an I/O error");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("\"shared\""), "{}", db.message());
    // The store comes back: new sessions work again, evshift needed no restart.
    setup.store.start_again().await.unwrap();
    let client = setup.connect().await;
    assert_still_serving(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_mid_session_fails_statements_until_it_is_back() {
    let setup = SingleStore::start().await;
    let addr = setup.proxy_addr();
    let (mut c, _) = RawClient::connect_ready(&addr, "app").await.unwrap();
    setup.store.stop_immediate().await.unwrap();
    // The client session outlives its backend session: the statement routed to the lost
    // store gets 08006 naming it, then ReadyForQuery; nothing hangs.
    c.send(&raw::query(b"SELECT 1")).await.unwrap();
    let got = c.read_until_ready().await.unwrap();
    let error = first_error(&got).unwrap_or_else(|| panic!("an error expected, got {got:?}"));
    assert_eq!(error.sqlstate().as_deref(), Some("08006"));
    assert!(error.error_field(b'M').unwrap().contains("\"shared\""));
    // The store comes back: the same client session reconnects to it on the next statement.
    setup.store.start_again().await.unwrap();
    c.send(&raw::query(b"SELECT 1")).await.unwrap();
    let got = c.read_until_ready().await.unwrap();
    assert!(first_error(&got).is_none(), "{got:?}");
    assert!(got.iter().any(|m| m.tag == b'D'));
}

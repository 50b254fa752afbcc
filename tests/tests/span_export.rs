//! Span export (`[tracing] otlp_endpoint`, the `otel` feature that scripts/test builds):
//! a real migration through a real evshift, whose spans reach an OTLP/HTTP receiver on
//! loopback, with the migration's fields as attributes and the `migration` span as parent.

mod control_support;
mod migration_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use evshift_tests::{seed_events, tenant_ids};
use migration_support::{MigrationSetup, TEST_MIGRATION};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long the spans of a finished migration may take to arrive.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(60);

/// The spans every migration that cuts over exports.
const EXPECTED: [&str; 4] = [
    "migration",
    "eventsource.migration.bulk_copy",
    "eventsource.migration.verification",
    "eventsource.migration.cutover",
];

/// One exported span, as the OTLP JSON encoding has it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    service_name: Option<String>,
}

/// An OTLP/HTTP receiver: answers every POST with 200 and passes its body on.
struct Collector {
    port: u16,
    bodies: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, bodies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_requests(stream, sender.clone()));
            }
        });
        Collector { port, bodies }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Receives export requests until every name of `names` was seen; returns all spans.
    async fn spans_until(&mut self, names: &[&str]) -> Vec<Span> {
        let deadline = Instant::now() + ARRIVAL_DEADLINE;
        let mut spans = Vec::new();
        loop {
            let missing: Vec<&&str> = names
                .iter()
                .filter(|n| !spans.iter().any(|s: &Span| s.name == **n))
                .collect();
            if missing.is_empty() {
                return spans;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (head, body) = tokio::time::timeout(left, self.bodies.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "spans {missing:?} not exported within {ARRIVAL_DEADLINE:?}; got {spans:?}"
                    )
                })
                .expect("the receiver runs");
            assert!(
                head.starts_with("POST /v1/traces "),
                "an export request: {head}"
            );
            let content_type = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_string())
            });
            assert_eq!(content_type.as_deref(), Some("application/json"), "{head}");
            let request: Value = serde_json::from_slice(&body).expect("an OTLP JSON body");
            spans.extend(parse_spans(&request));
        }
    }
}

/// HTTP/1.1 requests on one connection, kept alive, each answered `200 {}`.
async fn serve_requests(stream: TcpStream, bodies: mpsc::UnboundedSender<(String, Vec<u8>)>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match read.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let _ = bodies.send((head, body));
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The spans of an `ExportTraceServiceRequest` in the OTLP JSON encoding.
fn parse_spans(request: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let service_name =
            attributes(&resource_spans["resource"]["attributes"]).remove("service.name");
        for scope_spans in resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for span in scope_spans["spans"].as_array().into_iter().flatten() {
                spans.push(Span {
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    span_id: span["spanId"].as_str().unwrap_or_default().to_string(),
                    parent_span_id: span["parentSpanId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    attributes: attributes(&span["attributes"]),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    spans
}

/// `[{"key": k, "value": {"stringValue"|"intValue"|...: v}}]` as text values (int64 values
/// are JSON strings or numbers depending on the encoder).
fn attributes(list: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for attribute in list.as_array().into_iter().flatten() {
        let key = attribute["key"].as_str().unwrap_or_default().to_string();
        let value = attribute["value"]
            .as_object()
            .and_then(|v| v.values().next())
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        out.insert(key, value);
    }
    out
}

/// evshift with span export to `collector` (every span, sent every 200 ms).
async fn start_exporting(collector: &Collector) -> MigrationSetup {
    let tracing = format!(
        "otlp_endpoint = {:?}\notlp_protocol = \"http/json\"\nexport_interval_ms = 200\n",
        collector.endpoint()
    );
    MigrationSetup::start_with_sections(TEST_MIGRATION, &[("tracing", &tracing)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrations_spans_reach_the_collector_with_its_fields() {
    let mut collector = Collector::start().await;
    let setup = start_exporting(&collector).await;
    let tenant = tenant_ids(1)[0];
    seed_events(&setup.shared_db().await, &[tenant], 2_000, 10)
        .await
        .unwrap();
    let id = setup.migrate(tenant, "dedicated", &[]).await;
    setup.wait_for_state(id, "MIGRATED").await;

    let spans = collector.spans_until(&EXPECTED).await;
    let id = id.to_string();
    let tenant = tenant.to_string();
    let migration = spans
        .iter()
        .find(|s| s.name == "migration" && s.attributes.get("migration_id") == Some(&id))
        .unwrap_or_else(|| panic!("a `migration` span of migration {id}: {spans:?}"));
    assert_eq!(migration.attributes.get("tenant_id"), Some(&tenant));
    assert_eq!(migration.service_name.as_deref(), Some("evshift"));
    for name in &EXPECTED[1..] {
        let span = spans
            .iter()
            .find(|s| s.name == *name)
            .unwrap_or_else(|| panic!("{name}: {spans:?}"));
        // Each is inside the migration's span (the verification inside the cutover).
        let mut ancestor = span;
        while ancestor.span_id != migration.span_id {
            ancestor = spans
                .iter()
                .find(|s| s.span_id == ancestor.parent_span_id)
                .unwrap_or_else(|| panic!("{name}: no exported parent of {ancestor:?}"));
        }
        assert!(span.attributes.contains_key("phase"), "{span:?}");
        assert_eq!(span.attributes.get("migration_id"), Some(&id), "{span:?}");
        assert_eq!(span.attributes.get("tenant_id"), Some(&tenant), "{span:?}");
    }
}

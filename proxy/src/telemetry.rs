//! The Prometheus endpoint (`metrics_listen`, `/metrics`) and the data plane's metric names.
//!
//! The migration metrics are named and described in `evshift_control::telemetry`; this module
//! installs the exporter with their histogram buckets and describes both sets, so `/metrics`
//! carries a `# HELP` line for every series evshift exports.

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Gauge: client sessions open now.
pub const CLIENT_CONNECTIONS: &str = "evshift_client_connections";
/// Counter: routed units (statements, batches) sent to a store, label `store`.
pub const STATEMENTS_ROUTED_TOTAL: &str = "evshift_statements_routed_total";
/// Gauge: backend sessions open now, label `store`.
pub const BACKEND_CONNECTIONS_OPEN: &str = "evshift_backend_connections_open";
/// Counter: backend sessions opened, label `store`.
pub const BACKEND_CONNECTIONS_TOTAL: &str = "evshift_backend_connections_total";
/// Counter: backend sessions lost or unreachable, label `store`.
pub const BACKEND_ERRORS_TOTAL: &str = "evshift_backend_errors_total";
/// Counter: units evshift refused to route, label `sqlstate`.
pub const ROUTING_ERRORS_TOTAL: &str = "evshift_routing_errors_total";
/// Counter: statement classifications answered by the parse cache.
pub const PARSE_CACHE_HITS_TOTAL: &str = "evshift_parse_cache_hits_total";
/// Counter: statements that had to be parsed.
pub const PARSE_CACHE_MISSES_TOTAL: &str = "evshift_parse_cache_misses_total";
/// Gauge: distinct statement templates in the parse cache.
pub const PARSE_CACHE_ENTRIES: &str = "evshift_parse_cache_entries";
/// Counter: aggregate or event owner lookups, label `result` (`hit`: cache, `miss`: stores asked).
pub const AGGREGATE_LOOKUPS_TOTAL: &str = "evshift_aggregate_lookups_total";

/// Every data-plane metric name (the held-statement gauge is in `evshift_control::telemetry`,
/// next to the cutover it belongs to).
pub const ALL: &[&str] = &[
    CLIENT_CONNECTIONS,
    STATEMENTS_ROUTED_TOTAL,
    BACKEND_CONNECTIONS_OPEN,
    BACKEND_CONNECTIONS_TOTAL,
    BACKEND_ERRORS_TOTAL,
    ROUTING_ERRORS_TOTAL,
    PARSE_CACHE_HITS_TOTAL,
    PARSE_CACHE_MISSES_TOTAL,
    PARSE_CACHE_ENTRIES,
    AGGREGATE_LOOKUPS_TOTAL,
];

/// Every metric name evshift exports: the data plane's and the migrations'.
pub fn exported_names() -> impl Iterator<Item = &'static str> {
    ALL.iter().chain(evshift_control::telemetry::ALL).copied()
}

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {cause}")]
pub struct MetricsError {
    addr: SocketAddr,
    cause: String,
}

/// Serves `/metrics` on `addr` (plain HTTP) from now on and describes every metric. Call
/// inside the runtime: the listener is a task of it.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    let error = |cause: String| MetricsError { addr, cause };
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, buckets) in evshift_control::telemetry::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .map_err(|e| error(e.to_string()))?;
    }
    builder.install().map_err(|e| error(e.to_string()))?;
    evshift_control::telemetry::describe();
    describe();
    Ok(())
}

/// Registers the help text of every data-plane metric.
pub fn describe() {
    describe_gauge!(CLIENT_CONNECTIONS, Unit::Count, "Client sessions open now");
    describe_counter!(
        STATEMENTS_ROUTED_TOTAL,
        Unit::Count,
        "Routed units (a simple query, an extended-protocol batch) sent to each store"
    );
    describe_gauge!(
        BACKEND_CONNECTIONS_OPEN,
        Unit::Count,
        "Backend sessions open now to each store"
    );
    describe_counter!(
        BACKEND_CONNECTIONS_TOTAL,
        Unit::Count,
        "Backend sessions opened to each store"
    );
    describe_counter!(
        BACKEND_ERRORS_TOTAL,
        Unit::Count,
        "Backend sessions to each store that could not be opened or were lost"
    );
    describe_counter!(
        ROUTING_ERRORS_TOTAL,
        Unit::Count,
        "Units evshift answered with an error of its own, by SQLSTATE"
    );
    describe_counter!(
        PARSE_CACHE_HITS_TOTAL,
        Unit::Count,
        "Statements classified from the parse cache"
    );
    describe_counter!(
        PARSE_CACHE_MISSES_TOTAL,
        Unit::Count,
        "Statements parsed because the cache did not know their template"
    );
    describe_gauge!(
        PARSE_CACHE_ENTRIES,
        Unit::Count,
        "Statement templates in the parse cache"
    );
    describe_counter!(
        AGGREGATE_LOOKUPS_TOTAL,
        Unit::Count,
        "Aggregate or event owner lookups: result=hit from the cache, result=miss asked the stores"
    );
}

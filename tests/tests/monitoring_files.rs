//! `monitoring/alerts.yml` and `monitoring/grafana-dashboard.json` parse, and every metric they
//! query is one evshift exports: against the names the code declares, and against a real
//! evshift's `/metrics` after a migration with dual-writes and a cutover. `docs/monitoring.md`
//! names every metric and every alert.

mod control_support;
mod metrics_support;
mod migration_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use evshift_tests::{seed_events, tenant_ids};
use metrics_support::{metrics_addr, scrape, start_with_json_logs, test_migration};
use migration_support::Appenders;
use serde::Deserialize;
use serde_json::Value;

/// A Prometheus rules file (the keys these checks read; others are refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    pending: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The alerts the runbook promises, by the situation they watch.
const EXPECTED_ALERTS: &[&str] = &[
    "EvshiftBulkCopyStuck",
    "EvshiftSyncLagHigh",
    "EvshiftDualWriteFailures",
    "EvshiftCutoverSlow",
    "EvshiftCutoverRolledBack",
    "EvshiftMigrationFailed",
];

/// Metrics that only appear when something goes wrong (a failure, a held statement, a store
/// error): a healthy migration's `/metrics` cannot show them.
const ONLY_ON_TROUBLE: &[&str] = &[
    "migration_failures_total",
    "migration_dual_write_failures_total",
    "evshift_held_statements",
    "evshift_backend_errors_total",
    "evshift_routing_errors_total",
];

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .join(path)
}

fn read(path: &str) -> String {
    let path = repository_file(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn alert_rules() -> RuleFile {
    serde_yaml::from_str(&read("monitoring/alerts.yml")).expect("monitoring/alerts.yml")
}

fn dashboard() -> Value {
    serde_json::from_str(&read("monitoring/grafana-dashboard.json"))
        .expect("monitoring/grafana-dashboard.json")
}

/// Every name evshift's code declares as exported.
fn exported_names() -> BTreeSet<String> {
    evshift_proxy::telemetry::exported_names()
        .map(str::to_string)
        .collect()
}

/// Removes the spans `open ... close` (nesting not needed for PromQL label matchers, ranges
/// and strings).
fn strip_between(text: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match (inside, c) {
            (false, c) if c == open => inside = true,
            (true, c) if c == close => inside = false,
            (false, c) => out.push(c),
            (true, _) => {}
        }
    }
    out
}

/// PromQL keywords and aggregation operators (which may be followed by `by (...)` rather than
/// their parenthesis): a metric name is never one of them.
const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Keywords followed by a list of label names in parentheses.
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The identifiers of `text` in order, each with what follows it.
fn words(text: &str) -> Vec<(&str, &str, bool)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        // `5m`, `0.5e3`: a letter after a digit is part of a number or a duration.
        let in_number = rest[..start]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        found.push((&rest[..end], &rest[end..], in_number));
        rest = &rest[end..];
    }
    found
}

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// numbers, or label names (of matchers or of a grouping's list).
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let text = strip_between(&strip_between(expr, '"', '"'), '{', '}');
    let text = strip_between(&text, '[', ']');
    let mut names = BTreeSet::new();
    let mut in_grouping = false;
    for (word, after, in_number) in words(&text) {
        let lower = word.to_ascii_lowercase();
        if in_grouping {
            // Label names up to the closing parenthesis of the list.
            in_grouping = !after.trim_start().starts_with(')');
            continue;
        }
        if GROUPINGS.contains(&lower.as_str()) {
            let list = after.trim_start();
            // `by ()` has no label; `group_left` may have no list at all.
            in_grouping = list.starts_with('(') && !list[1..].trim_start().starts_with(')');
            continue;
        }
        let called = after.trim_start().starts_with('(');
        if !called && !in_number && !PROMQL_KEYWORDS.contains(&lower.as_str()) {
            names.insert(word.to_string());
        }
    }
    names
}

/// The family of a name as queried: a histogram's `_bucket`, `_sum` and `_count` series belong
/// to the histogram.
fn family(name: &str, histograms: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if histograms.contains(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn histogram_names() -> BTreeSet<String> {
    evshift_control::telemetry::HISTOGRAM_BUCKETS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Every metric family the alert rules read, with the alerts reading it.
fn metrics_of_alerts() -> BTreeMap<String, Vec<String>> {
    let histograms = histogram_names();
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in alert_rules().groups.iter().flat_map(|g| &g.rules) {
        for name in promql_metrics(&rule.expr) {
            used.entry(family(&name, &histograms))
                .or_default()
                .push(rule.alert.clone());
        }
    }
    used
}

/// Every PromQL text of the dashboard: panel targets, and the metric of `label_values(...)`
/// template queries.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    ("definition", Value::String(query)) if query.starts_with("label_values(") => {
                        let inner = &query["label_values(".len()..];
                        let metric = inner.split([',', ')']).next().unwrap_or_default();
                        out.push(metric.trim().to_string());
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// Every metric family the dashboard reads.
fn metrics_of_dashboard() -> BTreeSet<String> {
    let histograms = histogram_names();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    assert!(queries.len() >= 15, "dashboard queries: {queries:?}");
    queries
        .iter()
        .flat_map(|q| promql_metrics(q))
        .map(|name| family(&name, &histograms))
        .collect()
}

#[test]
fn promql_names_are_told_from_labels_functions_and_keywords() {
    let names = promql_metrics(
        r#"sum by (migration_id, le) (rate(migration_dual_write_latency_ms_bucket{tenant_id=~"$tenant", le="2000"}[5m]))
           / on (migration_id) group_left (kind) migration_state > bool 0.5e3 unless x_total offset 5m"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "migration_dual_write_latency_ms_bucket",
            "migration_state",
            "x_total"
        ]
    );
}

#[test]
fn the_alert_rules_cover_the_migration_risks_and_read_only_exported_metrics() {
    let rules = alert_rules();
    let exported = exported_names();
    let mut names = BTreeSet::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert!(names.insert(rule.alert.clone()), "duplicate {}", rule.alert);
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{}: severity {severity:?}",
                rule.alert
            );
            for key in ["summary", "description", "runbook"] {
                let text = rule.annotations.get(key).map(String::as_str);
                assert!(
                    text.is_some_and(|t| !t.trim().is_empty()),
                    "{}: {key}",
                    rule.alert
                );
            }
            if let Some(pending) = &rule.pending {
                let (number, unit) = pending.split_at(pending.len() - 1);
                assert!(
                    number.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit),
                    "{}: for {pending:?}",
                    rule.alert
                );
            }
            assert!(
                !promql_metrics(&rule.expr).is_empty(),
                "{}: no metric in {}",
                rule.alert,
                rule.expr
            );
        }
    }
    for expected in EXPECTED_ALERTS {
        assert!(names.contains(*expected), "no alert {expected}");
    }
    for (metric, alerts) in metrics_of_alerts() {
        assert!(
            exported.contains(&metric),
            "{alerts:?} read {metric}, which evshift does not export ({exported:?})"
        );
    }
}

#[test]
fn the_dashboard_reads_only_exported_metrics_from_its_data_source_variable() {
    let exported = exported_names();
    for metric in metrics_of_dashboard() {
        assert!(
            exported.contains(&metric),
            "the dashboard reads {metric}, which evshift does not export"
        );
    }
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_i64().expect("a panel id")));
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(variables
        .iter()
        .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"));
}

#[test]
fn the_monitoring_page_names_every_metric_and_alert() {
    let page = read("docs/monitoring.md");
    for name in exported_names() {
        assert!(
            page.contains(&format!("`{name}`")),
            "docs/monitoring.md lacks `{name}`"
        );
    }
    for rule in alert_rules().groups.iter().flat_map(|g| &g.rules) {
        let anchor = format!("### {}", rule.alert);
        assert!(page.contains(&anchor), "docs/monitoring.md lacks {anchor}");
    }
    for span in [
        "eventsource.migration.bulk_copy",
        "eventsource.migration.dual_write",
        "eventsource.migration.cutover",
        "eventsource.migration.verification",
    ] {
        assert!(
            page.contains(span),
            "docs/monitoring.md lacks the span {span}"
        );
    }
}

/// A real evshift after a migration with dual-writes and a cutover: everything on its
/// `/metrics` is declared (and described), and everything the alerts and the dashboard read
/// is on it, except the metrics of trouble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_metrics_endpoint_has_what_the_monitoring_files_read() {
    let setup = start_with_json_logs(test_migration(), "info").await;
    let tenant = tenant_ids(1)[0];
    seed_events(&setup.shared_db().await, &[tenant], 2_000, 10)
        .await
        .unwrap();
    let id = setup
        .migrate(tenant, "dedicated", &["--manual-cutover"])
        .await;
    setup.wait_for_state(id, "DUAL_WRITE").await;
    // Appends through evshift during DUAL_WRITE are dual-written.
    let appenders = Appenders::start(&setup, &[tenant]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while appenders.appended() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "no appends through evshift"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    appenders.stop().await;
    setup.wait_caught_up(id, tenant).await;
    let migrated = setup
        .ctl(&["--json", "cutover", &id.to_string()])
        .await
        .ok_json();
    assert_eq!(migrated["state"], "MIGRATED", "{migrated}");
    let client = setup.through_proxy().await;
    client
        .query_one(
            "SELECT count(*) FROM events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();

    // The dual-write records its latency off the client's path, the parse-cache counters are
    // published once a second: wait until both are there.
    let addr = metrics_addr(&setup);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let scrape = scrape(addr).await;
        let families = scrape.families();
        if families.contains("migration_dual_write_latency_ms")
            && families.contains("evshift_parse_cache_hits_total")
        {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "families on /metrics: {families:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let exported = exported_names();
    let families = scrape.families();
    let ours: BTreeSet<&String> = families
        .iter()
        .filter(|f| f.starts_with("evshift_") || f.starts_with("migration_"))
        .collect();
    for family in &ours {
        assert!(
            exported.contains(*family),
            "/metrics has {family}, which the telemetry modules do not declare"
        );
        assert!(scrape.described.contains(*family), "no # HELP for {family}");
    }
    for histogram in histogram_names() {
        assert_eq!(
            scrape.types.get(&histogram).map(String::as_str),
            Some("histogram"),
            "{histogram} must be a histogram with buckets (alerts read _bucket)"
        );
    }
    assert_eq!(
        scrape.value(
            "migration_state",
            &[
                ("migration_id", &id.to_string()),
                ("tenant_id", &tenant.to_string())
            ]
        ),
        Some(4.0),
        "MIGRATED"
    );
    let read_by_files: BTreeSet<String> = metrics_of_alerts()
        .into_keys()
        .chain(metrics_of_dashboard())
        .collect();
    for metric in &read_by_files {
        assert!(
            families.contains(metric) || ONLY_ON_TROUBLE.contains(&metric.as_str()),
            "the monitoring files read {metric}, absent from a real /metrics: {ours:?}"
        );
    }
}

//! The statements eventsource-py sends (shared/eventsource-sql.md), pgbench-style literal
//! statements, session and transaction control, and the horizon rewrite.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;
use crate::config::{TenancyConfig, TenantTable};

const TENANT: &str = "b6a4c6c2-7f3e-4d6b-9a51-0c2d5e8f1a10";
const AGGREGATE: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

fn classifier() -> Classifier {
    Classifier::new(&TenancyConfig::default(), 1024)
}

fn one(sql: &str) -> StatementInfo {
    let classified = classifier().classify(sql);
    assert_eq!(classified.statements.len(), 1, "{sql}: {classified:?}");
    classified
        .statements
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!())
}

fn kind(sql: &str) -> StatementKind {
    one(sql).kind
}

fn lit(text: &str) -> KeyValue {
    KeyValue::Literal(text.to_string())
}

use KeyValue::Param;

/// Asserts the keys of the single statement of `sql`, and that it is a plain query on a
/// tenant table.
fn assert_keys(sql: &str, tenants: &[KeyValue], aggregates: &[KeyValue], events: &[KeyValue]) {
    let info = one(sql);
    assert_eq!(info.kind, StatementKind::Query, "{sql}");
    assert_eq!(info.tenants, tenants, "tenants of {sql}");
    assert_eq!(info.aggregates, aggregates, "aggregates of {sql}");
    assert_eq!(info.events, events, "events of {sql}");
    assert!(info.touches_tenant_table, "{sql}");
}

const READ_ALL: &str = "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND global_position > $2 AND tenant_id = $3 AND aggregate_type = $4 ORDER BY global_position ASC LIMIT $5";
const CURRENT_POSITION: &str = "SELECT MAX(global_position) FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND tenant_id = $2";
const APPEND: &str = "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";

#[test]
fn version_read_names_the_aggregate() {
    assert_keys(
        "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1 AND aggregate_type = $2",
        &[],
        &[Param(1)],
        &[],
    );
}

#[test]
fn append_names_tenant_aggregate_and_event() {
    assert_keys(APPEND, &[Param(5)], &[Param(4)], &[Param(1)]);
}

#[test]
fn stream_reads_name_the_aggregate() {
    assert_keys(
        "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 AND version >= $3 ORDER BY version ASC LIMIT $4",
        &[],
        &[Param(1)],
        &[],
    );
    assert_keys(
        "SELECT global_position, event_id FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 AND version >= $3 AND version <= $4 ORDER BY version DESC",
        &[],
        &[Param(1)],
        &[],
    );
}

#[test]
fn subscription_reads_name_the_tenant() {
    assert_keys(READ_ALL, &[Param(3)], &[], &[]);
    assert_keys(CURRENT_POSITION, &[Param(2)], &[], &[]);
}

#[test]
fn read_category_and_event_exists() {
    assert_keys(
        "SELECT global_position, event_id FROM events WHERE aggregate_type = $1 AND tenant_id = $2 AND created_at >= $3 ORDER BY created_at, global_position",
        &[Param(2)],
        &[],
        &[],
    );
    assert_keys(
        "SELECT 1 FROM events WHERE event_id = $1 LIMIT 1",
        &[],
        &[],
        &[Param(1)],
    );
}

#[test]
fn snapshots_name_the_aggregate() {
    assert_keys(
        "SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at FROM snapshots WHERE aggregate_id = $1 AND aggregate_type = $2",
        &[],
        &[Param(1)],
        &[],
    );
    assert_keys(
        "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state, created_at) VALUES ($1, $2, $3, $4, $5, NOW()) ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, created_at = EXCLUDED.created_at",
        &[],
        &[Param(1)],
        &[],
    );
    assert_keys(
        "DELETE FROM snapshots WHERE aggregate_id = $1",
        &[],
        &[Param(1)],
        &[],
    );
}

#[test]
fn outbox_insert_names_the_tenant() {
    assert_keys(
        "INSERT INTO event_outbox (event_id, event_type, aggregate_id, aggregate_type, tenant_id, event_data, created_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
        &[Param(5)],
        &[],
        &[],
    );
}

#[test]
fn inline_literals_under_casts() {
    let sql = format!(
        "SELECT * FROM events WHERE tenant_id = '{TENANT}'::uuid AND aggregate_id = '{AGGREGATE}'"
    );
    assert_keys(&sql, &[lit(TENANT)], &[lit(AGGREGATE)], &[]);
    let sql = format!(
        "SELECT * FROM events WHERE CAST($1 AS uuid) = tenant_id AND aggregate_id = uuid '{AGGREGATE}' AND event_id = E'\\x41'"
    );
    assert_keys(&sql, &[Param(1)], &[lit(AGGREGATE)], &[lit("A")]);
    assert_keys(
        "SELECT * FROM events WHERE tenant_id = $tag$abc$tag$ AND aggregate_id = 42",
        &[lit("abc")],
        &[lit("42")],
        &[],
    );
}

#[test]
fn qualified_and_aliased_columns() {
    assert_keys(
        "SELECT e.version FROM events AS e WHERE e.tenant_id = $1 AND events_x.aggregate_id = $2",
        &[Param(1)],
        &[],
        &[],
    );
    assert_keys(
        "SELECT 1 FROM public.events WHERE events.tenant_id = $1 AND \"aggregate_id\" = $2",
        &[Param(1)],
        &[Param(2)],
        &[],
    );
    assert_keys(
        "UPDATE event_outbox SET status = 'published' WHERE tenant_id = $1 AND id = $2",
        &[Param(1)],
        &[],
        &[],
    );
}

#[test]
fn or_in_and_subqueries_name_no_key() {
    for sql in [
        "SELECT * FROM events WHERE tenant_id = $1 OR tenant_id = $2",
        "SELECT * FROM events WHERE tenant_id IN ($1, $2)",
        "SELECT * FROM events WHERE global_position > (SELECT MAX(global_position) FROM events WHERE tenant_id = $1)",
        "SELECT * FROM (SELECT * FROM events WHERE tenant_id = $1) AS e",
        "WITH e AS (SELECT * FROM events WHERE tenant_id = $1) SELECT * FROM e",
    ] {
        let info = one(sql);
        assert!(!info.has_keys(), "{sql}: {info:?}");
        assert!(info.touches_tenant_table, "{sql}");
    }
}

#[test]
fn untracked_tables_touch_nothing() {
    let info = one(
        "INSERT INTO projection_checkpoints (projection_name, last_event_id, last_event_type, last_processed_at, events_processed, position_token, updated_at) VALUES ($1, $2, $3, $4, 1, $5, NOW()) ON CONFLICT (projection_name) DO UPDATE SET last_event_id = EXCLUDED.last_event_id, events_processed = projection_checkpoints.events_processed + 1",
    );
    assert_eq!(info, StatementInfo::keyless(StatementKind::Query));
    let info = one("SELECT tenant_id FROM other WHERE tenant_id = $1");
    assert_eq!(info, StatementInfo::keyless(StatementKind::Query));
}

#[test]
fn multi_row_insert_names_every_row() {
    let sql = "INSERT INTO events (event_id, aggregate_id, tenant_id, version) VALUES ('e1', 'a1', 'a', 1), ('e2', 'a1', 'b', 2), ('e3', 'a1', 'a', 3)";
    assert_keys(
        sql,
        &[lit("a"), lit("b")],
        &[lit("a1")],
        &[lit("e1"), lit("e2"), lit("e3")],
    );
}

#[test]
fn insert_without_columns_or_with_select() {
    let info = one("INSERT INTO events VALUES ($1, $2)");
    assert!(!info.has_keys());
    assert!(info.touches_tenant_table);
    assert_keys(
        "INSERT INTO event_outbox (event_id, tenant_id) SELECT $1, $2::uuid",
        &[Param(2)],
        &[],
        &[],
    );
}

#[test]
fn transaction_control() {
    for sql in [
        "BEGIN",
        "begin",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "START TRANSACTION READ ONLY",
        "BEGIN WORK",
    ] {
        assert_eq!(kind(sql), StatementKind::Begin, "{sql}");
    }
    for sql in ["COMMIT", "END", "COMMIT AND NO CHAIN"] {
        assert_eq!(kind(sql), StatementKind::Commit, "{sql}");
    }
    for sql in ["ROLLBACK", "ABORT"] {
        assert_eq!(kind(sql), StatementKind::Rollback, "{sql}");
    }
    for sql in [
        "SAVEPOINT s",
        "ROLLBACK TO SAVEPOINT s",
        "RELEASE SAVEPOINT s",
    ] {
        assert_eq!(kind(sql), StatementKind::Query, "{sql}");
    }
    assert_eq!(kind("COMMIT PREPARED 'x'"), StatementKind::Unparsed);
}

#[test]
fn session_settings() {
    let set = |value: &str| StatementKind::SetSessionTenant(Some(lit(value)));
    assert_eq!(
        kind(&format!("SET evshift.tenant_id = '{TENANT}'")),
        set(TENANT)
    );
    assert_eq!(
        kind(&format!("SET evshift.tenant_id TO '{TENANT}'")),
        set(TENANT)
    );
    assert_eq!(
        kind(&format!("SET SESSION EVSHIFT.TENANT_ID = '{TENANT}'")),
        set(TENANT)
    );
    assert_eq!(kind("SET evshift.tenant_id = Abc"), set("abc"));
    assert_eq!(
        kind("RESET evshift.tenant_id"),
        StatementKind::SetSessionTenant(None)
    );
    assert_eq!(
        kind("SET evshift.tenant_id TO DEFAULT"),
        StatementKind::SetSessionTenant(None)
    );
    assert_eq!(
        kind("SET search_path = public"),
        StatementKind::Set { local: false }
    );
    assert_eq!(
        kind("SET LOCAL statement_timeout = 100"),
        StatementKind::Set { local: true }
    );
    assert_eq!(
        kind("SET LOCAL evshift.tenant_id = 'x'"),
        StatementKind::Set { local: true }
    );
    assert_eq!(
        kind("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        StatementKind::Set { local: true }
    );
    assert_eq!(
        kind("SET TIME ZONE 'UTC'"),
        StatementKind::Set { local: false }
    );
    assert_eq!(kind("RESET ALL"), StatementKind::Set { local: false });
    assert_eq!(kind("DISCARD ALL"), StatementKind::Set { local: false });
}

#[test]
fn horizon_reads() {
    for sql in [
        "SELECT eventsource_feed_horizon()",
        "select eventsource_feed_horizon() AS horizon",
        "SELECT eventsource_feed_horizon()::text",
        "SELECT CAST(public.eventsource_feed_horizon() AS text) h",
        "SELECT * FROM eventsource_feed_horizon()",
    ] {
        assert_eq!(kind(sql), StatementKind::HorizonRead, "{sql}");
    }
    assert_eq!(
        kind("SELECT eventsource_feed_horizon(), 1"),
        StatementKind::Query
    );
}

#[test]
fn multi_statement_strings() {
    let sql = format!("BEGIN; {APPEND}; COMMIT");
    let classified = classifier().classify(&sql);
    let kinds: Vec<_> = classified
        .statements
        .iter()
        .map(|s| s.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            StatementKind::Begin,
            StatementKind::Query,
            StatementKind::Commit
        ]
    );
    assert_eq!(classified.statements[1].tenants, [Param(5)]);
    assert_eq!(classified.rewritten_sql, None);
}

#[test]
fn garbage_is_unparsed() {
    for sql in [
        "SELEC 1",
        "SELECT (1",
        "SELECT 'unterminated",
        "\u{0}\u{1}",
        "))))",
    ] {
        assert_eq!(kind(sql), StatementKind::Unparsed, "{sql:?}");
    }
    // One bad statement does not spoil its neighbours.
    let classified = classifier().classify("SELEC 1; BEGIN");
    let kinds: Vec<_> = classified
        .statements
        .iter()
        .map(|s| s.kind.clone())
        .collect();
    assert_eq!(kinds, [StatementKind::Unparsed, StatementKind::Begin]);
}

#[test]
fn empty_query_has_no_statements() {
    for sql in ["", "   ", ";", " -- just a comment", "/* c */ ; ;"] {
        assert_eq!(classifier().classify(sql), Classified::default(), "{sql:?}");
    }
}

fn parses(sql: &str) -> bool {
    Parser::parse_sql(&PostgreSqlDialect {}, sql).is_ok()
}

#[test]
fn horizon_rewrite_for_subscription_reads() {
    let classifier = classifier();
    for sql in [READ_ALL, CURRENT_POSITION] {
        let classified = classifier.classify(sql);
        let rewritten = classified.rewritten_sql.as_deref().unwrap_or_default();
        assert!(
            rewritten
                .contains("txid < CAST(COALESCE(eventsource_feed_horizon(), $1) AS TEXT)::xid8"),
            "{rewritten}"
        );
        assert!(parses(rewritten), "{rewritten}");
        // The rewritten text classifies the same, and is not rewritten again.
        let again = classifier.classify(rewritten);
        assert_eq!(again.statements, classified.statements);
        assert_eq!(again.rewritten_sql, None);
    }
}

#[test]
fn horizon_rewrite_forms_and_literals() {
    let classifier = classifier();
    for (sql, expect) in [
        (
            "SELECT 1 FROM events WHERE txid < $7::text::xid8",
            "COALESCE(eventsource_feed_horizon(), $7)",
        ),
        (
            "SELECT 1 FROM events e WHERE e.txid < CAST(CAST($2 AS text) AS xid8)",
            "COALESCE(eventsource_feed_horizon(), $2)",
        ),
        (
            "SELECT 1 FROM events WHERE (txid IS NULL OR txid < CAST('1234' AS text)::xid8) AND tenant_id = 'x'",
            "COALESCE(eventsource_feed_horizon(), '1234')",
        ),
        (
            "SELECT 1 FROM events WHERE (txid IS NULL OR txid < CAST($$98765$$ AS text)::xid8)",
            "COALESCE(eventsource_feed_horizon(), $$98765$$)",
        ),
    ] {
        let rewritten = classifier.classify(sql).rewritten_sql.unwrap_or_default();
        assert!(rewritten.contains(expect), "{sql} -> {rewritten}");
        assert!(parses(&rewritten), "{rewritten}");
    }
    // Same normalized form, other literal: the cached template renders the new literal.
    let rewritten = classifier
        .classify("SELECT 1 FROM events WHERE (txid IS NULL OR txid < CAST('55' AS text)::xid8) AND tenant_id = 'y'")
        .rewritten_sql
        .unwrap_or_default();
    assert!(
        rewritten.contains("COALESCE(eventsource_feed_horizon(), '55')"),
        "{rewritten}"
    );
    assert!(rewritten.contains("tenant_id = 'y'"), "{rewritten}");
}

#[test]
fn horizon_rewrite_only_where_it_applies() {
    let classifier = classifier();
    for sql in [
        APPEND,
        "SELECT eventsource_feed_horizon()",
        "SELECT 1 FROM other WHERE txid < CAST($1 AS text)::xid8",
        "SELECT 1 FROM events WHERE txid < $1::xid8",
        "SELECT 1 FROM events WHERE version < CAST($1 AS text)::xid8",
    ] {
        assert_eq!(classifier.classify(sql).rewritten_sql, None, "{sql}");
    }
}

#[test]
fn horizon_rewrite_keeps_other_statements_verbatim() {
    let sql = format!("BEGIN;\n  /* keep me */ SELECT 1 ; {CURRENT_POSITION} ;COMMIT -- bye");
    let classified = classifier().classify(&sql);
    let rewritten = classified.rewritten_sql.unwrap_or_default();
    assert!(
        rewritten.starts_with("BEGIN;\n  /* keep me */ SELECT 1 ; SELECT MAX(global_position)"),
        "{rewritten}"
    );
    assert!(rewritten.ends_with(" ;COMMIT -- bye"), "{rewritten}");
    assert!(rewritten.contains("COALESCE(eventsource_feed_horizon(), $1)"));
    assert_eq!(classified.statements.len(), 4);
}

#[test]
fn cache_serves_literal_variants() {
    let classifier = classifier();
    let query = |id: &str| format!("SELECT * FROM events WHERE aggregate_id = '{id}' LIMIT 10");
    let first = classifier.classify(&query("uuid-1"));
    let second = classifier.classify(&query("uuid-2"));
    assert_eq!(first.statements[0].aggregates, [lit("uuid-1")]);
    assert_eq!(second.statements[0].aggregates, [lit("uuid-2")]);
    let third = classifier.classify(&query("it''s"));
    assert_eq!(third.statements[0].aggregates, [lit("it's")]);
    let stats = classifier.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
}

/// The classification of `sql` parsed as written (no normalization, no cache).
fn concrete(sql: &str) -> Vec<StatementInfo> {
    let tenancy = super::tenancy::Tenancy::new(&TenancyConfig::default());
    let mode = super::analysis::LiteralMode::Concrete;
    let parsed =
        super::parse::classify_text(sql, &tenancy, mode).unwrap_or_else(|| panic!("{sql}"));
    let none = super::template::Literals::none();
    parsed.infos.iter().map(|info| info.render(none)).collect()
}

#[test]
fn cache_hits_agree_with_parsing_the_original() {
    // Each statement is classified by a warm classifier (a hit: another text's plan rendered
    // with this text's literals) and by parsing the original text; the results must agree.
    let warm = classifier();
    let statements = [
        format!("SELECT * FROM events WHERE tenant_id = '{TENANT}' AND aggregate_id = E'{AGGREGATE}'"),
        format!("SELECT * FROM events WHERE tenant_id = N'{TENANT}' AND aggregate_id = $q${AGGREGATE}$q$"),
        "SELECT * FROM events WHERE tenant_id = E'it\\'s\\n' AND aggregate_id = $$a'b$$".to_string(),
        format!("SET evshift.tenant_id = '{TENANT}'"),
        format!("INSERT INTO events (tenant_id, aggregate_id, version) VALUES ('{TENANT}', '{AGGREGATE}', 17)"),
        "DELETE FROM snapshots WHERE aggregate_id = 'it''s' AND version = 3.5e2".to_string(),
    ];
    for sql in &statements {
        let variant = sql.replace(TENANT, "other").replace(AGGREGATE, "x");
        warm.classify(&variant);
        let hits = warm.cache_stats().hits;
        assert_eq!(warm.classify(sql).statements, concrete(sql), "{sql}");
        assert_eq!(warm.cache_stats().hits, hits + 1, "{sql}");
    }
}

#[test]
fn custom_tenancy_config() {
    let tenancy = TenancyConfig {
        tables: vec![TenantTable {
            name: "orders".into(),
            tenant_column: Some("shop_id".into()),
            aggregate_column: None,
            event_column: None,
        }],
    };
    let classifier = Classifier::new(&tenancy, 16);
    let info = &classifier
        .classify("SELECT * FROM Orders o WHERE o.shop_id = 7")
        .statements[0];
    assert_eq!(info.tenants, [lit("7")]);
    let info = &classifier
        .classify("SELECT * FROM events WHERE tenant_id = $1")
        .statements[0];
    assert!(!info.touches_tenant_table && !info.has_keys());
}

#[test]
fn other_statements_on_tenant_tables() {
    for sql in [
        "TRUNCATE events",
        "COPY events FROM STDIN",
        "EXPLAIN SELECT * FROM events",
        "SELECT * FROM other JOIN events ON true",
        "SELECT EXISTS (SELECT 1 FROM snapshots)",
        "UPDATE other SET x = (SELECT 1 FROM event_outbox LIMIT 1)",
    ] {
        assert!(one(sql).touches_tenant_table, "{sql}");
    }
    assert_eq!(
        one("EXPLAIN ANALYZE SELECT * FROM events WHERE tenant_id = $1").tenants,
        [Param(1)]
    );
    assert!(!one("CREATE INDEX ON events (tenant_id)").touches_tenant_table);
}

#[test]
fn deep_statements_are_refused_not_overflowed() {
    let chain = format!(
        "SELECT 1 FROM events WHERE tenant_id = $1{}",
        " AND 1 = 1".repeat(50_000)
    );
    assert_eq!(kind(&chain), StatementKind::Unparsed);
    let long_but_shallow = format!(
        "INSERT INTO events (tenant_id, aggregate_id) VALUES {}",
        vec!["($1, $2)"; 20_000].join(", ")
    );
    assert_eq!(one(&long_but_shallow).tenants, [Param(1)]);
}

//! The event-store schema on the stores a migration touches: checked on the source and the
//! target, created on a target that has none.
//!
//! The copier moves rows in binary COPY format and upserts with `ON CONFLICT`, so it needs the
//! columns it names with their base types, and the unique keys its conflict targets name. A
//! store whose `events` or `snapshots` differ is refused with `SchemaMismatchError` listing the
//! differences; nothing is changed on it.

use tokio_postgres::Client;

use crate::error::{describe_pg_error, ControlError};
use crate::schema::{EVENT_STORE_SCHEMA, SCHEMA_LOCK_KEY};

/// `(column, base type)` of `events` that the copier reads or writes.
const EVENTS_COLUMNS: &[(&str, &str)] = &[
    ("global_position", "bigint"),
    ("event_id", "uuid"),
    ("aggregate_id", "uuid"),
    ("aggregate_type", "character varying"),
    ("event_type", "character varying"),
    ("tenant_id", "uuid"),
    ("actor_id", "character varying"),
    ("version", "integer"),
    ("timestamp", "timestamp with time zone"),
    ("payload", "jsonb"),
    ("created_at", "timestamp with time zone"),
    ("txid", "xid8"),
];

/// `(column, base type)` of `snapshots` that the copier reads or writes.
const SNAPSHOTS_COLUMNS: &[(&str, &str)] = &[
    ("aggregate_id", "uuid"),
    ("aggregate_type", "character varying"),
    ("version", "integer"),
    ("schema_version", "integer"),
    ("state", "jsonb"),
    ("created_at", "timestamp with time zone"),
];

/// The unique keys the copier's `ON CONFLICT` clauses name, per table (columns sorted).
const UNIQUE_KEYS: &[(&str, &[&str])] = &[
    ("events", &["event_id"]),
    ("snapshots", &["aggregate_id", "aggregate_type"]),
];

/// Creates the event-store schema on `store` if it has no `events` table, then checks it.
pub async fn ensure_target_schema(client: &mut Client, store: &str) -> Result<(), ControlError> {
    if !has_table(client, store, "events").await? {
        create_schema(client, store).await?;
        tracing::info!(store, "created the event-store schema on the target store");
    }
    check_schema(client, store).await
}

/// `SchemaMismatch` unless `store` has the tables, columns and unique keys the copier uses.
pub async fn check_schema(client: &Client, store: &str) -> Result<(), ControlError> {
    let mut problems = Vec::new();
    for (table, columns) in [("events", EVENTS_COLUMNS), ("snapshots", SNAPSHOTS_COLUMNS)] {
        if !has_table(client, store, table).await? {
            problems.push(format!("table {table} is missing"));
            continue;
        }
        let actual = column_types(client, store, table).await?;
        for (column, wanted) in columns {
            match actual.iter().find(|(name, _)| name == column) {
                None => problems.push(format!("{table}.{column} is missing")),
                Some((_, found)) if found != wanted => {
                    problems.push(format!("{table}.{column} is {found}, expected {wanted}"))
                }
                Some(_) => {}
            }
        }
    }
    for (table, key) in UNIQUE_KEYS {
        if problems
            .iter()
            .any(|p| p.starts_with(&format!("table {table} ")))
        {
            continue;
        }
        if !unique_keys(client, store, table)
            .await?
            .iter()
            .any(|k| k == key)
        {
            problems.push(format!("{table} has no unique key ({})", key.join(", ")));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ControlError::SchemaMismatch {
        store: store.to_string(),
        detail: problems.join("; "),
    })
}

/// Applies `0001_eventsource_schema.sql` in one transaction under the schema advisory lock, so
/// two migrations creating it on the same store at once do not collide.
async fn create_schema(client: &mut Client, store: &str) -> Result<(), ControlError> {
    let failed = |what: &str, e: tokio_postgres::Error| {
        ControlError::store_unavailable(store, format!("{what}: {}", describe_pg_error(&e)))
    };
    let transaction = client.transaction().await.map_err(|e| failed("begin", e))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .map_err(|e| failed("take the schema lock", e))?;
    transaction
        .batch_execute(EVENT_STORE_SCHEMA.sql)
        .await
        .map_err(|e| failed(&format!("apply {}", EVENT_STORE_SCHEMA.name), e))?;
    transaction
        .commit()
        .await
        .map_err(|e| failed("commit the event-store schema", e))
}

async fn has_table(client: &Client, store: &str, table: &str) -> Result<bool, ControlError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(|e| query_failed(store, table, &e))?;
    Ok(row.get(0))
}

/// `(name, base type)` of every column of `table`.
async fn column_types(
    client: &Client,
    store: &str,
    table: &str,
) -> Result<Vec<(String, String)>, ControlError> {
    let rows = client
        .query(
            "SELECT attname::text, atttypid::regtype::text FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .map_err(|e| query_failed(store, table, &e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The column sets (sorted) of every unique index of `table`.
async fn unique_keys(
    client: &Client,
    store: &str,
    table: &str,
) -> Result<Vec<Vec<String>>, ControlError> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname)
               FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
              WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
              GROUP BY i.indexrelid",
            &[&table],
        )
        .await
        .map_err(|e| query_failed(store, table, &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn query_failed(store: &str, table: &str, error: &tokio_postgres::Error) -> ControlError {
    ControlError::store_unavailable(
        store,
        format!("inspect table {table}: {}", describe_pg_error(error)),
    )
}

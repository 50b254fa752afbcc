//! The control-store schema: the numbered SQL files of `migrations/`, embedded in the binary.
//!
//! Every file is idempotent, so applying all of them in order at each start-up brings any
//! control store up to date without a version table. `0001` is the event-store schema, which
//! belongs to the stores, not here.

/// One embedded SQL file.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// The file name, for error messages.
    pub name: &'static str,
    /// Its statements.
    pub sql: &'static str,
}

/// The control-store files, in the order they apply. New files are appended (0003, 0004, ...).
pub const CONTROL_SCHEMA: &[SchemaFile] = &[
    SchemaFile {
        name: "0002_control_store.sql",
        sql: include_str!("../../migrations/0002_control_store.sql"),
    },
    SchemaFile {
        name: "0003_migrations.sql",
        sql: include_str!("../../migrations/0003_migrations.sql"),
    },
];

/// The event-store schema (`0001`), which the copier creates on a target store that has none.
pub const EVENT_STORE_SCHEMA: SchemaFile = SchemaFile {
    name: "0001_eventsource_schema.sql",
    sql: include_str!("../../migrations/0001_eventsource_schema.sql"),
};

/// The key of the transaction-scoped advisory lock held while the schema is applied ("evsh" in
/// ASCII), so that evshift instances starting at once apply it one after the other: concurrent
/// `CREATE ... IF NOT EXISTS` and `CREATE OR REPLACE FUNCTION` can fail with unique violations
/// or "tuple concurrently updated".
pub const SCHEMA_LOCK_KEY: i64 = 0x6576_7368;

/// The channel on which the control store announces route changes (payload: the tenant id).
pub const ROUTING_CHANNEL: &str = "evshift_routing";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_notifies_on_the_routing_channel() {
        let sql = CONTROL_SCHEMA[0].sql;
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS tenant_routing"));
        assert!(sql.contains(&format!("pg_notify('{ROUTING_CHANNEL}'")));
    }

    #[test]
    fn migrations_follow_routing() {
        let names: Vec<&str> = CONTROL_SCHEMA.iter().map(|f| f.name).collect();
        assert_eq!(names, ["0002_control_store.sql", "0003_migrations.sql"]);
        assert!(CONTROL_SCHEMA[1].sql.contains("migration_audit_log"));
        assert!(EVENT_STORE_SCHEMA
            .sql
            .contains("CREATE TABLE IF NOT EXISTS events"));
    }
}

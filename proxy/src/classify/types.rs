//! What the classifier says about a query string: one [`StatementInfo`] per statement, and the
//! text to send instead when a rewrite applies.

/// The classification of one query string (a simple-protocol Query, which may hold several
/// statements, or the single statement of a Parse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    /// One entry per statement, in order; empty for an empty query.
    pub statements: Vec<StatementInfo>,
    /// The text to send to the store instead of the original, when a rewrite applies (the
    /// subscription horizon, see `horizon.rs`). `None` means "send the original unchanged".
    pub rewritten_sql: Option<String>,
}

/// What one statement is, and the tenant, aggregate and event keys it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    pub kind: StatementKind,
    /// Values compared with, or inserted into, a tenant column of a tenant-scoped table.
    pub tenants: Vec<KeyValue>,
    /// Same for aggregate columns.
    pub aggregates: Vec<KeyValue>,
    /// Same for event columns.
    pub events: Vec<KeyValue>,
    /// The statement reads or writes a configured tenant-scoped table somewhere (also in a
    /// subquery or CTE), whether or not it names a key.
    pub touches_tenant_table: bool,
    /// An `INSERT` into a table with an event column (the events table): its `events` keys
    /// are the ids of the rows it writes, which dual-write copies once they commit.
    pub inserts_events: bool,
}

impl StatementInfo {
    /// A statement of the given kind that names no key and touches no tenant table.
    pub fn keyless(kind: StatementKind) -> StatementInfo {
        StatementInfo {
            kind,
            tenants: Vec::new(),
            aggregates: Vec::new(),
            events: Vec::new(),
            touches_tenant_table: false,
            inserts_events: false,
        }
    }

    /// True when the statement names at least one tenant, aggregate or event key.
    pub fn has_keys(&self) -> bool {
        !(self.tenants.is_empty() && self.aggregates.is_empty() && self.events.is_empty())
    }
}

/// One key value named by a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// A constant written in the SQL text, unquoted and unescaped (e.g. the uuid itself).
    Literal(String),
    /// A bind parameter `$n` (1-based), known only at Bind.
    Param(u16),
}

/// What kind of statement this is, as far as routing and session state care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `BEGIN` / `START TRANSACTION`, with any options.
    Begin,
    /// `COMMIT` / `END` (not `COMMIT PREPARED`, which is `Unparsed`).
    Commit,
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO SAVEPOINT`, which is `Query`).
    Rollback,
    /// `SET [SESSION] evshift.tenant_id = '...'` (or `TO`); `None` for
    /// `RESET evshift.tenant_id` and `SET evshift.tenant_id TO DEFAULT`.
    SetSessionTenant(Option<KeyValue>),
    /// Any other `SET`, `RESET`, `RESET ALL`, `DISCARD`; `local` for settings that last only
    /// until the end of the transaction (`SET LOCAL`, `SET TRANSACTION`). This includes
    /// `SET LOCAL evshift.tenant_id`, which names no session tenant.
    Set { local: bool },
    /// `SELECT eventsource_feed_horizon()`, possibly aliased or cast.
    HorizonRead,
    /// Anything else that parsed.
    Query,
    /// sqlparser could not parse it. It still runs on a store; it names no key.
    Unparsed,
}

/// Counters of the classification cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that had to parse (including texts too large to cache).
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

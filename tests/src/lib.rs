//! Real-PostgreSQL test harness of evshift.
//!
//! - [`PgCluster`]: a throwaway PostgreSQL server per test (initdb, free port, removed on drop),
//!   working as root too (the server then runs as the OS user `postgres`).
//! - [`apply_event_store_schema`]: the eventsource-py schema of `migrations/`.
//! - [`seed_events`], [`append_event`]: deterministic bulk data and library-exact appends.
//! - [`count_events`], [`tenant_event_rows`], [`assert_same_events`]: reading back and comparing
//!   a tenant across stores.
//! - [`EvshiftProcess`], [`EvshiftConfig`], [`single_store_config`]: the real `evshift` binary as
//!   a child process.
//!
//! Integration and end-to-end suites live in `tests/tests/`.

mod cluster;
mod compare;
mod evshift;
mod evshift_config;
mod os_user;
mod pg_bin;
mod port;
mod schema;
mod seed;

pub use cluster::{PgCluster, SUPERUSER};
pub use compare::{
    assert_same_events, count_events, diff_event_rows, tenant_aggregates, tenant_event_rows,
    EventRow,
};
pub use evshift::{evshift_binary, EvshiftProcess};
pub use evshift_config::{
    single_store_config, AuthConfig, ControlConfig, EvshiftConfig, StoreConfig, UserConfig,
};
pub use os_user::OsUser;
pub use pg_bin::PgBinaries;
pub use port::{free_port, LOOPBACK};
pub use schema::{apply_event_store_schema, EVENT_STORE_SCHEMA};
pub use seed::{append_event, seed_events, tenant_ids, AppendOutcome, SeedSummary, AGGREGATE_TYPE};

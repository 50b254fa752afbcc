//! evshift's data plane: a PostgreSQL wire-protocol proxy in front of event stores.
//!
//! See `docs/architecture.md` for the map of modules and their boundaries.

pub mod auth;
pub mod backend;
pub mod backends;
pub mod cancel;
pub mod classify;
pub mod config;
pub mod connection;
pub mod control_socket;
pub mod ctl;
pub mod directory;
pub mod gate;
pub mod log_format;
pub mod logging;
pub mod pending;
pub mod relay;
pub mod router;
pub mod server;
pub mod session;
#[cfg(feature = "otel")]
pub mod span_export;
pub mod store;
pub mod telemetry;
pub mod wire;

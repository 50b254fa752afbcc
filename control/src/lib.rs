//! The migration plane of evshift: everything about moving a tenant that is not the wire protocol.
//!
//! It knows nothing of the wire protocol. The data plane sees it through the shared
//! [`RoutingHandle`] (an atomically swapped [`RoutingTable`]).

pub mod routing;

pub use routing::{MigrationState, Route, RouteMigration, RoutingHandle, RoutingTable};

//! The migration plane of evshift: everything about moving a tenant that is not the wire protocol.
//!
//! It knows nothing of the wire protocol. The data plane sees it through the shared
//! [`RoutingHandle`] (an atomically swapped [`RoutingTable`]).
//!
//! - [`routing`]: the routing model.
//! - [`control_store`]: the control-store connection and its queries; [`schema`]: its SQL.
//! - [`publisher`], [`refresher`]: keeping the in-memory table in step with the control store.
//! - [`reconnecting`]: a control-store connection for commands, re-opened when it broke.
//! - [`error`]: `ControlError` and its public kind names.

pub mod backoff;
pub mod control_store;
pub mod error;
pub mod publisher;
pub mod reconnecting;
pub mod refresher;
pub mod routing;
pub mod schema;

pub use control_store::ControlStore;
pub use error::ControlError;
pub use publisher::RoutingPublisher;
pub use reconnecting::ReconnectingControlStore;
pub use refresher::{spawn_routing_refresher, spawn_routing_refresher_with};
pub use routing::{MigrationState, Route, RouteMigration, RoutingHandle, RoutingTable};

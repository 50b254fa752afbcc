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
//! - [`coordinator`]: starts, pauses, resumes and aborts migrations; one [`driver`] task per
//!   copying migration; [`transitions`]: the state machine; [`migration_store`]: their rows,
//!   routes, audit log and position mappings in the control store.
//! - [`copier`]: the bulk copy and the tail ([`copy_format`]: binary COPY rows);
//!   [`event_schema`]: the stores' schema; [`rollback`]: removing a tenant from a target.
//! - [`gate`]: the `TrafficGate` the data plane implements for the cutover.
//! - [`verification`]: count, hash and full comparison of a target with its source.
//! - [`positions`]: source to target positions; [`subscriptions`]: rewriting subscription
//!   checkpoints ([`position_token`]: their token format).

pub mod backoff;
pub mod control_store;
pub mod coordinator;
pub mod copier;
pub mod copy_format;
mod cutover;
mod driver;
pub mod dual_write;
pub mod error;
pub mod event_schema;
pub mod gate;
pub mod migration;
pub mod migration_store;
pub mod position_token;
pub mod positions;
pub mod publisher;
pub mod rate_limit;
pub mod reconnecting;
pub mod refresher;
pub mod retry;
pub mod rollback;
pub mod routing;
pub mod schema;
pub mod settings;
pub mod store_directory;
pub mod subscriptions;
pub mod tail_window;
pub mod telemetry;
pub mod transitions;
pub mod verification;

pub use control_store::ControlStore;
pub use coordinator::{Coordinator, CoordinatorConfig};
pub use error::ControlError;
pub use gate::{GateTimeout, TrafficGate};
pub use migration::{
    AuditEntry, MigrationOptions, MigrationRef, MigrationStatus, OptionOverrides, StartMigration,
    VerifyMode,
};
pub use migration_store::Transition;
pub use positions::{PositionMapper, Translation, TranslationKind};
pub use publisher::RoutingPublisher;
pub use reconnecting::ReconnectingControlStore;
pub use refresher::{spawn_routing_refresher, spawn_routing_refresher_with};
pub use routing::{MigrationState, Route, RouteMigration, RoutingHandle, RoutingTable};
pub use settings::MigrationSettings;
pub use store_directory::StoreDirectory;
pub use subscriptions::{SubscriptionMigrator, SubscriptionPlan};
pub use verification::{verify, verify_since, VerificationReport};

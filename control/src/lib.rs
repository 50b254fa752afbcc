//! The migration plane of evshift: everything about moving a tenant that is not the wire protocol.
//!
//! For now it holds the store model shared with the data plane; the coordinator, copier and
//! control-store repository grow here.

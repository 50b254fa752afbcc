//! Statement classification: what a SQL statement is (transaction control, SET, a read or
//! write of a tenant-scoped table, ...) and which tenant, aggregate or event keys it names.
//!
//! The classifier is pure: it never talks to a store. Tenant resolution (`crate::routing`)
//! turns its keys into a store.

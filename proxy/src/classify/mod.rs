//! Statement classification: what a SQL statement is (transaction control, SET, a read or
//! write of a tenant-scoped table, ...) and which tenant, aggregate or event keys it names.
//!
//! The classifier is pure: it never talks to a store. Tenant resolution (`crate::routing`)
//! turns its keys into a store.
//!
//! How a call runs:
//!
//! 1. `lexer.rs` walks the text once: literals become placeholders, comments and extra
//!    whitespace go, statements are split at top-level semicolons. The result, the
//!    *normalized text*, is the cache key: `... WHERE aggregate_id = 'uuid-1'` and
//!    `... = 'uuid-2'` share one entry.
//! 2. `cache.rs` holds a plan per normalized text: each statement's
//!    classification with its literal values left as slots, and the horizon rewrite
//!    (`horizon.rs`) as a template.
//! 3. On a miss, `parse.rs` parses the normalized text with sqlparser, `walk.rs` finds the
//!    tables it touches and applies the rewrite, `analysis.rs` finds its kind and keys.
//! 4. `template.rs` renders the plan with the literals of the text at hand (`literal.rs`
//!    decodes them), so a hit costs the lexing pass, one lookup and the rendering.
//!
//! Limitations, by design: a statement without a column list (`INSERT INTO events VALUES`)
//! names no key (evshift does not know the table's column order); keys come only from
//! `INSERT ... VALUES`/`INSERT ... SELECT <values>` rows and top-level `WHERE` equalities;
//! `PREPARE`/`EXECUTE` statements name no key; text is split into statements at top-level
//! semicolons, so a `BEGIN ATOMIC ... END` function body splits (into unparsed pieces).

mod analysis;
mod cache;
mod classifier;
mod horizon;
mod lexer;
mod literal;
mod parse;
mod template;
mod tenancy;
mod types;
mod walk;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing;

pub use classifier::Classifier;
pub use types::{CacheStats, Classified, KeyValue, StatementInfo, StatementKind};

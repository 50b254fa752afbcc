//! The configured tenant-scoped tables and their key columns, matched against names the way
//! PostgreSQL resolves them: unquoted identifiers are case-insensitive, quoted ones exact.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::config::{TenancyConfig, TenantTable};

/// Which key columns of one table a column name is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Roles {
    pub tenant: bool,
    pub aggregate: bool,
    pub event: bool,
}

impl Roles {
    pub(crate) fn any(self) -> bool {
        self.tenant || self.aggregate || self.event
    }
}

/// The tenancy configuration, as the classifier consults it.
#[derive(Debug, Clone)]
pub(crate) struct Tenancy {
    tables: Vec<TenantTable>,
}

impl Tenancy {
    pub(crate) fn new(config: &TenancyConfig) -> Tenancy {
        Tenancy {
            tables: config.tables.clone(),
        }
    }

    /// The configured table a relation name refers to. Only the last part counts: the
    /// configuration names tables without a schema, and every store has the same schema.
    pub(crate) fn table(&self, name: &ObjectName) -> Option<&TenantTable> {
        let ident = last_ident(name)?;
        self.tables.iter().find(|t| ident_is(ident, &t.name))
    }
}

/// Which key columns of `table` the column `column` is.
pub(crate) fn roles(table: &TenantTable, column: &Ident) -> Roles {
    let is =
        |configured: &Option<String>| configured.as_deref().is_some_and(|c| ident_is(column, c));
    Roles {
        tenant: is(&table.tenant_column),
        aggregate: is(&table.aggregate_column),
        event: is(&table.event_column),
    }
}

/// Whether `ident` names `name`.
pub(crate) fn ident_is(ident: &Ident, name: &str) -> bool {
    match ident.quote_style {
        None => ident.value.eq_ignore_ascii_case(name),
        Some(_) => ident.value == name,
    }
}

/// Whether two identifiers name the same thing.
pub(crate) fn same_name(a: &Ident, b: &Ident) -> bool {
    match b.quote_style {
        None => ident_is(a, &b.value.to_ascii_lowercase()),
        Some(_) => ident_is(a, &b.value),
    }
}

/// The last identifier of a possibly qualified name.
pub(crate) fn last_ident(name: &ObjectName) -> Option<&Ident> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(ident),
        _ => None,
    }
}

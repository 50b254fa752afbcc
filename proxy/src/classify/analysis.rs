//! What a parsed statement is, and which tenant, aggregate and event keys it names.
//!
//! Keys come only from places where the statement pins one value for the whole statement:
//! the rows of `INSERT INTO <tenant table> (columns) VALUES ...` and the top-level
//! `AND`-conjuncts `column = value` of the `WHERE` of a `SELECT`, `UPDATE` or `DELETE` on a
//! tenant table. `OR` branches, `IN` lists and mentions inside subqueries narrow nothing, so
//! they name no key.

use sqlparser::ast::{
    BinaryOperator, ContextModifier, Delete, Expr, FromTable, Ident, Insert, ObjectName,
    ObjectNamePart, Query, Reset, Select, SelectItem, Set, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, Update, UpdateTableFromKind, Value,
};

use super::horizon::{is_horizon_read, strip_casts};
use super::template::{InfoTemplate, KeyTemplate, KindTemplate, Literals};
use super::tenancy::{last_ident, roles, same_name, Roles, Tenancy};
use crate::config::TenantTable;

/// The session setting that names the session's tenant.
const TENANT_SETTING: &str = "evshift.tenant_id";

/// Set operations (`UNION` ...) and nested joins deeper than this give no keys: a bound on
/// recursion, far beyond what applications write.
const MAX_NESTING: usize = 32;

/// How constants in the parsed tree are to be read.
#[derive(Clone, Copy)]
pub(crate) enum LiteralMode<'a> {
    /// The tree was parsed from normalized text: every constant is a placeholder of one of
    /// these literals.
    Slots(Literals<'a>),
    /// The tree was parsed from the original text: constants are values.
    Concrete,
}

/// Analyzes statements against the tenancy configuration.
#[derive(Clone, Copy)]
pub(crate) struct Analyzer<'a> {
    pub tenancy: &'a Tenancy,
    pub mode: LiteralMode<'a>,
}

/// A configured table the statement reads directly, with the name its columns are qualified
/// by (its alias, or else its own name).
struct ScopeTable<'s> {
    table: &'s TenantTable,
    qualifier: &'s Ident,
}

impl Analyzer<'_> {
    /// The classification of `stmt`; `touches` says whether it reads or writes a tenant table.
    pub(crate) fn statement(&self, stmt: &Statement, touches: bool) -> InfoTemplate {
        let mut info = InfoTemplate::of_kind(self.kind(stmt));
        info.touches_tenant_table = touches;
        self.keys(stmt, &mut info);
        info
    }

    fn kind(&self, stmt: &Statement) -> KindTemplate {
        match stmt {
            Statement::StartTransaction { .. } => KindTemplate::Begin,
            Statement::Commit { .. } => KindTemplate::Commit,
            Statement::Rollback {
                savepoint: None, ..
            } => KindTemplate::Rollback,
            Statement::Set(set) => self.set_kind(set),
            Statement::Reset(reset) => match &reset.reset {
                Reset::ConfigurationParameter(name) if is_tenant_setting(name) => {
                    KindTemplate::SetSessionTenant(None)
                }
                _ => KindTemplate::Set { local: false },
            },
            Statement::Discard { .. } => KindTemplate::Set { local: false },
            Statement::Query(query) if is_horizon_read(query) => KindTemplate::HorizonRead,
            _ => KindTemplate::Query,
        }
    }

    fn set_kind(&self, set: &Set) -> KindTemplate {
        let local = match set {
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                let local = matches!(scope, Some(ContextModifier::Local));
                if let ([value], false, true) =
                    (values.as_slice(), local, is_tenant_setting(variable))
                {
                    if let Some(kind) = self.session_tenant(value) {
                        return kind;
                    }
                }
                local
            }
            Set::SetTimeZone { local, .. } => *local,
            Set::SetRole {
                context_modifier, ..
            } => matches!(context_modifier, Some(ContextModifier::Local)),
            // `SET TRANSACTION` lasts until the end of the transaction; `SET SESSION
            // CHARACTERISTICS AS TRANSACTION` for the session.
            Set::SetTransaction { session, .. } => !*session,
            _ => false,
        };
        KindTemplate::Set { local }
    }

    /// `SET evshift.tenant_id = <value>`: `DEFAULT` resets; a bare word is a value, as in
    /// PostgreSQL (folded to lower case unless quoted).
    fn session_tenant(&self, value: &Expr) -> Option<KindTemplate> {
        if let Expr::Identifier(ident) = value {
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") {
                return Some(KindTemplate::SetSessionTenant(None));
            }
            let word = match ident.quote_style {
                None => ident.value.to_ascii_lowercase(),
                Some(_) => ident.value.clone(),
            };
            return Some(KindTemplate::SetSessionTenant(Some(KeyTemplate::Fixed(
                word,
            ))));
        }
        let key = self.value_key(value)?;
        Some(KindTemplate::SetSessionTenant(Some(key)))
    }

    fn keys(&self, stmt: &Statement, info: &mut InfoTemplate) {
        match stmt {
            Statement::Insert(insert) => self.insert_keys(insert, info),
            Statement::Query(query) => self.query_keys(query, info, 0),
            Statement::Update(update) => self.update_keys(update, info),
            Statement::Delete(delete) => self.delete_keys(delete, info),
            Statement::Explain { statement, .. } => self.keys(statement, info),
            _ => {}
        }
    }

    fn insert_keys(&self, insert: &Insert, info: &mut InfoTemplate) {
        let TableObject::TableName(name) = &insert.table else {
            return;
        };
        let Some(table) = self.tenancy.table(name) else {
            return;
        };
        info.inserts_events = table.event_column.is_some();
        // Without a column list the column order is the table's, which evshift does not know.
        let key_columns: Vec<(usize, Roles)> = insert
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, column)| Some((i, roles(table, last_ident(column)?))))
            .filter(|(_, roles)| roles.any())
            .collect();
        if key_columns.is_empty() {
            return;
        }
        let Some(source) = insert.source.as_deref() else {
            return;
        };
        for row in insert_rows(source) {
            for &(index, roles) in &key_columns {
                if let Some(key) = row.get(index).and_then(|e| self.value_key(e)) {
                    push_key(info, roles, key);
                }
            }
        }
    }

    fn query_keys(&self, query: &Query, info: &mut InfoTemplate, depth: usize) {
        self.set_expr_keys(&query.body, info, depth);
    }

    fn set_expr_keys(&self, body: &SetExpr, info: &mut InfoTemplate, depth: usize) {
        if depth > MAX_NESTING {
            return;
        }
        match body {
            SetExpr::Select(select) => self.select_keys(select, info),
            SetExpr::Query(query) => self.query_keys(query, info, depth + 1),
            // Each branch of a UNION pins its own rows: together they name both keys.
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr_keys(left, info, depth + 1);
                self.set_expr_keys(right, info, depth + 1);
            }
            _ => {}
        }
    }

    fn select_keys(&self, select: &Select, info: &mut InfoTemplate) {
        let mut scope = Vec::new();
        for from in &select.from {
            self.scope_of(from, &mut scope, 0);
        }
        self.where_keys(&scope, select.selection.as_ref(), info);
    }

    fn update_keys(&self, update: &Update, info: &mut InfoTemplate) {
        let mut scope = Vec::new();
        self.scope_of(&update.table, &mut scope, 0);
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &update.from
        {
            from.iter().for_each(|t| self.scope_of(t, &mut scope, 0));
        }
        self.where_keys(&scope, update.selection.as_ref(), info);
    }

    fn delete_keys(&self, delete: &Delete, info: &mut InfoTemplate) {
        let mut scope = Vec::new();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
        from.iter().for_each(|t| self.scope_of(t, &mut scope, 0));
        for using in delete.using.iter().flatten() {
            self.scope_of(using, &mut scope, 0);
        }
        self.where_keys(&scope, delete.selection.as_ref(), info);
    }

    /// Adds the configured tables `from` reads directly (joins included, subqueries not).
    fn scope_of<'s>(&self, from: &'s TableWithJoins, scope: &mut Vec<ScopeTable<'s>>, depth: usize)
    where
        Self: 's,
    {
        if depth > MAX_NESTING {
            return;
        }
        let factors = std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation));
        for factor in factors {
            match factor {
                TableFactor::Table {
                    name,
                    alias,
                    args: None,
                    ..
                } => {
                    let table = self.tenancy.table(name);
                    let qualifier = alias.as_ref().map(|a| &a.name).or_else(|| last_ident(name));
                    if let (Some(table), Some(qualifier)) = (table, qualifier) {
                        scope.push(ScopeTable { table, qualifier });
                    }
                }
                TableFactor::NestedJoin {
                    table_with_joins, ..
                } => self.scope_of(table_with_joins, scope, depth + 1),
                _ => {}
            }
        }
    }

    fn where_keys(&self, scope: &[ScopeTable], selection: Option<&Expr>, info: &mut InfoTemplate) {
        let Some(selection) = selection else {
            return;
        };
        if scope.is_empty() {
            return;
        }
        for conjunct in conjuncts(selection) {
            let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = conjunct
            else {
                continue;
            };
            let pair = column_ref(left)
                .zip(self.value_key(right))
                .or_else(|| column_ref(right).zip(self.value_key(left)));
            let Some(((qualifier, column), key)) = pair else {
                continue;
            };
            let roles = column_roles(scope, qualifier, column);
            push_key(info, roles, key);
        }
    }

    /// The key a value expression stands for: a constant or a `$n` parameter, under any casts.
    fn value_key(&self, expr: &Expr) -> Option<KeyTemplate> {
        match strip_casts(expr) {
            Expr::Value(value) => self.constant_key(&value.value),
            Expr::TypedString(typed) => self.constant_key(&typed.value.value),
            _ => None,
        }
    }

    fn constant_key(&self, value: &Value) -> Option<KeyTemplate> {
        match value {
            Value::Placeholder(p) => {
                let n: u16 = p.strip_prefix('$')?.parse().ok()?;
                (n >= 1).then_some(KeyTemplate::Param(n))
            }
            Value::Number(text, _) => Some(self.literal_key(text, true)),
            Value::SingleQuotedString(text)
            | Value::EscapedStringLiteral(text)
            | Value::NationalStringLiteral(text)
            | Value::UnicodeStringLiteral(text) => Some(self.literal_key(text, false)),
            Value::DollarQuotedString(dollar) => Some(self.literal_key(&dollar.value, false)),
            _ => None,
        }
    }

    /// A constant as a key: in normalized text its slot, in original text its value.
    fn literal_key(&self, text: &str, number: bool) -> KeyTemplate {
        if let LiteralMode::Slots(literals) = self.mode {
            let slot = text
                .parse::<usize>()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
                .filter(|&slot| literals.kind(slot).is_some_and(|k| k.is_number() == number));
            if let Some(slot) = slot {
                return KeyTemplate::Slot(slot);
            }
        }
        KeyTemplate::Fixed(text.to_string())
    }
}

/// The rows of an INSERT's source: `VALUES (...), (...)`, or the one row of `SELECT a, b`.
fn insert_rows(source: &Query) -> Vec<Vec<&Expr>> {
    match source.body.as_ref() {
        SetExpr::Values(values) => values
            .rows
            .iter()
            .map(|row| row.content.iter().collect())
            .collect(),
        SetExpr::Select(select) => {
            let row = select
                .projection
                .iter()
                .map(|item| match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        Some(e)
                    }
                    _ => None,
                })
                .collect::<Option<Vec<&Expr>>>();
            row.into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// The top-level `AND`-conjuncts of a condition, parentheses removed. Iterative: a long
/// `AND` chain is a deep left-leaning tree.
fn conjuncts(condition: &Expr) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut stack = vec![condition];
    while let Some(expr) = stack.pop() {
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                stack.push(right);
                stack.push(left);
            }
            Expr::Nested(inner) => stack.push(inner),
            _ => out.push(expr),
        }
    }
    out
}

/// A column reference: its qualifier (the part before the column, if any) and its name.
fn column_ref(expr: &Expr) -> Option<(Option<&Ident>, &Ident)> {
    match strip_casts(expr) {
        Expr::Identifier(column) => Some((None, column)),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [] => None,
            [column] => Some((None, column)),
            [.., qualifier, column] => Some((Some(qualifier), column)),
        },
        _ => None,
    }
}

/// The key roles of a column in the tables it may belong to.
fn column_roles(scope: &[ScopeTable], qualifier: Option<&Ident>, column: &Ident) -> Roles {
    let mut all = Roles::default();
    let candidates = scope.iter().filter(|t| match qualifier {
        Some(q) => same_name(q, t.qualifier),
        None => true,
    });
    for candidate in candidates {
        let r = roles(candidate.table, column);
        all.tenant |= r.tenant;
        all.aggregate |= r.aggregate;
        all.event |= r.event;
    }
    all
}

fn push_key(info: &mut InfoTemplate, roles: Roles, key: KeyTemplate) {
    let push = |keys: &mut Vec<KeyTemplate>| {
        // Repeated parameters are common (`$1` twice); repeated slots are left to rendering,
        // where their values are known.
        if !(matches!(key, KeyTemplate::Param(_)) && keys.contains(&key)) {
            keys.push(key.clone());
        }
    };
    if roles.tenant {
        push(&mut info.tenants);
    }
    if roles.aggregate {
        push(&mut info.aggregates);
    }
    if roles.event {
        push(&mut info.events);
    }
}

/// `evshift.tenant_id`, written as two identifiers or one quoted name.
fn is_tenant_setting(name: &ObjectName) -> bool {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        let ObjectNamePart::Identifier(ident) = part else {
            return false;
        };
        parts.push(match ident.quote_style {
            None => ident.value.to_ascii_lowercase(),
            Some(_) => ident.value.clone(),
        });
    }
    parts.join(".") == TENANT_SETTING
}

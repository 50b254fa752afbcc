//! The subscription horizon of eventsource-py.
//!
//! A subscription first runs `SELECT eventsource_feed_horizon()` (the oldest transaction still
//! in flight in *that* store) and then reads with `txid < CAST($n AS text)::xid8`. A horizon is
//! meaningless on another store, and evshift may answer the two statements from different
//! stores. So every such comparison on a tenant-scoped table is rewritten into
//!
//! ```sql
//! txid < CAST(COALESCE(eventsource_feed_horizon(), $n) AS text)::xid8
//! ```
//!
//! which always uses the horizon of the store that runs the read. `$n` stays referenced, so
//! the parameter keeps the type (`text`) PostgreSQL infers for it, and a driver's Bind is
//! unchanged; `COALESCE` only falls back to it should the function return NULL.

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, Query, SelectItem, SetExpr,
    TableFactor, Value,
};

use super::tenancy::{ident_is, last_ident};
use super::walk::Visitor;

/// The store-side function that returns the horizon.
pub(crate) const HORIZON_FUNCTION: &str = "eventsource_feed_horizon";
/// The column compared with the horizon.
const TXID_COLUMN: &str = "txid";

/// Whether `query` is `SELECT eventsource_feed_horizon()`, possibly aliased or cast, or
/// `SELECT * FROM eventsource_feed_horizon()`.
pub(crate) fn is_horizon_read(query: &Query) -> bool {
    if query.with.is_some() {
        return false;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    if select.selection.is_some() {
        return false;
    }
    match (select.projection.as_slice(), select.from.as_slice()) {
        ([SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }], []) => {
            is_horizon_call(strip_casts(expr))
        }
        ([_], [from]) if from.joins.is_empty() => match &from.relation {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => args.args.is_empty() && is_horizon_name(name),
            _ => false,
        },
        _ => false,
    }
}

/// The expression under any casts and parentheses.
pub(crate) fn strip_casts(mut expr: &Expr) -> &Expr {
    while let Expr::Cast { expr: inner, .. } | Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr
}

fn is_horizon_name(name: &ObjectName) -> bool {
    last_ident(name).is_some_and(|ident| ident_is(ident, HORIZON_FUNCTION))
}

/// `eventsource_feed_horizon()` with no arguments.
fn is_horizon_call(expr: &Expr) -> bool {
    let Expr::Function(function) = expr else {
        return false;
    };
    let no_args = match &function.args {
        FunctionArguments::None => true,
        FunctionArguments::List(list) => list.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    no_args && is_horizon_name(&function.name)
}

/// Rewrites horizon comparisons in the expressions it is shown; counts them.
#[derive(Debug, Default)]
pub(crate) struct HorizonRewrite {
    pub rewritten: usize,
}

impl Visitor for HorizonRewrite {
    fn expr(&mut self, expr: &mut Expr) {
        let Expr::BinaryOp { left, op, right } = expr else {
            return;
        };
        if !is_comparison(op) {
            return;
        }
        let horizon = if is_txid_column(left) {
            right
        } else if is_txid_column(right) {
            left
        } else {
            return;
        };
        if rewrite_horizon(horizon) {
            self.rewritten += 1;
        }
    }
}

fn is_comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
            | BinaryOperator::Eq
            | BinaryOperator::NotEq
    )
}

/// `txid`, possibly qualified (`e.txid`).
fn is_txid_column(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(ident) => ident_is(ident, TXID_COLUMN),
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| ident_is(i, TXID_COLUMN)),
        Expr::Nested(inner) => is_txid_column(inner),
        _ => false,
    }
}

/// If `expr` is `<x>` cast to text and then to xid8 (`CAST(<x> AS text)::xid8`,
/// `<x>::text::xid8`, `CAST(CAST(<x> AS text) AS xid8)`), replaces it by
/// `CAST(COALESCE(eventsource_feed_horizon(), <x>) AS text)::xid8`. An already rewritten
/// comparison is left alone, so the rewrite is idempotent.
fn rewrite_horizon(expr: &mut Expr) -> bool {
    let Expr::Cast {
        expr: text_cast,
        data_type: outer_type,
        ..
    } = expr
    else {
        return false;
    };
    if !is_xid8(outer_type) {
        return false;
    }
    let Expr::Cast {
        expr: value,
        data_type: DataType::Text,
        ..
    } = text_cast.as_mut()
    else {
        return false;
    };
    if is_horizon_coalesce(value) {
        return false;
    }
    let placeholder = Expr::Value(Value::Null.into());
    let value = std::mem::replace(value.as_mut(), placeholder);
    let xid8 = outer_type.clone();
    *expr = Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(coalesce_with_horizon(value)),
            data_type: DataType::Text,
            format: None,
        }),
        data_type: xid8,
        format: None,
    };
    true
}

fn is_xid8(data_type: &DataType) -> bool {
    match data_type {
        DataType::Custom(name, modifiers) => {
            modifiers.is_empty() && last_ident(name).is_some_and(|i| ident_is(i, "xid8"))
        }
        _ => false,
    }
}

/// `COALESCE(eventsource_feed_horizon(), ...)`.
fn is_horizon_coalesce(expr: &Expr) -> bool {
    let Expr::Function(function) = expr else {
        return false;
    };
    let is_coalesce = last_ident(&function.name).is_some_and(|i| ident_is(i, "coalesce"));
    let FunctionArguments::List(list) = &function.args else {
        return false;
    };
    let first_is_horizon = match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => is_horizon_call(e),
        _ => false,
    };
    is_coalesce && first_is_horizon
}

/// `COALESCE(eventsource_feed_horizon(), value)`.
fn coalesce_with_horizon(value: Expr) -> Expr {
    let call = |name: &str, args: Vec<Expr>| {
        Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new(name)]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: args
                    .into_iter()
                    .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                    .collect(),
                clauses: Vec::new(),
            }),
            within_group: Vec::new(),
            filter: None,
            null_treatment: None,
            over: None,
        })
    };
    call("COALESCE", vec![call(HORIZON_FUNCTION, Vec::new()), value])
}

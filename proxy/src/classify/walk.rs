//! A bounded walk over a parsed statement: every table it reads or writes, and every
//! expression, including those in subqueries, CTEs, joins and DML clauses.
//!
//! Written by hand because sqlparser's own visitor needs its `visitor` feature (and a proc-macro
//! crate). Expression kinds that cannot hold a subquery or a comparison of interest in
//! PostgreSQL (literals, identifiers, dialect-specific forms) are not descended into.

use sqlparser::ast::{
    Assignment, CopySource, Delete, Expr, FromTable, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, InTarget, Insert, JoinConstraint, JoinOperator, LimitClause,
    Merge, ObjectName, OnConflictAction, OnInsert, OrderByKind, Query, Select, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind,
};

/// Nesting (of statements, queries and expressions) beyond which the walk stops descending.
/// The walk recurses, so this bounds its stack use; table references and the horizon
/// predicate are never that deep in real statements.
const MAX_DEPTH: usize = 128;

/// What a walk reports.
pub(crate) trait Visitor {
    /// A table or view the statement reads or writes.
    fn relation(&mut self, _name: &ObjectName) {}
    /// An expression, before its children are walked. The visitor may replace it.
    fn expr(&mut self, _expr: &mut Expr) {}
}

/// Walks `stmt`, reporting to `visitor`.
pub(crate) fn statement<V: Visitor>(stmt: &mut Statement, visitor: &mut V) {
    Walker { visitor, depth: 0 }.statement(stmt);
}

/// The walk in progress: the visitor and how deep the walk is.
struct Walker<'v, V> {
    visitor: &'v mut V,
    depth: usize,
}

impl<V: Visitor> Walker<'_, V> {
    /// Runs `f` one level deeper, unless the walk is already too deep.
    fn nested(&mut self, f: impl FnOnce(&mut Self)) {
        if self.depth < MAX_DEPTH {
            self.depth += 1;
            f(self);
            self.depth -= 1;
        }
    }

    fn statement(&mut self, stmt: &mut Statement) {
        self.nested(|w| match stmt {
            Statement::Query(query) => w.query(query),
            Statement::Insert(insert) => w.insert(insert),
            Statement::Update(update) => w.update(update),
            Statement::Delete(delete) => w.delete(delete),
            Statement::Merge(merge) => w.merge(merge),
            Statement::Explain { statement, .. } => w.statement(statement),
            Statement::Copy { source, .. } => match source {
                CopySource::Table { table_name, .. } => w.visitor.relation(table_name),
                CopySource::Query(query) => w.query(query),
            },
            Statement::Truncate(truncate) => {
                for target in &truncate.table_names {
                    w.visitor.relation(&target.name);
                }
            }
            _ => {}
        });
    }

    fn insert(&mut self, insert: &mut Insert) {
        if let TableObject::TableName(name) = &insert.table {
            self.visitor.relation(name);
        }
        if let Some(source) = insert.source.as_mut() {
            self.query(source);
        }
        match insert.on.as_mut() {
            Some(OnInsert::OnConflict(conflict)) => {
                if let OnConflictAction::DoUpdate(update) = &mut conflict.action {
                    self.assignments(&mut update.assignments);
                    self.opt_expr(update.selection.as_mut());
                }
            }
            Some(OnInsert::DuplicateKeyUpdate(assignments)) => self.assignments(assignments),
            _ => {}
        }
        self.select_items(insert.returning.as_mut());
    }

    fn update(&mut self, update: &mut Update) {
        self.table_with_joins(&mut update.table);
        match update.from.as_mut() {
            Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) => {
                from.iter_mut().for_each(|t| self.table_with_joins(t));
            }
            None => {}
        }
        self.assignments(&mut update.assignments);
        self.opt_expr(update.selection.as_mut());
        self.select_items(update.returning.as_mut());
    }

    fn delete(&mut self, delete: &mut Delete) {
        for name in &delete.tables {
            self.visitor.relation(name);
        }
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &mut delete.from;
        from.iter_mut().for_each(|t| self.table_with_joins(t));
        if let Some(using) = delete.using.as_mut() {
            using.iter_mut().for_each(|t| self.table_with_joins(t));
        }
        self.opt_expr(delete.selection.as_mut());
        self.select_items(delete.returning.as_mut());
    }

    fn merge(&mut self, merge: &mut Merge) {
        self.table_factor(&mut merge.table);
        self.table_factor(&mut merge.source);
        self.expr(&mut merge.on);
    }

    fn assignments(&mut self, assignments: &mut [Assignment]) {
        assignments.iter_mut().for_each(|a| self.expr(&mut a.value));
    }

    fn select_items(&mut self, items: Option<&mut Vec<SelectItem>>) {
        for item in items.into_iter().flatten() {
            match item {
                SelectItem::UnnamedExpr(expr)
                | SelectItem::ExprWithAlias { expr, .. }
                | SelectItem::ExprWithAliases { expr, .. } => self.expr(expr),
                SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(..) => {}
            }
        }
    }

    fn query(&mut self, query: &mut Query) {
        self.nested(|w| {
            if let Some(with) = query.with.as_mut() {
                with.cte_tables
                    .iter_mut()
                    .for_each(|cte| w.query(&mut cte.query));
            }
            w.set_expr(&mut query.body);
            if let Some(order_by) = query.order_by.as_mut() {
                if let OrderByKind::Expressions(exprs) = &mut order_by.kind {
                    exprs.iter_mut().for_each(|o| w.expr(&mut o.expr));
                }
            }
            match query.limit_clause.as_mut() {
                Some(LimitClause::LimitOffset { limit, offset, .. }) => {
                    w.opt_expr(limit.as_mut());
                    w.opt_expr(offset.as_mut().map(|o| &mut o.value));
                }
                Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                    w.expr(offset);
                    w.expr(limit);
                }
                None => {}
            }
        });
    }

    fn set_expr(&mut self, body: &mut SetExpr) {
        self.nested(|w| match body {
            SetExpr::Select(select) => w.select(select),
            SetExpr::Query(query) => w.query(query),
            SetExpr::SetOperation { left, right, .. } => {
                w.set_expr(left);
                w.set_expr(right);
            }
            SetExpr::Values(values) => {
                for row in &mut values.rows {
                    row.content.iter_mut().for_each(|e| w.expr(e));
                }
            }
            SetExpr::Insert(stmt)
            | SetExpr::Update(stmt)
            | SetExpr::Delete(stmt)
            | SetExpr::Merge(stmt) => w.statement(stmt),
            SetExpr::Table(table) => {
                if let Some(name) = &table.table_name {
                    w.visitor.relation(&ObjectName::from(vec![name.clone()]));
                }
            }
        });
    }

    fn select(&mut self, select: &mut Select) {
        for item in &mut select.projection {
            match item {
                SelectItem::UnnamedExpr(expr)
                | SelectItem::ExprWithAlias { expr, .. }
                | SelectItem::ExprWithAliases { expr, .. } => self.expr(expr),
                SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(..) => {}
            }
        }
        select
            .from
            .iter_mut()
            .for_each(|t| self.table_with_joins(t));
        self.opt_expr(select.selection.as_mut());
        if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
            exprs.iter_mut().for_each(|e| self.expr(e));
        }
        self.opt_expr(select.having.as_mut());
    }

    fn table_with_joins(&mut self, table: &mut TableWithJoins) {
        self.table_factor(&mut table.relation);
        for join in &mut table.joins {
            self.table_factor(&mut join.relation);
            if let Some(JoinConstraint::On(on)) = join_constraint(&mut join.join_operator) {
                self.expr(on);
            }
        }
    }

    fn table_factor(&mut self, factor: &mut TableFactor) {
        self.nested(|w| match factor {
            TableFactor::Table { name, args, .. } => match args {
                // `FROM f(...)`: a function call, not a table.
                Some(args) => w.function_args(&mut args.args),
                None => w.visitor.relation(name),
            },
            TableFactor::Derived { subquery, .. } => w.query(subquery),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => w.table_with_joins(table_with_joins),
            TableFactor::TableFunction { expr, .. } => w.expr(expr),
            TableFactor::Function { args, .. } => w.function_args(args),
            TableFactor::UNNEST { array_exprs, .. } => {
                array_exprs.iter_mut().for_each(|e| w.expr(e))
            }
            _ => {}
        });
    }

    fn function_args(&mut self, args: &mut [FunctionArg]) {
        for arg in args {
            let (FunctionArg::Named { arg, .. }
            | FunctionArg::ExprNamed { arg, .. }
            | FunctionArg::Unnamed(arg)) = arg;
            if let FunctionArgExpr::Expr(expr) = arg {
                self.expr(expr);
            }
        }
    }

    fn opt_expr(&mut self, expr: Option<&mut Expr>) {
        if let Some(expr) = expr {
            self.expr(expr);
        }
    }

    fn expr(&mut self, expr: &mut Expr) {
        self.nested(|w| {
            w.visitor.expr(expr);
            w.expr_children(expr);
        });
    }

    fn exprs<'e>(&mut self, exprs: impl IntoIterator<Item = &'e mut Expr>) {
        exprs.into_iter().for_each(|e| self.expr(e));
    }

    fn expr_children(&mut self, expr: &mut Expr) {
        match expr {
            Expr::IsFalse(e)
            | Expr::IsNotFalse(e)
            | Expr::IsTrue(e)
            | Expr::IsNotTrue(e)
            | Expr::IsNull(e)
            | Expr::IsNotNull(e)
            | Expr::IsUnknown(e)
            | Expr::IsNotUnknown(e)
            | Expr::Nested(e)
            | Expr::OuterJoin(e)
            | Expr::Prior(e)
            | Expr::UnaryOp { expr: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::Collate { expr: e, .. }
            | Expr::Extract { expr: e, .. }
            | Expr::Ceil { expr: e, .. }
            | Expr::Floor { expr: e, .. }
            | Expr::Named { expr: e, .. }
            | Expr::IsJson { expr: e, .. }
            | Expr::IsNormalized { expr: e, .. }
            | Expr::JsonAccess { value: e, .. }
            | Expr::CompoundFieldAccess { root: e, .. }
            | Expr::Prefixed { value: e, .. } => self.expr(e),
            Expr::IsDistinctFrom(a, b)
            | Expr::IsNotDistinctFrom(a, b)
            | Expr::BinaryOp {
                left: a, right: b, ..
            }
            | Expr::AnyOp {
                left: a, right: b, ..
            }
            | Expr::AllOp {
                left: a, right: b, ..
            }
            | Expr::AtTimeZone {
                timestamp: a,
                time_zone: b,
            }
            | Expr::Position { expr: a, r#in: b }
            | Expr::RLike {
                expr: a,
                pattern: b,
                ..
            } => {
                self.expr(a);
                self.expr(b);
            }
            Expr::Like {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::SimilarTo {
                expr,
                pattern,
                escape_char,
                ..
            } => {
                self.expr(expr);
                self.expr(pattern);
                self.opt_expr(escape_char.as_deref_mut());
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                self.expr(expr);
                self.expr(low);
                self.expr(high);
            }
            Expr::In { expr, target, .. } => {
                self.expr(expr);
                match target {
                    InTarget::List(list) => self.exprs(list),
                    InTarget::Subquery(query) => self.query(query),
                    InTarget::Unnest(e) => self.expr(e),
                    InTarget::Table { name, .. } => self.visitor.relation(name),
                }
            }
            Expr::Convert { expr, styles, .. } => {
                self.expr(expr);
                self.exprs(styles);
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                self.expr(expr);
                self.opt_expr(substring_from.as_deref_mut());
                self.opt_expr(substring_for.as_deref_mut());
            }
            Expr::Trim {
                expr,
                trim_what,
                trim_characters,
                ..
            } => {
                self.expr(expr);
                self.opt_expr(trim_what.as_deref_mut());
                self.exprs(trim_characters.iter_mut().flatten());
            }
            Expr::Overlay {
                expr,
                overlay_what,
                overlay_from,
                overlay_for,
            } => {
                self.expr(expr);
                self.expr(overlay_what);
                self.expr(overlay_from);
                self.opt_expr(overlay_for.as_deref_mut());
            }
            Expr::Function(function) => {
                match &mut function.args {
                    FunctionArguments::List(list) => self.function_args(&mut list.args),
                    FunctionArguments::Subquery(query) => self.query(query),
                    FunctionArguments::None => {}
                }
                self.opt_expr(function.filter.as_deref_mut());
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                self.opt_expr(operand.as_deref_mut());
                for when in conditions {
                    self.expr(&mut when.condition);
                    self.expr(&mut when.result);
                }
                self.opt_expr(else_result.as_deref_mut());
            }
            Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => self.query(subquery),
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                self.exprs(sets.iter_mut().flatten())
            }
            Expr::Tuple(items) | Expr::Struct { values: items, .. } => self.exprs(items),
            Expr::Array(array) => self.exprs(&mut array.elem),
            Expr::Interval(interval) => self.expr(&mut interval.value),
            _ => {}
        }
    }
}

/// The constraint of a join, for the join kinds that have one.
fn join_constraint(operator: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    match operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        _ => None,
    }
}

//! Classifying the text of one statement with sqlparser: parse it, find the tables it
//! touches, apply the horizon rewrite, analyze it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{ObjectName, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analysis::{Analyzer, LiteralMode};
use super::horizon::HorizonRewrite;
use super::template::InfoTemplate;
use super::tenancy::Tenancy;
use super::walk::{self, Visitor};

/// Bound on a statement's tree depth (as estimated by the lexer) beyond which it is not parsed
/// at all and counts as unparsed. sqlparser builds, prints and drops its trees recursively: a
/// left-deep tree (`1 + 1 + ...`) some 25 000 levels deep overflows a 2 MiB stack (tokio's
/// worker default), which aborts the whole process. Real statements stay far below this.
pub(crate) const MAX_STATEMENT_DEPTH: usize = 4_000;

/// The classification of one statement's text.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// One per statement sqlparser found (normally exactly one).
    pub infos: Vec<InfoTemplate>,
    /// The text to send instead, when the horizon rewrite applied.
    pub rewritten: Option<String>,
}

/// Parses and classifies `text`; `None` if sqlparser cannot parse it.
pub(crate) fn classify_text(text: &str, tenancy: &Tenancy, mode: LiteralMode) -> Option<Parsed> {
    // sqlparser is not supposed to panic, but the proxy must survive any input: a panic here
    // means "could not parse", not a lost session.
    catch_unwind(AssertUnwindSafe(|| classify_unguarded(text, tenancy, mode)))
        .ok()
        .flatten()
}

fn classify_unguarded(text: &str, tenancy: &Tenancy, mode: LiteralMode) -> Option<Parsed> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, text).ok()?;
    let analyzer = Analyzer { tenancy, mode };
    let mut infos = Vec::with_capacity(statements.len());
    let mut rewrote = false;
    for stmt in &mut statements {
        let touches = touches_tenant_table(stmt, tenancy);
        if touches {
            let mut rewrite = HorizonRewrite::default();
            walk::statement(stmt, &mut rewrite);
            rewrote |= rewrite.rewritten > 0;
        }
        infos.push(analyzer.statement(stmt, touches));
    }
    let rewritten = rewrote.then(|| print(&statements));
    Some(Parsed { infos, rewritten })
}

/// Whether `stmt` reads or writes a configured tenant table anywhere.
fn touches_tenant_table(stmt: &mut Statement, tenancy: &Tenancy) -> bool {
    /// Looks for a relation that is a configured table.
    struct Finder<'t> {
        tenancy: &'t Tenancy,
        found: bool,
    }
    impl Visitor for Finder<'_> {
        fn relation(&mut self, name: &ObjectName) {
            self.found |= self.tenancy.table(name).is_some();
        }
    }
    let mut finder = Finder {
        tenancy,
        found: false,
    };
    walk::statement(stmt, &mut finder);
    finder.found
}

/// sqlparser's printout of the statements, separated as a simple query separates them.
fn print(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

//! A classification as the cache keeps it: in terms of literal *slots* (the n-th literal of
//! the text) instead of literal values, so that one entry serves every text with the same
//! normalized form. Rendering substitutes the literals of the text at hand.

use std::collections::HashSet;

use super::lexer::{Fingerprint, Literal, LiteralKind};
use super::literal::decode;
use super::types::{KeyValue, StatementInfo, StatementKind};

/// A key value with its literal left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyTemplate {
    /// A bind parameter `$n`.
    Param(u16),
    /// The value of the n-th literal of the text.
    Slot(usize),
    /// A value fixed by the text itself (an identifier in `SET x = name`, or a literal when
    /// the statement was classified from its original text).
    Fixed(String),
}

/// [`StatementKind`] with its key left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KindTemplate {
    Begin,
    Commit,
    Rollback,
    SetSessionTenant(Option<KeyTemplate>),
    Set { local: bool },
    HorizonRead,
    Query,
    Unparsed,
}

/// [`StatementInfo`] with its keys left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoTemplate {
    pub kind: KindTemplate,
    pub tenants: Vec<KeyTemplate>,
    pub aggregates: Vec<KeyTemplate>,
    pub events: Vec<KeyTemplate>,
    pub touches_tenant_table: bool,
    pub inserts_events: bool,
}

impl InfoTemplate {
    pub(crate) fn of_kind(kind: KindTemplate) -> InfoTemplate {
        InfoTemplate {
            kind,
            tenants: Vec::new(),
            aggregates: Vec::new(),
            events: Vec::new(),
            touches_tenant_table: false,
            inserts_events: false,
        }
    }

    pub(crate) fn unparsed() -> InfoTemplate {
        InfoTemplate::of_kind(KindTemplate::Unparsed)
    }
}

/// A piece of a rewritten statement: text as sqlparser printed it, or a literal to put back
/// exactly as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Slot(usize),
}

/// How to classify one statement of a text with a given normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkPlan {
    /// Classified once from the normalized text. `rewrite` is the statement to send instead,
    /// when the horizon rewrite applies.
    Template {
        infos: Vec<InfoTemplate>,
        rewrite: Option<Vec<Piece>>,
    },
    /// The normalized text did not parse but the original did: the classification depends on
    /// the literals themselves, so the original statement is parsed on every call.
    Reparse,
}

/// The cached classification of every statement of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub chunks: Vec<ChunkPlan>,
}

/// The literal tokens of the text being classified.
#[derive(Clone, Copy)]
pub(crate) struct Literals<'a> {
    pub sql: &'a str,
    pub tokens: &'a [Literal],
}

impl<'a> Literals<'a> {
    pub(crate) fn of(sql: &'a str, fingerprint: &'a Fingerprint) -> Literals<'a> {
        Literals {
            sql,
            tokens: &fingerprint.literals,
        }
    }

    /// No literals: for templates built from original text, which hold only fixed values.
    pub(crate) fn none() -> Literals<'static> {
        Literals {
            sql: "",
            tokens: &[],
        }
    }

    /// The n-th literal as written, or `None` for a slot this text does not have.
    pub(crate) fn raw(&self, slot: usize) -> Option<&'a str> {
        let token = self.tokens.get(slot)?;
        self.sql.get(token.span.clone())
    }

    fn value(&self, slot: usize) -> Option<String> {
        let kind = self.kind(slot)?;
        Some(decode(self.raw(slot)?, kind))
    }

    pub(crate) fn kind(&self, slot: usize) -> Option<LiteralKind> {
        self.tokens.get(slot).map(|t| t.kind)
    }
}

impl KeyTemplate {
    fn render(&self, literals: Literals) -> Option<KeyValue> {
        match self {
            KeyTemplate::Param(n) => Some(KeyValue::Param(*n)),
            KeyTemplate::Slot(slot) => literals.value(*slot).map(KeyValue::Literal),
            KeyTemplate::Fixed(value) => Some(KeyValue::Literal(value.clone())),
        }
    }
}

impl InfoTemplate {
    /// The concrete statement info for a text with these literals.
    pub(crate) fn render(&self, literals: Literals) -> StatementInfo {
        let kind = match &self.kind {
            KindTemplate::Begin => StatementKind::Begin,
            KindTemplate::Commit => StatementKind::Commit,
            KindTemplate::Rollback => StatementKind::Rollback,
            KindTemplate::SetSessionTenant(value) => {
                StatementKind::SetSessionTenant(value.as_ref().and_then(|v| v.render(literals)))
            }
            KindTemplate::Set { local } => StatementKind::Set { local: *local },
            KindTemplate::HorizonRead => StatementKind::HorizonRead,
            KindTemplate::Query => StatementKind::Query,
            KindTemplate::Unparsed => StatementKind::Unparsed,
        };
        StatementInfo {
            kind,
            tenants: render_keys(&self.tenants, literals),
            aggregates: render_keys(&self.aggregates, literals),
            events: render_keys(&self.events, literals),
            touches_tenant_table: self.touches_tenant_table,
            inserts_events: self.inserts_events,
        }
    }
}

/// Renders keys, dropping repeats (two slots may hold equal values) but keeping first-seen
/// order.
fn render_keys(keys: &[KeyTemplate], literals: Literals) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::with_capacity(keys.len());
    // Multi-row inserts can name thousands of keys: past a few, a set keeps this linear.
    let mut seen: Option<HashSet<KeyValue>> = None;
    for key in keys.iter().filter_map(|k| k.render(literals)) {
        if out.len() >= 16 && seen.is_none() {
            seen = Some(out.iter().cloned().collect());
        }
        let fresh = match seen.as_mut() {
            Some(seen) => seen.insert(key.clone()),
            None => !out.contains(&key),
        };
        if fresh {
            out.push(key);
        }
    }
    out
}

/// Renders a rewritten statement with the literals of the text at hand.
pub(crate) fn render_pieces(pieces: &[Piece], literals: Literals, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            // A plan is only used for texts with its normalized form, which have every slot.
            Piece::Slot(slot) => out.push_str(literals.raw(*slot).unwrap_or("NULL")),
        }
    }
}

/// Turns sqlparser's printout of a rewritten *normalized* statement back into a template: its
/// constants are exactly the placeholders (`'n'` and `n`, see `lexer.rs`). `None` if the
/// printout holds a constant that is not a placeholder of the right kind; the caller then
/// falls back to classifying the original text.
pub(crate) fn pieces_of(printed: &str, literals: Literals) -> Option<Vec<Piece>> {
    let printed_fp = super::lexer::fingerprint(printed);
    let mut pieces = Vec::new();
    let mut at = 0;
    for token in &printed_fp.literals {
        let raw = printed.get(token.span.clone())?;
        let slot = slot_number(raw, token.kind)?;
        let expected = literals.kind(slot)?;
        if expected.is_number() != token.kind.is_number() {
            return None;
        }
        pieces.push(Piece::Text(printed.get(at..token.span.start)?.to_string()));
        pieces.push(Piece::Slot(slot));
        at = token.span.end;
    }
    pieces.push(Piece::Text(printed.get(at..)?.to_string()));
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    Some(pieces)
}

/// The slot a placeholder stands for: `'n'` or `n`.
fn slot_number(raw: &str, kind: LiteralKind) -> Option<usize> {
    let digits = match kind {
        LiteralKind::Number => raw,
        LiteralKind::Standard => raw.strip_prefix('\'')?.strip_suffix('\'')?,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

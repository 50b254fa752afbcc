//! The fingerprint lexer: one pass over a query string that produces
//!
//! * the *normalized text*, the cache key: literals replaced by placeholders, comments dropped,
//!   runs of whitespace collapsed to one space;
//! * the raw *literal tokens*, in order, so that a cached classification can be made concrete
//!   again;
//! * the statements (*chunks*) of the string, split at top-level semicolons, with their place in
//!   both texts and a bound on the depth of the syntax tree sqlparser would build for them.
//!
//! # Placeholders
//!
//! The n-th literal of the string (0-based, strings and numbers counted together) becomes
//! `'n'` when it is a string constant of any form (`'...'`, `E'...'`, `N'...'`, `B'...'`,
//! `X'...'`, `U&'...'`, `$tag$...$tag$`) and `n` when it is a numeric constant. Why this form:
//!
//! * a string constant stays a plain string constant and a number stays a number, so sqlparser
//!   builds the same tree wherever a literal may stand (`LIMIT 5`, `numeric(10,2)`,
//!   `'...'::uuid`, `DATE '...'`, `INTERVAL '...'`);
//! * it cannot collide with anything the client wrote: after normalization *every* constant in
//!   the text is a placeholder, so a constant met in the parsed tree is always a slot number;
//!   and `$n` parameters, identifiers and keywords are never constants;
//! * it survives sqlparser's `Display` unchanged (`'7'` prints as `'7'`, `7` as `7`), so the
//!   rewritten text of a statement can be turned back into a template by lexing it again.
//!
//! Unterminated literals, quoted identifiers and comments are copied verbatim, which keeps them
//! unparseable: such text is an error in PostgreSQL too.
//!
//! The lexer follows PostgreSQL's rules with `standard_conforming_strings = on` (the default
//! since 9.1): a backslash is an escape only in `E'...'`.

use std::fmt::Write;
use std::ops::Range;

/// How a literal token was written, which decides how its value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiteralKind {
    /// `'...'` or `N'...'`: a doubled quote stands for one quote.
    Standard,
    /// `E'...'`: backslash escapes.
    Escape,
    /// `U&'...'`: `\XXXX` and `\+XXXXXX` code point escapes.
    Unicode,
    /// `B'...'` or `X'...'`: bit strings, body kept as written.
    Bits,
    /// `$tag$...$tag$`: body kept as written.
    Dollar,
    /// A numeric constant, kept as written.
    Number,
}

impl LiteralKind {
    pub(crate) fn is_number(self) -> bool {
        self == LiteralKind::Number
    }
}

/// One literal token of the lexed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    /// Where the whole token (prefix and quotes included) lies in the lexed text.
    pub span: Range<usize>,
    pub kind: LiteralKind,
}

/// One statement of the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// From its first to its last token in the normalized text.
    pub normalized: Range<usize>,
    /// From its first to its last token in the original text (comments around it excluded).
    pub original: Range<usize>,
    /// An upper bound on the depth of its syntax tree (see [`MAX_PAREN_NESTING`]).
    pub depth: usize,
}

/// Everything the classifier needs to know about a query string before (or instead of)
/// parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub normalized: String,
    pub literals: Vec<Literal>,
    pub chunks: Vec<Chunk>,
}

/// Parenthesis nesting beyond which a statement is reported as infinitely deep. sqlparser
/// refuses far shallower nesting anyway (its recursion limit is 50).
pub(crate) const MAX_PAREN_NESTING: usize = 256;

/// Lexes `sql` once. Never fails: whatever does not look like a token is copied verbatim.
pub(crate) fn fingerprint(sql: &str) -> Fingerprint {
    Lexer::new(sql).run()
}

/// Bytes that may continue an identifier or keyword (PostgreSQL also allows `$` after the
/// first character, and treats every non-ASCII byte as a letter).
fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Bytes after which a placeholder needs a separating space so that it stays a token of its
/// own (`'a'E'b'` must not become `'0''1'`, `x.5` must not become `x0`).
fn glues_to_placeholder(b: u8) -> bool {
    is_ident_char(b) || matches!(b, b'\'' | b'"' | b'.')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Index just after the closing `quote` of a quoted token opened at `open`, or `None` when it
/// is not closed. A doubled quote is part of the body; so is any byte after a backslash when
/// `backslash` escapes are on.
fn scan_quoted(bytes: &[u8], open: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// End of a numeric constant starting at `start` (a digit, or a `.` followed by a digit).
fn scan_number(bytes: &[u8], start: usize) -> usize {
    let digits = |mut i: usize, accept: fn(u8) -> bool| {
        while i < bytes.len() && (accept(bytes[i]) || bytes[i] == b'_') {
            i += 1;
        }
        i
    };
    let radix_prefix = bytes[start] == b'0'
        && matches!(
            bytes.get(start + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
        && bytes.get(start + 2).is_some_and(u8::is_ascii_hexdigit);
    if radix_prefix {
        return digits(start + 2, |b| b.is_ascii_hexdigit());
    }
    let mut i = digits(start, |b| b.is_ascii_digit());
    // `1..2` is an integer followed by `..` in PostgreSQL's lexer, not `1.` and `.2`.
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1) != Some(&b'.') {
        i = digits(i + 1, |b| b.is_ascii_digit());
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j, |b| b.is_ascii_digit());
        }
    }
    i
}

/// The `$tag$` opening a dollar-quoted string at `start`, if there is one (`$$` included).
fn dollar_tag(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if i < bytes.len() && is_ident_start(bytes[i]) {
        while i < bytes.len() && is_ident_char(bytes[i]) && bytes[i] != b'$' {
            i += 1;
        }
    }
    (bytes.get(i) == Some(&b'$')).then_some(i + 1)
}

/// The statement being lexed: its extent so far and its depth bookkeeping.
#[derive(Default)]
struct ChunkState {
    normalized: Option<Range<usize>>,
    original: Option<Range<usize>>,
    /// Open parentheses.
    nesting: usize,
    /// Tokens since the last comma at each open parenthesis level (index 0: top level).
    /// A left-deep tree (`a + b + c ...`, `x AND y AND ...`, `UNION ...`) is as deep as the run
    /// of tokens between commas, and nested levels add up; commas start siblings, not children.
    runs: Vec<usize>,
    /// Sum of `runs`: a bound on the depth at this point.
    depth: usize,
    max_depth: usize,
}

impl ChunkState {
    fn new() -> ChunkState {
        ChunkState {
            runs: vec![0],
            ..ChunkState::default()
        }
    }

    fn count(&mut self) {
        if let Some(run) = self.runs.last_mut() {
            *run += 1;
        }
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn open(&mut self) {
        self.count();
        self.nesting += 1;
        if self.nesting >= MAX_PAREN_NESTING {
            self.max_depth = usize::MAX;
        } else {
            self.runs.push(0);
        }
    }

    fn close(&mut self) {
        if self.nesting == 0 {
            // A stray `)`: a syntax error that sqlparser reports; just count it.
            self.count();
            return;
        }
        self.nesting -= 1;
        if self.nesting + 1 < MAX_PAREN_NESTING && self.runs.len() > 1 {
            let run = self.runs.pop().unwrap_or(0);
            self.depth -= run;
        }
    }

    fn comma(&mut self) {
        if let Some(run) = self.runs.last_mut() {
            self.depth -= *run;
            *run = 0;
        }
    }
}

/// The lexer's state while it walks one text.
struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: Fingerprint,
    /// Whitespace or a comment was skipped since the last token.
    pending_space: bool,
    /// The last thing written to the normalized text is a placeholder.
    after_placeholder: bool,
    chunk: ChunkState,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Lexer<'a> {
        Lexer {
            sql,
            bytes: sql.as_bytes(),
            pos: 0,
            out: Fingerprint {
                normalized: String::with_capacity(sql.len()),
                literals: Vec::new(),
                chunks: Vec::new(),
            },
            pending_space: false,
            after_placeholder: false,
            chunk: ChunkState::new(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn run(mut self) -> Fingerprint {
        while self.pos < self.bytes.len() {
            let b = self.bytes[self.pos];
            match b {
                _ if is_space(b) => {
                    self.pos += 1;
                    self.pending_space = true;
                }
                b'-' if self.peek(1) == Some(b'-') => self.line_comment(),
                b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
                b'\'' => self.quoted_literal(self.pos, self.pos, LiteralKind::Standard),
                b'"' => self.quoted_identifier(self.pos, self.pos),
                b'$' => self.dollar(),
                b'0'..=b'9' => self.number(),
                b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit()) => self.number(),
                b';' if self.chunk.nesting == 0 => self.end_chunk(),
                _ if is_ident_start(b) => self.word(),
                _ => self.punctuation(b),
            }
        }
        self.finish_chunk();
        self.out
    }

    fn line_comment(&mut self) {
        while self.pos < self.bytes.len() && !matches!(self.bytes[self.pos], b'\n' | b'\r') {
            self.pos += 1;
        }
        self.pending_space = true;
    }

    /// `/* ... */`, nested as PostgreSQL nests them.
    fn block_comment(&mut self) {
        let start = self.pos;
        let mut depth = 0usize;
        let mut i = self.pos;
        while i < self.bytes.len() {
            match (self.bytes[i], self.bytes.get(i + 1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    i += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        self.pos = i;
                        self.pending_space = true;
                        return;
                    }
                }
                _ => i += 1,
            }
        }
        self.verbatim_rest(start);
    }

    /// A string constant whose opening quote is at `quote` and whose token (prefix included)
    /// starts at `start`.
    fn quoted_literal(&mut self, start: usize, quote: usize, kind: LiteralKind) {
        let backslash = kind == LiteralKind::Escape;
        match scan_quoted(self.bytes, quote, b'\'', backslash) {
            Some(end) => self.literal(start, end, kind),
            None => self.verbatim_rest(start),
        }
    }

    /// A quoted identifier `"..."` (or `U&"..."` starting at `start`).
    fn quoted_identifier(&mut self, start: usize, quote: usize) {
        match scan_quoted(self.bytes, quote, b'"', false) {
            Some(end) => self.token(start, end),
            None => self.verbatim_rest(start),
        }
    }

    /// `$n` parameter, `$tag$` dollar-quoted string, or a lone `$`.
    fn dollar(&mut self) {
        let start = self.pos;
        if self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            let mut end = start + 1;
            while end < self.bytes.len() && self.bytes[end].is_ascii_digit() {
                end += 1;
            }
            return self.token(start, end);
        }
        let Some(body) = dollar_tag(self.bytes, start) else {
            return self.token(start, start + 1);
        };
        let tag = &self.sql[start..body];
        match self.sql[body..].find(tag) {
            Some(at) => self.literal(start, body + at + tag.len(), LiteralKind::Dollar),
            None => self.verbatim_rest(start),
        }
    }

    fn number(&mut self) {
        let end = scan_number(self.bytes, self.pos);
        self.literal(self.pos, end, LiteralKind::Number);
    }

    /// A keyword or identifier, or the prefix of a prefixed string constant.
    fn word(&mut self) {
        let start = self.pos;
        let mut end = start;
        while end < self.bytes.len() && is_ident_char(self.bytes[end]) {
            end += 1;
        }
        let next = self.bytes.get(end).copied();
        let after = self.bytes.get(end + 1).copied();
        match (&self.bytes[start..end], next, after) {
            ([b'e' | b'E'], Some(b'\''), _) => self.quoted_literal(start, end, LiteralKind::Escape),
            ([b'n' | b'N'], Some(b'\''), _) => {
                self.quoted_literal(start, end, LiteralKind::Standard)
            }
            ([b'b' | b'B' | b'x' | b'X'], Some(b'\''), _) => {
                self.quoted_literal(start, end, LiteralKind::Bits)
            }
            ([b'u' | b'U'], Some(b'&'), Some(b'\'')) => {
                self.quoted_literal(start, end + 1, LiteralKind::Unicode)
            }
            ([b'u' | b'U'], Some(b'&'), Some(b'"')) => self.quoted_identifier(start, end + 1),
            _ => self.token(start, end),
        }
    }

    fn punctuation(&mut self, b: u8) {
        let start = self.pos;
        match b {
            b'(' => self.chunk.open(),
            b')' => self.chunk.close(),
            b',' => self.chunk.comma(),
            _ => self.chunk.count(),
        }
        self.write_token(start, start + 1);
    }

    /// An ordinary token, copied as written.
    fn token(&mut self, start: usize, end: usize) {
        self.chunk.count();
        self.write_token(start, end);
    }

    /// Copies `start..end` of the original to the normalized text.
    fn write_token(&mut self, start: usize, end: usize) {
        let first = self.bytes[start];
        let separate = self.after_placeholder && glues_to_placeholder(first);
        self.begin(start, separate);
        self.out.normalized.push_str(&self.sql[start..end]);
        self.after_placeholder = false;
        self.end(end);
    }

    /// A literal token: recorded, and replaced by its placeholder.
    fn literal(&mut self, start: usize, end: usize, kind: LiteralKind) {
        self.chunk.count();
        let slot = self.out.literals.len();
        self.out.literals.push(Literal {
            span: start..end,
            kind,
        });
        let separate = self
            .out
            .normalized
            .as_bytes()
            .last()
            .is_some_and(|&b| glues_to_placeholder(b));
        self.begin(start, separate);
        let text = &mut self.out.normalized;
        // Writing into a String cannot fail.
        let _ = if kind.is_number() {
            write!(text, "{slot}")
        } else {
            write!(text, "'{slot}'")
        };
        self.after_placeholder = true;
        self.end(end);
    }

    /// The rest of the text cannot be lexed (an unterminated quote or comment): copy it as
    /// written so that the parser reports the error PostgreSQL would.
    fn verbatim_rest(&mut self, start: usize) {
        self.chunk.count();
        let end = self.bytes.len();
        self.write_token(start, end);
    }

    /// Starts a token of the normalized text at `start` of the original.
    fn begin(&mut self, start: usize, separate: bool) {
        let text = &mut self.out.normalized;
        let at_start = text.is_empty() || text.ends_with(' ');
        if !at_start && (self.pending_space || separate) {
            text.push(' ');
        }
        self.pending_space = false;
        let here = text.len();
        self.chunk.normalized.get_or_insert(here..here);
        self.chunk.original.get_or_insert(start..start);
    }

    /// Ends a token of the normalized text at `end` of the original.
    fn end(&mut self, end: usize) {
        let here = self.out.normalized.len();
        if let Some(range) = self.chunk.normalized.as_mut() {
            range.end = here;
        }
        if let Some(range) = self.chunk.original.as_mut() {
            range.end = end;
        }
        self.pos = end;
    }

    /// A top-level `;`: the statement so far is complete.
    fn end_chunk(&mut self) {
        self.finish_chunk();
        let text = &mut self.out.normalized;
        if !text.is_empty() && self.pending_space && !text.ends_with(' ') {
            text.push(' ');
        }
        text.push(';');
        self.pending_space = false;
        self.after_placeholder = false;
        self.pos += 1;
    }

    fn finish_chunk(&mut self) {
        let state = std::mem::replace(&mut self.chunk, ChunkState::new());
        if let (Some(normalized), Some(original)) = (state.normalized, state.original) {
            self.out.chunks.push(Chunk {
                normalized,
                original,
                depth: state.max_depth,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(sql: &str) -> String {
        fingerprint(sql).normalized
    }

    fn raws(sql: &str) -> Vec<&str> {
        fingerprint(sql)
            .literals
            .iter()
            .map(|l| &sql[l.span.clone()])
            .collect()
    }

    #[test]
    fn replaces_every_literal_form_by_a_slot() {
        let sql = "SELECT 'a''b', E'c\\'d', N'e', B'01', X'1f', U&'d\\0061', $$x$$, $q$y$q$, 12, 1.5e3, .5, 0x1F";
        assert_eq!(
            normalized(sql),
            "SELECT '0', '1', '2', '3', '4', '5', '6', '7', 8, 9, 10, 11"
        );
        assert_eq!(
            raws(sql),
            [
                "'a''b'",
                "E'c\\'d'",
                "N'e'",
                "B'01'",
                "X'1f'",
                "U&'d\\0061'",
                "$$x$$",
                "$q$y$q$",
                "12",
                "1.5e3",
                ".5",
                "0x1F"
            ]
        );
    }

    #[test]
    fn keeps_parameters_identifiers_and_operators() {
        let sql = "SELECT \"we'ird--\", t1.col$x FROM t WHERE a = $1::uuid AND b<>$12";
        assert_eq!(normalized(sql), sql);
        assert!(fingerprint(sql).literals.is_empty());
    }

    #[test]
    fn drops_comments_and_collapses_whitespace() {
        let sql = "  SELECT /* a /* nested */ b */ 1 -- trailing\n\t FROM\n\n t  ";
        assert_eq!(normalized(sql), "SELECT 0 FROM t");
        assert_eq!(normalized("SELECT/**/1"), "SELECT 0");
        assert_eq!(normalized("SELECT a/**/b"), "SELECT a b");
    }

    #[test]
    fn literal_insensitive_keys() {
        let a = "SELECT * FROM events WHERE aggregate_id = 'b6a4c6c2-0000-4000-8000-000000000001' LIMIT 10";
        let b = "SELECT * FROM events WHERE aggregate_id = $x$other$x$ LIMIT 99999";
        assert_eq!(normalized(a), normalized(b));
    }

    #[test]
    fn placeholders_never_glue_to_neighbours() {
        assert_eq!(normalized("SELECT 'a'E'b'"), "SELECT '0' '1'");
        assert_eq!(normalized("SELECT x.5"), "SELECT x 0");
        assert_eq!(normalized("SELECT 1.5.5"), "SELECT 0 1");
        assert_eq!(normalized("SELECT 12abc"), "SELECT 0 abc");
        assert_eq!(normalized("SELECT 1::int"), "SELECT 0::int");
    }

    #[test]
    fn splits_statements_at_top_level_semicolons() {
        let sql = "BEGIN; /* c */ INSERT INTO t VALUES ('a;b', (1)) ;; COMMIT ;  ";
        let fp = fingerprint(sql);
        assert_eq!(
            fp.normalized,
            "BEGIN; INSERT INTO t VALUES ('0', (1)) ;; COMMIT ;"
        );
        let originals: Vec<&str> = fp.chunks.iter().map(|c| &sql[c.original.clone()]).collect();
        assert_eq!(
            originals,
            ["BEGIN", "INSERT INTO t VALUES ('a;b', (1))", "COMMIT"]
        );
        let normals: Vec<&str> = fp
            .chunks
            .iter()
            .map(|c| &fp.normalized[c.normalized.clone()])
            .collect();
        assert_eq!(
            normals,
            ["BEGIN", "INSERT INTO t VALUES ('0', (1))", "COMMIT"]
        );
        assert!(fingerprint("  ; -- nothing\n ;").chunks.is_empty());
        assert!(fingerprint("").chunks.is_empty());
    }

    #[test]
    fn unterminated_tokens_are_copied_verbatim() {
        assert_eq!(normalized("SELECT 'abc"), "SELECT 'abc");
        assert_eq!(normalized("SELECT $$abc"), "SELECT $$abc");
        assert_eq!(normalized("SELECT 1 /* abc"), "SELECT 0 /* abc");
        assert_eq!(normalized("SELECT \"abc; x"), "SELECT \"abc; x");
        assert_eq!(fingerprint("SELECT 'a; b").chunks.len(), 1);
    }

    #[test]
    fn depth_bound_grows_with_operator_chains_not_lists() {
        let chain = format!("SELECT 1{}", " + 1".repeat(1000));
        let list = format!("SELECT 1{}", ", 1".repeat(1000));
        let nested = format!("SELECT {}1{}", "(".repeat(300), ")".repeat(300));
        let depth = |sql: &str| fingerprint(sql).chunks[0].depth;
        assert!(depth(&chain) > 2000);
        assert!(depth(&list) < 5);
        assert_eq!(depth(&nested), usize::MAX);
    }

    #[test]
    fn non_ascii_text_is_kept_whole() {
        let sql = "SELECT 'é', ñame FROM tàble WHERE x = 'ü'";
        assert_eq!(normalized(sql), "SELECT '0', ñame FROM tàble WHERE x = '1'");
    }
}

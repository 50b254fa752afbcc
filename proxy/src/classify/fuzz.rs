//! Deterministic fuzzing: the classifier must never panic, whatever the text, and a cache hit
//! must say exactly what the miss said.

use super::*;
use crate::config::TenancyConfig;

/// splitmix64: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SEEDS: &[&str] = &[
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1 AND aggregate_type = $2",
    "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position",
    "SELECT global_position FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND global_position > $2 AND tenant_id = $3 ORDER BY global_position ASC LIMIT $5",
    "SELECT * FROM events WHERE tenant_id = 'b6a4c6c2-7f3e-4d6b-9a51-0c2d5e8f1a10'::uuid AND aggregate_id = E'x\\'y'",
    "INSERT INTO snapshots (aggregate_id, aggregate_type) VALUES ($1, $2) ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE SET state = EXCLUDED.state",
    "BEGIN; SET evshift.tenant_id = 'abc'; SELECT eventsource_feed_horizon(); COMMIT",
    "SELECT 1 FROM events e WHERE e.txid < CAST($$12$$ AS text)::xid8 -- c\n /* x /* y */ */",
    "UPDATE event_outbox SET status = 'done' WHERE tenant_id = U&'\\0061' AND id = 1.5e3",
];

/// Snippets that stress the lexer's and the parser's corner cases.
const SNIPPETS: &[&str] = &[
    "'",
    "''",
    "\"",
    "$",
    "$$",
    "$a$",
    "$1",
    "$99999",
    "--",
    "/*",
    "*/",
    "E'",
    "U&'",
    "U&\"",
    "N'",
    "B'",
    ";",
    "(",
    ")",
    ",",
    "::",
    "\\",
    " ",
    "\n",
    "0x",
    "1e",
    ".5",
    "é",
    "\u{0}",
    "txid <",
    "CAST(",
    " AS text)::xid8",
    "tenant_id = ",
    " AND ",
    " OR ",
    "SELECT ",
    "FROM events ",
    "((((",
];

fn random_text(rng: &mut Rng) -> String {
    let len = rng.below(120);
    let mut bytes = Vec::with_capacity(len * 2);
    while bytes.len() < len {
        if rng.below(3) == 0 {
            bytes.extend_from_slice(rng.pick(SNIPPETS).as_bytes());
        } else {
            bytes.push(rng.next() as u8);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutated(rng: &mut Rng) -> String {
    let mut bytes = rng.pick(SEEDS).as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 => {
                let end = (at + rng.below(12)).min(bytes.len());
                bytes.drain(at..end);
            }
            1 => {
                let snippet = rng.pick(SNIPPETS).as_bytes();
                bytes.splice(at..at, snippet.iter().copied());
            }
            2 => bytes.truncate(at),
            _ => {
                let end = (at + rng.below(20)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Classifies `sql` twice (a miss, then a hit unless evicted) and checks they agree.
fn check(classifier: &Classifier, sql: &str) {
    let first = classifier.classify(sql);
    let second = classifier.classify(sql);
    assert_eq!(first, second, "{sql:?}");
    if first.statements.is_empty() {
        assert_eq!(first.rewritten_sql, None, "{sql:?}");
    }
}

#[test]
fn random_texts_never_panic() {
    let classifier = Classifier::new(&TenancyConfig::default(), 64);
    let mut rng = Rng(1);
    for _ in 0..3_000 {
        check(&classifier, &random_text(&mut rng));
    }
}

#[test]
fn mutated_statements_never_panic() {
    let classifier = Classifier::new(&TenancyConfig::default(), 64);
    let mut rng = Rng(2);
    for _ in 0..3_000 {
        check(&classifier, &mutated(&mut rng));
    }
}

#[test]
fn concurrent_use_agrees_with_single_use() {
    let shared = Classifier::new(&TenancyConfig::default(), 16);
    std::thread::scope(|scope| {
        for seed in 0..4 {
            let shared = &shared;
            scope.spawn(move || {
                let mut rng = Rng(100 + seed);
                let alone = Classifier::new(&TenancyConfig::default(), 0);
                for _ in 0..500 {
                    let sql = mutated(&mut rng);
                    assert_eq!(shared.classify(&sql), alone.classify(&sql), "{sql:?}");
                }
            });
        }
    });
    assert!(shared.cache_stats().entries <= 16 + 4);
}

//! Per-call cost of `classify` on a cache miss and on a hit. Ignored by default; run with
//! `cargo test --release -p evshift-proxy classify -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::lexer;
use super::*;
use crate::config::TenancyConfig;

const APPEND: &str = "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";
const READ_ALL: &str = "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND global_position > $2 AND tenant_id = $3 AND aggregate_type = $4 ORDER BY global_position ASC LIMIT $5";

/// A pgbench-style statement with inline literals that differ on every call.
fn pgbench_style(i: usize) -> String {
    format!(
        "SELECT global_position, payload FROM events WHERE tenant_id = '{:08x}-7f3e-4d6b-9a51-0c2d5e8f1a10'::uuid AND aggregate_id = '{:08x}-4b5a-4978-8695-a4b3c2d1e0f9' ORDER BY version LIMIT {}",
        i,
        i * 7,
        i % 100 + 1
    )
}

/// Mean time of `f` over `calls` calls, best of three rounds (the machine may be busy).
fn mean(calls: usize, mut f: impl FnMut(usize)) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for i in 0..calls {
                f(i);
            }
            start.elapsed() / calls as u32
        })
        .min()
        .unwrap_or_default()
}

fn report(name: &str, texts: &dyn Fn(usize) -> String) {
    let inputs: Vec<String> = (0..20_000).map(texts).collect();
    let lex = mean(inputs.len(), |i| {
        black_box(lexer::fingerprint(&inputs[i]));
    });
    let uncached = Classifier::new(&TenancyConfig::default(), 0);
    let miss = mean(2_000, |i| {
        black_box(uncached.classify(&inputs[i]));
    });
    let cached = Classifier::new(&TenancyConfig::default(), 1024);
    cached.classify(&inputs[0]);
    let hit = mean(inputs.len(), |i| {
        black_box(cached.classify(&inputs[i]));
    });
    assert_eq!(
        cached.cache_stats().entries,
        1,
        "{name}: one normalized form"
    );
    println!(
        "classify {name:<24} miss {miss:>10.2?}   hit {hit:>10.2?}   (lexing alone {lex:>8.2?})"
    );
}

#[test]
#[ignore]
fn classify_cost_miss_vs_hit() {
    report("append INSERT", &|_| APPEND.to_string());
    report("read_all (rewritten)", &|_| READ_ALL.to_string());
    report("pgbench-style literals", &pgbench_style);
}

//! The classifier: lex the text, find (or build) the plan for its normalized form, render the
//! plan with the text's own literals.

use std::ops::Range;
use std::sync::Arc;

use super::analysis::LiteralMode;
use super::cache::PlanCache;
use super::lexer::{self, Chunk, Fingerprint};
use super::parse::{classify_text, MAX_STATEMENT_DEPTH};
use super::template::{pieces_of, render_pieces, ChunkPlan, InfoTemplate, Literals, Plan};
use super::tenancy::Tenancy;
use super::types::{CacheStats, Classified, StatementInfo, StatementKind};
use crate::config::TenancyConfig;

/// Normalized texts longer than this are classified without the cache: a cache bounded in
/// entries must not hold megabyte-sized keys (bulk inserts), and such statements cost far more
/// at the store than their parse costs here.
const MAX_CACHED_TEXT: usize = 16 * 1024;

/// Classifies query strings: statement kinds, tenant/aggregate/event keys, and the horizon
/// rewrite. Pure (no I/O) and safe to share between any number of tasks.
pub struct Classifier {
    tenancy: Tenancy,
    cache: PlanCache,
}

impl Classifier {
    /// A classifier for `tenancy`, caching the plans of up to `cache_capacity` distinct
    /// normalized texts (0 disables the cache).
    pub fn new(tenancy: &TenancyConfig, cache_capacity: usize) -> Classifier {
        Classifier {
            tenancy: Tenancy::new(tenancy),
            cache: PlanCache::new(cache_capacity),
        }
    }

    /// Classifies a whole query string: a simple-protocol Query (which may hold several
    /// statements) or the statement of a Parse. Never fails: what sqlparser cannot parse is
    /// [`StatementKind::Unparsed`].
    pub fn classify(&self, sql: &str) -> Classified {
        let fingerprint = lexer::fingerprint(sql);
        if fingerprint.chunks.is_empty() {
            return Classified::default();
        }
        let plan = self.plan(sql, &fingerprint);
        self.render(sql, &fingerprint, &plan)
    }

    /// Counters of the plan cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn plan(&self, sql: &str, fingerprint: &Fingerprint) -> Arc<Plan> {
        let key = fingerprint.normalized.as_str();
        if key.len() > MAX_CACHED_TEXT {
            self.cache.count_miss();
            return Arc::new(self.build_plan(sql, fingerprint));
        }
        if let Some(plan) = self.cache.get(key) {
            return plan;
        }
        let plan = Arc::new(self.build_plan(sql, fingerprint));
        self.cache.insert(key, Arc::clone(&plan));
        plan
    }

    fn build_plan(&self, sql: &str, fingerprint: &Fingerprint) -> Plan {
        Plan {
            chunks: fingerprint
                .chunks
                .iter()
                .map(|chunk| self.plan_chunk(sql, fingerprint, chunk))
                .collect(),
        }
    }

    /// Classifies one statement from its normalized text, falling back to its original text
    /// when normalization made it unparseable.
    fn plan_chunk(&self, sql: &str, fingerprint: &Fingerprint, chunk: &Chunk) -> ChunkPlan {
        let unparsed = || ChunkPlan::Template {
            infos: vec![InfoTemplate::unparsed()],
            rewrite: None,
        };
        if chunk.depth > MAX_STATEMENT_DEPTH {
            return unparsed();
        }
        let literals = Literals::of(sql, fingerprint);
        let normalized = fingerprint
            .normalized
            .get(chunk.normalized.clone())
            .unwrap_or("");
        if let Some(parsed) = classify_text(normalized, &self.tenancy, LiteralMode::Slots(literals))
        {
            let rewrite = match parsed.rewritten {
                None => None,
                Some(printed) => match pieces_of(&printed, literals) {
                    Some(pieces) => Some(pieces),
                    None => return ChunkPlan::Reparse,
                },
            };
            return ChunkPlan::Template {
                infos: parsed.infos,
                rewrite,
            };
        }
        let original = sql.get(chunk.original.clone()).unwrap_or("");
        match classify_text(original, &self.tenancy, LiteralMode::Concrete) {
            Some(_) => ChunkPlan::Reparse,
            None => unparsed(),
        }
    }

    fn render(&self, sql: &str, fingerprint: &Fingerprint, plan: &Plan) -> Classified {
        let literals = Literals::of(sql, fingerprint);
        let mut statements = Vec::with_capacity(plan.chunks.len());
        let mut replacements: Vec<(Range<usize>, String)> = Vec::new();
        for (chunk, chunk_plan) in fingerprint.chunks.iter().zip(&plan.chunks) {
            match chunk_plan {
                ChunkPlan::Template { infos, rewrite } => {
                    statements.extend(infos.iter().map(|info| info.render(literals)));
                    if let Some(pieces) = rewrite {
                        let mut text = String::with_capacity(chunk.original.len() + 64);
                        render_pieces(pieces, literals, &mut text);
                        replacements.push((chunk.original.clone(), text));
                    }
                }
                ChunkPlan::Reparse => {
                    let original = sql.get(chunk.original.clone()).unwrap_or("");
                    match classify_text(original, &self.tenancy, LiteralMode::Concrete) {
                        Some(parsed) => {
                            let none = Literals::none();
                            statements.extend(parsed.infos.iter().map(|info| info.render(none)));
                            if let Some(text) = parsed.rewritten {
                                replacements.push((chunk.original.clone(), text));
                            }
                        }
                        None => statements.push(StatementInfo::keyless(StatementKind::Unparsed)),
                    }
                }
            }
        }
        Classified {
            statements,
            rewritten_sql: splice(sql, &replacements),
        }
    }
}

/// `sql` with the given ranges (in order, not overlapping) replaced; `None` if there are none.
fn splice(sql: &str, replacements: &[(Range<usize>, String)]) -> Option<String> {
    if replacements.is_empty() {
        return None;
    }
    let extra: usize = replacements.iter().map(|(_, text)| text.len()).sum();
    let mut out = String::with_capacity(sql.len() + extra);
    let mut at = 0;
    for (range, text) in replacements {
        out.push_str(sql.get(at..range.start)?);
        out.push_str(text);
        at = range.end;
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenancyConfig;

    /// The fallback for statements whose normalized form does not parse: they are classified
    /// from their original text on every call, keys and rewrite included.
    #[test]
    fn reparse_plans_classify_the_original_text() {
        let classifier = Classifier::new(&TenancyConfig::default(), 8);
        let sql = "SELECT 1; SELECT 1 FROM events WHERE tenant_id = 'x' AND txid < CAST('7' AS text)::xid8";
        let fingerprint = lexer::fingerprint(sql);
        let plan = Plan {
            chunks: vec![ChunkPlan::Reparse, ChunkPlan::Reparse],
        };
        let classified = classifier.render(sql, &fingerprint, &plan);
        assert_eq!(classified, classifier.classify(sql));
        assert_eq!(
            classified.statements[1].tenants,
            [crate::classify::KeyValue::Literal("x".into())]
        );
    }

    #[test]
    fn splice_replaces_ranges_in_order() {
        let replaced = splice("abcdef", &[(1..2, "X".into()), (4..6, "YZ!".into())]);
        assert_eq!(replaced.as_deref(), Some("aXcdYZ!"));
        assert_eq!(splice("abc", &[]), None);
    }
}

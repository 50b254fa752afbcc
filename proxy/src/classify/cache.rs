//! The bounded, concurrent cache of classification plans, keyed by normalized text.
//!
//! Eviction is *second chance* (CLOCK, swept all at once): a hit marks its entry; when the
//! cache is full, one sweep drops every entry not hit since the previous sweep and clears the
//! marks of the others. New entries start unmarked, so a burst of one-off statements (ad hoc
//! queries, bulk inserts with varying row counts) cannot push out the hot statements an
//! application repeats. Should every entry have been hit (the working set exceeds the
//! capacity), the sweep also drops every other entry, so that sweeps stay rare instead of
//! happening on each insert.
//!
//! A sweep walks the whole map (shard by shard, under each shard's write lock), but it runs at
//! most once per `capacity / 2` inserts or so, and only one task sweeps at a time: the others
//! skip caching their plan meanwhile. Entries may exceed the capacity by the number of tasks
//! inserting at the same instant.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::template::Plan;
use super::types::CacheStats;

/// One cached plan and its second-chance mark.
struct Entry {
    plan: Arc<Plan>,
    referenced: AtomicBool,
}

/// Plans by normalized text, bounded to `capacity` entries.
pub(crate) struct PlanCache {
    map: DashMap<Box<str>, Entry>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Held by the task sweeping, so that concurrent inserters do not all sweep at once.
    sweeping: AtomicBool,
}

impl PlanCache {
    /// A cache of at most `capacity` plans; 0 disables caching.
    pub(crate) fn new(capacity: usize) -> PlanCache {
        PlanCache {
            map: DashMap::new(),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The plan for `key`, counting a hit or a miss.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Plan>> {
        let found = self.map.get(key).map(|entry| {
            // Only write when needed: hot entries are read by many tasks at once.
            if !entry.referenced.load(Ordering::Relaxed) {
                entry.referenced.store(true, Ordering::Relaxed);
            }
            Arc::clone(&entry.plan)
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Counts a miss for a text that is not looked up at all (too large to cache).
    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Caches `plan` under `key`, making room first if the cache is full.
    pub(crate) fn insert(&self, key: &str, plan: Arc<Plan>) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            self.make_room();
            if self.map.len() >= self.capacity {
                return;
            }
        }
        self.map.insert(
            key.into(),
            Entry {
                plan,
                referenced: AtomicBool::new(false),
            },
        );
    }

    fn make_room(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        self.map
            .retain(|_, entry| entry.referenced.swap(false, Ordering::Relaxed));
        if self.map.len() >= self.capacity {
            let mut keep = false;
            self.map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        self.sweeping.store(false, Ordering::Release);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Arc<Plan> {
        Arc::new(Plan { chunks: Vec::new() })
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = PlanCache::new(10);
        assert!(cache.get("a").is_none());
        cache.insert("a", plan());
        assert!(cache.get("a").is_some());
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                entries: 1
            }
        );
    }

    #[test]
    fn stays_bounded_and_keeps_hot_entries() {
        let cache = PlanCache::new(100);
        cache.insert("hot", plan());
        for i in 0..10_000 {
            assert!(cache.get("hot").is_some(), "hot entry evicted at {i}");
            cache.insert(&format!("cold {i}"), plan());
            assert!(cache.stats().entries <= 100);
        }
    }

    #[test]
    fn all_hot_working_set_still_admits_new_entries() {
        let cache = PlanCache::new(10);
        for i in 0..10 {
            cache.insert(&i.to_string(), plan());
        }
        for i in 0..10 {
            cache.get(&i.to_string());
        }
        cache.insert("new", plan());
        assert!(cache.get("new").is_some());
        assert!(cache.stats().entries <= 10);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = PlanCache::new(0);
        cache.insert("a", plan());
        assert!(cache.get("a").is_none());
        assert_eq!(cache.stats().entries, 0);
    }
}

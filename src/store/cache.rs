//! Decoded records for the request path: a steady-state Access-Request reads no sled page
//! and decodes no JSON.
//!
//! Coherent by invalidation: every write removes the entries of the keys it changed, after
//! it commits. A reader that misses loads from sled outside the lock; if a write to its shard
//! committed meanwhile, what it read may be older than that write, so it is not kept. Each
//! shard counts its invalidations for that check. A write drops only what it changed: a
//! registration wave (one write per first connection) leaves everyone else's records cached.

use std::hash::BuildHasher;

use parking_lot::RwLock;
use rustc_hash::{FxBuildHasher, FxHashMap};

/// Independent locks, so the worker threads do not queue on one.
const SHARDS: usize = 16;

/// Fx hashing: a request looks up two keys here (its user and device names), and only
/// records read from the store are inserted, so no client can choose keys to collide.
struct Shard<V> {
    entries: FxHashMap<Box<str>, V>,
    /// Invalidations so far: a load that started under another count may be stale.
    invalidations: u64,
}

/// A bounded map from key to decoded value.
pub(super) struct RecordCache<V> {
    hasher: FxBuildHasher,
    per_shard: usize,
    shards: [RwLock<Shard<V>>; SHARDS],
}

impl<V: Clone> RecordCache<V> {
    /// At most `capacity` entries (a full shard is emptied: memory stays bounded whatever
    /// the key space, at the price of re-reading some records).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            hasher: FxBuildHasher,
            per_shard: capacity.div_ceil(SHARDS),
            shards: std::array::from_fn(|_| {
                RwLock::new(Shard {
                    entries: FxHashMap::default(),
                    invalidations: 0,
                })
            }),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard<V>> {
        // Bits the maps do not use to place keys (they use the low bits and the top seven):
        // the shard's keys must not all share their low bits.
        &self.shards[(self.hasher.hash_one(key) >> 32) as usize % SHARDS]
    }

    /// Reads through: `load` runs on a miss, and what it finds is kept unless a write to the
    /// shard committed while it ran. Absent keys are not remembered, so a flood of unknown
    /// names cannot push the known ones out.
    pub(super) fn get_or_load<E>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let shard = self.shard(key);
        let before = {
            let s = shard.read();
            if let Some(v) = s.entries.get(key) {
                return Ok(Some(v.clone()));
            }
            s.invalidations
        };
        let v = load()?;
        if let Some(v) = &v {
            self.insert(shard, key, before, v.clone());
        }
        Ok(v)
    }

    /// Keeps what a load started at `before` invalidations found, if still current.
    fn insert(&self, shard: &RwLock<Shard<V>>, key: &str, before: u64, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let mut s = shard.write();
        if s.invalidations != before {
            return;
        }
        if s.entries.len() >= self.per_shard && !s.entries.contains_key(key) {
            s.entries.clear();
        }
        s.entries.insert(key.into(), value);
    }

    /// Forgets `key`: called after a write to it committed.
    pub(super) fn invalidate(&self, key: &str) {
        let mut s = self.shard(key).write();
        s.entries.remove(key);
        s.invalidations += 1;
    }

    #[cfg(test)]
    pub(super) fn contains(&self, key: &str) -> bool {
        self.shard(key).read().entries.contains_key(key)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &RecordCache<u32>, key: &str, v: u32, loads: &std::cell::Cell<u32>) -> u32 {
        c.get_or_load(key, || {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(Some(v))
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_write_drops_only_its_own_key() {
        let c: RecordCache<u32> = RecordCache::new(100);
        let loads = std::cell::Cell::new(0);
        assert_eq!(read(&c, "k", 1, &loads), 1);
        assert_eq!(read(&c, "other", 7, &loads), 7);
        assert_eq!(read(&c, "k", 2, &loads), 1, "served from the cache");
        c.invalidate("k");
        assert_eq!(read(&c, "k", 3, &loads), 3, "the written key is read again");
        assert_eq!(read(&c, "other", 8, &loads), 7, "the others stay cached");
        assert_eq!(loads.get(), 3);
    }

    #[test]
    fn a_read_that_raced_a_write_is_never_kept() {
        let c: RecordCache<u32> = RecordCache::new(100);
        // The reader misses and loads the old value; the write commits and invalidates
        // before the reader gets to store what it read.
        let got = c
            .get_or_load("k", || {
                c.invalidate("k");
                Ok::<_, ()>(Some(1))
            })
            .unwrap();
        assert_eq!(got, Some(1), "the reader still gets its answer");
        assert!(!c.contains("k"), "but it is not kept");
        // A write to another key of the same shard counts too: what was read may be older.
        let other = (0..1000)
            .map(|i| i.to_string())
            .find(|o| std::ptr::eq(c.shard(o), c.shard("k")))
            .expect("some key shares k's shard");
        c.get_or_load("k", || {
            c.invalidate(&other);
            Ok::<_, ()>(Some(1))
        })
        .unwrap();
        assert!(!c.contains("k"));
        // Without a write in between, it is kept.
        c.get_or_load("k", || Ok::<_, ()>(Some(2))).unwrap();
        assert!(c.contains("k"));
    }

    #[test]
    fn capacity_bounds_the_entries() {
        let c: RecordCache<u32> = RecordCache::new(32);
        for i in 0..10_000u32 {
            c.get_or_load(&i.to_string(), || Ok::<_, ()>(Some(i)))
                .unwrap();
        }
        assert!(c.len() <= 32, "{} entries", c.len());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let c: RecordCache<u32> = RecordCache::new(0);
        c.get_or_load("k", || Ok::<_, ()>(Some(1))).unwrap();
        assert_eq!(c.len(), 0);
    }
}

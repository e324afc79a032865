//! Decoded records for the request path: a steady-state Access-Request reads no sled page
//! and decodes no JSON.
//!
//! Coherent by generation: every write to the cached trees bumps one counter after it
//! commits, and an entry serves only while the counter still has the value it was read
//! under. Writes are rare (admin changes, first-connect registrations), reads are per
//! request, so dropping everything on a write costs nothing that matters. A reader that
//! races a write may insert what it read, but under the old generation, where it is never
//! served.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use rustc_hash::{FxBuildHasher, FxHashMap};

/// Independent locks, so the worker threads do not queue on one.
const SHARDS: usize = 16;

/// Generation counter shared by the caches of one store.
#[derive(Default)]
pub(super) struct Generation(AtomicU64);

impl Generation {
    pub(super) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Called after every committed write to a cached tree.
    pub(super) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Values with the generation they were read under. Fx hashing: a request looks up three
/// keys here (one a 64-character serial), and only records read from the store are inserted,
/// so no client can choose keys to collide.
type Shard<V> = RwLock<FxHashMap<Box<str>, (u64, V)>>;

/// A bounded map from key to decoded value, valid for one generation.
pub(super) struct RecordCache<V> {
    hasher: FxBuildHasher,
    per_shard: usize,
    shards: [Shard<V>; SHARDS],
}

impl<V: Clone> RecordCache<V> {
    /// At most `capacity` entries (a full shard is emptied: memory stays bounded whatever
    /// the key space, at the price of re-reading some records).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            hasher: FxBuildHasher,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: std::array::from_fn(|_| RwLock::new(FxHashMap::default())),
        }
    }

    fn shard(&self, key: &str) -> &Shard<V> {
        // Bits the maps do not use to place keys (they use the low bits and the top seven):
        // the shard's keys must not all share their low bits.
        &self.shards[(self.hasher.hash_one(key) >> 32) as usize % SHARDS]
    }

    /// The value for `key` read under generation `generation`, if cached.
    pub(super) fn get(&self, key: &str, generation: u64) -> Option<V> {
        match self.shard(key).read().get(key) {
            Some((g, v)) if *g == generation => Some(v.clone()),
            _ => None,
        }
    }

    /// Remembers what was read from the store under `generation`.
    pub(super) fn insert(&self, key: &str, generation: u64, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(key).write();
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.clear();
        }
        shard.insert(key.into(), (generation, value));
    }

    /// Reads through: `load` runs on a miss, and what it finds is kept. Absent keys are not
    /// remembered, so a flood of unknown names cannot push the known ones out.
    pub(super) fn get_or_load<E>(
        &self,
        key: &str,
        generation: &Generation,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let g = generation.current();
        if let Some(v) = self.get(key, g) {
            return Ok(Some(v));
        }
        let v = load()?;
        if let Some(v) = &v {
            self.insert(key, g, v.clone());
        }
        Ok(v)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_only_its_generation() {
        let gen = Generation::default();
        let c: RecordCache<u32> = RecordCache::new(100);
        let loads = std::cell::Cell::new(0);
        let read = |v| {
            c.get_or_load("k", &gen, || {
                loads.set(loads.get() + 1);
                Ok::<_, ()>(Some(v))
            })
            .unwrap()
            .unwrap()
        };
        assert_eq!(read(1), 1);
        assert_eq!(read(2), 1, "served from the cache");
        gen.bump();
        assert_eq!(read(3), 3, "a write makes the store be read again");
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn a_read_that_raced_a_write_is_never_served() {
        let gen = Generation::default();
        let c: RecordCache<u32> = RecordCache::new(100);
        let g = gen.current();
        // The reader read the old value, then the write committed and bumped...
        gen.bump();
        // ...and only then the reader stores what it read.
        c.insert("k", g, 1);
        assert_eq!(c.get("k", gen.current()), None);
    }

    #[test]
    fn capacity_bounds_the_entries() {
        let gen = Generation::default();
        let c: RecordCache<u32> = RecordCache::new(32);
        for i in 0..10_000u32 {
            c.get_or_load(&i.to_string(), &gen, || Ok::<_, ()>(Some(i)))
                .unwrap();
        }
        assert!(c.len() <= 32, "{} entries", c.len());
    }
}

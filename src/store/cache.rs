//! Decoded records for the request path: a steady-state Access-Request reads no sled page
//! and decodes no JSON.
//!
//! Coherent by invalidation: every write removes the entries of the keys it changed, after
//! it commits. A reader that misses loads from sled outside the lock; if a write to its shard
//! committed meanwhile, what it read may be older than that write, so it is not kept. Each
//! shard counts its invalidations for that check. A write drops only what it changed: a
//! registration wave (one write per first connection) leaves everyone else's records cached.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use parking_lot::RwLock;
use rustc_hash::FxBuildHasher;

/// Independent locks, so the worker threads do not queue on one.
const SHARDS: usize = 16;

// `for_candidates` marks the shards it needs in a `u32`.
const _: () = assert!(SHARDS <= 32);

/// The most keys `RecordCache::for_candidates` looks up at once: a batch of requests.
pub const PREFETCH_KEYS: usize = 16;

/// The shard of a key's hash: bits the tables do not use to place keys (they use the low bits
/// and the top seven), so that a shard's keys do not all share their low bits.
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// A cached value that carries its own key, so the table holds the values alone: no copy of
/// each key in a separate allocation (at 100,000 users, ~4 MiB and a table three times wider).
pub(super) trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for super::Access {
    fn key(&self) -> &str {
        self.name()
    }
}

/// Fx hashing: a request looks up one key here (its user name), and only records read from
/// the store are inserted, so no client can choose keys to collide.
struct Shard<V> {
    entries: HashTable<V>,
    /// Invalidations so far: a load that started under another count may be stale.
    invalidations: u64,
}

/// A bounded map from key to decoded value.
pub(super) struct RecordCache<V> {
    hasher: FxBuildHasher,
    per_shard: usize,
    shards: [RwLock<Shard<V>>; SHARDS],
}

impl<V: Clone + Keyed> RecordCache<V> {
    /// At most `capacity` entries (a full shard is emptied: memory stays bounded whatever
    /// the key space, at the price of re-reading some records).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            hasher: FxBuildHasher,
            per_shard: capacity.div_ceil(SHARDS),
            shards: std::array::from_fn(|_| {
                RwLock::new(Shard {
                    entries: HashTable::new(),
                    invalidations: 0,
                })
            }),
        }
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        &self.shards[shard_index(hash)]
    }

    /// Reads through: `load` runs on a miss, and what it finds is kept unless a write to the
    /// shard committed while it ran. Absent keys are not remembered, so a flood of unknown
    /// names cannot push the known ones out.
    pub(super) fn get_or_load<E>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        let before = {
            let s = shard.read();
            if let Some(v) = s.entries.find(hash, |v| v.key() == key) {
                return Ok(Some(v.clone()));
            }
            s.invalidations
        };
        let v = load()?;
        if let Some(v) = &v {
            // A loader that found the record under another key has nothing to cache here.
            if v.key() == key {
                self.insert(shard, hash, before, v.clone());
            }
        }
        Ok(v)
    }

    /// Calls `f` on the values that may be `keys`' (those each hash's probe finds with the
    /// same tag, usually one per key), without comparing keys: reading a key costs what the
    /// caller wants to avoid, a cache miss. Keys past the first `PREFETCH_KEYS` are left out;
    /// the keys are all drawn (hashed) before any lock is taken.
    ///
    /// The shards' read locks are all taken first, in shard order, and released after the
    /// last probe, so that the probes run back to back: x86 completes every earlier load before
    /// a locked instruction, so a lock taken (or released) between two probes likely waited for
    /// the misses of the one before, and the probes of a batch overlapped less. (Whoever takes
    /// several shards' locks must take them in this order: a reader queues behind a waiting
    /// writer, so two readers taking them in other orders could deadlock.) `f` runs under the
    /// locks: it must not use the cache.
    pub(super) fn for_candidates<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        mut f: impl FnMut(&V),
    ) {
        let (mut hashes, mut n) = ([0u64; PREFETCH_KEYS], 0);
        let mut needed = 0u32;
        for (hash, key) in hashes.iter_mut().zip(keys) {
            *hash = self.hash(key);
            needed |= 1 << shard_index(*hash);
            n += 1;
        }
        let shards: [_; SHARDS] =
            std::array::from_fn(|i| ((needed & (1 << i)) != 0).then(|| self.shards[i].read()));
        for &hash in &hashes[..n] {
            if let Some(s) = &shards[shard_index(hash)] {
                s.entries.iter_hash(hash).for_each(&mut f);
            }
        }
    }

    /// Keeps what a load started at `before` invalidations found, if still current.
    fn insert(&self, shard: &RwLock<Shard<V>>, hash: u64, before: u64, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let mut s = shard.write();
        if s.invalidations != before {
            return;
        }
        let rehash = |v: &V| self.hash(v.key());
        match s.entries.find_entry(hash, |v| v.key() == value.key()) {
            Ok(mut found) => *found.get_mut() = value,
            Err(_) => {
                if s.entries.len() >= self.per_shard {
                    s.entries.clear();
                }
                s.entries.insert_unique(hash, value, rehash);
            }
        }
    }

    /// Forgets `key`: called after a write to it committed.
    pub(super) fn invalidate(&self, key: &str) {
        let hash = self.hash(key);
        let mut s = self.shard(hash).write();
        if let Ok(found) = s.entries.find_entry(hash, |v| v.key() == key) {
            found.remove();
        }
        s.invalidations += 1;
    }

    #[cfg(test)]
    pub(super) fn contains(&self, key: &str) -> bool {
        let hash = self.hash(key);
        let s = self.shard(hash).read();
        s.entries.find(hash, |v| v.key() == key).is_some()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record that knows its key, as the store's entries do.
    #[derive(Clone, Debug, PartialEq)]
    struct Rec(Box<str>, u32);

    impl Keyed for Rec {
        fn key(&self) -> &str {
            &self.0
        }
    }

    /// Loads the keys "0", "1", … up to `n`, each with its number.
    fn load_numbered(c: &RecordCache<Rec>, n: u32) {
        for i in 0..n {
            c.get_or_load(&i.to_string(), || Ok::<_, ()>(rec(&i.to_string(), i)))
                .unwrap();
        }
    }

    fn rec(key: &str, v: u32) -> Option<Rec> {
        Some(Rec(key.into(), v))
    }

    fn read(c: &RecordCache<Rec>, key: &str, v: u32, loads: &std::cell::Cell<u32>) -> u32 {
        c.get_or_load(key, || {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(rec(key, v))
        })
        .unwrap()
        .unwrap()
        .1
    }

    #[test]
    fn a_write_drops_only_its_own_key() {
        let c: RecordCache<Rec> = RecordCache::new(100);
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
        let c: RecordCache<Rec> = RecordCache::new(100);
        // The reader misses and loads the old value; the write commits and invalidates
        // before the reader gets to store what it read.
        let got = c
            .get_or_load("k", || {
                c.invalidate("k");
                Ok::<_, ()>(rec("k", 1))
            })
            .unwrap();
        assert_eq!(got, rec("k", 1), "the reader still gets its answer");
        assert!(!c.contains("k"), "but it is not kept");
        // A write to another key of the same shard counts too: what was read may be older.
        let other = (0..1000)
            .map(|i| i.to_string())
            .find(|o| std::ptr::eq(c.shard(c.hash(o)), c.shard(c.hash("k"))))
            .expect("some key shares k's shard");
        c.get_or_load("k", || {
            c.invalidate(&other);
            Ok::<_, ()>(rec("k", 1))
        })
        .unwrap();
        assert!(!c.contains("k"));
        // Without a write in between, it is kept.
        c.get_or_load("k", || Ok::<_, ()>(rec("k", 2))).unwrap();
        assert!(c.contains("k"));
    }

    #[test]
    fn a_kept_key_is_among_its_candidates_and_few_others_are() {
        let c: RecordCache<Rec> = RecordCache::new(10_000);
        load_numbered(&c, 1000);
        let candidates = |key: &str| {
            let mut found = Vec::new();
            c.for_candidates([key], |r| found.push(r.1));
            found
        };
        let mut others = 0;
        for i in 0..1000u32 {
            let found = candidates(&i.to_string());
            assert!(found.contains(&i), "{i}: {found:?}");
            others += found.len() - 1;
        }
        // A candidate shares the key's 7-bit tag in the groups of 16 slots its probe reads:
        // about one key in eight has another.
        assert!(others < 250, "{others} other candidates");
    }

    #[test]
    fn a_batch_finds_each_keys_candidates_and_ignores_keys_past_the_most() {
        let c: RecordCache<Rec> = RecordCache::new(10_000);
        load_numbered(&c, 1000);
        let names: Vec<String> = (0..PREFETCH_KEYS as u32 + 4)
            .map(|i| i.to_string())
            .collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut found = Vec::new();
        c.for_candidates(keys.iter().copied(), |r| found.push(r.1));
        for i in 0..PREFETCH_KEYS as u32 {
            assert!(found.contains(&i), "{i}: {found:?}");
        }
        // Exactly what the first `PREFETCH_KEYS` find one by one, in their order.
        let one_by_one: Vec<u32> = keys[..PREFETCH_KEYS]
            .iter()
            .flat_map(|k| {
                let mut one = Vec::new();
                c.for_candidates([*k], |r| one.push(r.1));
                one
            })
            .collect();
        assert_eq!(found, one_by_one);
        // An empty batch finds nothing.
        let mut none = Vec::new();
        c.for_candidates([], |r| none.push(r.1));
        assert!(none.is_empty());
    }

    /// Batches taking several shards' read locks beside writers taking one: finishes (with
    /// half the batches taking the locks in reverse shard order, it hung in each of 3 tries).
    #[test]
    fn batches_and_writes_at_once_do_not_deadlock() {
        let (done, finished) = std::sync::mpsc::channel();
        let work = std::thread::spawn(move || {
            batches_and_writes();
            done.send(()).unwrap();
        });
        use std::sync::mpsc::RecvTimeoutError;
        match finished.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => panic!("batches and writes deadlocked"),
            // It panicked: pass its panic on.
            Err(RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(work.join().unwrap_err())
            }
        }
    }

    fn batches_and_writes() {
        let c: RecordCache<Rec> = RecordCache::new(10_000);
        load_numbered(&c, 256);
        let names: Vec<String> = (0..256u32).map(|i| i.to_string()).collect();
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (c, names) = (&c, &names);
                s.spawn(move || {
                    for round in 0..5_000usize {
                        // Keys in varied orders: a lock order that followed the keys would
                        // differ between batches.
                        let keys: Vec<&str> = (0..PREFETCH_KEYS)
                            .map(|k| names[(round * 31 + k * (t * 2 + 7)) % names.len()].as_str())
                            .rev()
                            .collect();
                        c.for_candidates(keys.iter().copied(), |r| {
                            std::hint::black_box(r);
                        });
                    }
                });
            }
            for t in 0..2u32 {
                let (c, names) = (&c, &names);
                s.spawn(move || {
                    for round in 0..5_000u32 {
                        let key = names[((round * 13 + t) % 256) as usize].as_str();
                        c.invalidate(key);
                        c.get_or_load(key, || Ok::<_, ()>(rec(key, round))).unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn capacity_bounds_the_entries() {
        let c: RecordCache<Rec> = RecordCache::new(32);
        load_numbered(&c, 10_000);
        assert!(c.len() <= 32, "{} entries", c.len());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let c: RecordCache<Rec> = RecordCache::new(0);
        c.get_or_load("k", || Ok::<_, ()>(rec("k", 1))).unwrap();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn every_kept_key_is_found_through_growth_and_replacement() {
        let c: RecordCache<Rec> = RecordCache::new(100_000);
        let loads = std::cell::Cell::new(0);
        for i in 0..20_000u32 {
            read(&c, &format!("user{i}"), i, &loads);
        }
        assert_eq!(c.len(), 20_000);
        for i in 0..20_000u32 {
            assert_eq!(read(&c, &format!("user{i}"), 0, &loads), i);
        }
        assert_eq!(
            loads.get(),
            20_000,
            "the second pass is served from the cache"
        );
        // Two readers that both missed: the second one's value replaces the first's.
        let hash = c.hash("user1");
        let shard = c.shard(hash);
        let before = shard.read().invalidations;
        c.insert(shard, hash, before, Rec("user1".into(), 7));
        assert_eq!(c.len(), 20_000);
        assert_eq!(read(&c, "user1", 0, &loads), 7);
    }

    #[test]
    fn a_value_under_another_key_is_not_kept() {
        let c: RecordCache<Rec> = RecordCache::new(100);
        let got = c.get_or_load("alias", || Ok::<_, ()>(rec("other", 1)));
        assert_eq!(got, Ok(rec("other", 1)));
        assert!(!c.contains("alias") && !c.contains("other"));
    }
}

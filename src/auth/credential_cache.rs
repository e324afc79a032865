//! The verified-credential cache of the local directory: user name → tag, trusted for a TTL.
//!
//! Read on every Access-Request whose user entry does not hold its credential, written once
//! per user per TTL, so it is a plain sharded table: 32 bytes an entry and one uncontended
//! lock per lookup (moka, used before, took ~400 bytes an entry and ~4 % of a request's CPU
//! for recency bookkeeping this workload does not need). Entries expire in insertion order,
//! so when the cache is full the shard taking a new entry drops its expired entries or else
//! its oldest sixteenth at once: eviction costs O(1) per insert on average, and the cache
//! holds at most `capacity` entries plus one per shard.
//!
//! An entry is found by a keyed 64-bit hash of the user name, not by the name: no copy of
//! every name (at 100,000 users the names and wider slots were 5 MiB). Two names with the
//! same hash share a slot, which costs the one not cached an argon2 run and serves nothing
//! wrong: a tag is over the password and (a fingerprint of) the user's stored hash, so it
//! matches only a user with that very hash, for whom that password is right.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

/// Independent locks, so the worker threads do not queue on one.
const SHARDS: usize = 16;

/// An HMAC truncated to 128 bits (RFC 2104 §5).
pub type Tag = [u8; 16];

struct Entry {
    /// The user name's hash: the table's key and hash.
    key: u64,
    tag: Tag,
    /// Seconds since the cache's epoch when the credential was verified.
    verified: u32,
    /// Insertion order within the shard, wrapping (seconds are too coarse: a reconnect storm
    /// inserts thousands in one). Compared as an age from the shard's next number, which is
    /// exact while a shard holds fewer than 2^32 entries.
    seq: u32,
}

#[derive(Default)]
struct Shard {
    entries: HashTable<Entry>,
    next_seq: u32,
}

impl Shard {
    fn find(&self, key: u64) -> Option<&Entry> {
        self.entries.find(key, |e| e.key == key)
    }
}

fn shard_of(key: u64) -> usize {
    // Bits the tables do not use to place keys (they use the low bits and the top seven):
    // the shard's keys must not all share their low bits.
    (key >> 32) as usize % SHARDS
}

/// Insertions since the one numbered `seq`, when the next is numbered `next`.
fn age(next: u32, seq: u32) -> u32 {
    next.wrapping_sub(seq)
}

pub struct CredentialCache {
    ttl_secs: u32,
    /// The bound is on the whole cache, not per shard: shards fill unevenly, and a user
    /// evicted while the cache as a whole has room would pay argon2 for nothing.
    capacity: usize,
    len: AtomicUsize,
    epoch: Instant,
    /// Keyed per process (SipHash with a random key): names are chosen by whoever creates
    /// users, and equal hashes must stay chance, not a choice.
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl CredentialCache {
    /// At most `capacity` entries (0 = no caching), each trusted for `ttl` (whole seconds).
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            len: AtomicUsize::new(0),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    /// Seconds since the cache's epoch: the clock of `verified` times.
    pub fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether a credential verified at `at` is still trusted at `now`.
    pub fn fresh(&self, at: u32, now: u32) -> bool {
        now.saturating_sub(at) < self.ttl_secs
    }

    /// Whether verified credentials are kept at all (`capacity` or `ttl` 0: never).
    pub fn enabled(&self) -> bool {
        self.capacity > 0 && self.ttl_secs > 0
    }

    fn key(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[shard_of(key)]
    }

    /// When `tag` was verified for `user`, if that is the tag cached for them and it has not
    /// expired. The tags are compared in constant time.
    pub fn verified(&self, user: &str, tag: &Tag) -> Option<u32> {
        let now = self.now();
        let key = self.key(user);
        let shard = self.shard(key).lock();
        let e = shard.find(key)?;
        (self.fresh(e.verified, now) && bool::from(e.tag.ct_eq(tag))).then_some(e.verified)
    }

    pub fn insert(&self, user: &str, tag: Tag) {
        if !self.enabled() {
            return;
        }
        let now = self.now();
        let key = self.key(user);
        let mut shard = self.shard(key).lock();
        let seq = shard.next_seq;
        shard.next_seq = seq.wrapping_add(1);
        let entry = Entry {
            key,
            tag,
            verified: now,
            seq,
        };
        if let Ok(mut found) = shard.entries.find_entry(key, |e| e.key == key) {
            *found.get_mut() = entry;
            return;
        }
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            let before = shard.entries.len();
            self.make_room(&mut shard, now);
            self.len
                .fetch_sub(before - shard.entries.len(), Ordering::Relaxed);
        }
        shard.entries.insert_unique(key, entry, |e| e.key);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invalidate(&self, user: &str) {
        let key = self.key(user);
        let mut shard = self.shard(key).lock();
        if let Ok(found) = shard.entries.find_entry(key, |e| e.key == key) {
            found.remove();
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops this shard's expired entries and, if there were none, its oldest sixteenth. (A
    /// shard may be emptier than others; the bound holds over all of them.)
    fn make_room(&self, shard: &mut Shard, now: u32) {
        let before = shard.entries.len();
        shard
            .entries
            .retain(|e| now.saturating_sub(e.verified) < self.ttl_secs);
        if shard.entries.len() < before || shard.entries.is_empty() {
            return;
        }
        let next = shard.next_seq;
        let mut ages: Vec<u32> = shard.entries.iter().map(|e| age(next, e.seq)).collect();
        let k = ages.len() / 16;
        // The k-th oldest: ages sorted from the oldest down.
        let (_, cutoff, _) = ages.select_nth_unstable_by(k, |a, b| b.cmp(a));
        let cutoff = *cutoff;
        shard.entries.retain(|e| age(next, e.seq) < cutoff);
    }

    /// Moves the clock `by` forward, for tests of expiry.
    #[cfg(test)]
    pub(super) fn age(&mut self, by: std::time::Duration) {
        self.epoch = self
            .epoch
            .checked_sub(by)
            .expect("the clock can go back that far");
    }

    /// The tag cached for `user`, expired or not.
    #[cfg(test)]
    pub(super) fn get(&self, user: &str) -> Option<Tag> {
        let key = self.key(user);
        self.shard(key).lock().find(key).map(|e| e.tag)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_until_invalidated() {
        let c = CredentialCache::new(100, Duration::from_secs(60));
        assert_eq!(c.get("alice"), None);
        c.insert("alice", [1; 16]);
        assert_eq!(c.get("alice"), Some([1; 16]));
        c.insert("alice", [2; 16]);
        assert_eq!(c.get("alice"), Some([2; 16]));
        c.invalidate("alice");
        assert_eq!(c.get("alice"), None);
    }

    #[test]
    fn entries_expire() {
        let mut c = CredentialCache::new(100, Duration::from_secs(60));
        c.insert("alice", [1; 16]);
        c.age(Duration::from_secs(59));
        assert_eq!(c.verified("alice", &[1; 16]), Some(0), "verified 59 s ago");
        c.age(Duration::from_secs(2));
        assert_eq!(
            c.verified("alice", &[1; 16]),
            None,
            "verified 61 s ago with a 60 s TTL"
        );
    }

    #[test]
    fn only_the_cached_tag_is_verified() {
        let c = CredentialCache::new(100, Duration::from_secs(60));
        c.insert("alice", [1; 16]);
        assert_eq!(c.verified("alice", &[1; 16]), Some(0));
        assert_eq!(c.verified("alice", &[2; 16]), None, "another password");
        assert_eq!(c.verified("bob", &[1; 16]), None, "another user");
    }

    #[test]
    fn capacity_bounds_the_entries_and_keeps_the_newest() {
        let c = CredentialCache::new(320, Duration::from_secs(60));
        for i in 0..100_000u32 {
            c.insert(&format!("user{i}"), [0; 16]);
        }
        assert!(c.len() <= 320 + SHARDS, "{} entries", c.len());
        assert!(
            c.len() >= 280,
            "evicts a sixteenth of a shard at a time: {}",
            c.len()
        );
        assert_eq!(c.len(), c.len.load(Ordering::Relaxed));
        assert!(c.get("user99999").is_some(), "the last insert is kept");
    }

    /// Whether each shard kept the newest of the names inserted into it (in `names`' order),
    /// evicting only older ones. Eviction is per shard: a shard the hash hands many inserts
    /// shrinks, so across shards a new entry may go while an older one elsewhere stays.
    fn kept_the_newest_per_shard(c: &CredentialCache, names: &[String]) -> bool {
        (0..SHARDS).all(|s| {
            let kept: Vec<bool> = names
                .iter()
                .filter(|n| shard_of(c.key(n)) == s)
                .map(|n| c.get(n).is_some())
                .collect();
            // Evicted (false) entries all come before the kept (true) ones.
            kept.is_sorted()
        })
    }

    #[test]
    fn the_oldest_are_evicted_first() {
        // Fill every shard past capacity, then add new entries: each shard evicts its oldest.
        let c = CredentialCache::new(16 * 32, Duration::from_secs(3600));
        let names: Vec<String> = (0..2000)
            .map(|i| format!("old{i}"))
            .chain((0..200).map(|i| format!("new{i}")))
            .collect();
        for n in &names {
            c.insert(n, [0; 16]);
        }
        assert!(kept_the_newest_per_shard(&c, &names));
        assert!(
            c.len() >= 16 * 32 - 16 * 32 / 16 - SHARDS,
            "{} kept",
            c.len()
        );
    }

    #[test]
    fn uneven_shards_do_not_evict_below_capacity() {
        // As many users as the capacity: however they spread over the shards, all stay.
        let c = CredentialCache::new(10_000, Duration::from_secs(60));
        for round in 0..2 {
            for i in 0..10_000 {
                c.insert(&format!("user{i}"), [round; 16]);
            }
        }
        assert_eq!(c.len(), 10_000);
        assert!((0..10_000).all(|i| c.get(&format!("user{i}")) == Some([1; 16])));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = CredentialCache::new(0, Duration::from_secs(60));
        c.insert("alice", [1; 16]);
        assert_eq!(c.get("alice"), None);
    }

    #[test]
    fn the_oldest_are_evicted_first_across_the_wrap_of_the_insertion_count() {
        let c = CredentialCache::new(16 * 32, Duration::from_secs(3600));
        for s in &c.shards {
            s.lock().next_seq = u32::MAX - 50;
        }
        let names: Vec<String> = (0..2200).map(|i| format!("user{i}")).collect();
        for n in &names {
            c.insert(n, [0; 16]);
        }
        assert!(c.shards.iter().all(|s| s.lock().next_seq < 1000), "wrapped");
        assert!(kept_the_newest_per_shard(&c, &names));
    }
}

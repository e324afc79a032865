//! Duplicate detection (RFC 5080 §2.2.2): a retransmitted request gets the cached response
//! and is not processed twice.
//!
//! Every request passes through here twice (`begin`, then `complete` or `abandon`), so the
//! cache is sharded (the worker threads do not queue on one lock), `complete` finds its entry
//! by the ticket `begin` gave out instead of hashing the key again, and a response is kept in
//! its entry (`Answer`), not in an allocation of its own. The index maps a key's hash to its
//! entry's sequence number only (its low 32 bits: 4 bytes a slot; the key's fingerprint is
//! read from the entry): a full cache under load held ~8 MiB of index as a map of key to
//! sequence number, 2.4 MB with 8-byte numbers, 1.3 so. An entry is 80 bytes (208 before its
//! key was packed and the listener kept only what a response cannot be made again from,
//! `reply::kept`; 128 before the key became a fingerprint): at full rate the cache is full,
//! 5 MiB instead of 13.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::sip_key::SipKey;

/// Independent locks; a key always lands in the same shard.
const SHARDS: usize = 8;

/// A shard's storage is shrunk only above this many entries' room: below it the memory is
/// small, and shrinking and regrowing would cost more than it returns.
const SHRINK_FLOOR: usize = 64;

/// "the source IP address, source UDP port, Code, Identifier and Request Authenticator".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub source: SocketAddr,
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// A `Key` as an entry keeps it: its 128-bit SipHash-1-3 under the cache's random `SipKey` (16
/// bytes instead of the 38 of its fields). Two requests are told apart by their fingerprints
/// alone, so a collision would answer one request with the other's response: among the ≤ 2^16
/// entries of a window that is a chance of ~2^-97, and no one can aim for one, since neither
/// the key nor any fingerprint leaves the process. An IPv6 source's scope and flow label are
/// left out: clients are matched by address alone, and two requests differing only there
/// would still need the same identifier and authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint([u64; 2]);

impl Fingerprint {
    /// The hash the index places the entry by (the whole fingerprint is uniformly random).
    fn hash(self) -> u64 {
        self.0[0]
    }

    /// Its shard: from the other half, so that the keys of a shard do not share the bits the
    /// index places them by.
    fn shard(self) -> usize {
        (self.0[1] % SHARDS as u64) as usize
    }

    fn of(k: Key, under: &SipKey) -> Self {
        // One write of the fields, packed: an IPv4 address as its IPv4-mapped IPv6 form, told
        // apart by a flag.
        let (ip, v4) = match k.source.ip() {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 1),
            IpAddr::V6(a) => (a.octets(), 0),
        };
        let mut bytes = [0u8; 37];
        bytes[..16].copy_from_slice(&ip);
        bytes[16..18].copy_from_slice(&k.source.port().to_le_bytes());
        bytes[18] = v4;
        bytes[19] = k.code;
        bytes[20] = k.identifier;
        bytes[21..].copy_from_slice(&k.authenticator);
        let h = under.hash13(&bytes);
        Fingerprint([h.h1, h.h2])
    }
}

/// What to do with a request after consulting the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First sight: process it, then call `complete` or `abandon` with the ticket.
    New(Ticket),
    /// The original is still being processed; drop this copy.
    InProgress,
    /// Answered already: what `complete` was given, to send again.
    Answered(Vec<u8>),
}

/// Where `begin` put a new request: its shard and its entry's sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    shard: usize,
    seq: u64,
}

struct Entry {
    key: Fingerprint,
    /// Nanoseconds since the cache's epoch (584 years' room): when the request arrived, then
    /// when it was answered.
    at: u64,
    answer: Answer,
}

/// How far an entry got, with the response once there is one: inline up to 54 bytes (what the
/// listener keeps of an Accounting-Response, of a Reject and of an Accept is 2–50 bytes: an
/// ASA's Accept 38, 50 with a proxy policy, an ocserv's 50; a managed proxy's server and
/// exceptions, or Proxy-States, make it longer), so that the entries' one allocation holds it;
/// a larger one has an allocation of its own. Small allocations of their own, made during a
/// burst, kept ~4 MiB of the allocator's blocks in use after it (docs/PERFORMANCE.md, "Three
/// more cuts").
enum Answer {
    InProgress,
    /// No response: a retransmission may try again (its key is no longer mapped here).
    Abandoned,
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Spilled(Box<[u8]>),
}

/// The inline room: the tag and the length take the other two bytes of the answer's 56.
const INLINE: usize = 54;

impl Answer {
    /// The concatenation of `parts`.
    fn of(parts: &[impl AsRef<[u8]>]) -> Self {
        let len: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        if len > INLINE {
            let mut bytes = Vec::with_capacity(len);
            for part in parts {
                bytes.extend_from_slice(part.as_ref());
            }
            return Answer::Spilled(bytes.into_boxed_slice());
        }
        let mut bytes = [0; INLINE];
        let mut at = 0;
        for part in parts {
            let part = part.as_ref();
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Answer::Inline {
            len: len as u8,
            bytes,
        }
    }

    fn response(&self) -> Option<&[u8]> {
        match self {
            Answer::Inline { len, bytes } => Some(&bytes[..usize::from(*len)]),
            Answer::Spilled(bytes) => Some(bytes),
            Answer::InProgress | Answer::Abandoned => None,
        }
    }

    fn in_progress(&self) -> bool {
        matches!(self, Answer::InProgress)
    }

    #[cfg(test)]
    fn spilled(&self) -> bool {
        matches!(self, Answer::Spilled(_))
    }
}

struct Shard {
    /// The sequence numbers of the entries a key maps to, by the key's hash: their low 32
    /// bits (`Low`). Every number here names an entry still in `entries`.
    seqs: HashTable<Low>,
    /// Entries in arrival order: entry `i` has sequence number `first + i`.
    entries: VecDeque<Entry>,
    first: u64,
}

/// Where the entry with sequence number `seq` is in `entries`, if still kept there.
fn position(first: u64, seq: u64) -> Option<usize> {
    usize::try_from(seq.checked_sub(first)?).ok()
}

/// A sequence number's low 32 bits, as the index keeps it: a shard holds far fewer than 2^32
/// entries, so among those kept it names one alone, counted from `first`'s.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Low(u32);

impl Low {
    fn of(seq: u64) -> Self {
        Low(seq as u32)
    }

    /// The full sequence number, given the shard's `first` (this one's entry being kept).
    fn seq(self, first: u64) -> u64 {
        first + u64::from(self.0.wrapping_sub(first as u32))
    }
}

/// The entry with sequence number `seq`, if still kept.
fn entry(entries: &VecDeque<Entry>, first: u64, seq: u64) -> Option<&Entry> {
    entries.get(position(first, seq)?)
}

/// The hash of the key a sequence number's entry holds: the index rehashes by it when it
/// grows or shrinks (it keeps no keys itself).
fn rehash(entries: &VecDeque<Entry>, first: u64) -> impl Fn(&Low) -> u64 + '_ {
    move |low| entry(entries, first, low.seq(first)).map_or(0, |e| e.key.hash())
}

impl Shard {
    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.entries.get_mut(position(self.first, seq)?)
    }

    /// The entry `key` maps to.
    fn mapped(&self, key: Fingerprint) -> Option<&Entry> {
        let (entries, first) = (&self.entries, self.first);
        let low = self.seqs.find(key.hash(), |low| {
            entry(entries, first, low.seq(first)).is_some_and(|e| e.key == key)
        })?;
        entry(entries, first, low.seq(first))
    }

    /// Maps `key` to `seq` (whose entry is already in `entries`).
    fn map(&mut self, key: Fingerprint, seq: u64) {
        self.seqs
            .insert_unique(key.hash(), Low::of(seq), rehash(&self.entries, self.first));
    }

    /// Removes the mapping of `key` if it is to `seq` (a newer entry may hold the key now).
    fn unmap(&mut self, key: Fingerprint, seq: u64) {
        if let Ok(slot) = self.seqs.find_entry(key.hash(), |&s| s == Low::of(seq)) {
            slot.remove();
        }
    }

    /// Gives back the memory of a burst that is over: storage four times what is held is cut to
    /// twice, so that a steady load (which never falls to a quarter) is never shrunk again.
    /// The index grew with the entries; its own `capacity` undercounts after removals.
    fn shrink(&mut self) {
        let (len, capacity) = (self.entries.len(), self.entries.capacity());
        if capacity <= SHRINK_FLOOR || len > capacity / 4 {
            return;
        }
        let room = (2 * len).max(SHRINK_FLOOR);
        self.entries.shrink_to(room);
        self.seqs.shrink_to(room, rehash(&self.entries, self.first));
    }
}

/// Bounded, time-limited cache of responses keyed by request identity.
pub struct DedupCache {
    window: Duration,
    /// How long an entry may stay in progress: past it, its request was lost without an
    /// `abandon` (a panic), and the entry ages out like an answered one.
    in_progress: Duration,
    per_shard: usize,
    fingerprints: SipKey,
    /// What entries' times count from.
    epoch: Instant,
    shards: [Mutex<Shard>; SHARDS],
}

impl DedupCache {
    /// Keeps responses for `window`, and at most about `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            in_progress: Duration::MAX,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            fingerprints: SipKey::random(),
            epoch: Instant::now(),
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    seqs: HashTable::new(),
                    entries: VecDeque::new(),
                    first: 0,
                })
            }),
        }
    }

    /// Requests are given up on after `timeout`: an entry in progress a window longer than
    /// that was lost (the slack: a timer that fires late must not let a retransmission in
    /// while its original still runs).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.in_progress = timeout + self.window;
        self
    }

    /// `t` as entries keep it (an instant before the epoch, a datagram's kernel arrival
    /// time, counts as the epoch).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drops entries from the front while the front is expired or there are more than
    /// `max_len`.
    ///
    /// Expired by age: a request still in progress only once it was lost — its
    /// retransmissions must find it however long it takes (the window may be shorter than
    /// the request timeout).
    fn expire(&self, s: &mut Shard, now: u64, max_len: usize) {
        while let Some(oldest) = s.entries.front() {
            let kept_for = if oldest.answer.in_progress() {
                self.in_progress
            } else {
                self.window
            };
            let age = Duration::from_nanos(now.saturating_sub(oldest.at));
            if age < kept_for && s.entries.len() <= max_len {
                break;
            }
            let old = s.entries.pop_front().expect("front exists");
            let seq = s.first;
            s.first += 1;
            // An abandoned key may be in progress again under a newer entry, which stays
            // mapped. (`unmap` compares sequence numbers only: it reads no entry.)
            s.unmap(old.key, seq);
        }
    }

    pub fn begin(&self, key: Key, now: Instant) -> Seen {
        let key = Fingerprint::of(key, &self.fingerprints);
        let now = self.nanos(now);
        let shard = key.shard();
        let mut s = self.shards[shard].lock();
        // Expire by age, then by size (room for one more): memory stays bounded under any load.
        self.expire(&mut s, now, self.per_shard - 1);
        if let Some(e) = s.mapped(key) {
            return match e.answer.response() {
                Some(response) => Seen::Answered(response.to_vec()),
                None => Seen::InProgress,
            };
        }
        let seq = s.first + s.entries.len() as u64;
        s.entries.push_back(Entry {
            key,
            at: now,
            answer: Answer::InProgress,
        });
        s.map(key, seq);
        Seen::New(Ticket { shard, seq })
    }

    /// Keeps the response (the concatenation of `parts`) for retransmissions (unless the entry
    /// was evicted meanwhile), for a window from `now`: a slow request's retransmissions keep
    /// coming after it is answered.
    pub fn complete(&self, ticket: Ticket, parts: &[impl AsRef<[u8]>], now: Instant) {
        let now = self.nanos(now);
        let mut s = self.shards[ticket.shard].lock();
        if let Some(e) = s.get_mut(ticket.seq) {
            if e.answer.in_progress() {
                e.answer = Answer::of(parts);
                e.at = now;
            }
        }
    }

    /// The request produced no response (dropped or timed out): let a retransmission retry.
    pub fn abandon(&self, ticket: Ticket) {
        let mut s = self.shards[ticket.shard].lock();
        let Some(e) = s.get_mut(ticket.seq) else {
            return;
        };
        if !e.answer.in_progress() {
            return;
        }
        e.answer = Answer::Abandoned;
        let key = e.key;
        s.unmap(key, ticket.seq);
    }

    /// Expires what `begin` would in every shard, and frees the memory that held it: `begin`
    /// expires only in the shard a request arrives in, so after a burst the answers would
    /// stay, unread, until the next one.
    pub fn sweep(&self, now: Instant) {
        let now = self.nanos(now);
        for shard in &self.shards {
            let mut s = shard.lock();
            self.expire(&mut s, now, usize::MAX);
            s.shrink();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    /// Bytes allocated for the entries and the index (responses over 54 bytes aside).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.entries.capacity() * std::mem::size_of::<Entry>() + s.seqs.allocation_size()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> Key {
        Key {
            source: "127.0.0.1:5000".parse().unwrap(),
            code: 1,
            identifier: id,
            authenticator: [1; 16],
        }
    }

    fn key_n(n: u32) -> Key {
        let mut authenticator = [0; 16];
        authenticator[..4].copy_from_slice(&n.to_le_bytes());
        Key {
            source: "10.0.0.1:1812".parse().unwrap(),
            code: 1,
            identifier: n as u8,
            authenticator,
        }
    }

    fn ticket(seen: Seen) -> Ticket {
        match seen {
            Seen::New(t) => t,
            other => panic!("expected a new request, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_within_window_gets_cached_answer() {
        let c = DedupCache::new(Duration::from_secs(5), 100);
        let t0 = Instant::now();
        let t = ticket(c.begin(key(1), t0));
        assert_eq!(c.begin(key(1), t0), Seen::InProgress);
        c.complete(t, &[b"resp"], t0);
        assert_eq!(
            c.begin(key(1), t0 + Duration::from_secs(4)),
            Seen::Answered(b"resp".to_vec())
        );
        assert!(matches!(
            c.begin(key(1), t0 + Duration::from_secs(6)),
            Seen::New(_)
        ));
    }

    /// A response of up to 54 bytes lives in its entry; a larger one in an allocation of its
    /// own. Both come back whole to a retransmission, made of the parts given.
    #[test]
    fn responses_are_kept_in_their_entries_up_to_54_bytes() {
        assert_eq!(
            std::mem::size_of::<Answer>(),
            56,
            "the tag, the length, 54 bytes"
        );
        assert_eq!(std::mem::size_of::<Entry>(), 80);
        let c = DedupCache::new(Duration::from_secs(5), 100);
        let t0 = Instant::now();
        let fits: Vec<u8> = (0..54).collect();
        let over: Vec<u8> = (0..55).collect();
        let large: Vec<u8> = (0..=255).cycle().take(4096).collect();
        for (id, response) in [(1, &fits), (2, &over), (3, &large), (4, &vec![])] {
            let t = ticket(c.begin(key(id), t0));
            c.complete(
                t,
                &[
                    &response[..response.len().min(1)],
                    &response[response.len().min(1)..],
                ],
                t0,
            );
            assert_eq!(c.begin(key(id), t0), Seen::Answered(response.clone()));
            let s = c.shards[t.shard].lock();
            let spilled = s.entries[(t.seq - s.first) as usize].answer.spilled();
            assert_eq!(spilled, response.len() > 54, "{} bytes", response.len());
        }
    }

    /// The fingerprint tells every field apart, an IPv4 source from its IPv4-mapped IPv6 form
    /// included; another cache's fingerprints differ (a random key each).
    #[test]
    fn keys_differing_in_any_field_are_different_requests() {
        let c = DedupCache::new(Duration::from_secs(5), 100);
        let t0 = Instant::now();
        let base = key(1);
        let variants = [
            Key {
                source: "[::ffff:127.0.0.1]:5000".parse().unwrap(),
                ..base
            },
            Key {
                source: "127.0.0.1:5001".parse().unwrap(),
                ..base
            },
            Key {
                source: "127.0.0.2:5000".parse().unwrap(),
                ..base
            },
            Key { code: 4, ..base },
            Key {
                identifier: 2,
                ..base
            },
            Key {
                authenticator: [2; 16],
                ..base
            },
        ];
        let t = ticket(c.begin(base, t0));
        c.complete(t, &[b"base"], t0);
        for v in variants {
            assert!(matches!(c.begin(v, t0), Seen::New(_)), "{v:?}");
        }
        assert_eq!(c.begin(base, t0), Seen::Answered(b"base".to_vec()));
        let other = DedupCache::new(Duration::from_secs(5), 100);
        assert_ne!(
            Fingerprint::of(base, &c.fingerprints),
            Fingerprint::of(base, &other.fingerprints)
        );
    }

    #[test]
    fn abandoned_requests_can_be_retried_and_capacity_bounds_memory() {
        let c = DedupCache::new(Duration::from_secs(5), 2 * SHARDS);
        let t0 = Instant::now();
        let t = ticket(c.begin(key(1), t0));
        c.abandon(t);
        let again = ticket(c.begin(key(1), t0));
        c.complete(again, &[b"second"], t0);
        assert_eq!(c.begin(key(1), t0), Seen::Answered(b"second".to_vec()));
        for id in 0..=255 {
            c.begin(key(id), t0);
        }
        assert!(c.len() <= 2 * SHARDS, "{} entries", c.len());
    }

    /// The abandoned entry is older than the retry's: evicting it must not unmap the retry.
    #[test]
    fn evicting_an_abandoned_entry_keeps_its_retry() {
        let c = DedupCache::new(Duration::from_secs(5), 100);
        let t0 = Instant::now();
        c.abandon(ticket(c.begin(key(1), t0)));
        let retry = ticket(c.begin(key(1), t0 + Duration::from_secs(3)));
        // At 6 s the abandoned entry (0 s) expires, the retry's (3 s) does not.
        assert_eq!(
            c.begin(key(1), t0 + Duration::from_secs(6)),
            Seen::InProgress,
            "the retry is still in progress"
        );
        c.complete(retry, &[b"r"], t0 + Duration::from_secs(6));
        assert_eq!(
            c.begin(key(1), t0 + Duration::from_secs(7)),
            Seen::Answered(b"r".to_vec())
        );
    }

    /// An entry evicted (by size) before its request completes: its completion is a no-op, and
    /// the retransmission's own entry is left alone.
    #[test]
    fn completing_an_evicted_entry_is_a_no_op() {
        // Two entries a shard, and a key sharing key(1)'s: a third entry evicts the oldest.
        let c = DedupCache::new(Duration::from_secs(5), 2 * SHARDS);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let shard = |k| Fingerprint::of(k, &c.fingerprints).shard();
        let neighbour = (2..).map(key).find(|k| shard(*k) == shard(key(1))).unwrap();
        let slow = ticket(c.begin(key(1), t0));
        let _other = ticket(c.begin(neighbour, t0));
        let retry = ticket(c.begin(key(1), at(1)));
        c.complete(slow, &[b"late"], at(1));
        c.abandon(slow);
        assert_eq!(
            c.begin(key(1), at(2)),
            Seen::InProgress,
            "the retry is untouched"
        );
        c.complete(retry, &[b"retry"], at(2));
        assert_eq!(c.begin(key(1), at(3)), Seen::Answered(b"retry".to_vec()));
    }

    /// A request slower than the window is still in progress for its retransmissions (the
    /// default window, 5 s, is shorter than the default request timeout, 10 s); once answered
    /// it ages out as usual.
    #[test]
    fn a_request_in_progress_outlives_the_window() {
        let c = DedupCache::new(Duration::from_secs(5), 100);
        // Made before `t0`: were `t0` before its epoch, it would count as the epoch and every
        // age below would come out short.
        let with_timeout = DedupCache::new(Duration::from_secs(5), 100)
            .with_request_timeout(Duration::from_secs(10));
        let t0 = Instant::now();
        let slow = ticket(c.begin(key(1), t0));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(c.begin(key(1), at(6)), Seen::InProgress);
        c.complete(slow, &[b"late"], at(8));
        assert_eq!(c.begin(key(1), at(12)), Seen::Answered(b"late".to_vec()));
        assert!(
            matches!(c.begin(key(1), at(14)), Seen::New(_)),
            "aged out a window after the answer"
        );
        // A request lost without an answer or an abandon (a panic) is forgotten once past the
        // request timeout.
        let c = with_timeout;
        let _lost = ticket(c.begin(key(1), t0));
        assert_eq!(c.begin(key(1), at(14)), Seen::InProgress);
        assert!(matches!(c.begin(key(1), at(15)), Seen::New(_)));
    }

    /// The index grows (rehashing by the keys in the entries) and keeps working as entries
    /// are evicted: every kept key is found with its own response, evicted ones are new.
    #[test]
    fn every_kept_key_finds_its_response_through_growth_and_eviction() {
        let n = 5_000;
        // Twice the keys of one generation: shards fill unevenly, none by twice its share.
        let c = DedupCache::new(Duration::from_secs(60), 2 * n as usize);
        let t0 = Instant::now();
        let fill = |generation: u32| {
            for i in generation * n..(generation + 1) * n {
                let t = ticket(c.begin(key_n(i), t0));
                c.complete(t, &[&i.to_le_bytes()], t0);
            }
        };
        let answered = |generation: u32| {
            for i in generation * n..(generation + 1) * n {
                assert_eq!(
                    c.begin(key_n(i), t0),
                    Seen::Answered(i.to_le_bytes().to_vec()),
                    "key {i}"
                );
            }
        };
        fill(0);
        answered(0);
        // Two more generations evict the first (capacity), entry by entry.
        fill(1);
        fill(2);
        assert!(c.len() <= 2 * n as usize + SHARDS, "{} entries", c.len());
        answered(2);
        let evicted = (0..n)
            .filter(|&i| matches!(c.begin(key_n(i), t0), Seen::New(_)))
            .count();
        assert!(
            evicted > n as usize * 9 / 10,
            "{evicted} of the first generation evicted"
        );
    }

    /// The index keeps sequence numbers' low 32 bits: past 2^32 (and across the wrap) every
    /// kept key still finds its own entry, evicted and abandoned ones none.
    #[test]
    fn sequence_numbers_past_32_bits_still_name_their_entries() {
        let n = 4_000u32;
        // Twice the keys of one generation, as in the test above.
        let c = DedupCache::new(Duration::from_secs(60), 2 * n as usize);
        for shard in &c.shards {
            shard.lock().first = (1 << 32) - 1_000;
        }
        let t0 = Instant::now();
        for i in 0..3 * n {
            let t = ticket(c.begin(key_n(i), t0));
            if i % 7 == 0 {
                c.abandon(t);
            } else {
                c.complete(t, &[&i.to_le_bytes()], t0);
            }
        }
        // Each shard's kept entries straddle 2^32: lookups cross the wrap.
        assert!(c.shards.iter().all(|s| {
            let s = s.lock();
            s.first < 1 << 32 && s.first + s.entries.len() as u64 > 1 << 32
        }));
        for i in 2 * n..3 * n {
            let seen = c.begin(key_n(i), t0);
            if i % 7 == 0 {
                assert!(matches!(seen, Seen::New(_)), "abandoned key {i}: {seen:?}");
            } else {
                assert_eq!(seen, Seen::Answered(i.to_le_bytes().to_vec()), "key {i}");
            }
        }
        let evicted = (0..n)
            .filter(|&i| matches!(c.begin(key_n(i), t0), Seen::New(_)))
            .count();
        assert_eq!(evicted, n as usize, "the first generation is gone");
    }

    /// With no request to come, a sweep expires a burst's answers and gives back their
    /// storage; a load that falls by less than three quarters is not shrunk again.
    #[test]
    fn sweep_frees_a_burst_past_the_window_once() {
        let c = DedupCache::new(Duration::from_secs(5), 65_536);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let burst = |range: std::ops::Range<u32>, t| {
            for i in range {
                let tk = ticket(c.begin(key_n(i), t));
                c.complete(tk, &[&i.to_le_bytes()], t);
            }
        };
        burst(0..20_000, at(0));
        burst(20_000..20_800, at(3));
        burst(20_800..22_000, at(4));
        let full = c.allocated();
        c.sweep(at(4));
        assert_eq!(c.len(), 22_000, "nothing is past the window yet");
        assert_eq!(c.allocated(), full, "nothing to shrink yet");
        c.sweep(at(5));
        assert_eq!(c.len(), 2_000, "the first burst is past the window");
        let kept = c.allocated();
        assert!(kept * 4 < full, "{kept} of {full} bytes kept");
        for i in 20_000..22_000 {
            assert_eq!(
                c.begin(key_n(i), at(5)),
                Seen::Answered(i.to_le_bytes().to_vec())
            );
        }
        c.sweep(at(8));
        assert_eq!(c.len(), 1_200);
        assert_eq!(c.allocated(), kept, "not shrunk again");
        c.sweep(at(9));
        assert_eq!(c.len(), 0);
        let idle = c.allocated();
        assert!(idle * 20 < full, "{idle} of {full} bytes kept at idle");
        assert!(idle >= SHARDS * SHRINK_FLOOR * std::mem::size_of::<Entry>());
        c.sweep(at(10));
        assert_eq!(c.allocated(), idle, "left alone at the floor");
    }

    /// A sweep expires by `begin`'s rule: an answer a window after its completion (not its
    /// arrival), a request in progress only once lost.
    #[test]
    fn sweep_keeps_answers_within_the_window_and_requests_in_progress() {
        let c = DedupCache::new(Duration::from_secs(5), 100)
            .with_request_timeout(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let slow = ticket(c.begin(key(1), at(0)));
        let quick = ticket(c.begin(key(2), at(1)));
        c.complete(quick, &[b"quick"], at(2));
        c.sweep(at(6));
        assert_eq!(c.len(), 2, "both kept");
        assert_eq!(c.begin(key(2), at(6)), Seen::Answered(b"quick".to_vec()));
        assert_eq!(c.begin(key(1), at(6)), Seen::InProgress);
        c.sweep(at(14));
        assert_eq!(c.begin(key(1), at(14)), Seen::InProgress, "not lost yet");
        c.complete(slow, &[b"slow"], at(14));
        assert_eq!(c.begin(key(1), at(15)), Seen::Answered(b"slow".to_vec()));
    }

    /// After a sweep (and a shrink), sequence numbers go on: new requests get working tickets,
    /// their retransmissions their answers, and a swept entry's late completion is a no-op.
    #[test]
    fn requests_after_a_sweep_work_as_before() {
        let c = DedupCache::new(Duration::from_secs(5), 65_536)
            .with_request_timeout(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let lost = ticket(c.begin(key(1), at(0)));
        for i in 0..4_000 {
            let t = ticket(c.begin(key_n(i), at(0)));
            c.complete(t, &[b"old"], at(0));
        }
        let full = c.allocated();
        c.sweep(at(15));
        assert_eq!(c.len(), 0);
        assert!(c.allocated() < full, "shrunk");
        let retry = ticket(c.begin(key(1), at(16)));
        c.complete(lost, &[b"stale"], at(16));
        assert_eq!(
            c.begin(key(1), at(16)),
            Seen::InProgress,
            "the retry is untouched"
        );
        c.complete(retry, &[b"retry"], at(16));
        assert_eq!(c.begin(key(1), at(17)), Seen::Answered(b"retry".to_vec()));
        for i in 0..4_000 {
            let t = ticket(c.begin(key_n(i), at(16)));
            c.complete(t, &[&i.to_le_bytes()], at(16));
        }
        for i in 0..4_000 {
            assert_eq!(
                c.begin(key_n(i), at(17)),
                Seen::Answered(i.to_le_bytes().to_vec())
            );
        }
    }
}

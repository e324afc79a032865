//! Duplicate detection (RFC 5080 §2.2.2): a retransmitted request gets the cached response
//! and is not processed twice.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// "the source IP address, source UDP port, Code, Identifier and Request Authenticator".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub source: SocketAddr,
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

enum Slot {
    InProgress,
    Done(Vec<u8>),
}

/// What to do with a request after consulting the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First sight: process it, then call `complete` or `abandon`.
    New,
    /// The original is still being processed; drop this copy.
    InProgress,
    /// Answered already: send this again.
    Answered(Vec<u8>),
}

struct Inner {
    /// Fx: keys come only from authenticated clients, so a fast non-keyed hash is safe.
    slots: FxHashMap<Key, Slot>,
    order: VecDeque<(Instant, Key)>,
}

/// Bounded, time-limited cache of responses keyed by request identity.
pub struct DedupCache {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl DedupCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            inner: Mutex::new(Inner {
                slots: FxHashMap::default(),
                order: VecDeque::new(),
            }),
        }
    }

    pub fn begin(&self, key: Key, now: Instant) -> Seen {
        let mut inner = self.inner.lock();
        // Expire by age, then by size: memory stays bounded under any load.
        while let Some(&(at, old)) = inner.order.front() {
            if now.duration_since(at) < self.window && inner.order.len() < self.capacity {
                break;
            }
            inner.order.pop_front();
            inner.slots.remove(&old);
        }
        match inner.slots.get(&key) {
            Some(Slot::InProgress) => Seen::InProgress,
            Some(Slot::Done(resp)) => Seen::Answered(resp.clone()),
            None => {
                inner.slots.insert(key, Slot::InProgress);
                inner.order.push_back((now, key));
                Seen::New
            }
        }
    }

    pub fn complete(&self, key: &Key, response: &[u8]) {
        if let Some(slot) = self.inner.lock().slots.get_mut(key) {
            *slot = Slot::Done(response.to_vec());
        }
    }

    /// The request produced no response (dropped or timed out): let a retransmission retry.
    pub fn abandon(&self, key: &Key) {
        self.inner.lock().slots.remove(key);
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

    #[test]
    fn duplicate_within_window_gets_cached_answer() {
        let c = DedupCache::new(Duration::from_secs(5), 100);
        let t0 = Instant::now();
        assert_eq!(c.begin(key(1), t0), Seen::New);
        assert_eq!(c.begin(key(1), t0), Seen::InProgress);
        c.complete(&key(1), b"resp");
        assert_eq!(
            c.begin(key(1), t0 + Duration::from_secs(4)),
            Seen::Answered(b"resp".to_vec())
        );
        assert_eq!(c.begin(key(1), t0 + Duration::from_secs(6)), Seen::New);
    }

    #[test]
    fn abandoned_requests_can_be_retried_and_capacity_bounds_memory() {
        let c = DedupCache::new(Duration::from_secs(5), 2);
        let t0 = Instant::now();
        assert_eq!(c.begin(key(1), t0), Seen::New);
        c.abandon(&key(1));
        assert_eq!(c.begin(key(1), t0), Seen::New);
        c.begin(key(2), t0);
        c.begin(key(3), t0);
        assert!(c.inner.lock().slots.len() <= 2);
    }
}

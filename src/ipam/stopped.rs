//! Accounting sessions that stopped moments ago, so that a late update of one (a gateway's
//! retransmission overtaken by the Stop) does not bring its lease back after the Stop freed
//! the address.
//!
//! Only for a short window: gateways reuse session ids after a reboot (an ASA numbers from
//! its boot), and a new session must not be taken for a stopped one minutes later.

use std::hash::{BuildHasher, RandomState};

use rustc_hash::FxHashMap;

/// How long a stopped session is remembered, in seconds: longer than a gateway retries an
/// unanswered Accounting-Request (an ASA: 3 tries of up to 10 s by default).
pub(super) const WINDOW: u64 = 120;

/// More than this many remembered stops are pruned to those within the window; with more
/// still (a flood of Stops), the oldest half of the memory is given up.
const MAX: usize = 65_536;

pub(super) struct RecentStops {
    /// Keyed per process: session ids come from the gateways, not chosen to collide, and
    /// must not be choosable to.
    keys: RandomState,
    /// Hash of (NAS, session id) → when it stopped (seconds since the epoch).
    at: FxHashMap<u64, u64>,
}

impl RecentStops {
    pub fn new() -> Self {
        Self {
            keys: RandomState::new(),
            at: FxHashMap::default(),
        }
    }

    fn key(&self, nas: &str, session_id: &str) -> u64 {
        self.keys.hash_one((nas, session_id))
    }

    pub fn record(&mut self, nas: &str, session_id: &str, now: u64) {
        if self.at.len() >= MAX {
            self.at.retain(|_, t| now.saturating_sub(*t) < WINDOW);
            if self.at.len() >= MAX {
                let mut times: Vec<u64> = self.at.values().copied().collect();
                let (_, median, _) = times.select_nth_unstable(MAX / 2);
                let median = *median;
                self.at.retain(|_, t| *t > median);
            }
        }
        let key = self.key(nas, session_id);
        self.at.insert(key, now);
    }

    /// Whether `nas` stopped `session_id` within the window before `now`.
    pub fn stopped(&self, nas: &str, session_id: &str, now: u64) -> bool {
        self.at
            .get(&self.key(nas, session_id))
            .is_some_and(|t| now.saturating_sub(*t) < WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_stop_per_nas_for_the_window_only() {
        let mut s = RecentStops::new();
        s.record("gw", "S1", 1000);
        assert!(s.stopped("gw", "S1", 1000));
        assert!(s.stopped("gw", "S1", 1000 + WINDOW - 1));
        assert!(!s.stopped("gw", "S1", 1000 + WINDOW), "past the window");
        assert!(!s.stopped("other", "S1", 1000), "another NAS's session");
        assert!(!s.stopped("gw", "S2", 1000));
    }

    #[test]
    fn a_flood_of_stops_stays_bounded_and_keeps_the_newest() {
        let mut s = RecentStops::new();
        for i in 0..3 * MAX as u64 {
            s.record("gw", &i.to_string(), 1000 + i / 1000);
        }
        assert!(s.at.len() <= MAX, "{}", s.at.len());
        let last = 3 * MAX as u64 - 1;
        assert!(s.stopped("gw", &last.to_string(), 1000 + last / 1000));
    }
}

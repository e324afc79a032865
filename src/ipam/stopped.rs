//! Accounting sessions that stopped moments ago, and NASes that just restarted, so that a late
//! update (a gateway's retransmission overtaken by the Stop or the Accounting-On/Off) does not
//! bring a lease back after the address was freed.
//!
//! Only for a short window: gateways reuse session ids after a reboot (an ASA numbers from
//! its boot), and a new session must not be taken for a stopped one minutes later.

use std::hash::{BuildHasher, RandomState};

use rustc_hash::FxHashMap;

/// How long a stop is remembered, in seconds: longer than a gateway retries an unanswered
/// Accounting-Request (an ASA: 3 tries of up to 10 s by default).
pub(super) const WINDOW: u64 = 120;

/// More than this many remembered stops are pruned to those within the window; with more
/// still (a flood of Stops), the older half of them is given up.
const MAX: usize = 65_536;

pub(super) struct RecentStops {
    /// Keyed per process: session ids come from the gateways, not chosen to collide, and
    /// must not be choosable to.
    keys: RandomState,
    /// Hash of (NAS, session id) → when it stopped (seconds since the epoch) and the how
    /// manyth stop it was (many share a second: the order to prune by).
    sessions: FxHashMap<u64, (u64, u64)>,
    /// Hash of a NAS → when it last sent Accounting-On/Off.
    restarts: FxHashMap<u64, u64>,
    count: u64,
}

impl RecentStops {
    pub fn new() -> Self {
        Self {
            keys: RandomState::new(),
            sessions: FxHashMap::default(),
            restarts: FxHashMap::default(),
            count: 0,
        }
    }

    fn key(&self, nas: &str, session_id: &str) -> u64 {
        self.keys.hash_one((nas, session_id))
    }

    pub fn record(&mut self, nas: &str, session_id: &str, now: u64) {
        if self.sessions.len() >= MAX {
            self.sessions
                .retain(|_, (t, _)| now.saturating_sub(*t) < WINDOW);
            if self.sessions.len() >= MAX {
                let older_than = self.count - MAX as u64 / 2;
                self.sessions.retain(|_, (_, n)| *n >= older_than);
            }
        }
        let key = self.key(nas, session_id);
        self.sessions.insert(key, (now, self.count));
        self.count += 1;
    }

    /// `nas` sent Accounting-On/Off: every session it had is gone.
    pub fn record_restart(&mut self, nas: &str, now: u64) {
        // A handful of NASes: no bound needed beyond their number.
        self.restarts.insert(self.keys.hash_one(nas), now);
    }

    /// Whether `nas` stopped `session_id` within the window before `now`.
    pub fn stopped(&self, nas: &str, session_id: &str, now: u64) -> bool {
        self.sessions
            .get(&self.key(nas, session_id))
            .is_some_and(|(t, _)| now.saturating_sub(*t) < WINDOW)
    }

    /// Whether `nas` restarted (Accounting-On/Off) within the window before `now`: an update
    /// of a session begun before may still be on its way.
    pub fn restarted(&self, nas: &str, now: u64) -> bool {
        self.restarts
            .get(&self.keys.hash_one(nas))
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
        assert!(!s.restarted("gw", 1000));
    }

    #[test]
    fn a_restart_is_remembered_per_nas_for_the_window() {
        let mut s = RecentStops::new();
        s.record_restart("gw", 1000);
        assert!(s.restarted("gw", 1000 + WINDOW - 1));
        assert!(!s.restarted("gw", 1000 + WINDOW));
        assert!(!s.restarted("other", 1000));
        assert!(!s.stopped("gw", "any", 1000), "no session of it stopped");
    }

    #[test]
    fn a_flood_of_stops_in_one_second_stays_bounded_and_keeps_the_newer_half() {
        let mut s = RecentStops::new();
        // One more than the bound: the prune runs once, all of them within the window.
        let n = MAX as u64 + 1;
        for i in 0..n {
            s.record("gw", &i.to_string(), 1000);
        }
        assert!(s.sessions.len() <= MAX, "{}", s.sessions.len());
        let kept: Vec<u64> = (0..n)
            .filter(|i| s.stopped("gw", &i.to_string(), 1000))
            .collect();
        assert!(
            kept.len() > MAX / 2,
            "at least the newer half: {}",
            kept.len()
        );
        assert_eq!(kept.last(), Some(&(n - 1)));
        assert_eq!(kept.len() as u64, n - kept[0], "a contiguous newest run");
    }
}

//! The free addresses of a pool as a set of disjoint ranges: allocation and release are
//! O(log r) in the number of ranges, whatever the pool size — no scan of a /16.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive ranges `start → end` of free addresses (as u32).
#[derive(Debug, Default, Clone)]
pub struct FreeSet {
    ranges: BTreeMap<u32, u32>,
    len: u64,
}

impl FreeSet {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, a: u32) -> bool {
        self.ranges
            .range(..=a)
            .next_back()
            .is_some_and(|(_, &end)| a <= end)
    }

    /// Adds a free range, merging with neighbours. Overlaps are tolerated.
    pub fn insert_range(&mut self, mut start: u32, mut end: u32) {
        if start > end {
            return;
        }
        // Absorb every range that overlaps or touches [start, end].
        loop {
            let prev = self
                .ranges
                .range(..=end.saturating_add(1))
                .next_back()
                .map(|(&s, &e)| (s, e));
            match prev {
                Some((s, e)) if e.saturating_add(1) >= start => {
                    self.ranges.remove(&s);
                    self.len -= u64::from(e - s) + 1;
                    start = start.min(s);
                    end = end.max(e);
                }
                _ => break,
            }
        }
        self.ranges.insert(start, end);
        self.len += u64::from(end - start) + 1;
    }

    pub fn insert(&mut self, a: u32) {
        self.insert_range(a, a);
    }

    /// Removes `a` if free; returns whether it was.
    pub fn take(&mut self, a: u32) -> bool {
        let Some((&s, &e)) = self.ranges.range(..=a).next_back() else {
            return false;
        };
        if a > e {
            return false;
        }
        self.ranges.remove(&s);
        if s < a {
            self.ranges.insert(s, a - 1);
        }
        if a < e {
            self.ranges.insert(a + 1, e);
        }
        self.len -= 1;
        true
    }

    /// Removes and returns the lowest free address.
    #[cfg(test)]
    pub fn take_first(&mut self) -> Option<u32> {
        self.take_from(0)
    }

    /// Removes and returns the lowest free address at or after `from`, wrapping around.
    /// Allocating from a moving cursor (next fit) reuses a released address last, so a
    /// device coming back usually finds its previous address still free.
    pub fn take_from(&mut self, from: u32) -> Option<u32> {
        let a = match self.ranges.range(..=from).next_back() {
            Some((_, &e)) if e >= from => from,
            _ => match self.ranges.range(from..).next() {
                Some((&s, _)) => s,
                None => *self.ranges.keys().next()?,
            },
        };
        self.take(a);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_release_merge_ranges() {
        let mut f = FreeSet::default();
        f.insert_range(10, 20);
        assert_eq!(f.len(), 11);
        assert!(f.take(15));
        assert!(!f.take(15));
        assert!(!f.contains(15) && f.contains(14) && f.contains(16));
        assert_eq!(f.take_first(), Some(10));
        f.insert(15);
        f.insert(10);
        assert_eq!(f.ranges.len(), 1, "{:?}", f.ranges);
        assert_eq!(f.len(), 11);
        f.insert_range(5, 25);
        assert_eq!((f.len(), f.ranges.len()), (21, 1));
        while f.take_first().is_some() {}
        assert!(f.is_empty());
        assert!(!f.take(7));
    }

    #[test]
    fn next_fit_wraps_around() {
        let mut f = FreeSet::default();
        f.insert_range(1, 4);
        assert_eq!(f.take_from(3), Some(3));
        assert_eq!(f.take_from(4), Some(4));
        assert_eq!(f.take_from(5), Some(1));
        f.insert(3);
        assert_eq!(f.take_from(2), Some(2));
        assert_eq!(f.take_from(3), Some(3));
        assert_eq!(f.take_from(3), None);
    }

    #[test]
    fn huge_ranges_stay_small() {
        let mut f = FreeSet::default();
        f.insert_range(0, u32::MAX - 1);
        for _ in 0..1000 {
            f.take_first().unwrap();
        }
        assert_eq!(f.ranges.len(), 1);
        assert!(f.take(1_000_000));
        assert_eq!(f.ranges.len(), 2);
    }
}

//! Device → the address it had last (any pool): which address a device gets again when it
//! comes back and that address is free.
//!
//! Found by a keyed 64-bit hash of the device name, not by the name: 16 bytes a device and no
//! copy of every name (3.7 MiB at 100,000 devices before, 2 after). Two names with the same
//! hash share a slot, which is harmless: the address is only a preference — a renewal is
//! granted only when the lease there is the device's own, and a new lease takes the address
//! only if it is free.

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

pub(super) struct Sticky {
    /// Keyed per process (SipHash with a random key): device names are not chosen to
    /// collide, and must not be choosable to.
    keys: RandomState,
    /// Fx over keys that are already uniform hashes.
    addrs: FxHashMap<u64, Ipv4Addr>,
}

impl Sticky {
    pub fn new(entries: impl IntoIterator<Item = (String, Ipv4Addr)>) -> Self {
        let keys = RandomState::new();
        let addrs = entries
            .into_iter()
            .map(|(d, a)| (keys.hash_one(d.as_str()), a))
            .collect();
        Self { keys, addrs }
    }

    /// The address `device` had last.
    pub fn get(&self, device: &str) -> Option<Ipv4Addr> {
        self.addrs.get(&self.keys.hash_one(device)).copied()
    }

    pub fn insert(&mut self, device: &str, addr: Ipv4Addr) {
        self.addrs.insert(self.keys.hash_one(device), addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_address_of_each_device() {
        let a = |i| Ipv4Addr::new(10, 0, 0, i);
        let mut s = Sticky::new([("d1".to_owned(), a(1)), ("d2".to_owned(), a(2))]);
        assert_eq!(
            (s.get("d1"), s.get("d2"), s.get("d3")),
            (Some(a(1)), Some(a(2)), None)
        );
        s.insert("d1", a(9));
        s.insert("d3", a(3));
        assert_eq!(
            (s.get("d1"), s.get("d2"), s.get("d3")),
            (Some(a(9)), Some(a(2)), Some(a(3)))
        );
    }
}

//! A 128-bit SipHash key drawn from the OS, for fingerprints that stand for longer values in
//! memory (the duplicate cache's request keys, a user's entry's device IDs). The key is never
//! stored or logged, so no one outside the process can aim for two values with one
//! fingerprint.

use std::hash::Hasher as _;

use rand::RngCore;
use siphasher::sip128::{Hash128, Hasher128, SipHasher13, SipHasher24};

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SipKey(u64, u64);

impl SipKey {
    /// SipHash's all-zero key: what a fingerprint must not be made under.
    #[cfg(test)]
    pub const ZERO: SipKey = SipKey(0, 0);

    pub fn random() -> Self {
        let mut rng = rand::rngs::OsRng;
        Self(rng.next_u64(), rng.next_u64())
    }

    /// SipHash-1-3 of `bytes`: for the request path's own keys.
    pub fn hash13(&self, bytes: &[u8]) -> Hash128 {
        let mut h = SipHasher13::new_with_keys(self.0, self.1);
        h.write(bytes);
        h.finish128()
    }

    /// SipHash-2-4 of `bytes`, the conservative variant: for what an authorization decision
    /// compares.
    pub fn hash24(&self, bytes: &[u8]) -> Hash128 {
        let mut h = SipHasher24::new_with_keys(self.0, self.1);
        h.write(bytes);
        h.finish128()
    }
}

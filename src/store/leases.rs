//! Address leases and each device's last address (for sticky re-assignment).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::devices::unwrap_tx;
use super::{decode, encode, Store, StoreError};

/// The longest session id a lease record may hold: a lease in memory keeps its length in 12
/// bits (`ipam::leases`); one Acct-Session-Id attribute is at most 759 bytes as text.
pub const MAX_SESSION_ID_LEN: usize = 4_095;

/// One address lent to one device's session. Compact records (`codec`) hold its fields by
/// position, so a new field needs a new format byte there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub addr: Ipv4Addr,
    pub pool: String,
    pub user: String,
    pub device: String,
    /// The NAS that asked for it.
    pub nas: String,
    /// Acct-Session-Id, once accounting started.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Unix seconds.
    pub granted: u64,
    /// Unix seconds; without accounting refreshes the lease ends here.
    pub expires: u64,
    /// The device was accepted again on this lease since its session was bound: a Stop for
    /// that session leaves the lease to the device's next session (kept across a restart,
    /// whose Stop the NAS may send again after it).
    #[serde(default)]
    pub renewed: bool,
}

/// The address of an unreadable lease record, from the error `Store::leases_in` gave for it.
pub fn corrupt_lease_addr(e: &StoreError) -> Option<Ipv4Addr> {
    match e {
        StoreError::Corrupt { key, .. } => key.strip_prefix(LEASE_KEY)?.parse().ok(),
        _ => None,
    }
}

/// How `leases_in` names a lease record in errors: this, then its address.
const LEASE_KEY: &str = "lease ";

impl Store {
    /// The leases of the addresses `first..=last`, read one at a time (keys are the
    /// addresses' octets, so a pool's leases are one range): restoring a pool of 100,000
    /// leases never holds them all decoded at once.
    pub fn leases_in(
        &self,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> impl Iterator<Item = Result<LeaseRecord, StoreError>> + '_ {
        self.leases.range(first.octets()..=last.octets()).map(|kv| {
            let (k, v) = kv?;
            // Named by its address, not its key's raw octets.
            decode(&k, &v).map_err(|e| match (e, <[u8; 4]>::try_from(k.as_ref())) {
                (StoreError::Corrupt { source, .. }, Ok(octets)) => StoreError::Corrupt {
                    key: format!("{LEASE_KEY}{}", Ipv4Addr::from(octets)),
                    source,
                },
                (e, _) => e,
            })
        })
    }

    /// The address `device` had last (any pool), if any. A read of one key: the pools look
    /// a device up only when it asks for an address its entry does not know.
    pub fn sticky_address(&self, device: &str) -> Result<Option<Ipv4Addr>, StoreError> {
        Ok(self.sticky.get(device.as_bytes())?.and_then(|v| {
            let octets: [u8; 4] = v.as_ref().try_into().ok()?;
            Some(octets.into())
        }))
    }

    /// Writes a lease and its device's sticky address, not durably (`flush` makes it so).
    /// Synchronous, so a pool can write under its lock: the store then changes in the order
    /// the pool's memory does.
    pub fn write_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError> {
        self.failing_lease_writes()?;
        let r = (&self.leases, &self.sticky).transaction(|(tl, ts)| {
            tl.insert(&lease.addr.octets(), encode(lease))?;
            ts.insert(lease.device.as_bytes(), &lease.addr.octets())?;
            Ok(())
        });
        unwrap_tx(r)
    }

    /// Tests: lease writes fail while `fail_lease_writes` is set, as on a disk that filled up.
    fn failing_lease_writes(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self
            .fail_lease_writes
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "test: disk full");
            return Err(StoreError::Sled(sled::Error::Io(full)));
        }
        Ok(())
    }

    /// Stores `bytes` as the record of `addr`, as a damaged store might hold it.
    #[cfg(test)]
    pub(crate) fn put_raw_lease(&self, addr: Ipv4Addr, bytes: &[u8]) {
        self.leases.insert(addr.octets(), bytes).unwrap();
    }

    /// Rewrites a renewed lease's record (expiry) without waiting for durability: one sled
    /// insert, no transaction, since the sticky address is unchanged.
    pub fn refresh_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError> {
        self.failing_lease_writes()?;
        self.leases.insert(lease.addr.octets(), encode(lease))?;
        Ok(())
    }

    /// Deletes leases (their sticky addresses stay) in one batch, not durably; synchronous
    /// like `write_lease`.
    pub fn delete_leases(&self, addrs: &[Ipv4Addr]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for a in addrs {
            batch.remove(&a.octets());
        }
        self.leases.apply_batch(batch)?;
        Ok(())
    }
}

//! What the request path reads of the directory: a user with the devices assigned to them,
//! decoded once into one compact entry.
//!
//! One entry per user instead of the user's and each device's full record: one lookup per
//! request, and about half the memory (no timestamps, e-mail or owner copies, boxed strings).
//! At 100,000 users with a device each the two record caches held 74 MiB.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::{AuthMethod, DeviceRecord, DeviceType, Store, StoreError, UserRecord};

/// A user as the request path sees them.
#[derive(Debug, PartialEq, Eq)]
pub struct Access {
    name: Box<str>,
    /// A fingerprint of the user's argon2id hash; `None` for users whose password lives in a
    /// directory. The hash itself (~100 bytes, most of an entry) is read from the user's record
    /// only when argon2 runs; a verified credential is kept tagged without it.
    password: Option<HashFingerprint>,
    /// The devices assigned to the user (those whose record names them as owner).
    pub devices: Box<[AccessDevice]>,
    /// The password last verified against the hash, for the local directory.
    pub credential: VerifiedCredential,
}

/// The first 128 bits of SHA-256 over a PHC-format hash: which hash an entry was built from,
/// without keeping it. Two hashes of one user sharing it (2^-128) would share cached
/// credentials, never argon2's verdict on a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashFingerprint(pub [u8; 16]);

impl HashFingerprint {
    pub fn of(phc: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(phc.as_bytes());
        let mut f = [0; 16];
        f.copy_from_slice(&digest[..16]);
        Self(f)
    }

    /// The fingerprint standing for a hash that `name` does not have (a decoy's check, see
    /// `auth::local`): over no PHC string (which starts with `$`), so never a real one's.
    pub fn of_decoy(name: &str) -> Self {
        Self::of(&format!("\0decoy\0{name}"))
    }
}

/// A credential verified for this entry, kept in it so that a request checks it without a
/// lookup in the credential cache (a table as large as the directory). Only the verifier
/// reads the tag and time. The entry is built again after every write to the user or their
/// devices, and this starts empty then: it never outlives the hash it was verified against.
/// Equality ignores it.
#[derive(Default)]
pub struct VerifiedCredential(parking_lot::Mutex<Option<Verified>>);

/// A verifier's tag of a password and when (its own clock) the password was verified.
#[derive(Clone, Copy)]
pub struct Verified {
    pub tag: [u8; 16],
    pub at: u32,
}

impl VerifiedCredential {
    pub fn get(&self) -> Option<Verified> {
        *self.0.lock()
    }

    pub fn set(&self, verified: Verified) {
        *self.0.lock() = Some(verified);
    }
}

impl std::fmt::Debug for VerifiedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.get().is_some() { "set" } else { "empty" };
        f.debug_tuple("VerifiedCredential").field(&state).finish()
    }
}

impl PartialEq for VerifiedCredential {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for VerifiedCredential {}

/// The address a device last leased, kept in its entry so that a renewal finds its lease
/// without a lookup in the pools' device-to-address map (a large table at 100,000 devices).
/// Only a hint: the pool checks the lease at that address is this device's; 0 = none. It
/// starts empty whenever the entry is built again, and equality ignores it.
#[derive(Debug, Default)]
pub struct AddressHint(AtomicU32);

impl AddressHint {
    pub fn get(&self) -> Option<Ipv4Addr> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            a => Some(Ipv4Addr::from(a)),
        }
    }

    pub fn set(&self, addr: Ipv4Addr) {
        self.0.store(u32::from(addr), Ordering::Relaxed);
    }
}

impl PartialEq for AddressHint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AddressHint {}

/// An assigned device as the request path sees it: 32 bytes, and its name, serial and MAC
/// in one allocation (three boxed strings took 56 bytes and three allocations).
#[derive(Debug, PartialEq, Eq)]
pub struct AccessDevice {
    /// The name, then the serial, then the MAC.
    texts: Box<str>,
    name_len: u16,
    serial_len: u16,
    pub address: AddressHint,
    pub device_type: DeviceType,
    pub enabled: bool,
    pub device_auth: bool,
    pub method: AuthMethod,
}

impl AccessDevice {
    /// A device of `device_type` with device authentication on, by serial, enabled; `None`
    /// if its name or serial is over 64 KiB (the admin API allows 64 and 128 bytes, a
    /// RADIUS attribute 253): such a record cannot be a device of the request path.
    pub fn new(
        name: &str,
        device_type: DeviceType,
        serial: Option<&str>,
        mac: Option<&str>,
    ) -> Option<Self> {
        // Neither a serial nor a MAC can be empty: an empty one is an absent one.
        let (serial, mac) = (serial.unwrap_or(""), mac.unwrap_or(""));
        Some(Self {
            texts: [name, serial, mac].concat().into(),
            name_len: u16::try_from(name.len()).ok()?,
            serial_len: u16::try_from(serial.len()).ok()?,
            address: AddressHint::default(),
            device_type,
            enabled: true,
            device_auth: true,
            method: AuthMethod::Serial,
        })
    }

    pub fn name(&self) -> &str {
        &self.texts[..usize::from(self.name_len)]
    }

    pub fn serial(&self) -> Option<&str> {
        let start = usize::from(self.name_len);
        let serial = &self.texts[start..start + usize::from(self.serial_len)];
        (!serial.is_empty()).then_some(serial)
    }

    /// Canonical `12:34:56:78:90:ab`.
    pub fn mac(&self) -> Option<&str> {
        let start = usize::from(self.name_len) + usize::from(self.serial_len);
        let mac = &self.texts[start..];
        (!mac.is_empty()).then_some(mac)
    }

    /// The same device with `serial` registered (tests).
    #[cfg(test)]
    pub fn with_serial(self, serial: &str) -> Self {
        self.with_ids(Some(serial), self.mac())
    }

    /// The same device with `mac` (tests).
    #[cfg(test)]
    pub fn with_mac(self, mac: &str) -> Self {
        self.with_ids(self.serial(), Some(mac))
    }

    /// The same device, flags kept, with this serial and MAC.
    #[cfg(test)]
    fn with_ids(&self, serial: Option<&str>, mac: Option<&str>) -> Self {
        let mut d = Self::new(self.name(), self.device_type, serial, mac).expect("short");
        (d.enabled, d.device_auth, d.method) = (self.enabled, self.device_auth, self.method);
        d
    }

    fn from_record(d: &DeviceRecord) -> Option<Self> {
        let mut a = Self::new(
            &d.name,
            d.device_type,
            d.serial.as_deref(),
            d.mac.as_deref(),
        )?;
        (a.enabled, a.device_auth, a.method) = (d.enabled, d.device_auth, d.method);
        Some(a)
    }
}

impl Access {
    /// The entry of `user`, given the records of the devices it lists; a listed device whose
    /// record names another owner (or none) is not the user's.
    pub fn new(user: &UserRecord, devices: &[DeviceRecord]) -> Self {
        let devices = devices
            .iter()
            .filter(|d| d.owner.as_deref() == Some(user.name.as_str()))
            .filter_map(|d| {
                let a = AccessDevice::from_record(d);
                if a.is_none() {
                    tracing::warn!(device = %d.name, "device record too large to match: skipped");
                }
                a
            });
        Self::with_devices(&user.name, user.password_hash.as_deref(), devices)
    }

    /// The entry of a user named `name`, with this hash (its fingerprint) and these devices.
    pub fn with_devices(
        name: &str,
        password_hash: Option<&str>,
        devices: impl IntoIterator<Item = AccessDevice>,
    ) -> Self {
        Self {
            name: name.into(),
            password: password_hash.map(HashFingerprint::of),
            devices: devices.into_iter().collect(),
            credential: VerifiedCredential::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which argon2id hash the user had when the entry was built; `None` for users whose
    /// password lives in a directory.
    pub fn password(&self) -> Option<HashFingerprint> {
        self.password
    }
}

impl Store {
    /// The user `name` as the store has them now: the cached entry dropped first (a write
    /// drops it only after it commits; a reader that found the record newer than its entry
    /// must not be handed that entry again).
    pub fn access_fresh(&self, name: &str) -> Result<Option<Arc<Access>>, StoreError> {
        self.written([name]);
        self.access(name)
    }

    /// The user `name` with their devices, decoded once and shared until a write changes the
    /// user or one of their devices.
    pub fn access(&self, name: &str) -> Result<Option<Arc<Access>>, StoreError> {
        self.cache.access.get_or_load(name, || {
            let Some(user) = self.read::<UserRecord>(&self.users, name)? else {
                return Ok(None);
            };
            let mut devices = Vec::with_capacity(user.devices.len());
            for d in &user.devices {
                devices.extend(self.read::<DeviceRecord>(&self.devices, d)?);
            }
            Ok(Some(Arc::new(Access::new(&user, &devices))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_texts_apart() {
        let d = |serial, mac| AccessDevice::new("laptop", DeviceType::Mac, serial, mac).unwrap();
        let all = d(Some("SER1"), Some("a1:b2:c3:d4:e5:f6"));
        assert_eq!(
            (all.name(), all.serial(), all.mac()),
            ("laptop", Some("SER1"), Some("a1:b2:c3:d4:e5:f6"))
        );
        let mac_only = d(None, Some("a1:b2:c3:d4:e5:f6"));
        assert_eq!(
            (mac_only.name(), mac_only.serial(), mac_only.mac()),
            ("laptop", None, Some("a1:b2:c3:d4:e5:f6"))
        );
        let serial_only = d(Some("SER1"), None);
        assert_eq!(
            (serial_only.serial(), serial_only.mac()),
            (Some("SER1"), None)
        );
        let neither = d(None, None);
        assert_eq!(
            (neither.name(), neither.serial(), neither.mac()),
            ("laptop", None, None)
        );
        let long = "x".repeat(70_000);
        assert!(AccessDevice::new(&long, DeviceType::Mac, None, None).is_none());
        assert!(AccessDevice::new("d", DeviceType::Mac, Some(&long), None).is_none());
    }

    #[test]
    fn a_user_keeps_only_a_fingerprint_of_their_hash() {
        let a = Access::with_devices("alice", Some("$argon2id$v=19$x"), []);
        assert_eq!(a.name(), "alice");
        assert_eq!(a.password(), Some(HashFingerprint::of("$argon2id$v=19$x")));
        assert_ne!(a.password(), Some(HashFingerprint::of("$argon2id$v=19$y")));
        let d = Access::with_devices("bob", None, []);
        assert_eq!((d.name(), d.password()), ("bob", None));
    }

    /// What 100,000 users cost: an entry is read on every request and kept for each user.
    #[test]
    fn entries_stay_compact() {
        assert!(std::mem::size_of::<AccessDevice>() <= 32);
        // 80: the hash's fingerprint inline instead of the hash (~100 bytes) behind the name.
        assert!(std::mem::size_of::<Access>() <= 80);
    }
}

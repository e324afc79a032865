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
    pub name: Box<str>,
    /// PHC-format argon2id hash; `None` for users whose password lives in a directory.
    pub password_hash: Option<Box<str>>,
    /// The devices assigned to the user (those whose record names them as owner).
    pub devices: Box<[AccessDevice]>,
    /// The password last verified against `password_hash`, for the local directory.
    pub credential: VerifiedCredential,
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

/// An assigned device as the request path sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct AccessDevice {
    pub name: Box<str>,
    pub device_type: DeviceType,
    pub enabled: bool,
    pub device_auth: bool,
    pub method: AuthMethod,
    pub serial: Option<Box<str>>,
    /// Canonical `12:34:56:78:90:ab`.
    pub mac: Option<Box<str>>,
    pub address: AddressHint,
}

impl From<&DeviceRecord> for AccessDevice {
    fn from(d: &DeviceRecord) -> Self {
        Self {
            name: d.name.as_str().into(),
            device_type: d.device_type,
            enabled: d.enabled,
            device_auth: d.device_auth,
            method: d.method,
            serial: d.serial.as_deref().map(Into::into),
            mac: d.mac.as_deref().map(Into::into),
            address: AddressHint::default(),
        }
    }
}

impl Access {
    /// The entry of `user`, given the records of the devices it lists; a listed device whose
    /// record names another owner (or none) is not the user's.
    pub fn new(user: &UserRecord, devices: &[DeviceRecord]) -> Self {
        Self {
            name: user.name.as_str().into(),
            password_hash: user.password_hash.as_deref().map(Into::into),
            devices: devices
                .iter()
                .filter(|d| d.owner.as_deref() == Some(user.name.as_str()))
                .map(AccessDevice::from)
                .collect(),
            credential: VerifiedCredential::default(),
        }
    }
}

impl Store {
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

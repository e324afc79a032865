//! Device records, their serial/MAC uniqueness indexes, and user ↔ device assignment.
//!
//! Every operation touching more than one record runs in one sled transaction, so two
//! concurrent registrations can never put two serials on one device or one serial on two
//! devices, and an assignment never exceeds the user's limit.

use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use super::{decode, encode, now_secs, Store, StoreError, UserRecord};

/// What kind of device; decides which platform may use it and which methods it allows.
/// Stored by position in compact records (`codec`): a new type goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    Windows,
    Mac,
    Ios,
    Android,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Windows => "windows",
            DeviceType::Mac => "mac",
            DeviceType::Ios => "ios",
            DeviceType::Android => "android",
        }
    }
}

impl std::str::FromStr for DeviceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "windows" | "win" => Ok(Self::Windows),
            "mac" | "macos" => Ok(Self::Mac),
            "ios" => Ok(Self::Ios),
            "android" => Ok(Self::Android),
            other => Err(format!(
                "type `{other}` is not one of windows, mac, ios, android"
            )),
        }
    }
}

/// How a device proves it is itself.
/// Stored by position in compact records (`codec`): a new method goes last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    #[default]
    Serial,
    Mac,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Serial => "serial",
            AuthMethod::Mac => "mac",
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "serial" => Ok(Self::Serial),
            "mac" => Ok(Self::Mac),
            other => Err(format!("method `{other}` is not one of serial, mac")),
        }
    }
}

/// A device as stored; compact records (`codec`) hold its fields by position, so a new field
/// needs a new format byte there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub device_type: DeviceType,
    /// Connect permission.
    pub enabled: bool,
    /// Device authentication: when off, no device-ID check (not recommended).
    pub device_auth: bool,
    pub method: AuthMethod,
    /// Serial number (Windows/Mac/iOS) or the client's device ID (Android).
    pub serial: Option<String>,
    /// Canonical `12:34:56:78:90:ab`.
    pub mac: Option<String>,
    /// The user it is assigned to.
    pub owner: Option<String>,
    /// Unix seconds of the auto-registration that filled `serial`, if it was one.
    #[serde(default)]
    pub registered_at: Option<u64>,
    pub created: u64,
    pub updated: u64,
}

impl DeviceRecord {
    /// Tests: an unassigned Windows device with device authentication by serial, none set.
    #[cfg(test)]
    pub(crate) fn windows(name: &str) -> Self {
        Self {
            name: name.into(),
            device_type: DeviceType::Windows,
            enabled: true,
            device_auth: true,
            method: AuthMethod::Serial,
            serial: None,
            mac: None,
            owner: None,
            registered_at: None,
            created: 0,
            updated: 0,
        }
    }
}

impl AsRef<DeviceRecord> for DeviceRecord {
    fn as_ref(&self) -> &DeviceRecord {
        self
    }
}

fn index_entry(tree: &sled::Tree, key: impl AsRef<[u8]>) -> Result<Option<String>, StoreError> {
    Ok(tree
        .get(key)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Key of the serial index: serials compare case-insensitively (hex device IDs vary in case).
pub fn serial_key(serial: &str) -> Vec<u8> {
    serial.trim().to_ascii_uppercase().into_bytes()
}

pub(super) type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub(super) fn abort<T>(e: StoreError) -> Tx<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn tx_get<T: super::Record>(tree: &TransactionalTree, key: &str) -> Tx<Option<T>> {
    match tree.get(key.as_bytes())? {
        Some(v) => match decode(key.as_bytes(), &v) {
            Ok(r) => Ok(Some(r)),
            Err(e) => abort(e),
        },
        None => Ok(None),
    }
}

pub(super) fn tx_put<T: super::Record>(
    tree: &TransactionalTree,
    key: &str,
    value: &T,
) -> Result<(), UnabortableTransactionError> {
    tree.insert(key.as_bytes(), encode(value)).map(|_| ())
}

pub(super) fn unwrap_tx<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    })
}

/// Claims `serial` and `mac` in the indexes for `device`, failing if another device has them.
fn claim_ids(serials: &TransactionalTree, macs: &TransactionalTree, d: &DeviceRecord) -> Tx<()> {
    if let Some(s) = &d.serial {
        let key = serial_key(s);
        if let Some(other) = serials.get(&key)? {
            if other.as_ref() != d.name.as_bytes() {
                return abort(StoreError::Conflict(format!(
                    "serial `{s}` is already registered to device `{}`",
                    String::from_utf8_lossy(&other)
                )));
            }
        }
        serials.insert(key, d.name.as_bytes())?;
    }
    if let Some(m) = &d.mac {
        if let Some(other) = macs.get(m.as_bytes())? {
            if other.as_ref() != d.name.as_bytes() {
                return abort(StoreError::Conflict(format!(
                    "MAC `{m}` is already used by device `{}`",
                    String::from_utf8_lossy(&other)
                )));
            }
        }
        macs.insert(m.as_bytes(), d.name.as_bytes())?;
    }
    Ok(())
}

fn release_ids(serials: &TransactionalTree, macs: &TransactionalTree, d: &DeviceRecord) -> Tx<()> {
    if let Some(s) = &d.serial {
        serials.remove(serial_key(s))?;
    }
    if let Some(m) = &d.mac {
        macs.remove(m.as_bytes())?;
    }
    Ok(())
}

/// Outcome of an auto-registration attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// The device is no longer a free slot of this user: a concurrent first connection
    /// registered it, or an admin reassigned, disabled or changed it meanwhile.
    SlotTaken,
    /// Another device already has this serial.
    SerialInUse {
        device: String,
    },
}

impl Store {
    /// The device `name`, read from sled (the request path reads `access` instead).
    pub fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(&self.devices, name)
    }

    /// All devices, ordered by name.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read_all(&self.devices)
    }

    /// The device holding `serial`, if any. Read from sled, not cached: only first
    /// connections and imports ask (a request its device proves does not).
    pub fn device_by_serial(&self, serial: &str) -> Result<Option<String>, StoreError> {
        index_entry(&self.serials, serial_key(serial))
    }

    /// The device using `mac` (canonical form), if any: imports check it per row.
    pub fn device_by_mac(&self, mac: &str) -> Result<Option<String>, StoreError> {
        index_entry(&self.macs, mac)
    }

    /// Adds devices (and users, and assignments) in one transaction: all or nothing.
    /// Each device's `owner`, when set, must name a user that exists or is in `users`.
    pub async fn import(
        &self,
        users: &[UserRecord],
        devices: &[DeviceRecord],
        default_limit: u32,
    ) -> Result<(), StoreError> {
        let r = (&self.users, &self.devices, &self.serials, &self.macs).transaction(
            |(tu, td, ts, tm)| {
                for u in users {
                    if tu.get(u.name.as_bytes())?.is_some() {
                        return abort(StoreError::Exists(format!("user `{}`", u.name)));
                    }
                    tx_put(tu, &u.name, u)?;
                }
                for d in devices {
                    if td.get(d.name.as_bytes())?.is_some() {
                        return abort(StoreError::Exists(format!("device `{}`", d.name)));
                    }
                    claim_ids(ts, tm, d)?;
                    tx_put(td, &d.name, d)?;
                    if let Some(owner) = &d.owner {
                        let Some(mut u) = tx_get::<UserRecord>(tu, owner)? else {
                            return abort(StoreError::NotFound(format!("user `{owner}`")));
                        };
                        add_assignment(&mut u, &d.name, default_limit)?;
                        tx_put(tu, owner, &u)?;
                    }
                }
                Ok(())
            },
        );
        unwrap_tx(r)?;
        // Index entries are only added here (a taken one aborts), and absent ones are never
        // cached.
        self.written(
            users
                .iter()
                .map(|u| u.name.as_str())
                .chain(devices.iter().filter_map(|d| d.owner.as_deref())),
        );
        self.flush().await
    }

    /// Adds one device durably.
    pub async fn insert_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        self.import(&[], std::slice::from_ref(d), u32::MAX).await
    }

    /// Changes a device with `change`, which sees the current record and may refuse.
    /// Index entries follow the new serial/MAC.
    pub async fn update_device<F>(&self, name: &str, change: F) -> Result<DeviceRecord, StoreError>
    where
        F: Fn(&mut DeviceRecord) -> Result<(), StoreError>,
    {
        let r = (&self.devices, &self.serials, &self.macs).transaction(|(td, ts, tm)| {
            let Some(old) = tx_get::<DeviceRecord>(td, name)? else {
                return abort(StoreError::NotFound(format!("device `{name}`")));
            };
            let mut new = old.clone();
            if let Err(e) = change(&mut new) {
                return abort(e);
            }
            new.updated = now_secs();
            release_ids(ts, tm, &old)?;
            claim_ids(ts, tm, &new)?;
            tx_put(td, name, &new)?;
            Ok((old.owner, new))
        });
        let (old_owner, d) = unwrap_tx(r)?;
        self.written(old_owner.as_deref().into_iter().chain(d.owner.as_deref()));
        self.flush().await?;
        Ok(d)
    }

    /// Removes a device durably; refused while it is assigned.
    pub async fn remove_device(&self, name: &str) -> Result<(), StoreError> {
        let r = (&self.devices, &self.serials, &self.macs).transaction(|(td, ts, tm)| {
            let Some(d) = tx_get::<DeviceRecord>(td, name)? else {
                return abort(StoreError::NotFound(format!("device `{name}`")));
            };
            if let Some(owner) = &d.owner {
                return abort(StoreError::Conflict(format!(
                    "device `{name}` is assigned to user `{owner}`: unassign it first"
                )));
            }
            release_ids(ts, tm, &d)?;
            td.remove(name.as_bytes())?;
            Ok(())
        });
        unwrap_tx(r)?;
        // Unassigned, so in no user's entry.
        self.flush().await
    }

    /// Assigns a device to a user durably, within the user's device limit.
    pub async fn assign(
        &self,
        user: &str,
        device: &str,
        default_limit: u32,
    ) -> Result<(), StoreError> {
        let r = (&self.users, &self.devices).transaction(|(tu, td)| {
            let Some(mut u) = tx_get::<UserRecord>(tu, user)? else {
                return abort(StoreError::NotFound(format!("user `{user}`")));
            };
            let Some(mut d) = tx_get::<DeviceRecord>(td, device)? else {
                return abort(StoreError::NotFound(format!("device `{device}`")));
            };
            match &d.owner {
                Some(o) if o == user => {
                    return abort(StoreError::Conflict(format!(
                        "device `{device}` is already assigned to `{user}`"
                    )))
                }
                Some(o) => {
                    return abort(StoreError::Conflict(format!(
                        "device `{device}` is assigned to user `{o}`: unassign it first"
                    )))
                }
                None => {}
            }
            add_assignment(&mut u, device, default_limit)?;
            d.owner = Some(user.to_owned());
            d.updated = now_secs();
            tx_put(tu, user, &u)?;
            tx_put(td, device, &d)?;
            Ok(())
        });
        unwrap_tx(r)?;
        self.written([user]);
        self.flush().await
    }

    /// Unassigns a device from a user durably.
    pub async fn unassign(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let trees = (
            &self.users,
            &self.devices,
            &self.profiles,
            &self.profile_tokens,
        );
        let r = trees.transaction(|(tu, td, tp, tt)| {
            let Some(mut u) = tx_get::<UserRecord>(tu, user)? else {
                return abort(StoreError::NotFound(format!("user `{user}`")));
            };
            let Some(mut d) = tx_get::<DeviceRecord>(td, device)? else {
                return abort(StoreError::NotFound(format!("device `{device}`")));
            };
            if d.owner.as_deref() != Some(user) {
                return abort(StoreError::NotFound(format!(
                    "assignment of device `{device}` to user `{user}`"
                )));
            }
            u.devices.retain(|n| n != device);
            d.owner = None;
            d.updated = now_secs();
            tx_put(tu, user, &u)?;
            tx_put(td, device, &d)?;
            super::profiles::forget_profile(tp, tt, user, device)
        });
        unwrap_tx(r)?;
        self.written([user]);
        self.flush().await
    }

    /// Stores a serial presented on first connect, durably; atomic against concurrent
    /// registrations of the same device or the same serial. Only on a free slot of `user`'s
    /// (device authentication by serial, enabled, no serial yet) as the device is now: the
    /// request decided from the user's entry as read before its password check, and an admin
    /// may have changed the device since.
    pub async fn register_serial(
        &self,
        device: &str,
        serial: &str,
        user: &str,
    ) -> Result<Registration, StoreError> {
        let r = (&self.devices, &self.serials).transaction(|(td, ts)| {
            let Some(mut d) = tx_get::<DeviceRecord>(td, device)? else {
                return abort(StoreError::NotFound(format!("device `{device}`")));
            };
            let free = d.serial.is_none()
                && d.owner.as_deref() == Some(user)
                && d.enabled
                && d.device_auth
                && d.method == AuthMethod::Serial;
            if !free {
                return Ok((Registration::SlotTaken, None));
            }
            let key = serial_key(serial);
            if let Some(other) = ts.get(&key)? {
                return Ok((
                    Registration::SerialInUse {
                        device: String::from_utf8_lossy(&other).into_owned(),
                    },
                    None,
                ));
            }
            ts.insert(key, device.as_bytes())?;
            let now = now_secs();
            d.serial = Some(serial.to_owned());
            d.registered_at = Some(now);
            d.updated = now;
            tx_put(td, device, &d)?;
            Ok((Registration::Registered, d.owner))
        });
        let (outcome, owner) = unwrap_tx(r)?;
        if outcome == Registration::Registered {
            // The serial index only gained an entry, and index entries are never cached.
            self.written(owner.as_deref());
            self.flush().await?;
        }
        Ok(outcome)
    }
}

fn add_assignment(u: &mut UserRecord, device: &str, default_limit: u32) -> Tx<()> {
    let limit = u.max_devices.unwrap_or(default_limit);
    if u.devices.len() as u64 >= u64::from(limit) {
        return abort(StoreError::Conflict(format!(
            "user `{}` already has {} device(s), the limit (raise it with `ravpnd user set {} --max-devices N`)",
            u.name,
            u.devices.len(),
            u.name
        )));
    }
    if !u.devices.iter().any(|d| d == device) {
        u.devices.push(device.to_owned());
    }
    Ok(())
}

//! User records: who may connect, and (for the local source) their argon2id password hash.

use serde::{Deserialize, Serialize};

use sled::Transactional;

use super::devices::{abort, tx_get, tx_put, unwrap_tx, DeviceRecord};
use super::{encode, now_secs, Store, StoreError};

/// A user as stored (compactly through `codec`'s `UserOut`/`UserIn`, which list the fields
/// by position: a new field needs a new format byte there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// PHC-format argon2id hash; `None` for users whose password lives in a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Assigned devices, by name (the device records name their owner too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Where profile links go by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Per-user device limit; `None` means `[devices] max_per_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
}

impl UserRecord {
    pub fn new(name: impl Into<String>, password_hash: Option<String>) -> Self {
        let now = now_secs();
        Self {
            name: name.into(),
            password_hash,
            devices: Vec::new(),
            email: None,
            max_devices: None,
            created: now,
            updated: now,
        }
    }
}

impl Store {
    /// The user `name`, read from sled (the request path reads `access` instead).
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read(&self.users, name)
    }

    /// All users, ordered by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read_all(&self.users)
    }

    /// Adds a user durably; fails if the name is taken.
    pub async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let swapped = self.users.compare_and_swap(
            user.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(user)),
        )?;
        if swapped.is_err() {
            return Err(StoreError::Exists(format!("user `{}`", user.name)));
        }
        self.written([user.name.as_str()]);
        self.flush().await
    }

    /// Changes a user's settings durably with `change`. A record that does not decode is left
    /// as it is and reported (`Corrupt`), never replaced or removed: devices still name it.
    pub async fn update_user(
        &self,
        name: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<(), StoreError> {
        let r = self.users.transaction(|tu| {
            let Some(mut rec) = tx_get::<UserRecord>(tu, name)? else {
                return abort(StoreError::NotFound(format!("user `{name}`")));
            };
            change(&mut rec);
            rec.updated = now_secs();
            tx_put(tu, name, &rec)?;
            Ok(())
        });
        unwrap_tx(r)?;
        self.written([name]);
        self.flush().await
    }

    /// Writes a user's record as a write does before it drops their cached entry (tests: a
    /// reader in between).
    #[cfg(test)]
    pub(crate) fn commit_user_without_invalidating(&self, user: &UserRecord) {
        self.users
            .insert(user.name.as_bytes(), encode(user))
            .expect("written");
    }

    /// Replaces a user's password hash durably.
    pub async fn set_user_password(&self, name: &str, hash: String) -> Result<(), StoreError> {
        self.update_user(name, |u| u.password_hash = Some(hash.clone()))
            .await
    }

    /// Sets (or with `None` clears) a user's own device limit durably.
    pub async fn set_user_max_devices(
        &self,
        name: &str,
        max: Option<u32>,
    ) -> Result<(), StoreError> {
        self.update_user(name, |u| u.max_devices = max).await
    }

    /// Removes a user durably, unassigning their devices in the same transaction.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let trees = (
            &self.users,
            &self.devices,
            &self.profiles,
            &self.profile_tokens,
        );
        let r = trees.transaction(|(tu, td, tp, tt)| {
            let Some(u) = tx_get::<UserRecord>(tu, name)? else {
                return abort(StoreError::NotFound(format!("user `{name}`")));
            };
            for dev in &u.devices {
                if let Some(mut d) = tx_get::<DeviceRecord>(td, dev)? {
                    d.owner = None;
                    d.updated = now_secs();
                    tx_put(td, dev, &d)?;
                }
                super::profiles::forget_profile(tp, tt, name, dev)?;
            }
            tu.remove(name.as_bytes())?;
            Ok(())
        });
        unwrap_tx(r)?;
        self.written([name]);
        self.flush().await
    }
}

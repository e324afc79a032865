//! User records: who may connect, and (for the local source) their argon2id password hash.

use serde::{Deserialize, Serialize};

use super::{decode, encode, now_secs, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// PHC-format argon2id hash; `None` for users whose password lives in a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
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
            created: now,
            updated: now,
        }
    }
}

impl Store {
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.users.get(name.as_bytes())? {
            Some(v) => decode(name.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// All users, ordered by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
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
        self.flush().await
    }

    /// Replaces a user's password hash durably.
    pub async fn set_user_password(&self, name: &str, hash: String) -> Result<(), StoreError> {
        let mut missing = false;
        self.users.fetch_and_update(name.as_bytes(), |old| {
            let Some(old) = old else {
                missing = true;
                return None;
            };
            // A record that does not decode is left as it is; the error surfaces on read.
            let mut rec: UserRecord = decode(name.as_bytes(), old).ok()?;
            rec.password_hash = Some(hash.clone());
            rec.updated = now_secs();
            Some(encode(&rec))
        })?;
        if missing {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        self.flush().await
    }

    /// Removes a user durably.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        if self.users.remove(name.as_bytes())?.is_none() {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        self.flush().await
    }
}

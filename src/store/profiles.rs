//! AnyConnect profile distribution: one record per (user, device), and the index from the
//! hash of a download token to its record. Tokens themselves are never stored.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use sled::transaction::TransactionalTree;

use super::devices::{abort, tx_get, tx_put, unwrap_tx, Tx};
use super::{decode, Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub user: String,
    pub device: String,
    /// Where the last link went.
    pub email: Option<String>,
    /// Unix seconds of the last notification.
    pub sent_at: Option<u64>,
    /// Unix seconds after which the link answers 410.
    pub expires_at: Option<u64>,
    /// `None`: unlimited.
    pub downloads_allowed: Option<u32>,
    pub downloads_used: u32,
    pub last_download: Option<u64>,
    /// Hex SHA-256 of the current token.
    pub token_hash: Option<String>,
}

/// Key of a profile: user and device, NUL-separated (user names may hold `/`).
pub fn profile_key(user: &str, device: &str) -> String {
    format!("{user}\0{device}")
}

/// Why a download is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadRefusal {
    /// No such token (or superseded by a newer link).
    Unknown,
    /// Expired, or its downloads are used up.
    Gone,
}

/// Forgets the profile of `user`'s `device` and its link, in a transaction that ends the
/// assignment: a profile is one per (user, assigned device), and an old link must not come
/// back with a new assignment of the device, or with a new user of the same name.
pub(super) fn forget_profile(
    tp: &TransactionalTree,
    tt: &TransactionalTree,
    user: &str,
    device: &str,
) -> Tx<()> {
    let key = profile_key(user, device);
    if let Some(old) = tx_get::<ProfileRecord>(tp, &key)? {
        if let Some(h) = old.token_hash {
            tt.remove(h.as_bytes())?;
        }
        tp.remove(key.as_bytes())?;
    }
    Ok(())
}

impl Store {
    pub fn profile(&self, user: &str, device: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let key = profile_key(user, device);
        match self.profiles.get(key.as_bytes())? {
            Some(v) => decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Stores a new link for a profile durably, invalidating the previous one — if the device
    /// is still the user's: the mail went out in between, and an unassignment meanwhile has
    /// forgotten the profile, which must not come back with a live link.
    pub async fn set_profile_link(&self, rec: &ProfileRecord) -> Result<(), StoreError> {
        let key = profile_key(&rec.user, &rec.device);
        let trees = (&self.profiles, &self.profile_tokens, &self.devices);
        let r = trees.transaction(|(tp, tt, td)| {
            let owner = tx_get::<super::DeviceRecord>(td, &rec.device)?.and_then(|d| d.owner);
            if owner.as_deref() != Some(rec.user.as_str()) {
                return abort(StoreError::Conflict(format!(
                    "device `{}` was unassigned from `{}` meanwhile",
                    rec.device, rec.user
                )));
            }
            if let Some(old) = tx_get::<ProfileRecord>(tp, &key)? {
                if let Some(h) = old.token_hash {
                    tt.remove(h.as_bytes())?;
                }
            }
            if let Some(h) = &rec.token_hash {
                tt.insert(h.as_bytes(), key.as_bytes())?;
            }
            tx_put(tp, &key, rec)?;
            Ok(())
        });
        unwrap_tx(r)?;
        self.flush().await
    }

    /// Counts one download of the link with this token hash, durably, if it is still valid
    /// at `now`; returns the profile.
    pub async fn count_download(
        &self,
        token_hash: &str,
        now: u64,
    ) -> Result<Result<ProfileRecord, DownloadRefusal>, StoreError> {
        let r = (&self.profiles, &self.profile_tokens).transaction(|(tp, tt)| {
            let Some(key) = tt.get(token_hash.as_bytes())? else {
                return Ok(Err(DownloadRefusal::Unknown));
            };
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some(mut rec) = tx_get::<ProfileRecord>(tp, &key)? else {
                return Ok(Err(DownloadRefusal::Unknown));
            };
            if rec.token_hash.as_deref() != Some(token_hash) {
                return abort(StoreError::Invalid("token index out of step".into()));
            }
            let expired = rec.expires_at.is_none_or(|e| now >= e);
            let used_up = rec
                .downloads_allowed
                .is_some_and(|n| rec.downloads_used >= n);
            if expired || used_up {
                return Ok(Err(DownloadRefusal::Gone));
            }
            rec.downloads_used += 1;
            rec.last_download = Some(now);
            tx_put(tp, &key, &rec)?;
            Ok(Ok(rec))
        });
        let out = unwrap_tx(r)?;
        if out.is_ok() {
            self.flush().await?;
        }
        Ok(out)
    }
}

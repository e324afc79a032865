//! Password verdicts. The hot path asks a [`PasswordVerifier`]; which source answers is chosen
//! by `[auth] source`.

pub mod azure;
pub mod credential_cache;
pub mod ldap;
pub mod local;

use std::future::Future;
use std::sync::Arc;

use crate::store::{Access, StoreError};

/// Why a password was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no authentication source selected")]
    NotSelected,
    #[error("unknown user")]
    UnknownUser,
    #[error("bad password")]
    BadPassword,
    #[error("user has no local password")]
    NoPassword,
    #[error("account disabled")]
    AccountDisabled,
    #[error("account expired")]
    AccountExpired,
    #[error("password expired")]
    PasswordExpired,
    #[error("password must be changed")]
    MustChangePassword,
    #[error("account locked out")]
    LockedOut,
    #[error("logon not permitted now or from here")]
    NotPermitted,
    #[error("directory unavailable")]
    DirectoryUnavailable,
    /// The lockout pre-check: one more failure would lock the account.
    #[error("refused to prevent an account lockout")]
    LockoutPrevented,
    #[error("multi-factor authentication required")]
    MfaRequired,
    /// The user changed while their password was checked: read them again and retry.
    #[error("the user changed during the password check")]
    Stale,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("password check failed: {0}")]
    Internal(String),
}

/// Checks a user's password. Implementations must not block the async workers.
pub trait PasswordVerifier: Send + Sync {
    /// Verifies `password` for `user` (already known to the store), whose name the NAS
    /// sent as `sent_name` (a directory may need that form, e.g. `CORP\alice`).
    fn verify(
        &self,
        user: &Access,
        sent_name: &str,
        password: &[u8],
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
}

/// The configured source, dispatched statically.
pub enum Source {
    NotSelected,
    Local(Arc<local::LocalVerifier>),
    ActiveDirectory(Arc<ldap::AdVerifier>),
    AzureAd(Arc<azure::AzureVerifier>),
}

/// A directory listing in progress.
pub type UsersFuture<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<Vec<ldap::DirectoryUser>, AuthError>> + Send + 'a>,
>;

/// The CLI-side view of a directory source: who is in it, and how a name maps to the
/// store key. Not on the request path.
pub trait UserDirectory: Send + Sync {
    fn list_users<'a>(&'a self, only: Option<&'a str>) -> UsersFuture<'a>;
    fn user_key(&self, name: &str) -> String;
    /// The directory users among `names` (any accepted name form); absent ones are left out.
    fn find_users<'a>(&'a self, names: &'a [String]) -> UsersFuture<'a> {
        Box::pin(async move {
            let mut found = Vec::new();
            for n in names {
                found.extend(self.list_users(Some(n)).await?);
            }
            Ok(found)
        })
    }
    /// Why no directory server is reachable right now, by the source's health checks;
    /// `None` when one is (or the source does not check).
    fn unreachable(&self) -> Option<String> {
        None
    }
}

impl UserDirectory for ldap::AdVerifier {
    fn list_users<'a>(&'a self, only: Option<&'a str>) -> UsersFuture<'a> {
        Box::pin(ldap::AdVerifier::list_users(self, only))
    }
    fn user_key(&self, name: &str) -> String {
        ldap::AdVerifier::user_key(self, name)
    }
    fn find_users<'a>(&'a self, names: &'a [String]) -> UsersFuture<'a> {
        Box::pin(ldap::AdVerifier::find_users(self, names))
    }
    fn unreachable(&self) -> Option<String> {
        ldap::AdVerifier::unreachable(self)
    }
}

impl UserDirectory for azure::AzureVerifier {
    fn list_users<'a>(&'a self, only: Option<&'a str>) -> UsersFuture<'a> {
        Box::pin(azure::AzureVerifier::list_users(self, only))
    }
    fn user_key(&self, name: &str) -> String {
        azure::AzureVerifier::user_key(self, name)
    }
    fn unreachable(&self) -> Option<String> {
        azure::AzureVerifier::unreachable(self)
    }
}

impl Source {
    /// Whether passwords are checked by a directory over the network (AD, Entra ID).
    pub fn is_directory(&self) -> bool {
        matches!(self, Source::ActiveDirectory(_) | Source::AzureAd(_))
    }

    /// Before refusing `name`, which the store does not have: the local directory does the
    /// work of a wrong password's check (argon2 against a decoy), so that the reply's timing
    /// does not tell who exists. A directory's unknown names are refused at once (no bind).
    pub async fn refuse_unknown(&self, name: &str, password: &[u8]) {
        if let Source::Local(v) = self {
            // Boxed as an argon2 run is (see `LocalVerifier::verify`).
            Box::pin(v.refuse_without_hash(name, password)).await;
        }
    }
}

impl PasswordVerifier for Source {
    async fn verify(
        &self,
        user: &Access,
        sent_name: &str,
        password: &[u8],
    ) -> Result<(), AuthError> {
        // A directory's bind is boxed: its future is ~6 KB, and unboxed it would make every
        // request's future that large, local users' too (the listener boxes each request's
        // future: a copy and an allocation of its whole size) — for a bind that takes
        // milliseconds anyway.
        match self {
            Source::NotSelected => Err(AuthError::NotSelected),
            Source::Local(v) => v.verify(user, sent_name, password).await,
            Source::ActiveDirectory(v) => Box::pin(v.bind_user(sent_name, password)).await,
            Source::AzureAd(v) => Box::pin(v.bind_user(sent_name, password)).await,
        }
    }
}

/// Removes a shared check from its in-flight map when it finishes *or is cancelled* (a
/// request given up on at its timeout drops the check's future): an entry left behind would
/// stay for good, one per abandoned name and password.
pub(crate) struct RemoveOnDrop<'a, K: std::hash::Hash + Eq, V>(
    pub &'a parking_lot::Mutex<std::collections::HashMap<K, V>>,
    pub K,
);

impl<K: std::hash::Hash + Eq, V> Drop for RemoveOnDrop<'_, K, V> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

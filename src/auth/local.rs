//! The local user directory: argon2id hashes in the store, with a bounded cache of recently
//! verified credentials so reconnect storms do not pay argon2 each time.
//!
//! A cache entry is an HMAC (random per-process key) over the password *and* the stored hash
//! (its fingerprint), so a changed password or a removed user can never be served from the
//! cache, even if an invalidation races a verification. The user's decoded entry (`Access`)
//! also keeps the credential last verified for it, tagged over the password alone: the entry
//! is built again when the hash changes. A request checks there first, with no lookup by name.
//! The hash itself is read from the user's record only when argon2 runs.
//!
//! A name with no hash (not in the store, or without a password) is checked against a decoy
//! hash all the same, and its refusal kept like a wrong password's: an attacker timing the
//! replies through a gateway (ocserv shows no Reply-Message) cannot tell who exists. For the
//! same reason a hash imported with other parameters than the decoy's is replaced, at the
//! user's first successful login, by one with the daemon's own (until then a wrong password
//! for that user costs what its hash does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};

use super::credential_cache::{CredentialCache, Tag as CacheTag};
use super::{AuthError, PasswordVerifier, RemoveOnDrop};
use crate::config::Problem;
use crate::metrics::METRICS;
use crate::store::{Access, HashFingerprint, Store, Verified};

/// The first 128 bits of an HMAC-SHA-256.
fn truncated(full: &[u8]) -> [u8; 16] {
    let mut tag = [0; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

/// `[auth.local]`: the local user directory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalAuthConfig {
    /// How long a verified credential is trusted without running argon2 again.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most credentials kept in the credential cache (0: none are kept). Each user's decoded
    /// entry (`[store] cache_records`) also keeps the one last verified for it; the cache
    /// serves entries built again after a write, e.g. the reconnect after a registration: the
    /// most recent verifications, not one per user (at 100,000 users that was 4 MiB).
    pub cache_capacity: u64,
    /// Argon2 computations at once (each takes ~19 MiB); 0 = number of CPUs.
    pub max_concurrent_hashes: usize,
    /// Replace an imported hash made with other parameters by one with the daemon's at the
    /// user's first successful login, so that a wrong password for any user costs what an
    /// unknown name's does. Off: hashes stay as imported (e.g. shared with another system).
    pub upgrade_imported_hashes: bool,
}

impl Default for LocalAuthConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(15 * 60),
            cache_capacity: 16_384,
            max_concurrent_hashes: 0,
            upgrade_imported_hashes: true,
        }
    }
}

impl LocalAuthConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.cache_ttl > Duration::from_secs(24 * 3600) {
            p.push(Problem::at(prefix, "cache_ttl", "must be at most 24h"));
        }
        p
    }
}

type EntryTag = [u8; 16];

/// One argon2 verification that concurrent identical requests wait on.
type InFlight = OnceCell<Result<Checked, String>>;

/// A check under way: the user's name and the credential's tag.
type Flight = (Box<str>, CacheTag);

/// What argon2 checks a password against.
#[derive(Debug, Clone, Copy)]
enum Against {
    /// The hash in the user's record, if it is still the one of this fingerprint.
    Record(HashFingerprint),
    /// The decoy, for a name with no hash: always `Refused`.
    Decoy,
}

/// What a check of one user's password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// argon2's verdict on the password against the hash of the entry's fingerprint.
    Verified,
    Refused,
    /// The user's record no longer has the entry's hash (changed or removed since the entry
    /// was read): nothing was checked; the caller reads the user again.
    Stale,
}

pub struct LocalVerifier {
    /// Shared with the argon2 computations, which fill it themselves (see `run_argon2`).
    cache: Arc<CredentialCache>,
    /// HMAC-SHA256 under a random per-process key, its key schedule computed once.
    mac: Hmac<Sha256>,
    hash_permits: Arc<Semaphore>,
    /// Verifications under way, by user and credential tag: concurrent checks of one user's
    /// credential share one argon2 run. Not across users with the same hash (imported with one
    /// PHC string): a run is `Stale` for its own user's record only.
    inflight: Mutex<HashMap<Flight, Arc<InFlight>>>,
    /// Where argon2 reads the hash: the user's record.
    store: Store,
    /// Credentials argon2 refused, by user and tag (`refusal`). Exact, not a guess: a tag is
    /// over the password and (the fingerprint of) the hash it was checked against, and a new
    /// hash makes new tags. A device retrying a stale password (or a NAS replaying one) costs
    /// a lookup instead of an argon2 run each. Per user even where users share a hash
    /// (imported with one PHC string): another's refusal answered at once would show that a
    /// name exists, where an unknown name waits for argon2.
    refused: moka::sync::Cache<CacheTag, ()>,
    /// The parameters of the hashes this verifier makes: the decoy's, and those an imported
    /// hash is upgraded to (`hash_password`'s unless a test or fuzz target says otherwise).
    params: argon2::Params,
    /// `upgrade_imported_hashes`.
    upgrade_imported: bool,
    /// A hash no password matches (random salt and output, `params`), which argon2 checks the
    /// password of a name with no hash against.
    decoy: Arc<str>,
}

/// Refused credentials kept (moka's ~400 bytes an entry: ~3 MiB when full), each for at
/// most this long: enough for the devices retrying a stale password at any one time.
const REFUSED_CAPACITY: u64 = 8_192;
const REFUSED_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl LocalVerifier {
    pub fn new(config: &LocalAuthConfig, store: Store) -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let permits = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Self {
            cache: Arc::new(CredentialCache::new(
                config.cache_capacity,
                config.cache_ttl,
            )),
            mac: Hmac::new_from_slice(&key).expect("any key length"),
            hash_permits: Arc::new(Semaphore::new(permits)),
            inflight: Mutex::default(),
            store,
            refused: moka::sync::Cache::builder()
                .max_capacity(REFUSED_CAPACITY)
                .time_to_live(REFUSED_TTL)
                .build(),
            params: argon2::Params::default(),
            upgrade_imported: config.upgrade_imported_hashes,
            decoy: decoy_hash(&argon2::Params::default()).into(),
        }
    }

    /// The same verifier making its hashes (the decoy, upgrades) with `params` instead of the
    /// defaults: for tests and fuzzing, whose users' hashes are cheap.
    pub fn with_hash_params(mut self, params: argon2::Params) -> Self {
        self.decoy = decoy_hash(&params).into();
        self.params = params;
        self
    }

    /// The credential cache's tag: over the password and (the fingerprint of) the hash it was
    /// verified against, truncated to 128 bits (RFC 2104 §5) as the entry's is.
    fn tag(&self, password: &[u8], fingerprint: HashFingerprint) -> CacheTag {
        let mut mac = self.mac.clone();
        mac.update(&(password.len() as u64).to_be_bytes());
        mac.update(password);
        mac.update(&fingerprint.bytes());
        truncated(&mac.finalize().into_bytes())
    }

    /// The tag kept in a user's entry: over the password alone (the entry is built again when
    /// the hash changes), truncated to 128 bits (RFC 2104 §5) to keep the entry small. Its
    /// length prefix differs from `tag`'s for any password, so the two never coincide.
    fn entry_tag(&self, password: &[u8]) -> EntryTag {
        let mut mac = self.mac.clone();
        mac.update(&(password.len() as u64 | 1 << 63).to_be_bytes());
        mac.update(password);
        truncated(&mac.finalize().into_bytes())
    }

    /// The key of `user`'s refusal of the credential of `tag`; its first length prefix has
    /// the top two bits set, so it coincides with neither kind of tag.
    fn refusal(&self, user: &str, tag: &CacheTag) -> CacheTag {
        let mut mac = self.mac.clone();
        mac.update(&(user.len() as u64 | 3 << 62).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(tag);
        truncated(&mac.finalize().into_bytes())
    }

    /// Whether `tag` is the credential verified for `user`, and still trusted.
    fn cached(&self, user: &str, tag: &CacheTag) -> bool {
        self.cache.verified(user, tag).is_some()
    }

    /// Remembers in the user's entry that the password of `entry_tag` was verified at `at`.
    fn keep(&self, user: &Access, entry_tag: EntryTag, at: u32) {
        if self.cache.enabled() {
            user.credential().set(Verified { tag: entry_tag, at });
        }
    }

    /// The permit goes with the computation, not with the request: a request given up on
    /// (its timeout) cannot stop argon2 once started, so until it finishes it still counts
    /// against `max_concurrent_hashes` — else a storm of timed-out requests would run any
    /// number at once (19 MiB and a core each). For the same reason the computation caches
    /// a verified credential itself: the gateway's retry after that timeout then finds it,
    /// instead of paying argon2 again. It reads the hash from the user's record, and checks
    /// nothing if that is no longer the entry's.
    async fn run_argon2(
        &self,
        user: &str,
        against: Against,
        tag: CacheTag,
        password: &[u8],
    ) -> Result<Checked, String> {
        let permit = self
            .hash_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "shutting down".to_owned())?;
        // A computation for a request given up on may have verified it while this one queued.
        if self.cached(user, &tag) {
            return Ok(Checked::Verified);
        }
        let (cache, store, decoy) = (self.cache.clone(), self.store.clone(), self.decoy.clone());
        // The blocking task's own copy of the password, wiped when it is done with it.
        let (name, pw) = (user.to_owned(), zeroize::Zeroizing::new(password.to_vec()));
        let params = self.upgrade_imported.then(|| self.params.clone());
        let (checked, upgrade) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Read for the decoy too: the same work before argon2 either way.
            let hash = store.user(&name)?.and_then(|u| u.password_hash);
            let fingerprint = match against {
                Against::Record(fingerprint) => fingerprint,
                Against::Decoy => {
                    METRICS
                        .password_hash_checks
                        .with_label_values(&["decoy"])
                        .inc();
                    verify_hash(&pw, &decoy)?;
                    return Ok((Checked::Refused, None));
                }
            };
            let Some(hash) = hash.filter(|h| HashFingerprint::of(h) == fingerprint) else {
                return Ok((Checked::Stale, None));
            };
            METRICS
                .password_hash_checks
                .with_label_values(&["user"])
                .inc();
            if !verify_hash(&pw, &hash)? {
                return Ok((Checked::Refused, None));
            }
            cache.insert(&name, tag);
            // Under the same permit: one more argon2 run, once per imported user. Best effort:
            // the password is verified either way.
            let upgrade = match params {
                Some(params) if !made_with(&hash, &params) => match hash_with(&pw, &params) {
                    Ok(new) => Some((hash, new)),
                    Err(e) => {
                        tracing::warn!(user = %name, error = %e, "hashing for an upgrade");
                        None
                    }
                },
                _ => None,
            };
            Ok::<_, AuthError>((Checked::Verified, upgrade))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if let Some((old, new)) = upgrade {
            self.upgrade(user, &old, new, password).await;
        }
        Ok(checked)
    }

    /// Replaces `user`'s hash `old` (just verified) by `new`, made with this verifier's
    /// parameters, unless the hash changed meanwhile; keeps the credential under the new one,
    /// so the next request (a new entry) needs no argon2 run.
    async fn upgrade(&self, user: &str, old: &str, new: String, password: &[u8]) {
        let fingerprint = HashFingerprint::of(&new);
        let replaced = AtomicBool::new(false);
        let written = self
            .store
            .update_user(user, |u| {
                let same = u.password_hash.as_deref() == Some(old);
                if same {
                    u.password_hash = Some(new.clone());
                }
                replaced.store(same, Ordering::Relaxed);
            })
            .await;
        match written {
            Ok(()) if replaced.load(Ordering::Relaxed) => {
                self.cache.insert(user, self.tag(password, fingerprint));
                tracing::info!(%user, "imported password hash replaced by one with this daemon's parameters");
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(%user, error = %e, "replacing an imported password hash"),
        }
    }

    /// argon2's verdict on `password` for `user`, run once for concurrent identical checks
    /// and a refusal kept: a device retrying a stale password costs a lookup, not a run.
    async fn check(
        &self,
        user: &str,
        against: Against,
        tag: CacheTag,
        password: &[u8],
    ) -> Result<Checked, AuthError> {
        let refusal = self.refusal(user, &tag);
        if self.refused.contains_key(&refusal) {
            return Ok(Checked::Refused);
        }
        // Single flight: concurrent checks of the same credential (a reconnect storm after a
        // restart, with a cold cache) share one argon2 run instead of queueing one each.
        let flight: Flight = (user.into(), tag);
        let cell = self
            .inflight
            .lock()
            .entry(flight.clone())
            .or_default()
            .clone();
        let outcome = cell
            .get_or_init(|| async {
                // Removed also when the request is given up on: each wrong password has its
                // own tag, and entries must not pile up.
                let _forget = RemoveOnDrop(&self.inflight, flight);
                self.run_argon2(user, against, tag, password).await
            })
            .await
            .clone();
        let checked = outcome.map_err(AuthError::Internal)?;
        if checked == Checked::Refused {
            self.refused.insert(refusal, ());
        }
        Ok(checked)
    }

    /// Refuses `password` for `name`, which has no hash (no such user, or none set), after
    /// the same work as a wrong password's: an argon2 run against the decoy, or a lookup of
    /// the refusal kept from one. Its tag is over the name, so that a repeat is answered as
    /// fast as a known user's repeated wrong password, and no sooner.
    pub async fn refuse_without_hash(&self, name: &str, password: &[u8]) {
        let tag = self.tag(password, HashFingerprint::of_decoy(name));
        if let Err(e) = self.check(name, Against::Decoy, tag, password).await {
            tracing::debug!(error = %e, "the decoy check did not run");
        }
    }

    /// Drops a user's cached credential (after a password change or removal).
    pub fn forget(&self, user: &str) {
        self.cache.invalidate(user);
    }
}

impl PasswordVerifier for LocalVerifier {
    async fn verify(
        &self,
        user: &Access,
        _sent_name: &str,
        password: &[u8],
    ) -> Result<(), AuthError> {
        // The argon2 runs below are boxed: their futures are over 1 KB, which would make every
        // request's future that large, though a cached credential (nearly every request) waits
        // for nothing; an argon2 run takes tens of milliseconds anyway.
        let Some(fingerprint) = user.password() else {
            Box::pin(self.refuse_without_hash(user.name(), password)).await;
            return Err(AuthError::NoPassword);
        };
        let entry_tag = self.entry_tag(password);
        if let Some(v) = user.credential().get() {
            if self.cache.fresh(v.at, self.cache.now()) && bool::from(v.tag.ct_eq(&entry_tag)) {
                return Ok(());
            }
        }
        let tag = self.tag(password, fingerprint);
        if let Some(at) = self.cache.verified(user.name(), &tag) {
            self.keep(user, entry_tag, at);
            return Ok(());
        }
        match Box::pin(self.check(user.name(), Against::Record(fingerprint), tag, password)).await?
        {
            Checked::Verified => {
                self.keep(user, entry_tag, self.cache.now());
                Ok(())
            }
            Checked::Refused => Err(AuthError::BadPassword),
            Checked::Stale => Err(AuthError::Stale),
        }
    }
}

fn verify_hash(password: &[u8], hash: &str) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| AuthError::Internal(format!("stored hash unreadable: {e}")))?;
    Ok(Argon2::default().verify_password(password, &parsed).is_ok())
}

/// Checks a PHC string given by an admin (importing users from another system): it must be
/// an argon2 hash this daemon can verify, with parameters that cannot exhaust its memory.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if !matches!(
        parsed.algorithm.as_str(),
        "argon2id" | "argon2i" | "argon2d"
    ) {
        return Err(format!(
            "algorithm `{}` is not argon2id, argon2i or argon2d",
            parsed.algorithm
        ));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| format!("parameters: {e}"))?;
    if params.m_cost() > MAX_IMPORTED_M_COST || params.t_cost() > 16 || params.p_cost() > 16 {
        return Err(format!(
            "parameters m={} t={} p={} exceed m={MAX_IMPORTED_M_COST} t=16 p=16",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("hash or salt missing".into());
    }
    Ok(())
}

/// Most memory (KiB) an imported hash may ask for per verification: 256 MiB.
const MAX_IMPORTED_M_COST: u32 = 256 * 1024;

/// A PHC string of argon2id with `params`, a random salt and a random output: verifying any
/// password against it costs what a real hash's check does, and fails (but for a 2^-256
/// chance).
fn decoy_hash(params: &argon2::Params) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let mut output = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut output);
    let output = argon2::password_hash::Output::new(&output).expect("32 bytes is a valid length");
    format!(
        "${}$v={}$m={},t={},p={}${}${}",
        argon2::ARGON2ID_IDENT,
        argon2::Version::default() as u32,
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        output
    )
}

/// Whether `hash` is argon2id of this version with `params` and a 32-byte output: costs what
/// the decoy does.
fn made_with(hash: &str, params: &argon2::Params) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return true; // unreadable: verification refused it already
    };
    parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(argon2::Version::default() as u32)
        && argon2::Params::try_from(&parsed).is_ok_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost())
                == (params.m_cost(), params.t_cost(), params.p_cost())
        })
        && parsed.hash.is_some_and(|h| h.len() == 32)
}

/// Hashes `password` with argon2id and `params`. Blocking.
fn hash_with(password: &[u8], params: &argon2::Params) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::default(),
        params.clone(),
    )
    .hash_password(password, &salt)
    .map(|h| h.to_string())
    .map_err(|e| AuthError::Internal(e.to_string()))
}

/// Hashes a new password with argon2id (default parameters: 19 MiB, t=2, p=1). Blocking.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    hash_with(password, &argon2::Params::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_hashes_are_checked() {
        let good = hash_password(b"pw").unwrap();
        assert_eq!(check_password_hash(&good), Ok(()));
        assert!(verify_hash(b"pw", &good).unwrap());
        for bad in [
            "",
            "plaintext",
            "$2b$12$abcdefghijklmnopqrstuu5Rk0r0O7hJ0VVmDGSZm.Xl0H3k/fTW", // bcrypt
            "$argon2id$v=19$m=9999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(check_password_hash(bad).is_err(), "{bad}");
        }
    }

    /// Entries of users "a" and "b", imported with one PHC string (of `password`).
    async fn sharing_a_hash(v: &LocalVerifier, password: &[u8]) -> (Access, Access) {
        let h = hash_password(password).unwrap();
        (
            user(v, "a", Some(h.clone())).await,
            user(v, "b", Some(h)).await,
        )
    }

    /// A verifier over a scratch store, where argon2 reads the hashes; keep the directory.
    fn verifier(config: LocalAuthConfig) -> (tempfile::TempDir, LocalVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, LocalVerifier::new(&config, store))
    }

    /// `name`'s entry after their record was written with `hash` (a new entry each time, as
    /// after any write).
    async fn user(v: &LocalVerifier, name: &str, hash: Option<String>) -> Access {
        let store = &v.store;
        if store.user(name).unwrap().is_some() {
            store
                .update_user(name, |u| u.password_hash = hash.clone())
                .await
                .unwrap();
        } else {
            let record = crate::store::UserRecord::new(name, hash);
            store.insert_user(&record).await.unwrap();
        }
        store.access(name).unwrap().unwrap()
    }

    #[tokio::test]
    async fn verifies_caches_and_notices_changes() {
        let (_dir, v) = verifier(LocalAuthConfig::default());
        let h = hash_password(b"pw1").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let alice = user(&v, "alice", Some(h)).await;

        assert!(matches!(
            v.verify(&alice, "", b"nope").await,
            Err(AuthError::BadPassword)
        ));
        v.verify(&alice, "", b"pw1").await.unwrap();
        assert!(v.cache.get("alice").is_some());
        v.verify(&alice, "", b"pw1").await.unwrap();

        // Password changed without calling `forget`: the store builds the user's entry again,
        // and the cached tag, bound to the old hash, no longer matches.
        let alice = user(&v, "alice", Some(hash_password(b"pw2").unwrap())).await;
        assert!(matches!(
            v.verify(&alice, "", b"pw1").await,
            Err(AuthError::BadPassword)
        ));
        v.verify(&alice, "", b"pw2").await.unwrap();

        let directory_user = user(&v, "bob", None).await;
        assert!(matches!(
            v.verify(&directory_user, "", b"x").await,
            Err(AuthError::NoPassword)
        ));
    }

    /// argon2 runs only against the hash the entry was built from, read from the user's
    /// record: an entry read before a password change or a removal gets `Stale` (the policy
    /// reads the user again), whatever the password, and leaves nothing in the caches.
    #[tokio::test]
    async fn a_check_for_a_changed_or_removed_user_is_stale() {
        let (_dir, v) = verifier(LocalAuthConfig::default());
        let old = user(&v, "alice", Some(hash_password(b"pw1").unwrap())).await;
        let new = user(&v, "alice", Some(hash_password(b"pw2").unwrap())).await;
        for pw in [&b"pw1"[..], b"pw2"] {
            assert!(matches!(
                v.verify(&old, "", pw).await,
                Err(AuthError::Stale)
            ));
        }
        assert!(
            old.credential().get().is_none(),
            "the old entry keeps nothing"
        );
        assert!(v.cache.get("alice").is_none());
        v.verify(&new, "", b"pw2").await.unwrap();
        assert!(new.credential().get().is_some());

        // Removed, then created again with the same hash: the right password still passes
        // (a stale check refused nothing).
        let hash = hash_password(b"pw").unwrap();
        let bob = user(&v, "bob", Some(hash.clone())).await;
        v.store.remove_user("bob").await.unwrap();
        assert!(matches!(
            v.verify(&bob, "", b"pw").await,
            Err(AuthError::Stale)
        ));
        let bob = user(&v, "bob", Some(hash)).await;
        v.verify(&bob, "", b"pw").await.unwrap();
    }

    /// Users imported with one PHC string share tags. A check for one of them whose password
    /// changed meanwhile decides nothing for the others: not another's acceptance of the new
    /// password, nor a refusal of the old one (nor its `Stale`: each checks its own record).
    #[tokio::test]
    async fn users_sharing_a_hash_share_no_stale_verdict() {
        let (_dir, v) = verifier(LocalAuthConfig::default());
        let (a_old, b) = sharing_a_hash(&v, b"init").await;
        v.store
            .set_user_password("a", hash_password(b"p2").unwrap())
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(v.verify(&a_old, "", b"p2"), v.verify(&b, "", b"p2"));
        assert!(matches!(ra, Err(AuthError::Stale)), "{ra:?}");
        assert!(
            matches!(rb, Err(AuthError::BadPassword)),
            "b checked on its own: {rb:?}"
        );
        assert!(matches!(
            v.verify(&b, "", b"p2").await,
            Err(AuthError::BadPassword)
        ));
        assert!(matches!(
            v.verify(&a_old, "", b"init").await,
            Err(AuthError::Stale)
        ));
        v.verify(&b, "", b"init").await.unwrap();
    }

    /// A refused password is refused again without argon2 (here: with no argon2 to be had);
    /// the right one, or the same one against a new hash, is still checked.
    #[tokio::test]
    async fn a_refused_password_costs_no_second_argon2_run() {
        let (_dir, v) = verifier(LocalAuthConfig::default());
        let alice = user(&v, "alice", Some(hash_password(b"pw1").unwrap())).await;
        assert!(matches!(
            v.verify(&alice, "", b"stale").await,
            Err(AuthError::BadPassword)
        ));
        v.hash_permits.close();
        assert!(matches!(
            v.verify(&alice, "", b"stale").await,
            Err(AuthError::BadPassword)
        ));
        assert!(
            matches!(
                v.verify(&alice, "", b"pw1").await,
                Err(AuthError::Internal(_))
            ),
            "not refused: it needs argon2"
        );
        let changed = user(&v, "alice", Some(hash_password(b"stale").unwrap())).await;
        assert!(
            matches!(
                v.verify(&changed, "", b"stale").await,
                Err(AuthError::Internal(_))
            ),
            "a new hash: checked again"
        );
    }

    /// A verification given up on (the request's timeout) keeps its permit until argon2
    /// finishes, leaves nothing in the in-flight map, and caches what it verified.
    #[tokio::test]
    async fn a_cancelled_verification_still_holds_its_permit() {
        let (_dir, v) = verifier(LocalAuthConfig {
            max_concurrent_hashes: 1,
            ..LocalAuthConfig::default()
        });
        let alice = user(&v, "alice", Some(hash_password(b"pw").unwrap())).await;
        // Gives up long before argon2 (19 MiB, t=2) can finish.
        let gave_up =
            tokio::time::timeout(Duration::from_micros(1), v.verify(&alice, "", b"wrong")).await;
        assert!(gave_up.is_err(), "argon2 cannot finish in 1 µs");
        assert!(
            v.inflight.lock().is_empty(),
            "the in-flight entry is removed"
        );
        // The computation still runs: no second one may start until it ends.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(v.hash_permits.available_permits(), 0, "the permit is held");
        let free = tokio::time::timeout(Duration::from_secs(60), v.hash_permits.acquire())
            .await
            .expect("released when argon2 ends");
        drop(free);
        assert!(
            v.cache.get("alice").is_none(),
            "a wrong password is not cached"
        );

        // The right password, given up on the same way: the computation still caches it, so
        // the gateway's retry is answered from the cache.
        let gave_up =
            tokio::time::timeout(Duration::from_micros(1), v.verify(&alice, "", b"pw")).await;
        assert!(gave_up.is_err());
        drop(v.hash_permits.acquire().await.unwrap());
        assert!(v.cache.get("alice").is_some(), "cached by the computation");
        v.verify(&alice, "", b"pw").await.unwrap();
    }

    /// `verify`'s answer while the one argon2 permit is held by the test, or `None` if it
    /// waits for one: whether it was answered without argon2 (from a cache).
    async fn answer_without_argon2(
        v: &LocalVerifier,
        user: &Access,
        password: &[u8],
    ) -> Option<Result<(), AuthError>> {
        without_argon2(v, v.verify(user, "", password)).await
    }

    /// `f`'s output while the one argon2 permit is held by the test, or `None` if it waits.
    async fn without_argon2<F: std::future::Future>(v: &LocalVerifier, f: F) -> Option<F::Output> {
        let _held = v.hash_permits.try_acquire().expect("no argon2 running");
        tokio::time::timeout(Duration::from_millis(500), f)
            .await
            .ok()
    }

    #[test]
    fn the_decoy_costs_what_a_real_hash_does_and_matches_nothing() {
        let defaults = argon2::Params::default();
        let (decoy, real) = (decoy_hash(&defaults), hash_password(b"pw").unwrap());
        assert!(made_with(&decoy, &defaults) && made_with(&real, &defaults));
        assert_eq!(check_password_hash(&decoy), Ok(()));
        let (d, r) = (
            PasswordHash::new(&decoy).unwrap(),
            PasswordHash::new(&real).unwrap(),
        );
        assert_eq!(
            (d.algorithm, d.version, d.params.to_string()),
            (r.algorithm, r.version, r.params.to_string())
        );
        assert_eq!(d.hash.unwrap().len(), r.hash.unwrap().len());
        assert!(!verify_hash(b"pw", &decoy).unwrap());
        assert!(!verify_hash(b"", &decoy).unwrap());
        assert_ne!(decoy, decoy_hash(&defaults), "random salt and output");
    }

    /// A name with no hash — no such user, or one without a password — is refused after an
    /// argon2 run, and its refusal kept, exactly as a known user's wrong password: first
    /// both wait for argon2, then both are answered without it; another password, or
    /// another name, waits again.
    #[tokio::test]
    async fn a_name_without_a_hash_is_refused_as_slowly_as_a_wrong_password() {
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let alice = user(&v, "alice", Some(hash_password(b"pw").unwrap())).await;
        let bob = user(&v, "bob", None).await;
        for pw in [&b"guess"[..], b"guess2"] {
            assert!(answer_without_argon2(&v, &alice, pw).await.is_none());
            assert!(without_argon2(&v, v.refuse_without_hash("mallory", pw))
                .await
                .is_none());
            assert!(answer_without_argon2(&v, &bob, pw).await.is_none());
            assert!(matches!(
                v.verify(&alice, "", pw).await,
                Err(AuthError::BadPassword)
            ));
            v.refuse_without_hash("mallory", pw).await;
            assert!(matches!(
                v.verify(&bob, "", pw).await,
                Err(AuthError::NoPassword)
            ));
            assert!(matches!(
                answer_without_argon2(&v, &alice, pw).await,
                Some(Err(AuthError::BadPassword))
            ));
            assert!(without_argon2(&v, v.refuse_without_hash("mallory", pw))
                .await
                .is_some());
            assert!(matches!(
                answer_without_argon2(&v, &bob, pw).await,
                Some(Err(AuthError::NoPassword))
            ));
        }
        assert!(
            without_argon2(&v, v.refuse_without_hash("trudy", b"guess"))
                .await
                .is_none(),
            "the refusal is kept for its name alone"
        );
        assert!(v.inflight.lock().is_empty());
        assert!(v.cache.get("mallory").is_none());
    }

    /// A hash imported with other parameters (or another argon2 variant) is replaced at the
    /// user's first successful login by one with the verifier's, which the decoy has; a wrong
    /// password changes nothing, and the entry built again after the write needs no argon2
    /// run. A hash with the verifier's own parameters is left alone, and an upgrade never
    /// overwrites a hash changed meanwhile.
    #[tokio::test]
    async fn an_imported_hash_is_upgraded_at_the_first_login() {
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let defaults = argon2::Params::default();
        let stored = |name: &str| v.store.user(name).unwrap().unwrap().password_hash.unwrap();
        let other = argon2::Params::new(1024, 3, 1, None).unwrap();
        let argon2i = Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            defaults.clone(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        for (name, imported) in [
            ("alice", hash_with(b"pw", &other).unwrap()),
            ("ann", argon2i),
        ] {
            assert_eq!(check_password_hash(&imported), Ok(()));
            let entry = user(&v, name, Some(imported.clone())).await;
            assert!(matches!(
                v.verify(&entry, "", b"wrong").await,
                Err(AuthError::BadPassword)
            ));
            assert_eq!(stored(name), imported, "a wrong password upgrades nothing");
            v.verify(&entry, "", b"pw").await.unwrap();
            let now = stored(name);
            assert!(now != imported && made_with(&now, &defaults), "{now}");
            assert!(verify_hash(b"pw", &now).unwrap());
            let rebuilt = v.store.access(name).unwrap().unwrap();
            assert!(matches!(
                answer_without_argon2(&v, &rebuilt, b"pw").await,
                Some(Ok(()))
            ));
        }

        let (_dir2, kept) = verifier(LocalAuthConfig {
            upgrade_imported_hashes: false,
            ..LocalAuthConfig::default()
        });
        let imported = hash_with(b"pw", &other).unwrap();
        let carol = user(&kept, "carol", Some(imported.clone())).await;
        kept.verify(&carol, "", b"pw").await.unwrap();
        let left = kept.store.user("carol").unwrap().unwrap().password_hash;
        assert_eq!(left, Some(imported), "upgrades turned off");

        let own = hash_password(b"pw2").unwrap();
        let bob = user(&v, "bob", Some(own.clone())).await;
        v.verify(&bob, "", b"pw2").await.unwrap();
        assert_eq!(stored("bob"), own);
        let upgraded = hash_password(b"pw2").unwrap();
        v.upgrade("bob", "an older hash", upgraded, b"pw2").await;
        assert_eq!(stored("bob"), own, "changed meanwhile: left alone");
    }

    /// Users sharing a hash (imported with one PHC string) each pay argon2 for a wrong
    /// password, as unknown names do: one's refusal answered at once for the other would
    /// show that the other exists.
    #[tokio::test]
    async fn a_user_sharing_a_hash_is_refused_no_sooner_than_an_unknown_name() {
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let (a, b) = sharing_a_hash(&v, b"initial").await;
        assert!(matches!(
            v.verify(&a, "", b"guess").await,
            Err(AuthError::BadPassword)
        ));
        v.refuse_without_hash("nobody1", b"guess").await;
        assert!(
            without_argon2(&v, v.refuse_without_hash("nobody2", b"guess"))
                .await
                .is_none(),
            "an unknown second name waits for argon2"
        );
        assert!(
            answer_without_argon2(&v, &b, b"guess").await.is_none(),
            "b waits for argon2 too"
        );
        assert!(matches!(
            answer_without_argon2(&v, &a, b"guess").await,
            Some(Err(AuthError::BadPassword))
        ));
    }

    /// The policy's reject of a name the store does not have waits for argon2 as a wrong
    /// password does.
    #[tokio::test]
    async fn the_policy_refuses_an_unknown_user_after_argon2() {
        use crate::policy::{Decision, Reason};
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let v = Arc::new(v);
        let policy = policy_over(&v.store, v.clone());
        assert!(
            without_argon2(&v, password_passes(&policy, "nobody", b"pw"))
                .await
                .is_none(),
            "waits for argon2"
        );
        assert_eq!(
            password_passes(&policy, "nobody", b"pw").await,
            Decision::Reject(Reason::UnknownUser)
        );
    }

    fn one_hash_at_a_time(ttl: Duration, capacity: u64) -> (tempfile::TempDir, LocalVerifier) {
        verifier(LocalAuthConfig {
            max_concurrent_hashes: 1,
            cache_ttl: ttl,
            cache_capacity: capacity,
            ..LocalAuthConfig::default()
        })
    }

    #[tokio::test]
    async fn a_verified_credential_is_kept_in_the_users_entry() {
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let hash = hash_password(b"pw").unwrap();
        let alice = user(&v, "alice", Some(hash.clone())).await;
        v.verify(&alice, "", b"pw").await.unwrap();
        v.forget("alice");
        assert!(
            matches!(answer_without_argon2(&v, &alice, b"pw").await, Some(Ok(()))),
            "served from the entry, the credential cache emptied"
        );
        assert!(
            answer_without_argon2(&v, &alice, b"other").await.is_none(),
            "another password is checked by argon2"
        );

        // The entry built again after a write starts empty; a hit in the credential cache
        // fills it.
        let rebuilt = user(&v, "alice", Some(hash.clone())).await;
        assert!(
            answer_without_argon2(&v, &rebuilt, b"pw").await.is_none(),
            "neither the new entry nor the cache knows it"
        );
        v.verify(&rebuilt, "", b"pw").await.unwrap();
        let again = user(&v, "alice", Some(hash)).await;
        assert!(matches!(
            answer_without_argon2(&v, &again, b"pw").await,
            Some(Ok(()))
        ));
        v.forget("alice");
        assert!(
            matches!(answer_without_argon2(&v, &again, b"pw").await, Some(Ok(()))),
            "copied into the entry from the cache"
        );
    }

    #[tokio::test]
    async fn the_entrys_credential_expires_and_obeys_a_disabled_cache() {
        let (_dir, mut v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let alice = user(&v, "alice", Some(hash_password(b"pw").unwrap())).await;
        v.verify(&alice, "", b"pw").await.unwrap();
        v.forget("alice");
        Arc::get_mut(&mut v.cache)
            .expect("no computation holds the cache")
            .age(Duration::from_secs(59));
        assert!(matches!(
            answer_without_argon2(&v, &alice, b"pw").await,
            Some(Ok(()))
        ));
        Arc::get_mut(&mut v.cache)
            .unwrap()
            .age(Duration::from_secs(2));
        assert!(
            answer_without_argon2(&v, &alice, b"pw").await.is_none(),
            "verified 61 s ago with a 60 s TTL"
        );

        for (ttl, capacity) in [(60, 0), (0, 100)] {
            let (_dir, v) = one_hash_at_a_time(Duration::from_secs(ttl), capacity);
            let alice = user(&v, "alice", Some(hash_password(b"pw").unwrap())).await;
            v.verify(&alice, "", b"pw").await.unwrap();
            assert!(
                answer_without_argon2(&v, &alice, b"pw").await.is_none(),
                "ttl {ttl} s, capacity {capacity}: nothing kept"
            );
        }
    }

    /// Polls `f` once.
    fn poll_once<F: std::future::Future>(
        mut f: std::pin::Pin<&mut F>,
    ) -> impl std::future::Future<Output = std::task::Poll<F::Output>> + '_ {
        std::future::poll_fn(move |cx| std::task::Poll::Ready(f.as_mut().poll(cx)))
    }

    /// A policy over `store` checking passwords with `v`.
    fn policy_over(store: &Store, v: Arc<LocalVerifier>) -> crate::policy::Policy {
        let ipam = Arc::new(crate::ipam::Ipam::new(store.clone(), &[], 0).unwrap());
        crate::policy::Policy::new(
            store.clone(),
            crate::auth::Source::Local(v),
            ipam,
            crate::notify::Notifier::disabled(),
        )
    }

    /// One gateway, at 127.0.0.1.
    fn gateway() -> crate::radius::nas::NasTable {
        crate::radius::nas::NasTable::new(&[crate::config::ClientConfig {
            name: "gw".into(),
            address: "127.0.0.1/32".parse().unwrap(),
            secret: crate::config::Secret::new("secret123"),
            require_message_authenticator: true,
            kind: crate::config::GatewayKind::Asa,
            pool: None,
        }])
    }

    /// The policy's decision on `user` with `password` from the gateway: past the password
    /// check unless it rejects for the password (the test users have no device).
    async fn password_passes(
        policy: &crate::policy::Policy,
        user: &str,
        password: &[u8],
    ) -> crate::policy::Decision {
        use crate::policy::{AccessRequest, Settings};
        let nas = gateway();
        let req = AccessRequest {
            user_name: user,
            password,
            avpairs: &[],
            nas: nas.lookup([127, 0, 0, 1].into()).unwrap(),
            now: 0,
            directory_deadline: None,
        };
        let settings = Settings::from_config(&crate::config::Config::default());
        policy.authorize(&req, &settings).await
    }

    /// b's right password while a's check (same PHC string, a's password changed) is under
    /// way: b's check is its own, not a's `Stale`.
    #[tokio::test]
    async fn another_users_stale_check_is_not_shared() {
        let (_dir, v) = one_hash_at_a_time(Duration::from_secs(60), 100);
        let (a_old, b) = sharing_a_hash(&v, b"init").await;
        let hash = hash_password(b"x").unwrap();
        v.store.set_user_password("a", hash).await.unwrap();
        // Both wait for the one argon2 permit, a first.
        let permit = v.hash_permits.clone().acquire_owned().await.unwrap();
        let mut fa = std::pin::pin!(v.verify(&a_old, "", b"init"));
        let mut fb = std::pin::pin!(v.verify(&b, "", b"init"));
        assert!(poll_once(fa.as_mut()).await.is_pending());
        assert!(poll_once(fb.as_mut()).await.is_pending());
        assert_eq!(v.inflight.lock().len(), 2, "one check each");
        drop(permit);
        let (ra, rb) = tokio::join!(fa, fb);
        assert!(matches!(ra, Err(AuthError::Stale)), "{ra:?}");
        assert!(rb.is_ok(), "b's password is right: {rb:?}");
    }

    /// A write commits, then drops the user's cached entry: a request in between finds the
    /// record newer than its entry, and its retry reads the store, not the cache.
    #[tokio::test]
    async fn the_retry_after_a_stale_check_reads_the_store() {
        use crate::policy::{Decision, Reason};
        let (_dir, v) = verifier(LocalAuthConfig::default());
        let v = Arc::new(v);
        user(&v, "b", Some(hash_password(b"old").unwrap())).await;
        let mut record = v.store.user("b").unwrap().unwrap();
        record.password_hash = Some(hash_password(b"new").unwrap());
        v.store.commit_user_without_invalidating(&record);
        let policy = policy_over(&v.store, v.clone());
        let r = password_passes(&policy, "b", b"new").await;
        for bad in [Reason::InternalError, Reason::BadPassword] {
            assert_ne!(r, Decision::Reject(bad), "the new password is right");
        }
        let r = password_passes(&policy, "b", b"old").await;
        assert_eq!(r, Decision::Reject(Reason::BadPassword));
    }
}

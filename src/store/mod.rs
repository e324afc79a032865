//! The only module that knows sled: typed records, tree names, key encoding, schema version.
//!
//! Records are JSON values under UTF-8 keys; every write a caller depends on is flushed before
//! the call returns, so nothing acknowledged is lost on a crash.

mod access;
mod cache;
mod codec;
mod devices;
mod leases;
mod outbox;
mod profiles;
mod users;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use access::{
    Access, AccessDevice, AddressHint, Device, DeviceFlags, HashFingerprint, Serial, Verified,
    VerifiedCredential,
};
pub use cache::PREFETCH_KEYS;
use codec::{decode, encode, Record};
pub use devices::{serial_key, AuthMethod, DeviceRecord, DeviceType, Registration};
pub use leases::{corrupt_lease_addr, LeaseRecord, MAX_SESSION_ID_LEN};
pub use profiles::{profile_key, DownloadRefusal, ProfileRecord};
pub use users::UserRecord;

/// Bumped when a record layout changes incompatibly; a newer store is refused, not misread.
/// 2: users, devices and leases may be stored compactly (`codec`); a schema-1 store is
/// marked 2 when opened, since its records are converted as they are written.
/// 3: leases have a `renewed` mark (a new compact format byte; older ones are read).
const SCHEMA_VERSION: u32 = 3;

const META_TREE: &str = "meta";
const USERS_TREE: &str = "users";
const DEVICES_TREE: &str = "devices";
/// Serial (upper-cased) → device name: a serial belongs to one device at most.
const SERIALS_TREE: &str = "serials";
/// Canonical MAC → device name.
const MACS_TREE: &str = "macs";
/// IPv4 address (4 octets) → lease.
const LEASES_TREE: &str = "leases";
/// Device name → the IPv4 address it had last.
const STICKY_TREE: &str = "sticky";
/// User NUL device → profile record.
const PROFILES_TREE: &str = "profiles";
/// Hex SHA-256 of a download token → profile key.
const PROFILE_TOKENS_TREE: &str = "profile_tokens";
/// Notification id (big-endian, in order) → a notification not mailed yet (`outbox`).
const OUTBOX_TREE: &str = "outbox";
const SCHEMA_KEY: &str = "schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store i/o: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key:?}: {source}")]
    Corrupt {
        key: String,
        source: codec::DecodeError,
    },
    #[error(
        "store schema version {found} is newer than this ravpnd understands ({SCHEMA_VERSION})"
    )]
    Schema { found: u32 },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// Handle to the embedded database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    devices: sled::Tree,
    serials: sled::Tree,
    macs: sled::Tree,
    leases: sled::Tree,
    sticky: sled::Tree,
    profiles: sled::Tree,
    profile_tokens: sled::Tree,
    outbox: sled::Tree,
    commit: Arc<GroupCommit>,
    /// The first flush failure, kept: see `failure`.
    failed: Arc<parking_lot::Mutex<Option<String>>>,
    cache: Arc<Caches>,
    /// Tests: lease writes and refreshes fail, as on a disk that filled up.
    #[cfg(test)]
    pub(crate) fail_lease_writes: Arc<std::sync::atomic::AtomicBool>,
}

/// Decoded entries for the request path (see `cache` and `access`); every write to `users` or
/// `devices` calls `Store::written` with the users whose entry it changed, after it commits.
/// The serial and MAC indexes are not cached: a request its device proves does not read them.
struct Caches {
    access: cache::RecordCache<Access>,
}

/// Users kept decoded (with their devices) by default: 100,000 fit (at 65,536 such a
/// directory ran at 0.71x the speed of 1,000 users; benches/scale.sh).
pub const DEFAULT_CACHE_RECORDS: usize = 262_144;

/// sled's page cache by default, in MiB. With the decoded entries holding the working set,
/// sled is off the steady-state read path, and its default (1 GiB, which it fills with every
/// page it has written or read) was most of the daemon's memory: 100,000 users primed took
/// 370 MiB with it, 270 MiB with 16 MiB, at the same speed; 1 MiB saved another 20-28 MiB,
/// with renewals, new leases and registration waves as fast as at 16 (docs/PERFORMANCE.md).
pub const DEFAULT_PAGE_CACHE_MIB: u64 = 1;

/// Group commit: concurrent callers needing durability share one flush instead of queueing
/// one each, so durable writes do not cap throughput.
#[derive(Default)]
struct GroupCommit {
    lock: tokio::sync::Mutex<()>,
    requested: AtomicU64,
    done: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store in directory `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_RECORDS, DEFAULT_PAGE_CACHE_MIB)
    }

    /// Opens the store keeping up to `cache_records` decoded records of each kind, with a
    /// sled page cache of `page_cache_mib`.
    pub fn open_with_cache(
        dir: &Path,
        cache_records: usize,
        page_cache_mib: u64,
    ) -> Result<Self, StoreError> {
        // The store holds password hashes and the admin token: a directory it creates is the
        // daemon user's alone, whatever the umask (an existing one keeps its mode).
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        }
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(page_cache_mib.saturating_mul(1 << 20))
            .open()?;
        let meta = db.open_tree(META_TREE)?;
        let found = meta.get(SCHEMA_KEY)?.map(|v| {
            v.as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX)
        });
        if let Some(found) = found.filter(|f| *f > SCHEMA_VERSION) {
            return Err(StoreError::Schema { found });
        }
        // A new store, or an older one (its records are converted as they are written).
        if found != Some(SCHEMA_VERSION) {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            db.flush()?;
        }
        Ok(Self {
            users: db.open_tree(USERS_TREE)?,
            devices: db.open_tree(DEVICES_TREE)?,
            serials: db.open_tree(SERIALS_TREE)?,
            macs: db.open_tree(MACS_TREE)?,
            leases: db.open_tree(LEASES_TREE)?,
            sticky: db.open_tree(STICKY_TREE)?,
            profiles: db.open_tree(PROFILES_TREE)?,
            profile_tokens: db.open_tree(PROFILE_TOKENS_TREE)?,
            outbox: db.open_tree(OUTBOX_TREE)?,
            commit: Arc::default(),
            failed: Arc::default(),
            #[cfg(test)]
            fail_lease_writes: Arc::default(),
            cache: Arc::new(Caches {
                access: cache::RecordCache::new(cache_records),
            }),
            db,
        })
    }

    /// Drops the decoded entries of the users a committed write changed: their own record,
    /// or a device they own or owned before the write.
    fn written<'a>(&self, users: impl IntoIterator<Item = &'a str>) {
        for name in users {
            self.cache.access.invalidate(name);
        }
    }

    /// Moves the page-table entries of pages sled paged out (one per page not in its cache)
    /// out of mostly empty allocator slabs, so that those slabs can go back to the system.
    /// Evictions allocate such entries among whatever else is allocated at the time: after a
    /// bulk import, its freed transaction left them in slabs otherwise empty (with 100,000
    /// users imported into a running daemon ~10 MiB of RSS until a restart). Entries in fuller
    /// slabs stay where they are. Returns how many were moved.
    pub fn compact_memory(&self) -> usize {
        // SAFETY: sled asks about its page-table entries' two allocations, live while it holds
        // its epoch guard, made by the process allocator (jemalloc, src/main.rs).
        self.db
            .compact_page_table(&mut |ptr| unsafe { crate::heap::in_sparse_slab(ptr) })
    }

    /// Makes every write this caller made so far durable, sharing the flush with
    /// concurrent callers.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let c = &self.commit;
        // Our writes are complete, so any flush that starts after this number is taken
        // covers them.
        let mine = c.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = c.lock.lock().await;
        if c.done.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let covered = c.requested.load(Ordering::SeqCst);
        if let Err(e) = self.db.flush_async().await {
            // sled keeps failing once its log could not be written (even after space is
            // freed): the store is unusable until a restart, and `/readyz` says so.
            self.failed.lock().get_or_insert_with(|| e.to_string());
            return Err(e.into());
        }
        c.done.store(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Why the store can no longer make writes durable (a flush failed), if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }
}

impl Store {
    /// One record of `tree`, decoded (not cached).
    fn read<T: Record>(&self, tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
        match tree.get(key.as_bytes())? {
            Some(v) => decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of `tree`, decoded, in key order.
    fn read_all<T: Record>(&self, tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

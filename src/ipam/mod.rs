//! Address pools and leases.
//!
//! Each pool keeps its free addresses as ranges ([`free::FreeSet`]) and its leases in memory
//! behind one mutex, so two live sessions can never get the same address. A new lease is
//! written durably (group commit) before the Accept goes out; a renewal by the device already
//! holding the lease only updates memory and a sled write that the periodic flush makes
//! durable. A device gets its previous address back when that address is free (sticky).

mod free;
mod leases;
mod stopped;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use parking_lot::{Mutex, RwLock};
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};

use crate::config::Problem;
use crate::metrics::METRICS;
use crate::store::{corrupt_lease_addr, Access, AddressHint, LeaseRecord, Store, StoreError};
use free::FreeSet;
use leases::{Grant, Leases, NewLease};
use stopped::RecentStops;

/// `[[pools]]`: one address pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// A name for `[[clients]] pool`, logs and metrics.
    pub name: String,
    /// IPv4 network in CIDR form; its network and broadcast addresses are never handed out.
    pub network: Ipv4Net,
    /// Addresses or networks inside `network` never to hand out (gateways, servers).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How long a lease lasts without accounting refreshing it.
    #[serde(with = "humantime_serde", default = "default_lease_time")]
    pub lease_time: Duration,
}

fn default_lease_time() -> Duration {
    Duration::from_secs(3600)
}

fn parse_exclude(s: &str) -> Option<Ipv4Net> {
    match s.parse::<IpNet>() {
        Ok(IpNet::V4(n)) => Some(n.trunc()),
        Ok(IpNet::V6(_)) => None,
        Err(_) => s.parse::<Ipv4Addr>().ok().map(Ipv4Net::from),
    }
}

impl PoolConfig {
    /// Host addresses minus exclusions.
    fn free_set(&self) -> FreeSet {
        let mut f = FreeSet::default();
        let net = self.network.trunc();
        let first = u32::from(net.network()).saturating_add(1);
        let last = u32::from(net.broadcast()).saturating_sub(1);
        f.insert_range(first, last);
        for n in self.exclude.iter().filter_map(|e| parse_exclude(e)) {
            for a in u32::from(n.network())..=u32::from(n.broadcast()) {
                f.take(a);
                if n.prefix_len() < 16 {
                    break; // validation refuses such exclusions; never loop over millions
                }
            }
        }
        f
    }

    pub fn validate_all(pools: &[PoolConfig]) -> Vec<Problem> {
        let mut p = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let key = |f: &str| format!("pools[{i}].{f}");
            if pool.name.trim().is_empty() {
                p.push(Problem {
                    key: key("name"),
                    why: "must not be empty".into(),
                });
            }
            if pools[..i].iter().any(|o| o.name == pool.name) {
                p.push(Problem {
                    key: key("name"),
                    why: format!("`{}` is used twice", pool.name),
                });
            }
            if pool.network.prefix_len() > 30 {
                p.push(Problem {
                    key: key("network"),
                    why: "must be /30 or larger (a /30 has 2 usable addresses)".into(),
                });
            }
            if let Some((j, o)) = pools[..i].iter().enumerate().find(|(_, o)| {
                o.network.contains(&pool.network.network())
                    || pool.network.contains(&o.network.network())
            }) {
                p.push(Problem {
                    key: key("network"),
                    why: format!("{} overlaps pools[{j}] ({})", pool.network, o.network),
                });
            }
            for (k, e) in pool.exclude.iter().enumerate() {
                match parse_exclude(e) {
                    None => p.push(Problem {
                        key: format!("pools[{i}].exclude[{k}]"),
                        why: format!("`{e}` is not an IPv4 address or network"),
                    }),
                    Some(n) if !pool.network.contains(&n.network()) || n.prefix_len() < 16 => p
                        .push(Problem {
                            key: format!("pools[{i}].exclude[{k}]"),
                            why: format!("`{e}` is not a /16-or-smaller part of {}", pool.network),
                        }),
                    Some(_) => {}
                }
            }
            if pool.lease_time < Duration::from_secs(1) {
                p.push(Problem {
                    key: key("lease_time"),
                    why: "must be at least 1s".into(),
                });
            }
            if pool.network.prefix_len() <= 30 && pool.free_set().is_empty() {
                p.push(Problem {
                    key: key("exclude"),
                    why: "leaves no address to hand out".into(),
                });
            }
        }
        p
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("address pool `{0}` exhausted")]
    Exhausted(String),
    #[error("no address pool named `{0}`")]
    UnknownPool(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the lease: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the first write of the lease of {0} failed")]
    GrantUndone(Ipv4Addr),
    #[error("the lease of {0} is being granted right now; try again")]
    BeingGranted(Ipv4Addr),
}

/// A lease handed to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// False when the device already held this lease (a renewal).
    pub new: bool,
}

struct PoolState {
    free: FreeSet,
    leases: Leases,
    /// Next-fit cursor.
    next: u32,
    /// Addresses whose lease record could not be read at start, and whether the pool hands
    /// them out (an excluded or network address is never freed): neither leased nor free
    /// (possibly still someone's) until an admin releases them.
    unreadable: Vec<(Ipv4Addr, bool)>,
}

struct Pool {
    config: PoolConfig,
    state: Mutex<PoolState>,
    size: u64,
    /// This pool's `ravpnd_pool_leased` and `ravpnd_sessions_active` (its
    /// `ravpnd_pool_addresses` is set once), looked up once. `publish` runs whenever the free
    /// set or the sessions may have changed, not on a renewal: both worker threads writing the
    /// gauges on every request would pass their cache lines back and forth for nothing.
    used_gauge: IntGauge,
    sessions_gauge: IntGauge,
    taken_back: prometheus::IntCounter,
    /// Woken whenever a new lease's write ends (durable, or undone): a renewal of a lease
    /// still pending waits for it.
    granted: tokio::sync::Notify,
}

impl Pool {
    fn publish(&self, st: &PoolState) {
        self.used_gauge.set((self.size - st.free.len()) as i64);
        self.sessions_gauge.set(st.leases.sessions() as i64);
    }

    /// Makes a new lease (written under the lock by `Ipam::lease`) durable, then no longer
    /// pending; undoes it if the flush fails. Nothing else removes a pending lease (sweeps
    /// and accounting leave it alone), so the lease at the address is still this one.
    async fn write_grant(&self, store: &Store, addr: Ipv4Addr) -> Result<(), IpamError> {
        let written = store.flush().await;
        {
            let mut st = self.state.lock();
            if written.is_err() {
                self.undo_new_lease(&mut st, store, addr);
            } else if let Some(l) = st.leases.get_mut(addr) {
                l.written();
            }
        }
        self.granted.notify_waiters();
        Ok(written?)
    }

    /// Waits until the first write of `device`'s lease at `addr` has ended; an error if it
    /// failed (the lease was undone, and must not be named in an Accept).
    async fn granted(&self, addr: Ipv4Addr, device: &str) -> Result<(), IpamError> {
        loop {
            let notified = self.granted.notified();
            tokio::pin!(notified);
            // Registered before the check, so a grant ending in between still wakes us.
            notified.as_mut().enable();
            match self.state.lock().leases.get(addr) {
                Some(l) if l.device() == device && !l.pending() => return Ok(()),
                Some(l) if l.device() == device => {}
                _ => return Err(IpamError::GrantUndone(addr)),
            }
            notified.await;
        }
    }

    /// Undoes a new lease that could not be made durable: its record goes, then (under the
    /// same lock, so no grant comes in between) its address is free again.
    fn undo_new_lease(&self, st: &mut PoolState, store: &Store, addr: Ipv4Addr) {
        st.leases.remove(addr);
        forget_leases(store, &[addr]);
        st.free.insert(u32::from(addr));
        self.publish(st);
    }

    /// Takes expired leases out of memory, but not yet back into the free set: see `release`.
    fn take_expired(&self, st: &mut PoolState, now: u64) -> Vec<Ipv4Addr> {
        let expired: Vec<Ipv4Addr> = st
            .leases
            .iter()
            .filter(|(_, l)| l.expires() <= now && !l.pending())
            .map(|(a, _)| a)
            .collect();
        for a in &expired {
            st.leases.remove(*a);
        }
        expired
    }

    /// Deletes the records of leases taken out of memory, then frees their addresses. The
    /// deletes run outside the pool's lock (100,000 of them took over a second under it),
    /// and nothing can grant an address that is neither leased nor free, so no new grant's
    /// record is deleted. In chunks, so that a full pool gets addresses back within
    /// milliseconds, not after the whole sweep.
    fn release(&self, store: &Store, addrs: &[Ipv4Addr]) {
        for chunk in addrs.chunks(RELEASE_CHUNK) {
            forget_leases(store, chunk);
            let mut st = self.state.lock();
            for a in chunk {
                st.free.insert(u32::from(*a));
            }
            self.publish(&st);
        }
    }
}

/// Leases whose records one batch deletes before their addresses are freed (~10 ms).
const RELEASE_CHUNK: usize = 1024;

/// Deletes the records of leases removed from memory, before their addresses are free again
/// (so a later grant of one is written after this and not deleted by it). A failure is
/// logged, not returned: a record left behind only keeps its address out of the free set
/// after a restart, until it expires — never hands it out twice.
fn forget_leases(store: &Store, addrs: &[Ipv4Addr]) {
    if let Err(e) = store.delete_leases(addrs) {
        tracing::warn!(error = %e, leases = addrs.len(), "could not delete ended leases from the store");
    }
}

/// All pools; cheap to share.
pub struct Ipam {
    store: Store,
    pools: RwLock<Vec<Arc<Pool>>>,
    /// The configured NAS clients' names (`set_clients`): a lease held through a name no
    /// longer configured (a client renamed) is adopted by the NAS whose accounting names it.
    /// Empty: not told, every name counts as configured.
    clients: RwLock<std::collections::HashSet<String>>,
    /// Sessions stopped moments ago: their late updates must not bring a lease back. Taken
    /// alone or under a pool's lock, never the other way round.
    stopped: Mutex<RecentStops>,
}

/// Who the lease is for.
pub struct LeaseRequest<'a> {
    pub pool: Option<&'a str>,
    pub holder: Holder<'a>,
    pub nas: &'a str,
    pub now: u64,
    /// Whether the device's lease may be renewed while a session is bound to it. Yes where
    /// the device proves itself (an ASA's AnyConnect device ID): a new Access-Request is that
    /// device reconnecting, and its old session's Stop follows. No where the gateway gives no
    /// device identity (ocserv): every login maps to the user's same device, so a second one
    /// may be another machine — it gets an address of its own, never a live session's.
    pub renew_bound: bool,
}

/// The device a lease is for.
#[derive(Clone, Copy)]
pub enum Holder<'a> {
    /// The `i`th device of a user's directory entry: its address hint finds its lease, and
    /// the grant the hint names is known to be this user's device's, since only requests for
    /// it ever set the hint (its names are the entry's, which never change).
    Entry(&'a Access, usize),
    /// A user's device by name alone: its lease is found by the device's name.
    Named { user: &'a str, device: &'a str },
}

impl<'a> Holder<'a> {
    /// The user's name, the device's, and the device's hint if it has one.
    fn parts(self) -> (&'a str, &'a str, Option<&'a AddressHint>) {
        match self {
            Holder::Entry(user, i) => {
                let device = user.device(i);
                (user.name(), device.name(), Some(device.address()))
            }
            Holder::Named { user, device } => (user, device, None),
        }
    }
}

/// Writes an accounting update's change of a lease; if that fails, the lease is marked as
/// not stored, so that its next renewal writes it (its expiry alone would not tell).
fn write_or_mark(
    store: &Store,
    st: &mut PoolState,
    record: &LeaseRecord,
) -> Result<(), StoreError> {
    let written = store.write_lease(record);
    if written.is_err() {
        if let Some(l) = st.leases.get_mut(record.addr) {
            l.set_unstored(true);
        }
    }
    written
}

/// What an Accounting-Request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcctStatus {
    Start,
    Interim,
    Stop,
    /// Accounting-On/Off: the NAS (re)started; its sessions are gone.
    NasRestart,
}

impl Ipam {
    /// Builds the pools and restores leases that have not expired.
    pub fn new(store: Store, pools: &[PoolConfig], now: u64) -> Result<Self, IpamError> {
        let ipam = Self {
            store,
            pools: RwLock::new(Vec::new()),
            clients: RwLock::default(),
            stopped: Mutex::new(RecentStops::new()),
        };
        ipam.install_pools(pools, now, true)?;
        Ok(ipam)
    }

    /// The configured NAS clients' names, at start and on every reload.
    pub fn set_clients<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        *self.clients.write() = names.into_iter().map(str::to_owned).collect();
    }

    /// Adds pools not known yet (config reload). A changed existing pool is refused.
    pub fn check_reload(&self, pools: &[PoolConfig]) -> Result<(), String> {
        let current = self.pools.read();
        for old in current.iter() {
            match pools.iter().find(|p| p.name == old.config.name) {
                None => {
                    return Err(format!(
                        "pool `{}` was removed: that needs a restart",
                        old.config.name
                    ))
                }
                Some(p) if *p != old.config => {
                    return Err(format!(
                        "pool `{}` was changed: that needs a restart",
                        old.config.name
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Makes the running pools `pools`, in their order (the first is the default, as after a
    /// restart): a pool already running is kept as it is (`check_reload` refuses changed or
    /// removed ones), a new one starts with its stored leases. All new pools are built before
    /// any is installed, so one whose leases cannot be read leaves the running set unchanged.
    pub fn add_pools(&self, pools: &[PoolConfig], now: u64) -> Result<(), IpamError> {
        self.install_pools(pools, now, false)
    }

    /// `add_pools`; at the start (`at_start`) an unreadable lease record keeps only its
    /// address out of use instead of stopping the daemon (a reload is refused instead: the
    /// running configuration stays).
    fn install_pools(
        &self,
        pools: &[PoolConfig],
        now: u64,
        at_start: bool,
    ) -> Result<(), IpamError> {
        let running: Vec<Arc<Pool>> = self.pools.read().clone();
        let mut next = Vec::with_capacity(pools.len());
        let mut added = Vec::new();
        for cfg in pools {
            match running.iter().find(|p| p.config.name == cfg.name) {
                Some(p) => next.push(p.clone()),
                None => {
                    let pool = Arc::new(self.restore(cfg, now, at_start)?);
                    added.push(pool.clone());
                    next.push(pool);
                }
            }
        }
        *self.pools.write() = next;
        for pool in added {
            METRICS
                .pool_size
                .with_label_values(&[&pool.config.name])
                .set(pool.size as i64);
            pool.publish(&pool.state.lock());
        }
        Ok(())
    }

    /// A new pool with the live leases stored in its range.
    fn restore(&self, cfg: &PoolConfig, now: u64, at_start: bool) -> Result<Pool, IpamError> {
        let free = cfg.free_set();
        let size = free.len();
        let mut state = PoolState {
            free,
            leases: Leases::default(),
            next: 0,
            unreadable: Vec::new(),
        };
        let net = cfg.network;
        for l in self.store.leases_in(net.network(), net.broadcast()) {
            let l = match l {
                Ok(l) => l,
                Err(e) => match at_start.then(|| corrupt_lease_addr(&e)).flatten() {
                    Some(addr) => {
                        // Possibly still someone's: never handed out, and said at each start.
                        let handed_out = state.free.take(u32::from(addr));
                        state.unreadable.push((addr, handed_out));
                        tracing::error!(%addr, error = %e, "unreadable lease record: its address is kept out of the pool until `ravpnd session release` frees it");
                        continue;
                    }
                    None => return Err(e.into()),
                },
            };
            if l.expires > now && state.free.take(u32::from(l.addr)) {
                state.leases.insert(
                    l.addr,
                    NewLease {
                        user: &l.user,
                        device: &l.device,
                        nas: &l.nas,
                        session_id: l.session_id.as_deref(),
                        granted: l.granted,
                        expires: l.expires,
                        pending: false,
                        renewed: l.renewed,
                    },
                );
            }
        }
        Ok(Pool {
            config: cfg.clone(),
            state: Mutex::new(state),
            size,
            used_gauge: METRICS.pool_used.with_label_values(&[&cfg.name]),
            sessions_gauge: METRICS.sessions.with_label_values(&[&cfg.name]),
            taken_back: METRICS.leases_taken_back.with_label_values(&[&cfg.name]),
            granted: tokio::sync::Notify::new(),
        })
    }

    fn pool(&self, name: Option<&str>) -> Result<Option<Arc<Pool>>, IpamError> {
        let pools = self.pools.read();
        match name {
            None => Ok(pools.first().cloned()),
            Some(n) => pools
                .iter()
                .find(|p| p.config.name == n)
                .cloned()
                .map(Some)
                .ok_or_else(|| IpamError::UnknownPool(n.to_owned())),
        }
    }

    /// Starts loading into the CPU's cache the leases that `user`'s devices' hints name, for
    /// `lease` to find soon (the password and device checks run meanwhile). Only a hint: a
    /// lock that is taken is not waited for (nor is a request that will be rejected slowed
    /// by another's long hold).
    pub fn prefetch_leases(&self, user: &Access) {
        let Some(pools) = self.pools.try_read() else {
            return;
        };
        for (addr, _) in user.devices().filter_map(|d| d.address().get()) {
            let pool = pools.iter().find(|p| p.config.network.contains(&addr));
            if let Some(st) = pool.and_then(|p| p.state.try_lock()) {
                st.leases.prefetch(addr);
            }
        }
    }

    /// Leases an address for a session: the device's own live lease, else its previous
    /// address if free, else the lowest free one. `Ok(None)` when no pools are configured.
    pub async fn lease(&self, req: &LeaseRequest<'_>) -> Result<Option<Allocation>, IpamError> {
        let Some(pool) = self.pool(req.pool)? else {
            return Ok(None);
        };
        let netmask = pool.config.network.netmask();
        let expires = req.now + pool.config.lease_time.as_secs().max(1);
        let (user, device, hint) = req.holder.parts();
        let hinted = hint.and_then(AddressHint::get);
        // The device's last address from the store, once a look under the lock has found no
        // lease to renew: read outside it (a read may wait for the disk), then look again.
        let mut last: Option<Option<Ipv4Addr>> = None;
        let (addr, new, pending, grant) = loop {
            let mut st = pool.state.lock();
            // Whether the lease at `a` is the device's to renew: the one its hint's `grant`
            // names (`Holder::Entry`), or one of its user and name — the user too: a device
            // name reassigned (or deleted and created again) for another user must not take
            // the old owner's live lease. The grant spares a renewal the names' cache line.
            let alive = |st: &PoolState, a: &Ipv4Addr, grant: Grant| {
                pool.config.network.contains(a)
                    && st.leases.get(*a).is_some_and(|l| {
                        l.expires() > req.now
                            && (req.renew_bound || l.session_id().is_none())
                            && (grant.names(l.grant())
                                || (l.device() == device && l.user() == user))
                    })
            };
            // A hint naming the device's live lease makes a renewal with one lookup; without
            // one (the device's first request since its entry was built, e.g. after a
            // restart), or a stale one, the device's leases here are found by its name.
            let renew = hinted
                .filter(|(a, g)| alive(&st, a, Grant::from_bits(*g)))
                .map(|(a, _)| a)
                .or_else(|| {
                    st.leases
                        .of_device(device)
                        .filter(|(a, _)| alive(&st, a, Grant::NONE))
                        .max_by_key(|(_, l)| l.granted())
                        .map(|(a, _)| a)
                });
            // A new lease: the address the device had last (in any pool), if free here.
            let own = match (renew, last) {
                (None, None) => {
                    drop(st);
                    last = Some(self.last_address(device));
                    continue;
                }
                (_, last) => last.flatten().filter(|a| pool.config.network.contains(a)),
            };
            let (addr, new) = if let Some(a) = renew {
                (a, false)
            } else if let Some(a) = own.filter(|a| st.free.take(u32::from(*a))) {
                (a, true)
            } else {
                let cursor = st.next;
                let mut next = st.free.take_from(cursor);
                if next.is_none() {
                    // Exhausted: expired leases are reclaimed now, under the lock (rare: a
                    // full pool; the periodic sweep does this outside it).
                    let expired = pool.take_expired(&mut st, req.now);
                    forget_leases(&self.store, &expired);
                    for a in &expired {
                        st.free.insert(u32::from(*a));
                    }
                    next = st.free.take_from(cursor);
                }
                if let Some(a) = next {
                    st.next = a.wrapping_add(1);
                }
                match next {
                    Some(a) => (Ipv4Addr::from(a), true),
                    None => {
                        pool.publish(&st);
                        return Err(IpamError::Exhausted(pool.config.name.clone()));
                    }
                }
            };
            if new {
                // Replaces any stale entry for an address just taken from the free set.
                st.leases.insert(
                    addr,
                    NewLease {
                        user,
                        device,
                        nas: req.nas,
                        session_id: None,
                        granted: req.now,
                        expires,
                        pending: true,
                        renewed: false,
                    },
                );
            }
            // A new lease was just inserted from this NAS, so it did not move.
            let (lease, moved_from) = st
                .leases
                .held_by(addr, req.nas)
                .expect("a renewal holds its lease; a new one was just inserted");
            let expires_before = lease.expires();
            // Stored only when it moves (once a second at most): a renewal then leaves the
            // lease's cache line unwritten for the other worker thread.
            if !new && expires > lease.expires() {
                lease.set_expires(expires);
            }
            // The device may be starting a new session on this address: a Stop for the one
            // bound now must not free it (see `account`), also after a restart — the mark is
            // written (once per session, not durably).
            let marked = !new && lease.mark_renewed() && lease.session_id().is_some();
            // A renewal is written only when its expiry passes a quarter-lease mark (counted
            // from the grant): the stored expiry, written at the last mark passed or later,
            // lags by less than a quarter lease, and in steady state a reconnecting device
            // costs no store write at all. A lease that moved to this NAS is written too.
            // Signed: a clock stepped back may have set an expiry before the grant.
            let quarter = {
                let from = i64::from(lease.granted());
                let slack = pool.config.lease_time.as_secs() / 4;
                let slack = i64::try_from(slack).unwrap_or(i64::MAX);
                move |t: u64| (t as i64 - from).div_euclid(slack.max(1))
            };
            // And a lease an accounting update could not write is written now.
            let unstored = lease.unstored();
            let write = marked
                || moved_from.is_some()
                || unstored
                || (!new && quarter(lease.expires()) > quarter(expires_before));
            if unstored {
                lease.set_unstored(false); // only then: a renewal leaves the line unwritten
            }
            // `held_by` made `req.nas` the lease's NAS. Written under the lock, so the store
            // sees this pool's changes in their order (a sweep's or Stop's delete of an
            // earlier lease here cannot land after it).
            let (pending, grant) = (lease.pending(), lease.grant());
            if new || write {
                let record = lease.record(addr, &pool.config.name, req.nas);
                let written = if new {
                    self.store.write_lease(&record)
                } else {
                    self.store.refresh_lease(&record)
                };
                if let Err(e) = written {
                    if new {
                        pool.undo_new_lease(&mut st, &self.store, addr);
                    } else {
                        // Not written, and the request fails: the lease is as it was (held
                        // through its NAS: that one's Stop still ends it), and the next
                        // renewal tries again.
                        if let Some(prev) = moved_from {
                            st.leases.held_by(addr, &prev);
                        }
                        if let Some(l) = st.leases.get_mut(addr) {
                            l.set_expires(expires_before);
                            l.set_unstored(unstored);
                            if marked {
                                l.clear_renewed();
                            }
                        }
                    }
                    return Err(e.into());
                }
            }
            if new {
                pool.publish(&st);
            }
            break (addr, new, pending, grant);
        };
        if hinted != Some((addr, grant.bits())) {
            if let Some(h) = hint {
                h.set(addr, grant.bits());
            }
        }
        if new {
            // A task of its own: a request given up on at its timeout drops this future, and
            // the grant must still end either durable and no longer pending (a pending lease
            // is never swept) or undone.
            let (store, pool) = (self.store.clone(), pool.clone());
            tokio::spawn(async move { pool.write_grant(&store, addr).await }).await??;
        } else if pending {
            // Renewal: nothing synchronous, and usually nothing at all (see `write`); a crash
            // loses at most a quarter lease of expiry. Only if the first grant is still being
            // written do we wait for it to end, so no Accept names a lease that is not
            // durable (or that its failed write undid).
            pool.granted(addr, device).await?;
        }
        Ok(Some(Allocation { addr, netmask, new }))
    }

    /// Applies an Accounting-Request to the lease it concerns. Returns whether a lease
    /// was found. `user`: the request's user as the store names them (empty if it named none).
    pub async fn account(
        &self,
        status: AcctStatus,
        session_id: &str,
        framed_ip: Option<Ipv4Addr>,
        user: &str,
        nas: &str,
        now: u64,
    ) -> Result<bool, IpamError> {
        let pools: Vec<Arc<Pool>> = self.pools.read().clone();
        if status == AcctStatus::NasRestart {
            // Updates still in flight from before the restart take nothing back.
            self.stopped.lock().record_restart(nas, now);
            return Ok(!self.release_nas(nas).await?.is_empty());
        }
        if status == AcctStatus::Stop && !session_id.is_empty() {
            self.stopped.lock().record(nas, session_id, now);
        }
        for pool in &pools {
            let change = {
                let mut st = pool.state.lock();
                let clients = self.clients.read();
                // This NAS's lease — or one held through a client name configured no more (a
                // client renamed) that this request is about: its session, or, not bound yet,
                // its user. Another NAS's leases are not this one's to refresh or end (it could
                // free their live addresses).
                let ours = |a: &Ipv4Addr| {
                    st.leases.get(*a).is_some_and(|l| {
                        let held_through = st.leases.nas_of(l);
                        held_through == nas
                            || (!clients.is_empty()
                                && !clients.contains(held_through)
                                && l.is_session(session_id, user) == Some(true))
                    })
                };
                let addr = framed_ip
                    .filter(|a| st.leases.contains(*a))
                    // Another NAS's session of the same id is not this one's; this NAS's own
                    // comes before one adopted from a renamed client.
                    .or_else(|| {
                        st.leases
                            .by_session(session_id)
                            .filter(|(a, _)| ours(a))
                            .min_by_key(|(_, l)| st.leases.nas_of(l) != nas)
                            .map(|(a, _)| a)
                    })
                    .or_else(|| {
                        // ocserv sends its Accounting-Start before the tunnel exists, without
                        // Framed-IP-Address: bind it to this user's newest unbound lease
                        // from the same NAS.
                        (status == AcctStatus::Start && !user.is_empty())
                            .then(|| st.leases.newest_unbound(user, nas))
                            .flatten()
                    });
                let Some(addr) = addr else { continue };
                let lease = st.leases.get(addr).expect("found above");
                if lease.pending() {
                    // Still being granted, so no Accept named it yet: the request concerns
                    // an earlier lease of the address (binding that session here would let
                    // its Stop free this one).
                    return Ok(false);
                }
                if !ours(&addr) {
                    return Ok(false);
                }
                if matches!(status, AcctStatus::Start | AcctStatus::Interim) {
                    // A late Start or Interim of a session stopped moments ago (its Stop
                    // unbound the lease: the device had reconnected) must not bind it again:
                    // a repeated Stop would then free the address the device uses.
                    let late = lease.session_id() != Some(session_id)
                        && self.stopped.lock().stopped(nas, session_id, now);
                    if late || !Self::may_bind(status, lease, session_id, user) {
                        tracing::debug!(%addr, session_id, user, "accounting about another session's lease ignored");
                        return Ok(false);
                    }
                }
                drop(clients);
                // Taken over from a renamed client, if it was held through one.
                st.leases.held_by(addr, nas);
                match status {
                    AcctStatus::Start | AcctStatus::Interim => {
                        let lease = st.leases.bind(addr, session_id).expect("found above");
                        lease.set_expires(now + pool.config.lease_time.as_secs().max(1));
                        let lease = st.leases.get(addr).expect("found above");
                        let record = lease.record(addr, &pool.config.name, st.leases.nas_of(lease));
                        pool.publish(&st);
                        Some((write_or_mark(&self.store, &mut st, &record), false))
                    }
                    AcctStatus::Stop => {
                        let lease = st.leases.get(addr).expect("found above");
                        // Not this lease's session: an older session of this address, or a
                        // session of another user (the lease not bound yet). (Doubt keeps the
                        // lease until it expires: never an address held twice.)
                        if lease.is_session(session_id, user) == Some(false) {
                            None
                        } else if lease.renewed() {
                            // The device was accepted again since this session began (a
                            // reconnect whose Start may follow this Stop): the address stays
                            // its own, unbound, until that session binds it or it expires.
                            st.leases.unbind(addr).then(|| {
                                let lease = st.leases.get(addr).expect("found above");
                                let record =
                                    lease.record(addr, &pool.config.name, st.leases.nas_of(lease));
                                pool.publish(&st);
                                (write_or_mark(&self.store, &mut st, &record), false)
                            })
                        } else {
                            st.leases.remove(addr).expect("present");
                            st.free.insert(u32::from(addr));
                            pool.publish(&st);
                            Some((self.store.delete_leases(&[addr]), true))
                        }
                    }
                    AcctStatus::NasRestart => unreachable!("handled above"),
                }
            };
            // Written under the lock (see `Ipam::lease`); a Start and a release are durable
            // before the response, an Interim is a refresh.
            let Some((written, released)) = change else {
                return Ok(false);
            };
            written?;
            if released || status == AcctStatus::Start {
                self.store.flush().await?;
            }
            return Ok(true);
        }
        match (status, framed_ip) {
            (AcctStatus::Start | AcctStatus::Interim, Some(addr)) if !session_id.is_empty() => {
                self.readopt(status, addr, session_id, user, nas, now).await
            }
            _ => Ok(false),
        }
    }

    /// Whether a Start or Interim-Update of `session_id` for `user` (empty: not named) may
    /// bind `lease` and refresh it. An Interim only for the lease's own session (or, none
    /// bound yet, its user's): a late update of a session a reconnect replaced must not take
    /// the lease back, or that session's Stop would free the new one's address. A Start may
    /// bind a new session (a reconnect on the same lease), but only the lease's user's.
    fn may_bind(status: AcctStatus, lease: &leases::Lease, session_id: &str, user: &str) -> bool {
        match status {
            AcctStatus::Interim => lease.is_session(session_id, user) != Some(false),
            _ => user.is_empty() || lease.user() == user,
        }
    }

    /// A Start or Interim-Update naming a pool address no lease holds: the lease expired
    /// while the session went on (ravpnd was down longer than `lease_time`, or the gateway's
    /// updates did not arrive). The address is taken back for the session — if it is still
    /// free — so it is not handed to a second client. Not for a session stopped moments ago
    /// (a late update overtaken by its Stop). Returns whether a lease was made.
    async fn readopt(
        &self,
        status: AcctStatus,
        addr: Ipv4Addr,
        session_id: &str,
        user: &str,
        nas: &str,
        now: u64,
    ) -> Result<bool, IpamError> {
        let pool = self
            .pools
            .read()
            .iter()
            .find(|p| p.config.network.contains(&addr))
            .cloned();
        let Some(pool) = pool else {
            return Ok(false);
        };
        let free = |st: &PoolState| !st.leases.contains(addr) && st.free.contains(u32::from(addr));
        // An Interim from a NAS that restarted moments ago may be of a session from before
        // (a Start after it is a new session's).
        let late = |stopped: &RecentStops| {
            stopped.stopped(nas, session_id, now)
                || status == AcctStatus::Interim && stopped.restarted(nas, now)
        };
        // Cheap refusals first: an address leased or never handed out (an excluded gateway's,
        // say) costs no store read.
        if !free(&pool.state.lock()) || late(&self.stopped.lock()) {
            return Ok(false);
        }
        // Only for the user's device that had the address last (as the store says): then
        // its reconnect renews this lease, and a NAS cannot reserve addresses no device of
        // the named user held (any free address of any pool, under made-up sessions).
        let Some(device) = self.device_that_had(addr, user) else {
            tracing::debug!(%addr, user, nas, session_id, "accounting names a free address no device of the user had last: not taken");
            return Ok(false);
        };
        let written = {
            let mut st = pool.state.lock();
            // Checked again under the lock: a grant, or the session's Stop (it records itself
            // before it looks for the lease), may have come in between.
            if !free(&st) || late(&self.stopped.lock()) {
                return Ok(false);
            }
            st.free.take(u32::from(addr));
            st.leases.insert(
                addr,
                NewLease {
                    user,
                    device: &device,
                    nas,
                    session_id: Some(session_id),
                    granted: now,
                    expires: now + pool.config.lease_time.as_secs().max(1),
                    pending: false,
                    renewed: false,
                },
            );
            let lease = st.leases.get(addr).expect("just inserted");
            let written = self
                .store
                .write_lease(&lease.record(addr, &pool.config.name, nas));
            match &written {
                Err(_) => pool.undo_new_lease(&mut st, &self.store, addr),
                Ok(()) => pool.publish(&st),
            }
            written
        };
        written?;
        self.store.flush().await?;
        pool.taken_back.inc();
        tracing::info!(
            %addr,
            user,
            device,
            nas,
            session_id,
            "lease taken back for a live session that held none (its lease expired or was released)"
        );
        Ok(true)
    }

    /// The address `device` had last (any pool), from the store; `None` when unreadable
    /// (logged: it is only a preference).
    fn last_address(&self, device: &str) -> Option<Ipv4Addr> {
        self.store.sticky_address(device).unwrap_or_else(|e| {
            tracing::warn!(error = %e, device, "reading the device's last address");
            None
        })
    }

    /// Which of `user`'s devices had `addr` last, if any.
    fn device_that_had(&self, addr: Ipv4Addr, user: &str) -> Option<String> {
        let entry = match self.store.access(user) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, user, "reading the user for a lease taken back");
                return None;
            }
        };
        // Bound first: the iterator borrows `entry`, which a tail expression would outlive.
        let device = entry
            .devices()
            .find(|d| self.last_address(d.name()) == Some(addr))
            .map(|d| d.name().to_owned());
        device
    }

    /// Ends every lease held through `nas` (its sessions are gone: Accounting-On/Off, or an
    /// admin for a gateway that sends neither) and frees the addresses, durably. Returns
    /// them. A lease still pending was granted for a request being answered now, after the
    /// restart: it stays.
    pub async fn release_nas(&self, nas: &str) -> Result<Vec<LeaseRecord>, IpamError> {
        let pools: Vec<Arc<Pool>> = self.pools.read().clone();
        let mut released = Vec::new();
        for pool in &pools {
            let (gone, leases): (Vec<Ipv4Addr>, Vec<leases::Lease>) = {
                let mut st = pool.state.lock();
                // Rare: a scan, not an index.
                let mut gone = st.leases.held_through(nas);
                gone.retain(|a| st.leases.get(*a).is_some_and(|l| !l.pending()));
                let leases = gone
                    .iter()
                    .map(|a| st.leases.remove(*a).expect("found above"))
                    .collect();
                (gone, leases)
            };
            pool.release(&self.store, &gone);
            // Outside the lock: up to one record per address of the pool.
            released.extend(
                gone.iter()
                    .zip(&leases)
                    .map(|(a, l)| l.record(*a, &pool.config.name, nas)),
            );
        }
        // Nothing released, nothing to make durable (a NAS restart of a gateway with no
        // leases is common, and each flush is a disk sync).
        if !released.is_empty() {
            self.store.flush().await?;
        }
        released.sort_by_key(|l| l.addr);
        Ok(released)
    }

    /// Ends the lease of `addr` and frees the address, durably (an admin's release of a
    /// session the gateway will not report ended). `Ok(None)`: no lease there. An address
    /// kept out for an unreadable lease record is freed too (its record deleted), answered
    /// as a lease of no one.
    pub async fn release_address(&self, addr: Ipv4Addr) -> Result<Option<LeaseRecord>, IpamError> {
        let pools: Vec<Arc<Pool>> = self.pools.read().clone();
        for pool in &pools {
            let (record, handed_out) = {
                let mut st = pool.state.lock();
                match st.leases.get(addr) {
                    Some(l) if l.pending() => return Err(IpamError::BeingGranted(addr)),
                    Some(l) => {
                        let record = l.record(addr, &pool.config.name, st.leases.nas_of(l));
                        st.leases.remove(addr);
                        (record, true)
                    }
                    None => {
                        let Some(i) = st.unreadable.iter().position(|(a, _)| *a == addr) else {
                            continue;
                        };
                        let (_, handed_out) = st.unreadable.swap_remove(i);
                        tracing::warn!(%addr, "unreadable lease record removed");
                        let record = LeaseRecord {
                            addr,
                            pool: pool.config.name.clone(),
                            user: String::new(),
                            device: String::new(),
                            nas: String::new(),
                            session_id: None,
                            granted: 0,
                            expires: 0,
                            renewed: false,
                        };
                        (record, handed_out)
                    }
                }
            };
            if handed_out {
                pool.release(&self.store, &[addr]);
            } else {
                forget_leases(&self.store, &[addr]);
            }
            self.store.flush().await?;
            return Ok(Some(record));
        }
        Ok(None)
    }

    /// Frees expired leases in every pool; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let pools: Vec<Arc<Pool>> = self.pools.read().clone();
        let mut n = 0;
        for pool in pools {
            let expired = pool.take_expired(&mut pool.state.lock(), now);
            pool.release(&self.store, &expired);
            n += expired.len();
        }
        n
    }

    /// Live leases (sessions), ordered by address.
    pub fn sessions(&self) -> Vec<LeaseRecord> {
        let mut out: Vec<LeaseRecord> = self
            .pools
            .read()
            .iter()
            .flat_map(|p| {
                let st = p.state.lock();
                st.leases
                    .iter()
                    .map(|(a, l)| l.record(a, &p.config.name, st.leases.nas_of(l)))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|l| l.addr);
        out
    }

    /// The shortest lease time, to pace the expiry sweep.
    pub fn shortest_lease(&self) -> Option<Duration> {
        self.pools.read().iter().map(|p| p.config.lease_time).min()
    }
}

#[cfg(test)]
mod tests;

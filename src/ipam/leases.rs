//! One pool's leases in memory, found by address, by device, by accounting session, and
//! (while no session is bound yet) by user.
//!
//! Accounting-Requests without Framed-IP-Address (ocserv's Accounting-Start among them) name
//! their lease by Acct-Session-Id or only by user: with 100,000 leases a scan for those took
//! milliseconds under the pool's lock, so both are indexed. Every change to a lease's user or
//! session goes through this table, which keeps the indexes in step.
//!
//! Sized for 100,000 sessions: a lease is a 32-byte slot holding its own address (its names
//! in one allocation behind a thin pointer, times in 32-bit seconds, its grant's number, the
//! NAS as a number, the states four bits beside the session id's length; a map from address
//! to a 40-byte lease took 48, and a `Box<str>` for the names 40), and the indexes hold
//! addresses alone, hashed by the device, session id or user they are found by, compared
//! against the lease itself (with boxed-string keys the two by session and user held 5 MiB at
//! 100,000 leases; now 0.6).

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::store::LeaseRecord;

/// A lease in memory: its record without the pool (the table's owner); the NAS is a number
/// in the table's list of NAS names.
pub(super) struct Lease {
    /// The device's name, the user's, then the session's id if one is bound: one allocation
    /// for the three (the id in a box of its own cost 16 bytes a slot and an allocation), owned
    /// as a `Box<[u8]>` of valid UTF-8 whose length is the three lengths below (a `Box<str>`
    /// would keep that length again: 8 bytes a slot, 1 MiB at 100,000 leases).
    names: NonNull<u8>,
    /// Its address, the table's key.
    addr: Ipv4Addr,
    /// Seconds since the Unix epoch (saturating: past 2106 a time reads as 2106).
    granted: u32,
    expires: u32,
    /// Which grant this is (`Grant`): what a device's address hint names, so that a renewal
    /// through the hint finds its own lease without reading the names.
    grant: Grant,
    /// The device's name's length: at most 64 bytes through the admin API; an entry refuses a
    /// device over 65,535 bytes, and a stored lease with a longer name reads as corrupt
    /// (`LeaseRecord::decode`), as one with a longer user name does.
    device_len: u16,
    /// The user's name's length: their entry's name (cut below 64 KiB, `Access::with_devices`;
    /// the admin API takes 253 bytes), and a stored lease with a longer one reads as corrupt.
    user_len: u16,
    nas: u16,
    /// The bound session id's length in the low 12 bits (one Acct-Session-Id attribute: at
    /// most 759 bytes; a stored lease with a longer one reads as corrupt), then the flags
    /// `BOUND`, `PENDING`, `RENEWED` and `UNSTORED`.
    state: u16,
}

// SAFETY: a lease owns its names' bytes as a `Box<[u8]>` would (no other pointer to them; they
// change only through `&mut self`), and a `Box<[u8]>` is `Send` and `Sync`.
unsafe impl Send for Lease {}
// SAFETY: as above.
unsafe impl Sync for Lease {}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: `names` came from `Lease::names` with this length, and is dropped once.
        unsafe { free_names(self.names, self.names_len()) }
    }
}

/// `Lease::state`'s session id length: 12 bits, the stored records' limit.
const SESSION_LEN: u16 = (1 << 12) - 1;
const _: () = assert!(SESSION_LEN as usize == crate::store::MAX_SESSION_ID_LEN);
/// A session is bound (its id may be empty).
const BOUND: u16 = 1 << 12;
/// The durable write of a new lease is still under way.
const PENDING: u16 = 1 << 13;
/// The device was accepted again on this lease (an Access-Request renewal) since a session
/// was last bound to it: a Stop for that session does not end the lease.
const RENEWED: u16 = 1 << 14;
/// A write of this lease failed (an accounting update's): the store holds an older state, and
/// the next renewal writes it.
const UNSTORED: u16 = 1 << 15;

/// Frees names allocated by `Lease::names`.
///
/// # Safety
/// `names` came from `Lease::names` with `len` bytes, and is not used again.
unsafe fn free_names(names: NonNull<u8>, len: usize) {
    // SAFETY: the caller's promise: this is the `Box<[u8]>` `Lease::names` let go of.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(names.as_ptr(), len)) });
}

/// A time as a lease keeps it.
fn secs(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// A grant's number, unique in the process: leases are numbered as they enter a table (a
/// restart numbers them afresh, when every hint starts empty). After 2^32 − 2 grants every
/// lease gets `Grant::SHARED`, which names no lease: renewals through hints then compare
/// names, as they do for a hint without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant(u32);

impl Grant {
    /// No grant (an empty hint's).
    pub const NONE: Grant = Grant(0);
    /// Numbers ran out: this lease is not told apart from others by its number.
    const SHARED: Grant = Grant(u32::MAX);

    fn next() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        Self::take(&NEXT)
    }

    /// The number `next` holds, counting it on until `SHARED`.
    fn take(next: &AtomicU32) -> Self {
        let taken = next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < Self::SHARED.0).then(|| n + 1)
        });
        Grant(taken.unwrap_or(Self::SHARED.0))
    }

    /// Whether this names one lease alone: `other` then is that lease's grant.
    pub fn names(self, other: Grant) -> bool {
        self == other && self != Self::NONE && self != Self::SHARED
    }

    pub(super) fn from_bits(bits: u32) -> Self {
        Grant(bits)
    }

    pub fn bits(self) -> u32 {
        self.0
    }
}

impl Lease {
    /// The names of a lease of `device` for `user`, bound to `session_id` if any, and their
    /// lengths (`device_len`, `user_len`, `state`'s session id length).
    fn names(device: &str, user: &str, session_id: Option<&str>) -> (NonNull<u8>, u16, u16, u16) {
        let session = session_id.unwrap_or("");
        let len = |s: &str| u16::try_from(s.len()).ok();
        let (Some(device_len), Some(user_len), Some(session_len)) = (
            len(device),
            len(user),
            len(session).filter(|l| *l <= SESSION_LEN),
        ) else {
            panic!("entries, attributes and stored leases refuse longer names");
        };
        let bytes: Box<[u8]> = [device, user, session].concat().into_bytes().into();
        let names = NonNull::new(Box::into_raw(bytes).cast::<u8>()).expect("a box is not null");
        (names, device_len, user_len, session_len)
    }

    fn names_len(&self) -> usize {
        usize::from(self.device_len)
            + usize::from(self.user_len)
            + usize::from(self.state & SESSION_LEN)
    }

    /// The device's name, the user's and the session id, in one.
    fn all_names(&self) -> &str {
        // SAFETY: `names` holds `names_len()` bytes of UTF-8 (`Lease::names`), owned by this
        // lease and changed only through `&mut self`.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.names.as_ptr(),
                self.names_len(),
            ))
        }
    }

    fn flag(&self, flag: u16) -> bool {
        self.state & flag != 0
    }

    fn set_flag(&mut self, flag: u16, on: bool) {
        debug_assert_eq!(flag & SESSION_LEN, 0, "a flag on the session id's length");
        if on {
            self.state |= flag;
        } else {
            self.state &= !flag;
        }
    }

    /// Binds the lease to `session_id`, or unbinds it.
    fn set_session(&mut self, session_id: Option<&str>) {
        let (names, _, _, session_len) = Self::names(self.device(), self.user(), session_id);
        // SAFETY: the old names, with their length, are replaced right after.
        unsafe { free_names(self.names, self.names_len()) };
        self.names = names;
        self.state = (self.state & !SESSION_LEN) | session_len;
        self.set_flag(BOUND, session_id.is_some());
    }

    /// The durable write of a new lease is still under way.
    pub fn pending(&self) -> bool {
        self.flag(PENDING)
    }

    /// Its first write ended.
    pub fn written(&mut self) {
        self.set_flag(PENDING, false);
    }

    pub fn user(&self) -> &str {
        let device = usize::from(self.device_len);
        &self.all_names()[device..device + usize::from(self.user_len)]
    }

    pub fn device(&self) -> &str {
        &self.all_names()[..usize::from(self.device_len)]
    }

    /// When it was granted (seconds, as `secs` keeps them).
    pub fn granted(&self) -> u32 {
        self.granted
    }

    pub fn session_id(&self) -> Option<&str> {
        let before = usize::from(self.device_len) + usize::from(self.user_len);
        self.flag(BOUND).then(|| &self.all_names()[before..])
    }

    pub fn expires(&self) -> u64 {
        self.expires.into()
    }

    pub fn set_expires(&mut self, at: u64) {
        self.expires = secs(at);
    }

    /// Its grant's number.
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// Whether accounting for `session_id` of `user` (empty: not named) is about this lease:
    /// `Some(true)` its session (none bound yet: its user), `Some(false)` another session,
    /// `None` unknown (no session bound and no user named).
    pub fn is_session(&self, session_id: &str, user: &str) -> Option<bool> {
        match self.session_id() {
            Some(s) => Some(s == session_id),
            None if user.is_empty() => None,
            None => Some(self.user() == user),
        }
    }

    pub fn renewed(&self) -> bool {
        self.flag(RENEWED)
    }

    /// Records an Access-Request renewal (written once: a renewal otherwise leaves the
    /// lease's cache line to the other worker thread). Returns whether the mark is new.
    pub fn mark_renewed(&mut self) -> bool {
        if self.renewed() {
            return false;
        }
        self.set_flag(RENEWED, true);
        true
    }

    /// Whether the store holds an older state of this lease than memory (a write failed).
    pub fn unstored(&self) -> bool {
        self.flag(UNSTORED)
    }

    /// Records whether the last write of this lease failed.
    pub fn set_unstored(&mut self, unstored: bool) {
        self.set_flag(UNSTORED, unstored);
    }

    /// Undoes `mark_renewed` (its write failed: the next renewal marks and writes again).
    pub fn clear_renewed(&mut self) {
        self.set_flag(RENEWED, false);
    }

    /// The lease's record, held through `nas` (its NAS name: [`Leases::nas_of`]).
    pub fn record(&self, addr: Ipv4Addr, pool: &str, nas: &str) -> LeaseRecord {
        LeaseRecord {
            addr,
            pool: pool.to_owned(),
            user: self.user().to_owned(),
            device: self.device().to_owned(),
            nas: nas.to_owned(),
            session_id: self.session_id().map(str::to_owned),
            granted: self.granted.into(),
            expires: self.expires.into(),
            renewed: self.renewed(),
        }
    }
}

/// The fields of a new lease.
pub(super) struct NewLease<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub nas: &'a str,
    pub session_id: Option<&'a str>,
    pub granted: u64,
    pub expires: u64,
    pub pending: bool,
    pub renewed: bool,
}

/// The leases by address: a table of the leases themselves, each holding its address (a
/// map from address to lease pads every slot to 48 bytes). Fx: the pool chose the addresses.
#[derive(Default)]
struct ByAddr(HashTable<Lease>);

impl ByAddr {
    fn hash(addr: Ipv4Addr) -> u64 {
        FxBuildHasher.hash_one(addr)
    }

    fn get(&self, addr: &Ipv4Addr) -> Option<&Lease> {
        self.0.find(Self::hash(*addr), |l| l.addr == *addr)
    }

    /// Asks the CPU for the lease of `addr` without waiting for it (or comparing addresses).
    fn prefetch(&self, addr: Ipv4Addr) {
        self.0
            .iter_hash(Self::hash(addr))
            .for_each(crate::prefetch::value);
    }

    fn get_mut(&mut self, addr: &Ipv4Addr) -> Option<&mut Lease> {
        self.0.find_mut(Self::hash(*addr), |l| l.addr == *addr)
    }

    fn contains_key(&self, addr: &Ipv4Addr) -> bool {
        self.get(addr).is_some()
    }

    /// Adds `lease`, whose address has none.
    fn insert_new(&mut self, lease: Lease) {
        debug_assert!(!self.contains_key(&lease.addr));
        self.0
            .insert_unique(Self::hash(lease.addr), lease, |l| Self::hash(l.addr));
    }

    fn remove(&mut self, addr: &Ipv4Addr) -> Option<Lease> {
        let found = self.0.find_entry(Self::hash(*addr), |l| l.addr == *addr);
        found.ok().map(|e| e.remove().0)
    }

    fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.0.iter()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Default)]
pub(super) struct Leases {
    by_addr: ByAddr,
    by_session: AddrIndex<BySession>,
    /// Leases no session is bound to yet, by user.
    unbound: AddrIndex<Unbound>,
    /// Every lease, by device: a request from a device whose entry has no address hint (its
    /// first since a restart) finds its lease without a copy of every device's last address.
    by_device: AddrIndex<ByDevice>,
    nas: NasNames,
}

impl Leases {
    pub fn get(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.by_addr.get(&addr)
    }

    /// Starts loading the lease of `addr` into the CPU's cache.
    pub fn prefetch(&self, addr: Ipv4Addr) {
        self.by_addr.prefetch(addr);
    }

    /// The lease of `addr`, to change its expiry or state (its user and session only
    /// change through this table).
    pub fn get_mut(&mut self, addr: Ipv4Addr) -> Option<&mut Lease> {
        self.by_addr.get_mut(&addr)
    }

    /// The name of the NAS `lease` is held through.
    pub fn nas_of(&self, lease: &Lease) -> &str {
        self.nas.name(lease.nas)
    }

    /// Leases an accounting session is bound to.
    pub fn sessions(&self) -> usize {
        self.by_session.len()
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Lease)> {
        self.by_addr.iter().map(|l| (l.addr, l))
    }

    /// The addresses of the leases held through `nas`.
    pub fn held_through(&self, nas: &str) -> Vec<Ipv4Addr> {
        let Some(id) = self.nas.find(nas) else {
            return Vec::new();
        };
        self.iter()
            .filter(|(_, l)| l.nas == id)
            .map(|(a, _)| a)
            .collect()
    }

    /// Adds the lease of `addr`, replacing any it had.
    pub fn insert(&mut self, addr: Ipv4Addr, new: NewLease<'_>) {
        self.remove(addr);
        // The NAS first: nothing is allocated yet if its table were full.
        let nas = self.nas.intern(new.nas);
        let (names, device_len, user_len, session_len) =
            Lease::names(new.device, new.user, new.session_id);
        let mut lease = Lease {
            names,
            addr,
            granted: secs(new.granted),
            expires: secs(new.expires),
            grant: Grant::next(),
            device_len,
            user_len,
            nas,
            state: session_len,
        };
        lease.set_flag(BOUND, new.session_id.is_some());
        lease.set_flag(PENDING, new.pending);
        lease.set_flag(RENEWED, new.renewed);
        self.by_addr.insert_new(lease);
        self.by_device.add(hash(new.device), addr, &self.by_addr);
        match new.session_id {
            Some(s) => self.by_session.set(s, addr, &self.by_addr),
            None => self.unbound.add(hash(new.user), addr, &self.by_addr),
        }
    }

    pub fn remove(&mut self, addr: Ipv4Addr) -> Option<Lease> {
        let lease = self.by_addr.remove(&addr)?;
        self.by_device.forget(lease.device(), addr);
        match lease.session_id() {
            Some(s) => self.by_session.forget(s, addr),
            None => self.unbound.forget(lease.user(), addr),
        }
        Some(lease)
    }

    /// Binds the lease of `addr` to an accounting session (a later one replaces it), and
    /// hands it back.
    pub fn bind(&mut self, addr: Ipv4Addr, session_id: &str) -> Option<&mut Lease> {
        let lease = self.by_addr.get_mut(&addr)?;
        if lease.session_id() != Some(session_id) {
            // The new names before the indexes change (a session id too long to keep is a
            // bug that panics, and should leave the lease indexed as it was).
            let (was_bound, old) = match lease.session_id() {
                Some(old) => (true, hash(old)),
                None => (false, hash(lease.user())),
            };
            lease.set_session(Some(session_id));
            lease.clear_renewed();
            if was_bound {
                self.by_session.forget_hashed(old, addr);
            } else {
                self.unbound.forget_hashed(old, addr);
            }
            self.by_session.set(session_id, addr, &self.by_addr);
        }
        self.by_addr.get_mut(&addr)
    }

    /// Unbinds the lease of `addr` from its session: it is found by its user again, as before
    /// its Start. Returns whether a session was bound.
    pub fn unbind(&mut self, addr: Ipv4Addr) -> bool {
        let Some(lease) = self.by_addr.get_mut(&addr) else {
            return false;
        };
        let Some(old) = lease.session_id() else {
            return false;
        };
        self.by_session.forget(old, addr);
        let user = hash(lease.user());
        lease.set_session(None);
        self.unbound.add(user, addr, &self.by_addr);
        true
    }

    /// The leases bound to sessions of this id: at most one per NAS, the last bound there
    /// (gateways number their sessions independently, so two may use the same id).
    pub fn by_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> impl Iterator<Item = (Ipv4Addr, &'a Lease)> + 'a {
        self.by_session.find(session_id, &self.by_addr)
    }

    /// The leases of `device`.
    pub fn of_device<'a>(
        &'a self,
        device: &'a str,
    ) -> impl Iterator<Item = (Ipv4Addr, &'a Lease)> + 'a {
        self.by_device.find(device, &self.by_addr)
    }

    /// The user's newest lease from this NAS with no session bound yet.
    pub fn newest_unbound(&self, user: &str, nas: &str) -> Option<Ipv4Addr> {
        let nas = self.nas.find(nas)?;
        self.unbound
            .find(user, &self.by_addr)
            .filter(|(_, l)| l.nas == nas)
            .max_by_key(|(_, l)| l.granted)
            .map(|(a, _)| a)
    }

    /// The lease of `addr`, now held through `nas` (a renewal), and the NAS it was held
    /// through before if that is another (to move it back if the renewal fails): one lookup on
    /// the renewal path.
    pub fn held_by(&mut self, addr: Ipv4Addr, nas: &str) -> Option<(&mut Lease, Option<Arc<str>>)> {
        let lease = self.by_addr.get_mut(&addr)?;
        let before = &self.nas.names[lease.nas as usize];
        let moved = (**before != *nas).then(|| before.clone());
        if moved.is_some() {
            lease.nas = self.nas.intern(nas);
            // Its session is indexed per NAS: filed again under the new one (rare: a
            // gateway moved or renamed).
            if let Some(s) = lease.session_id().map(str::to_owned) {
                self.by_session.forget(&s, addr);
                self.by_session.set(&s, addr, &self.by_addr);
            }
        }
        Some((self.by_addr.get_mut(&addr)?, moved))
    }
}

/// The NAS names leases are held through: a handful (the configured clients), each kept
/// once and named by its position.
#[derive(Default)]
struct NasNames {
    names: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, u16>,
}

impl NasNames {
    fn find(&self, nas: &str) -> Option<u16> {
        self.ids.get(nas).copied()
    }

    /// A name's number. Names come from the configured clients (and the leases stored
    /// through them), so a table of 65,536 would take that many clients renamed.
    fn intern(&mut self, nas: &str) -> u16 {
        if let Some(id) = self.find(nas) {
            return id;
        }
        let id = u16::try_from(self.names.len()).expect("fewer than 65,536 NAS names");
        let name: Arc<str> = nas.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: u16) -> &str {
        &self.names[id as usize]
    }
}

/// What an index finds leases by.
trait IndexKey {
    /// The string `lease` is indexed under, if it is indexed at all.
    fn of(lease: &Lease) -> Option<&str>;
}

/// Bound leases by their session id.
struct BySession;

impl IndexKey for BySession {
    fn of(lease: &Lease) -> Option<&str> {
        lease.session_id()
    }
}

/// Unbound leases by their user.
struct Unbound;

impl IndexKey for Unbound {
    fn of(lease: &Lease) -> Option<&str> {
        (!lease.flag(BOUND)).then(|| lease.user())
    }
}

/// Leases by their device.
struct ByDevice;

impl IndexKey for ByDevice {
    fn of(lease: &Lease) -> Option<&str> {
        Some(lease.device())
    }
}

/// Addresses hashed by a string of their lease (`K`), which the lease itself holds: four
/// bytes a slot instead of a copy of the string. Consistent while every address in it has a
/// lease indexed under the string it was added with; `Leases` keeps it so.
struct AddrIndex<K> {
    table: HashTable<Ipv4Addr>,
    key: std::marker::PhantomData<K>,
}

impl<K> Default for AddrIndex<K> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            key: std::marker::PhantomData,
        }
    }
}

fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl<K: IndexKey> AddrIndex<K> {
    fn len(&self) -> usize {
        self.table.len()
    }

    /// The addresses indexed under `key`, with their leases.
    fn find<'a>(
        &'a self,
        key: &'a str,
        leases: &'a ByAddr,
    ) -> impl Iterator<Item = (Ipv4Addr, &'a Lease)> + 'a {
        self.table.iter_hash(hash(key)).filter_map(move |a| {
            let lease = leases.get(a)?;
            (K::of(lease) == Some(key)).then_some((*a, lease))
        })
    }

    /// Adds `addr`, whose lease (in `leases`) is indexed under the string hashed to `h`.
    fn add(&mut self, h: u64, addr: Ipv4Addr, leases: &ByAddr) {
        // Growing rehashes the others by their own leases' strings. (Never missing: 0 only
        // keeps the table usable if the invariant were ever broken.)
        self.table
            .insert_unique(h, addr, |a| leases.get(a).and_then(K::of).map_or(0, hash));
    }

    /// Makes `addr` (whose lease is now indexed under `key`) the one address under `key`
    /// held through its lease's NAS, taking the slot of any other (a session id reused).
    fn set(&mut self, key: &str, addr: Ipv4Addr, leases: &ByAddr) {
        let h = hash(key);
        let nas = leases.get(&addr).map(|l| l.nas);
        match self.table.find_mut(h, |a| {
            leases
                .get(a)
                .is_some_and(|l| K::of(l) == Some(key) && Some(l.nas) == nas)
        }) {
            Some(slot) => *slot = addr,
            None => self.add(h, addr, leases),
        }
    }

    /// Drops `addr` from under `key`, if it is there.
    fn forget(&mut self, key: &str, addr: Ipv4Addr) {
        self.forget_hashed(hash(key), addr);
    }

    /// Drops `addr` from under the key hashed to `h`, if it is there (found by the address
    /// alone: its lease may be indexed under another key by now).
    fn forget_hashed(&mut self, h: u64, addr: Ipv4Addr) {
        if let Ok(e) = self.table.find_entry(h, |a| *a == addr) {
            e.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease<'a>(user: &'a str, nas: &'a str, session: Option<&'a str>, at: u64) -> NewLease<'a> {
        NewLease {
            user,
            device: "d",
            nas,
            session_id: session,
            granted: at,
            expires: at + 60,
            pending: false,
            renewed: false,
        }
    }

    fn addr(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, i)
    }

    /// The addresses bound to sessions of this id, in order.
    fn bound(t: &Leases, session_id: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<_> = t.by_session(session_id).map(|(a, _)| a).collect();
        v.sort();
        v
    }

    /// Device, user and bound session share one allocation; each reads back whole through
    /// binds and unbinds (an empty session id is bound all the same).
    #[test]
    fn a_lease_keeps_its_names_through_binds() {
        let mut t = Leases::default();
        t.insert(
            addr(1),
            NewLease {
                device: "dev",
                ..lease("alice", "gw1", None, 10)
            },
        );
        let names = |t: &Leases, a| {
            let l: &Lease = t.get(a).unwrap();
            let r = l.record(a, "p", "gw1");
            assert_eq!(
                (r.device.as_str(), r.user.as_str(), r.session_id.as_deref()),
                (l.device(), l.user(), l.session_id())
            );
            (r.device, r.user, r.session_id)
        };
        let (dev, alice) = ("dev".to_owned(), "alice".to_owned());
        assert_eq!(names(&t, addr(1)), (dev.clone(), alice.clone(), None));
        t.bind(addr(1), "S-1");
        assert_eq!(
            names(&t, addr(1)),
            (dev.clone(), alice.clone(), Some("S-1".into()))
        );
        t.bind(addr(1), "");
        assert_eq!(
            names(&t, addr(1)),
            (dev.clone(), alice.clone(), Some(String::new()))
        );
        assert_eq!(
            (t.newest_unbound("alice", "gw1"), bound(&t, "")),
            (None, vec![addr(1)])
        );
        assert!(t.unbind(addr(1)));
        assert_eq!(names(&t, addr(1)), (dev, alice, None));
        assert_eq!(t.newest_unbound("alice", "gw1"), Some(addr(1)));
        t.insert(
            addr(2),
            NewLease {
                device: "d2",
                ..lease("bob", "gw1", Some("S-2"), 10)
            },
        );
        assert_eq!(
            names(&t, addr(2)),
            ("d2".into(), "bob".into(), Some("S-2".into()))
        );
    }

    /// The longest names a lease keeps read back whole, beside every flag: the session id's
    /// length and the flags share 16 bits, and neither a bind nor a flag's change may touch
    /// the other's bits. Empty names (an allocation of no bytes) too.
    #[test]
    fn longest_and_empty_names_read_back_beside_the_flags() {
        let (device, user) = ("d".repeat(65_535), "u".repeat(65_535));
        let longest = "s".repeat(crate::store::MAX_SESSION_ID_LEN);
        // Every other length bit set.
        let alternate = "a".repeat(0xAAA);
        let mut t = Leases::default();
        let check = |t: &Leases, session: Option<&str>, flags: [bool; 3]| {
            let l = t.get(addr(1)).unwrap();
            assert_eq!(
                (l.device(), l.user(), l.session_id()),
                (device.as_str(), user.as_str(), session)
            );
            assert_eq!([l.pending(), l.renewed(), l.unstored()], flags);
        };
        t.insert(
            addr(1),
            NewLease {
                device: &device,
                pending: true,
                renewed: true,
                ..lease(&user, "gw1", Some(&longest), 10)
            },
        );
        t.get_mut(addr(1)).unwrap().set_unstored(true);
        check(&t, Some(&longest), [true, true, true]);
        assert!(t.unbind(addr(1)));
        check(&t, None, [true, true, true]);
        // A bind clears only the renewal mark.
        t.bind(addr(1), &alternate);
        check(&t, Some(&alternate), [true, false, true]);
        let l = t.get_mut(addr(1)).unwrap();
        l.written();
        assert!(l.mark_renewed());
        l.set_unstored(false);
        check(&t, Some(&alternate), [false, true, false]);
        t.bind(addr(1), &longest);
        check(&t, Some(&longest), [false, false, false]);
        t.get_mut(addr(1)).unwrap().set_unstored(true);
        check(&t, Some(&longest), [false, false, true]);
        assert_eq!(bound(&t, &longest), vec![addr(1)]);
        assert!(bound(&t, &alternate).is_empty());

        t.insert(
            addr(2),
            NewLease {
                device: "",
                ..lease("", "gw1", None, 10)
            },
        );
        let l = t.get(addr(2)).unwrap();
        assert_eq!((l.device(), l.user(), l.session_id()), ("", "", None));
        t.bind(addr(2), "");
        assert_eq!(t.get(addr(2)).unwrap().session_id(), Some(""));
        assert!(t.remove(addr(2)).is_some() && t.remove(addr(1)).is_some());
    }

    /// A session id past what a lease keeps is refused where leases come from (records,
    /// attributes), so here it is a bug, not a truncation: it panics, and leaves the lease as
    /// it was, names and indexes.
    #[test]
    fn a_session_id_past_12_bits_is_a_bug_that_changes_nothing() {
        let session = "s".repeat(crate::store::MAX_SESSION_ID_LEN + 1);
        let mut t = Leases::default();
        t.insert(addr(1), lease("alice", "gw1", None, 10));
        let bind = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.bind(addr(1), &session);
        }));
        assert!(bind.is_err());
        assert_eq!(t.newest_unbound("alice", "gw1"), Some(addr(1)));
        assert_eq!(t.get(addr(1)).unwrap().session_id(), None);
        t.bind(addr(1), "S-1");
        t.bind(addr(1), &"x".repeat(crate::store::MAX_SESSION_ID_LEN));
        let bind = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.bind(addr(1), &session);
        }));
        assert!(bind.is_err());
        let kept = "x".repeat(crate::store::MAX_SESSION_ID_LEN);
        assert_eq!(bound(&t, &kept), vec![addr(1)]);
        assert_eq!(t.get(addr(1)).unwrap().session_id(), Some(kept.as_str()));
    }

    /// The device index follows inserts, replacements and removals, whatever the session.
    #[test]
    fn leases_are_found_by_device() {
        let mut t = Leases::default();
        let of = |t: &Leases, d| {
            let mut v: Vec<_> = t.of_device(d).map(|(a, _)| a).collect();
            v.sort();
            v
        };
        let on = |device, session| NewLease {
            device,
            ..lease("alice", "gw1", session, 10)
        };
        t.insert(addr(1), on("d1", None));
        t.insert(addr(2), on("d1", Some("S2")));
        t.insert(addr(3), on("d2", None));
        assert_eq!(
            (of(&t, "d1"), of(&t, "d2")),
            (vec![addr(1), addr(2)], vec![addr(3)])
        );
        t.bind(addr(1), "S1");
        t.insert(addr(2), on("d2", None));
        assert_eq!(
            (of(&t, "d1"), of(&t, "d2")),
            (vec![addr(1)], vec![addr(2), addr(3)])
        );
        t.remove(addr(1));
        t.remove(addr(3));
        assert_eq!((of(&t, "d1"), of(&t, "d2")), (vec![], vec![addr(2)]));
        assert!(of(&t, "d3").is_empty());
    }

    /// The indexes follow every change: insert, bind, rebind, replace, remove.
    #[test]
    fn indexes_follow_every_change() {
        let mut t = Leases::default();
        t.insert(addr(1), lease("alice", "gw1", None, 10));
        t.insert(addr(2), lease("alice", "gw1", None, 20));
        t.insert(addr(3), lease("alice", "gw2", None, 30));
        t.insert(addr(4), lease("bob", "gw1", Some("S4"), 40));
        assert_eq!(t.newest_unbound("alice", "gw1"), Some(addr(2)));
        assert_eq!(t.newest_unbound("alice", "gw2"), Some(addr(3)));
        assert_eq!(t.newest_unbound("bob", "gw1"), None, "bound");
        assert_eq!(bound(&t, "S4"), [addr(4)]);

        t.bind(addr(2), "S2");
        assert_eq!(t.newest_unbound("alice", "gw1"), Some(addr(1)));
        assert_eq!(bound(&t, "S2"), [addr(2)]);
        t.bind(addr(2), "S2b");
        assert_eq!((bound(&t, "S2"), bound(&t, "S2b")), (vec![], vec![addr(2)]));

        // A session id reused on another address of the same NAS: the index follows the
        // newest binding, and removing the older lease leaves it alone. Another NAS's session
        // of the same id is its own.
        t.bind(addr(1), "S4");
        assert_eq!(bound(&t, "S4"), [addr(1)]);
        t.bind(addr(3), "S4");
        assert_eq!(bound(&t, "S4"), [addr(1), addr(3)]);
        t.held_by(addr(3), "gw1");
        assert_eq!(bound(&t, "S4"), [addr(3)], "moved to gw1: the newer there");
        t.held_by(addr(1), "gw2");
        t.bind(addr(1), "S4");
        assert_eq!(bound(&t, "S4"), [addr(1), addr(3)]);
        t.remove(addr(4));
        assert_eq!(bound(&t, "S4"), [addr(1), addr(3)]);
        t.unbind(addr(3));
        t.unbind(addr(1));
        assert!(bound(&t, "S4").is_empty());
        t.held_by(addr(1), "gw1");

        // Replacing a lease drops the old one's entries.
        t.insert(addr(3), lease("carol", "gw2", None, 50));
        assert_eq!(t.newest_unbound("alice", "gw2"), None);
        assert_eq!(t.newest_unbound("carol", "gw2"), Some(addr(3)));
        t.remove(addr(3));
        t.remove(addr(1));
        t.remove(addr(2));
        assert!(t.by_addr.is_empty() && t.by_session.len() == 0 && t.unbound.len() == 0);
    }

    /// Numbers are taken in turn up to the last but one; then every lease shares the last,
    /// which, like none, names no lease.
    #[test]
    fn grants_are_numbered_until_the_numbers_run_out() {
        let next = AtomicU32::new(u32::MAX - 2);
        let taken: Vec<_> = (0..4).map(|_| Grant::take(&next)).collect();
        assert_eq!(
            taken,
            [
                Grant(u32::MAX - 2),
                Grant(u32::MAX - 1),
                Grant::SHARED,
                Grant::SHARED
            ]
        );
        assert!(taken[1].names(Grant(u32::MAX - 1)));
        assert!(!taken[1].names(taken[0]));
        assert!(!Grant::SHARED.names(Grant::SHARED));
        assert!(!Grant::NONE.names(Grant::NONE));
        let (mut t, a, b) = (Leases::default(), addr(1), addr(2));
        t.insert(a, lease("a", "gw", None, 1));
        t.insert(b, lease("b", "gw", None, 1));
        assert_ne!(t.get(a).unwrap().grant(), t.get(b).unwrap().grant());
        let before = t.get(a).unwrap().grant();
        t.insert(a, lease("a", "gw", None, 2));
        assert_ne!(
            t.get(a).unwrap().grant(),
            before,
            "a new lease, a new number"
        );
    }

    /// What 100,000 sessions cost: a slot of the address table is a lease, its address
    /// included (a map from address to lease took 48 bytes a slot, boxed names 40).
    #[test]
    fn a_lease_stays_compact() {
        fn slot<T>(_: &HashTable<T>) -> usize {
            std::mem::size_of::<T>()
        }
        assert_eq!(slot(&Leases::default().by_addr.0), 32);
    }

    #[test]
    fn nas_names_are_shared_and_changes_reported() {
        let mut t = Leases::default();
        t.insert(addr(1), lease("a", "gw1", None, 1));
        t.insert(addr(2), lease("b", "gw1", None, 1));
        assert_eq!(t.get(addr(1)).unwrap().nas, t.get(addr(2)).unwrap().nas);
        assert_eq!(t.nas.names.len(), 1, "one copy of the name");
        assert!(t.held_by(addr(1), "gw1").unwrap().1.is_none());
        assert_eq!(t.held_by(addr(1), "gw2").unwrap().1.as_deref(), Some("gw1"));
        assert_eq!(t.nas_of(t.get(addr(1)).unwrap()), "gw2");
        assert_eq!(t.held_through("gw1"), vec![addr(2)]);
        assert!(t.held_through("gw3").is_empty());
        assert!(t.held_by(addr(9), "gw2").is_none(), "no such lease");
    }

    /// The indexes answer as maps keyed by copies of the strings did (the code before them,
    /// kept here as the model), through random inserts, binds, rebinds, unbinds, moves and removals
    /// and the tables' growth.
    #[test]
    fn indexes_answer_as_the_string_keyed_maps_did() {
        use std::collections::HashMap;
        #[derive(Default)]
        struct Model {
            leases: HashMap<Ipv4Addr, (String, String, Option<String>, u64)>,
            /// By session id and NAS.
            by_session: HashMap<(String, String), Ipv4Addr>,
            unbound: HashMap<String, Vec<Ipv4Addr>>,
        }
        impl Model {
            fn remove(&mut self, a: Ipv4Addr) {
                if let Some((user, nas, session, _)) = self.leases.remove(&a) {
                    match session {
                        Some(s) if self.by_session.get(&(s.clone(), nas.clone())) == Some(&a) => {
                            self.by_session.remove(&(s, nas));
                        }
                        Some(_) => {}
                        None => self.unbound.get_mut(&user).unwrap().retain(|x| *x != a),
                    }
                }
            }
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut t, mut m) = (Leases::default(), Model::default());
        let ip = |i: u64| Ipv4Addr::from(0x0a00_0000 + i as u32);
        for step in 0..30_000u64 {
            let a = ip(next(2_000));
            let (user, nas, session) = (
                format!("user{}", next(40)),
                format!("gw{}", next(3)),
                format!("S{}", next(60)),
            );
            match next(10) {
                0..=4 => {
                    let session = (next(4) == 0).then_some(session.as_str());
                    t.insert(
                        a,
                        NewLease {
                            user: &user,
                            device: "dev",
                            nas: &nas,
                            session_id: session,
                            granted: step,
                            expires: step + 60,
                            pending: false,
                            renewed: false,
                        },
                    );
                    m.remove(a);
                    let session = session.map(str::to_owned);
                    match &session {
                        Some(s) => {
                            m.by_session.insert((s.clone(), nas.clone()), a);
                        }
                        None => m.unbound.entry(user.clone()).or_default().push(a),
                    }
                    m.leases.insert(a, (user, nas, session, step));
                }
                5..=6 => {
                    assert_eq!(t.bind(a, &session).is_some(), m.leases.contains_key(&a));
                    if let Some(l) = m.leases.get_mut(&a) {
                        if l.2.as_deref() != Some(session.as_str()) {
                            match l.2.replace(session.clone()) {
                                Some(old) => {
                                    let key = (old, l.1.clone());
                                    if m.by_session.get(&key) == Some(&a) {
                                        m.by_session.remove(&key);
                                    }
                                }
                                None => m.unbound.get_mut(&l.0).unwrap().retain(|x| *x != a),
                            }
                            m.by_session.insert((session, l.1.clone()), a);
                        }
                    }
                }
                7 if next(2) == 0 => {
                    let had = m.leases.get(&a).and_then(|l| l.2.clone());
                    assert_eq!(t.unbind(a), had.is_some());
                    if let Some(s) = had {
                        let key = (s, m.leases[&a].1.clone());
                        if m.by_session.get(&key) == Some(&a) {
                            m.by_session.remove(&key);
                        }
                        let l = m.leases.get_mut(&a).unwrap();
                        l.2 = None;
                        m.unbound.entry(l.0.clone()).or_default().push(a);
                    }
                }
                7 => {
                    if let Some((l, moved)) = t.held_by(a, &nas) {
                        let moved = moved.is_some();
                        assert_eq!(l.device(), "dev");
                        let l = m.leases.get_mut(&a).unwrap();
                        assert_eq!(moved, l.1 != nas);
                        if let Some(s) = l.2.clone().filter(|_| moved) {
                            let key = (s.clone(), l.1.clone());
                            if m.by_session.get(&key) == Some(&a) {
                                m.by_session.remove(&key);
                            }
                            m.by_session.insert((s, nas.clone()), a);
                        }
                        l.1 = nas;
                    }
                }
                _ => {
                    assert_eq!(t.remove(a).is_some(), m.leases.contains_key(&a));
                    m.remove(a);
                }
            }
            if step % 97 == 0 || step > 29_900 {
                assert_eq!(t.sessions(), m.by_session.len(), "step {step}");
                for s in 0..60 {
                    let s = format!("S{s}");
                    let mut expected: Vec<_> = (m.by_session.iter())
                        .filter(|((id, _), _)| *id == s)
                        .map(|(_, a)| *a)
                        .collect();
                    expected.sort();
                    assert_eq!(bound(&t, &s), expected, "{s} step {step}");
                }
                for u in 0..40 {
                    let u = format!("user{u}");
                    for n in 0..3 {
                        let n = format!("gw{n}");
                        let expected = m.unbound.get(&u).and_then(|addrs| {
                            addrs
                                .iter()
                                .filter(|a| m.leases[a].1 == n)
                                .max_by_key(|a| m.leases[a].3)
                                .copied()
                        });
                        assert_eq!(t.newest_unbound(&u, &n), expected, "{u} {n} step {step}");
                    }
                }
                for (a, l) in t.iter() {
                    let (user, nas, session, granted) = &m.leases[&a];
                    assert_eq!(
                        (
                            l.user(),
                            t.nas_of(l),
                            l.session_id(),
                            l.record(a, "p", "n").granted
                        ),
                        (user.as_str(), nas.as_str(), session.as_deref(), *granted)
                    );
                }
                assert_eq!(t.by_addr.len(), m.leases.len());
            }
        }
    }
}

//! One pool's leases in memory, found by address, by accounting session, and (while no
//! session is bound yet) by user.
//!
//! Accounting-Requests without Framed-IP-Address (ocserv's Accounting-Start among them) name
//! their lease by Acct-Session-Id or only by user: with 100,000 leases a scan for those took
//! milliseconds under the pool's lock, so both are indexed. Every change to a lease's user or
//! session goes through this table, which keeps the indexes in step.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::store::LeaseRecord;

/// A lease in memory: its record without the address (the table's key) and the pool (the
/// table's owner), the NAS name shared by all of that NAS's leases. About half the memory of
/// a `LeaseRecord` each, which counts at 100,000 sessions.
pub(super) struct Lease {
    user: Box<str>,
    pub device: Box<str>,
    nas: Arc<str>,
    session_id: Option<Box<str>>,
    pub granted: u64,
    pub expires: u64,
    /// The expiry last written to the store; renewals write only when memory is well ahead.
    pub stored_expires: u64,
    /// The durable write of a new lease is still under way.
    pub pending: bool,
}

impl Lease {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn nas(&self) -> &str {
        &self.nas
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    pub fn record(&self, addr: Ipv4Addr, pool: &str) -> LeaseRecord {
        LeaseRecord {
            addr,
            pool: pool.to_owned(),
            user: self.user().to_owned(),
            device: self.device.as_ref().to_owned(),
            nas: self.nas().to_owned(),
            session_id: self.session_id().map(str::to_owned),
            granted: self.granted,
            expires: self.expires,
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
}

#[derive(Default)]
pub(super) struct Leases {
    /// Fx: the keys are addresses the pool chose, or sessions and users it recorded.
    by_addr: FxHashMap<Ipv4Addr, Lease>,
    by_session: FxHashMap<Box<str>, Ipv4Addr>,
    /// User → their leases no session is bound to yet.
    unbound: FxHashMap<Box<str>, Vec<Ipv4Addr>>,
    /// The NAS names the leases share (a handful: the configured clients).
    nas_names: FxHashSet<Arc<str>>,
}

impl Leases {
    pub fn get(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.by_addr.get(&addr)
    }

    /// The lease of `addr`, to change its expiry or state (its user and session only
    /// change through this table).
    pub fn get_mut(&mut self, addr: Ipv4Addr) -> Option<&mut Lease> {
        self.by_addr.get_mut(&addr)
    }

    /// Leases an accounting session is bound to.
    pub fn sessions(&self) -> usize {
        self.by_session.len()
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Lease)> {
        self.by_addr.iter().map(|(a, l)| (*a, l))
    }

    /// Adds the lease of `addr`, replacing any it had.
    pub fn insert(&mut self, addr: Ipv4Addr, new: NewLease<'_>) {
        self.remove(addr);
        let lease = Lease {
            user: new.user.into(),
            device: new.device.into(),
            nas: intern(&mut self.nas_names, new.nas),
            session_id: new.session_id.map(Into::into),
            granted: new.granted,
            expires: new.expires,
            stored_expires: new.expires,
            pending: new.pending,
        };
        match new.session_id {
            Some(s) => {
                self.by_session.insert(s.into(), addr);
            }
            None => self.unbound.entry(new.user.into()).or_default().push(addr),
        }
        self.by_addr.insert(addr, lease);
    }

    pub fn remove(&mut self, addr: Ipv4Addr) -> Option<Lease> {
        let lease = self.by_addr.remove(&addr)?;
        match lease.session_id() {
            Some(s) => forget_session(&mut self.by_session, s, addr),
            None => forget_unbound(&mut self.unbound, lease.user(), addr),
        }
        Some(lease)
    }

    /// Binds the lease of `addr` to an accounting session (a later one replaces it), and
    /// hands it back.
    pub fn bind(&mut self, addr: Ipv4Addr, session_id: &str) -> Option<&mut Lease> {
        let lease = self.by_addr.get_mut(&addr)?;
        if lease.session_id() != Some(session_id) {
            match lease.session_id.replace(session_id.into()) {
                Some(old) => forget_session(&mut self.by_session, &old, addr),
                None => forget_unbound(&mut self.unbound, &lease.user, addr),
            }
            self.by_session.insert(session_id.into(), addr);
        }
        Some(lease)
    }

    /// The address whose lease the session was last bound to.
    pub fn by_session(&self, session_id: &str) -> Option<Ipv4Addr> {
        self.by_session.get(session_id).copied()
    }

    /// The user's newest lease from this NAS with no session bound yet.
    pub fn newest_unbound(&self, user: &str, nas: &str) -> Option<Ipv4Addr> {
        self.unbound
            .get(user)?
            .iter()
            .filter_map(|a| Some((*a, self.by_addr.get(a)?)))
            .filter(|(_, l)| l.nas() == nas)
            .max_by_key(|(_, l)| l.granted)
            .map(|(a, _)| a)
    }

    /// The lease of `addr`, now held through `nas` (a renewal), and whether that NAS is a
    /// different one than before: one lookup on the renewal path.
    pub fn held_by(&mut self, addr: Ipv4Addr, nas: &str) -> Option<(&mut Lease, bool)> {
        let lease = self.by_addr.get_mut(&addr)?;
        let moved = lease.nas() != nas;
        if moved {
            lease.nas = intern(&mut self.nas_names, nas);
        }
        Some((lease, moved))
    }
}

/// The shared copy of a NAS name.
fn intern(names: &mut FxHashSet<Arc<str>>, nas: &str) -> Arc<str> {
    if let Some(n) = names.get(nas) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(nas);
    names.insert(n.clone());
    n
}

/// Drops the session's entry if it still names `addr` (a reused session id may have moved).
fn forget_session(
    by_session: &mut FxHashMap<Box<str>, Ipv4Addr>,
    session_id: &str,
    addr: Ipv4Addr,
) {
    if by_session.get(session_id) == Some(&addr) {
        by_session.remove(session_id);
    }
}

fn forget_unbound(unbound: &mut FxHashMap<Box<str>, Vec<Ipv4Addr>>, user: &str, addr: Ipv4Addr) {
    if let Some(addrs) = unbound.get_mut(user) {
        addrs.retain(|a| *a != addr);
        if addrs.is_empty() {
            unbound.remove(user);
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
        }
    }

    fn addr(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, i)
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
        assert_eq!(t.by_session("S4"), Some(addr(4)));

        t.bind(addr(2), "S2");
        assert_eq!(t.newest_unbound("alice", "gw1"), Some(addr(1)));
        assert_eq!(t.by_session("S2"), Some(addr(2)));
        t.bind(addr(2), "S2b");
        assert_eq!(
            (t.by_session("S2"), t.by_session("S2b")),
            (None, Some(addr(2)))
        );

        // A session id reused on another address: the index follows the newest binding, and
        // removing the older lease leaves it alone.
        t.bind(addr(1), "S4");
        assert_eq!(t.by_session("S4"), Some(addr(1)));
        t.remove(addr(4));
        assert_eq!(t.by_session("S4"), Some(addr(1)));

        // Replacing a lease drops the old one's entries.
        t.insert(addr(3), lease("carol", "gw2", None, 50));
        assert_eq!(t.newest_unbound("alice", "gw2"), None);
        assert_eq!(t.newest_unbound("carol", "gw2"), Some(addr(3)));
        t.remove(addr(3));
        t.remove(addr(1));
        t.remove(addr(2));
        assert!(t.by_addr.is_empty() && t.by_session.is_empty() && t.unbound.is_empty());
    }

    #[test]
    fn nas_names_are_shared_and_changes_reported() {
        let mut t = Leases::default();
        t.insert(addr(1), lease("a", "gw1", None, 1));
        t.insert(addr(2), lease("b", "gw1", None, 1));
        let (n1, n2) = (&t.get(addr(1)).unwrap().nas, &t.get(addr(2)).unwrap().nas);
        assert!(Arc::ptr_eq(n1, n2));
        assert!(!t.held_by(addr(1), "gw1").unwrap().1);
        assert!(t.held_by(addr(1), "gw2").unwrap().1);
        assert_eq!(t.get(addr(1)).unwrap().nas(), "gw2");
        assert!(t.held_by(addr(9), "gw2").is_none(), "no such lease");
    }
}

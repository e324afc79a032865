use std::collections::HashMap;
use std::future::Future;
use std::task::Poll;

use super::*;

fn pool(name: &str, net: &str, exclude: &[&str], secs: u64) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        network: net.parse().unwrap(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        lease_time: Duration::from_secs(secs),
    }
}

fn req<'a>(device: &'a str, now: u64) -> LeaseRequest<'a> {
    LeaseRequest {
        pool: None,
        holder: named("u", device),
        nas: "gw",
        now,
        renew_bound: true,
    }
}

fn named<'a>(user: &'a str, device: &'a str) -> Holder<'a> {
    Holder::Named { user, device }
}

/// A directory entry of `user` with one device, `device`: its slot holds the hint.
fn entry(user: &str, device: &str) -> Access {
    let d = crate::store::AccessDevice::new(device, crate::store::DeviceType::Windows, None, None);
    Access::with_devices(user, None, [d.unwrap()])
}

/// The hint in `entry`'s device slot.
fn hint(entry: &Access) -> Option<(Ipv4Addr, u32)> {
    entry.device(0).address().get()
}

/// Applies an Accounting-Request; whether it found its lease.
async fn account(
    ipam: &Ipam,
    status: AcctStatus,
    session_id: &str,
    framed_ip: Option<Ipv4Addr>,
    user: &str,
    nas: &str,
    now: u64,
) -> bool {
    ipam.account(status, session_id, framed_ip, user, nas, now)
        .await
        .unwrap()
}

fn temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Stores `user` with `device` assigned (a lease taken back needs the user's device).
async fn user_with_device(store: &Store, user: &str, device: &str) {
    if store.user(user).unwrap().is_none() {
        store
            .insert_user(&crate::store::UserRecord::new(user, None))
            .await
            .unwrap();
    }
    let record = crate::store::DeviceRecord::windows(device);
    store.insert_device(&record).await.unwrap();
    store.assign(user, device, 2).await.unwrap();
}

#[tokio::test]
async fn sticky_renewal_exhaustion_and_expiry() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 1000).unwrap();
    let a = ipam.lease(&req("d1", 1000)).await.unwrap().unwrap();
    assert_eq!(a.addr, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(a.netmask, Ipv4Addr::new(255, 255, 255, 252));
    assert!(a.new);
    let again = ipam.lease(&req("d1", 1010)).await.unwrap().unwrap();
    assert_eq!((again.addr, again.new), (a.addr, false), "renewal");
    let b = ipam.lease(&req("d2", 1010)).await.unwrap().unwrap();
    assert_eq!(b.addr, Ipv4Addr::new(10, 0, 0, 2));
    assert!(matches!(
        ipam.lease(&req("d3", 1020)).await,
        Err(IpamError::Exhausted(_))
    ));
    // d1's lease (renewed to 1070) expires; d3 gets that address.
    let c = ipam.lease(&req("d3", 1071)).await.unwrap().unwrap();
    assert_eq!(c.addr, a.addr);
    // d1 comes back: its old address is taken; d2's expired too, so d1 gets that one.
    let d = ipam.lease(&req("d1", 1072)).await.unwrap().unwrap();
    assert_eq!(d.addr, b.addr);
}

#[tokio::test]
async fn accounting_binds_refreshes_and_releases() {
    let (_d, store) = temp();
    let ipam = Ipam::new(
        store.clone(),
        &[pool("p", "10.0.0.0/29", &["10.0.0.1"], 60)],
        0,
    )
    .unwrap();
    let a = ipam.lease(&req("d1", 0)).await.unwrap().unwrap();
    assert_eq!(
        a.addr,
        Ipv4Addr::new(10, 0, 0, 2),
        "excluded address skipped"
    );
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(a.addr), "u", "gw", 10).await);
    assert_eq!(ipam.sessions()[0].session_id.as_deref(), Some("S1"));
    assert!(account(&ipam, AcctStatus::Interim, "S1", None, "u", "gw", 50).await);
    assert_eq!(ipam.sessions()[0].expires, 110);
    // A Stop for another session id does not release it.
    assert!(!account(&ipam, AcctStatus::Stop, "OLD", Some(a.addr), "u", "gw", 60).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(a.addr), "u", "gw", 60).await);
    assert!(ipam.sessions().is_empty());
    assert!(store
        .leases_in(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
        .next()
        .is_none());
    // A Start without Framed-IP-Address (ocserv) binds the user's unbound lease on that NAS.
    let c = ipam.lease(&req("d3", 61)).await.unwrap().unwrap();
    assert!(account(&ipam, AcctStatus::Start, "S3", None, "u", "gw", 62).await);
    assert_eq!(
        ipam.sessions()
            .iter()
            .find(|l| l.addr == c.addr)
            .unwrap()
            .session_id
            .as_deref(),
        Some("S3")
    );
    assert!(!account(&ipam, AcctStatus::Start, "S4", None, "nobody", "gw", 62).await);
    assert!(account(&ipam, AcctStatus::Stop, "S3", None, "u", "gw", 63).await);
    // Sticky: d1 gets the same address back while it is free.
    let b = ipam.lease(&req("d2", 70)).await.unwrap().unwrap();
    assert_ne!(b.addr, a.addr);
    assert_eq!(
        ipam.lease(&req("d1", 70)).await.unwrap().unwrap().addr,
        a.addr
    );
    // Accounting-On/Off releases that NAS's leases.
    assert!(account(&ipam, AcctStatus::NasRestart, "", None, "u", "gw", 80).await);
    assert!(ipam.sessions().is_empty());
}

#[tokio::test]
async fn leases_survive_restart_and_concurrent_requests_never_share() {
    let (_d, store) = temp();
    let pools = [pool("p", "10.1.0.0/22", &[], 3600)];
    let ipam = Arc::new(Ipam::new(store.clone(), &pools, 0).unwrap());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let ipam = ipam.clone();
        tasks.push(tokio::spawn(async move {
            let dev = format!("dev{}", i % 250); // every device asks twice
            ipam.lease(&LeaseRequest {
                pool: Some("p"),
                holder: named("u", &dev),
                nas: "gw",
                now: 1,
                renew_bound: true,
            })
            .await
            .unwrap()
            .unwrap()
            .addr
        }));
    }
    let mut by_device: HashMap<String, Ipv4Addr> = HashMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let addr = t.await.unwrap();
        let prev = by_device.insert(format!("dev{}", i % 250), addr);
        assert!(
            prev.is_none() || prev == Some(addr),
            "one device, one address"
        );
    }
    let mut addrs: Vec<_> = by_device.values().copied().collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 250, "all distinct");
    drop(ipam);
    let again = Ipam::new(store, &pools, 2).unwrap();
    assert_eq!(again.sessions().len(), 250);
    let a = again.lease(&req("dev7", 3)).await.unwrap().unwrap();
    assert_eq!((a.addr, a.new), (by_device["dev7"], false));
}

/// Each pool restores only the leases in its own network (one range of the store), with
/// every field as it was; expired ones and those of a pool no longer configured stay out.
#[tokio::test]
async fn each_pool_restores_its_own_range_of_leases() {
    let (_d, store) = temp();
    let pools = [
        pool("a", "10.1.0.0/24", &[], 600),
        pool("b", "10.2.0.0/24", &[], 60),
    ];
    let ipam = Ipam::new(store.clone(), &pools, 100).unwrap();
    let lease = |pool, device, nas, now| LeaseRequest {
        pool: Some(pool),
        holder: named("u", device),
        nas,
        now,
        renew_bound: true,
    };
    ipam.lease(&lease("a", "d1", "gw1", 100)).await.unwrap();
    ipam.lease(&lease("a", "d2", "gw2", 100)).await.unwrap();
    ipam.lease(&lease("b", "d3", "gw1", 100)).await.unwrap();
    ipam.lease(&lease("b", "d4", "gw1", 150)).await.unwrap();
    assert!(account(&ipam, AcctStatus::Start, "S1", None, "u", "gw2", 120).await);
    // A lease of a pool since removed from the config, just above pool a's range.
    let orphan = LeaseRecord {
        addr: Ipv4Addr::new(10, 1, 1, 0),
        pool: "old".into(),
        user: "u".into(),
        device: "d9".into(),
        nas: "gw1".into(),
        session_id: None,
        granted: 100,
        expires: 10_000,
        renewed: false,
    };
    store.write_lease(&orphan).unwrap();
    store.flush().await.unwrap();
    let before = ipam.sessions();
    assert_eq!(before.len(), 4);
    drop(ipam);

    // At 170, d3's lease in b (granted at 100 for 60 s) has expired; d4's has not.
    let again = Ipam::new(store, &pools, 170).unwrap();
    let after = again.sessions();
    let expected: Vec<_> = before.into_iter().filter(|l| l.device != "d3").collect();
    assert_eq!(after, expected);
    assert!(after
        .iter()
        .any(|l| l.session_id.as_deref() == Some("S1") && l.nas == "gw2"));
    // The expired lease's address is free again; the restored ones are not.
    let d5 = again
        .lease(&lease("b", "d5", "gw1", 171))
        .await
        .unwrap()
        .unwrap();
    assert!(after.iter().all(|l| l.addr != d5.addr));
}

#[test]
fn validation_names_each_problem() {
    let problems = PoolConfig::validate_all(&[
        pool("a", "10.0.0.0/24", &["10.0.1.1", "junk"], 60),
        pool("a", "10.0.0.128/25", &[], 0),
        pool("c", "10.9.0.0/31", &[], 60),
        pool("d", "10.8.0.0/30", &["10.8.0.0/30"], 60),
    ]);
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pools[0].exclude[0]",
            "pools[0].exclude[1]",
            "pools[1].name",
            "pools[1].network",
            "pools[1].lease_time",
            "pools[2].network",
            "pools[3].exclude"
        ],
        "{problems:?}"
    );
}

/// A request given up on (its timeout drops the future) while its new lease is being made
/// durable: the write still completes and the lease stops being pending, so it expires and
/// is swept like any other.
/// Starts `device`'s first lease and leaves its durable write under way: the request polled
/// once, then dropped — its timeout, deterministically (a timer could fire after the write had
/// finished); the grant goes on in a task of its own.
async fn grant_under_way(ipam: &Ipam, device: &str, now: u64) {
    let request = req(device, now);
    let mut lease = std::pin::pin!(ipam.lease(&request));
    let first = std::future::poll_fn(|cx| Poll::Ready(lease.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the durable write is under way");
}

/// Whether the first pool's lease at `addr` is still being granted (`None`: no lease).
fn pending(ipam: &Ipam, addr: Ipv4Addr) -> Option<bool> {
    let p = ipam.pool(None).unwrap().unwrap();
    let st = p.state.lock();
    st.leases.get(addr).map(|l| l.pending())
}

#[tokio::test]
async fn a_grant_given_up_on_still_completes() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 1000).unwrap();
    grant_under_way(&ipam, "d1", 1000).await;
    let addr = Ipv4Addr::new(10, 0, 0, 1);
    let pending = || pending(&ipam, addr);
    for _ in 0..500 {
        if pending() == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pending(), Some(false), "the grant completed");
    // After its expiry the address is swept and handed to another device.
    ipam.lease(&req("d2", 1010)).await.unwrap().unwrap();
    let later = ipam.lease(&req("d3", 1061)).await.unwrap().unwrap();
    assert_eq!(later.addr, addr);
}

/// The hint in the device's entry finds its lease and names its grant; a stale one (another
/// device's lease, an expired one, another pool's address) is ignored, and corrected.
#[tokio::test]
async fn an_address_hint_renews_and_a_stale_one_is_corrected() {
    let (_d, store) = temp();
    let pools = [
        pool("a", "10.1.0.0/24", &[], 60),
        pool("b", "10.2.0.0/24", &[], 60),
    ];
    let ipam = Ipam::new(store, &pools, 100).unwrap();
    let (e1, e2) = (entry("u", "d1"), entry("u", "d2"));
    let lease = |entry, now| LeaseRequest {
        pool: Some("a"),
        holder: Holder::Entry(entry, 0),
        nas: "gw",
        now,
        renew_bound: true,
    };
    let grant_at = |addr| {
        let pools = ipam.pools.read();
        let st = pools[0].state.lock();
        st.leases.get(addr).unwrap().grant().bits()
    };
    let a1 = ipam.lease(&lease(&e1, 100)).await.unwrap().unwrap();
    assert!(a1.new);
    let g1 = grant_at(a1.addr);
    assert_eq!(hint(&e1), Some((a1.addr, g1)), "a grant sets the hint");
    let again = ipam.lease(&lease(&e1, 110)).await.unwrap().unwrap();
    assert_eq!(
        (again.addr, again.new, hint(&e1)),
        (a1.addr, false, Some((a1.addr, g1))),
        "renewed through the hint"
    );

    let a2 = ipam.lease(&lease(&e2, 110)).await.unwrap().unwrap();
    assert_ne!(a2.addr, a1.addr);
    assert_ne!(grant_at(a2.addr), g1, "each grant its own number");
    // d1's hint names d2's address, with d1's grant or none: d1 still renews its own, and
    // its hint is put right.
    for stale in [g1, 0] {
        e1.device(0).address().set(a2.addr, stale);
        let own = ipam.lease(&lease(&e1, 120)).await.unwrap().unwrap();
        assert_eq!((own.addr, own.new), (a1.addr, false));
        assert_eq!(hint(&e1), Some((a1.addr, g1)));
    }
    // An address of another pool, or outside every pool: ignored.
    for elsewhere in ["10.2.0.7", "192.0.2.1"] {
        e1.device(0).address().set(elsewhere.parse().unwrap(), g1);
        let own = ipam.lease(&lease(&e1, 130)).await.unwrap().unwrap();
        assert_eq!((own.addr, own.new), (a1.addr, false), "{elsewhere}");
    }
    // Expired (lease time 60 s): not renewed through the hint but granted anew.
    let later = ipam.lease(&lease(&e1, 1_000)).await.unwrap().unwrap();
    assert!(later.new);
    assert_eq!(hint(&e1), Some((later.addr, grant_at(later.addr))));
}

/// An accounting update whose write failed left the store behind memory: the next renewal
/// writes the lease, though its expiry passes no quarter-lease mark and it marks nothing new.
#[tokio::test]
async fn a_renewal_writes_what_a_failed_accounting_update_did_not() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/29", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 100)).await.unwrap().unwrap().addr;
    let stored = || store.leases_in(x, x).next().unwrap().unwrap().expires;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 101).await);
    ipam.lease(&req("d1", 102)).await.unwrap().unwrap(); // marked renewed: written
    assert_eq!(stored(), 162);
    let fail = |on| {
        store
            .fail_lease_writes
            .store(on, std::sync::atomic::Ordering::Relaxed)
    };
    fail(true);
    let interim = ipam
        .account(AcctStatus::Interim, "S1", Some(x), "u", "gw", 110)
        .await;
    assert!(interim.is_err());
    fail(false);
    assert_eq!(stored(), 162, "not written");
    // Expiry 170 → 171: the same quarter (marks 160, 175, ...), and marked already.
    ipam.lease(&req("d1", 111)).await.unwrap().unwrap();
    assert_eq!(stored(), 171, "written by the renewal");
    ipam.lease(&req("d1", 112)).await.unwrap().unwrap();
    assert_eq!(stored(), 171, "then nothing until the next mark");
}

/// A renewal is written when its expiry passes a quarter-lease mark counted from the grant,
/// and only then: the stored expiry lags by less than a quarter lease.
#[tokio::test]
async fn a_renewal_is_written_at_each_quarter_lease() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/29", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 100)).await.unwrap().unwrap().addr;
    let stored = || store.leases_in(x, x).next().unwrap().unwrap().expires;
    assert_eq!(stored(), 160);
    // Marks (15 s apart from 100): 160, 175, 190, ...
    for (now, want) in [
        (110, 160),
        (114, 160),
        (115, 175),
        (120, 175),
        (129, 175),
        (131, 191),
    ] {
        ipam.lease(&req("d1", now)).await.unwrap().unwrap();
        assert_eq!(stored(), want, "renewed at {now}");
    }
}

/// `ravpnd_pool_addresses`, `ravpnd_pool_leased` and `ravpnd_sessions_active` follow grants,
/// accounting and sweeps, and a renewal (which does not write them) leaves them right.
#[tokio::test]
async fn the_pool_gauges_follow_grants_accounting_and_sweeps() {
    use crate::metrics::METRICS;
    let (_d, store) = temp();
    let name = "gauges-under-test";
    let ipam = Ipam::new(store, &[pool(name, "10.0.0.0/29", &[], 60)], 0).unwrap();
    let size = || METRICS.pool_size.with_label_values(&[name]).get();
    let used = || METRICS.pool_used.with_label_values(&[name]).get();
    let sessions = || METRICS.sessions.with_label_values(&[name]).get();
    assert_eq!((size(), used()), (6, 0));
    let a = ipam.lease(&req("d1", 0)).await.unwrap().unwrap();
    ipam.lease(&req("d2", 0)).await.unwrap().unwrap();
    assert_eq!(used(), 2);
    let renewed = ipam.lease(&req("d1", 10)).await.unwrap().unwrap();
    assert!(!renewed.new);
    assert_eq!(used(), 2, "a renewal");
    assert_eq!(sessions(), 0, "no accounting yet");
    account(&ipam, AcctStatus::Start, "S1", Some(a.addr), "u", "gw", 20).await;
    assert_eq!((used(), sessions()), (2, 1), "Start binds a session");
    account(&ipam, AcctStatus::Stop, "S1", Some(a.addr), "u", "gw", 30).await;
    assert_eq!((used(), sessions()), (1, 0), "released by Stop");
    assert_eq!(ipam.sweep(1_000), 1);
    assert_eq!(used(), 0, "swept");
    assert_eq!(size(), 6);
}

/// A renewal moves the lease's expiry only forward: the same second leaves it, a later one
/// extends it, an earlier clock (another worker's older reading) never shortens it.
#[tokio::test]
async fn a_renewal_moves_the_expiry_only_forward() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/29", &[], 60)], 0).unwrap();
    let a = ipam.lease(&req("d1", 100)).await.unwrap().unwrap();
    let expiry = |ipam: &Ipam| {
        let pools = ipam.pools.read();
        let st = pools[0].state.lock();
        st.leases.get(a.addr).unwrap().expires()
    };
    assert_eq!(expiry(&ipam), 160);
    ipam.lease(&req("d1", 100)).await.unwrap().unwrap();
    assert_eq!(expiry(&ipam), 160);
    ipam.lease(&req("d1", 130)).await.unwrap().unwrap();
    assert_eq!(expiry(&ipam), 190);
    ipam.lease(&req("d1", 120)).await.unwrap().unwrap();
    assert_eq!(expiry(&ipam), 190, "not shortened");
}

/// A device accepted again on its lease may be starting a new session there (a reconnect):
/// the Stop of the session bound before must not free the address under it, or the next
/// device would get the address the new session uses.
#[tokio::test]
async fn a_stop_for_the_session_a_renewal_replaced_keeps_the_address() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    let again = ipam.lease(&req("d1", 2)).await.unwrap().unwrap();
    assert_eq!((again.addr, again.new), (x, false));
    // The old session ends after the new one was accepted: the lease stays, unbound.
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 3).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, None));
    assert!(store.leases_in(x, x).next().is_some(), "still stored");
    // Another user's devices (the Start below binds the user's newest unbound lease).
    let other = |device, now| LeaseRequest {
        holder: named("v", device),
        ..req(device, now)
    };
    let y = ipam.lease(&other("d2", 4)).await.unwrap().unwrap().addr;
    assert_ne!(y, x);
    assert!(
        matches!(
            ipam.lease(&other("d3", 5)).await,
            Err(IpamError::Exhausted(_))
        ),
        "x is still d1's"
    );
    // The new session's Start (ocserv: without Framed-IP-Address) binds it; its Stop frees it.
    assert!(account(&ipam, AcctStatus::Start, "S2", None, "u", "gw", 6).await);
    assert!(account(&ipam, AcctStatus::Stop, "S2", Some(x), "u", "gw", 7).await);
    assert_eq!(ipam.lease(&other("d3", 8)).await.unwrap().unwrap().addr, x);
}

/// A Stop names a lease not bound to any session yet: only that lease's user's Stop ends it
/// (another user's is a late Stop of an earlier holder of the address).
#[tokio::test]
async fn a_stop_of_another_user_leaves_an_unbound_lease() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(
        !account(
            &ipam,
            AcctStatus::Stop,
            "OLD",
            Some(x),
            "someone-else",
            "gw",
            1
        )
        .await
    );
    assert_eq!(ipam.sessions().len(), 1);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 2).await);
    assert!(ipam.sessions().is_empty());
}

/// While a new lease is being written no Accept has named it: accounting that names its
/// address concerns an earlier lease there and changes nothing, nor does an admin's release;
/// a renewal of it waits until the write has ended, so its Accept too names a durable lease.
#[tokio::test]
async fn a_lease_being_granted_is_left_to_its_grant() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = Ipv4Addr::new(10, 0, 0, 1);
    let pending = || pending(&ipam, x);
    grant_under_way(&ipam, "d1", 0).await;
    assert_eq!(pending(), Some(true));
    for status in [AcctStatus::Interim, AcctStatus::Stop] {
        assert!(!account(&ipam, status, "OLD", Some(x), "u", "gw", 1).await);
    }
    assert!(!account(&ipam, AcctStatus::NasRestart, "", None, "", "gw", 1).await);
    assert_eq!(ipam.sessions()[0].session_id, None);
    // Nor does an admin's release take it (the API's 409): neither by address nor by NAS.
    assert!(matches!(
        ipam.release_address(x).await,
        Err(IpamError::BeingGranted(a)) if a == x
    ));
    assert!(ipam.release_nas("gw").await.unwrap().is_empty());
    assert_eq!(pending(), Some(true));
}

/// A renewal of a lease whose first write is still under way answers only once that write
/// has ended (a flush of its own could end first), so its Accept too names a durable lease.
#[tokio::test]
async fn a_renewal_of_a_lease_being_granted_waits_for_the_grant() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = Ipv4Addr::new(10, 0, 0, 1);
    let pending = || pending(&ipam, x);
    grant_under_way(&ipam, "d1", 0).await;
    let renewal = ipam.lease(&req("d1", 2)).await.unwrap().unwrap();
    assert_eq!((renewal.addr, renewal.new), (x, false));
    assert_eq!(pending(), Some(false), "the renewal waited for the grant");
    assert!(store.leases_in(x, x).next().is_some(), "durable");
}

/// A reload's pools replace the running list in the file's order (the first is the default,
/// as after a restart), keeping the running ones as they are; a new pool whose stored leases
/// cannot be read makes the reload add none.
#[tokio::test]
async fn reloaded_pools_follow_the_file_and_fail_whole() {
    let (_d, store) = temp();
    let a = pool("a", "10.0.0.0/30", &[], 60);
    let ipam = Ipam::new(store.clone(), std::slice::from_ref(&a), 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    let names = |ipam: &Ipam| -> Vec<String> {
        ipam.pools
            .read()
            .iter()
            .map(|p| p.config.name.clone())
            .collect()
    };
    let (b, c) = (
        pool("b", "10.1.0.0/30", &[], 60),
        pool("c", "10.2.0.0/30", &[], 60),
    );
    store.put_raw_lease(Ipv4Addr::new(10, 2, 0, 1), &[0x7f]);
    let e = ipam.add_pools(&[b.clone(), a.clone(), c], 1).unwrap_err();
    assert!(e.to_string().contains("\"lease 10.2.0.1\""), "{e}");
    assert_eq!(names(&ipam), ["a"], "nothing added");
    ipam.add_pools(&[b, a], 1).unwrap();
    assert_eq!(names(&ipam), ["b", "a"]);
    let renewal = LeaseRequest {
        pool: Some("a"),
        ..req("d1", 2)
    };
    let again = ipam.lease(&renewal).await.unwrap().unwrap();
    assert_eq!((again.addr, again.new), (x, false), "a's leases kept");
    let first = ipam.lease(&req("d2", 3)).await.unwrap().unwrap().addr;
    assert_eq!(first, Ipv4Addr::new(10, 1, 0, 1), "b is the default now");
}

/// A device name now another user's (reassigned, or deleted and created again) does not take
/// the old owner's live lease: the lease names its user too.
#[tokio::test]
async fn a_device_name_of_another_user_gets_its_own_lease() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/29", &[], 60)], 0).unwrap();
    let (alice, bob) = (entry("u", "laptop"), entry("bob", "laptop"));
    let x = ipam
        .lease(&LeaseRequest {
            holder: Holder::Entry(&alice, 0),
            ..req("laptop", 0)
        })
        .await
        .unwrap()
        .unwrap()
        .addr;
    // Bob's entry has no hint yet (a new entry's is empty), or one naming alice's address with
    // no grant of its own (none, or the one numbers share once they ran out): by name, the
    // lease there is not his. (A hint never carries another entry's grant: only requests for
    // the entry's own device set it, `Holder::Entry`.)
    for grant in [None, Some(0), Some(u32::MAX)] {
        if let Some(g) = grant {
            bob.device(0).address().set(x, g);
        }
        let b = ipam
            .lease(&LeaseRequest {
                holder: Holder::Entry(&bob, 0),
                ..req("laptop", 1)
            })
            .await
            .unwrap()
            .unwrap();
        assert!(b.addr != x, "{grant:?}: {b:?}");
        assert_eq!(
            b.new,
            grant.is_none(),
            "{grant:?}: bob's own lease after the first"
        );
    }
    let b = ipam
        .sessions()
        .into_iter()
        .find(|l| l.user == "bob")
        .unwrap();
    let held: Vec<_> = ipam
        .sessions()
        .into_iter()
        .map(|l| (l.addr, l.user))
        .collect();
    assert_eq!(held, [(x, "u".to_owned()), (b.addr, "bob".to_owned())]);
}

/// Accounting touches only the leases held through the NAS that sends it: another NAS can
/// neither free nor keep alive an address it did not lease.
#[tokio::test]
async fn accounting_from_another_nas_leaves_the_lease_alone() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    for status in [AcctStatus::Start, AcctStatus::Interim, AcctStatus::Stop] {
        assert!(!account(&ipam, status, "S9", Some(x), "u", "gw2", 1).await);
    }
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, None));
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 2).await);
    assert!(!account(&ipam, AcctStatus::Stop, "S1", None, "u", "gw2", 3).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", None, "u", "gw", 4).await);
    assert!(ipam.sessions().is_empty());
}

/// A lease held through a client name no longer configured (the client was renamed) is taken
/// over by the NAS whose accounting names it; one still configured stays its own.
#[tokio::test]
async fn a_renamed_clients_leases_are_adopted_by_its_accounting() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    ipam.set_clients(["gw", "gw2"]);
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(!account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw2", 1).await);
    ipam.set_clients(["gw-renamed", "gw2"]);
    // Not about this lease (another user's late Interim from another NAS): left alone.
    assert!(!account(&ipam, AcctStatus::Interim, "OLD", Some(x), "v", "gw2", 2).await);
    assert_eq!(ipam.sessions()[0].nas, "gw");
    assert!(
        account(
            &ipam,
            AcctStatus::Interim,
            "S1",
            Some(x),
            "u",
            "gw-renamed",
            2
        )
        .await
    );
    assert_eq!(ipam.sessions()[0].nas, "gw-renamed");
    // Bound, then renamed again: found by its session id alone, and taken over.
    ipam.set_clients(["gw-third", "gw2"]);
    assert!(!account(&ipam, AcctStatus::Interim, "S2", None, "u", "gw2", 3).await);
    assert!(account(&ipam, AcctStatus::Interim, "S1", None, "u", "gw-third", 3).await);
    assert_eq!(ipam.sessions()[0].nas, "gw-third");
    assert!(!account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw2", 4).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw-third", 4).await);
}

/// Two gateways number their sessions independently: the same Acct-Session-Id from each
/// names each one's own lease, also in accounting without Framed-IP-Address.
#[tokio::test]
async fn two_nases_may_use_the_same_session_id() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/29", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    let on_gw2 = LeaseRequest {
        nas: "gw2",
        ..req("d2", 0)
    };
    let y = ipam.lease(&on_gw2).await.unwrap().unwrap().addr;
    for (addr, nas) in [(x, "gw"), (y, "gw2")] {
        assert!(
            account(
                &ipam,
                AcctStatus::Start,
                "00000001",
                Some(addr),
                "u",
                nas,
                1
            )
            .await
        );
    }
    assert!(account(&ipam, AcctStatus::Interim, "00000001", None, "u", "gw", 2).await);
    assert!(account(&ipam, AcctStatus::Stop, "00000001", None, "u", "gw", 3).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].addr), (1, y), "gw's session ended");
    assert!(account(&ipam, AcctStatus::Stop, "00000001", None, "u", "gw2", 4).await);
    assert!(ipam.sessions().is_empty());
}

/// The renewal's mark outlives a restart: a NAS sends its unanswered Stop again to the
/// restarted daemon, and the lease stays the device's, whose new session is starting on it.
#[tokio::test]
async fn a_renewal_is_remembered_across_a_restart() {
    let (_d, store) = temp();
    let pools = [pool("p", "10.0.0.0/30", &[], 60)];
    let ipam = Ipam::new(store.clone(), &pools, 0).unwrap();
    let x = reconnected(&ipam).await;
    drop(ipam);
    let ipam = Ipam::new(store.clone(), &pools, 3).unwrap();
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 3).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, None));
    // The new session binds it; its Stop (no renewal since) frees it, then and after a restart.
    assert!(account(&ipam, AcctStatus::Start, "S2", Some(x), "u", "gw", 4).await);
    drop(ipam);
    let ipam = Ipam::new(store.clone(), &pools, 5).unwrap();
    assert!(account(&ipam, AcctStatus::Stop, "S2", Some(x), "u", "gw", 5).await);
    assert!(ipam.sessions().is_empty());
}

/// The store changes in the order memory does: a sweep freeing expired leases while their
/// devices are granted the same (sticky) addresses again never deletes the new records —
/// after a restart every lease memory had is still there (an address is never handed out
/// twice). The old sweep deleted records after freeing the addresses, outside the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_never_deletes_a_lease_granted_meanwhile() {
    let (_d, store) = temp();
    let pools = [pool("p", "10.2.0.0/20", &[], 10)];
    let ipam = Arc::new(Ipam::new(store.clone(), &pools, 0).unwrap());
    let devices: Vec<String> = (0..2_000).map(|i| format!("d{i}")).collect();
    for (round, now) in [(0u64, 0u64), (1, 20), (2, 40)] {
        // Round 0 grants; later rounds find every lease expired, and race the sweep.
        let sweep = {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.sweep(now) })
        };
        let grants = {
            let (ipam, devices) = (ipam.clone(), devices.clone());
            tokio::spawn(async move {
                for d in &devices {
                    ipam.lease(&req(d, now)).await.unwrap().unwrap();
                }
            })
        };
        sweep.await.unwrap();
        grants.await.unwrap();
        let stored: HashMap<Ipv4Addr, String> = store
            .leases_in(Ipv4Addr::new(10, 2, 0, 0), Ipv4Addr::new(10, 2, 15, 255))
            .map(|l| l.unwrap())
            .filter(|l| l.expires > now)
            .map(|l| (l.addr, l.device))
            .collect();
        for l in ipam.sessions() {
            assert_eq!(
                stored.get(&l.addr),
                Some(&l.device),
                "round {round}: {} lost from the store",
                l.addr
            );
        }
    }
}

/// An unreadable lease record does not stop the start: its address alone is kept out of
/// use (it may be someone's), the pool's others are granted as usual.
#[tokio::test]
async fn an_unreadable_lease_record_keeps_only_its_address_out() {
    let (_d, store) = temp();
    let unreadable = Ipv4Addr::new(10, 0, 0, 1);
    store.put_raw_lease(unreadable, &[0x7f]);
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let a = ipam.lease(&req("d1", 0)).await.unwrap().unwrap();
    assert_eq!(a.addr, Ipv4Addr::new(10, 0, 0, 2));
    assert!(matches!(
        ipam.lease(&req("d2", 0)).await,
        Err(IpamError::Exhausted(_))
    ));
    // An admin's release frees it (the record goes), answered as a lease of no one.
    let gone = ipam.release_address(unreadable).await.unwrap().unwrap();
    assert_eq!((gone.addr, gone.user.as_str()), (unreadable, ""));
    assert!(ipam.release_address(unreadable).await.unwrap().is_none());
    assert_eq!(
        ipam.lease(&req("d2", 1)).await.unwrap().unwrap().addr,
        unreadable
    );
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 2).unwrap();
    assert_eq!(ipam.sessions().len(), 2, "both readable after a restart");
}

/// Where the gateway gives no device identity (ocserv), a second login of the user's device
/// while a session is bound to its lease may be another machine: it gets another address;
/// its Start binds that one, and each session's Stop frees its own.
#[tokio::test]
async fn a_second_login_without_device_identity_gets_its_own_address() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/29", &[], 600)], 0).unwrap();
    let login = |now| LeaseRequest {
        renew_bound: false,
        ..req("d1", now)
    };
    let x = ipam.lease(&login(0)).await.unwrap().unwrap().addr;
    // Not bound yet (no Start): a login again is a retry, and gets the same lease.
    assert_eq!(ipam.lease(&login(1)).await.unwrap().unwrap().addr, x);
    assert!(account(&ipam, AcctStatus::Start, "S1", None, "u", "gw", 2).await);
    let y = ipam.lease(&login(3)).await.unwrap().unwrap();
    assert!(
        y.new && y.addr != x,
        "a live session's address is never shared"
    );
    assert!(account(&ipam, AcctStatus::Start, "S2", None, "u", "gw", 4).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 5).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].addr), (1, y.addr));
    assert_eq!(live[0].session_id.as_deref(), Some("S2"));
}

/// d1's lease with session S1 started (at 1), then renewed by the device reconnecting (at 2):
/// its address.
async fn reconnected(ipam: &Ipam) -> Ipv4Addr {
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    assert!(!ipam.lease(&req("d1", 2)).await.unwrap().unwrap().new);
    x
}

/// A reconnect renewed the lease and its new session's Start bound it; the old session's
/// late Interim-Update must not take it back, or that session's Stop frees the new one's
/// address.
#[tokio::test]
async fn a_late_update_of_a_replaced_session_leaves_the_lease_to_the_new_one() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = reconnected(&ipam).await;
    assert!(account(&ipam, AcctStatus::Start, "S2", Some(x), "u", "gw", 3).await);
    assert!(!account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 4).await);
    assert!(!account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 5).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, Some("S2")));
}

/// Accounting of another user naming an unbound lease's address (a gateway that assigns
/// overlapping addresses itself, or a stale session) neither binds nor ends it.
#[tokio::test]
async fn a_start_of_another_user_does_not_take_the_lease() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(!account(&ipam, AcctStatus::Start, "S9", Some(x), "v", "gw", 1).await);
    assert!(!account(&ipam, AcctStatus::Stop, "S9", Some(x), "v", "gw", 2).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].user.as_str()), (1, "u"));
    assert_eq!(live[0].session_id, None);
    // Its own user's Start binds it.
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 3).await);
}

/// The lease expired while its session went on (ravpnd down longer than the lease time):
/// the session's next update takes the address back, durably and for the device that had
/// it, so it is not handed to a second client.
#[tokio::test]
async fn an_update_for_an_expired_lease_takes_the_address_back() {
    let (_d, store) = temp();
    user_with_device(&store, "u", "d1").await;
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    assert_eq!(ipam.sweep(100), 1, "expired");
    assert!(account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 101).await);
    let live = ipam.sessions();
    assert_eq!(live.len(), 1);
    let l = &live[0];
    assert_eq!(
        (
            l.addr,
            l.user.as_str(),
            l.device.as_str(),
            l.session_id.as_deref(),
            l.expires
        ),
        (x, "u", "d1", Some("S1"), 161)
    );
    // Durable: a restart finds it; another device does not get the address.
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 102).unwrap();
    assert_ne!(ipam.lease(&req("d2", 102)).await.unwrap().unwrap().addr, x);
    // The device that had it renews it (a reconnect: the old session's Stop then leaves it
    // to the device, unbound).
    let again = ipam.lease(&req("d1", 103)).await.unwrap().unwrap();
    assert_eq!((again.addr, again.new), (x, false));
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 104).await);
    let kept = ipam.sessions().into_iter().find(|l| l.addr == x).unwrap();
    assert_eq!((kept.device.as_str(), kept.session_id), ("d1", None));
    // Not an address of the pool's to hand out: nothing taken.
    assert!(
        !account(
            &ipam,
            AcctStatus::Interim,
            "S7",
            Some(Ipv4Addr::new(10, 0, 0, 3)),
            "u",
            "gw",
            105
        )
        .await
    );
}

/// A gateway's retransmitted Interim-Update overtaken by the session's Stop: the freed
/// address stays free. After the window a session of that id is a new one (gateways reuse
/// ids after a reboot) and takes its address back.
#[tokio::test]
async fn a_late_update_after_its_stop_does_not_bring_the_lease_back() {
    let (_d, store) = temp();
    user_with_device(&store, "u", "d1").await;
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 600)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 2).await);
    assert!(!account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 7).await);
    assert!(ipam.sessions().is_empty());
    // Another NAS's session of that id is not the stopped one.
    assert!(account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw2", 8).await);
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw2", 9).await);
    let later = 9 + stopped::WINDOW;
    assert!(account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", later).await);
    assert_eq!(ipam.sessions().len(), 1);
}

/// A renewal through another NAS whose write fails leaves the lease as it was: held through
/// its NAS (whose Stop still ends it) with its expiry. (It stayed moved and extended: the
/// session's own gateway's Stop was then ignored as another NAS's.)
#[tokio::test]
async fn a_failed_renewal_leaves_the_lease_as_it_was() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store.clone(), &[pool("p", "10.0.0.0/30", &[], 60)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    store
        .fail_lease_writes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let through_gw2 = LeaseRequest {
        nas: "gw2",
        ..req("d1", 30)
    };
    assert!(ipam.lease(&through_gw2).await.is_err());
    let l = &ipam.sessions()[0];
    assert_eq!(
        (
            l.nas.as_str(),
            l.expires,
            l.renewed,
            l.session_id.as_deref()
        ),
        ("gw", 61, false, Some("S1"))
    );
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 31).await);
    assert!(ipam.sessions().is_empty());
}

/// An unreadable record at an address the pool never hands out (an excluded gateway's, the
/// network address) is deleted by a release, and the address stays out of the pool.
#[tokio::test]
async fn releasing_an_unreadable_record_never_hands_out_an_excluded_address() {
    let (_d, store) = temp();
    let (net, gw) = (Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1));
    store.put_raw_lease(net, &[0x7f]);
    store.put_raw_lease(gw, &[0x7f]);
    let ipam = Ipam::new(
        store.clone(),
        &[pool("p", "10.0.0.0/29", &["10.0.0.1"], 60)],
        0,
    )
    .unwrap();
    assert!(ipam.release_address(net).await.unwrap().is_some());
    assert!(ipam.release_address(gw).await.unwrap().is_some());
    let mut got = Vec::new();
    while let Ok(Some(a)) = ipam.lease(&req(&format!("d{}", got.len()), 0)).await {
        got.push(a.addr);
    }
    assert_eq!(got.len(), 5, "10.0.0.2-6 only: {got:?}");
    assert!(!got.contains(&net) && !got.contains(&gw), "{got:?}");
    assert!(store.leases_in(net, gw).next().is_none(), "records deleted");
}

/// A NAS cannot reserve free addresses by naming them in updates of made-up sessions: only
/// the user's device that had the address last takes it back.
#[tokio::test]
async fn an_update_takes_back_only_an_address_the_users_device_had() {
    let (_d, store) = temp();
    user_with_device(&store, "u", "d1").await;
    let ipam = Ipam::new(
        store,
        &[
            pool("a", "10.0.0.0/30", &[], 60),
            pool("b", "10.1.0.0/30", &[], 60),
        ],
        0,
    )
    .unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert_eq!(ipam.sweep(100), 1);
    for (user, a) in [
        ("", x),
        ("nobody", x),
        ("u", Ipv4Addr::new(10, 0, 0, 2)),
        ("u", Ipv4Addr::new(10, 1, 0, 1)),
    ] {
        assert!(
            !account(
                &ipam,
                AcctStatus::Interim,
                "made-up",
                Some(a),
                user,
                "evil",
                101
            )
            .await,
            "{user:?} {a}"
        );
    }
    assert!(ipam.sessions().is_empty());
    assert!(account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 102).await);
}

/// After Accounting-On/Off a NAS's updates still in flight from before take nothing back;
/// after the window its sessions are new ones.
#[tokio::test]
async fn updates_from_before_a_nas_restart_take_nothing_back() {
    let (_d, store) = temp();
    user_with_device(&store, "u", "d1").await;
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 600)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 1).await);
    assert!(account(&ipam, AcctStatus::NasRestart, "", None, "", "gw", 2).await);
    assert!(!account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 3).await);
    assert!(ipam.sessions().is_empty());
    let later = 2 + stopped::WINDOW;
    assert!(account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", later).await);
}

/// The device reconnected, so its old session's Stop unbound the lease; a late Interim of
/// that session must not bind it again (a retransmitted Stop would then free the address
/// the device uses).
#[tokio::test]
async fn a_late_update_of_a_stopped_session_does_not_bind_the_lease_again() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 600)], 0).unwrap();
    let x = reconnected(&ipam).await;
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 3).await);
    assert!(!account(&ipam, AcctStatus::Interim, "S1", Some(x), "u", "gw", 4).await);
    assert!(!account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 5).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, None));
}

/// After Accounting-On/Off, new sessions are new: a lease granted just before the restart
/// was processed (and so released by it) is taken back by its session's Start, and a fresh
/// lease whose Interim-Update comes before its Start is bound by it.
#[tokio::test]
async fn sessions_begun_after_a_nas_restart_keep_their_addresses() {
    let (_d, store) = temp();
    user_with_device(&store, "u", "d1").await;
    user_with_device(&store, "u", "d2").await;
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/29", &[], 600)], 0).unwrap();
    let x = ipam.lease(&req("d1", 0)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::NasRestart, "", None, "", "gw", 1).await);
    assert!(account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 2).await);
    assert_ne!(ipam.lease(&req("d3", 3)).await.unwrap().unwrap().addr, x);
    let y = ipam.lease(&req("d2", 4)).await.unwrap().unwrap().addr;
    assert!(account(&ipam, AcctStatus::Interim, "S2", Some(y), "u", "gw", 5).await);
    let bound = ipam.sessions().into_iter().find(|l| l.addr == y).unwrap();
    assert_eq!(bound.session_id.as_deref(), Some("S2"));
}

/// A late Start of a session stopped moments ago (a retransmission) does not take the lease
/// from the session that replaced it.
#[tokio::test]
async fn a_late_start_of_a_stopped_session_leaves_the_lease_to_the_new_one() {
    let (_d, store) = temp();
    let ipam = Ipam::new(store, &[pool("p", "10.0.0.0/30", &[], 600)], 0).unwrap();
    let x = reconnected(&ipam).await;
    assert!(account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 3).await);
    assert!(account(&ipam, AcctStatus::Start, "S2", Some(x), "u", "gw", 4).await);
    assert!(!account(&ipam, AcctStatus::Start, "S1", Some(x), "u", "gw", 5).await);
    assert!(!account(&ipam, AcctStatus::Stop, "S1", Some(x), "u", "gw", 6).await);
    let live = ipam.sessions();
    assert_eq!((live.len(), live[0].session_id.as_deref()), (1, Some("S2")));
}

/// After a restart nothing is in memory of which address each device had: a device with no
/// hint renews its live lease, or gets back its expired one's address while free, from the
/// store; its hint is set then.
#[tokio::test]
async fn after_a_restart_a_device_finds_its_address_in_the_store() {
    let (_d, store) = temp();
    let pools = [pool("p", "10.1.0.0/24", &[], 60)];
    let ipam = Ipam::new(store.clone(), &pools, 0).unwrap();
    ipam.lease(&req("d0", 1)).await.unwrap().unwrap(); // the lowest address, until 61
    let (d2, d1) = (
        ipam.lease(&req("d2", 1)).await,
        ipam.lease(&req("d1", 1)).await,
    );
    let (d1, d2) = (d1.unwrap().unwrap().addr, d2.unwrap().unwrap().addr);
    ipam.lease(&req("d1", 50)).await.unwrap().unwrap(); // until 110; d2's until 61
    ipam.lease(&req("d3", 50)).await.unwrap().unwrap();
    drop(ipam);

    let again = Ipam::new(store, &pools, 70).unwrap();
    let e1 = entry("u", "d1");
    let renewed = again
        .lease(&LeaseRequest {
            holder: Holder::Entry(&e1, 0),
            ..req("d1", 70)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((renewed.addr, renewed.new), (d1, false));
    let grant = again.pools.read()[0]
        .state
        .lock()
        .leases
        .get(d1)
        .unwrap()
        .grant();
    assert_eq!(hint(&e1), Some((d1, grant.bits())));
    // d0's and d2's leases expired before the restart: both addresses are free, and d2 gets
    // its own back, not the lowest.
    let back = again.lease(&req("d2", 71)).await.unwrap().unwrap();
    assert_eq!((back.addr, back.new), (d2, true));
}

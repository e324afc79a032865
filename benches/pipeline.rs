//! The whole decision for a cached local user with an assigned, registered device, an address
//! pool and DNS: `Policy::authorize` (store reads, credential-cache hit, device check, lease
//! renewal), and `Handler::handle_datagram` on a raw datagram (the whole request path minus
//! the socket). Built the way `server::run` builds them, from a TOML configuration.

// The daemon's allocator and options: what the request path costs depends on them.
#[path = "../src/allocator.rs"]
mod allocator;
mod common;
#[path = "common/fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ravpnd::auth::local::hash_password;
use ravpnd::ipam::{AcctStatus, Ipam, PoolConfig};
use ravpnd::policy::{AccessRequest, Decision};
use ravpnd::radius::dict;
use ravpnd::radius::listener::Port;
use ravpnd::radius::packet::{Attributes, Frame};
use ravpnd::reply::{Original, ReplyContext};
use ravpnd::store::{LeaseRecord, Store};

use fixture::{nas, unix_now, Fixture};

const USER: &str = "user0";

/// A store holding `user0` (argon2id hash of the bench password, the daemon's parameters)
/// and `dev0` (Windows, serial = user 0's device UID, assigned to `user0`).
fn fixture() -> Fixture {
    Fixture::new(1, &hash_password(common::PASSWORD).unwrap())
}

fn authorize(c: &mut Criterion) {
    let f = fixture();
    let policy = f.policy();
    let live = f.live();
    let nas = nas(&live);
    let req = common::anyconnect_request(USER, &common::serial_of(0), 1, [0x42; 16]);
    let avpairs = dict::cisco_avpairs(Attributes::of(&req));
    let request = AccessRequest {
        user_name: USER,
        password: common::PASSWORD,
        avpairs: &avpairs,
        nas: &nas,
        now: unix_now(),
        directory_deadline: None,
    };
    // The first call runs argon2, fills the credential cache and leases an address.
    let first = f.rt.block_on(policy.authorize(&request, &live.settings));
    assert!(
        matches!(&first, Decision::Accept(plan) if plan.address.is_some()),
        "fixture must be accepted with an address, got {first:?}"
    );
    c.bench_function("policy_authorize_cached_user_lease_renewal", |b| {
        b.iter(|| {
            f.rt.block_on(policy.authorize(black_box(&request), &live.settings))
        })
    });
    let decision = f.rt.block_on(policy.authorize(&request, &live.settings));
    let ctx = ReplyContext {
        kind: nas.kind,
        dns: &live.settings.dns,
        interim_interval: live.settings.interim_interval,
    };
    let original = Original::of(&Frame::parse(&req).unwrap(), common::SECRET);
    c.bench_function("reply_access_accept_address_dns", |b| {
        b.iter(|| ravpnd::reply::access_response(black_box(&original), &decision, &ctx))
    });
    // The store reads the decision makes, on their own: the user's entry with their devices
    // (cached), and the serial index (a first connection only; sled).
    c.bench_function("store_access_read", |b| {
        b.iter(|| f.store.access(black_box(USER)).unwrap())
    });
    let serial = common::serial_of(0);
    c.bench_function("store_device_by_serial", |b| {
        b.iter(|| f.store.device_by_serial(black_box(&serial)).unwrap())
    });
}

fn handle_datagram(c: &mut Criterion) {
    let f = fixture();
    let live = f.live();
    let nas = nas(&live);
    let handler = f.handler();
    let source: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let serial = common::serial_of(0);
    let mut n = 0u64;
    let mut fresh = || {
        // A new authenticator each time, so the duplicate cache never answers.
        n += 1;
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&n.to_le_bytes());
        a[8..].copy_from_slice(&(n ^ 0x5555_5555_5555_5555).to_le_bytes());
        common::anyconnect_request(USER, &serial, n as u8, a)
    };
    let warm = fresh();
    let resp =
        f.rt.block_on(handler.handle_datagram(&warm, source, &nas, Port::Auth, &live))
            .expect("answered");
    assert_eq!(resp[0], 2, "fixture must be accepted");
    c.bench_function("handle_datagram_accept_cached_user", |b| {
        b.iter_batched(
            &mut fresh,
            |req| {
                // As the listener's worker does (the entry is in cache here: a hash and a probe).
                handler.prefetch([&req[..]]);
                f.rt.block_on(handler.handle_datagram(&req, source, &nas, Port::Auth, &live))
            },
            BatchSize::SmallInput,
        )
    });
    // A retransmission of an answered request: the duplicate cache's path.
    c.bench_function("handle_datagram_duplicate", |b| {
        b.iter(|| {
            f.rt.block_on(handler.handle_datagram(
                black_box(&warm),
                source,
                &nas,
                Port::Auth,
                &live,
            ))
        })
    });
}

/// Accounting without Framed-IP-Address among 100,000 sessions (ocserv's Accounting-Start
/// sends none): the lease is found by Acct-Session-Id, and the Interim refreshes it (a sled
/// insert, not durable).
fn accounting(c: &mut Criterion) {
    const SESSIONS: u32 = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = unix_now();
    let base = u32::from(std::net::Ipv4Addr::new(10, 8, 0, 1));
    rt.block_on(async {
        for i in 0..SESSIONS {
            let lease = LeaseRecord {
                addr: (base + i).into(),
                pool: "bench".into(),
                user: format!("user{i}"),
                device: format!("dev{i}"),
                nas: "gw".into(),
                session_id: Some(format!("S{i}")),
                granted: now,
                expires: now + 3600,
                renewed: false,
            };
            store.write_lease(&lease).unwrap();
        }
        store.flush().await.unwrap();
    });
    let pool = PoolConfig {
        name: "bench".into(),
        network: "10.8.0.0/15".parse().unwrap(),
        exclude: Vec::new(),
        lease_time: Duration::from_secs(3600),
    };
    let ipam = Ipam::new(store, &[pool], now).unwrap();
    c.bench_function("ipam_account_interim_by_session_100k", |b| {
        b.iter(|| {
            rt.block_on(ipam.account(
                AcctStatus::Interim,
                black_box("S54321"),
                None,
                "user54321",
                "gw",
                now,
            ))
            .unwrap()
        })
    });
}

fn config_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = group;
    config = config_criterion();
    targets = authorize, handle_datagram, accounting
}
criterion_main!(group);

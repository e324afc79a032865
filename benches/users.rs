//! What a request costs among 100,000 users against 1,000 (issue 5: "no throughput loss with
//! 100,000 vs 1,000 users"): `Handler::handle_datagram` (the whole request path minus the
//! socket) for Access-Requests of users taken in turn from the first 1,000 or from all
//! 100,000 of one store, every user with a device, a cached credential and a lease to renew.
//! In process, on one thread, on the daemon's allocator, without the load driver: what differs
//! is how much of the users' entries and leases the caches hold (and, 100 times as many
//! requests per user at 1,000, how many renewals move a lease's expiry: once a second each).
//! Blocks of each alternate (the host's drift falls on both alike), timed in the thread's CPU
//! time; the figure is the median of the rounds' ratios.
//!
//! Each request's entry is prefetched first, as the listener's worker does for a batch it
//! read (`Handler::prefetch`): one at a time by default, `BATCH=16` for batches of 16 (the most
//! one `recvmmsg` reads), whose probes then overlap.
//!
//!   cargo bench --bench users            # ROUNDS=20 (blocks of 20,000 requests each)
//!   BATCH=16 cargo bench --bench users

// The daemon's allocator and options: what the request path costs depends on them.
#[path = "../src/allocator.rs"]
mod allocator;
mod common;
#[path = "common/fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::time::Duration;

use ravpnd::radius::listener::Port;

use fixture::{nas, user, Fixture};

/// How big a run is: the bench's, or a smoke run's under `cargo test` (no `--bench`).
#[derive(Clone, Copy)]
struct Size {
    all: u32,
    some: u32,
    rounds: usize,
    /// Requests per block.
    block: usize,
    /// Requests prefetched together (`Handler::prefetch`) before the first is handled.
    batch: usize,
}

/// An argon2id hash of the bench password with the cheapest parameters (8 KiB, one pass), so
/// that the first request of 100,000 users takes seconds: the measured ones hit the cache.
fn cheap_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"bench-salt-16byt").unwrap();
    argon
        .hash_password(common::PASSWORD, &salt)
        .unwrap()
        .to_string()
}

fn among_users(size: &Size) {
    let Size {
        all,
        some,
        rounds,
        block,
        batch,
    } = *size;
    let f = Fixture::new(all, &cheap_hash());
    f.lease_all(all);
    let live = f.live();
    let nas = nas(&live);
    let handler = f.handler();
    let source: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut n = 0u64;
    // User `i`'s request with a new authenticator each time (the duplicate cache never
    // answers) and an identifier of its own.
    let mut request = |i: u32| {
        n += 1;
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&n.to_le_bytes());
        a[8..].copy_from_slice(&(n ^ 0x5555_5555_5555_5555).to_le_bytes());
        common::anyconnect_request(&user(i), &common::serial_of(i), n as u8, a)
    };
    // Each user's first request: argon2, the verified credential kept in the entry, the
    // lease found by its device and the hint set.
    for i in 0..all {
        let resp =
            f.rt.block_on(handler.handle_datagram(&request(i), source, &nas, Port::Auth, &live))
                .expect("answered");
        assert_eq!(resp[0], 2, "user {i} must be accepted");
    }
    // Alternating blocks of each, so that the host's drift (this is a shared machine) falls on
    // both alike: the median of the blocks' ratios is the figure. Thread CPU time, so that
    // time the thread spends preempted does not count.
    let (mut k, mut per) = (0u64, [Vec::new(), Vec::new()]);
    for round in 0..rounds {
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let users = [some, all][which];
            // Every user in turn, in a scattered order (7,919 is prime to both counts), as
            // gateways' users come, not in the order the store and the caches were filled.
            let reqs: Vec<_> = (0..block)
                .map(|_| {
                    k += 1;
                    request((k * 7_919 % u64::from(users)) as u32)
                })
                .collect();
            let started = thread_cpu();
            for chunk in reqs.chunks(batch) {
                handler.prefetch(chunk.iter().map(|r| &r[..]));
                for req in chunk {
                    let resp = f.rt.block_on(handler.handle_datagram(
                        req,
                        source,
                        &nas,
                        Port::Auth,
                        &live,
                    ));
                    assert_eq!(resp.map(|r| r[0]), Some(2));
                }
            }
            per[which].push((thread_cpu() - started).as_secs_f64() * 1e6 / block as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ratios: Vec<f64> = per[1].iter().zip(&per[0]).map(|(b, s)| b / s).collect();
    println!(
        "handle_datagram_accept: among {some} users {:.3} µs, among {all} {:.3} µs (medians of {rounds} blocks of {block}, prefetched by {batch}); ratio {:.3} (median of the rounds' ratios)",
        median(&mut per[0].clone()),
        median(&mut per[1].clone()),
        median(&mut ratios)
    );
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) },
        0
    );
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let rounds = std::env::var("ROUNDS").map_or(20, |r| r.parse().expect("ROUNDS"));
    let batch = std::env::var("BATCH").map_or(1, |b| b.parse().expect("BATCH"));
    assert!(
        (1..=ravpnd::store::PREFETCH_KEYS).contains(&batch),
        "BATCH: 1 to {} (the most prefetched at once, as a recvmmsg batch)",
        ravpnd::store::PREFETCH_KEYS
    );
    // `cargo test --benches` runs this without `--bench`: a small run, to show it works.
    let size = if std::env::args().any(|a| a == "--bench") {
        Size {
            all: 100_000,
            some: 1_000,
            rounds,
            block: 20_000,
            batch,
        }
    } else {
        Size {
            all: 2_000,
            some: 100,
            rounds: 2,
            block: 200,
            batch,
        }
    };
    among_users(&size);
}

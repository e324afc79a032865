//! The null responder: a RADIUS server doing only the protocol's own work (frame check,
//! Message-Authenticator, PAP decode, a signed Access-Accept), so a run against it shows the
//! ceiling of this harness on this machine.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ravpnd::radius::batch::Inbox;
use ravpnd::radius::outbox::Outbox;

use crate::wire;

#[derive(Default)]
pub struct Counters {
    pub answered: AtomicU64,
    pub dropped: AtomicU64,
}

/// Serves on `socket` with `threads` threads until `stop` is set or `until` passes. Each
/// blocks on a clone of the socket and moves datagrams as ravpnd does (`radius::batch`, a
/// batch per receive; `radius::outbox`, a batch's replies in one send, segmented per
/// destination), so that the ceiling is the protocol's work on the daemon's own I/O.
/// `reject_every` N > 0: each thread answers its every Nth valid request with an
/// Access-Reject instead (to test what the driver and the scripts make of rejects).
pub fn serve(
    socket: UdpSocket,
    secret: Vec<u8>,
    threads: usize,
    reject_every: u64,
    until: Option<Instant>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    // A short read timeout so the threads notice `stop` and `until`.
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    // The receive buffer ravpnd asks for (src/server.rs), so that a burst queues here as it
    // does there instead of being dropped (dropped requests would not count in the tail).
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20) {
        eprintln!("null responder: cannot enlarge the receive buffer: {e}");
    }
    let secret = Arc::new(secret);
    let mut handles = Vec::new();
    for t in 0..threads.max(1) {
        let sock = socket.try_clone()?;
        let (secret, stop, counters) = (secret.clone(), stop.clone(), counters.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("null-responder-{t}"))
                .spawn(move || {
                    let (mut inbox, mut outbox) = (Inbox::new(Duration::ZERO), Outbox::new(&sock));
                    let mut out = Vec::with_capacity(64);
                    let mut valid = 0u64;
                    while !stop.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u)
                    {
                        let Ok(received) = inbox.receive(&sock) else {
                            continue; // the read timeout, to look at `stop` and `until`
                        };
                        for i in 0..received {
                            let (datagram, from) = inbox.get(i);
                            let reject =
                                reject_every > 0 && (valid + 1).is_multiple_of(reject_every);
                            if wire::null_answer(datagram, &secret, reject, &mut out).is_some() {
                                valid += 1;
                                outbox.push(out.clone(), from);
                                counters.answered.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counters.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        outbox.flush(&sock);
                    }
                })?,
        );
    }
    Ok(handles)
}

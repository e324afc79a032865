//! The client side: worker threads, each with its own non-blocking UDP sockets (one RADIUS
//! identifier space of 256 per socket), closed loop (a fixed number in flight) or open loop
//! (a fixed send rate), no retransmissions.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ravpnd::radius::batch::{Inbox, BATCH};

use crate::stats::Stats;
use crate::wire::{self, Outcome, RequestBuilder};

/// Identifiers one socket may have in flight; the rest of the 256 cover quarantined ones.
pub const MAX_PER_SOCKET: usize = 224;
/// The driver's own receive buffer: big, so that answers are never lost on its side (the
/// kernel caps it at net.core.rmem_max; the servers keep their defaults).
const RECEIVE_BUFFER: libc::c_int = 4 << 20;
/// How often in-flight requests are checked for timeouts.
const TIMEOUT_SCAN: Duration = Duration::from_millis(5);

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Keep this many requests in flight per socket.
    Closed,
    /// Send at this many requests per second (per worker), in flight capped per socket.
    Open { per_worker_rate: f64 },
}

/// When to stop sending measured requests.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Measure for this long after the warm-up.
    After(Duration),
    /// Send this many measured requests (per worker).
    Count(u64),
}

/// One worker's plan: shared by value, each worker starts at the same instant.
#[derive(Clone)]
pub struct Plan {
    pub target: SocketAddr,
    pub builder: Arc<RequestBuilder>,
    pub pace: Pace,
    pub warmup: Duration,
    pub stop: Stop,
    pub timeout: Duration,
    pub require_message_authenticator: bool,
    /// Stop sending at this instant whatever happens (keeps every run bounded).
    pub hard_deadline: Instant,
    pub start: Instant,
    /// Users this worker cycles through: `first, first + step, …` (mod users).
    pub first_user: u32,
    pub user_step: u32,
    /// Only these users, once each (priming the server's caches); overrides `stop`.
    pub once_each: bool,
    /// Poll instead of sleeping until a socket is readable.
    pub spin: bool,
}

#[derive(Clone, Copy)]
struct Slot {
    active: bool,
    measured: bool,
    authenticator: [u8; 16],
    /// When the request was due: its send (closed loop), its scheduled instant (open loop).
    sent: Instant,
    /// When it was handed to the kernel (later than `sent` by the driver's own lateness).
    wire: Instant,
}

/// One socket and its identifier space.
struct Conn {
    sock: UdpSocket,
    slots: Vec<Slot>,
    free: VecDeque<u8>,
    /// Identifiers of timed-out requests, reusable after the instant (a late answer then
    /// counts as stray instead of being mistaken for the answer to a new request).
    quarantine: VecDeque<(Instant, u8)>,
    in_flight: usize,
    cap: usize,
}

impl Conn {
    fn new(target: SocketAddr, cap: usize, now: Instant) -> std::io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            "127.0.0.1:0".parse().expect("literal")
        } else {
            "[::1]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        set_receive_buffer(&sock, RECEIVE_BUFFER);
        // Every answer stamped with its arrival: latency without the driver's own wake-up.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .map_err(std::io::Error::from)?;
        sock.connect(target)?;
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            slots: vec![
                Slot {
                    active: false,
                    measured: false,
                    authenticator: [0; 16],
                    sent: now,
                    wire: now,
                };
                256
            ],
            free: (0..=255u8).collect(),
            quarantine: VecDeque::new(),
            in_flight: 0,
            cap: cap.min(MAX_PER_SOCKET),
        })
    }

    fn can_send(&self) -> bool {
        self.in_flight < self.cap && !self.free.is_empty()
    }
}

/// xorshift64*: request authenticators need only be distinct here, not unpredictable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn authenticator(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.next().to_le_bytes());
        a[8..].copy_from_slice(&self.next().to_le_bytes());
        a
    }
}

/// A worker's result.
pub struct WorkerResult {
    pub stats: Stats,
    /// First and last instant of the measured window (first measured send, end of measuring).
    pub window: Option<(Instant, Instant)>,
}

/// The kernel's default timer slack, which lets it end a sleep up to this late so that
/// wake-ups due close together are taken as one.
pub const COALESCE_NS: libc::c_ulong = 50_000;

/// A worker thread's timer slack. Sleeps end on time (1 ns) where the sends they wait for are
/// the kernel's default slack (50 µs) apart or more: that slack would make each of them up to
/// 50 µs late, counted against the server. Where sends are due more often than that (above
/// 20,000 a second per worker), a wake-up on the nanosecond for each costs the machine more
/// than the lateness it saves: in an A/B at 98,000 req/s over two workers on this 2-CPU host
/// the p99 from the schedule was 1.0–1.5 ms with 1 ns and 0.2–0.4 ms with 50 µs, for ravpnd
/// and the null responder alike, late sends included (docs/PERFORMANCE.md, "The driver's
/// timer slack").
pub fn timer_slack(pace: Pace) -> libc::c_ulong {
    match pace {
        Pace::Open { per_worker_rate } if per_worker_rate * COALESCE_NS as f64 > 1e9 => COALESCE_NS,
        _ => 1,
    }
}

/// Runs one worker to completion on the current thread. `caps` is the in-flight limit of each
/// of its sockets.
pub fn run_worker(plan: Plan, caps: &[usize], seed: u64) -> std::io::Result<WorkerResult> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, timer_slack(plan.pace));
    }
    let mut conns = caps
        .iter()
        .map(|&cap| Conn::new(plan.target, cap, plan.start))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut pfds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut rng = Rng(seed | 1);
    let mut stats = Stats::new();
    let users = plan.builder.users();
    let mut next_user = plan.first_user % users.max(1);
    let mut once_left = if plan.once_each {
        (users.saturating_sub(plan.first_user)).div_ceil(plan.user_step.max(1)) as u64
    } else {
        u64::MAX
    };
    let measure_from = plan.start + plan.warmup;
    let mut measured_sent = 0u64;
    let mut measure_end: Option<Instant> = match plan.stop {
        Stop::After(d) => Some(measure_from + d),
        Stop::Count(_) => None,
    };
    let mut first_measured: Option<Instant> = None;
    let mut sending = true;
    let mut next_scan = plan.start + TIMEOUT_SCAN;
    let mut next_due = plan.start;
    let mut due_count = 0u64;
    let mut rr = 0usize;
    let mut out = Vec::with_capacity(512);
    // The daemon's own batched receive (recvmmsg, kernel stamps); never polls.
    let mut inbox = Inbox::new(Duration::ZERO);

    loop {
        let now = Instant::now();
        // 1. Everything that has arrived.
        for conn in conns.iter_mut() {
            loop {
                let n = match inbox.receive(&conn.sock) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP port unreachable for an earlier send: counted when that times out.
                    Err(_) => break,
                };
                let read = Read::now();
                for i in 0..n {
                    stats.received += 1;
                    let arrived = read.arrival(inbox.arrived(i)).unwrap_or_else(|| {
                        stats.unstamped += 1;
                        read.at
                    });
                    handle_response(conn, inbox.get(i).0, &plan, &mut stats, arrived, read.at);
                }
                if n < BATCH {
                    break;
                }
            }
        }
        // 2. Timeouts, and quarantined identifiers coming back.
        if now >= next_scan {
            next_scan = now + TIMEOUT_SCAN;
            for conn in conns.iter_mut() {
                while conn.quarantine.front().is_some_and(|(t, _)| *t <= now) {
                    let (_, id) = conn.quarantine.pop_front().expect("checked");
                    conn.free.push_back(id);
                }
                for id in 0..256usize {
                    let s = &mut conn.slots[id];
                    if s.active && now.duration_since(s.sent) >= plan.timeout {
                        s.active = false;
                        conn.in_flight -= 1;
                        if s.measured || plan.once_each {
                            stats.timeouts += 1;
                        }
                        if s.measured {
                            stats.record_unanswered(plan.timeout);
                        }
                        conn.quarantine.push_back((now + plan.timeout, id as u8));
                    }
                }
            }
        }
        // 3. Whether measured sending is over.
        if sending {
            let over = now >= plan.hard_deadline
                || once_left == 0
                || match (plan.stop, measure_end) {
                    (_, Some(end)) => now >= end,
                    (Stop::Count(n), None) => measured_sent >= n,
                    (Stop::After(_), None) => false,
                };
            if over {
                sending = false;
                measure_end.get_or_insert(now);
            }
        }
        // 4. Sends.
        if sending {
            match plan.pace {
                Pace::Closed => {
                    'conns: for conn in conns.iter_mut() {
                        while conn.can_send() {
                            if once_left == 0 || stop_count_reached(&plan, measured_sent) {
                                break 'conns;
                            }
                            let sent_at = Instant::now();
                            let measured = sent_at >= measure_from && !plan.once_each;
                            match send_one(
                                conn, &plan, &mut rng, &mut out, next_user, measured, sent_at,
                            ) {
                                Sent::Yes(_) => {}
                                Sent::Full => break,
                                Sent::Error => stats.send_errors += u64::from(measured),
                            }
                            if measured {
                                first_measured.get_or_insert(sent_at);
                                measured_sent += 1;
                            }
                            if measured || plan.once_each {
                                stats.sent += 1;
                            }
                            once_left = once_left.saturating_sub(1);
                            next_user = advance(next_user, &plan, users);
                        }
                    }
                }
                Pace::Open { per_worker_rate } => {
                    let interval_ns = 1e9 / per_worker_rate;
                    while next_due <= Instant::now() && !stop_count_reached(&plan, measured_sent) {
                        let scheduled = next_due;
                        due_count += 1;
                        next_due = plan.start
                            + Duration::from_nanos((due_count as f64 * interval_ns) as u64);
                        let measured = scheduled >= measure_from;
                        if measured {
                            first_measured.get_or_insert(scheduled);
                            measured_sent += 1;
                            stats.sent += 1;
                        }
                        // Round-robin over sockets with a free identifier.
                        let n = conns.len();
                        let Some(k) = (0..n).map(|i| (rr + i) % n).find(|&k| conns[k].can_send())
                        else {
                            if measured {
                                stats.skipped += 1;
                                stats.record_unanswered(plan.timeout);
                            }
                            continue;
                        };
                        rr = k + 1;
                        // Latency counts from the scheduled instant: a late send is the
                        // server's (or the machine's) delay too, not hidden (coordinated omission).
                        match send_one(
                            &mut conns[k],
                            &plan,
                            &mut rng,
                            &mut out,
                            next_user,
                            measured,
                            scheduled,
                        ) {
                            Sent::Yes(wire) if measured => {
                                stats.record_lateness(wire.saturating_duration_since(scheduled));
                            }
                            Sent::Yes(_) => {}
                            Sent::Full if measured => {
                                stats.skipped += 1;
                                stats.record_unanswered(plan.timeout);
                            }
                            Sent::Full => {}
                            Sent::Error => stats.send_errors += u64::from(measured),
                        }
                        next_user = advance(next_user, &plan, users);
                    }
                }
            }
        }
        // 5. Done when nothing is in flight any more.
        let in_flight: usize = conns.iter().map(|c| c.in_flight).sum();
        if !sending && in_flight == 0 {
            break;
        }
        if !sending && Instant::now() >= plan.hard_deadline + plan.timeout * 2 {
            break;
        }
        // 6. Sleep until a socket is readable or something is due.
        let now = Instant::now();
        let mut wake = next_scan;
        if sending {
            if let Pace::Open { .. } = plan.pace {
                wake = wake.min(next_due);
            }
            if let Some(end) = measure_end {
                wake = wake.min(end);
            }
            if matches!(plan.pace, Pace::Closed) && conns.iter().any(Conn::can_send) {
                // A send was refused for a full buffer: retry soon.
                wake = wake.min(now + Duration::from_micros(50));
            }
        }
        if plan.spin {
            std::hint::spin_loop();
        } else if wake > now {
            wait_readable(&mut pfds, wake - now);
        }
    }
    let window = first_measured.map(|f| (f, measure_end.unwrap_or_else(Instant::now).max(f)));
    Ok(WorkerResult { stats, window })
}

fn stop_count_reached(plan: &Plan, measured_sent: u64) -> bool {
    matches!(plan.stop, Stop::Count(n) if measured_sent >= n)
}

fn advance(user: u32, plan: &Plan, users: u32) -> u32 {
    let next = user + plan.user_step;
    if plan.once_each {
        next
    } else {
        next % users
    }
}

enum Sent {
    /// Handed to the kernel at that instant.
    Yes(Instant),
    /// The socket buffer is full; try again later (nothing was sent).
    Full,
    Error,
}

fn send_one(
    conn: &mut Conn,
    plan: &Plan,
    rng: &mut Rng,
    out: &mut Vec<u8>,
    user: u32,
    measured: bool,
    sent_at: Instant,
) -> Sent {
    let id = *conn.free.front().expect("caller checked can_send");
    let authenticator = rng.authenticator();
    plan.builder.build(out, user, id, &authenticator);
    let wire = Instant::now();
    loop {
        match conn.sock.send(out) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Sent::Full,
            // ECONNREFUSED: an earlier datagram met a closed port. This one was not sent.
            Err(_) => return Sent::Error,
        }
    }
    conn.free.pop_front();
    conn.slots[id as usize] = Slot {
        active: true,
        measured,
        authenticator,
        sent: sent_at,
        wire,
    };
    conn.in_flight += 1;
    Sent::Yes(wire)
}

/// When a batch of answers was read, on both clocks: the kernel stamps arrivals on the
/// realtime clock, the driver times requests on the monotonic one.
struct Read {
    at: Instant,
    wall: SystemTime,
}

impl Read {
    /// Both clocks read together: the realtime one between two readings of the monotonic one,
    /// taken again (up to three times) when those are more than 5 µs apart — the thread was
    /// preempted in between, and an arrival converted through such a pair would come early.
    fn now() -> Self {
        let mut tries = 0;
        loop {
            let before = Instant::now();
            let wall = SystemTime::now();
            let after = Instant::now();
            tries += 1;
            if after - before <= Duration::from_micros(5) || tries == 3 {
                return Self {
                    at: before + (after - before) / 2,
                    wall,
                };
            }
        }
    }

    /// An answer's arrival on the monotonic clock: its stamp's age at the read, taken from the
    /// read. (Converting through one offset fixed at the start would take in any slewing of
    /// the realtime clock since; an age of microseconds does not.) None without a stamp, or
    /// with one after the read (the realtime clock stepped back).
    fn arrival(&self, stamp: Option<SystemTime>) -> Option<Instant> {
        let age = self.wall.duration_since(stamp?).ok()?;
        self.at.checked_sub(age)
    }
}

/// For the self-test: a stamp's age is taken from the read; no stamp, or one after the
/// read, gives none (the caller then counts the answer at its read, as unstamped).
pub fn check_arrival() -> Result<(), String> {
    let read = Read::now();
    let age = Duration::from_micros(250);
    let got = [
        read.arrival(Some(read.wall - age)),
        read.arrival(None),
        read.arrival(Some(read.wall + age)),
    ];
    if got != [Some(read.at - age), None, None] {
        return Err(format!(
            "got {:?} for a stamp 250 µs old, none, one 250 µs ahead",
            got.map(|t| t.map(|t| read.at.saturating_duration_since(t)))
        ));
    }
    Ok(())
}

fn handle_response(
    conn: &mut Conn,
    resp: &[u8],
    plan: &Plan,
    stats: &mut Stats,
    arrived: Instant,
    read: Instant,
) {
    if resp.len() < 2 {
        *stats.invalid.entry("framing").or_default() += 1;
        return;
    }
    let id = resp[1];
    let slot = conn.slots[id as usize];
    if !slot.active {
        stats.stray += 1;
        return;
    }
    let outcome = wire::check_response(
        resp,
        id,
        &slot.authenticator,
        plan.builder.secret(),
        plan.require_message_authenticator,
    );
    conn.slots[id as usize].active = false;
    conn.in_flight -= 1;
    conn.free.push_back(id);
    if !slot.measured {
        if plan.once_each {
            // Priming: only the outcome matters.
            match outcome {
                Outcome::Accept => stats.accept += 1,
                Outcome::Reject => {
                    stats.reject += 1;
                    if stats.first_reject.is_none() {
                        stats.first_reject = Some(wire::reply_message(resp).unwrap_or_default());
                    }
                }
                Outcome::Invalid(why) => *stats.invalid.entry(why).or_default() += 1,
            }
        }
        return;
    }
    match outcome {
        Outcome::Accept => stats.accept += 1,
        Outcome::Reject => {
            stats.reject += 1;
            if stats.first_reject.is_none() {
                stats.first_reject = Some(wire::reply_message(resp).unwrap_or_default());
            }
        }
        Outcome::Invalid(why) => {
            *stats.invalid.entry(why).or_default() += 1;
            return;
        }
    }
    if arrived < slot.wire {
        stats.before_send += 1;
    }
    stats.record_latency(
        arrived.saturating_duration_since(slot.sent),
        read.saturating_duration_since(slot.sent),
        arrived.saturating_duration_since(slot.wire),
    );
}

fn set_receive_buffer(sock: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits up to `timeout` (nanosecond precision: ppoll) for any socket to become readable.
fn wait_readable(pfds: &mut [libc::pollfd], timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfd for the call's duration;
    // `ts` outlives the call; a null signal mask means "leave the mask unchanged".
    unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

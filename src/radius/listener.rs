//! The UDP request path, cheapest checks first: known NAS → framing → authenticators →
//! duplicate cache → full decode → policy (or accounting) → signed reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use radius::core::packet::Packet;
use std::future::Future;
use std::net::UdpSocket;
use std::task::{Context, Poll, Waker};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::batch::{Inbox, BATCH};
use super::dedup::{DedupCache, Key, Seen, Ticket};
use super::nas::{Nas, NasTable};
use super::outbox::Outbox;
use super::packet::{Attributes, Frame};
use super::{crypto, dict, pinning};
use crate::accounting;
use crate::metrics::{DropCause, METRICS};
use crate::policy::{AccessRequest, Decision, Policy, Reason, Settings};
use crate::reply::{self, Original, ReplyContext};

/// Most responses kept for duplicate detection; bounds memory under floods.
const DEDUP_CAPACITY: usize = 65_536;

// A batch's entries are prefetched with one call (`Handler::prefetch`).
const _: () = assert!(BATCH <= crate::store::PREFETCH_KEYS);

/// Which socket a datagram came in on; each accepts its own packet codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Auth,
    Acct,
}

/// The reloadable part: NAS table and settings, swapped whole on SIGHUP. A request holds
/// the version it started with until it is answered.
pub struct Live {
    pub nas: NasTable,
    pub settings: Settings,
}

/// What the synchronous checks make of a datagram.
enum Triage {
    /// Answer at once with this (`None`: drop).
    Answer(Option<Vec<u8>>),
    /// A new request to decide.
    Work(Work),
}

/// A new, authentic request, registered in the duplicate cache.
struct Work {
    /// The request as framed (copied: the receive buffer is reused for the next batch).
    bytes: Vec<u8>,
    /// Accounting-Requests only, decoded in full: the record reads many attributes.
    /// Access-Requests are read in place (`Attributes`).
    accounting: Option<Packet>,
    /// The request carries Proxy-States, which the response echoes.
    proxy_state: bool,
    key: Key,
    ticket: Ticket,
    started: Instant,
}

/// Everything the request path needs, shared by all in-flight requests.
pub struct Handler {
    live: ArcSwap<Live>,
    dedup: DedupCache,
    policy: Policy,
    request_timeout: Duration,
    /// After a request's arrival, when its directory check is given up on.
    directory_deadline: Duration,
    unknown_log: RateLimit,
    /// Requests dropped for want of a Message-Authenticator, said at warn level: a gateway
    /// that never sends one (radcli before 1.4) would otherwise fail without a word.
    missing_ma_log: RateLimit,
}

impl Handler {
    pub fn new(
        live: Live,
        policy: Policy,
        dedup_window: Duration,
        request_timeout: Duration,
    ) -> Self {
        Self {
            live: ArcSwap::from_pointee(live),
            dedup: DedupCache::new(dedup_window, DEDUP_CAPACITY)
                .with_request_timeout(request_timeout),
            policy,
            request_timeout,
            directory_deadline: crate::config::directory_deadline(request_timeout),
            unknown_log: RateLimit::new(Duration::from_secs(10)),
            missing_ma_log: RateLimit::new(Duration::from_secs(60)),
        }
    }

    /// Installs a new configuration for requests that start from now on.
    pub fn reload(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Starts loading the entries of the users the Access-Requests among `datagrams` name (the
    /// first `store::PREFETCH_KEYS` with a UTF-8 User-Name), the datagrams unchecked (a hint: it
    /// reads nothing the request path relies on). The worker calls it with a whole batch before
    /// handling the first datagram: the batch's table probes then overlap, and the MD5 rounds
    /// of each request's checks hide what is left of its wait (among 100,000 users the entries
    /// are rarely in cache).
    pub fn prefetch<'a>(&self, datagrams: impl IntoIterator<Item = &'a [u8]>) {
        self.policy.prefetch_users(
            datagrams
                .into_iter()
                .filter(|d| d.first() == Some(&dict::code::ACCESS_REQUEST))
                .filter_map(|d| Attributes::first(d, dict::USER_NAME)),
        );
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Frees the duplicate cache's expired answers: else kept after a burst until the next.
    pub fn sweep_duplicates(&self) {
        self.dedup.sweep(Instant::now());
    }

    /// Handles one datagram from a known NAS; `None` means drop silently. The worker threads
    /// run the same three steps, but prefetch their batch's entries first (`prefetch`) and poll
    /// `process` inline (see `receive`).
    pub async fn handle_datagram(
        &self,
        datagram: &[u8],
        source: SocketAddr,
        nas: &Nas,
        port: Port,
        live: &Live,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let work = match self.triage(datagram, source, nas, port, started) {
            Triage::Work(w) => w,
            Triage::Answer(r) => return r,
        };
        let processed = tokio::time::timeout_at(
            (started + self.request_timeout).into(),
            self.process(&work, nas, live),
        )
        .await;
        self.finish(&work.key, work.ticket, started, nas, processed.ok())
    }

    /// The cheap synchronous checks, in order: framing, packet code for this port,
    /// authenticators, decoding, Status-Server, duplicate cache.
    fn triage(
        &self,
        datagram: &[u8],
        source: SocketAddr,
        nas: &Nas,
        port: Port,
        started: Instant,
    ) -> Triage {
        let frame = match Frame::parse(datagram) {
            Ok(f) => f,
            Err(e) => return drop_it(DropCause::Malformed, source, nas, &e),
        };
        let code = frame.code();
        let accepted = match port {
            Port::Auth => matches!(code, dict::code::ACCESS_REQUEST | dict::code::STATUS_SERVER),
            Port::Acct => matches!(
                code,
                dict::code::ACCOUNTING_REQUEST | dict::code::STATUS_SERVER
            ),
        };
        if !accepted {
            return drop_it(DropCause::UnsupportedCode, source, nas, &code);
        }
        let secret = nas.secret.expose().as_bytes();
        if frame.proxy_state > reply::MAX_PROXY_STATE {
            return drop_it(
                DropCause::Malformed,
                source,
                nas,
                &"Proxy-State too long to echo",
            );
        }
        if code == dict::code::ACCOUNTING_REQUEST {
            // The Request Authenticator covers the whole packet (RFC 2866 §3); a
            // Message-Authenticator, when sent, must be right too.
            if !crypto::verify_accounting_request(frame.bytes, secret) {
                return drop_it(DropCause::BadAuthenticator, source, nas, &"");
            }
            if let Some(off) = frame.message_authenticator {
                if !crypto::verify_accounting_message_authenticator(frame.bytes, off, secret) {
                    return drop_it(DropCause::BadMessageAuthenticator, source, nas, &"");
                }
            }
        } else {
            match frame.message_authenticator {
                Some(off)
                    if !crypto::verify_request_message_authenticator(frame.bytes, off, secret) =>
                {
                    return drop_it(DropCause::BadMessageAuthenticator, source, nas, &"");
                }
                Some(_) => {}
                // RFC 5997 §3: Status-Server without Message-Authenticator "MUST be silently
                // discarded"; BlastRADIUS: so must Access-Requests from clients that require it;
                // RFC 3579 §3.2: so should any with an EAP-Message.
                None if nas.require_message_authenticator
                    || code == dict::code::STATUS_SERVER
                    || frame.eap =>
                {
                    if let Some(suppressed) = self.missing_ma_log.allow() {
                        warn!(
                            client = %nas.name,
                            suppressed,
                            "dropped a request without Message-Authenticator (required for this \
                             client; ocserv's radcli before 1.4 sends none: set \
                             require_message_authenticator = false for it)"
                        );
                    }
                    return drop_it(DropCause::MissingMessageAuthenticator, source, nas, &"");
                }
                None => {}
            }
        }
        let accounting = if code == dict::code::ACCOUNTING_REQUEST {
            match Packet::decode(frame.bytes, secret) {
                Ok(p) => Some(p),
                Err(e) => return drop_it(DropCause::Malformed, source, nas, &e),
            }
        } else {
            None
        };
        if code == dict::code::STATUS_SERVER {
            METRICS.status_server.inc();
            let original = Original::of(&frame, secret);
            return Triage::Answer(Some(reply::status_response(&original, port == Port::Acct)));
        }

        let key = Key {
            source,
            code,
            identifier: frame.identifier(),
            authenticator: frame.authenticator(),
        };
        match self.dedup.begin(key, started) {
            Seen::New(ticket) => Triage::Work(Work {
                bytes: frame.bytes.to_vec(),
                proxy_state: frame.proxy_state > 0,
                accounting,
                key,
                ticket,
                started,
            }),
            Seen::InProgress => drop_it(DropCause::DuplicateInProgress, source, nas, &""),
            Seen::Answered(kept) => {
                METRICS.duplicates_answered.inc();
                debug!(client = %nas.name, %source, "duplicate answered from cache");
                let original = Original::of(&frame, secret);
                Triage::Answer(Some(reply::resigned(&original, &kept)))
            }
        }
    }

    /// The decision (or accounting record) and its signed response; `None`: no answer.
    async fn process(&self, work: &Work, nas: &Nas, live: &Live) -> Option<Vec<u8>> {
        // The identifier and authenticator, read once by `triage` for the duplicate key.
        let original = Original {
            identifier: work.key.identifier,
            authenticator: work.key.authenticator,
            secret: nas.secret.expose().as_bytes(),
            proxy_state: work.proxy_state.then_some(&work.bytes),
        };
        match &work.accounting {
            Some(packet) => {
                self.handle_accounting(packet, &original, nas, work.started)
                    .await
            }
            None => Some(
                self.handle_access(&work.bytes, &original, nas, live, work.started)
                    .await,
            ),
        }
    }

    /// Records the outcome in the duplicate cache and metrics. `processed` is `None` when
    /// the request ran out of time. `since`: when the datagram arrived (or, not known, was read).
    fn finish(
        &self,
        key: &Key,
        ticket: Ticket,
        since: Instant,
        nas: &Nas,
        processed: Option<Option<Vec<u8>>>,
    ) -> Option<Vec<u8>> {
        match processed {
            Some(Some(response)) => {
                let now = Instant::now();
                self.dedup
                    .complete(ticket, &reply::kept(&response).parts(), now);
                nas.requests.inc();
                METRICS
                    .request_seconds
                    .observe(now.saturating_duration_since(since).as_secs_f64());
                Some(response)
            }
            Some(None) => {
                self.dedup.abandon(ticket);
                None
            }
            None => {
                self.dedup.abandon(ticket);
                record_drop(DropCause::Timeout, key.source, nas, &"");
                None
            }
        }
    }

    async fn handle_access(
        &self,
        packet: &[u8],
        original: &Original<'_>,
        nas: &Nas,
        live: &Live,
        started: Instant,
    ) -> Vec<u8> {
        // A directory check that would outlast the request is given up on first, so the
        // gateway gets an answer (`config::directory_deadline`).
        let deadline = started + self.directory_deadline;
        let (user, decision) = self
            .decide(packet, original, nas, &live.settings, deadline)
            .await;
        let ctx = ReplyContext {
            kind: nas.kind,
            dns: &live.settings.dns,
            interim_interval: live.settings.interim_interval,
        };
        let response = reply::access_response(original, &decision, &ctx);
        let (reason, address, device) = match &decision {
            Decision::Accept(plan) => (
                Reason::Accepted,
                plan.address.as_ref().map(|a| a.addr),
                Some(plan.device_name()),
            ),
            Decision::Reject(r) => (*r, None, None),
        };
        METRICS.access(reason).inc();
        info!(
            client = %nas.name,
            user = ?user,
            outcome = if reason == Reason::Accepted { "accept" } else { "reject" },
            reason = reason.label(),
            device,
            address = address.map(tracing::field::display),
            us = started.elapsed().as_micros() as u64,
            "access decision"
        );
        response
    }

    async fn handle_accounting(
        &self,
        packet: &Packet,
        original: &Original<'_>,
        nas: &Nas,
        started: Instant,
    ) -> Option<Vec<u8>> {
        match accounting::handle_accounting(
            &self.policy,
            packet,
            &nas.name,
            crate::store::now_secs(),
        )
        .await
        {
            Ok(s) => {
                METRICS.accounting.with_label_values(&[s.status]).inc();
                info!(
                    client = %nas.name,
                    user = ?s.user,
                    status = s.status,
                    session = ?s.session_id,
                    address = s.framed_ip.map(tracing::field::display),
                    lease = s.matched,
                    us = started.elapsed().as_micros() as u64,
                    "accounting"
                );
                Some(reply::accounting_response(original))
            }
            Err(e) => {
                // Not recorded: no answer, so the NAS retransmits (RFC 2866 §4.1).
                warn!(client = %nas.name, error = %e, "accounting request not recorded");
                METRICS.dropped(DropCause::NotRecorded).inc();
                None
            }
        }
    }

    /// Extracts the user and password and asks the policy. Returns the user name as seen
    /// (lossily decoded, for the log line) with the decision.
    async fn decide(
        &self,
        packet: &[u8],
        original: &Original<'_>,
        nas: &Nas,
        settings: &Settings,
        directory_deadline: Instant,
    ) -> (String, Decision) {
        let Some(raw_user) = Attributes::first(packet, dict::USER_NAME) else {
            return (String::new(), Decision::Reject(Reason::MissingUserName));
        };
        let Ok(user) = std::str::from_utf8(raw_user) else {
            return (
                String::from_utf8_lossy(raw_user).into_owned(),
                Decision::Reject(Reason::InvalidUserName),
            );
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return (user.to_owned(), Decision::Reject(Reason::InvalidUserName));
        }
        let Some(hidden) = Attributes::first(packet, dict::USER_PASSWORD) else {
            return (user.to_owned(), Decision::Reject(Reason::MissingPassword));
        };
        let mut password = crypto::PapPassword::new();
        if password
            .decode(hidden, original.secret, &original.authenticator)
            .is_err()
        {
            return (user.to_owned(), Decision::Reject(Reason::MalformedPassword));
        }
        let avpairs = dict::cisco_avpairs(Attributes::of(packet));
        let request = AccessRequest {
            user_name: user,
            password: &password[..],
            avpairs: &avpairs,
            nas,
            now: crate::store::now_secs(),
            directory_deadline: Some(directory_deadline),
        };
        (
            user.to_owned(),
            self.policy.authorize(&request, settings).await,
        )
    }
}

fn drop_it(
    cause: DropCause,
    source: SocketAddr,
    nas: &Nas,
    detail: &dyn std::fmt::Debug,
) -> Triage {
    record_drop(cause, source, nas, detail);
    Triage::Answer(None)
}

fn record_drop(cause: DropCause, source: SocketAddr, nas: &Nas, detail: &dyn std::fmt::Debug) {
    METRICS.dropped(cause).inc();
    debug!(client = %nas.name, %source, cause = cause.label(), ?detail, "dropped");
}

/// How long a worker blocks in a receive before it looks at the shutdown token.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// What the worker threads of one socket share.
pub struct Listener {
    pub socket: Arc<UdpSocket>,
    pub port: Port,
    pub handler: Arc<Handler>,
    /// Bounds the requests that had to wait (directory, argon2, durable write).
    pub permits: Arc<Semaphore>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub runtime: tokio::runtime::Handle,
    /// How long a worker polls before it sleeps (`[radius] busy_poll`).
    pub busy_poll: Duration,
    /// Datagrams queued longer than this are dropped unread (`[radius] max_queue_delay`).
    pub max_queue_delay: Duration,
    /// One CPU per worker of this socket when they are one per CPU (`pinning`).
    pub pin_workers: bool,
}

/// Starts `workers` threads receiving on the socket until `shutdown`.
///
/// Each thread blocks in a batched receive (`batch::Inbox`: the kernel wakes one thread, no
/// reactor or task hand-off) and polls each request's future once, in place: a request that
/// needs nothing slow (a cached credential, a lease renewal) is answered from that thread, its
/// reply sent with the rest of the batch's (`outbox::Outbox`). Only a
/// request that has to wait becomes a task on the runtime, holding a permit; the one that
/// finds every permit taken runs all the same (it may hold a lock already), and its thread
/// stops reading until a permit is free: the kernel buffer absorbs the burst.
pub fn serve(
    listener: Arc<Listener>,
    workers: usize,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    listener.socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
    let workers = workers.max(1);
    let (kind, what) = if listener.port == Port::Auth {
        ("auth", "authentication")
    } else {
        ("acct", "accounting")
    };
    let cpus = listener
        .pin_workers
        .then(|| pinning::plan(workers, pinning::allowed_cpus()))
        .flatten();
    if let Some(cpus) = &cpus {
        info!(?cpus, "pinning the RADIUS {what} workers, one per CPU");
    }
    (0..workers)
        .map(|i| {
            let l = listener.clone();
            let cpu = cpus.as_ref().map(|c| c[i]);
            std::thread::Builder::new()
                .name(format!("radius-{kind}-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = pinning::pin_current_thread(cpu) {
                            warn!(cpu, error = %e, "cannot pin a RADIUS worker to its CPU; it runs unpinned");
                        }
                    }
                    worker(&l)
                })
        })
        .collect()
}

fn worker(l: &Arc<Listener>) {
    let _runtime = l.runtime.enter();
    let (mut inbox, mut outbox) = (Inbox::new(l.busy_poll), Outbox::new(&l.socket));
    while !l.shutdown.is_cancelled() {
        let received = match inbox.receive(&l.socket) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                debug!(error = %e, "recvmmsg failed");
                continue;
            }
        };
        let (now, read_at) = (SystemTime::now(), Instant::now());
        let waits: [Option<Duration>; BATCH] = std::array::from_fn(|i| {
            (i < received)
                .then(|| waited(inbox.arrived(i), now))
                .flatten()
        });
        if l.port == Port::Auth {
            l.handler.prefetch(
                (0..received)
                    .filter(|&i| !too_late(waits[i], l.max_queue_delay))
                    .map(|i| inbox.get(i).0),
            );
        }
        for (i, &waited) in waits.iter().enumerate().take(received) {
            let (datagram, source) = inbox.get(i);
            if let Some(w) = waited {
                METRICS.queue_seconds.observe(w.as_secs_f64());
            }
            if too_late(waited, l.max_queue_delay) {
                METRICS.dropped(DropCause::QueueDelay).inc();
                debug!(%source, "dropped unread: queued longer than max_queue_delay");
                continue;
            }
            // A bug must cost one request, not a worker thread.
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let arrived = waited.and_then(|w| read_at.checked_sub(w));
                receive(l, datagram, source, arrived, &mut outbox)
            }));
            match handled {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => {
                    outbox.flush(&l.socket);
                    return;
                }
                Err(_) => {
                    error!(%source, "request handling panicked; request dropped");
                    METRICS.dropped(DropCause::Internal).inc();
                }
            }
        }
        outbox.flush(&l.socket);
    }
}

enum Flow {
    Continue,
    Stop,
}

/// How long a datagram that arrived at `arrived` has waited by `now` (unknown without an
/// arrival time). The kernel stamps with the wall clock: after a step backwards, unknown; a
/// step forward counts as waiting, for what is queued at that moment.
fn waited(arrived: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    now.duration_since(arrived?).ok()
}

/// Whether a datagram waited longer than `max` (never when `max` is zero or the wait is
/// unknown). A wall-clock step forward by more than `max` drops what is queued at that moment,
/// once.
fn too_late(waited: Option<Duration>, max: Duration) -> bool {
    !max.is_zero() && waited.is_some_and(|w| w > max)
}

/// One datagram: answered here if nothing has to wait, else handed to the runtime.
/// `arrived`: when the kernel queued it, if known (for the latency metric only).
fn receive(
    l: &Arc<Listener>,
    datagram: &[u8],
    source: SocketAddr,
    arrived: Option<Instant>,
    outbox: &mut Outbox,
) -> Flow {
    let live = l.handler.live();
    let Some(nas) = live.nas.lookup(source.ip()).cloned() else {
        METRICS.dropped(DropCause::UnknownClient).inc();
        if let Some(suppressed) = l.handler.unknown_log.allow() {
            warn!(%source, suppressed, "dropped request from unknown client");
        }
        return Flow::Continue;
    };
    let started = Instant::now();
    let since = arrived.unwrap_or(started);
    let work = match l.handler.triage(datagram, source, &nas, l.port, started) {
        Triage::Answer(Some(response)) => {
            outbox.push(response, source);
            return Flow::Continue;
        }
        Triage::Answer(None) => return Flow::Continue,
        Triage::Work(w) => w,
    };
    let (key, ticket) = (work.key, work.ticket);
    let mut pending = Box::pin(request(l.handler.clone(), work, nas.clone(), live));
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(processed) = pending.as_mut().poll(&mut cx) {
        if let Some(response) = l.handler.finish(&key, ticket, since, &nas, Some(processed)) {
            outbox.push(response, source);
        }
        return Flow::Continue;
    }
    // Polled once, the future may hold a lock the requests holding the permits wait for (the
    // store's commit lock, say): it runs now, permit or not. Without one, this worker waits
    // for the next free permit before it reads on (the kernel buffer absorbs the burst) and
    // hands it to the task: at most one request per worker runs beyond `max_in_flight`, and
    // only until a permit frees.
    let held = Arc::new(parking_lot::Mutex::new(
        l.permits.clone().try_acquire_owned().ok(),
    ));
    let over_limit = held.lock().is_none();
    let (socket, handler) = (l.socket.clone(), l.handler.clone());
    let deadline = started + handler.request_timeout;
    let permit = held.clone();
    l.tracker.spawn_on(
        async move {
            let _permit = permit;
            let processed = tokio::time::timeout_at(deadline.into(), pending).await.ok();
            if let Some(response) = handler.finish(&key, ticket, since, &nas, processed) {
                send(&socket, &response, source);
            }
        },
        &l.runtime,
    );
    if over_limit {
        // The answers already made must not wait for a permit.
        outbox.flush(&l.socket);
        match l.runtime.block_on(l.permits.clone().acquire_owned()) {
            // Released when the task ends (at once, if it has).
            Ok(p) => *held.lock() = Some(p),
            Err(_) => return Flow::Stop,
        }
    }
    Flow::Continue
}

/// A request's decision, as one future that owns what it borrows. Every request's is boxed
/// (`receive`: polled once here, handed to the runtime if it has to wait), so its size is a
/// copy and an allocation per request: the slow paths it may take (a directory's bind, an
/// argon2 run) are boxed where they are awaited, so as not to make every request's future as
/// large as theirs (7 KB with a directory's bind inline; a test keeps it small).
async fn request(
    handler: Arc<Handler>,
    work: Work,
    nas: Arc<Nas>,
    live: Arc<Live>,
) -> Option<Vec<u8>> {
    handler.process(&work, &nas, &live).await
}

/// UDP sends do not block in practice (the socket buffer drains at wire speed); a failure
/// is the same as a lost datagram: the NAS retransmits.
fn send(socket: &UdpSocket, response: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(response, to) {
        debug!(%to, error = %e, "send_to failed");
    }
}

/// Lets one log line through per interval and counts the ones held back.
struct RateLimit {
    interval_ms: u64,
    epoch: Instant,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since last time)` when a line may be written now.
    fn allow(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64 + self.interval_ms;
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn output_size<A, B, C, D, F, G: FnOnce(A, B, C, D) -> F>(_: &G) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_requests_future_stays_small() {
        // What `receive` boxes for every request (it must keep building it with `request`):
        // 1,488 bytes in debug and release builds alike; 7,264 with a directory's bind awaited
        // inline. The bound leaves room for a compiler's differences, not for a slow path's
        // future inline.
        let size = output_size(&request);
        assert!(size <= 2048, "a request's future is {size} bytes");
    }

    #[test]
    fn too_late_only_past_the_limit_and_only_when_known() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(2);
        let late = |now| too_late(waited(Some(at), now), max);
        assert!(!late(at + max), "exactly the limit is in time");
        assert!(late(at + max + Duration::from_millis(1)));
        assert!(
            !too_late(waited(None, at + Duration::from_secs(60)), max),
            "no timestamp"
        );
        assert!(
            !too_late(
                waited(Some(at), at + Duration::from_secs(60)),
                Duration::ZERO
            ),
            "off"
        );
        assert!(!late(at - Duration::from_secs(60)), "clock stepped back");
        assert_eq!(waited(Some(at), at - Duration::from_secs(1)), None);
        assert_eq!(
            waited(Some(at), at + Duration::from_millis(3)),
            Some(Duration::from_millis(3))
        );
    }
}

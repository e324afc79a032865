//! The UDP request path, cheapest checks first: known NAS → framing → authenticators →
//! duplicate cache → full decode → policy (or accounting) → signed reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use radius::core::packet::Packet;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::dedup::{DedupCache, Key, Seen};
use super::nas::{Nas, NasTable};
use super::packet::{Frame, MAX_LEN};
use super::{crypto, dict};
use crate::accounting;
use crate::metrics::{DropCause, METRICS};
use crate::policy::{AccessRequest, Decision, Policy, Reason, Settings};
use crate::reply::{self, ReplyContext};

/// Most responses kept for duplicate detection; bounds memory under floods.
const DEDUP_CAPACITY: usize = 65_536;

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

/// Everything the request path needs, shared by all in-flight requests.
pub struct Handler {
    live: ArcSwap<Live>,
    dedup: DedupCache,
    policy: Policy,
    request_timeout: Duration,
    unknown_log: RateLimit,
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
            dedup: DedupCache::new(dedup_window, DEDUP_CAPACITY),
            policy,
            request_timeout,
            unknown_log: RateLimit::new(Duration::from_secs(10)),
        }
    }

    /// Installs a new configuration for requests that start from now on.
    pub fn reload(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Handles one datagram from a known NAS; `None` means drop silently.
    pub async fn handle_datagram(
        &self,
        datagram: &[u8],
        source: SocketAddr,
        nas: &Nas,
        port: Port,
        live: &Live,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
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
        if code == dict::code::ACCOUNTING_REQUEST {
            // The Request Authenticator covers the whole packet (RFC 2866 §3).
            if !crypto::verify_accounting_request(frame.bytes, secret) {
                return drop_it(DropCause::BadAuthenticator, source, nas, &"");
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
                // discarded"; BlastRADIUS: so must Access-Requests from clients that require it.
                None if nas.require_message_authenticator || code == dict::code::STATUS_SERVER => {
                    return drop_it(DropCause::MissingMessageAuthenticator, source, nas, &"");
                }
                None => {}
            }
        }
        let packet = match Packet::decode(frame.bytes, secret) {
            Ok(p) => p,
            Err(e) => return drop_it(DropCause::Malformed, source, nas, &e),
        };
        if code == dict::code::STATUS_SERVER {
            METRICS.status_server.inc();
            return Some(reply::status_response(&packet, port == Port::Acct));
        }

        let key = Key {
            source,
            code,
            identifier: frame.identifier(),
            authenticator: frame.authenticator(),
        };
        match self.dedup.begin(key, started) {
            Seen::New => {}
            Seen::InProgress => return drop_it(DropCause::DuplicateInProgress, source, nas, &""),
            Seen::Answered(resp) => {
                METRICS.duplicates_answered.inc();
                debug!(client = %nas.name, %source, "duplicate answered from cache");
                return Some(resp);
            }
        }
        let work = async {
            if code == dict::code::ACCOUNTING_REQUEST {
                self.handle_accounting(&packet, nas, started).await
            } else {
                Some(
                    self.handle_access(&packet, &key.authenticator, nas, live, started)
                        .await,
                )
            }
        };
        let response = match tokio::time::timeout(self.request_timeout, work).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.dedup.abandon(&key);
                return None;
            }
            Err(_) => {
                self.dedup.abandon(&key);
                return drop_it(DropCause::Timeout, source, nas, &"");
            }
        };
        self.dedup.complete(&key, &response);
        METRICS
            .client_requests
            .with_label_values(&[&nas.name])
            .inc();
        METRICS
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        Some(response)
    }

    async fn handle_access(
        &self,
        packet: &Packet,
        authenticator: &[u8; 16],
        nas: &Nas,
        live: &Live,
        started: Instant,
    ) -> Vec<u8> {
        let (user, decision) = self
            .decide(packet, authenticator, nas, &live.settings)
            .await;
        let ctx = ReplyContext {
            kind: nas.kind,
            dns: &live.settings.dns,
            interim_interval: live.settings.interim_interval,
        };
        let response = reply::access_response(packet, &decision, &ctx);
        let (reason, address) = match &decision {
            Decision::Accept(plan) => (Reason::Accepted, plan.address.as_ref().map(|a| a.addr)),
            Decision::Reject(r) => (*r, None),
        };
        METRICS.access(reason).inc();
        info!(
            client = %nas.name,
            user = ?user,
            outcome = if reason == Reason::Accepted { "accept" } else { "reject" },
            reason = reason.label(),
            address = ?address,
            us = started.elapsed().as_micros() as u64,
            "access decision"
        );
        response
    }

    async fn handle_accounting(
        &self,
        packet: &Packet,
        nas: &Nas,
        started: Instant,
    ) -> Option<Vec<u8>> {
        match accounting::handle_accounting(
            self.policy.ipam(),
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
                    address = ?s.framed_ip,
                    lease = s.matched,
                    us = started.elapsed().as_micros() as u64,
                    "accounting"
                );
                Some(reply::accounting_response(packet))
            }
            Err(e) => {
                // Not recorded: no answer, so the NAS retransmits (RFC 2866 §4.1).
                warn!(client = %nas.name, error = %e, "accounting request not recorded");
                None
            }
        }
    }

    /// Extracts the user and password and asks the policy. Returns the user name as seen
    /// (lossily decoded, for the log line) with the decision.
    async fn decide(
        &self,
        packet: &Packet,
        authenticator: &[u8; 16],
        nas: &Nas,
        settings: &Settings,
    ) -> (String, Decision) {
        let secret = nas.secret.expose().as_bytes();
        let Some(raw_user) = packet.lookup(dict::USER_NAME).map(|a| a.encode_bytes()) else {
            return (String::new(), Decision::Reject(Reason::MissingUserName));
        };
        let Ok(user) = std::str::from_utf8(&raw_user) else {
            return (
                String::from_utf8_lossy(&raw_user).into_owned(),
                Decision::Reject(Reason::InvalidUserName),
            );
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return (user.to_owned(), Decision::Reject(Reason::InvalidUserName));
        }
        let Some(hidden) = packet.lookup(dict::USER_PASSWORD).map(|a| a.encode_bytes()) else {
            return (user.to_owned(), Decision::Reject(Reason::MissingPassword));
        };
        let Ok(password) = crypto::decode_pap(&hidden, secret, authenticator) else {
            return (user.to_owned(), Decision::Reject(Reason::MalformedPassword));
        };
        let avpairs = dict::cisco_avpairs(packet);
        let request = AccessRequest {
            user_name: user,
            password: &password,
            avpairs: &avpairs,
            nas,
            now: crate::store::now_secs(),
        };
        (
            user.to_owned(),
            self.policy.authorize(&request, settings).await,
        )
    }
}

fn drop_it<T>(
    cause: DropCause,
    source: SocketAddr,
    nas: &Nas,
    detail: &dyn std::fmt::Debug,
) -> Option<T> {
    METRICS.dropped(cause).inc();
    debug!(client = %nas.name, %source, cause = cause.label(), ?detail, "dropped");
    None
}

/// Receives datagrams on one socket until `shutdown`, handing each to a task holding a permit.
pub async fn serve(
    socket: Arc<UdpSocket>,
    port: Port,
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_LEN + 1];
    loop {
        let (n, source) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "recv_from failed");
                    continue;
                }
            },
        };
        let live = handler.live();
        let Some(nas) = live.nas.lookup(source.ip()).cloned() else {
            METRICS.dropped(DropCause::UnknownClient).inc();
            if let Some(suppressed) = handler.unknown_log.allow() {
                warn!(%source, suppressed, "dropped request from unknown client");
            }
            continue;
        };
        // Backpressure: with every permit taken we stop reading; the kernel buffer absorbs
        // bursts and drops (counted by the kernel) beyond it.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let datagram = buf[..n].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        tracker.spawn(async move {
            let _permit = permit;
            if let Some(resp) = handler
                .handle_datagram(&datagram, source, &nas, port, &live)
                .await
            {
                if let Err(e) = socket.send_to(&resp, source).await {
                    debug!(%source, error = %e, "send_to failed");
                }
            }
        });
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

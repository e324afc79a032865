//! Which DCs request traffic may use, and in which order. A server that fails a request or a
//! probe is skipped; the health-check task probes every server each `health_check_interval`
//! (and at once when a request found one unusable) with a new connection (TCP, TLS), a root
//! DSE read and a bind as the admin, and a server that answers is used again at once — so
//! traffic returns to the primary within one interval of its return (one that answers all but
//! the bind is tried after the other). Without the task (`health_check_interval = "0s"`) a
//! server that failed a request is skipped for `retry_primary_after`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ldap3::Scope;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{AdVerifier, Server};
use crate::metrics::METRICS;

/// Down until a probe succeeds.
const UNTIL_PROBED: u64 = u64::MAX;

/// Probe rounds are at least this far apart, however often requests wake the task.
const MIN_ROUND_GAP: Duration = Duration::from_millis(200);

/// How long probes leave the admin's bind out after the directory refused the admin's
/// credentials: binding every interval would lock the admin account out, and a fixed
/// password takes effect within this long.
const BINDS_SUSPENDED: Duration = Duration::from_secs(3600);

/// What a probe found of a server that could be reached.
enum Probe {
    Answered,
    /// It answered the connection and the read, not the bind: `why`.
    BindsUnanswered(String),
}

pub(super) struct Health {
    /// Milliseconds since the verifier's epoch until which the server is skipped; 0 = up.
    down_until: AtomicU64,
    /// When a request last got an answer from it (ms since the verifier's epoch): a probe
    /// that times out behind a long queue of binds does not mark an answering server down.
    last_answer: AtomicU64,
    /// Why it was last found unusable (for `/readyz`).
    last_error: Mutex<Option<String>>,
    /// Its last probe's bind went unanswered (or was declined) while it answered the rest:
    /// requests try it after the others, not never (the admin's bind alone may be the slow
    /// one, and a lone DC is still the only chance).
    binds_unanswered: AtomicBool,
    up_gauge: prometheus::IntGauge,
    binds_gauge: prometheus::IntGauge,
}

impl Health {
    pub(super) fn new(label: &'static str) -> Self {
        let up_gauge = METRICS.directory_server_up.with_label_values(&[label]);
        up_gauge.set(1);
        let binds_gauge = METRICS
            .directory_server_binds_answered
            .with_label_values(&[label]);
        binds_gauge.set(1);
        Self {
            down_until: AtomicU64::new(0),
            last_answer: AtomicU64::new(0),
            last_error: Mutex::new(None),
            binds_unanswered: AtomicBool::new(false),
            up_gauge,
            binds_gauge,
        }
    }

    pub(super) fn usable(&self, now_ms: u64) -> bool {
        now_ms >= self.down_until.load(Ordering::Relaxed)
    }

    /// A request got the server's answer at `now_ms`.
    pub(super) fn answered(&self, now_ms: u64) {
        // SeqCst with the probe's store of the flag and load of this time: one of the two
        // sees the other, so an answer is never overwritten by a probe that missed it.
        self.last_answer.store(now_ms, Ordering::SeqCst);
        self.mark_up();
        if self.binds_unanswered.load(Ordering::SeqCst) {
            self.set_binds_unanswered(false);
        }
    }

    /// Whether requests should try the other servers first.
    pub(super) fn binds_unanswered(&self) -> bool {
        self.binds_unanswered.load(Ordering::Relaxed)
    }

    fn set_binds_unanswered(&self, unanswered: bool) {
        self.binds_unanswered.store(unanswered, Ordering::SeqCst);
        self.binds_gauge.set(i64::from(!unanswered));
    }

    /// The server answered. Cheap when it was up already (one load on the request path).
    pub(super) fn mark_up(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
            self.up_gauge.set(1);
        }
    }

    pub(super) fn mark_down(&self, until_ms: u64, why: &str) {
        *self.last_error.lock() = Some(why.to_owned());
        // A probe's "until probed" is not shortened by a request's timer.
        let _ = self
            .down_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(cur.max(until_ms))
            });
        self.up_gauge.set(0);
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

impl AdVerifier {
    /// The health-check task: probes every server now and then each interval (or when a
    /// request wakes it), until `shutdown`. Returns at once when the interval is `0s`.
    pub async fn health_check(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.config.health_check_interval;
        if every.is_zero() {
            return;
        }
        self.probing.store(true, Ordering::Relaxed);
        loop {
            // Both servers at once: a hung primary does not delay the secondary's verdict.
            let round = async {
                let secondary = async {
                    if let Some(s) = self.servers.get(1) {
                        self.probe_and_mark(s).await;
                    }
                };
                tokio::join!(self.probe_and_mark(&self.servers[0]), secondary);
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = round => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = async {
                    self.wake.notified().await;
                    tokio::time::sleep(MIN_ROUND_GAP.min(every)).await;
                } => {}
            }
        }
        self.probing.store(false, Ordering::Relaxed);
    }

    async fn probe_and_mark(&self, server: &Server) {
        let started = self.now_ms();
        let probe = self.probe(server).await;
        let answering = server.health.last_answer.load(Ordering::Relaxed) >= started.max(1);
        match probe {
            Err(why) | Ok(Probe::BindsUnanswered(why)) if answering => {
                tracing::debug!(server = server.label, %why, "probe failed while requests are answered");
            }
            Ok(found) => {
                if !server.health.usable(self.now_ms()) {
                    tracing::info!(server = server.label, addr = %server.addr, "directory server answers again");
                }
                server.health.mark_up();
                let unanswered = match found {
                    Probe::Answered => false,
                    Probe::BindsUnanswered(why) => {
                        if !server.health.binds_unanswered() {
                            tracing::warn!(server = server.label, %why, "directory server answers but not binds: tried after the others");
                        }
                        true
                    }
                };
                let h = &server.health;
                h.set_binds_unanswered(unanswered);
                // A request answered meanwhile (its `answered` ran before the store above)
                // has the last word: the DC binds.
                if unanswered && h.last_answer.load(Ordering::SeqCst) >= started.max(1) {
                    h.set_binds_unanswered(false);
                }
            }
            Err(why) => {
                if server.health.usable(self.now_ms()) {
                    tracing::warn!(server = server.label, %why, "directory server probe failed");
                }
                METRICS
                    .directory_errors
                    .with_label_values(&[server.label])
                    .inc();
                server.forget_connections();
                server.health.mark_down(UNTIL_PROBED, &why);
            }
        }
    }

    /// A new connection (TCP, TLS as configured), a root DSE read, and a bind as the admin.
    /// The bind because a DC can go on answering reads while its binds hang (its
    /// authentication backend stuck): without it, such a DC passed every probe and each
    /// request waited out `timeout` on it before failing over. Any verdict on the bind counts
    /// as answered; silence, or a DC declining to check (busy, unavailable, unwilling), does
    /// not. A refusal of the admin's credentials themselves suspends the probes' binds.
    async fn probe(&self, server: &Server) -> Result<Probe, String> {
        let mut ldap = self.connect(server).await?;
        // The read first (anonymous): a server that answers nothing is down, not a DC whose
        // binds alone hang.
        let res = tokio::time::timeout(
            self.config.timeout,
            ldap.search("", Scope::Base, "(objectClass=*)", vec!["dnsHostName"]),
        )
        .await
        .map_err(|_| format!("root DSE read on {} timed out", server.addr))?
        .map_err(|e| format!("root DSE read on {}: {e}", server.addr))?;
        res.success()
            .map_err(|e| format!("root DSE read on {}: {e}", server.addr))?;
        if self.now_ms() < self.probe_binds_after.load(Ordering::Relaxed) {
            let _ = ldap.unbind().await;
            return Ok(Probe::Answered);
        }
        let bound = tokio::time::timeout(
            self.config.timeout,
            ldap.simple_bind(&self.admin_upn(), self.config.admin_password.expose()),
        )
        .await;
        let r = match bound {
            Err(_) => {
                let why = format!("admin bind on {} timed out", server.addr);
                return Ok(Probe::BindsUnanswered(why));
            }
            Ok(r) => r.map_err(|e| format!("admin bind on {}: {e}", server.addr))?,
        };
        let _ = ldap.unbind().await;
        match r.rc {
            51..=53 => {
                let why = format!(
                    "{} declined the admin bind: rc={} {}",
                    server.addr, r.rc, r.text
                );
                return Ok(Probe::BindsUnanswered(why));
            }
            // Invalid credentials (a wrong or locked admin password), stronger auth or
            // confidentiality required (`tls = "none"` against a DC requiring signing),
            // inappropriate authentication: the DC checked, and will refuse again.
            8 | 13 | 48 | 49 => {
                let until = self.now_ms() + BINDS_SUSPENDED.as_millis() as u64;
                if self.probe_binds_after.swap(until, Ordering::Relaxed) <= self.now_ms() {
                    tracing::warn!(
                        server = server.label,
                        rc = r.rc,
                        text = %r.text,
                        "the directory refused the admin's bind: probes leave it out for an \
                         hour (a DC whose binds hang then passes them); check admin_user and \
                         admin_password (rc 8 or 13: the DC wants TLS or signing, see `tls`)"
                    );
                }
            }
            _ => {}
        }
        Ok(Probe::Answered)
    }

    /// `None` while some server is usable; else why none is (for `/readyz`).
    pub fn unreachable(&self) -> Option<String> {
        let now = self.now_ms();
        if self.servers.iter().any(|s| s.health.usable(now)) {
            return None;
        }
        let each: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} {} ({}): {}",
                    s.label,
                    s.host,
                    s.addr,
                    s.health.last_error().unwrap_or_else(|| "down".into())
                )
            })
            .collect();
        Some(format!(
            "no directory server reachable: {}",
            each.join("; ")
        ))
    }
}

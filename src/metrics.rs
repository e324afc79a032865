//! Metric names and pre-built handles. Labels come only from closed enums (and configured
//! client names), so cardinality is bounded by the code and the config.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::policy::Reason;

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    UnknownClient,
    Malformed,
    UnsupportedCode,
    BadMessageAuthenticator,
    MissingMessageAuthenticator,
    BadAuthenticator,
    DuplicateInProgress,
    Timeout,
    /// A bug: handling the request panicked.
    Internal,
    /// The kernel dropped it: the socket's receive buffer was full (`radius::kernel_drops`).
    ReceiveBuffer,
    /// It waited in the receive buffer longer than `[radius] max_queue_delay`.
    QueueDelay,
    /// An Accounting-Request that could not be recorded (the store failed): unanswered, so
    /// the NAS sends it again.
    NotRecorded,
}

impl DropCause {
    const ALL: [DropCause; 12] = [
        DropCause::UnknownClient,
        DropCause::Malformed,
        DropCause::UnsupportedCode,
        DropCause::BadMessageAuthenticator,
        DropCause::MissingMessageAuthenticator,
        DropCause::BadAuthenticator,
        DropCause::DuplicateInProgress,
        DropCause::Timeout,
        DropCause::Internal,
        DropCause::ReceiveBuffer,
        DropCause::QueueDelay,
        DropCause::NotRecorded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropCause::UnknownClient => "unknown_client",
            DropCause::Malformed => "malformed",
            DropCause::UnsupportedCode => "unsupported_code",
            DropCause::BadMessageAuthenticator => "bad_message_authenticator",
            DropCause::MissingMessageAuthenticator => "missing_message_authenticator",
            DropCause::BadAuthenticator => "bad_authenticator",
            DropCause::DuplicateInProgress => "duplicate_in_progress",
            DropCause::Timeout => "timeout",
            DropCause::Internal => "internal_error",
            DropCause::ReceiveBuffer => "receive_buffer",
            DropCause::QueueDelay => "queue_delay",
            DropCause::NotRecorded => "not_recorded",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    access: Vec<IntCounter>,
    pub status_server: IntCounter,
    dropped: Vec<IntCounter>,
    pub duplicates_answered: IntCounter,
    pub client_requests: IntCounterVec,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub mail_queue: IntGauge,
    pub mail_sent: IntCounter,
    pub mail_failed: IntCounter,
    pub mail_dropped: IntCounter,
    pub pool_size: IntGaugeVec,
    pub pool_used: IntGaugeVec,
    pub sessions: IntGaugeVec,
    pub leases_taken_back: IntCounterVec,
    pub registrations: IntCounter,
    registration_failures: IntCounterVec,
    pub password_hash_checks: IntCounterVec,
    pub accounting: IntCounterVec,
    pub directory_seconds: HistogramVec,
    pub directory_errors: IntCounterVec,
    pub directory_failovers: IntCounter,
    pub lockout_guard: IntCounter,
    pub lockout_precheck: IntCounter,
    pub directory_server_up: IntGaugeVec,
    pub directory_server_binds_answered: IntGaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Creates each metric and registers it at once, so none can be defined and not exposed.
struct Builder(Registry);

impl Builder {
    fn add<T: prometheus::core::Collector + Clone + 'static>(&self, metric: T) -> T {
        self.0
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

/// Request latencies, from tens of microseconds (a cached renewal) to seconds (a directory).
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    fn new() -> Self {
        let b = Builder(Registry::new());
        let requests = b.counter_vec(
            "ravpnd_requests_total",
            "RADIUS requests answered, by packet type, outcome and reason",
            &["type", "outcome", "reason"],
        );
        let dropped_vec = b.counter_vec(
            "ravpnd_dropped_total",
            "Datagrams dropped without an answer, by cause",
            &["cause"],
        );
        let duplicates_answered = b.counter(
            "ravpnd_duplicates_answered_total",
            "Retransmitted requests answered from the duplicate cache (RFC 5080)",
        );
        let client_requests = b.counter_vec(
            "ravpnd_client_requests_total",
            "Authenticated requests per NAS client",
            &["client"],
        );
        let request_seconds = b.histogram(
            "ravpnd_request_duration_seconds",
            "Time from the datagram's arrival (kernel timestamp) to its response made",
            &LATENCY_BUCKETS,
        );
        // The part of a request's latency spent before any work on it: under load, and when
        // the workers are off the CPU, most of it.
        let queue_seconds = b.histogram(
            "ravpnd_request_queue_seconds",
            "Time a datagram waited in the socket's receive queue (kernel arrival to read)",
            &LATENCY_BUCKETS,
        );
        let mail_queue = b.gauge(
            "ravpnd_mail_queue_depth",
            "Notifications waiting for the mail task",
        );
        let mail_sent = b.counter("ravpnd_mail_sent_total", "Notification mails delivered");
        let mail_failed = b.counter(
            "ravpnd_mail_failed_total",
            "Notification mails given up after the retry window",
        );
        let mail_dropped = b.counter(
            "ravpnd_mail_dropped_total",
            "Notifications dropped: the mail queue, or the batch of one mail, was full",
        );
        let pool_size = b.gauge_vec(
            "ravpnd_pool_addresses",
            "Addresses a pool can hand out",
            &["pool"],
        );
        let pool_used = b.gauge_vec(
            "ravpnd_pool_leased",
            "Addresses of a pool currently leased",
            &["pool"],
        );
        let sessions = b.gauge_vec(
            "ravpnd_sessions_active",
            "Leases with an accounting session (Accounting-Start seen, no Stop yet)",
            &["pool"],
        );
        let leases_taken_back = b.counter_vec(
            "ravpnd_leases_taken_back_total",
            "Leases made again for a live session that held none (its lease had expired — \
             lease_time shorter than the gateway's accounting interval, or ravpnd down longer — \
             or been released)",
            &["pool"],
        );
        let registrations = b.counter(
            "ravpnd_registrations_total",
            "Devices registered on their first connection",
        );
        let registration_failures = b.counter_vec(
            "ravpnd_registration_failures_total",
            "First connections that could not register their device, by reason",
            &["reason"],
        );
        let password_hash_checks = b.counter_vec(
            "ravpnd_password_hash_checks_total",
            "argon2 verifications run for local users (a cached credential or refusal runs \
             none), by what they checked: a user's hash, or the decoy for a name without one",
            &["against"],
        );
        let accounting = b.counter_vec(
            "ravpnd_accounting_total",
            "Accounting-Requests recorded, by status type",
            &["status"],
        );
        let directory_seconds = b.histogram_vec(
            "ravpnd_directory_bind_duration_seconds",
            "Directory calls checking a password (LDAP binds, Entra ID token requests), by server",
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
            &["server"],
        );
        let directory_errors = b.counter_vec(
            "ravpnd_directory_errors_total",
            "Directory servers found unusable (connect, TLS, timeout), by server",
            &["server"],
        );
        let directory_failovers = b.counter(
            "ravpnd_directory_failovers_total",
            "Directory answers that came from the secondary server",
        );
        let lockout_guard = b.counter(
            "ravpnd_lockout_guard_refusals_total",
            "Passwords refused without a directory bind (same refused password retried)",
        );
        let lockout_precheck = b.counter(
            "ravpnd_lockout_precheck_refusals_total",
            "Requests refused before a bind: the user was one failure short of an AD lockout",
        );
        let directory_server_up = b.gauge_vec(
            "ravpnd_directory_server_up",
            "1 when the directory server is used for requests, 0 while it is skipped as down",
            &["server"],
        );
        let directory_server_binds_answered = b.gauge_vec(
            "ravpnd_directory_server_binds_answered",
            "0 while the directory server answers probes but not their bind (tried after the \
             other server), else 1",
            &["server"],
        );
        // Every label a counter can take exists from the start: a series that appears only at
        // its first event makes `rate()` and alerts miss that event.
        for r in [
            Reason::NoDeviceId,
            Reason::DeviceIdMismatch,
            Reason::SerialInUse,
            Reason::NoFreeDeviceSlot,
            Reason::PlatformMismatch,
        ] {
            registration_failures.with_label_values(&[r.label()]);
        }
        for s in crate::accounting::STATUS_LABELS {
            accounting.with_label_values(&[s]);
        }
        for against in ["user", "decoy"] {
            password_hash_checks.with_label_values(&[against]);
        }
        let access = Reason::ALL
            .iter()
            .map(|r| {
                let outcome = if *r == Reason::Accepted {
                    "accept"
                } else {
                    "reject"
                };
                requests.with_label_values(&["access", outcome, r.label()])
            })
            .collect();
        let status_server = requests.with_label_values(&["status_server", "accept", "status"]);
        let dropped = DropCause::ALL
            .iter()
            .map(|c| dropped_vec.with_label_values(&[c.label()]))
            .collect();
        Self {
            registry: b.0,
            access,
            status_server,
            dropped,
            duplicates_answered,
            client_requests,
            request_seconds,
            queue_seconds,
            mail_queue,
            mail_sent,
            mail_failed,
            mail_dropped,
            pool_size,
            pool_used,
            sessions,
            leases_taken_back,
            registrations,
            registration_failures,
            password_hash_checks,
            accounting,
            directory_seconds,
            directory_errors,
            directory_failovers,
            lockout_guard,
            lockout_precheck,
            directory_server_up,
            directory_server_binds_answered,
        }
    }

    pub fn access(&self, reason: Reason) -> &IntCounter {
        &self.access[reason as usize]
    }

    pub fn dropped(&self, cause: DropCause) -> &IntCounter {
        &self.dropped[cause as usize]
    }

    /// Counts a first connection whose device could not be registered.
    pub fn registration_failed(&self, reason: Reason) {
        self.registration_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_line_up_with_labels() {
        for r in Reason::ALL {
            assert_eq!(Reason::ALL[r as usize], r);
        }
        for c in DropCause::ALL {
            assert_eq!(DropCause::ALL[c as usize], c);
        }
        METRICS.dropped(DropCause::Timeout).inc();
        let text = METRICS.render();
        assert!(text.contains("ravpnd_dropped_total{cause=\"timeout\"}"));
        // Series that exist before their first event.
        for series in [
            "ravpnd_registration_failures_total{reason=\"serial_in_use\"} 0",
            "ravpnd_accounting_total{status=\"stop\"} 0",
        ] {
            assert!(text.contains(series), "{series}");
        }
    }
}

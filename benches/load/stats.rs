//! Counters and the latency histogram of one run, merged across workers, and the report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What happened to the measured requests of one worker (or all, after merging).
#[derive(Debug, Clone)]
pub struct Stats {
    pub sent: u64,
    pub accept: u64,
    pub reject: u64,
    /// Responses that failed a check, by reason.
    pub invalid: BTreeMap<&'static str, u64>,
    /// Requests not answered within the timeout (never retransmitted).
    pub timeouts: u64,
    /// Responses to no request in flight (late answers to timed-out requests).
    pub stray: u64,
    /// Sends the kernel refused (socket error, ICMP port unreachable).
    pub send_errors: u64,
    /// Open loop: sends due while every identifier was in flight (the server fell behind).
    pub skipped: u64,
    /// The first Reply-Message of a reject, to say why.
    pub first_reject: Option<String>,
    /// Every datagram received from the server in the run, the warm-up's and strays included:
    /// what the server sent, to set against its own counters (its `/metrics`).
    pub received: u64,
    /// Round-trip time of every measured request, nanoseconds, from its send (open loop: its
    /// scheduled instant) to its answer's arrival at the driver's socket, as the kernel
    /// stamped it (SO_TIMESTAMPNS): what the server and the network took, without the driver's
    /// own wake-up to read the answer. Unanswered requests (timed out, or skipped for want of
    /// an identifier) count at the timeout — the least they waited — so that the tail they
    /// make is not left out.
    pub latency: Histogram<u64>,
    /// The same, to the instant the driver read the answer (the only measure before the
    /// stamps): adds the driver's wake-up, tens of microseconds on an idle virtual CPU and
    /// up to a scheduler slice where the driver waits for a CPU the server is using.
    pub read_latency: Histogram<u64>,
    /// From the request's hand-over to the kernel to its answer's arrival: the round trip on
    /// the wire, without the driver's late sends (open loop) nor its wake-up. Answered
    /// requests only.
    pub wire_latency: Histogram<u64>,
    /// Open loop: how late each measured request was sent after its scheduled instant (the
    /// driver's own delay, which its latency counts against the server).
    pub lateness: Histogram<u64>,
    /// Answers without a usable kernel stamp (none, or one later than their read): their
    /// arrival is taken as their read.
    pub unstamped: u64,
    /// Answers whose arrival, as converted from its stamp, came before their request was
    /// handed to the kernel: impossible, so any means the stamps or their conversion are wrong.
    pub before_send: u64,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            sent: 0,
            accept: 0,
            reject: 0,
            invalid: BTreeMap::new(),
            timeouts: 0,
            stray: 0,
            send_errors: 0,
            skipped: 0,
            first_reject: None,
            received: 0,
            latency: histogram(),
            read_latency: histogram(),
            wire_latency: histogram(),
            lateness: histogram(),
            unstamped: 0,
            before_send: 0,
        }
    }

    /// An answered request: from when it was due to its answer's arrival and to its read,
    /// and on the wire.
    pub fn record_latency(&mut self, arrived: Duration, read: Duration, wire: Duration) {
        record(&mut self.latency, arrived);
        record(&mut self.read_latency, read);
        record(&mut self.wire_latency, wire);
    }

    /// An open-loop send `late` after its scheduled instant.
    pub fn record_lateness(&mut self, late: Duration) {
        record(&mut self.lateness, late);
    }

    /// A measured request that got no answer (timed out, or never sent): counted from its
    /// due instant at `timeout` (not on the wire, which holds answered requests only).
    pub fn record_unanswered(&mut self, timeout: Duration) {
        record(&mut self.latency, timeout);
        record(&mut self.read_latency, timeout);
    }

    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }

    pub fn answered(&self) -> u64 {
        self.accept + self.reject
    }

    pub fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.accept += o.accept;
        self.reject += o.reject;
        for (k, v) in &o.invalid {
            *self.invalid.entry(k).or_default() += v;
        }
        self.timeouts += o.timeouts;
        self.stray += o.stray;
        self.send_errors += o.send_errors;
        self.skipped += o.skipped;
        if self.first_reject.is_none() {
            self.first_reject.clone_from(&o.first_reject);
        }
        self.received += o.received;
        self.latency.add(&o.latency).expect("same bounds");
        self.read_latency.add(&o.read_latency).expect("same bounds");
        self.wire_latency.add(&o.wire_latency).expect("same bounds");
        self.lateness.add(&o.lateness).expect("same bounds");
        self.unstamped += o.unstamped;
        self.before_send += o.before_send;
    }
}

/// 1 µs .. 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` in `h`, clamped into its bounds.
fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = (d.as_nanos() as u64).clamp(1_000, 100_000_000_000);
    h.record(ns).expect("clamped into bounds");
}

/// p50, p90, p99, p99.9 and max of `h`, µs, as the text report gives them.
fn quantiles_text(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.0} | p90 {:.0} | p99 {:.0} | p99.9 {:.0} | max {:.0}",
        quantile_us(h, 0.50),
        quantile_us(h, 0.90),
        quantile_us(h, 0.99),
        quantile_us(h, 0.999),
        h.max() as f64 / 1_000.0
    )
}

/// p50, p90, p99, p99.9, max and mean of `h`, µs, as the JSON report gives them.
fn quantiles_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": quantile_us(h, 0.50),
        "p90": quantile_us(h, 0.90),
        "p99": quantile_us(h, 0.99),
        "p999": quantile_us(h, 0.999),
        "max": h.max() as f64 / 1_000.0,
        "mean": h.mean() / 1_000.0,
    })
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// One run's result, ready to print.
pub struct Report<'a> {
    pub label: &'a str,
    pub target: String,
    pub mode: String,
    pub threads: usize,
    pub sockets: usize,
    pub users: u32,
    pub window: Duration,
    pub stats: &'a Stats,
    /// CPU the driver used per answered request (accept or reject), µs.
    pub driver_cpu_us: Option<f64>,
    /// CPU the server (`--server-pid`) used per answered request (accept or reject), µs.
    pub server_cpu_us: Option<f64>,
    /// Cores busy on average during the window: the driver, the server, the whole machine.
    pub driver_cores: Option<f64>,
    pub server_cores: Option<f64>,
    pub machine_cores: Option<f64>,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Server VmRSS at the end, KiB.
    pub server_rss_kb: Option<u64>,
    /// UDP datagrams the kernel dropped for full receive buffers during the run (machine-wide).
    pub udp_drops: Option<u64>,
}

impl Report<'_> {
    /// Cores busy with neither the driver nor the server: the noise on a shared machine.
    pub fn other_cores(&self) -> Option<f64> {
        Some((self.machine_cores? - self.driver_cores? - self.server_cores.unwrap_or(0.0)).max(0.0))
    }

    /// Per second of the measured window.
    fn rate(&self, n: u64) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            n as f64 / secs
        } else {
            0.0
        }
    }

    /// The throughput: *accepted* requests per second. An Access-Reject costs a server less
    /// than an Accept (no lease, no device check), so a run that rejects would look faster if
    /// its rejects counted; they are reported apart ([`Self::answered_rate`], `reject`).
    pub fn throughput(&self) -> f64 {
        self.rate(self.stats.accept)
    }

    /// Accepts and rejects per second.
    pub fn answered_rate(&self) -> f64 {
        self.rate(self.stats.answered())
    }

    pub fn text(&self) -> String {
        let s = self.stats;
        let mut out = format!(
            "{label}: target {target}, {mode}, {threads} thread(s), {sockets} socket(s), {users} users, {win:.2}s measured\n",
            label = self.label,
            target = self.target,
            mode = self.mode,
            threads = self.threads,
            sockets = self.sockets,
            users = self.users,
            win = self.window.as_secs_f64(),
        );
        out += &format!(
            "  requests {} | accept {} | reject {} | invalid {} | timeouts {} | stray {} | send errors {} | skipped {}\n",
            s.sent,
            s.accept,
            s.reject,
            s.invalid_total(),
            s.timeouts,
            s.stray,
            s.send_errors,
            s.skipped
        );
        for (why, n) in &s.invalid {
            out += &format!("  invalid ({why}): {n}\n");
        }
        if let Some(m) = &s.first_reject {
            out += &format!("  first reject said: {m:?}\n");
        }
        out += &format!(
            "  throughput {:.0} req/s (accepts only)\n",
            self.throughput()
        );
        if s.reject > 0 {
            out += &format!(
                "  WARNING: {} rejects ({:.0} answers/s with them) are not throughput: a reject is \
                 cheaper than an accept, so this run does not compare with runs without rejects\n",
                s.reject,
                self.answered_rate()
            );
        }
        out += &format!(
            "  latency µs (to the answer's arrival): {} | mean {:.1}\n",
            quantiles_text(&s.latency),
            s.latency.mean() / 1_000.0,
        );
        out += &format!(
            "  latency µs (to the driver's read):    {}{}\n",
            quantiles_text(&s.read_latency),
            match (s.unstamped, s.before_send) {
                (0, 0) => String::new(),
                (u, b) => format!(
                    " | {u} answers without a usable kernel stamp, {b} stamped before their send"
                ),
            },
        );
        out += &format!(
            "  latency µs (on the wire, answered):   {}\n",
            quantiles_text(&s.wire_latency)
        );
        if !s.lateness.is_empty() {
            out += &format!(
                "  sends late (open loop, µs after their schedule, counted in the latency): {}\n",
                quantiles_text(&s.lateness)
            );
        }
        let mut cpu = Vec::new();
        if let (Some(c), Some(k)) = (self.driver_cpu_us, self.driver_cores) {
            cpu.push(format!("driver {c:.1} µs/req ({k:.2} cores)"));
        }
        if let (Some(c), Some(k)) = (self.server_cpu_us, self.server_cores) {
            cpu.push(format!("server {c:.1} µs/req ({k:.2} cores)"));
        }
        if let Some(m) = self.machine_cores {
            cpu.push(format!(
                "machine busy {m:.2} of {} cores, others {:.2}",
                self.cpus,
                self.other_cores().unwrap_or(m)
            ));
        }
        if let Some(r) = self.server_rss_kb {
            cpu.push(format!("server VmRSS {r} KiB"));
        }
        if let Some(d) = self.udp_drops {
            cpu.push(format!("kernel UDP receive-buffer drops {d}"));
        }
        if !cpu.is_empty() {
            out += &format!("  cpu: {}\n", cpu.join(" | "));
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let s = self.stats;
        serde_json::json!({
            "label": self.label,
            "target": self.target,
            "mode": self.mode,
            "threads": self.threads,
            "sockets": self.sockets,
            "users": self.users,
            "window_s": self.window.as_secs_f64(),
            "requests": s.sent,
            "accept": s.accept,
            "reject": s.reject,
            "invalid": s.invalid_total(),
            "invalid_by_reason": s.invalid,
            "timeouts": s.timeouts,
            "stray": s.stray,
            "send_errors": s.send_errors,
            "skipped": s.skipped,
            "first_reject": s.first_reject,
            // Accepts per second (rejects excluded since the harness audit; before, answers).
            "throughput_rps": self.throughput(),
            "throughput_counts": "accept",
            "answered_rps": self.answered_rate(),
            "received_total": s.received,
            "latency_us": quantiles_json(&s.latency),
            // Since the stamps: `latency_us` is to the answer's arrival at the driver's socket
            // (the kernel's stamp); before, to the driver's read, now `read_latency_us`.
            "latency_to": "arrival",
            "read_latency_us": quantiles_json(&s.read_latency),
            "unstamped": s.unstamped,
            "arrived_before_send": s.before_send,
            "wire_latency_us": quantiles_json(&s.wire_latency),
            // Open loop only (empty in a closed loop: null).
            "send_lateness_us": (!s.lateness.is_empty()).then(|| quantiles_json(&s.lateness)),
            "driver_cpu_us_per_req": self.driver_cpu_us,
            "server_cpu_us_per_req": self.server_cpu_us,
            "driver_cores": self.driver_cores,
            "server_cores": self.server_cores,
            "machine_busy_cores": self.machine_cores,
            "other_busy_cores": self.other_cores(),
            "cpus": self.cpus,
            "server_rss_kb": self.server_rss_kb,
            "udp_rcvbuf_drops": self.udp_drops,
        })
    }
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: std::time::Instant,
    driver: Option<Duration>,
    server: Option<Duration>,
    machine: Option<Duration>,
    udp_drops: Option<u64>,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy)]
pub struct CpuDelta {
    pub wall: Duration,
    pub driver: Option<Duration>,
    pub server: Option<Duration>,
    /// Busy time of all CPUs together.
    pub machine: Option<Duration>,
    pub udp_drops: Option<u64>,
}

impl CpuSample {
    pub fn take(server_pid: Option<&str>) -> Self {
        Self {
            at: std::time::Instant::now(),
            driver: self_cpu(),
            server: server_pid.and_then(process_cpu),
            machine: machine_busy(),
            udp_drops: udp_rcvbuf_errors(),
        }
    }

    pub fn since(&self, earlier: &CpuSample) -> CpuDelta {
        fn d(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
            Some(a?.saturating_sub(b?))
        }
        CpuDelta {
            wall: self.at.duration_since(earlier.at),
            driver: d(self.driver, earlier.driver),
            server: d(self.server, earlier.server),
            machine: d(self.machine, earlier.machine),
            udp_drops: self
                .udp_drops
                .zip(earlier.udp_drops)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// This process's CPU time (all threads), microsecond resolution.
fn self_cpu() -> Option<Duration> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, exclusively borrowed out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime)))
}

/// Busy time of all CPUs together since boot (/proc/stat: everything but idle and iowait).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?;
    Some(Duration::from_nanos(
        busy * 1_000_000_000 / clock_ticks_per_sec(),
    ))
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / clock_ticks_per_sec(),
    ))
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer, machine-wide
/// (`RcvbufErrors` in /proc/net/snmp).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// VmRSS of a process, KiB.
pub fn process_rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

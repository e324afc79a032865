//! The load driver: AnyConnect-like Access-Requests over UDP against a RADIUS server, every
//! response verified, throughput and latency percentiles reported; and a null responder
//! (the protocol's own work only) that shows the harness's ceiling on this machine.
//!
//! ```text
//! cargo bench --bench load -- --target 127.0.0.1:18121 --secret S --users 1000 \
//!     --concurrency 64 --duration 10s [--rate 5000] [--prime] [--json]
//! cargo bench --bench load -- null-responder --listen 127.0.0.1:18123 --secret S
//! cargo bench --bench load            # against an in-process null responder
//! ```
//!
//! Run by `cargo test --bench load` (cargo then passes it no `--bench` argument), it does a
//! short self-test instead and exits; `scripts/test` runs it with the tests.

mod client;
mod null;
mod stats;
mod wire;

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use client::{Pace, Plan, Stop, MAX_PER_SOCKET};
use stats::{Report, Stats};
use wire::RequestBuilder;

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "RADIUS load driver for ravpnd (and any RADIUS server), and a null responder",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Answer every valid Access-Request with a signed Access-Accept, doing nothing else.
    NullResponder(NullArgs),
}

#[derive(Debug, Args)]
struct NullArgs {
    /// UDP address to listen on (loopback).
    #[arg(long)]
    listen: SocketAddr,
    /// The shared secret.
    #[arg(long, default_value = DEFAULT_SECRET)]
    secret: String,
    /// Threads receiving on the socket.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Stop after this long (humantime, "60s"); default: run until killed.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Answer every Nth valid request (per thread) with an Access-Reject instead: a test of
    /// what the driver and the scripts make of rejects. 0: never.
    #[arg(long, default_value_t = 0)]
    reject_every: u64,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The RADIUS server (loopback). Absent: an in-process null responder.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// The shared secret.
    #[arg(long, default_value = DEFAULT_SECRET)]
    secret: String,
    /// Users `user0..userN-1` (from --first-user); user i presents device UID
    /// format!("{i:064X}").
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// The first user's number: a second driver can load other users than the first's
    /// (first connections while the first driver renews, say).
    #[arg(long, default_value_t = 0)]
    first_user: u32,
    /// The password of every user.
    #[arg(long, default_value = "bench-pass")]
    password: String,
    /// Requests in flight (closed loop); with --rate, the in-flight cap
    /// (default: 224 per socket).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Open loop: send this many requests per second, whatever the answers do.
    #[arg(long)]
    rate: Option<f64>,
    /// Measure for this long after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Before the warm-up, send one request per user and wait for all answers (fills the
    /// server's credential cache: the first request of each user runs argon2 on ravpnd).
    #[arg(long)]
    prime: bool,
    /// Worker threads (each with its own sockets).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Source sockets (identifier spaces); raised to fit the concurrency (224 per socket).
    #[arg(long)]
    sockets: Option<usize>,
    /// A request unanswered after this long counts as a timeout (never retransmitted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Accept responses without a Message-Authenticator.
    #[arg(long)]
    no_require_message_authenticator: bool,
    /// Also report this server process's CPU per request and its VmRSS (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for the target in the report.
    #[arg(long, default_value = "load")]
    label: String,
    /// Print the report as one JSON object on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
    /// Poll the sockets without sleeping between answers (spares the driver's own wake-up,
    /// so one in flight shows the server's latency more than the harness's; costs a core).
    #[arg(long)]
    spin: bool,
    /// Give up on sending after this long in total, whatever else says (keeps runs bounded).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    max_time: Duration,
}

const DEFAULT_SECRET: &str = "bench-secret-0123456789";
/// Workers start together this long after they are spawned.
const WORKER_START_DELAY: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (wherever the user's arguments go); `cargo test` does
    // not, and then a short self-test runs instead.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let before = args.len();
    args.retain(|a| a != "--bench");
    if args.len() == before {
        return self_test();
    }
    let cli = Cli::parse_from(args);
    let result = match cli.mode {
        Some(Mode::NullResponder(a)) => run_null_responder(a),
        None => run_client(cli.client),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_null_responder(a: NullArgs) -> std::io::Result<ExitCode> {
    let socket = UdpSocket::bind(a.listen)?;
    eprintln!(
        "null responder on {} ({} threads){}{}",
        socket.local_addr()?,
        a.threads,
        a.duration
            .map(|d| format!(", for {}", humantime::format_duration(d)))
            .unwrap_or_default(),
        if a.reject_every > 0 {
            format!(
                ", rejecting one valid request in {} per thread",
                a.reject_every
            )
        } else {
            String::new()
        }
    );
    let counters = Arc::new(null::Counters::default());
    let until = a.duration.map(|d| Instant::now() + d);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = null::serve(
        socket,
        a.secret.into_bytes(),
        a.threads,
        a.reject_every,
        until,
        stop,
        counters.clone(),
    )?;
    for h in handles {
        let _ = h.join();
    }
    eprintln!(
        "null responder: answered {}, dropped {}",
        counters.answered.load(Ordering::Relaxed),
        counters.dropped.load(Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}

/// A responder running inside this process, stopped on drop.
struct InProcess {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// `reject_every`: see [`null::serve`] (0: accept everything).
    fn start(secret: &str, threads: usize, reject_every: u64) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handles = null::serve(
            socket,
            secret.as_bytes().to_vec(),
            threads,
            reject_every,
            // Bounded even if the driver panicked.
            Some(Instant::now() + Duration::from_secs(15 * 60)),
            stop.clone(),
            Arc::new(null::Counters::default()),
        )?;
        Ok(Self {
            addr,
            stop,
            handles,
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn run_client(a: ClientArgs) -> std::io::Result<ExitCode> {
    if a.users == 0 {
        return Err(std::io::Error::other("--users must be at least 1"));
    }
    let (target, _responder) = match a.target {
        Some(t) => (t, None),
        None => {
            let r = InProcess::start(&a.secret, 1, 0)?;
            eprintln!("no --target: using an in-process null responder (1 thread)");
            (r.addr, Some(r))
        }
    };
    let builder = Arc::new(RequestBuilder::new(
        a.first_user,
        a.users,
        &a.password,
        &a.secret,
    ));
    let threads = a.threads.max(1);

    if a.prime {
        let concurrency = a.concurrency.unwrap_or(32).clamp(1, 64);
        let (prime_stats, elapsed) = run_phase(
            &a,
            target,
            &builder,
            threads,
            concurrency,
            Pace::Closed,
            true,
        )?;
        eprintln!(
            "primed {} users in {:.1}s: accept {}, reject {}, invalid {}, timeouts {}{}",
            prime_stats.sent,
            elapsed.as_secs_f64(),
            prime_stats.accept,
            prime_stats.reject,
            prime_stats.invalid_total(),
            prime_stats.timeouts,
            prime_stats
                .first_reject
                .as_deref()
                .map(|m| format!(" (first reject: {m:?})"))
                .unwrap_or_default()
        );
    }

    let (pace, concurrency, mode) = match a.rate {
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            let cap = a.concurrency.unwrap_or(MAX_PER_SOCKET * threads);
            (
                Pace::Open {
                    per_worker_rate: rate / threads as f64,
                },
                cap,
                format!("open loop at {rate:.0} req/s (in-flight cap {cap})"),
            )
        }
        Some(_) => return Err(std::io::Error::other("--rate must be a positive number")),
        None => {
            let c = a.concurrency.unwrap_or(64).max(1);
            (Pace::Closed, c, format!("closed loop, {c} in flight"))
        }
    };
    let server_pid = a.server_pid.map(|p| p.to_string());
    let (st, window, sockets, cpu) = run_measured(
        &a,
        target,
        &builder,
        threads,
        concurrency,
        pace,
        server_pid.as_deref(),
    )?;
    let answered = st.answered().max(1) as f64;
    let per_req = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6 / answered);
    // /proc counts in clock ticks (10 ms): too coarse for shares of a very short window.
    let long_enough = cpu.wall >= Duration::from_millis(500);
    let cores = |d: Option<Duration>| {
        d.filter(|_| long_enough)
            .map(|d| d.as_secs_f64() / cpu.wall.as_secs_f64())
    };
    let report = Report {
        label: &a.label,
        target: target.to_string(),
        mode,
        threads,
        sockets,
        users: a.users,
        window,
        stats: &st,
        driver_cpu_us: per_req(cpu.driver),
        server_cpu_us: per_req(cpu.server),
        driver_cores: cores(cpu.driver),
        server_cores: cores(cpu.server),
        machine_cores: cores(cpu.machine),
        // The machine's CPUs (what "machine busy" sums over), not this process's share of
        // them: the comparison script may pin the driver to one.
        // SAFETY: sysconf reads a system value; no pointers.
        cpus: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(0),
        server_rss_kb: server_pid.as_deref().and_then(stats::process_rss_kb),
        udp_drops: cpu.udp_drops,
    };
    if a.json {
        eprint!("{}", report.text());
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The measured run (warm-up included): merged stats, the measured window, sockets used, and
/// the CPU used during the measured window (the whole run with `--requests`).
fn run_measured(
    a: &ClientArgs,
    target: SocketAddr,
    builder: &Arc<RequestBuilder>,
    threads: usize,
    concurrency: usize,
    pace: Pace,
    server_pid: Option<&str>,
) -> std::io::Result<(Stats, Duration, usize, stats::CpuDelta)> {
    let sockets = sockets_for(a.sockets, threads, concurrency);
    let pid = server_pid.map(str::to_owned);
    let sample = move || stats::CpuSample::take(pid.as_deref());
    // Duration mode: sample at the edges of the measured window, from a thread that sleeps in
    // between; count mode: around the whole run.
    let (first, sampler) = match a.requests {
        None => {
            let from = Instant::now() + WORKER_START_DELAY + a.warmup;
            let to = from + a.duration;
            let sample = sample.clone();
            let h = std::thread::spawn(move || {
                std::thread::sleep(from.saturating_duration_since(Instant::now()));
                let first = sample();
                std::thread::sleep(to.saturating_duration_since(Instant::now()));
                (first, sample())
            });
            (None, Some(h))
        }
        Some(_) => (Some(sample()), None),
    };
    let (st, window) = run_workers(
        a,
        target,
        builder,
        threads,
        sockets,
        concurrency,
        pace,
        false,
    )?;
    let (first, last) = match (first, sampler) {
        (Some(f), _) => (f, sample()),
        (None, Some(h)) => h
            .join()
            .map_err(|_| std::io::Error::other("the CPU sampler panicked"))?,
        (None, None) => unreachable!("one of the two is set"),
    };
    Ok((st, window, sockets, last.since(&first)))
}

/// Priming: one request per user.
fn run_phase(
    a: &ClientArgs,
    target: SocketAddr,
    builder: &Arc<RequestBuilder>,
    threads: usize,
    concurrency: usize,
    pace: Pace,
    once_each: bool,
) -> std::io::Result<(Stats, Duration)> {
    let sockets = sockets_for(None, threads, concurrency);
    let started = Instant::now();
    let (st, _) = run_workers(
        a,
        target,
        builder,
        threads,
        sockets,
        concurrency,
        pace,
        once_each,
    )?;
    Ok((st, started.elapsed()))
}

fn sockets_for(wanted: Option<usize>, threads: usize, concurrency: usize) -> usize {
    wanted
        .unwrap_or(threads)
        .max(threads)
        .max(concurrency.div_ceil(MAX_PER_SOCKET))
}

#[allow(clippy::too_many_arguments)]
fn run_workers(
    a: &ClientArgs,
    target: SocketAddr,
    builder: &Arc<RequestBuilder>,
    threads: usize,
    sockets: usize,
    concurrency: usize,
    pace: Pace,
    once_each: bool,
) -> std::io::Result<(Stats, Duration)> {
    // Spread the in-flight budget over the sockets, and the sockets over the threads.
    let caps: Vec<usize> = (0..sockets)
        .map(|k| concurrency / sockets + usize::from(k < concurrency % sockets))
        .collect();
    let start = Instant::now() + WORKER_START_DELAY;
    let stop = match a.requests {
        Some(n) => Stop::Count(n.div_ceil(threads as u64)),
        None => Stop::After(a.duration),
    };
    let (warmup, timeout) = if once_each {
        (Duration::ZERO, a.timeout.max(Duration::from_secs(30)))
    } else {
        (a.warmup, a.timeout)
    };
    let mut handles = Vec::new();
    for t in 0..threads {
        let my_caps: Vec<usize> = caps
            .iter()
            .enumerate()
            .filter(|(k, _)| k % threads == t)
            .map(|(_, &c)| c)
            .filter(|&c| c > 0)
            .collect();
        let plan = Plan {
            target,
            builder: builder.clone(),
            pace,
            warmup,
            stop,
            timeout,
            require_message_authenticator: !a.no_require_message_authenticator,
            hard_deadline: start + a.max_time,
            start,
            first_user: t as u32,
            user_step: threads as u32,
            once_each,
            // A thread left without a socket (fewer in flight than threads) just waits.
            spin: a.spin && !once_each && !my_caps.is_empty(),
        };
        // Differs per run (wall clock, PID) and per thread: fresh Request Authenticators.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed =
            now ^ (u64::from(std::process::id()) << 32) ^ ((t as u64 + 1) << 40) ^ 0x9E37_79B9;
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || client::run_worker(plan, &my_caps, seed))?,
        );
    }
    let mut total = Stats::new();
    let mut window: Option<(Instant, Instant)> = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| std::io::Error::other("a load worker panicked"))??;
        total.merge(&r.stats);
        if let Some((f, l)) = r.window {
            window = Some(match window {
                Some((wf, wl)) => (wf.min(f), wl.max(l)),
                None => (f, l),
            });
        }
    }
    Ok((total, window.map_or(Duration::ZERO, |(f, l)| l - f)))
}

/// Under `cargo test`: a second of load against an in-process null responder, checking that
/// every response verifies and that a wrong secret is noticed. Bounded, stops by itself.
fn self_test() -> ExitCode {
    let check = || -> Result<(), String> {
        let secret = "self-test-secret-42";
        let responder = InProcess::start(secret, 1, 0).map_err(|e| e.to_string())?;
        let builder = Arc::new(RequestBuilder::new(0, 50, "pw-self-test", secret));
        let args = |requests: u64| ClientArgs {
            target: Some(responder.addr),
            secret: secret.into(),
            users: 50,
            first_user: 0,
            password: "pw-self-test".into(),
            concurrency: Some(16),
            rate: None,
            duration: Duration::from_secs(1),
            requests: Some(requests),
            warmup: Duration::from_millis(50),
            prime: false,
            threads: 2,
            sockets: None,
            // Generous: CI runs this in a debug build on a busy machine.
            timeout: Duration::from_secs(3),
            no_require_message_authenticator: false,
            server_pid: None,
            label: "self-test".into(),
            json: false,
            max_time: Duration::from_secs(10),
            spin: false,
        };
        let a = args(400);
        let (st, _, _, _) = run_measured(&a, responder.addr, &builder, 2, 16, Pace::Closed, None)
            .map_err(|e| e.to_string())?;
        // A datagram may be lost on a loaded machine (UDP); nothing may fail verification and
        // every request must be accounted for.
        if st.accept < 390
            || st.invalid_total() != 0
            || st.reject != 0
            || st.accept + st.timeouts != 400
            // The warm-up's answers are received too.
            || st.received < st.accept
        {
            return Err(format!(
                "closed loop: expected 400 accepts, got accept {} reject {} invalid {:?} timeouts {} received {}",
                st.accept, st.reject, st.invalid, st.timeouts, st.received
            ));
        }
        // Every answer stamped by the kernel, none (as converted) before its request was
        // sent, and every request in the histograms.
        if st.unstamped != 0
            || st.before_send != 0
            || st.latency.len() != 400
            || st.read_latency.len() != 400
            || st.wire_latency.len() != st.accept
        {
            return Err(format!(
                "closed loop: stamps: unstamped {}, before their send {}, latencies {} / {} / {}",
                st.unstamped,
                st.before_send,
                st.latency.len(),
                st.read_latency.len(),
                st.wire_latency.len()
            ));
        }
        client::check_arrival().map_err(|e| format!("arrival from a stamp: {e}"))?;
        // Sleeps coalesce only where sends are due more often than the default slack.
        let slack = |per_worker_rate| client::timer_slack(Pace::Open { per_worker_rate });
        if client::timer_slack(Pace::Closed) != 1
            || slack(1_000.0) != 1
            || slack(20_000.0) != 1
            || slack(20_001.0) != client::COALESCE_NS
            || slack(49_000.0) != client::COALESCE_NS
        {
            return Err(
                "timer slack: 1 ns up to 20,000 sends a second per worker, 50 µs above".into(),
            );
        }
        // Rejects are answers, not throughput: against a responder that rejects every 4th
        // request the reported rate is the accepts' alone, and the rejects are reported apart.
        let rejecting = InProcess::start(secret, 1, 4).map_err(|e| e.to_string())?;
        let (st, window, sockets, _) =
            run_measured(&a, rejecting.addr, &builder, 2, 16, Pace::Closed, None)
                .map_err(|e| e.to_string())?;
        // About a quarter of 400 (which 400 of the responder's count are measured depends on
        // the warm-up's end); a datagram may be lost.
        if !(60..=140).contains(&st.reject)
            || st.accept < 240
            || st.invalid_total() != 0
            || st.accept + st.reject + st.timeouts != 400
            || st.first_reject.as_deref() != Some(wire::NULL_REJECT_MESSAGE)
        {
            return Err(format!(
                "rejects: expected ~100 of 400, got accept {} reject {} invalid {:?} timeouts {} first reject {:?}",
                st.accept, st.reject, st.invalid, st.timeouts, st.first_reject
            ));
        }
        let report = Report {
            label: "self-test",
            target: rejecting.addr.to_string(),
            mode: "closed loop".into(),
            threads: 2,
            sockets,
            users: 50,
            window,
            stats: &st,
            driver_cpu_us: None,
            server_cpu_us: None,
            driver_cores: None,
            server_cores: None,
            machine_cores: None,
            cpus: 0,
            server_rss_kb: None,
            udp_drops: None,
        };
        let secs = window.as_secs_f64();
        let json = report.json();
        let near = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() <= 1e-9 * want);
        if secs <= 0.0
            || !near(Some(report.throughput()), st.accept as f64 / secs)
            || !near(json["throughput_rps"].as_f64(), st.accept as f64 / secs)
            || !near(json["answered_rps"].as_f64(), st.answered() as f64 / secs)
            || json["throughput_counts"] != "accept"
            || json["reject"] != st.reject
            || json["first_reject"] != wire::NULL_REJECT_MESSAGE
            || !report.text().contains("WARNING")
        {
            return Err(format!(
                "rejects: the throughput must count accepts only ({} in {secs:.3}s), got {:.1}/s; JSON {json}",
                st.accept,
                report.throughput()
            ));
        }
        drop(rejecting);
        let (st, _, _, _) = run_measured(
            &a,
            responder.addr,
            &builder,
            1,
            64,
            Pace::Open {
                per_worker_rate: 2000.0,
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        // Open loop: sends due while the in-flight cap is reached are skipped, not delayed.
        if st.accept == 0
            || st.invalid_total() != 0
            || st.sent != 400
            || st.accept + st.timeouts + st.skipped + st.send_errors != 400
            // Every measured request is in the latency histogram, the unanswered ones too;
            // the answered ones on the wire's; every one sent in the lateness histogram.
            || st.latency.len() != st.accept + st.reject + st.timeouts + st.skipped
            || st.wire_latency.len() != st.accept + st.reject
            || st.lateness.len() != st.sent - st.skipped - st.send_errors
            || st.before_send != 0
        {
            return Err(format!(
                "open loop: 400 requests due, got sent {} accept {} timeouts {} skipped {} invalid {:?}",
                st.sent, st.accept, st.timeouts, st.skipped, st.invalid
            ));
        }
        // Polling for answers, one in flight over two threads (one of them without a socket).
        let mut p = args(0);
        p.spin = true;
        p.requests = None;
        p.duration = Duration::from_millis(300);
        let (st, _, _, _) = run_measured(&p, responder.addr, &builder, 2, 1, Pace::Closed, None)
            .map_err(|e| e.to_string())?;
        if st.accept < 20 || st.invalid_total() != 0 || st.timeouts > 1 {
            return Err(format!(
                "polling: expected a stream of accepts, got accept {} invalid {:?} timeouts {}",
                st.accept, st.invalid, st.timeouts
            ));
        }
        // The responder drops requests signed with another secret: all time out.
        let wrong = Arc::new(RequestBuilder::new(
            0,
            50,
            "pw-self-test",
            "another-secret-xx",
        ));
        let mut b = args(20);
        b.timeout = Duration::from_millis(200);
        let (st, _, _, _) = run_measured(&b, responder.addr, &wrong, 1, 4, Pace::Closed, None)
            .map_err(|e| e.to_string())?;
        if st.timeouts != 20 || st.accept != 0 || st.received != 0 {
            return Err(format!(
                "wrong secret: expected 20 timeouts, got {} (accept {}, received {})",
                st.timeouts, st.accept, st.received
            ));
        }
        Ok(())
    };
    match check() {
        Ok(()) => {
            println!(
                "load driver self-test: ok (run it with `cargo bench --bench load -- --help`)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("load driver self-test failed: {e}");
            ExitCode::FAILURE
        }
    }
}

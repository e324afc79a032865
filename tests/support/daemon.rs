//! `TestDaemon`: spawns the built binary on port 0 in a temporary directory, learns its
//! addresses from its "ready" log line, and prints its log if the test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const SECRET: &str = "testing123";
pub const BIN: &str = env!("CARGO_BIN_EXE_ravpnd");

/// The config used unless a test gives its own: local source, one client on 127.0.0.1.
pub fn default_config(require_ma: bool) -> String {
    format!(
        r#"
[radius]
auth_addr = "127.0.0.1:0"
acct_addr = "127.0.0.1:0"
[store]
path = "data"
[admin]
addr = "127.0.0.1:0"
[auth]
source = "local"
[log]
level = "info,ravpnd=debug"
[[clients]]
name = "loopback"
address = "127.0.0.1/32"
secret = "{SECRET}"
require_message_authenticator = {require_ma}
"#
    )
}

pub struct TestDaemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub auth_addr: SocketAddr,
    pub acct_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log_path: PathBuf,
    starts: usize,
    env: Vec<(String, String)>,
}

impl TestDaemon {
    pub fn start() -> Self {
        Self::with_config(&default_config(true))
    }

    pub fn with_config(config: &str) -> Self {
        Self::with_config_env(config, &[])
    }

    /// Starts with extra environment variables (e.g. `RAVPND_…` overrides).
    pub fn with_config_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("ravpnd.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut d = Self {
            child: None,
            log_path: dir.path().join("daemon-0.log"),
            dir,
            config_path,
            auth_addr: "0.0.0.0:0".parse().unwrap(),
            acct_addr: "0.0.0.0:0".parse().unwrap(),
            admin_addr: "0.0.0.0:0".parse().unwrap(),
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        self.log_path = self.dir.path().join(format!("daemon-{}.log", self.starts));
        self.starts += 1;
        let mut child = Command::new(BIN)
            .args(["--config", "ravpnd.toml", "serve"])
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ravpnd");
        let stderr = child.stderr.take().unwrap();
        let log_path = self.log_path.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).unwrap();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("ravpnd ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        self.child = Some(child);
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => panic!("daemon did not become ready:\n{}", self.log()),
        };
        // jemalloc reports an option it cannot parse (src/main.rs) on stderr and goes on.
        let log = self.log();
        assert!(
            !log.contains("<jemalloc>"),
            "allocator options refused:\n{log}"
        );
        self.auth_addr = field(&line, "radius_auth=");
        self.acct_addr = field(&line, "radius_acct=");
        self.admin_addr = field(&line, "admin=");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), "TERM");
        for _ in 0..200 {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill().unwrap();
        panic!("daemon ignored SIGTERM:\n{}", self.log());
    }

    /// SIGHUP: reload the config file.
    pub fn reload(&self) {
        signal(self.child.as_ref().expect("running").id(), "HUP");
    }

    /// Waits until the log says `needle` at least `count` times (e.g. after a reload).
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        for _ in 0..100 {
            if self.log().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log never said `{needle}` {count} time(s)");
    }

    /// Rewrites the config file (for a reload or restart).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Starts again on the same directory (store, config); ports are new.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon first");
        self.spawn();
    }

    /// Runs the CLI against this daemon's config, with optional standard input.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli_in(self.dir.path(), args, stdin)
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        http_get(self.admin_addr, "/metrics")
    }

    /// The value of one sample in /metrics, 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Waits until the sample `series` reads `value`: a counter moved by another task after
    /// the event the test saw (the mail task counts a mail once the relay's answer is in, after
    /// the relay has it).
    pub fn wait_for_metric(&self, series: &str, value: f64, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let now = self.metric(series);
            if now == value {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{series} is {now}, not {value}, after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds a user with one assigned device that needs no device ID, so plain requests
    /// (no Cisco-AVPair) are accepted.
    pub fn add_vpn_user(&self, name: &str, password: &str) {
        self.add_user(name, password);
        let device: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            + "-dev";
        self.ok(&[
            "device",
            "add",
            &device,
            "--type",
            "windows",
            "--no-device-auth",
        ]);
        self.ok(&["assign", name, &device]);
    }

    /// Runs a CLI command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args, None);
        assert!(
            out.status.success(),
            "ravpnd {args:?} failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs a CLI command that must fail; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args, None);
        assert!(
            !out.status.success(),
            "ravpnd {args:?} should have failed: {}",
            stdout(&out)
        );
        stderr(&out)
    }

    /// Adds a user through the CLI.
    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.cli(&["user", "add", name, "--password-stdin"], Some(password));
        assert!(out.status.success(), "user add failed: {}", stderr(&out));
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ravpnd log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        self.kill9();
    }
}

fn field(line: &str, key: &str) -> SocketAddr {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

pub fn cli_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(["--config", "ravpnd.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("RAVPND_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A minimal HTTP/1.1 GET, enough for /metrics and /healthz.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

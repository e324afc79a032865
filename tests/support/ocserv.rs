//! A real AnyConnect-protocol stack on loopback: Debian's `ocserv` (OpenConnect VPN server)
//! authenticating against a [`TestDaemon`] over RADIUS (radcli, `auth` and `acct`), and the
//! `openconnect` client logging in through it.
//!
//! Everything listens on 127.0.0.1. ocserv runs as root (it creates the tun devices) with
//! `run-as-user = nobody`, in the foreground, with its config, certificate, radcli files,
//! socket and pid file in a temporary directory. openconnect runs with `--script` pointing to
//! a recorder that writes the environment it is given (`INTERNAL_IP4_ADDRESS`, …) to a file
//! and configures nothing, so neither side changes the host's routes or resolv.conf; the only
//! host change is ocserv's own tun device with a host route to the client's VPN address,
//! gone when the session ends. Every process is stopped by its PID on drop, also when a test
//! fails, and its log is printed then.
//!
//! Prerequisites (Debian): `ocserv openconnect gnutls-bin` (scripts/test and .ci/run install
//! them), root, and `/dev/net/tun`. A missing one fails the test with a message saying so.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::daemon::{signal, TestDaemon, SECRET};

/// ocserv's own `ipv4-network`, used only when ravpnd's Accept carries no address.
/// Benchmarking range (RFC 2544): on no host network, so the host routes ocserv adds for
/// its clients shadow nothing.
pub const OCSERV_OWN_NETWORK: &str = "198.18.200.0/24";
/// ocserv's own `dns`, used only when ravpnd's Accept carries none.
pub const OCSERV_OWN_DNS: &str = "198.18.200.53";

/// The NAS-Identifier ocserv sends (`radius[nas-identifier=…]`).
pub const NAS_IDENTIFIER: &str = "ravpnd-test-gw";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A short name unique to this test process and call, for tun devices (IFNAMSIZ is 16).
fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Finds a program on PATH or in the sbin directories (ocserv lives in /usr/sbin).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "`{name}` not found: the ocserv end-to-end tests need the Debian packages \
             `ocserv openconnect gnutls-bin` (./scripts/test and .ci/run install them; \
             by hand: apt-get install ocserv openconnect gnutls-bin; `{name}` is in `{package}`)"
        )
    })
}

/// Fails with a clear message when something the stack needs is missing; never skips.
pub fn require_prerequisites() {
    program("ocserv", "ocserv");
    program("openconnect", "openconnect");
    program("certtool", "gnutls-bin");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "the ocserv end-to-end tests must run as root: ocserv and openconnect create tun devices"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: ocserv and openconnect need the tun driver \
         (in a container: --device /dev/net/tun --cap-add NET_ADMIN)"
    );
    assert!(
        Path::new("/etc/radcli/dictionary").is_file()
            && Path::new("/etc/radcli/dictionary.microsoft").is_file(),
        "/etc/radcli/dictionary{{,.microsoft}} missing: they come with ocserv's dependency libradcli4"
    );
}

/// Runs a command that must succeed; returns its standard output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port free on 127.0.0.1 for both TCP and UDP (ocserv listens on both).
fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1");
}

/// Self-signed ECDSA server certificate for 127.0.0.1; returns its `pin-sha256:…`.
fn make_certificate(dir: &Path) -> String {
    let certtool = program("certtool", "gnutls-bin");
    let key = dir.join("server-key.pem");
    let cert = dir.join("server-cert.pem");
    let template = dir.join("server.tmpl");
    std::fs::write(
        &template,
        "cn = \"127.0.0.1\"\norganization = \"ravpnd test gateway\"\nserial = 1\n\
         expiration_days = 2\nip_address = \"127.0.0.1\"\ntls_www_server\nsigning_key\n\
         encryption_key\n",
    )
    .unwrap();
    run(Command::new(&certtool)
        .args([
            "--generate-privkey",
            "--key-type=ecdsa",
            "--no-text",
            "--outfile",
        ])
        .arg(&key));
    run(Command::new(&certtool)
        .args(["--generate-self-signed", "--no-text", "--load-privkey"])
        .arg(&key)
        .arg("--template")
        .arg(&template)
        .arg("--outfile")
        .arg(&cert));
    let info = run(Command::new(&certtool)
        .args(["--certificate-info", "--infile"])
        .arg(&cert));
    info.split_whitespace()
        .find(|w| w.starts_with("pin-sha256:"))
        .unwrap_or_else(|| panic!("no pin-sha256 in certtool --certificate-info:\n{info}"))
        .to_owned()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `sig` to `child` and waits up to 10 s for it to exit, then SIGKILLs it.
/// Returns whether it exited on the signal alone.
fn stop_child(child: &mut Child, sig: &str) -> bool {
    if child.try_wait().ok().flatten().is_some() {
        return true;
    }
    signal(child.id(), sig);
    if wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten()).is_some() {
        return true;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// One ocserv instance in front of one [`TestDaemon`].
pub struct Gateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// TCP and UDP port on 127.0.0.1.
    pub port: u16,
    /// `pin-sha256:…` of the server certificate, for `openconnect --servercert`.
    pub pin: String,
    log_path: PathBuf,
}

impl Gateway {
    /// Starts ocserv with `auth = "radius[…]"` and `acct = "radius[…]"` pointing at the
    /// daemon's auth and accounting addresses (shared secret [`SECRET`]), and waits until it
    /// accepts connections.
    pub fn start(daemon: &TestDaemon) -> Self {
        require_prerequisites();
        // Workers run as nobody and connect to the sec-mod socket in this directory, so it
        // and every directory above it must be searchable by others.
        let base = std::env::temp_dir();
        let base = if searchable_by_others(&base) {
            base
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("ravpnd-ocserv-")
            .tempdir_in(&base)
            .expect("tempdir");
        set_mode(dir.path(), 0o755);
        let pin = make_certificate(dir.path());
        write_radcli_files(dir.path(), daemon.auth_addr, daemon.acct_addr);
        let mut gw = Gateway {
            child: None,
            dir,
            port: 0,
            pin,
            log_path: PathBuf::new(),
        };
        let mut why = String::new();
        for attempt in 0..3 {
            // A port is free when chosen but another process may take it before ocserv
            // binds: then try a new one.
            gw.port = free_tcp_udp_port();
            write_ocserv_conf(gw.dir.path(), gw.port);
            gw.log_path = gw.dir.path().join(format!("ocserv-{attempt}.log"));
            let log = std::fs::File::create(&gw.log_path).unwrap();
            gw.child = Some(
                Command::new(program("ocserv", "ocserv"))
                    .args(["--foreground", "--debug=3", "--config"])
                    .arg(gw.dir.path().join("ocserv.conf"))
                    .current_dir(gw.dir.path())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("spawn ocserv"),
            );
            match gw.wait_ready() {
                Ok(()) => return gw,
                Err(e) => {
                    gw.stop();
                    why = format!("{e}\n{}", gw.log());
                    if !why.contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("ocserv did not start: {why}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ready = wait_for(Duration::from_secs(15), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(Err(format!("ocserv exited early: {status}")));
            }
            let log = self.log();
            (log.contains("sec-mod initialized")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok())
            .then_some(Ok(()))
        });
        ready.unwrap_or_else(|| Err("ocserv not ready within 15 s".into()))
    }

    /// ocserv's log (its stderr and stdout, `--debug=3`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The Acct-Session-Ids ocserv opened, in order (from its debug log).
    pub fn opened_sessions(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split("radius-auth: opening session ").nth(1))
            .map(|s| s.trim().to_owned())
            .collect()
    }

    /// SIGTERM and wait; SIGKILL if it lingers.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, "TERM");
        }
    }

    /// Runs openconnect for `user` with `password` on standard input, non-interactively,
    /// and waits until it is either connected ("Configured as …" and the recorder script ran
    /// with reason=connect) or has exited (refused).
    pub fn login(&self, user: &str, password: &str) -> Login {
        let dir = tempfile::Builder::new()
            .prefix("ravpnd-openconnect-")
            .tempdir()
            .expect("tempdir");
        let script = dir.path().join("record-env.sh");
        std::fs::write(&script, recorder_script(dir.path())).unwrap();
        set_mode(&script, 0o755);
        let tun = unique("rvc");
        let log_path = dir.path().join("openconnect.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(program("openconnect", "openconnect"))
            .args([
                "--protocol=anyconnect",
                "--non-inter",
                "--passwd-on-stdin",
                "--no-proxy",
                "--disable-ipv6",
                "--user",
                user,
                "--servercert",
                &self.pin,
                "--interface",
                &tun,
                "--script",
            ])
            .arg(&script)
            .arg(format!("https://127.0.0.1:{}/", self.port))
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn openconnect");
        {
            // One password, then end of input: a second prompt (ocserv lets the user retry
            // after a reject) fails at once under --non-inter.
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{password}").unwrap();
        }
        let mut login = Login {
            child: Some(child),
            dir,
            log_path,
            tun,
            user: user.to_owned(),
            address: None,
            exit: None,
        };
        let outcome = wait_for(Duration::from_secs(30), || {
            if let Some(status) = login.child.as_mut().unwrap().try_wait().unwrap() {
                login.child = None;
                login.exit = Some(status);
                return Some(());
            }
            let log = login.log();
            let addr = log
                .lines()
                .find_map(|l| l.strip_prefix("Configured as "))
                .and_then(|rest| rest.split([',', ' ']).next())
                .and_then(|a| a.parse::<Ipv4Addr>().ok())?;
            login.env("connect")?;
            login.address = Some(addr);
            Some(())
        });
        if outcome.is_none() {
            panic!(
                "openconnect for {user} neither connected nor gave up within 30 s\n\
                 ---- openconnect ----\n{}\n---- ocserv ----\n{}",
                login.log(),
                self.log()
            );
        }
        login
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ocserv log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// One openconnect run.
pub struct Login {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
    /// The client's tun device name (`--interface`).
    pub tun: String,
    pub user: String,
    /// The address of "Configured as <address>", when connected.
    pub address: Option<Ipv4Addr>,
    /// openconnect's exit status, once it exited.
    pub exit: Option<std::process::ExitStatus>,
}

impl Login {
    pub fn connected(&self) -> bool {
        self.address.is_some() && self.child.is_some()
    }

    /// openconnect's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The variables the recorder script got for `reason` (pre-init, connect, disconnect),
    /// or `None` if it has not run for that reason.
    pub fn env(&self, reason: &str) -> Option<Vec<(String, String)>> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("env-{reason}"))).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// One variable the script got with reason=connect.
    pub fn connect_var(&self, name: &str) -> Option<String> {
        self.env("connect")?
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// Disconnects as a user would (SIGINT: openconnect sends BYE and exits) and waits.
    pub fn disconnect(&mut self) {
        let mut c = self.child.take().expect("openconnect is running");
        assert!(
            stop_child(&mut c, "INT"),
            "openconnect ignored SIGINT:\n{}",
            self.log()
        );
        self.exit = c.try_wait().ok().flatten();
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- openconnect log, user {} ({}) ----\n{}",
                self.user,
                self.log_path.display(),
                self.log()
            );
        }
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, "TERM");
        }
    }
}

/// Whether `dir` and all its ancestors have the search bit for others.
fn searchable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|d| {
        std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A vpnc-script stand-in: records what openconnect hands it and configures nothing.
fn recorder_script(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "#!/bin/sh\n\
         # Records the variables openconnect gives vpnc-script; configures nothing.\n\
         env | grep -E '^(reason|TUNDEV|VPNGATEWAY|INTERNAL_IP[46]_[A-Z_]*|CISCO_[A-Z_]*)=' \
         | sort > '{dir}/env-'\"$reason\".tmp\n\
         mv '{dir}/env-'\"$reason\".tmp '{dir}/env-'\"$reason\"\n\
         exit 0\n"
    )
}

/// radcli's files. Debian's /etc/radcli/dictionary leaves the Microsoft dictionary out, and
/// without it radcli drops MS-Primary/Secondary-DNS-Server (vendor 311) from the Accept.
fn write_radcli_files(dir: &Path, auth: SocketAddr, acct: SocketAddr) {
    std::fs::write(
        dir.join("dictionary"),
        "$INCLUDE /etc/radcli/dictionary\n$INCLUDE /etc/radcli/dictionary.microsoft\n",
    )
    .unwrap();
    // The secret also goes in `servers` (radcli wants the file); host:port:secret wins.
    std::fs::write(dir.join("servers"), format!("{} {SECRET}\n", auth.ip())).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("radiusclient.conf"),
        format!(
            "authserver {auth}:{SECRET}\n\
             acctserver {acct}:{SECRET}\n\
             servers {d}/servers\n\
             dictionary {d}/dictionary\n\
             default_realm\n\
             radius_timeout 5\n\
             radius_retries 2\n\
             bindaddr 127.0.0.1\n"
        ),
    )
    .unwrap();
}

fn write_ocserv_conf(dir: &Path, port: u16) {
    let d = dir.display();
    let (net, _) = OCSERV_OWN_NETWORK.split_once('/').unwrap();
    let device = unique("rvg");
    std::fs::write(
        dir.join("ocserv.conf"),
        format!(
            "# groupconfig=true: take address, DNS and interim interval from the Accept.\n\
             auth = \"radius[config={d}/radiusclient.conf,groupconfig=true,nas-identifier={NAS_IDENTIFIER}]\"\n\
             acct = \"radius[config={d}/radiusclient.conf]\"\n\
             listen-host = 127.0.0.1\n\
             tcp-port = {port}\n\
             udp-port = {port}\n\
             run-as-user = nobody\n\
             run-as-group = nogroup\n\
             socket-file = {d}/ocserv.sock\n\
             occtl-socket-file = {d}/occtl.sock\n\
             use-occtl = true\n\
             pid-file = {d}/ocserv.pid\n\
             server-cert = {d}/server-cert.pem\n\
             server-key = {d}/server-key.pem\n\
             isolate-workers = true\n\
             max-clients = 16\n\
             max-same-clients = 0\n\
             rate-limit-ms = 0\n\
             keepalive = 300\n\
             dpd = 60\n\
             mobile-dpd = 300\n\
             try-mtu-discovery = false\n\
             auth-timeout = 30\n\
             cookie-timeout = 30\n\
             deny-roaming = false\n\
             rekey-time = 172800\n\
             rekey-method = ssl\n\
             stats-report-time = 2\n\
             log-level = 2\n\
             device = {device}\n\
             predictable-ips = true\n\
             ipv4-network = {net}\n\
             ipv4-netmask = 255.255.255.0\n\
             dns = {OCSERV_OWN_DNS}\n\
             ping-leases = false\n\
             cisco-client-compat = true\n\
             dtls-legacy = true\n"
        ),
    )
    .unwrap();
}

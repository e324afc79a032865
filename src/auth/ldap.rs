//! Active Directory: the user's password is checked by an LDAP simple bind as the user
//! (UPN), on a small pool of connections per server so no bind pays a new TCP+TLS handshake.
//! Admin work (listing candidates, existence checks, the lockout pre-check) uses its own
//! admin-bound connections ([`admin`]), never the user-bind pool, and never re-binds a
//! connection between the two. Primary first; a server that fails is skipped until the
//! health check ([`health`]) finds it answering again.

mod admin;
mod config;
mod health;
mod lockout;

pub use config::{ActiveDirectoryConfig, LdapTls};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, StdStream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{AuthError, RemoveOnDrop};
use crate::metrics::METRICS;

/// Maps the AD sub-code in a failed bind's diagnostic ("… data 52e, v4563").
fn bind_error(rc: u32, text: &str) -> AuthError {
    if rc != 49 {
        return AuthError::Internal(format!("bind refused: rc={rc} {text}"));
    }
    let code = text
        .split("data ")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .unwrap_or("")
        .to_ascii_lowercase();
    match code.as_str() {
        "525" => AuthError::UnknownUser,
        "52e" => AuthError::BadPassword,
        "530" | "531" => AuthError::NotPermitted,
        "532" => AuthError::PasswordExpired,
        "533" => AuthError::AccountDisabled,
        "701" => AuthError::AccountExpired,
        "773" => AuthError::MustChangePassword,
        "775" => AuthError::LockedOut,
        _ => AuthError::BadPassword,
    }
}

struct Server {
    host: String,
    addr: SocketAddr,
    /// Idle connections last bound as some user: only ever used for user binds.
    pool: Mutex<Vec<Ldap>>,
    /// Idle connections bound as the admin: only ever used for admin searches.
    admin_pool: Mutex<Vec<Ldap>>,
    label: &'static str,
    health: health::Health,
}

impl Server {
    fn new(host: String, addr: SocketAddr, label: &'static str) -> Self {
        Self {
            host,
            addr,
            pool: Mutex::default(),
            admin_pool: Mutex::default(),
            label,
            health: health::Health::new(label),
        }
    }

    fn forget_connections(&self) {
        self.pool.lock().clear();
        self.admin_pool.lock().clear();
    }
}

/// One user-facing directory entry for `user candidates`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub sam_account_name: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub enabled: bool,
}

type Tag = [u8; 32];

/// One bind that identical concurrent requests wait on.
type InFlight = tokio::sync::OnceCell<Result<(), String>>;

/// Why one operation on one server failed, when it was not the directory's verdict.
enum Unusable {
    /// Connection refused, reset or closed: a pooled connection may just have gone stale.
    Broken(String),
    /// No answer within `timeout`: the server is slow or gone; do not wait on it again.
    TimedOut(String),
    /// It answered that it will not check now (busy, unavailable, unwilling).
    Declined(String),
}

impl Unusable {
    fn into_message(self) -> String {
        match self {
            Unusable::Broken(m) | Unusable::TimedOut(m) | Unusable::Declined(m) => m,
        }
    }
}

pub struct AdVerifier {
    config: ActiveDirectoryConfig,
    /// Refused (user, password) pairs, as keyed hashes: the lockout guard.
    refused: moka::sync::Cache<Tag, ()>,
    /// Binds under way by (user, password): identical concurrent requests share one.
    inflight: Mutex<std::collections::HashMap<Tag, Arc<InFlight>>>,
    tag_key: [u8; 32],
    /// Bounds the directory calls in flight so a slow directory cannot pile up connections.
    bind_permits: tokio::sync::Semaphore,
    servers: Vec<Server>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Lockout thresholds read from the directory, for the pre-check.
    policies: lockout::Policies,
    /// Set while the health-check task runs: down servers then wait for its probes.
    probing: AtomicBool,
    /// Until when (ms since `epoch`) probes leave the admin's bind out: set when the
    /// directory refuses the admin's credentials (binding with them every interval would lock
    /// the admin account out). 0: they bind.
    probe_binds_after: std::sync::atomic::AtomicU64,
    /// The domain's NetBIOS name as the directory has it (users bind as `NETBIOS\\sam`).
    netbios: tokio::sync::OnceCell<String>,
    /// When reading it last failed.
    netbios_failed: Mutex<Option<Instant>>,
    /// Wakes the health-check task when a request finds a server unusable.
    wake: tokio::sync::Notify,
    epoch: Instant,
}

impl AdVerifier {
    pub fn new(config: &ActiveDirectoryConfig) -> Result<Self, String> {
        let port = config.port.unwrap_or(match config.tls {
            LdapTls::Ldaps => 636,
            _ => 389,
        });
        let mut servers = vec![Server::new(
            config.primary_host.clone(),
            SocketAddr::new(config.primary_address, port),
            "primary",
        )];
        if let (Some(h), Some(a)) = (&config.secondary_host, config.secondary_address) {
            servers.push(Server::new(
                h.clone(),
                SocketAddr::new(a, port),
                "secondary",
            ));
        }
        let tls = match config.tls {
            LdapTls::None => None,
            _ => Some(Arc::new(tls_config(config.ca_file.as_deref())?)),
        };
        let mut tag_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut tag_key);
        Ok(Self {
            config: config.clone(),
            refused: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.lockout_guard_window.max(Duration::from_millis(1)))
                .build(),
            inflight: Mutex::default(),
            tag_key,
            bind_permits: tokio::sync::Semaphore::new(config.max_in_flight.max(1)),
            servers,
            tls,
            policies: lockout::Policies::default(),
            probing: AtomicBool::new(false),
            probe_binds_after: std::sync::atomic::AtomicU64::new(0),
            netbios: tokio::sync::OnceCell::new(),
            netbios_failed: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Servers in the order to try them now: the usable ones, primary first — but one whose
    /// binds went unanswered at its last probe after the others. When none is usable and no
    /// health check runs, all of them (nothing else would bring one back).
    fn order(&self) -> Vec<&Server> {
        let now = self.now_ms();
        let mut up: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| s.health.usable(now))
            .collect();
        up.sort_by_key(|s| s.health.binds_unanswered());
        if up.is_empty() && !self.probing.load(Ordering::Relaxed) {
            return self.servers.iter().collect();
        }
        up
    }

    /// A request found `server` unusable: skip it until a probe says otherwise.
    fn request_failed(&self, server: &Server, why: &str) {
        METRICS
            .directory_errors
            .with_label_values(&[server.label])
            .inc();
        tracing::warn!(server = server.label, %why, "directory server unusable");
        server.forget_connections();
        let until = self.now_ms() + self.config.retry_primary_after.as_millis() as u64;
        server.health.mark_down(until, why);
        self.wake.notify_one();
    }

    async fn connect(&self, server: &Server) -> Result<Ldap, String> {
        let t = self.config.timeout;
        let tcp = tokio::time::timeout(t, tokio::net::TcpStream::connect(server.addr))
            .await
            .map_err(|_| format!("connect to {} timed out", server.addr))?
            .map_err(|e| format!("connect to {}: {e}", server.addr))?;
        let _ = tcp.set_nodelay(true);
        let std = tcp.into_std().map_err(|e| e.to_string())?;
        let scheme = if self.config.tls == LdapTls::Ldaps {
            "ldaps"
        } else {
            "ldap"
        };
        let url = format!("{scheme}://{}:{}", server.host, server.addr.port());
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(t)
            .set_starttls(self.config.tls == LdapTls::Starttls)
            .set_std_stream(StdStream::Tcp(std));
        if let Some(c) = &self.tls {
            settings = settings.set_config(c.clone());
        }
        let (conn, ldap) = tokio::time::timeout(t, LdapConnAsync::with_settings(settings, &url))
            .await
            .map_err(|_| format!("LDAP session with {} timed out", server.addr))?
            .map_err(|e| format!("LDAP session with {}: {e}", server.addr))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// One bind on one server: `Ok(Ok(()))` accepted, `Ok(Err(_))` the directory's verdict,
    /// `Err(_)` the server could not be used. A pooled connection that turns out closed (the
    /// DC drops idle ones) is replaced by a new one once, without blaming the server.
    async fn bind_on(
        &self,
        server: &Server,
        bind_name: &str,
        password: &str,
    ) -> Result<Result<(), AuthError>, String> {
        let pooled = server.pool.lock().pop();
        if let Some(ldap) = pooled {
            match self.bind_with(server, ldap, bind_name, password).await {
                Ok(verdict) => return Ok(verdict),
                Err(Unusable::TimedOut(why) | Unusable::Declined(why)) => return Err(why),
                Err(Unusable::Broken(why)) => {
                    tracing::debug!(server = server.label, %why, "pooled connection broken");
                }
            }
        }
        let ldap = self.connect(server).await?;
        self.bind_with(server, ldap, bind_name, password)
            .await
            .map_err(Unusable::into_message)
    }

    async fn bind_with(
        &self,
        server: &Server,
        mut ldap: Ldap,
        bind_name: &str,
        password: &str,
    ) -> Result<Result<(), AuthError>, Unusable> {
        let started = Instant::now();
        let res =
            tokio::time::timeout(self.config.timeout, ldap.simple_bind(bind_name, password)).await;
        METRICS
            .directory_seconds
            .with_label_values(&[server.label])
            .observe(started.elapsed().as_secs_f64());
        let res = match res {
            Err(_) => {
                return Err(Unusable::TimedOut(format!(
                    "bind on {} timed out",
                    server.addr
                )))
            }
            Ok(Err(e)) => return Err(Unusable::Broken(format!("bind on {}: {e}", server.addr))),
            Ok(Ok(r)) => r,
        };
        let mut pool = server.pool.lock();
        if pool.len() < self.config.pool_size {
            pool.push(ldap);
        }
        drop(pool);
        // busy (51), unavailable (52), unwilling to perform (53): the server declined to
        // check, which says nothing of the password; the other DC may answer.
        if matches!(res.rc, 51..=53) {
            return Err(Unusable::Declined(format!(
                "{} declined the bind: rc={} {}",
                server.addr, res.rc, res.text
            )));
        }
        Ok(if res.rc == 0 {
            Ok(())
        } else {
            Err(bind_error(res.rc, &res.text))
        })
    }

    /// The store key of a directory user: lower-cased sAMAccountName.
    pub fn user_key(&self, name: &str) -> String {
        self.config.sam(name).to_lowercase()
    }

    fn tag(&self, bind_name: &str, password: &str) -> Tag {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.tag_key).expect("any key");
        mac.update(bind_name.to_lowercase().as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks a password by binding as the user, failing over between the DCs. Identical
    /// concurrent checks share one bind; a password just refused is not tried again within
    /// the lockout guard window. Nothing is cached on success: every accept is a bind.
    pub async fn bind_user(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        // An empty password would be an anonymous ("unauthenticated") bind, which AD accepts.
        if password.is_empty() {
            return Err(AuthError::BadPassword);
        }
        let password = std::str::from_utf8(password).map_err(|_| AuthError::BadPassword)?;
        let netbios = self.netbios().await;
        let bind_name = self
            .config
            .bind_name(name, &netbios)
            .ok_or(AuthError::UnknownUser)?;
        let tag = self.tag(&bind_name, password);
        let guard = !self.config.lockout_guard_window.is_zero();
        if guard && self.refused.contains_key(&tag) {
            METRICS.lockout_guard.inc();
            return Err(AuthError::BadPassword);
        }
        let cell = self.inflight.lock().entry(tag).or_default().clone();
        let shared = cell
            .get_or_init(|| async {
                let _forget = RemoveOnDrop(&self.inflight, tag);
                let r = self.check(name, &bind_name, password).await;
                if guard && matches!(r, Err(AuthError::BadPassword)) {
                    self.refused.insert(tag, ());
                }
                r.map_err(|e| encode_error(&e))
            })
            .await
            .clone();
        shared.map_err(|e| decode_error(&e))
    }

    /// The directory work of one check, within one in-flight permit: the optional lockout
    /// pre-check (admin connections), then the bind (user-bind connections).
    async fn check(&self, name: &str, bind_name: &str, password: &str) -> Result<(), AuthError> {
        let _permit = tokio::time::timeout(self.config.timeout, self.bind_permits.acquire())
            .await
            .map_err(|_| AuthError::DirectoryUnavailable)?
            .map_err(|_| AuthError::DirectoryUnavailable)?;
        if self.config.lockout_precheck {
            self.lockout_precheck(name, bind_name).await?;
        }
        self.bind_failover(bind_name, password).await
    }

    async fn bind_failover(&self, bind_name: &str, password: &str) -> Result<(), AuthError> {
        for server in self.order() {
            match self.bind_on(server, bind_name, password).await {
                Ok(verdict) => {
                    if server.label == "secondary" {
                        METRICS.directory_failovers.inc();
                    }
                    server.health.answered(self.now_ms());
                    return verdict;
                }
                Err(why) => self.request_failed(server, &why),
            }
        }
        Err(AuthError::DirectoryUnavailable)
    }
}

/// The first value of `attr` in an entry (attribute names compare without case, as LDAP's do).
fn first<'e>(e: &'e ldap3::SearchEntry, attr: &str) -> Option<&'e str> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// `AuthError` through the single-flight cell (which needs `Clone`).
fn encode_error(e: &AuthError) -> String {
    match e {
        AuthError::Internal(m) => format!("internal:{m}"),
        other => other.to_string(),
    }
}

fn decode_error(s: &str) -> AuthError {
    match s {
        "unknown user" => AuthError::UnknownUser,
        "bad password" => AuthError::BadPassword,
        "account disabled" => AuthError::AccountDisabled,
        "account expired" => AuthError::AccountExpired,
        "password expired" => AuthError::PasswordExpired,
        "password must be changed" => AuthError::MustChangePassword,
        "account locked out" => AuthError::LockedOut,
        "logon not permitted now or from here" => AuthError::NotPermitted,
        "directory unavailable" => AuthError::DirectoryUnavailable,
        "refused to prevent an account lockout" => AuthError::LockoutPrevented,
        other => AuthError::Internal(other.trim_start_matches("internal:").to_owned()),
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ActiveDirectoryConfig {
        toml_cfg("")
    }

    fn toml_cfg(extra: &str) -> ActiveDirectoryConfig {
        let s = format!(
            "primary_host = \"dc1.corp.example.com\"\nprimary_address = \"127.0.0.53\"\ndomain = \"corp.example.com\"\nadmin_password = \"x\"\n{extra}"
        );
        toml::from_str(&s).unwrap()
    }

    #[test]
    fn user_name_forms() {
        let c = cfg();
        for name in [
            "alice",
            "CORP\\alice",
            "corp\\alice",
            "corp.example.com\\alice",
        ] {
            assert_eq!(
                c.bind_name(name, "CORP").as_deref(),
                Some("CORP\\alice"),
                "{name}"
            );
        }
        assert_eq!(
            c.bind_name("alice@CORP.example.com", "CORP").as_deref(),
            Some("CORP\\alice")
        );
        // Another domain's user, or a name that is not one account's: never this domain's
        // `alice` (a bind as `alice@other.example` would check another account's password).
        for name in [
            "OTHER\\alice",
            "alice@other.example",
            "alice@corp.example.com.evil",
            "a@b@corp.example.com",
            "CORP\\a@corp.example.com",
            "CORP\\",
            "@corp.example.com",
            "",
        ] {
            assert_eq!(c.bind_name(name, "CORP"), None, "{name}");
        }
        assert_eq!(c.sam("CORP\\alice"), "alice");
        assert_eq!(c.sam("alice@corp.example.com"), "alice");
        assert_eq!(c.base_dn(), "DC=corp,DC=example,DC=com");
        // The directory's NetBIOS name, not the domain's first label, names the domain.
        assert_eq!(c.netbios(), "CORP", "the guess");
        assert_eq!(
            c.bind_name("EXAMPLE\\bob", "EXAMPLE").as_deref(),
            Some("EXAMPLE\\bob")
        );
        assert_eq!(
            c.bind_name("bob", "EXAMPLE").as_deref(),
            Some("EXAMPLE\\bob")
        );
        assert_eq!(c.bind_name("CORP\\bob", "EXAMPLE"), None);
        let n = toml_cfg("netbios_domain = \"EXAMPLE\"");
        assert_eq!(n.netbios(), "EXAMPLE");
        assert_eq!(n.upn("bob").as_deref(), Some("bob@corp.example.com"));
    }

    /// A check given up on (the request's timeout dropped its future while the DC said
    /// nothing) leaves nothing behind in the in-flight map.
    #[tokio::test]
    async fn an_abandoned_check_is_forgotten() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let c: ActiveDirectoryConfig = toml::from_str(&format!(
            "primary_host = \"dc1.corp.example.com\"\nprimary_address = \"127.0.0.1\"\n\
             domain = \"corp.example.com\"\nadmin_password = \"x\"\n\
             tls = \"none\"\nport = {port}\ntimeout = \"30s\""
        ))
        .unwrap();
        let v = AdVerifier::new(&c).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), v.bind_user("alice", b"pw")).await;
        assert!(r.is_err(), "the silent DC cannot answer");
        assert!(v.inflight.lock().is_empty());
    }

    /// A stand-in DC that answers searches (the root DSE: no entries, success), the admin's
    /// binds with `admin_rc` and the others (naming `alice`) with `user_rc` — never when
    /// `None`; it counts both kinds of bind. BER by hand: a response carries only the message
    /// id, the code and two empty strings.
    struct FakeDc {
        port: u16,
        user_binds: Arc<std::sync::atomic::AtomicUsize>,
        admin_binds: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FakeDc {
        async fn start(addr: &str, admin_rc: Option<u8>, user_rc: Option<u8>) -> Self {
            use std::sync::atomic::AtomicUsize;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            let port = l.local_addr().unwrap().port();
            let (user_binds, admin_binds) =
                (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let counts = (user_binds.clone(), admin_binds.clone());
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let (users, admins) = counts.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        // SEQUENCE, short length, INTEGER message id (one byte), then the op.
                        while let Ok(n @ 7..) = s.read(&mut buf).await {
                            let (id, op) = (buf[4], buf[5]);
                            let done = match op {
                                0x60 => {
                                    let alice = buf[..n].windows(5).any(|w| w == b"alice");
                                    let count = if alice { &users } else { &admins };
                                    count.fetch_add(1, Ordering::SeqCst);
                                    match if alice { user_rc } else { admin_rc } {
                                        Some(rc) => 0x61_00 | u16::from(rc),
                                        None => continue, // never answered
                                    }
                                }
                                0x63 => 0x65_00, // SearchResultDone, success
                                _ => return,     // an unbind: done
                            };
                            let [op, rc] = u16::to_be_bytes(done);
                            let resp = [
                                0x30, 0x0c, 0x02, 0x01, id, op, 0x07, 0x0a, 0x01, rc, 0x04, 0x00,
                                0x04, 0x00,
                            ];
                            if s.write_all(&resp).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Self {
                port,
                user_binds,
                admin_binds,
            }
        }
    }

    /// A DC on 127.0.0.1:`port` (and one on 127.0.0.2 with `secondary`), plain LDAP, with
    /// `extra` settings.
    fn fake_dc_config(port: u16, secondary: bool, extra: &str) -> ActiveDirectoryConfig {
        let second = if secondary {
            "secondary_host = \"dc2.corp.example.com\"\nsecondary_address = \"127.0.0.2\"\n"
        } else {
            ""
        };
        toml::from_str(&format!(
            "primary_host = \"dc1.corp.example.com\"\nprimary_address = \"127.0.0.1\"\n{second}\
             domain = \"corp.example.com\"\nnetbios_domain = \"CORP\"\nadmin_password = \"x\"\n\
             tls = \"none\"\nport = {port}\n{extra}"
        ))
        .unwrap()
    }

    fn probed_config(port: u16, secondary: bool) -> ActiveDirectoryConfig {
        fake_dc_config(
            port,
            secondary,
            "timeout = \"1s\"\nhealth_check_interval = \"100ms\"\nlockout_precheck = false",
        )
    }

    /// Waits (up to 10 s) until `cond` holds.
    async fn eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Probes every server of `v` until `stop`.
    fn probing(
        v: &Arc<AdVerifier>,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let stop = tokio_util::sync::CancellationToken::new();
        (stop.clone(), tokio::spawn(v.clone().health_check(stop)))
    }

    /// A DC answering reads but not binds (its authentication backend stuck) is tried after
    /// the other: requests no longer wait out `timeout` on it first. (The probe read only the
    /// root DSE: such a DC passed it, and every request bound there first.)
    #[tokio::test]
    async fn a_dc_whose_binds_hang_is_tried_after_the_other() {
        let hung = FakeDc::start("127.0.0.1:0", None, None).await;
        let _ok = FakeDc::start(&format!("127.0.0.2:{}", hung.port), Some(0), Some(0)).await;
        let v = Arc::new(AdVerifier::new(&probed_config(hung.port, true)).unwrap());
        let (stop, task) = probing(&v);
        assert!(
            eventually(|| v.servers[0].health.binds_unanswered()).await,
            "the probe finds the primary's binds unanswered"
        );
        for _ in 0..3 {
            assert!(v.bind_user("alice", b"pw").await.is_ok());
            tokio::time::sleep(Duration::from_millis(250)).await; // probe rounds in between
        }
        assert_eq!(hung.user_binds.load(Ordering::SeqCst), 0);
        assert!(v.servers[0].health.binds_unanswered(), "still tried last");
        stop.cancel();
        task.await.unwrap();
    }

    /// A server that accepts connections but answers nothing is down (and `/readyz` says so),
    /// not a DC whose binds alone hang.
    #[tokio::test]
    async fn a_server_answering_nothing_is_down() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let v = Arc::new(AdVerifier::new(&probed_config(port, false)).unwrap());
        let (stop, task) = probing(&v);
        assert!(eventually(|| !v.servers[0].health.usable(v.now_ms())).await);
        assert!(v.unreachable().is_some());
        stop.cancel();
        task.await.unwrap();
    }

    /// The admin's bind alone going unanswered (say the admin is another domain's, across a
    /// slow trust) must not shut logins out: a lone DC is still tried, and answers them.
    #[tokio::test]
    async fn a_lone_dc_whose_admin_bind_hangs_still_serves_logins() {
        let dc = FakeDc::start("127.0.0.1:0", None, Some(0)).await;
        let v = Arc::new(AdVerifier::new(&probed_config(dc.port, false)).unwrap());
        let (stop, task) = probing(&v);
        assert!(eventually(|| v.servers[0].health.binds_unanswered()).await);
        tokio::time::sleep(Duration::from_millis(400)).await; // a probe round more
        assert!(v.bind_user("alice", b"pw").await.is_ok());
        stop.cancel();
        task.await.unwrap();
    }

    /// Probes bind as the admin; refused (a wrong admin password), they leave the bind out
    /// for a while rather than lock the admin account out, and the DC, which answered, stays
    /// in use. A server error (rc 80) is an answer, and suspends nothing.
    #[tokio::test]
    async fn a_refused_admin_bind_suspends_probe_binds_and_other_answers_count() {
        let dc = FakeDc::start("127.0.0.1:0", Some(49), Some(0)).await;
        let v = Arc::new(AdVerifier::new(&probed_config(dc.port, false)).unwrap());
        let (stop, task) = probing(&v);
        assert!(eventually(|| v.probe_binds_after.load(Ordering::Relaxed) > 0).await);
        tokio::time::sleep(Duration::from_millis(500)).await; // more probe rounds
        assert_eq!(dc.admin_binds.load(Ordering::SeqCst), 1);
        let left = v.probe_binds_after.load(Ordering::Relaxed) - v.now_ms();
        assert!(
            (3_590_000..=3_600_000).contains(&left),
            "suspended for an hour: {left} ms left"
        );
        assert!(v.servers[0].health.usable(v.now_ms()));
        assert!(!v.servers[0].health.binds_unanswered());
        // The hour over, probes bind again (and, refused again, suspend again).
        v.probe_binds_after.store(1, Ordering::Relaxed);
        assert!(eventually(|| dc.admin_binds.load(Ordering::SeqCst) == 2).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(dc.admin_binds.load(Ordering::SeqCst), 2);
        stop.cancel();
        task.await.unwrap();

        let dc = FakeDc::start("127.0.0.1:0", Some(80), Some(0)).await;
        let v = Arc::new(AdVerifier::new(&probed_config(dc.port, false)).unwrap());
        let (stop, task) = probing(&v);
        assert!(
            eventually(|| dc.admin_binds.load(Ordering::SeqCst) >= 3).await,
            "binding on"
        );
        assert_eq!(v.probe_binds_after.load(Ordering::Relaxed), 0);
        assert!(v.servers[0].health.usable(v.now_ms()));
        assert!(!v.servers[0].health.binds_unanswered());
        stop.cancel();
        task.await.unwrap();
    }

    /// A DC that declines to check (busy, unavailable, unwilling) is not the verdict: the
    /// other DC answers; with no other, the directory is unavailable (was "internal error").
    #[tokio::test]
    async fn a_dc_declining_the_bind_fails_over() {
        let port = FakeDc::start("127.0.0.1:0", Some(52), Some(52)).await.port;
        // The secondary on the same port of another loopback address.
        let _ok = FakeDc::start(&format!("127.0.0.2:{port}"), Some(0), Some(0)).await;
        let c = |secondary: bool| {
            fake_dc_config(
                port,
                secondary,
                "timeout = \"2s\"\nhealth_check_interval = \"0s\"",
            )
        };
        let v = AdVerifier::new(&c(true)).unwrap();
        assert!(v.bind_user("alice", b"pw").await.is_ok());
        let v = AdVerifier::new(&c(false)).unwrap();
        assert!(matches!(
            v.bind_user("alice", b"pw").await,
            Err(AuthError::DirectoryUnavailable)
        ));
    }

    #[test]
    fn bind_diagnostics_map_to_reasons() {
        let d = |code: &str| {
            bind_error(49, &format!("80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data {code}, v4563"))
        };
        assert!(matches!(d("52e"), AuthError::BadPassword));
        assert!(matches!(d("525"), AuthError::UnknownUser));
        assert!(matches!(d("530"), AuthError::NotPermitted));
        assert!(matches!(d("531"), AuthError::NotPermitted));
        assert!(matches!(d("532"), AuthError::PasswordExpired));
        assert!(matches!(d("533"), AuthError::AccountDisabled));
        assert!(matches!(d("701"), AuthError::AccountExpired));
        assert!(matches!(d("773"), AuthError::MustChangePassword));
        assert!(matches!(d("775"), AuthError::LockedOut));
        assert!(matches!(
            bind_error(52, "unavailable"),
            AuthError::Internal(_)
        ));
    }

    #[test]
    fn validation_wants_both_secondary_fields() {
        let c = toml_cfg("secondary_host = \"dc2\"");
        let keys: Vec<_> = c
            .validate("auth.active_directory")
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["auth.active_directory.secondary_address"]);
        let c = toml_cfg("secondary_address = \"127.0.0.54\"");
        assert_eq!(c.validate("a").len(), 1);
    }

    #[test]
    fn filter_injection_is_escaped() {
        let c = cfg();
        let sam = c.sam("a*)(objectClass=*");
        assert_eq!(ldap3::ldap_escape(sam), "a\\2a\\29\\28objectClass=\\2a");
    }
}

//! Active Directory: the user's password is checked by an LDAP simple bind as the user
//! (UPN), on a small pool of connections per server so no bind pays a new TCP+TLS handshake.
//! Admin work (listing candidates, existence checks) uses its own connection, never the
//! user-bind pool. Primary first; on failure the secondary, with the primary retried after
//! `retry_primary_after`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::config::{Problem, Secret};
use crate::metrics::METRICS;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapTls {
    /// TLS from the first byte (port 636), certificate checked.
    #[default]
    Ldaps,
    /// StartTLS on port 389, certificate checked.
    Starttls,
    /// Plain LDAP: passwords cross the network in clear. Only for a DC on loopback.
    None,
}

/// `[auth.active_directory]` (SPEC §1.1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveDirectoryConfig {
    /// The primary DC's host name (checked against its certificate).
    pub primary_host: String,
    /// The primary DC's IPv4 address (connected to directly; no DNS needed).
    pub primary_address: IpAddr,
    /// The secondary DC: both fields or neither.
    #[serde(default)]
    pub secondary_host: Option<String>,
    #[serde(default)]
    pub secondary_address: Option<IpAddr>,
    /// AD domain, e.g. `corp.example.com`; users bind as `user@domain`.
    pub domain: String,
    /// NetBIOS name, when it differs from the domain's first label (`CORP\user` input).
    #[serde(default)]
    pub netbios_domain: Option<String>,
    /// Account used to list and look up users. Default: Administrator.
    #[serde(default)]
    pub admin_user: Option<String>,
    pub admin_password: Secret,
    /// `"ldaps"` (default), `"starttls"` or `"none"`.
    #[serde(default)]
    pub tls: LdapTls,
    /// CA certificate(s) (PEM) to verify the DCs; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// LDAP port; default 636 for ldaps, 389 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// Longest wait for one directory operation (connect, bind, search page).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle user-bind connections kept per server.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// After a failover, how long before the primary is tried again.
    #[serde(default = "default_retry", with = "humantime_serde")]
    pub retry_primary_after: Duration,
    /// Directory binds in flight at most; further requests wait (within `timeout`).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Lockout guard: a password the directory just refused is refused locally, without a
    /// new bind, when the same user retries it within this window — so a device retrying a
    /// stale password does not lock the account. `0s` turns it off.
    #[serde(default = "default_guard", with = "humantime_serde")]
    pub lockout_guard_window: Duration,
}

fn default_in_flight() -> usize {
    64
}

fn default_guard() -> Duration {
    Duration::from_secs(600)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool() -> usize {
    16
}
fn default_retry() -> Duration {
    Duration::from_secs(30)
}

impl ActiveDirectoryConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut problem = |k: &str, why: String| {
            p.push(Problem {
                key: format!("{prefix}.{k}"),
                why,
            })
        };
        if self.primary_host.trim().is_empty() {
            problem("primary_host", "must not be empty".into());
        }
        match (&self.secondary_host, &self.secondary_address) {
            (Some(_), None) => problem(
                "secondary_address",
                "secondary_host is set: set secondary_address too, or there is no failover".into(),
            ),
            (None, Some(_)) => problem(
                "secondary_host",
                "secondary_address is set: set secondary_host too, or there is no failover".into(),
            ),
            _ => {}
        }
        if !self.domain.contains('.') || self.domain.starts_with('.') {
            problem(
                "domain",
                format!(
                    "`{}` is not an AD domain name like corp.example.com",
                    self.domain
                ),
            );
        }
        if self.admin_password.is_empty() {
            problem(
                "admin_password",
                "is required (to list and look up users)".into(),
            );
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                problem(
                    "ca_file",
                    format!("{} is not a readable file", ca.display()),
                );
            }
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be longer than 0s".into());
        }
        p
    }

    fn base_dn(&self) -> String {
        self.domain
            .split('.')
            .map(|part| format!("DC={}", ldap3::dn_escape(part)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn netbios(&self) -> String {
        self.netbios_domain
            .clone()
            .unwrap_or_else(|| self.domain.split('.').next().unwrap_or_default().to_owned())
    }

    /// `alice`, `alice@corp.example.com` or `CORP\alice` → the UPN to bind as, or `None`
    /// when the name belongs to another domain.
    pub fn upn(&self, name: &str) -> Option<String> {
        if let Some((dom, user)) = name.split_once('\\') {
            let ours =
                dom.eq_ignore_ascii_case(&self.netbios()) || dom.eq_ignore_ascii_case(&self.domain);
            return (ours && !user.is_empty()).then(|| format!("{user}@{}", self.domain));
        }
        if name.contains('@') {
            return Some(name.to_owned());
        }
        Some(format!("{name}@{}", self.domain))
    }

    /// The sAMAccountName for a user name in any accepted form.
    pub fn sam(&self, name: &str) -> String {
        let n = name.rsplit('\\').next().unwrap_or(name);
        n.split('@').next().unwrap_or(n).to_owned()
    }
}

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
    pool: Mutex<Vec<Ldap>>,
    label: &'static str,
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

pub struct AdVerifier {
    config: ActiveDirectoryConfig,
    /// Refused (user, password) pairs, as keyed hashes: the lockout guard.
    refused: moka::sync::Cache<Tag, ()>,
    /// Binds under way by (user, password): identical concurrent requests share one.
    inflight: Mutex<std::collections::HashMap<Tag, Arc<InFlight>>>,
    tag_key: [u8; 32],
    /// Bounds the binds in flight so a slow directory cannot pile up connections.
    bind_permits: tokio::sync::Semaphore,
    servers: Vec<Server>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Milliseconds since `epoch` until which the primary is skipped.
    primary_down_until: AtomicU64,
    epoch: Instant,
}

impl AdVerifier {
    pub fn new(config: &ActiveDirectoryConfig) -> Result<Self, String> {
        let port = config.port.unwrap_or(match config.tls {
            LdapTls::Ldaps => 636,
            _ => 389,
        });
        let mut servers = vec![Server {
            host: config.primary_host.clone(),
            addr: SocketAddr::new(config.primary_address, port),
            pool: Mutex::default(),
            label: "primary",
        }];
        if let (Some(h), Some(a)) = (&config.secondary_host, config.secondary_address) {
            servers.push(Server {
                host: h.clone(),
                addr: SocketAddr::new(a, port),
                pool: Mutex::default(),
                label: "secondary",
            });
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
            primary_down_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Servers in the order to try them now.
    fn order(&self) -> Vec<&Server> {
        let primary_down = self.now_ms() < self.primary_down_until.load(Ordering::Relaxed);
        let mut v: Vec<&Server> = self.servers.iter().collect();
        if primary_down && v.len() > 1 {
            v.rotate_left(1);
        }
        v
    }

    async fn connect(&self, server: &Server) -> Result<Ldap, String> {
        let t = self.config.timeout;
        let tcp = tokio::time::timeout(t, tokio::net::TcpStream::connect(server.addr))
            .await
            .map_err(|_| format!("connect to {} timed out", server.addr))?
            .map_err(|e| format!("connect to {}: {e}", server.addr))?;
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
    /// `Err(_)` the server could not be used.
    async fn bind_on(
        &self,
        server: &Server,
        upn: &str,
        password: &str,
    ) -> Result<Result<(), AuthError>, String> {
        let pooled = server.pool.lock().pop();
        let mut ldap = match pooled {
            Some(l) => l,
            None => self.connect(server).await?,
        };
        let started = Instant::now();
        let res = tokio::time::timeout(self.config.timeout, ldap.simple_bind(upn, password)).await;
        METRICS
            .directory_seconds
            .with_label_values(&[server.label])
            .observe(started.elapsed().as_secs_f64());
        let res = match res {
            Err(_) => return Err(format!("bind on {} timed out", server.addr)),
            Ok(Err(e)) => return Err(format!("bind on {}: {e}", server.addr)),
            Ok(Ok(r)) => r,
        };
        let mut pool = server.pool.lock();
        if pool.len() < self.config.pool_size {
            pool.push(ldap);
        }
        drop(pool);
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

    fn tag(&self, upn: &str, password: &str) -> Tag {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.tag_key).expect("any key");
        mac.update(upn.to_lowercase().as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks a password by binding as the user, failing over between the DCs. Identical
    /// concurrent checks share one bind; a password just refused is not tried again within
    /// the lockout guard window.
    pub async fn bind_user(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        // An empty password would be an anonymous ("unauthenticated") bind, which AD accepts.
        if password.is_empty() {
            return Err(AuthError::BadPassword);
        }
        let password = std::str::from_utf8(password).map_err(|_| AuthError::BadPassword)?;
        let upn = self.config.upn(name).ok_or(AuthError::UnknownUser)?;
        let tag = self.tag(&upn, password);
        let guard = !self.config.lockout_guard_window.is_zero();
        if guard && self.refused.contains_key(&tag) {
            METRICS.lockout_guard.inc();
            return Err(AuthError::BadPassword);
        }
        let cell = self.inflight.lock().entry(tag).or_default().clone();
        let shared = cell
            .get_or_init(|| async {
                let r = self.bind_failover(&upn, password).await;
                self.inflight.lock().remove(&tag);
                if guard && matches!(r, Err(AuthError::BadPassword)) {
                    self.refused.insert(tag, ());
                }
                r.map_err(|e| encode_error(&e))
            })
            .await
            .clone();
        shared.map_err(|e| decode_error(&e))
    }

    async fn bind_failover(&self, upn: &str, password: &str) -> Result<(), AuthError> {
        let _permit = tokio::time::timeout(self.config.timeout, self.bind_permits.acquire())
            .await
            .map_err(|_| AuthError::DirectoryUnavailable)?
            .map_err(|_| AuthError::DirectoryUnavailable)?;
        let upn = upn.to_owned();
        for (i, server) in self.order().into_iter().enumerate() {
            match self.bind_on(server, &upn, password).await {
                Ok(verdict) => {
                    if i > 0 || server.label == "secondary" {
                        METRICS.directory_failovers.inc();
                    }
                    return verdict;
                }
                Err(why) => {
                    METRICS
                        .directory_errors
                        .with_label_values(&[server.label])
                        .inc();
                    tracing::warn!(server = server.label, %why, "directory server unusable");
                    server.pool.lock().clear();
                    if server.label == "primary" {
                        let until =
                            self.now_ms() + self.config.retry_primary_after.as_millis() as u64;
                        self.primary_down_until.store(until, Ordering::Relaxed);
                    }
                }
            }
        }
        Err(AuthError::DirectoryUnavailable)
    }

    /// An admin-bound connection to the first usable server.
    async fn admin(&self) -> Result<Ldap, AuthError> {
        let admin = self
            .config
            .admin_user
            .clone()
            .unwrap_or_else(|| "Administrator".into());
        let admin_upn = self.config.upn(&admin).unwrap_or(admin);
        for server in self.order() {
            let Ok(mut ldap) = self.connect(server).await else {
                continue;
            };
            match tokio::time::timeout(
                self.config.timeout,
                ldap.simple_bind(&admin_upn, self.config.admin_password.expose()),
            )
            .await
            {
                Ok(Ok(r)) if r.rc == 0 => return Ok(ldap),
                Ok(Ok(r)) => {
                    return Err(AuthError::Internal(format!(
                        "admin bind refused ({}): check admin_user/admin_password",
                        r.text
                    )))
                }
                _ => continue,
            }
        }
        Err(AuthError::DirectoryUnavailable)
    }

    /// Directory users (people), paged so large directories list whole.
    pub async fn list_users(&self, only: Option<&str>) -> Result<Vec<DirectoryUser>, AuthError> {
        let mut ldap = self.admin().await?;
        let filter = match only {
            Some(name) => format!(
                "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
                ldap3::ldap_escape(self.config.sam(name))
            ),
            None => "(&(objectCategory=person)(objectClass=user))".to_owned(),
        };
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(200)),
        ];
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                &self.config.base_dn(),
                Scope::Subtree,
                &filter,
                vec![
                    "sAMAccountName",
                    "userPrincipalName",
                    "displayName",
                    "userAccountControl",
                ],
            )
            .await
            .map_err(|e| AuthError::Internal(format!("directory search: {e}")))?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(self.config.timeout, stream.next())
                .await
                .map_err(|_| AuthError::DirectoryUnavailable)?
                .map_err(|e| AuthError::Internal(format!("directory search: {e}")))?;
            let Some(entry) = next else { break };
            let e = SearchEntry::construct(entry);
            let first = |k: &str| e.attrs.get(k).and_then(|v| v.first()).cloned();
            let Some(sam) = first("sAMAccountName") else {
                continue;
            };
            let uac: u32 = first("userAccountControl")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push(DirectoryUser {
                sam_account_name: sam,
                user_principal_name: first("userPrincipalName"),
                display_name: first("displayName"),
                enabled: uac & 2 == 0,
            });
        }
        let _ = stream.finish().await;
        let _ = ldap.unbind().await;
        out.sort_by(|a, b| a.sam_account_name.cmp(&b.sam_account_name));
        Ok(out)
    }
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
        assert_eq!(c.upn("alice").as_deref(), Some("alice@corp.example.com"));
        assert_eq!(
            c.upn("CORP\\alice").as_deref(),
            Some("alice@corp.example.com")
        );
        assert_eq!(
            c.upn("corp\\alice").as_deref(),
            Some("alice@corp.example.com")
        );
        assert_eq!(c.upn("OTHER\\alice"), None);
        assert_eq!(
            c.upn("alice@corp.example.com").as_deref(),
            Some("alice@corp.example.com")
        );
        assert_eq!(c.sam("CORP\\alice"), "alice");
        assert_eq!(c.sam("alice@corp.example.com"), "alice");
        assert_eq!(c.base_dn(), "DC=corp,DC=example,DC=com");
        let n = toml_cfg("netbios_domain = \"EXAMPLE\"");
        assert_eq!(
            n.upn("EXAMPLE\\bob").as_deref(),
            Some("bob@corp.example.com")
        );
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

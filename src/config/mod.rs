//! The typed configuration tree: built-in defaults < TOML file < `RAVPND_*` environment.
//!
//! Environment keys nest with `__` (`RAVPND_ADMIN__ADDR=127.0.0.1:9900`); a key ending in
//! `_FILE` reads the value from that file (`RAVPND_ADMIN__TOKEN_FILE=/run/secrets/token`), so
//! secrets need not sit in the environment. Unknown keys are errors. figment reads an
//! all-digit value as a number, which a secret refuses (it would have lost any leading
//! zeros): quote such a value (`RAVPND_ADMIN__TOKEN='"0123…"'`) or use `_FILE`.

mod secret;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use secret::Secret;
pub use validate::{Problem, MIN_TOKEN_LEN};

use crate::auth::azure::AzureAdConfig;
use crate::auth::ldap::ActiveDirectoryConfig;
use crate::auth::local::LocalAuthConfig;
use crate::ipam::PoolConfig;
use crate::notify::SmtpConfig;
use crate::policy::device::{DevicesConfig, RegistrationConfig};
use crate::policy::proxy::ProxyConfig;
use crate::profiles::ProfilesConfig;
use crate::reply::DnsConfig;

/// The whole daemon configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// RADIUS listeners and request handling.
    pub radius: RadiusConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// The admin API (CLI, metrics, health).
    pub admin: AdminConfig,
    /// Where passwords are checked.
    pub auth: AuthConfig,
    /// Device assignment rules.
    pub devices: DevicesConfig,
    /// First-connect auto-registration and its failure mail.
    pub registration: RegistrationConfig,
    /// Mail relay.
    pub smtp: SmtpConfig,
    /// Address pools for the sessions' VPN addresses.
    pub pools: Vec<PoolConfig>,
    /// DNS servers handed to every client.
    pub dns: DnsConfig,
    /// Proxy policy.
    pub proxy: ProxyConfig,
    /// AnyConnect profile distribution.
    pub profiles: ProfilesConfig,
    /// Logging.
    pub log: LogConfig,
    /// The NAS clients (VPN gateways) allowed to send requests, each with its own secret.
    pub clients: Vec<ClientConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusConfig {
    /// UDP address for Access-Requests and Status-Server.
    pub auth_addr: SocketAddr,
    /// UDP address for Accounting-Requests (RFC 2866).
    pub acct_addr: SocketAddr,
    /// Acct-Interim-Interval sent to gateways that take it (ocserv).
    #[serde(with = "humantime_serde")]
    pub interim_interval: Duration,
    /// Requests handled at once; further datagrams wait in the socket buffer.
    pub max_in_flight: usize,
    /// How long a response is kept to answer a retransmitted duplicate (RFC 5080 §2.2.2).
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Upper bound on the time one request may spend in the backends before it is dropped.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Threads receiving on each RADIUS socket; 0 (default): one per CPU.
    pub workers: usize,
    /// After answering, a worker polls its socket this long before it sleeps (0: never).
    /// Spares the wake-up of an idle CPU when requests come close together, for CPU time.
    #[serde(with = "humantime_serde")]
    pub busy_poll: Duration,
    /// A request that waited longer than this in the socket's receive buffer (from its
    /// arrival, as the kernel stamped it) is dropped unread: under overload its NAS has
    /// retransmitted or given up, and answering it would only delay the ones still awaited.
    /// 0: never.
    #[serde(with = "humantime_serde")]
    pub max_queue_delay: Duration,
    /// With one worker per CPU, each authentication worker bound to a CPU of its own, so that two
    /// never take turns on one CPU while another is free (`radius::pinning`).
    pub pin_workers: bool,
}

impl RadiusConfig {
    /// `workers`, with 0 resolved to the number of CPUs this process may use.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// How long after its arrival a request's directory check is given up on ("directory
/// unavailable"): `request_timeout` less a tenth of it (at most 1 s), which leaves time for
/// the rest of the decision and the reply.
pub fn directory_deadline(request_timeout: Duration) -> Duration {
    let margin = (request_timeout / 10).min(Duration::from_secs(1));
    request_timeout.saturating_sub(margin)
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            auth_addr: ([0, 0, 0, 0], 1812).into(),
            acct_addr: ([0, 0, 0, 0], 1813).into(),
            interim_interval: Duration::from_secs(600),
            max_in_flight: 4096,
            dedup_window: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            workers: 0,
            busy_poll: Duration::ZERO,
            max_queue_delay: Duration::from_secs(2),
            pin_workers: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the sled database (created if missing). Relative paths are relative to
    /// the working directory.
    pub path: PathBuf,
    /// Users kept decoded in memory with their devices for the request path. Size it to the
    /// directory: a working set larger than this is read from the store again and again
    /// (about 0.3 KiB per user with a device).
    pub cache_records: usize,
    /// sled's page cache, in MiB: pages written or read stay in memory up to this much.
    pub page_cache_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/ravpnd"),
            cache_records: crate::store::DEFAULT_CACHE_RECORDS,
            page_cache_mib: crate::store::DEFAULT_PAGE_CACHE_MIB,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HTTP address of the admin API, `/metrics` and `/healthz`. Keep it on loopback.
    pub addr: SocketAddr,
    /// Bearer token for the admin API. When absent, the daemon generates one on first start
    /// and keeps it in `<store.path>/admin.token` (mode 0600), where the CLI reads it.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: ([127, 0, 0, 1], 9812).into(),
            token: None,
        }
    }
}

impl AdminConfig {
    /// The file holding the generated token when `token` is not configured.
    pub fn token_file(&self, store: &StoreConfig) -> PathBuf {
        store.path.join("admin.token")
    }

    /// The file where the running daemon records the admin address it bound, so the CLI
    /// finds it when `addr` asks for an ephemeral port (`:0`).
    pub fn addr_file(&self, store: &StoreConfig) -> PathBuf {
        store.path.join("admin.addr")
    }
}

/// Which password source is active. Exactly one; absent means "not selected".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthSource {
    Local,
    ActiveDirectory,
    AzureAd,
}

impl AuthSource {
    /// As the config names it.
    pub fn name(self) -> &'static str {
        match self {
            AuthSource::Local => "local",
            AuthSource::ActiveDirectory => "active_directory",
            AuthSource::AzureAd => "azure_ad",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `"local"`, `"active_directory"` or `"azure_ad"`. Absent: every request is rejected
    /// with "no authentication source selected".
    pub source: Option<AuthSource>,
    /// Settings of the local user directory.
    pub local: LocalAuthConfig,
    /// Active Directory (required when `source = "active_directory"`).
    pub active_directory: Option<ActiveDirectoryConfig>,
    /// Azure AD / Entra ID (required when `source = "azure_ad"`).
    pub azure_ad: Option<AzureAdConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Default level filter (`RUST_LOG` overrides it), e.g. `"info"` or `"ravpnd=debug"`.
    pub level: String,
    /// `"pretty"` for people, `"json"` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// One NAS client (VPN gateway).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Source address or network (`192.0.2.10` or `192.0.2.0/24`); the most specific match wins.
    #[serde(deserialize_with = "ip_or_net")]
    pub address: IpNet,
    /// The RADIUS shared secret of this client.
    pub secret: Secret,
    /// Drop Access-Requests without a valid Message-Authenticator (BlastRADIUS, CVE-2024-3596).
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    /// What the gateway is, which decides the reply attributes.
    #[serde(default)]
    pub kind: GatewayKind,
    /// The `[[pools]]` name its sessions take addresses from; default: the first pool.
    #[serde(default)]
    pub pool: Option<String>,
}

/// The gateway's dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// Cisco ASA / FTD: DNS and proxy as Cisco-ASA (3076) attributes.
    #[default]
    Asa,
    /// OpenConnect server: DNS as MS-Primary/Secondary-DNS-Server (311), no proxy
    /// attributes, Acct-Interim-Interval, Service-Type Framed.
    Ocserv,
}

fn yes() -> bool {
    true
}

/// Accepts `10.0.0.1` as `10.0.0.1/32` as well as CIDR networks.
fn ip_or_net<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        serde::de::Error::custom(format!("`{s}` is not an IP address or CIDR network"))
    })
}

/// Why a configuration could not be used. Printed as a chain (`{:#}`): a cause that is the
/// error's `source` is not in its message too.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {var}")]
    SecretFile { var: String, source: std::io::Error },
    #[error(
        "{0}: entries of [[clients]] and [[pools]] cannot be set from the environment; \
         keep them (client secrets included) in the config file, readable by ravpnd only"
    )]
    ListFromEnv(String),
    #[error("{}", describe(.0))]
    Parse(Box<figment::Error>),
    #[error("{} problem(s) in {}:\n{}", .problems.len(), .file.display(), validate::render(.problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

/// figment's errors for a person, one a line: the key as the admin wrote it (no figment
/// profile: `dns.primary`, not `default.dns.primary`; an environment variable by its name)
/// and what is wrong with it — never the source-code location figment gives values set in
/// code (a `_FILE` variable's).
fn describe(e: &figment::Error) -> String {
    use figment::Source;
    e.clone()
        .into_iter()
        .map(|e| {
            // A missing field is missing from the file, whatever provider last touched its
            // table: name it as a key of the file.
            let missing = matches!(e.kind, figment::error::Kind::MissingField(_));
            let from_env = !missing
                && e.metadata
                    .as_ref()
                    .is_some_and(|m| m.name.contains("environment"));
            let key = if from_env {
                format!("RAVPND_{}", e.path.join("__").to_ascii_uppercase())
            } else {
                e.path.join(".")
            };
            let from = match e.metadata.as_ref().map(|m| &m.source) {
                Some(Some(Source::Code(_))) if !missing => " (from a RAVPND_…_FILE variable)",
                _ => "",
            };
            if key.is_empty() {
                format!("{}{from}", e.kind)
            } else {
                format!("{key}: {}{from}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads defaults < `path` < environment, without validating.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // A missing file is an error: silently running on defaults would surprise.
        std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // figment would merge `CLIENTS__0__SECRET` as a table over the list, and say only
        // that a table is not a list.
        if let Some(var) = std::env::vars().map(|(k, _)| k).find(|k| {
            // figment matches the prefix in any case.
            k.to_ascii_uppercase()
                .strip_prefix("RAVPND_")
                .is_some_and(|k| k.split("__").any(|part| part.parse::<usize>().is_ok()))
        }) {
            return Err(ConfigError::ListFromEnv(var));
        }
        let mut figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file_exact(path))
            .merge(
                Env::prefixed("RAVPND_")
                    .ignore(&["CONFIG"])
                    .filter(|k| !k.as_str().to_ascii_lowercase().ends_with("_file"))
                    .split("__"),
            );
        for (var, value) in std::env::vars() {
            let Some(key) = var
                .strip_prefix("RAVPND_")
                .and_then(|k| k.strip_suffix("_FILE"))
            else {
                continue;
            };
            let content =
                std::fs::read_to_string(&value).map_err(|source| ConfigError::SecretFile {
                    var: var.clone(),
                    source,
                })?;
            let key = key.to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(Serialized::default(
                &key,
                content.trim_end_matches(['\n', '\r']),
            ));
        }
        // Secrets serialize redacted, so the defaults provider must not carry any: it has none.
        figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// Loads and validates; every problem is reported at once.
    pub fn load_valid(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::load(path)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: path.to_owned(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests;

//! `[auth.active_directory]`: the settings (SPEC §1.1), their checks, and how a user name in
//! any accepted form (`alice`, `alice@corp.example.com`, `CORP\\alice`) maps to the bind name.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Problem, Secret};

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
    /// AD domain, e.g. `corp.example.com`; user names may carry it (`alice@corp.example.com`).
    pub domain: String,
    /// NetBIOS name: users bind as `NETBIOS\sam` (and `CORP\alice` input names it). Unset,
    /// it is read from the directory once.
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
    /// Idle user-bind connections kept per server; keep it at least `max_in_flight`, so a
    /// busy daemon reuses its connections instead of opening and dropping some.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// How long request traffic skips a server after a failed request: less when a health
    /// probe finds it answering first, longer while probes fail; without probes
    /// (`health_check_interval = "0s"`) exactly this long.
    #[serde(default = "default_retry", with = "humantime_serde")]
    pub retry_primary_after: Duration,
    /// How often every DC is probed (TCP + TLS + a root DSE read + an admin bind, each within
    /// `timeout`). A server that fails a probe or a request is skipped until a probe succeeds,
    /// so traffic returns to the primary within one interval of its return; one that answers
    /// all but the bind is tried after the other; a refused admin password leaves the probes'
    /// bind out for an hour. `0s`: no probes.
    #[serde(default = "default_health", with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Directory calls (binds, pre-check reads) in flight at most; further requests wait
    /// (within `timeout`). The DC works through them a few at a time anyway: a longer queue
    /// there only stretches the slowest answers (measured in docs/PERFORMANCE.md).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Lockout guard: a password the directory just refused is refused locally, without a
    /// new bind, when the same user retries it within this window — so a device retrying a
    /// stale password does not lock the account. `0s` turns it off.
    #[serde(default = "default_guard", with = "humantime_serde")]
    pub lockout_guard_window: Duration,
    /// Lockout pre-check: before binding, read the user's `badPwdCount` (on the admin
    /// connections) and refuse without a bind when one more failure would reach the lockout
    /// threshold (the user's fine-grained policy, else the domain's). One more directory
    /// search per request; off by default.
    #[serde(default)]
    pub lockout_precheck: bool,
    /// How long the lockout thresholds read for the pre-check are reused before re-reading.
    #[serde(default = "default_policy_refresh", with = "humantime_serde")]
    pub lockout_policy_refresh: Duration,
}

fn default_health() -> Duration {
    Duration::from_secs(5)
}

fn default_policy_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_in_flight() -> usize {
    16
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
        let mut problem = |k: &str, why: String| p.push(Problem::at(prefix, k, why));
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

    pub(super) fn base_dn(&self) -> String {
        self.domain
            .split('.')
            .map(|part| format!("DC={}", ldap3::dn_escape(part)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The configured NetBIOS name, else the domain's first label (what `AdVerifier` uses
    /// until it has read the real one from the directory).
    pub(super) fn netbios(&self) -> String {
        self.netbios_domain.clone().unwrap_or_else(|| {
            self.domain
                .split('.')
                .next()
                .unwrap_or_default()
                .to_uppercase()
        })
    }

    /// A user's name as typed — `alice`, `alice@corp.example.com` or `CORP\alice` — → the
    /// name to bind as, `CORP\alice`; `None` when it names another domain. The down-level
    /// form names exactly the account whose sAMAccountName is the store key: a UPN need not
    /// (another account's UPN may be `alice@…`, or carry another domain's suffix), and a bind
    /// as it would check that account's password for this user.
    /// `netbios`: the domain's NetBIOS name.
    pub fn bind_name(&self, name: &str, netbios: &str) -> Option<String> {
        let sam = match (name.split_once('\\'), name.rsplit_once('@')) {
            (Some((dom, user)), _) => {
                let ours =
                    dom.eq_ignore_ascii_case(netbios) || dom.eq_ignore_ascii_case(&self.domain);
                ours.then_some(user)?
            }
            (None, Some((user, suffix))) => {
                suffix.eq_ignore_ascii_case(&self.domain).then_some(user)?
            }
            (None, None) => name,
        };
        let plain = !sam.is_empty() && !sam.contains(['\\', '@']);
        plain.then(|| format!("{netbios}\\{sam}"))
    }

    /// The configured admin's name → the UPN to bind as (`None`: another domain's).
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

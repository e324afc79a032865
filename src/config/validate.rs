//! Semantic checks the type system cannot express. Every problem is collected, not just the
//! first, so `check-config` shows an admin everything to fix in one go.

use std::collections::HashMap;

use super::{AuthSource, Config, GatewayKind};

/// One configuration problem: the key it concerns and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub why: String,
}

impl Problem {
    fn new(key: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            why: why.into(),
        }
    }

    /// A problem with `key` of the section at `prefix` (e.g. `auth.local` + `cache_ttl`).
    pub fn at(prefix: &str, key: &str, why: impl Into<String>) -> Self {
        Self::new(format!("{prefix}.{key}"), why)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.why)
    }
}

pub(super) fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shortest shared secret accepted; RFC 2865 §3 asks for at least 16 octets, we refuse the
/// trivially guessable ones and leave the rest to operator judgement.
const MIN_SECRET_LEN: usize = 8;
/// Shortest admin token accepted, in the config or in the generated token file.
pub const MIN_TOKEN_LEN: usize = 16;

impl Config {
    /// All semantic problems of this configuration; empty means it can be served.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.radius.workers > 256 {
            problems.push(Problem::new(
                "radius.workers",
                "at most 256 (0 = one per CPU)",
            ));
        }
        if !(1..=65_536).contains(&self.store.page_cache_mib) {
            problems.push(Problem::new(
                "store.page_cache_mib",
                "must be between 1 and 65536 (MiB)",
            ));
        }
        if self.radius.busy_poll > std::time::Duration::from_millis(1) {
            problems.push(Problem::new(
                "radius.busy_poll",
                "at most 1ms (0s = off): longer only burns CPU",
            ));
        }
        if self.radius.max_queue_delay > std::time::Duration::from_secs(60) {
            problems.push(Problem::new(
                "radius.max_queue_delay",
                "at most 60s (0s = never drop): NAS clients give up long before",
            ));
        }
        if self.radius.max_in_flight == 0 {
            problems.push(Problem::new("radius.max_in_flight", "must be at least 1"));
        }
        if self.radius.dedup_window.is_zero() {
            problems.push(Problem::new(
                "radius.dedup_window",
                "must be longer than 0s (RFC 5080 duplicate detection)",
            ));
        }
        if self.radius.request_timeout.is_zero() {
            problems.push(Problem::new(
                "radius.request_timeout",
                "must be longer than 0s",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            problems.push(Problem::new("store.path", "must not be empty"));
        }
        if let Some(token) = &self.admin.token {
            if token.expose().len() < MIN_TOKEN_LEN {
                problems.push(Problem::new(
                    "admin.token",
                    format!("must be at least {MIN_TOKEN_LEN} characters (or leave it out to have one generated)"),
                ));
            }
        }
        match self.auth.source {
            None | Some(AuthSource::Local) => {}
            Some(AuthSource::ActiveDirectory) => {
                if self.auth.active_directory.is_none() {
                    problems.push(Problem::new(
                        "auth.active_directory",
                        "source is \"active_directory\" but the [auth.active_directory] section is missing",
                    ));
                }
            }
            Some(AuthSource::AzureAd) => {
                if self.auth.azure_ad.is_none() {
                    problems.push(Problem::new(
                        "auth.azure_ad",
                        "source is \"azure_ad\" but the [auth.azure_ad] section is missing",
                    ));
                }
            }
        }
        if let Some(az) = &self.auth.azure_ad {
            problems.extend(az.validate("auth.azure_ad"));
        }
        if let Some(ad) = &self.auth.active_directory {
            problems.extend(ad.validate("auth.active_directory"));
            // A DC is found unusable when a call to it times out; a request that gives up
            // on the directory first never finds out, and keeps trying the silent one.
            let budget = super::directory_deadline(self.radius.request_timeout);
            if ad.timeout >= budget {
                problems.push(Problem::new(
                    "auth.active_directory.timeout",
                    format!(
                        "must be shorter than the {budget:?} a request leaves the directory \
                         (radius.request_timeout less a tenth, at most 1s), or a DC that does \
                         not answer is never skipped"
                    ),
                ));
            }
        }
        problems.extend(self.auth.local.validate("auth.local"));
        problems.extend(self.devices.validate("devices"));
        problems.extend(self.smtp.validate("smtp"));
        problems.extend(crate::ipam::PoolConfig::validate_all(&self.pools));
        problems.extend(self.proxy.validate("proxy"));
        problems.extend(self.profiles.validate("profiles"));
        if self.radius.interim_interval < std::time::Duration::from_secs(60) {
            problems.push(Problem::new(
                "radius.interim_interval",
                "must be at least 60s (RFC 2869 §5.16)",
            ));
        }
        for (i, addr) in self.registration.notify_to.iter().enumerate() {
            if addr.parse::<lettre::message::Mailbox>().is_err() {
                problems.push(Problem::new(
                    format!("registration.notify_to[{i}]"),
                    format!("`{addr}` is not a mail address"),
                ));
            }
        }
        if self.registration.notify_on_failure {
            if self.registration.notify_to.is_empty() {
                problems.push(Problem::new(
                    "registration.notify_to",
                    "notify_on_failure is on but no address is given",
                ));
            }
            if self.smtp.host.is_none() {
                problems.push(Problem::new(
                    "smtp.host",
                    "notify_on_failure is on but no mail relay is configured",
                ));
            }
        }
        problems.extend(self.leases_outlive_interim_updates());
        if let Some(why) = log_level_problem(&self.log.level) {
            problems.push(Problem::new("log.level", why));
        }
        if self.clients.is_empty() {
            problems.push(Problem::new(
                "clients",
                "no [[clients]] configured: every request would be dropped",
            ));
        }
        let mut names = HashMap::new();
        let mut nets = HashMap::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            if client.name.trim().is_empty() {
                problems.push(Problem::new(key("name"), "must not be empty"));
            } else if let Some(j) = names.insert(client.name.as_str(), i) {
                problems.push(Problem::new(
                    key("name"),
                    format!("`{}` is already used by clients[{j}]", client.name),
                ));
            }
            if let Some(j) = nets.insert(client.address, i) {
                problems.push(Problem::new(
                    key("address"),
                    format!("{} is already matched by clients[{j}]", client.address),
                ));
            }
            if let Some(pool) = &client.pool {
                if !self.pools.iter().any(|p| &p.name == pool) {
                    problems.push(Problem::new(
                        key("pool"),
                        format!("no [[pools]] entry is named `{pool}`"),
                    ));
                }
            }
            if client.secret.expose().len() < MIN_SECRET_LEN {
                problems.push(Problem::new(
                    key("secret"),
                    format!("must be at least {MIN_SECRET_LEN} characters"),
                ));
            }
        }
        problems
    }

    /// ocserv keeps a lease only by its Interim-Updates, sent every `interim_interval`: a
    /// pool an ocserv client takes addresses from must hold a lease longer than that, or the
    /// sweep frees a live session's address and hands it to another device.
    fn leases_outlive_interim_updates(&self) -> Vec<Problem> {
        let interval = self.radius.interim_interval;
        let mut problems = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let ocserv = self.clients.iter().find(|c| {
                c.kind == GatewayKind::Ocserv
                    && match &c.pool {
                        Some(name) => *name == pool.name,
                        None => i == 0,
                    }
            });
            if let Some(client) = ocserv {
                // Twice: ocserv's updates come late (a 90 s gap was seen at 60 s), and one lost
                // or retransmitted update doubles the gap.
                if pool.lease_time < interval * 2 {
                    problems.push(Problem::new(
                        format!("pools[{i}].lease_time"),
                        format!(
                            "must be at least twice radius.interim_interval ({}): ocserv client `{}` refreshes its leases only that often, and late or lost updates stretch that, so a shorter lease expires under a live session and its address goes to another device",
                            humantime::format_duration(interval),
                            client.name
                        ),
                    ));
                }
            }
        }
        problems
    }
}

/// Why a `[log] level` filter is not one an admin meant, if it is not. A bare word is a
/// *target* to tracing (`loud` would log nothing but a target named so): only a level or
/// `target=level` directives are taken.
fn log_level_problem(filter: &str) -> Option<String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    for directive in filter.split(',').filter(|d| !d.trim().is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(level) {
            return Some(format!(
                "`{}` is not a level ({}) nor target=level",
                directive.trim(),
                LEVELS.join(", ")
            ));
        }
    }
    if filter.trim().is_empty() {
        return Some("empty: give a level, e.g. \"info\"".into());
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .err()
        .map(|e| e.to_string())
}

//! Proxy policy (SPEC §1.4): what the client is told about proxies, per profile
//! (`user/device`), and who may not connect under `client` mode.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Reason;
use crate::config::Problem;
use crate::store::DeviceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// Keep the client's own proxy settings (IE-Proxy-Server-Policy 1, No-Modify).
    Client,
    /// Use the proxy configured here (policy 4, Use-Concentrator-Setting, with server and
    /// exceptions).
    Managed,
    /// No proxy while connected (policy 2, No-Proxy).
    None,
}

/// `"all"` or a list of profiles, `"user/device"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApplyTo {
    All(String),
    Profiles(Vec<String>),
}

impl Default for ApplyTo {
    fn default() -> Self {
        ApplyTo::All("all".into())
    }
}

/// `[proxy]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `"client"`, `"managed"` or `"none"`; absent = not selected (nothing is pushed).
    pub mode: Option<ProxyMode>,
    /// Proxy IPv4 address (managed).
    pub address: Option<String>,
    /// Proxy port (managed).
    pub port: Option<i64>,
    /// Hosts that bypass the proxy, `;`-separated, `*` wildcard (managed).
    pub exceptions: Option<String>,
    /// `"all"` or a list of `"user/device"` profiles that `client`/`managed` apply to.
    pub apply_to: ApplyTo,
}

/// What the Accept says about proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyPush {
    #[default]
    Nothing,
    NoModify,
    NoProxy,
    Managed {
        /// `addr:port`.
        server: String,
        exceptions: Option<String>,
    },
}

/// The longest string an attribute can carry.
const MAX_ATTR: usize = 247;

impl ProxyConfig {
    /// Whether `user/device` is listed (compared in parts: no string built per request).
    fn applies_to(&self, user: &str, device: &str) -> bool {
        match &self.apply_to {
            ApplyTo::All(_) => true,
            ApplyTo::Profiles(list) => list
                .iter()
                .any(|p| p.split_once('/') == Some((user, device))),
        }
    }

    /// The push for the profile `user/device`, or the reason it may not connect.
    pub fn decide(
        &self,
        user: &str,
        device: &str,
        device_type: DeviceType,
    ) -> Result<ProxyPush, Reason> {
        match self.mode {
            None => Ok(ProxyPush::Nothing),
            Some(ProxyMode::None) => Ok(ProxyPush::NoProxy),
            Some(ProxyMode::Client) if self.applies_to(user, device) => Ok(ProxyPush::NoModify),
            Some(ProxyMode::Client) => Err(Reason::ProxyNotApplied),
            Some(ProxyMode::Managed) if !self.applies_to(user, device) => Ok(ProxyPush::Nothing),
            // Android cannot take a concentrator-set proxy: leave its own settings alone.
            Some(ProxyMode::Managed) if device_type == DeviceType::Android => {
                Ok(ProxyPush::NoModify)
            }
            Some(ProxyMode::Managed) => Ok(ProxyPush::Managed {
                server: format!(
                    "{}:{}",
                    self.address.as_deref().unwrap_or_default(),
                    self.port.unwrap_or_default()
                ),
                exceptions: self.exceptions.clone().filter(|e| !e.is_empty()),
            }),
        }
    }

    /// Whether the proxy setting reaches this profile (for `device list`).
    pub fn describe_for(&self, user: &str, device: &str, device_type: DeviceType) -> &'static str {
        match self.decide(user, device, device_type) {
            Ok(ProxyPush::Nothing) if self.mode.is_none() => "-",
            Ok(ProxyPush::Nothing) => "not applied",
            Ok(ProxyPush::NoModify) if self.mode == Some(ProxyMode::Managed) => "client (android)",
            Ok(ProxyPush::NoModify) => "client",
            Ok(ProxyPush::NoProxy) => "none",
            Ok(ProxyPush::Managed { .. }) => "managed",
            Err(_) => "not applied (cannot connect)",
        }
    }

    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut problem = |k: &str, why: String| p.push(Problem::at(prefix, k, why));
        if let ApplyTo::All(s) = &self.apply_to {
            if s != "all" {
                problem(
                    "apply_to",
                    format!("`{s}` is neither \"all\" nor a list of \"user/device\" profiles"),
                );
            }
        }
        if let ApplyTo::Profiles(list) = &self.apply_to {
            for (i, prof) in list.iter().enumerate() {
                let ok = prof
                    .split_once('/')
                    .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty() && !d.contains('/'));
                if !ok {
                    problem(
                        &format!("apply_to[{i}]"),
                        format!("`{prof}` is not a \"user/device\" profile"),
                    );
                }
            }
        }
        if let Some(a) = &self.address {
            if a.parse::<Ipv4Addr>().is_err() {
                problem("address", format!("`{a}` is not an IPv4 address"));
            }
        }
        if let Some(port) = self.port {
            if !(1..=65535).contains(&port) {
                problem("port", format!("{port} is not a port (1-65535)"));
            }
        }
        if let Some(e) = &self.exceptions {
            if let Err(why) = check_exceptions(e) {
                problem("exceptions", why);
            }
        }
        if self.mode == Some(ProxyMode::Managed) {
            if self.address.is_none() {
                problem("address", "required when mode = \"managed\"".into());
            }
            if self.port.is_none() {
                problem("port", "required when mode = \"managed\"".into());
            }
        }
        p
    }
}

/// `;`-separated host names, addresses or patterns with `*`, e.g. `*.example.com;10.*`.
fn check_exceptions(list: &str) -> Result<(), String> {
    if list.len() > MAX_ATTR {
        return Err(format!(
            "longer than {MAX_ATTR} characters (one RADIUS attribute)"
        ));
    }
    for (i, entry) in list.split(';').enumerate() {
        let e = entry.trim();
        if e.is_empty() {
            return Err(format!("entry {} is empty (stray `;`?)", i + 1));
        }
        if !e.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | ':' | '<' | '>')
        }) {
            return Err(format!(
                "entry `{e}` may hold only host-name characters and `*`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: ProxyMode, apply: ApplyTo) -> ProxyConfig {
        ProxyConfig {
            mode: Some(mode),
            address: Some("10.0.0.80".into()),
            port: Some(8080),
            exceptions: Some("*.example.com;10.*".into()),
            apply_to: apply,
        }
    }

    #[test]
    fn modes_map_to_pushes() {
        let only = ApplyTo::Profiles(vec!["alice/laptop".into()]);
        let w = DeviceType::Windows;
        assert_eq!(
            ProxyConfig::default().decide("a", "b", w),
            Ok(ProxyPush::Nothing)
        );
        assert_eq!(
            cfg(ProxyMode::None, only.clone()).decide("x", "y", w),
            Ok(ProxyPush::NoProxy)
        );
        assert_eq!(
            cfg(ProxyMode::Client, only.clone()).decide("alice", "laptop", w),
            Ok(ProxyPush::NoModify)
        );
        assert_eq!(
            cfg(ProxyMode::Client, only.clone()).decide("bob", "pc", w),
            Err(Reason::ProxyNotApplied)
        );
        assert_eq!(
            cfg(ProxyMode::Managed, only.clone()).decide("alice", "laptop", w),
            Ok(ProxyPush::Managed {
                server: "10.0.0.80:8080".into(),
                exceptions: Some("*.example.com;10.*".into())
            })
        );
        assert_eq!(
            cfg(ProxyMode::Managed, only.clone()).decide("bob", "pc", w),
            Ok(ProxyPush::Nothing)
        );
        assert_eq!(
            cfg(ProxyMode::Managed, ApplyTo::default()).decide("carol", "tab", DeviceType::Android),
            Ok(ProxyPush::NoModify)
        );
    }

    #[test]
    fn validation() {
        let bad = ProxyConfig {
            mode: Some(ProxyMode::Managed),
            address: Some("proxy.example.com".into()),
            port: Some(70000),
            exceptions: Some("a.com;;b.com".into()),
            apply_to: ApplyTo::Profiles(vec!["nouser".into()]),
        };
        let keys: Vec<_> = bad.validate("proxy").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "proxy.apply_to[0]",
                "proxy.address",
                "proxy.port",
                "proxy.exceptions"
            ]
        );
        let missing = ProxyConfig {
            mode: Some(ProxyMode::Managed),
            ..Default::default()
        };
        assert_eq!(missing.validate("proxy").len(), 2);
        assert!(cfg(ProxyMode::Managed, ApplyTo::default())
            .validate("proxy")
            .is_empty());
        assert_eq!(
            check_exceptions("with space.com"),
            Err("entry `with space.com` may hold only host-name characters and `*`".into())
        );
        let zero = ProxyConfig {
            port: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.validate("proxy").len(), 1);
    }
}

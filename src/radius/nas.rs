//! NAS clients: source address → shared secret and policy. The most specific network wins.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{ClientConfig, GatewayKind, Secret};

/// A known NAS client.
#[derive(Debug)]
pub struct Nas {
    pub name: String,
    pub secret: Secret,
    pub require_message_authenticator: bool,
    pub kind: GatewayKind,
    pub pool: Option<String>,
    /// This client's request counter, looked up once instead of per request.
    pub requests: prometheus::IntCounter,
}

/// Lookup table of NAS clients, sorted most specific first.
#[derive(Debug, Default)]
pub struct NasTable {
    entries: Vec<(IpNet, Arc<Nas>)>,
}

impl NasTable {
    pub fn new(clients: &[ClientConfig]) -> Self {
        let mut entries: Vec<_> = clients
            .iter()
            .map(|c| {
                (
                    c.address,
                    Arc::new(Nas {
                        name: c.name.clone(),
                        secret: c.secret.clone(),
                        require_message_authenticator: c.require_message_authenticator,
                        kind: c.kind,
                        pool: c.pool.clone(),
                        requests: crate::metrics::METRICS
                            .client_requests
                            .with_label_values(&[&c.name]),
                    }),
                )
            })
            .collect();
        entries.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Self { entries }
    }

    /// The client for a source address; IPv4-mapped IPv6 sources match IPv4 networks.
    pub fn lookup(&self, addr: IpAddr) -> Option<&Arc<Nas>> {
        let addr = addr.to_canonical();
        self.entries
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, nas)| nas)
    }

    /// Whether a client of this name is configured.
    pub fn has_client(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, nas)| nas.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, net: &str) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            address: net.parse().unwrap(),
            secret: Secret::new("secret123"),
            require_message_authenticator: true,
            kind: GatewayKind::Asa,
            pool: None,
        }
    }

    #[test]
    fn most_specific_network_wins() {
        let t = NasTable::new(&[
            client("wide", "10.0.0.0/8"),
            client("narrow", "10.1.2.3/32"),
            client("mid", "10.1.0.0/16"),
        ]);
        let name = |a: &str| t.lookup(a.parse().unwrap()).map(|n| n.name.clone());
        assert_eq!(name("10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(name("10.1.9.9").as_deref(), Some("mid"));
        assert_eq!(name("10.9.9.9").as_deref(), Some("wide"));
        assert_eq!(name("::ffff:10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(name("192.0.2.1"), None);
        assert!(t.has_client("mid") && !t.has_client("10.1.0.0/16") && !t.has_client(""));
    }
}

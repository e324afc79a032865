//! End to end with a real AnyConnect-protocol stack on loopback: Debian's ocserv asks ravpnd
//! over RADIUS (radcli: Access-Request and Accounting-Request), and the openconnect client
//! logs in through it (see `support::ocserv`).
//!
//! ravpnd's pool and DNS (198.18.100.0/24, .53/.54) differ from ocserv's own `ipv4-network`
//! and `dns` (198.18.200.0/24, .53), so each assert tells whether the address and the DNS
//! came from ravpnd's Accept or from ocserv's fallback.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::support::daemon::SECRET;
use crate::support::ocserv::{wait_for, Gateway, Login, OCSERV_OWN_DNS, OCSERV_OWN_NETWORK};
use crate::support::TestDaemon;

const POOL: &str = "198.18.100.0/24";
const DNS_PRIMARY: &str = "198.18.100.53";
const DNS_SECONDARY: &str = "198.18.100.54";

/// ravpnd with one `kind = "ocserv"` client on 127.0.0.1 (ocserv sends no
/// Message-Authenticator), one pool, DNS, and accounting on an ephemeral port.
fn config(pool: &str) -> String {
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
[dns]
primary = "{DNS_PRIMARY}"
secondary = "{DNS_SECONDARY}"
[[pools]]
name = "vpn"
network = "{pool}"
lease_time = "1h"
[[clients]]
name = "ocserv"
kind = "ocserv"
address = "127.0.0.1/32"
secret = "{SECRET}"
require_message_authenticator = false
"#
    )
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// The `access decision` log lines for `user`.
fn decisions(d: &TestDaemon, user: &str) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains("access decision") && l.contains(&format!("user=\"{user}\"")))
        .map(str::to_owned)
        .collect()
}

/// `ravpnd session list --json`.
fn sessions(d: &TestDaemon) -> Vec<Value> {
    let out = d.ok(&["session", "list", "--json"]);
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("session list --json: {e}:\n{out}"))
}

fn session_for(d: &TestDaemon, addr: Ipv4Addr) -> Option<Value> {
    sessions(d)
        .into_iter()
        .find(|s| s["addr"].as_str() == Some(&addr.to_string()))
}

/// The connection succeeded: "Configured as <address>".
fn connected(login: &Login, gw: &Gateway) -> Ipv4Addr {
    assert!(
        login.connected(),
        "openconnect for {} did not connect (exit {:?})\n---- openconnect ----\n{}\n---- ocserv ----\n{}",
        login.user,
        login.exit,
        login.log(),
        gw.log()
    );
    login.address.unwrap()
}

/// The connection was refused: openconnect gave up non-zero, never configured an address.
fn refused(login: &Login) {
    assert!(
        login.address.is_none(),
        "{} should have been refused:\n{}",
        login.user,
        login.log()
    );
    let exit = login.exit.expect("openconnect exited");
    assert!(!exit.success(), "openconnect exited {exit} after a refusal");
    assert!(
        login.log().contains("Failed to complete authentication"),
        "{}",
        login.log()
    );
}

#[test]
fn good_password_connects_with_address_from_ravpnd_pool_and_ravpnd_dns() {
    let d = TestDaemon::with_config(&config(POOL));
    d.add_vpn_user("alice", "alice-vpn-pass");
    let gw = Gateway::start(&d);

    let mut login = gw.login("alice", "alice-vpn-pass");
    let addr = connected(&login, &gw);

    // The address came from ravpnd's pool (Framed-IP-Address), not ocserv's own network.
    assert!(
        net(POOL).contains(&addr),
        "address {addr} is not from ravpnd's pool {POOL}\n{}",
        login.log()
    );
    assert!(!net(OCSERV_OWN_NETWORK).contains(&addr));
    assert_eq!(
        login.connect_var("INTERNAL_IP4_ADDRESS").as_deref(),
        Some(addr.to_string().as_str())
    );
    assert_eq!(
        login.connect_var("INTERNAL_IP4_NETMASK").as_deref(),
        Some("255.255.255.0"),
        "Framed-IP-Netmask of a /24 pool"
    );
    // DNS from ravpnd (MS-Primary/Secondary-DNS-Server, vendor 311), replacing ocserv's own.
    let dns = login.connect_var("INTERNAL_IP4_DNS").unwrap_or_default();
    assert_eq!(
        dns,
        format!("{DNS_PRIMARY} {DNS_SECONDARY}"),
        "INTERNAL_IP4_DNS (ocserv's own would be {OCSERV_OWN_DNS})"
    );
    assert_eq!(
        login.connect_var("VPNGATEWAY").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        login.connect_var("TUNDEV").as_deref(),
        Some(login.tun.as_str())
    );

    let accepted = decisions(&d, "alice");
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert!(accepted[0].contains("reason=\"accepted\""), "{accepted:?}");
    assert!(accepted[0].contains("client=ocserv"), "{accepted:?}");
    assert!(
        !d.log().contains("alice-vpn-pass") && !gw.log().contains("alice-vpn-pass"),
        "password reached a log"
    );

    login.disconnect();
    assert!(
        login.env("disconnect").is_some(),
        "openconnect ran no disconnect script"
    );
}

#[test]
fn wrong_password_is_refused_with_reason_bad_password() {
    let d = TestDaemon::with_config(&config(POOL));
    d.add_vpn_user("alice", "alice-vpn-pass");
    let gw = Gateway::start(&d);

    let login = gw.login("alice", "not-the-password");
    refused(&login);

    let rejects = decisions(&d, "alice");
    assert_eq!(
        rejects.len(),
        1,
        "one Access-Request, one reject: {rejects:?}"
    );
    assert!(rejects[0].contains("outcome=\"reject\""), "{rejects:?}");
    assert!(
        rejects[0].contains("reason=\"bad_password\""),
        "{rejects:?}"
    );
    assert_eq!(
        d.metric(
            "ravpnd_requests_total{outcome=\"reject\",reason=\"bad_password\",type=\"access\"}"
        ),
        1.0
    );
    // ocserv 1.1.6 shows the Reply-Message of the reject before asking again.
    assert!(login.log().contains("bad password"), "{}", login.log());
    assert!(sessions(&d).is_empty(), "a refused login holds no lease");
}

#[test]
fn disabled_device_is_refused_with_reason_device_disabled() {
    let d = TestDaemon::with_config(&config(POOL));
    d.add_vpn_user("alice", "alice-vpn-pass");
    d.ok(&["device", "set", "alice-dev", "--disable"]);
    let gw = Gateway::start(&d);

    let login = gw.login("alice", "alice-vpn-pass");
    refused(&login);

    let rejects = decisions(&d, "alice");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].contains("reason=\"device_disabled\""),
        "{rejects:?}"
    );
    assert!(sessions(&d).is_empty(), "a refused login holds no lease");
}

/// ocserv's accounting reaches ravpnd: the session is listed with ocserv's Acct-Session-Id
/// while connected, and after the disconnect (Accounting-Request Stop) its address is free
/// again. The pool is a /30, two addresses, so "free again" is observable: with the first
/// address still held, a third user would be refused.
#[test]
fn session_is_listed_through_accounting_and_address_released_on_disconnect() {
    let d = TestDaemon::with_config(&config("198.18.100.0/30"));
    for u in ["alice", "bob", "carol", "dave"] {
        d.add_vpn_user(u, &format!("{u}-vpn-pass"));
    }
    let gw = Gateway::start(&d);
    let pool = net("198.18.100.0/30");

    let mut alice = gw.login("alice", "alice-vpn-pass");
    let a = connected(&alice, &gw);
    assert!(pool.contains(&a), "{a} not from {pool}");

    // ocserv waits for the answer to its Accounting-Request Start before the tunnel is up.
    let opened = gw.opened_sessions();
    assert_eq!(opened.len(), 1, "ocserv opened one session: {opened:?}");
    let acct_session = opened[0].clone();
    assert!(
        d.log().lines().any(|l| l.contains("accounting")
            && l.contains("status=\"start\"")
            && l.contains(&acct_session)),
        "ravpnd logged no accounting start for {acct_session}"
    );
    let listed = session_for(&d, a)
        .unwrap_or_else(|| panic!("session list has no lease for {a}: {:?}", sessions(&d)));
    assert_eq!(listed["user"], "alice", "{listed}");
    assert_eq!(listed["nas"], "ocserv", "{listed}");
    assert_eq!(listed["pool"], "vpn", "{listed}");
    // The Acct-Session-Id is bound to the lease by accounting. ocserv 1.1.6's Start carries
    // no Framed-IP-Address (it is sent before the tunnel is set up): ravpnd binds it to the
    // user's unbound lease from the same NAS, so the binding is there as soon as the Start is.
    let bound = wait_for(Duration::from_secs(2), || {
        session_for(&d, a).filter(|s| s["session_id"].as_str() == Some(acct_session.as_str()))
    });
    assert!(
        bound.is_some(),
        "lease {a} never got ocserv's Acct-Session-Id {acct_session}: {:?}",
        session_for(&d, a)
    );

    // Disconnect: openconnect says BYE, ocserv sends Accounting-Request Stop.
    alice.disconnect();
    let released = wait_for(Duration::from_secs(10), || {
        session_for(&d, a).is_none().then_some(())
    });
    assert!(
        released.is_some(),
        "lease {a} still listed after the disconnect: {:?}",
        sessions(&d)
    );
    assert!(
        d.log().lines().any(|l| l.contains("accounting")
            && l.contains("status=\"stop\"")
            && l.contains(&acct_session)),
        "ravpnd logged no accounting stop for {acct_session}"
    );

    // The address is really free: the two addresses of the /30 go to two other users…
    let bob = gw.login("bob", "bob-vpn-pass");
    let carol = gw.login("carol", "carol-vpn-pass");
    let b = connected(&bob, &gw);
    let c = connected(&carol, &gw);
    assert_ne!(b, c);
    assert!(pool.contains(&b) && pool.contains(&c), "{b} {c}");
    assert!(b == a || c == a, "{a} was not handed out again ({b}, {c})");
    // …and a fourth is refused while both are held.
    let dave = gw.login("dave", "dave-vpn-pass");
    refused(&dave);
    let rejects = decisions(&d, "dave");
    assert!(
        rejects
            .iter()
            .any(|l| l.contains("reason=\"pool_exhausted\"")),
        "{rejects:?}"
    );
    assert_eq!(sessions(&d).len(), 2, "{:?}", sessions(&d));
}

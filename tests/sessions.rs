//! Session attributes: addresses from pools, DNS and proxy push per gateway kind,
//! accounting, reload. Replies are read by name with FreeRADIUS's dictionaries.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::daemon::{default_config, SECRET};
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient::{self, Reply};
use crate::support::TestDaemon;

const POOLS: &str = r#"
[[pools]]
name = "vpn"
network = "10.77.0.0/24"
exclude = ["10.77.0.1"]
lease_time = "1h"

[dns]
primary = "10.0.0.53"
secondary = "10.0.0.54"
"#;

pub(crate) fn config(extra: &str) -> String {
    default_config(true) + POOLS + extra
}

/// A user with an assigned device without device auth: plain radclient requests match it.
fn login(d: &TestDaemon, user: &str) -> Reply {
    radclient::auth(d.auth_addr, user, "pass-1234")
}

fn acct(d: &TestDaemon, attrs: &str) -> Reply {
    radclient::send(d.acct_addr, "acct", SECRET, attrs)
}

/// `session list --json`.
pub(crate) fn sessions(d: &TestDaemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ok(&["session", "list", "--json"])).unwrap()
}

#[test]
fn asa_accept_carries_address_netmask_and_dns_and_the_address_is_sticky() {
    let d = TestDaemon::with_config(&config(""));
    d.add_vpn_user("alice", "pass-1234");
    let r = login(&d, "alice");
    assert!(r.is("Access-Accept"), "{}", r.output);
    assert_eq!(
        r.attr("Framed-IP-Address").as_deref(),
        Some("10.77.0.2"),
        "{}",
        r.output
    );
    assert_eq!(
        r.attr("Framed-IP-Netmask").as_deref(),
        Some("255.255.255.0")
    );
    assert_eq!(
        r.attr("ASA-Primary-DNS").as_deref(),
        Some("10.0.0.53"),
        "{}",
        r.output
    );
    assert_eq!(r.attr("ASA-Secondary-DNS").as_deref(), Some("10.0.0.54"));
    assert_eq!(
        r.attr("ASA-IE-Proxy-Server-Policy"),
        None,
        "proxy not selected: nothing pushed"
    );
    assert_eq!(r.attr("MS-Primary-DNS-Server"), None);

    d.add_vpn_user("bob", "pass-1234");
    assert_eq!(
        login(&d, "bob").attr("Framed-IP-Address").as_deref(),
        Some("10.77.0.3")
    );
    // Reconnect: same address.
    assert_eq!(
        login(&d, "alice").attr("Framed-IP-Address").as_deref(),
        Some("10.77.0.2")
    );
    let s = sessions(&d);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0]["user"], "alice");
    assert_eq!(s[0]["device"], "alice-dev");
    assert!(d.ok(&["session", "list"]).contains("10.77.0.3"));
    assert_eq!(d.metric("ravpnd_pool_leased{pool=\"vpn\"}"), 2.0);
    assert_eq!(d.metric("ravpnd_pool_addresses{pool=\"vpn\"}"), 253.0);
}

const ACTIVE: &str = "ravpnd_sessions_active{pool=\"vpn\"}";

/// ravpnd was down longer than the lease time while the session went on: the session's next
/// Interim-Update takes its address back, so another user is not given it too.
#[test]
fn an_update_after_a_long_outage_takes_the_expired_lease_back() {
    let mut d =
        TestDaemon::with_config(&config("").replace("lease_time = \"1h\"", "lease_time = \"2s\""));
    d.add_vpn_user("alice", "pass-1234");
    d.add_vpn_user("bob", "pass-1234");
    let addr = login(&d, "alice").attr("Framed-IP-Address").unwrap();
    let start = acct(
        &d,
        &format!("Acct-Status-Type=Start,Acct-Session-Id=\"sess-1\",User-Name=alice,Framed-IP-Address={addr}"),
    );
    assert!(start.is("Accounting-Response"), "{}", start.output);
    assert!(d.terminate().success());
    std::thread::sleep(Duration::from_secs(3));
    d.restart();
    assert!(sessions(&d).is_empty(), "expired while ravpnd was down");
    assert!(
        d.metrics()
            .contains("ravpnd_leases_taken_back_total{pool=\"vpn\"} 0"),
        "the series exists from the start"
    );

    let interim = acct(
        &d,
        &format!("Acct-Status-Type=Interim-Update,Acct-Session-Id=\"sess-1\",User-Name=alice,Framed-IP-Address={addr}"),
    );
    assert!(interim.is("Accounting-Response"), "{}", interim.output);
    let s = sessions(&d);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (
            &s[0]["addr"],
            &s[0]["user"],
            &s[0]["device"],
            &s[0]["session_id"]
        ),
        (
            &serde_json::json!(addr),
            &serde_json::json!("alice"),
            &serde_json::json!("alice-dev"),
            &serde_json::json!("sess-1")
        ),
    );
    assert!(d.log().contains("lease taken back"), "{}", d.log());
    assert_eq!(
        d.metric("ravpnd_leases_taken_back_total{pool=\"vpn\"}"),
        1.0
    );
    let other = login(&d, "bob").attr("Framed-IP-Address").unwrap();
    assert_ne!(other, addr, "the address is alice's session's");
}

#[test]
fn accounting_binds_the_session_and_stop_releases_the_address() {
    let d = TestDaemon::with_config(&config(""));
    d.add_vpn_user("alice", "pass-1234");
    let addr = login(&d, "alice").attr("Framed-IP-Address").unwrap();

    let start = acct(
        &d,
        &format!("Acct-Status-Type=Start,Acct-Session-Id=\"sess-1\",User-Name=alice,Framed-IP-Address={addr}"),
    );
    assert!(start.is("Accounting-Response"), "{}", start.output);
    let s = sessions(&d);
    assert_eq!(s[0]["session_id"], "sess-1", "{s:?}");
    assert_eq!(d.metric(ACTIVE), 1.0, "the session counts once started");
    let interim = acct(
        &d,
        "Acct-Status-Type=Interim-Update,Acct-Session-Id=\"sess-1\",User-Name=alice",
    );
    assert!(interim.is("Accounting-Response"), "{}", interim.output);

    let stop = acct(
        &d,
        &format!("Acct-Status-Type=Stop,Acct-Session-Id=\"sess-1\",User-Name=alice,Framed-IP-Address={addr}"),
    );
    assert!(stop.is("Accounting-Response"), "{}", stop.output);
    assert!(sessions(&d).is_empty());
    assert_eq!(d.metric("ravpnd_accounting_total{status=\"stop\"}"), 1.0);
    assert_eq!(d.metric(ACTIVE), 0.0, "and no longer once stopped");
    // The released address is the device's again on its next connection.
    assert_eq!(login(&d, "alice").attr("Framed-IP-Address"), Some(addr));

    // A wrong shared secret on accounting: no answer, counted.
    let bad = radclient::send(
        d.acct_addr,
        "acct",
        "wrong-secret",
        "Acct-Status-Type=Stop,Acct-Session-Id=\"x\"",
    );
    assert_eq!(bad.code, None, "{}", bad.output);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"bad_authenticator\"}"),
        1.0
    );
    // Access-Requests are not taken on the accounting port.
    let wrong_port = radclient::auth(d.acct_addr, "alice", "pass-1234");
    assert_eq!(wrong_port.code, None);
}

#[test]
fn tiny_pool_exhausts_then_reuses_released_and_expired_addresses() {
    let cfg = default_config(true)
        + "[[pools]]\nname = \"tiny\"\nnetwork = \"10.78.0.0/30\"\nlease_time = \"2s\"\n";
    let d = TestDaemon::with_config(&cfg);
    for u in ["u1", "u2", "u3"] {
        d.add_vpn_user(u, "pass-1234");
    }
    let a1 = login(&d, "u1").attr("Framed-IP-Address").unwrap();
    let a2 = login(&d, "u2").attr("Framed-IP-Address").unwrap();
    let mut got = [a1.clone(), a2.clone()];
    got.sort();
    assert_eq!(got, ["10.78.0.1", "10.78.0.2"]);
    let full = login(&d, "u3");
    assert!(full.is("Access-Reject"));
    assert_eq!(
        full.attr("Reply-Message").as_deref(),
        Some("address pool exhausted")
    );
    assert_eq!(
        d.metric(
            "ravpnd_requests_total{outcome=\"reject\",reason=\"pool_exhausted\",type=\"access\"}"
        ),
        1.0
    );

    // Accounting-Stop frees u1's address for u3.
    acct(
        &d,
        &format!("Acct-Status-Type=Start,Acct-Session-Id=\"s1\",Framed-IP-Address={a1}"),
    );
    assert!(acct(
        &d,
        &format!("Acct-Status-Type=Stop,Acct-Session-Id=\"s1\",Framed-IP-Address={a1}")
    )
    .is("Accounting-Response"));
    assert_eq!(login(&d, "u3").attr("Framed-IP-Address"), Some(a1.clone()));
    assert!(login(&d, "u1").is("Access-Reject"), "pool is full again");

    // Without accounting, leases end after lease_time (2 s).
    std::thread::sleep(Duration::from_millis(3100));
    let r = login(&d, "u1");
    assert!(r.is("Access-Accept"), "{}", r.output);
}

#[test]
fn proxy_modes_as_the_asa_dictionary_names_them() {
    let managed = r#"
[proxy]
mode = "managed"
address = "10.0.0.80"
port = 8080
exceptions = "*.example.com;10.*"
apply_to = ["alice/alice-dev", "carol/carol-dev"]
"#;
    let d = TestDaemon::with_config(&config(managed));
    d.add_vpn_user("alice", "pass-1234");
    d.add_vpn_user("bob", "pass-1234");
    let r = login(&d, "alice");
    assert_eq!(
        r.attr("ASA-IE-Proxy-Server-Policy").as_deref(),
        Some("Use-Concentrator-Setting"),
        "{}",
        r.output
    );
    assert_eq!(
        r.attr("ASA-IE-Proxy-Server").as_deref(),
        Some("10.0.0.80:8080")
    );
    assert_eq!(
        r.attr("ASA-IE-Proxy-Exception-List").as_deref(),
        Some("*.example.com;10.*")
    );
    // bob is not in apply_to: nothing pushed, but he connects.
    let b = login(&d, "bob");
    assert!(b.is("Access-Accept"));
    assert_eq!(b.attr("ASA-IE-Proxy-Server-Policy"), None);
    // Android cannot take managed mode: it keeps its own settings (No-Modify).
    d.add_user("carol", "pass-1234");
    d.ok(&[
        "device",
        "add",
        "carol-dev",
        "--type",
        "android",
        "--no-device-auth",
    ]);
    d.ok(&["assign", "carol", "carol-dev"]);
    let c = radclient::anyconnect(
        d.auth_addr,
        "carol",
        "pass-1234",
        &["mdm-tlv=device-platform=android"],
    );
    assert!(c.is("Access-Accept"), "{}", c.output);
    assert_eq!(
        c.attr("ASA-IE-Proxy-Server-Policy").as_deref(),
        Some("No-Modify")
    );
    assert_eq!(c.attr("ASA-IE-Proxy-Server"), None);
    let list = d.ok(&["device", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice-dev") && l.ends_with("managed")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("bob-dev") && l.ends_with("not applied")),
        "{list}"
    );

    // client mode: applies to the listed profiles; others cannot connect.
    d.write_config(&config(
        "[proxy]\nmode = \"client\"\napply_to = [\"alice/alice-dev\"]\n",
    ));
    d.reload();
    wait_for_log(&d, "configuration reloaded", 1);
    let r = login(&d, "alice");
    assert_eq!(
        r.attr("ASA-IE-Proxy-Server-Policy").as_deref(),
        Some("No-Modify"),
        "{}",
        r.output
    );
    let b = login(&d, "bob");
    assert!(b.is("Access-Reject"));
    assert_eq!(
        b.attr("Reply-Message").as_deref(),
        Some("proxy not applied to this profile")
    );
    assert!(d
        .ok(&["device", "list"])
        .lines()
        .any(|l| l.starts_with("bob-dev") && l.ends_with("not applied (cannot connect)")));

    // none: no proxy for anyone.
    d.write_config(&config("[proxy]\nmode = \"none\"\n"));
    d.reload();
    wait_for_log(&d, "configuration reloaded", 2);
    assert_eq!(
        login(&d, "bob")
            .attr("ASA-IE-Proxy-Server-Policy")
            .as_deref(),
        Some("No-Proxy")
    );
}

fn wait_for_log(d: &TestDaemon, needle: &str, count: usize) {
    for _ in 0..100 {
        if d.log().matches(needle).count() >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("log never said `{needle}` {count} time(s)");
}

#[test]
fn sighup_changes_dns_refuses_a_bad_config_and_adds_pools() {
    let d = TestDaemon::with_config(&config(""));
    d.add_vpn_user("alice", "pass-1234");
    assert_eq!(
        login(&d, "alice").attr("ASA-Primary-DNS").as_deref(),
        Some("10.0.0.53")
    );

    d.write_config(&config("").replace("10.0.0.53", "10.9.9.9"));
    d.reload();
    wait_for_log(&d, "configuration reloaded", 1);
    assert_eq!(
        login(&d, "alice").attr("ASA-Primary-DNS").as_deref(),
        Some("10.9.9.9")
    );

    // A bad file is refused; the running config stays.
    d.write_config(
        &config("[proxy]\nmode = \"managed\"\nport = 0\n").replace("10.0.0.53", "10.1.1.1"),
    );
    d.reload();
    wait_for_log(&d, "reload refused", 1);
    assert_eq!(
        login(&d, "alice").attr("ASA-Primary-DNS").as_deref(),
        Some("10.9.9.9")
    );
    // So is changing a pool in place.
    d.write_config(&config("").replace("10.77.0.0/24", "10.66.0.0/24"));
    d.reload();
    wait_for_log(&d, "reload refused", 2);

    // A new pool and a client using it arrive with a reload.
    let added = config("").replace("10.0.0.53", "10.9.9.9")
        + "[[pools]]\nname = \"lab\"\nnetwork = \"10.88.0.0/29\"\n"
        + &format!("[[clients]]\nname = \"lab-gw\"\naddress = \"127.0.0.7\"\nsecret = \"{SECRET}\"\npool = \"lab\"\n");
    d.write_config(&added);
    d.reload();
    wait_for_log(&d, "configuration reloaded", 2);
    d.add_vpn_user("bob", "pass-1234");
    let req = Request::access(1)
        .user(b"bob")
        .password("pass-1234", SECRET);
    let c = Client::from("127.0.0.7", d.auth_addr);
    c.send(&req.build(SECRET));
    let resp = c.recv().expect("the new client is known after the reload");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
    assert!(
        framed_ip(&resp).is_some_and(|a| a.octets()[..3] == [10, 88, 0]),
        "{resp:?}"
    );
}

fn framed_ip(resp: &[u8]) -> Option<Ipv4Addr> {
    let mut i = 20;
    while i + 2 <= resp.len() {
        let (t, l) = (resp[i], resp[i + 1] as usize);
        if t == 8 && l == 6 {
            return Some(Ipv4Addr::new(
                resp[i + 2],
                resp[i + 3],
                resp[i + 4],
                resp[i + 5],
            ));
        }
        i += l;
    }
    None
}

#[test]
fn ocserv_clients_get_microsoft_dns_interim_interval_and_no_proxy() {
    let cfg = config("[proxy]\nmode = \"none\"\n").replace(
        "require_message_authenticator = true",
        "require_message_authenticator = false\nkind = \"ocserv\"",
    );
    let d = TestDaemon::with_config(&cfg);
    d.add_vpn_user("alice", "pass-1234");
    // What ocserv sends: no Message-Authenticator, no device identity.
    let r = radclient::send(
        d.auth_addr,
        "auth",
        SECRET,
        "User-Name=alice,User-Password=pass-1234,Service-Type=Authenticate-Only,NAS-Port-Type=Async,NAS-Identifier=ocserv,Calling-Station-Id=192.0.2.7",
    );
    assert!(r.is("Access-Accept"), "{}", r.output);
    assert_eq!(
        r.attr("Service-Type").as_deref(),
        Some("Framed-User"),
        "{}",
        r.output
    );
    assert_eq!(r.attr("Framed-IP-Address").as_deref(), Some("10.77.0.2"));
    assert_eq!(
        r.attr("MS-Primary-DNS-Server").as_deref(),
        Some("10.0.0.53")
    );
    assert_eq!(
        r.attr("MS-Secondary-DNS-Server").as_deref(),
        Some("10.0.0.54")
    );
    assert_eq!(r.attr("Acct-Interim-Interval").as_deref(), Some("600"));
    assert_eq!(r.attr("ASA-Primary-DNS"), None);
    assert_eq!(
        r.attr("ASA-IE-Proxy-Server-Policy"),
        None,
        "ocserv gets no proxy attributes"
    );
}

#[test]
fn a_thousand_concurrent_sessions_get_distinct_addresses() {
    let cfg = default_config(true)
        + "[[pools]]\nname = \"big\"\nnetwork = \"10.100.0.0/20\"\n[devices]\nmax_per_user = 1000\n";
    let d = TestDaemon::with_config(&cfg);
    d.add_user("load", "pass-1234");
    let mut csv = String::from("name,type,serial,user\n");
    for i in 0..1000 {
        csv.push_str(&format!("dev{i},windows,{i:064X},load\n"));
    }
    std::fs::write(d.dir.path().join("devices.csv"), csv).unwrap();
    d.ok(&["import", "devices", "devices.csv"]);

    let addr = d.auth_addr;
    let threads: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                let c = Client::new(addr);
                let mut out = Vec::new();
                // Each thread keeps 100 requests in flight at once.
                let reqs: Vec<Request> = (0..100)
                    .map(|k| {
                        let i = t * 100 + k;
                        let mut r = Request::access(k as u8)
                            .user(b"load")
                            .password("pass-1234", SECRET);
                        for pair in [
                            format!("mdm-tlv=device-uid={i:064X}"),
                            "mdm-tlv=device-platform=win".into(),
                        ] {
                            let mut vsa = 9u32.to_be_bytes().to_vec();
                            vsa.extend([1, 2 + pair.len() as u8]);
                            vsa.extend(pair.as_bytes());
                            r = r.attr(26, &vsa);
                        }
                        r
                    })
                    .collect();
                // Like a NAS: retransmit what is still unanswered (same bytes, so the
                // duplicate cache answers a request already processed).
                let packets: Vec<Vec<u8>> = reqs.iter().map(|r| r.build(SECRET)).collect();
                let mut answered = [false; 100];
                for _round in 0..10 {
                    for (k, p) in packets.iter().enumerate() {
                        if !answered[k] {
                            c.send(p);
                        }
                    }
                    while let Some(resp) = c.recv_within(Duration::from_secs(3)) {
                        let k = resp[1] as usize;
                        if answered[k] {
                            continue;
                        }
                        assert_eq!(verify(&resp, &reqs[k], SECRET).code, 2);
                        answered[k] = true;
                        out.push(framed_ip(&resp).expect("address"));
                        if answered.iter().all(|a| *a) {
                            break;
                        }
                    }
                    if answered.iter().all(|a| *a) {
                        break;
                    }
                }
                out
            })
        })
        .collect();
    let mut all: Vec<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(all.len(), 1000);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1000, "every session has its own address");
    assert_eq!(sessions(&d).len(), 1000);
}

/// With every in-flight slot taken, a request polled once may already hold the store's commit
/// lock (an Accounting-Start's durable write): it must run, not wait for a slot while the
/// slot's holder waits for that lock (before: no answer until the request timeout).
#[test]
fn a_request_over_the_in_flight_limit_does_not_stall_durable_writes() {
    let d = TestDaemon::with_config(&config("").replace(
        "[radius]\n",
        "[radius]\nmax_in_flight = 1\nrequest_timeout = \"30s\"\n",
    ));
    d.add_vpn_user("alice", "pass-1234");
    d.add_vpn_user("bob", "pass-1234");
    let addr: Ipv4Addr = login(&d, "alice")
        .attr("Framed-IP-Address")
        .unwrap()
        .parse()
        .unwrap();
    // bob's first login hashes his password (the only slot) and then writes a new lease;
    // alice's Accounting-Start arrives meanwhile and writes hers durably.
    let bob = Request::access(7)
        .user(b"bob")
        .password("pass-1234", SECRET);
    let start = Request::accounting(8)
        .attr(40, &1u32.to_be_bytes())
        .attr(44, b"stall-1")
        .attr(1, b"alice")
        .attr(8, &addr.octets());
    let (auth, acct) = (Client::new(d.auth_addr), Client::new(d.acct_addr));
    auth.send(&bob.build(SECRET));
    // Within the hash's tens of milliseconds, after bob has taken the slot.
    std::thread::sleep(Duration::from_millis(5));
    acct.send(&start.build(SECRET));
    let r = auth
        .recv_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("bob was not answered\n{}", d.log()));
    assert_eq!(verify(&r, &bob, SECRET).code, 2, "Access-Accept");
    assert!(
        acct.recv_within(Duration::from_secs(10)).is_some(),
        "accounting answered"
    );
}

//! An admin's release of leases the gateway will not report ended (`ravpnd session release`,
//! `DELETE /api/v1/sessions/{addr}` and `DELETE /api/v1/sessions?nas=NAME`).

use std::io::{Read, Write};
use std::time::Duration;

use crate::sessions::{config, sessions};
use crate::support::daemon::SECRET;
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient::{self, Reply};
use crate::support::TestDaemon;

/// A second gateway, `lab-gw` on 127.0.0.7, taking addresses from the same pool.
fn second_client(name: &str) -> String {
    format!("[[clients]]\nname = \"{name}\"\naddress = \"127.0.0.7\"\nsecret = \"{SECRET}\"\n")
}

/// Logs in through the `loopback` client; returns the address granted.
fn login(d: &TestDaemon, user: &str) -> String {
    let r: Reply = radclient::auth(d.auth_addr, user, "pass-1234");
    assert!(r.is("Access-Accept"), "{}", r.output);
    r.attr("Framed-IP-Address").expect("an address")
}

/// Logs in through the client on 127.0.0.7.
fn login_from_lab(d: &TestDaemon, user: &str) {
    let req = Request::access(1)
        .user(user.as_bytes())
        .password("pass-1234", SECRET);
    let c = Client::from("127.0.0.7", d.auth_addr);
    c.send(&req.build(SECRET));
    let resp = c.recv().expect("the lab gateway is answered");
    assert_eq!(verify(&resp, &req, SECRET).code, 2, "Access-Accept");
}

fn addrs(leases: &[serde_json::Value]) -> Vec<String> {
    leases
        .iter()
        .map(|l| l["addr"].as_str().unwrap().to_owned())
        .collect()
}

/// A raw admin API request with the daemon's token: (status, body).
fn admin(d: &TestDaemon, method: &str, path: &str) -> (u16, String) {
    let token = std::fs::read_to_string(d.dir.path().join("data/admin.token")).unwrap();
    let mut s = std::net::TcpStream::connect(d.admin_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} /api/v1{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The JSON error the admin API answers, as the other routes do (`{"error": …}`).
fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"].as_str().expect("an error message").to_owned()
}

#[test]
fn release_frees_one_address_and_the_device_gets_a_lease_again() {
    let d = TestDaemon::with_config(&config(""));
    d.add_vpn_user("alice", "pass-1234");
    d.add_vpn_user("bob", "pass-1234");
    let a = login(&d, "alice");
    let b = login(&d, "bob");
    let start = radclient::send(
        d.acct_addr,
        "acct",
        SECRET,
        &format!("Acct-Status-Type=Start,Acct-Session-Id=\"sess-a\",User-Name=alice,Framed-IP-Address={a}"),
    );
    assert!(start.is("Accounting-Response"), "{}", start.output);

    let out = d.ok(&["session", "release", &a]);
    for what in [a.as_str(), "alice", "alice-dev", "sess-a", "loopback"] {
        assert!(out.contains(what), "{what} in {out}");
    }
    assert!(out.contains("1 lease(s) released"), "{out}");
    assert!(!out.contains(&b), "{out}");
    assert_eq!(
        addrs(&sessions(&d)),
        std::slice::from_ref(&b),
        "only bob's lease is left"
    );
    assert_eq!(d.metric("ravpnd_pool_leased{pool=\"vpn\"}"), 1.0);
    assert_eq!(d.metric("ravpnd_sessions_active{pool=\"vpn\"}"), 0.0);
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("lease released"))
        .unwrap_or_else(|| panic!("the release is logged:\n{log}"));
    for field in [
        format!("addr={a}"),
        "user=\"alice\"".into(),
        "device=\"alice-dev\"".into(),
        "nas=loopback".into(),
        "session=\"sess-a\"".into(),
        "admin API".into(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }

    // Nothing holds it any more: 404, a clear message and a non-zero exit.
    let err = d.fails(&["session", "release", &a]);
    assert!(err.contains(&format!("no lease holds {a}")), "{err}");
    let (status, body) = admin(&d, "DELETE", &format!("/sessions/{a}"));
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body), format!("no lease holds {a}"));
    // Not an IPv4 address: 400.
    for garbage in ["not-an-address", "10.77.0.0/24", "::1", "10.77.0.256"] {
        let err = d.fails(&["session", "release", garbage]);
        assert!(
            err.contains(&format!("`{garbage}` is not an IPv4 address")),
            "{garbage}: {err}"
        );
    }
    let (status, body) = admin(&d, "DELETE", "/sessions/garbage");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), "`garbage` is not an IPv4 address");

    // The device's next Access-Request leases an address again.
    let again = login(&d, "alice");
    let leases = sessions(&d);
    assert!(
        leases
            .iter()
            .any(|l| l["addr"] == again.as_str() && l["device"] == "alice-dev"),
        "{leases:?}"
    );
    // --json: the released leases as a list, as `session list --json` prints them.
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["session", "release", &again, "--json"])).unwrap();
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0]["addr"], again.as_str());
    assert_eq!(json[0]["user"], "alice");
    assert_eq!(addrs(&sessions(&d)), [b]);
}

#[test]
fn release_by_nas_frees_that_gateways_leases_only() {
    let d = TestDaemon::with_config(&config(&second_client("lab-gw")));
    for u in ["alice", "bob", "carol"] {
        d.add_vpn_user(u, "pass-1234");
    }
    let mut ours = vec![login(&d, "alice"), login(&d, "bob")];
    ours.sort();
    login_from_lab(&d, "carol");
    let before = sessions(&d);
    assert_eq!(before.len(), 3, "{before:?}");
    let carol: Vec<String> = addrs(
        &before
            .iter()
            .filter(|l| l["nas"] == "lab-gw")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(carol.len(), 1, "{before:?}");

    let released: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["session", "release", "--nas", "loopback", "--json"]))
            .unwrap();
    assert_eq!(addrs(&released), ours, "{released:?}");
    assert!(released.iter().all(|l| l["nas"] == "loopback"));
    let left = sessions(&d);
    assert_eq!(addrs(&left), carol, "the lab gateway's lease stays");
    assert_eq!(left[0]["user"], "carol");
    assert_eq!(d.log().matches("lease released").count(), 2);
    assert!(d.log().contains("leases of a NAS released"));

    // A configured client holding no lease: nothing to do, and that is no error.
    let out = d.ok(&["session", "release", "--nas", "loopback"]);
    assert!(out.contains("nothing released"), "{out}");
    // A name neither configured nor holding a lease (a typo): 404.
    let err = d.fails(&["session", "release", "--nas", "lab-gw-typo"]);
    assert!(
        err.contains("no NAS client named `lab-gw-typo` is configured"),
        "{err}"
    );
    // Exactly one of ADDRESS and --nas.
    d.fails(&["session", "release"]);
    d.fails(&["session", "release", &carol[0], "--nas", "lab-gw"]);
    // The API refuses a release of everything, and says so in its JSON error shape.
    for path in ["/sessions", "/sessions?nas=", "/sessions?gateway=lab-gw"] {
        let (status, body) = admin(&d, "DELETE", path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(!error_of(&body).is_empty());
    }
    assert_eq!(addrs(&sessions(&d)), carol, "nothing more was released");

    // The lab gateway renamed: its lease is still held through the old name, which can
    // still be released although no client has it any more.
    d.write_config(&config(&second_client("lab-gw-2")));
    d.reload();
    d.wait_for_log("configuration reloaded", 1);
    let out = d.ok(&["session", "release", "--nas", "lab-gw"]);
    assert!(out.contains(&carol[0]) && out.contains("carol"), "{out}");
    assert!(sessions(&d).is_empty());
    let err = d.fails(&["session", "release", "--nas", "lab-gw"]);
    assert!(err.contains("no NAS client named `lab-gw`"), "{err}");
}

/// A release is durable when the CLI returns: a crash right after it does not bring the
/// lease back from the store.
#[test]
fn a_release_survives_a_crash_and_restart() {
    let mut d = TestDaemon::with_config(&config(&second_client("lab-gw")));
    for u in ["alice", "bob", "carol"] {
        d.add_vpn_user(u, "pass-1234");
    }
    let a = login(&d, "alice");
    let b = login(&d, "bob");
    login_from_lab(&d, "carol");
    d.ok(&["session", "release", &a]);
    d.kill9();
    d.restart();
    let left = sessions(&d);
    assert!(!addrs(&left).contains(&a), "{left:?}");
    assert!(addrs(&left).contains(&b), "{left:?}");
    assert_eq!(left.len(), 2, "{left:?}");

    d.ok(&["session", "release", "--nas", "lab-gw"]);
    d.kill9();
    d.restart();
    assert_eq!(
        addrs(&sessions(&d)),
        [b],
        "only bob's lease was never released"
    );
}

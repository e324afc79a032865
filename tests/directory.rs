//! The Active Directory source against a real Samba AD DC on loopback (one per test run).

use crate::support::daemon::SECRET;
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient::{self, Reply};
use crate::support::samba::{dc, AdConfig, NewUser};
use crate::support::TestDaemon;

pub(crate) const PW: &str = "Passw0rd-Ravpnd!";

pub(crate) fn daemon(ad: &AdConfig) -> TestDaemon {
    TestDaemon::with_config(&dc().daemon_config(true, ad))
}

/// Adds a directory user to ravpnd with an assigned device that needs no device ID.
pub(crate) fn enrol(d: &TestDaemon, sam: &str) {
    d.ok(&["user", "add", sam]);
    let dev = format!("{}-dev", sam.to_lowercase());
    d.ok(&[
        "device",
        "add",
        &dev,
        "--type",
        "windows",
        "--no-device-auth",
    ]);
    d.ok(&["assign", &sam.to_lowercase(), &dev]);
}

pub(crate) fn login(d: &TestDaemon, name: &str, pw: &str) -> Reply {
    radclient::auth(d.auth_addr, name, pw)
}

pub(crate) fn why(r: &Reply) -> String {
    r.attr("Reply-Message").unwrap_or_default()
}

#[test]
fn binds_map_to_reasons_over_ldaps() {
    let dc = dc();
    let d = daemon(&dc.auth_config());
    let [good, disabled, expired, change] =
        ["adgood", "addis", "adexp", "adchg"].map(|p| dc.unique_name(p));
    for u in [&good, &disabled, &expired, &change] {
        dc.create_user(u, PW);
        enrol(&d, u);
    }
    dc.disable_user(&disabled);
    dc.expire_user(&expired);
    dc.require_password_change(&change);

    let ok = login(&d, &good, PW);
    assert!(ok.is("Access-Accept"), "{}\n{}", ok.output, d.log());
    // The NetBIOS and UPN forms reach the same user.
    assert!(login(&d, &format!("CORP\\{good}"), PW).is("Access-Accept"));
    assert!(login(&d, &format!("{good}@corp.example.com"), PW).is("Access-Accept"));
    assert_eq!(why(&login(&d, &good, "Wrong-Passw0rd!")), "bad password");
    assert_eq!(why(&login(&d, &disabled, PW)), "account disabled");
    assert_eq!(why(&login(&d, &expired, PW)), "account expired");
    assert_eq!(why(&login(&d, &change, PW)), "password must be changed");
    // Not added to ravpnd: unknown, without asking the directory.
    assert_eq!(why(&login(&d, "nobody-here", PW)), "unknown user");
    // An empty password (16 zero octets under PAP) is never an anonymous-bind success.
    let req = Request::access(9)
        .user(good.as_bytes())
        .password("", SECRET);
    let c = Client::new(d.auth_addr);
    c.send(&req.build(SECRET));
    let r = verify(&c.recv().expect("answered"), &req, SECRET);
    assert_eq!(r.reply_message.as_deref(), Some("bad password"));
    assert!(d
        .metrics()
        .contains("ravpnd_directory_bind_duration_seconds_count{server=\"primary\"}"));
}

/// The password is checked against the account ravpnd knows (its sAMAccountName), never
/// the one another name form resolves to: a UPN is an attribute any account may carry, with
/// any suffix, and a bind as `alice@partner.example` would let that account's owner in as
/// `alice`. (Samba refuses a UPN in the domain's own suffix that spells another account's
/// name; Windows AD checks only explicit UPNs against each other, so there the down-level
/// bind matters for the domain's own suffix too.)
#[test]
fn a_login_binds_as_the_enrolled_account_only() {
    const OTHER_PW: &str = "Mall0ry-Passw0rd!";
    let dc = dc();
    // No netbios_domain: the daemon reads the domain's NetBIOS name from the directory.
    let mut ad = dc.auth_config();
    ad.netbios_domain = None;
    let d = daemon(&ad);
    let [victim, partner] = ["advic", "adpar"].map(|p| dc.unique_name(p));
    let other_suffix = format!("{victim}@partner.example");
    dc.create_user_with(
        &partner,
        OTHER_PW,
        &NewUser {
            upn: Some(&other_suffix),
            ..Default::default()
        },
    );
    dc.create_user(&victim, PW);
    enrol(&d, &victim);

    let r = login(&d, &other_suffix, OTHER_PW);
    assert_eq!(why(&r), "unknown user", "{}\n{}", r.output, d.log());
    assert_eq!(why(&login(&d, &other_suffix, PW)), "unknown user");
    let own_suffix = format!("{victim}@{}", dc.domain());
    assert_eq!(why(&login(&d, &own_suffix, OTHER_PW)), "bad password");
    for name in [victim.clone(), own_suffix, format!("CORP\\{victim}")] {
        let r = login(&d, &name, PW);
        assert!(r.is("Access-Accept"), "{name}: {}\n{}", r.output, d.log());
    }
    let log = d.log();
    assert_eq!(
        log.matches("NetBIOS domain name read from the directory")
            .count(),
        1,
        "read once\n{log}"
    );
    assert!(log.contains("netbios=CORP"), "{log}");
}

#[test]
fn users_must_exist_in_the_directory_and_candidates_page_through() {
    let dc = dc();
    let d = daemon(&dc.auth_config());
    let e = d.fails(&["user", "add", "no-such-user-xyz"]);
    assert!(e.contains("not a user of the directory"), "{e}");
    let e = d.fails(&["user", "add", "x", "--password-stdin"]);
    assert!(e.contains("directory"), "{e}");

    // More users than one page of the listing (ravpnd pages by 200).
    let prefix = dc.unique_name("cand");
    let names = dc.create_users_bulk(&prefix, 250, None);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["user", "candidates", "--json"])).unwrap();
    for n in &names {
        assert!(
            listed.iter().any(|c| c["sam_account_name"] == n.as_str()),
            "{n} missing"
        );
    }
    let one = &names[7];
    d.ok(&["user", "add", one]);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["user", "candidates", "--json"])).unwrap();
    assert!(
        !listed.iter().any(|c| c["sam_account_name"] == one.as_str()),
        "added users are no candidates"
    );
    assert!(d.ok(&["user", "candidates"]).contains("Bulk User"));

    let out = d.ok(&["user", "add", "--all"]);
    assert!(out.contains("directory user(s) added"), "{out}");
    let users = d.ok(&["user", "list"]);
    assert!(users.contains(&names[249].to_lowercase()), "{users}");
}

#[test]
fn failover_to_the_secondary_and_directory_unavailable() {
    let dc = dc();
    let mut ad = dc.auth_config();
    // The primary address has nothing listening; the secondary is the DC.
    ad.primary_address = dc.unused_address();
    ad.secondary = Some((dc.host().to_owned(), dc.address()));
    ad.timeout = Some("2s".into());
    let d = daemon(&ad);
    let u = dc.unique_name("adfail");
    dc.create_user(&u, PW);
    enrol(&d, &u);
    let r = login(&d, &u, PW);
    assert!(r.is("Access-Accept"), "{}\n{}", r.output, d.log());
    assert!(d.metric("ravpnd_directory_errors_total{server=\"primary\"}") >= 1.0);

    // Both down (restart on the same store with dead addresses): a clear reject, quickly.
    let mut d = d;
    assert!(d.terminate().success());
    let mut dead = dc.auth_config();
    dead.primary_address = dc.unused_address();
    dead.timeout = Some("1s".into());
    d.write_config(&dc.daemon_config(true, &dead));
    d.restart();
    let r = login(&d, &u, PW);
    assert_eq!(why(&r), "directory unavailable", "{}", r.output);
}

#[test]
fn lockout_guard_refuses_a_repeated_wrong_password_without_binding() {
    let dc = dc();
    let d = daemon(&dc.auth_config());
    let u = dc.unique_name("adlock");
    dc.create_user_with(&u, PW, &NewUser::default());
    enrol(&d, &u);
    for _ in 0..5 {
        assert_eq!(why(&login(&d, &u, "Stale-Passw0rd!")), "bad password");
    }
    assert_eq!(d.metric("ravpnd_lockout_guard_refusals_total"), 4.0);
    // The account was not locked by the retries: the right password still works.
    assert!(login(&d, &u, PW).is("Access-Accept"));
}

/// Accounting names a directory user as the NAS sends it (`CORP\alice`): ocserv's Start,
/// without Framed-IP-Address, binds that user's lease (found under the store's name), and
/// the Stop releases it.
#[test]
fn accounting_finds_a_directory_users_lease_under_any_name_form() {
    let dc = dc();
    let conf = format!(
        "{}\n[[pools]]\nname = \"vpn\"\nnetwork = \"10.78.0.0/24\"\n",
        dc.daemon_config(true, &dc.auth_config())
    );
    let d = TestDaemon::with_config(&conf);
    let sam = dc.unique_name("adacct");
    dc.create_user(&sam, PW);
    enrol(&d, &sam);
    let name = format!("CORP\\{sam}");
    let r = login(&d, &name, PW);
    let addr = r.attr("Framed-IP-Address").expect("an address");
    let acct = |attrs: String| {
        let r = radclient::send(d.acct_addr, "acct", SECRET, &attrs);
        assert!(r.is("Accounting-Response"), "{}", r.output);
    };
    acct(format!(
        "Acct-Status-Type=Start,Acct-Session-Id=\"ad-1\",User-Name=\"{name}\""
    ));
    let sessions: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["session", "list", "--json"])).unwrap();
    assert_eq!(
        sessions[0]["session_id"],
        "ad-1",
        "{sessions:?}\n{}",
        d.log()
    );
    acct(format!(
        "Acct-Status-Type=Stop,Acct-Session-Id=\"ad-1\",User-Name=\"{name}\",Framed-IP-Address={addr}"
    ));
    assert_eq!(d.ok(&["session", "list", "--json"]).trim(), "[]");
}

/// A primary that accepts connections and never answers, with no health probes to find it
/// out: the first login, which also reads the NetBIOS name through an admin connection, waits
/// for it once — the admin connection's failure marks it down for the bind too.
#[test]
fn a_silent_primary_is_waited_for_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dc = dc();
    // An address of this run's own (the fixture's unused one must stay unanswered).
    let pid = std::process::id();
    let silent_ip = std::net::Ipv4Addr::new(127, 66, (pid >> 8) as u8, pid as u8 | 1);
    let silent = std::net::TcpListener::bind((silent_ip, 636)).expect("port 636 (root)");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut ad = dc.auth_config();
    ad.primary_address = silent_ip;
    ad.secondary = Some((dc.host().to_owned(), dc.address()));
    ad.netbios_domain = None;
    ad.timeout = Some("2s".into());
    ad.extra = "health_check_interval = \"0s\"\n".into();
    let d = daemon(&ad);
    let u = dc.unique_name("adsil");
    dc.create_user(&u, PW);
    enrol(&d, &u);
    let req = Request::access(3).user(u.as_bytes()).password(PW, SECRET);
    let c = Client::new(d.auth_addr);
    c.send(&req.build(SECRET));
    let r = c
        .recv_within(std::time::Duration::from_secs(9))
        .unwrap_or_else(|| panic!("no answer\n{}", d.log()));
    assert_eq!(verify(&r, &req, SECRET).code, 2, "{}", d.log());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{}", d.log());
}

//! Active Directory: the DCs' health checks (failover and return to the primary, `/readyz`)
//! and the CSV import checked against the directory, on the shared Samba AD DC.

use std::time::{Duration, Instant};

use crate::directory::{daemon, enrol, login, why, PW};
use crate::support::daemon::http_get;
use crate::support::samba::dc;
use crate::support::tcp_proxy::{free_address, TcpProxy};
use crate::support::TestDaemon;

const LDAPS: u16 = 636;

/// Polls until `cond` holds; panics naming `what` (and the daemon's log) after a minute.
fn wait_for(d: &TestDaemon, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "never happened: {what}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn up(d: &TestDaemon, server: &str) -> Option<f64> {
    let series = format!("ravpnd_directory_server_up{{server=\"{server}\"}} ");
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse().ok()))
}

fn binds(d: &TestDaemon, server: &str) -> f64 {
    d.metric(&format!(
        "ravpnd_directory_bind_duration_seconds_count{{server=\"{server}\"}}"
    ))
}

#[test]
fn health_check_moves_traffic_back_to_the_primary_when_it_returns() {
    let dc = dc();
    // The primary is a forwarder to the DC that is not started yet: nothing listens there.
    let primary = free_address(dc.address(), LDAPS);
    let mut ad = dc.auth_config();
    ad.primary_address = primary;
    ad.secondary = Some((dc.host().to_owned(), dc.address()));
    ad.timeout = Some("2s".into());
    ad.extra = "health_check_interval = \"200ms\"\n".into();
    let d = daemon(&ad);
    let u = dc.unique_name("adhealth");
    dc.create_user(&u, PW);
    enrol(&d, &u);

    wait_for(&d, "the primary probed down", || {
        up(&d, "primary") == Some(0.0)
    });
    assert_eq!(up(&d, "secondary"), Some(1.0));
    let r = login(&d, &u, PW);
    assert!(r.is("Access-Accept"), "{}\n{}", r.output, d.log());
    assert_eq!(binds(&d, "primary"), 0.0, "a down primary is skipped");
    assert_eq!(binds(&d, "secondary"), 1.0);

    // The primary returns: the next probe brings traffic back to it.
    let _primary = TcpProxy::start((primary, LDAPS).into(), (dc.address(), LDAPS).into());
    wait_for(&d, "the primary probed up", || {
        up(&d, "primary") == Some(1.0)
    });
    // The probes bind as the admin on the real DC, which accepts it (a refusal would suspend
    // their binds; an unanswered bind would read 0 here).
    assert!(
        d.metrics()
            .contains("ravpnd_directory_server_binds_answered{server=\"primary\"} 1"),
        "{}",
        d.metrics()
    );
    assert!(!d.log().contains("refused the admin's bind"), "{}", d.log());
    let r = login(&d, &u, PW);
    assert!(r.is("Access-Accept"), "{}\n{}", r.output, d.log());
    assert_eq!(binds(&d, "primary"), 1.0);
    assert_eq!(
        binds(&d, "secondary"),
        1.0,
        "the secondary is no longer used"
    );
}

#[test]
fn readyz_reports_whether_a_directory_server_is_reachable() {
    let dc = dc();
    let primary = free_address(dc.address(), LDAPS);
    let forward = || TcpProxy::start((primary, LDAPS).into(), (dc.address(), LDAPS).into());
    let proxy = forward();
    let mut ad = dc.auth_config();
    ad.primary_address = primary;
    ad.timeout = Some("2s".into());
    ad.extra = "health_check_interval = \"200ms\"\n".into();
    let d = daemon(&ad);
    let u = dc.unique_name("adready");
    dc.create_user(&u, PW);
    enrol(&d, &u);
    assert!(http_get(d.admin_addr, "/readyz").contains(" 200 "));

    // The only DC goes away: not ready, saying why; requests get a clear reject.
    drop(proxy);
    let mut body = String::new();
    wait_for(&d, "/readyz answers 503", || {
        body = http_get(d.admin_addr, "/readyz");
        body.contains(" 503 ")
    });
    assert!(body.contains("no directory server reachable"), "{body}");
    assert!(
        body.contains(&format!("primary {} ({primary}:{LDAPS})", dc.host())),
        "{body}"
    );
    assert_eq!(why(&login(&d, &u, PW)), "directory unavailable");

    // It returns: ready again, and serving.
    let _proxy = forward();
    wait_for(&d, "/readyz answers 200", || {
        http_get(d.admin_addr, "/readyz").contains(" 200 ")
    });
    let r = login(&d, &u, PW);
    assert!(r.is("Access-Accept"), "{}\n{}", r.output, d.log());
}

#[test]
fn import_checks_every_user_against_the_directory() {
    let dc = dc();
    let d = daemon(&dc.auth_config());
    let [a, b] = ["adimpa", "adimpb"].map(|p| dc.unique_name(p));
    for u in [&a, &b] {
        dc.create_user(u, PW);
    }
    let file = d.dir.path().join("users.csv");
    let path = file.to_str().unwrap();

    // Two names the directory does not have: nothing is imported, both are named.
    std::fs::write(
        &file,
        format!("name\n{a}\nghost-one\nCORP\\{b}\nghost-two\n"),
    )
    .unwrap();
    let e = d.fails(&["import", "users", path]);
    assert!(e.contains("2 bad row(s); nothing was imported"), "{e}");
    assert!(
        e.contains("line 3: `ghost-one` is not a user of the directory"),
        "{e}"
    );
    assert!(
        e.contains("line 5: `ghost-two` is not a user of the directory"),
        "{e}"
    );
    assert!(!d.ok(&["user", "list"]).contains(&a.to_lowercase()));

    // Passwords live in the directory.
    std::fs::write(&file, format!("name,password\n{a},Some-Passw0rd\n")).unwrap();
    let e = d.fails(&["import", "users", path]);
    assert!(
        e.contains("line 2: password: passwords of directory users live in the directory"),
        "{e}"
    );

    // All present (any name form): imported under the directory key.
    let upper = b.to_uppercase();
    std::fs::write(&file, format!("name\n{a}\nCORP\\{upper}\n")).unwrap();
    let out = d.ok(&["import", "users", path]);
    assert!(out.contains("2 row(s) imported"), "{out}");
    let users = d.ok(&["user", "list"]);
    assert!(
        users.contains(&a.to_lowercase()) && users.contains(&b.to_lowercase()),
        "{users}"
    );

    // The same user twice under two forms is one duplicate row.
    let c = dc.unique_name("adimpc");
    dc.create_user(&c, PW);
    std::fs::write(&file, format!("name\n{c}\n{c}@corp.example.com\n")).unwrap();
    let e = d.fails(&["import", "users", path]);
    assert!(e.contains("also on line 2"), "{e}");
}

//! The AD lockout pre-check (`lockout_precheck = true`) on the shared Samba AD DC: a user
//! one failure short of the lockout threshold is refused before any bind, so the account is
//! not locked — where the same failures without the pre-check do lock it.

use crate::directory::{daemon, enrol, login, why, PW};
use crate::support::samba::{dc, SambaDc, LOCKOUT_THRESHOLD};
use crate::support::TestDaemon;

const PREVENTED: &str = "too many failed logons: refused before the account gets locked out";

fn with_precheck(dc: &SambaDc, on: bool) -> TestDaemon {
    let mut ad = dc.auth_config();
    // The guard would hide repeated wrong passwords from the directory; these use distinct
    // ones anyway, but the pre-check must not depend on it.
    ad.extra = format!("lockout_precheck = {on}\nlockout_guard_window = \"0s\"\n");
    daemon(&ad)
}

fn bad_pwd_count(dc: &SambaDc, sam: &str) -> u32 {
    dc.user_attr(sam, "badPwdCount")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Fails `n` logons through ravpnd with distinct wrong passwords.
fn fail(d: &TestDaemon, sam: &str, n: u32) {
    for i in 0..n {
        assert_eq!(
            why(&login(d, sam, &format!("Wrong-Passw0rd-{i}"))),
            "bad password"
        );
    }
}

#[test]
fn precheck_stops_one_failure_short_of_a_fine_grained_policy_lockout() {
    let dc = dc();
    let (guarded, control) = (dc.unique_name("adprepso"), dc.unique_name("adprepsoc"));
    let (on, off) = (with_precheck(dc, true), with_precheck(dc, false));
    for (u, d) in [(&guarded, &on), (&control, &off)] {
        dc.create_user(u, PW);
        dc.apply_lockout_policy(u);
        enrol(d, u);
    }

    // Without the pre-check, THRESHOLD failures lock the account: even the right password
    // is refused now, by the directory.
    fail(&off, &control, LOCKOUT_THRESHOLD);
    assert_eq!(why(&login(&off, &control, PW)), "account locked out");

    // With it, the last failure before the lockout is never tried.
    fail(&on, &guarded, LOCKOUT_THRESHOLD - 1);
    assert_eq!(why(&login(&on, &guarded, "Wrong-Passw0rd-x")), PREVENTED);
    assert_eq!(why(&login(&on, &guarded, PW)), PREVENTED);
    assert_eq!(on.metric("ravpnd_lockout_precheck_refusals_total"), 2.0);
    assert_eq!(
        on.metric("ravpnd_requests_total{outcome=\"reject\",reason=\"lockout_prevented\",type=\"access\"}"),
        2.0
    );
    assert_eq!(bad_pwd_count(dc, &guarded), LOCKOUT_THRESHOLD - 1);
    // The account is not locked: the directory still takes the right password.
    dc.bind(&dc.ldap_url(), &dc.upn(&guarded), PW)
        .expect("the pre-check kept the account unlocked");
}

/// Sets the domain's lockoutThreshold for the life of the value, then restores it.
struct DomainThreshold<'a> {
    dc: &'a SambaDc,
    was: String,
}

impl<'a> DomainThreshold<'a> {
    fn set(dc: &'a SambaDc, n: u32) -> Self {
        let out = dc.search("(objectClass=domainDNS)", &["lockoutThreshold"]);
        let was = crate::support::samba::attr_values(&out, "lockoutThreshold")
            .first()
            .cloned()
            .unwrap_or_else(|| "0".into());
        dc.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: lockoutThreshold\nlockoutThreshold: {n}\n-\n",
            dc.base_dn()
        ));
        Self { dc, was }
    }
}

impl Drop for DomainThreshold<'_> {
    fn drop(&mut self) {
        self.dc.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: lockoutThreshold\nlockoutThreshold: {}\n-\n",
            self.dc.base_dn(),
            self.was
        ));
    }
}

#[test]
fn precheck_reads_the_domain_lockout_threshold() {
    let dc = dc();
    // The DC is shared: a threshold no other test's user gets near (they fail at most a few
    // binds each), restored when this test ends, pass or fail.
    const THRESHOLD: u32 = 8;
    let _policy = DomainThreshold::set(dc, THRESHOLD);
    let (guarded, control) = (dc.unique_name("adpredom"), dc.unique_name("adpredomc"));
    let (on, off) = (with_precheck(dc, true), with_precheck(dc, false));
    for (u, d) in [(&guarded, &on), (&control, &off)] {
        dc.create_user(u, PW);
        enrol(d, u);
    }

    fail(&off, &control, THRESHOLD);
    assert_eq!(why(&login(&off, &control, PW)), "account locked out");

    fail(&on, &guarded, THRESHOLD - 1);
    assert_eq!(why(&login(&on, &guarded, "Wrong-Passw0rd-x")), PREVENTED);
    assert_eq!(on.metric("ravpnd_lockout_precheck_refusals_total"), 1.0);
    assert_eq!(bad_pwd_count(dc, &guarded), THRESHOLD - 1);
    dc.bind(&dc.ldap_url(), &dc.upn(&guarded), PW)
        .expect("the pre-check kept the account unlocked");
}

#[test]
fn precheck_lets_users_below_the_threshold_in() {
    let dc = dc();
    let d = with_precheck(dc, true);
    let u = dc.unique_name("adpreok");
    dc.create_user(&u, PW);
    dc.apply_lockout_policy(&u);
    enrol(&d, &u);
    fail(&d, &u, LOCKOUT_THRESHOLD - 2);
    let r = login(&d, &u, PW);
    assert!(r.is("Access-Accept"), "{}\n{}", r.output, d.log());
    assert_eq!(d.metric("ravpnd_lockout_precheck_refusals_total"), 0.0);
}

//! The Samba AD DC fixture itself (tests/support/samba.rs), checked with OpenLDAP's
//! `ldapsearch` as the client: binds and AD's bind diagnostics, TLS, paging.

use crate::support::samba::{dc, LOCKOUT_THRESHOLD};

const PASSWORD: &str = "Corr3ct-Horse!";

fn data(r: Result<(), String>, code: &str) {
    match r {
        Err(e) => assert!(
            e.contains(&format!("data {code},")),
            "expected AD diagnostic `data {code}`, got: {e}"
        ),
        Ok(()) => panic!("bind accepted, expected `data {code}`"),
    }
}

#[test]
fn simple_bind_checks_the_password() {
    let dc = dc();
    let sam = dc.unique_name("fxbind");
    dc.create_user(&sam, PASSWORD);
    let url = dc.ldap_url();
    assert_eq!(dc.bind(&url, &dc.upn(&sam), PASSWORD), Ok(()));
    // Other spellings AD accepts: CORP\user, upper-case realm, the DN.
    assert_eq!(dc.bind(&url, &dc.down_level_name(&sam), PASSWORD), Ok(()));
    assert_eq!(
        dc.bind(&url, &format!("{sam}@CORP.EXAMPLE.COM"), PASSWORD),
        Ok(())
    );
    assert_eq!(dc.bind(&url, &dc.user_dn(&sam), PASSWORD), Ok(()));

    data(dc.bind(&url, &dc.upn(&sam), "Wr0ng-password!"), "52e");
    data(dc.bind(&url, &dc.upn("fx-nobody-here"), PASSWORD), "52e");
    // Samba refuses an empty password (real AD would treat it as an unauthenticated bind).
    data(dc.bind(&url, &dc.upn(&sam), ""), "52e");
    let e = dc.bind(&url, &dc.upn(&sam), "Wr0ng-password!").unwrap_err();
    assert!(e.contains("Invalid credentials (49)"), "{e}");
    assert!(e.contains("80090308: LdapErr: DSID-0C0903A9"), "{e}");
}

#[test]
fn account_states_give_ad_diagnostics() {
    let dc = dc();
    let url = dc.ldap_url();

    let disabled = dc.unique_name("fxdis");
    dc.create_user(&disabled, PASSWORD);
    dc.disable_user(&disabled);
    data(dc.bind(&url, &dc.upn(&disabled), PASSWORD), "533");
    // The password is checked first.
    data(dc.bind(&url, &dc.upn(&disabled), "Wr0ng-password!"), "52e");
    dc.enable_user(&disabled);
    assert_eq!(dc.bind(&url, &dc.upn(&disabled), PASSWORD), Ok(()));

    let expired = dc.unique_name("fxexp");
    dc.create_user(&expired, PASSWORD);
    dc.expire_user(&expired);
    data(dc.bind(&url, &dc.upn(&expired), PASSWORD), "701");
    dc.unexpire_user(&expired);
    assert_eq!(dc.bind(&url, &dc.upn(&expired), PASSWORD), Ok(()));

    let must_change = dc.unique_name("fxchg");
    dc.create_user(&must_change, PASSWORD);
    dc.require_password_change(&must_change);
    data(dc.bind(&url, &dc.upn(&must_change), PASSWORD), "773");

    let pw_expired = dc.unique_name("fxpwx");
    dc.create_user(&pw_expired, PASSWORD);
    dc.expire_password(&pw_expired);
    data(dc.bind(&url, &dc.upn(&pw_expired), PASSWORD), "532");

    let locked = dc.unique_name("fxlock");
    dc.create_user(&locked, PASSWORD);
    assert_eq!(LOCKOUT_THRESHOLD, 3);
    dc.lock_out_user(&locked);
    data(dc.bind(&url, &dc.upn(&locked), PASSWORD), "775");
    dc.unlock_user(&locked);
    assert_eq!(dc.bind(&url, &dc.upn(&locked), PASSWORD), Ok(()));
}

#[test]
fn password_reset_and_names() {
    let dc = dc();
    let url = dc.ldap_url();
    let sam = dc.unique_name("fxname");
    dc.create_user_with(
        &sam,
        PASSWORD,
        &crate::support::samba::NewUser {
            given_name: Some("Zoë"),
            surname: Some("Example"),
            mail: Some("zoe@example.com"),
            ..Default::default()
        },
    );
    // "given surname" unless display_name is given; non-ASCII goes through base64 LDIF.
    assert_eq!(dc.user_attr(&sam, "displayName"), ["Zoë Example"]);
    assert_eq!(dc.user_attr(&sam, "givenName"), ["Zoë"]);
    assert_eq!(dc.user_attr(&sam, "mail"), ["zoe@example.com"]);
    assert_eq!(dc.user_attr(&sam, "userPrincipalName"), [dc.upn(&sam)]);

    dc.set_password(&sam, "N3w-Passw0rd!");
    assert_eq!(dc.bind(&url, &dc.upn(&sam), "N3w-Passw0rd!"), Ok(()));
    // No 60-minute grace for the old password (old password allowed period = 0).
    data(dc.bind(&url, &dc.upn(&sam), PASSWORD), "52e");
}

#[test]
fn tls_addresses_and_ca() {
    let dc = dc();
    let sam = dc.unique_name("fxtls");
    dc.create_user(&sam, PASSWORD);
    let upn = dc.upn(&sam);
    // LDAPS and StartTLS, the certificate checked against the CA file (IP SAN).
    assert_eq!(dc.bind(&dc.ldaps_url(), &upn, PASSWORD), Ok(()));
    assert_eq!(dc.bind_starttls(&dc.ldap_url(), &upn, PASSWORD), Ok(()));
    data(dc.bind(&dc.ldaps_url(), &upn, "Wr0ng-password!"), "52e");
    // The second address is the same DC.
    let second = dc.second_address();
    assert_eq!(
        dc.bind(&format!("ldaps://{second}"), &upn, PASSWORD),
        Ok(())
    );
    assert_eq!(dc.bind(&format!("ldap://{second}"), &upn, PASSWORD), Ok(()));
    // Nothing on the unused address.
    let dead = dc
        .bind(&format!("ldap://{}", dc.unused_address()), &upn, PASSWORD)
        .unwrap_err();
    assert!(dead.contains("Can't contact LDAP server"), "{dead}");

    // The certificate: the DC's name and both addresses, signed by ca_file only.
    let cert = std::fs::read_to_string(dc.dir().join("tls/cert.pem")).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"));
    let info = std::process::Command::new("certtool")
        .args(["--certificate-info", "--infile"])
        .arg(dc.dir().join("tls/cert.pem"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&format!("DNSname: {}", dc.host())), "{info}");
    assert!(
        info.contains(&format!("IPAddress: {}", dc.address())),
        "{info}"
    );
    let untrusted = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", dc.untrusted_ca_file())
        .env("LDAPTLS_REQCERT", "demand")
        .args([
            "-x",
            "-o",
            "nettimeout=5",
            "-H",
            &dc.ldaps_url(),
            "-D",
            &upn,
            "-w",
            PASSWORD,
        ])
        .args(["-b", "", "-s", "base"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success(), "an untrusted CA was accepted");

    // The config snippet for ravpnd.
    let toml = dc.config_toml();
    for line in [
        "source = \"active_directory\"".to_string(),
        "[auth.active_directory]".into(),
        format!("primary_host = \"{}\"", dc.host()),
        format!("primary_address = \"{}\"", dc.address()),
        "domain = \"corp.example.com\"".into(),
        "netbios_domain = \"CORP\"".into(),
        "admin_user = \"Administrator\"".into(),
        "tls = \"ldaps\"".into(),
        format!("ca_file = \"{}\"", dc.ca_file().display()),
    ] {
        assert!(
            toml.lines().any(|l| l == line),
            "`{line}` missing in:\n{toml}"
        );
    }
    let mut failover = dc.auth_config();
    failover.primary_address = dc.unused_address();
    failover.secondary = Some((dc.host().into(), dc.second_address()));
    let t = failover.to_toml();
    assert!(
        t.contains(&format!("secondary_address = \"{}\"", dc.second_address())),
        "{t}"
    );
    let whole = dc.daemon_config(true, &failover);
    assert!(!whole.contains("source = \"local\""), "{whole}");
}

#[test]
fn paging_lists_more_users_than_a_page() {
    let dc = dc();
    let prefix = dc.unique_name("fxpg");
    let started = std::time::Instant::now();
    let names = dc.create_users_bulk(&prefix, 120, None);
    eprintln!("120 users in {:.1?}", started.elapsed());
    assert_eq!(names.len(), 120);
    let filter = format!("(&(objectCategory=person)(objectClass=user)(sAMAccountName={prefix}*))");
    let (entries, pages) = dc.paged_search(&filter, 50);
    assert_eq!((entries, pages), (120, 3), "50 + 50 + 20");
    // Samba applies no MaxPageSize of its own: one page when the client asks for 1000.
    assert_eq!(dc.paged_search(&filter, 1000), (120, 1));
    // Bulk users are enabled and listed with their display name.
    assert_eq!(dc.user_attr(&names[7], "displayName"), ["Bulk User 7"]);
    assert_eq!(dc.user_attr(&names[7], "userAccountControl"), ["544"]);
}

#[test]
fn groups_samba_tool_and_blackhole() {
    let dc = dc();
    let sam = dc.unique_name("fxgrp");
    let group = dc.unique_name("fxvpn");
    dc.create_user(&sam, PASSWORD);
    dc.create_group(&group);
    dc.add_to_group(&group, &sam);
    assert_eq!(dc.user_attr(&sam, "memberOf"), [dc.user_dn(&group)]);
    let shown = dc.samba_tool(&["user", "show", &sam]);
    assert!(shown.contains(&format!("sAMAccountName: {sam}")), "{shown}");

    // A hung DC: the TCP handshake completes, nothing ever answers.
    let hole = dc.blackhole();
    let mut s = std::net::TcpStream::connect((hole.address, 636)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    let r = std::io::Read::read(&mut s, &mut buf);
    assert!(r.is_err(), "the blackhole answered: {r:?}");
}

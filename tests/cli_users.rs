//! User management through the CLI against a running daemon.

use crate::support::daemon::{cli_in, stderr, stdout, SECRET};
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient;
use crate::support::TestDaemon;

#[test]
fn user_crud_through_the_cli() {
    let d = TestDaemon::start();
    d.add_user("alice", "first-pass");
    d.add_user("bob@example.com", "bobs-pass");

    let dup = d.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some("x-pass-123"),
    );
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    let list = d.cli(&["user", "list"], None);
    assert!(list.status.success(), "{}", stderr(&list));
    let out = stdout(&list);
    assert!(
        out.contains("alice") && out.contains("bob@example.com"),
        "{out}"
    );
    let json = d.cli(&["user", "list", "--json"], None);
    let users: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 2);

    let empty = d.cli(&["user", "add", "carol", "--password-stdin"], Some("\n"));
    assert!(!empty.status.success());
    assert!(stderr(&empty).contains("empty"), "{}", stderr(&empty));

    let missing = d.cli(&["user", "remove", "nobody"], None);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn password_change_and_removal_take_effect_at_once_despite_the_cache() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "first-pass");
    // Log in twice: the second is served from the credential cache.
    for _ in 0..2 {
        assert!(radclient::auth(d.auth_addr, "alice", "first-pass").is("Access-Accept"));
    }

    let out = d.cli(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("second-pass\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let old = radclient::auth(d.auth_addr, "alice", "first-pass");
    assert!(old.is("Access-Reject"), "{}", old.output);
    assert!(radclient::auth(d.auth_addr, "alice", "second-pass").is("Access-Accept"));

    let out = d.cli(&["user", "remove", "alice"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let gone = radclient::auth(d.auth_addr, "alice", "second-pass");
    assert!(gone.is("Access-Reject"), "{}", gone.output);
    assert_eq!(gone.attr("Reply-Message").as_deref(), Some("unknown user"));
}

#[test]
fn cli_explains_a_stopped_daemon_and_a_bad_token() {
    let mut d = TestDaemon::start();
    d.add_user("alice", "first-pass");

    // Wrong token: the config names one the daemon does not have.
    let cfg = std::fs::read_to_string(&d.config_path).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("ravpnd.toml"),
        cfg.replace(
            "addr = \"127.0.0.1:0\"\n[auth]",
            &format!(
                "addr = \"{}\"\ntoken = \"0123456789abcdef-wrong\"\n[auth]",
                d.admin_addr
            ),
        ),
    )
    .unwrap();
    let out = cli_in(other.path(), &["user", "list"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the admin token"),
        "{}",
        stderr(&out)
    );

    // Daemon stopped: the CLI says so instead of a raw connection error.
    let admin = d.admin_addr;
    d.terminate();
    std::fs::write(
        other.path().join("ravpnd.toml"),
        cfg.replace(
            "addr = \"127.0.0.1:0\"\n[auth]",
            &format!("addr = \"{admin}\"\ntoken = \"0123456789abcdef-wrong\"\n[auth]"),
        ),
    )
    .unwrap();
    let out = cli_in(other.path(), &["user", "list"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}

#[test]
fn user_names_with_odd_characters_round_trip() {
    let d = TestDaemon::start();
    d.add_vpn_user("DOMAIN\\alice smith", "pass-1234");
    let c = Client::new(d.auth_addr);
    let req = Request::access(1)
        .user("DOMAIN\\alice smith".as_bytes())
        .password("pass-1234", SECRET);
    c.send(&req.build(SECRET));
    assert_eq!(verify(&c.recv().unwrap(), &req, SECRET).code, 2);
    let out = d.cli(&["user", "remove", "DOMAIN\\alice smith"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

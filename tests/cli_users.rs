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

/// Sends `GET path` to the admin API with an optional Authorization header value; returns
/// the whole HTTP answer (status line, headers, body).
fn admin_get(d: &TestDaemon, path: &str, authorization: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.admin_addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// RFC 7235 §2.1: the auth scheme is case-insensitive.
#[test]
fn admin_api_takes_the_bearer_scheme_in_any_case() {
    let d = TestDaemon::start();
    let token = std::fs::read_to_string(d.dir.path().join("data/admin.token")).unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let ok = admin_get(&d, "/api/v1/users", Some(&format!("{scheme} {token}")));
        assert!(ok.starts_with("HTTP/1.1 200"), "{scheme}: {ok}");
    }
}

/// RFC 7235 §3.1: a 401 carries a challenge (`WWW-Authenticate`).
#[test]
fn admin_api_401_challenges_with_www_authenticate() {
    let d = TestDaemon::start();
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic abc"),
    ] {
        let denied = admin_get(&d, "/api/v1/users", auth);
        assert!(denied.starts_with("HTTP/1.1 401"), "{auth:?}: {denied}");
        assert!(
            denied
                .to_ascii_lowercase()
                .contains("\r\nwww-authenticate: bearer\r\n"),
            "{auth:?}: {denied}"
        );
    }
}

/// An import over axum's default 2 MB body limit (30,000 rows of name and mail address,
/// about 2.9 MB of JSON) goes through.
#[test]
fn import_of_more_than_2_mb_succeeds() {
    let d = TestDaemon::start();
    let mut csv = String::from("name,email\n");
    for i in 0..30_000 {
        csv.push_str(&format!("user-{i:06},user-{i:06}@example.com\n"));
    }
    std::fs::write(d.dir.path().join("big.csv"), csv).unwrap();
    let out = d.cli(&["import", "users", "big.csv"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("30000 row(s) imported"),
        "{}",
        stdout(&out)
    );
}

/// Imports a users CSV that must fail; returns the CLI's error.
fn import_fails(d: &TestDaemon, csv: &str) -> String {
    std::fs::write(d.dir.path().join("users.csv"), csv).unwrap();
    d.fails(&["import", "users", "users.csv"])
}

/// An unquoted comma (in a password, say) makes more cells than columns: the row is
/// refused by line instead of its extra cell being dropped.
#[test]
fn csv_import_refuses_rows_with_more_cells_than_columns() {
    let d = TestDaemon::start();
    let e = import_fails(&d, "name,password\nu1,fine-pass\nu2,pass,word\nu4,x,y,z\n");
    assert!(
        e.contains("line 3: 3 cells but 2 columns") && e.contains("line 4: 4 cells but 2 columns"),
        "{e}"
    );
    assert!(!e.contains("line 2"), "{e}");
    assert!(!d.ok(&["user", "list"]).contains("u1"), "nothing imported");
}

/// Spaces in a (quoted) password are part of it; other cells are trimmed.
#[test]
fn csv_import_keeps_spaces_in_passwords() {
    let d = TestDaemon::start();
    std::fs::write(
        d.dir.path().join("spaced.csv"),
        "name,password,email\n u1 ,\"  spaced pw  \", u1@example.com \n",
    )
    .unwrap();
    let out = d.cli(&["import", "users", "spaced.csv"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    d.ok(&[
        "device",
        "add",
        "u1-dev",
        "--type",
        "windows",
        "--no-device-auth",
    ]);
    d.ok(&["assign", "u1", "u1-dev"]);
    let c = Client::new(d.auth_addr);
    for (id, pw, code) in [(1, "  spaced pw  ", 2), (2, "spaced pw", 3)] {
        let req = Request::access(id)
            .user("u1".as_bytes())
            .password(pw, SECRET);
        c.send(&req.build(SECRET));
        assert_eq!(
            verify(&c.recv().unwrap(), &req, SECRET).code,
            code,
            "{pw:?}"
        );
    }
}

/// Local source: a user without any password is imported (passwords may follow with
/// `user passwd`), with a warning naming the line.
#[test]
fn csv_import_warns_of_local_users_without_a_password() {
    let d = TestDaemon::start();
    std::fs::write(
        d.dir.path().join("nopw.csv"),
        "name,password,password_hash\nu5,five-pass,\nu3,,\n",
    )
    .unwrap();
    let out = d.cli(&["import", "users", "nopw.csv"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 row(s) imported"),
        "{}",
        stdout(&out)
    );
    let warn = stderr(&out);
    assert!(
        warn.contains("warning: line 3: user `u3` has no password") && !warn.contains("line 2"),
        "{warn}"
    );
}

#[test]
fn user_names_dot_dotdot_and_dash_are_refused() {
    let d = TestDaemon::start();
    for name in [".", ".."] {
        let out = d.cli(
            &["user", "add", name, "--password-stdin"],
            Some("pass-1234"),
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("`.` and `..` cannot be named"),
            "{name}: {}",
            stderr(&out)
        );
    }
    let e = import_fails(
        &d,
        "name,password\n..,pass-1234\n-bob,pass-1234\nok,pass-1234\n",
    );
    assert!(
        e.contains("line 2: name: user name `..` is not allowed"),
        "{e}"
    );
    assert!(
        e.contains("line 3: name: user name `-bob` must not start with `-`"),
        "{e}"
    );
    assert!(!e.contains("line 4"), "{e}");
}

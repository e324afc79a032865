//! `check-config` and the configuration layering, on the real binary.

use crate::support::daemon::{cli_in, default_config, stderr, stdout};
use crate::support::radclient;
use crate::support::TestDaemon;

fn dir_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ravpnd.toml"), config).unwrap();
    dir
}

#[test]
fn check_config_accepts_the_shipped_files() {
    for name in ["ravpnd.toml", "ravpnd.example.toml"] {
        let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(crate::support::daemon::BIN)
            .args(["check-config", "--config", &path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(stdout(&out).contains("OK"));
    }
}

/// The allocator is jemalloc under the standard symbol names (`malloc`, `calloc`, ...): the
/// optimizer then turns "allocate, then fill with zeros" into `calloc`, which leaves fresh
/// pages untouched. Under prefixed names a release build wrote sled's 20 MiB of zeroed
/// metric buckets at start (docs/PERFORMANCE.md, "The allocator"). Operators tune it with
/// the standard `MALLOC_CONF`, which only an unprefixed jemalloc reads.
#[test]
fn the_allocator_is_jemalloc_under_its_standard_names() {
    let path = format!("{}/config/ravpnd.toml", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(crate::support::daemon::BIN)
        .args(["check-config", "--config", &path])
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Begin jemalloc statistics"),
        "MALLOC_CONF was not read: {}",
        stderr(&out)
    );
}

#[test]
fn check_config_lists_every_problem_with_key_and_file() {
    let dir = dir_with(
        r#"
[admin]
token = "short"
[auth]
source = "azure_ad"
[[clients]]
name = "gw"
address = "10.0.0.1"
secret = "x"
"#,
    );
    let out = cli_in(dir.path(), &["check-config"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for key in ["admin.token", "auth.azure_ad", "clients[0].secret"] {
        assert!(
            err.contains(&format!("ravpnd.toml: {key}:")),
            "{key} missing in:\n{err}"
        );
    }
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn check_config_names_the_key_of_a_type_error() {
    let dir = dir_with("[radius]\nauth_addr = 1812\n");
    let out = cli_in(dir.path(), &["check-config"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("radius.auth_addr"),
        "{}",
        stderr(&out)
    );
    let dir = dir_with("[radius]\nlisten = \"x\"\n");
    let out = cli_in(dir.path(), &["check-config"], None);
    assert!(stderr(&out).contains("listen"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_a_bad_config_with_non_zero_exit() {
    let dir =
        dir_with("[[clients]]\nname = \"gw\"\naddress = \"nonsense\"\nsecret = \"12345678\"\n");
    let out = cli_in(dir.path(), &["serve"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nonsense"), "{}", stderr(&out));
}

#[test]
fn environment_overrides_the_file_and_secret_files_are_read() {
    let dir = dir_with(&default_config(true));
    std::fs::write(dir.path().join("secret.txt"), "from-a-file-0123456789\n").unwrap();
    let env_check = std::process::Command::new(crate::support::daemon::BIN)
        .args(["check-config", "--config", "ravpnd.toml"])
        .current_dir(dir.path())
        .env("RAVPND_RADIUS__MAX_IN_FLIGHT", "0")
        .output()
        .unwrap();
    assert!(!env_check.status.success());
    assert!(
        stderr(&env_check).contains("radius.max_in_flight"),
        "{}",
        stderr(&env_check)
    );

    // A secret can come from a file named by RAVPND_<KEY>_FILE.
    let out = std::process::Command::new(crate::support::daemon::BIN)
        .args(["check-config", "--config", "ravpnd.toml"])
        .current_dir(dir.path())
        .env("RAVPND_ADMIN__TOKEN_FILE", "secret.txt")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = std::process::Command::new(crate::support::daemon::BIN)
        .args(["check-config", "--config", "ravpnd.toml"])
        .current_dir(dir.path())
        .env("RAVPND_ADMIN__TOKEN_FILE", "missing.txt")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("RAVPND_ADMIN__TOKEN_FILE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_running_daemon_honours_environment_overrides() {
    // The file selects no source; the environment selects "local".
    let config = default_config(true).replace("source = \"local\"", "");
    let d = TestDaemon::with_config_env(&config, &[("RAVPND_AUTH__SOURCE", "local")]);
    d.add_vpn_user("alice", "pass-alice");
    let r = radclient::auth(d.auth_addr, "alice", "pass-alice");
    assert!(r.is("Access-Accept"), "{}", r.output);
}

/// figment reads an all-digit environment value as a number: a secret refuses it without
/// echoing it (it would have lost any leading zeros) and takes it quoted.
#[test]
fn secrets_from_the_environment_are_never_echoed_and_digits_need_quotes() {
    let dir = dir_with(&default_config(true));
    for (value, leak) in [
        ("0012345678901234", "12345678"),
        ("1234.5678901234", "5678"),
        ("true", "true"),
    ] {
        let out = std::process::Command::new(crate::support::daemon::BIN)
            .args(["check-config", "--config", "ravpnd.toml"])
            .current_dir(dir.path())
            .env("RAVPND_ADMIN__TOKEN", value)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{value}");
        assert!(err.contains("RAVPND_ADMIN__TOKEN"), "{value}: {err}");
        assert!(!err.contains(leak), "{value} leaked into: {err}");
    }
    // A list entry cannot come from the environment: said so, by the variable's name.
    let out = std::process::Command::new(crate::support::daemon::BIN)
        .args(["check-config", "--config", "ravpnd.toml"])
        .current_dir(dir.path())
        .env("RAVPND_CLIENTS__0__SECRET_FILE", "/nonexistent")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("RAVPND_CLIENTS__0__SECRET_FILE: entries of [[clients]]"),
        "{err}"
    );
    let d = TestDaemon::with_config_env(
        &default_config(true),
        &[("RAVPND_ADMIN__TOKEN", "\"0012345678901234\"")],
    );
    assert!(d.log().contains("ravpnd ready"), "{}", d.log());
    let token = "0012345678901234";
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{}/api/v1/users", d.admin_addr))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "the quoted token, zeros and all"
    );
}

/// `RAVPND_CONFIG` stands in for `--config`, and an argument error's usage line does not
/// show `--config` as if it were required.
#[test]
fn ravpnd_config_is_a_fallback_and_usage_shows_config_as_optional() {
    let dir = dir_with(&default_config(true));
    let run = |args: &[&str], env: &str| {
        std::process::Command::new(crate::support::daemon::BIN)
            .args(args)
            .current_dir(dir.path())
            .env("RAVPND_CONFIG", env)
            .output()
            .unwrap()
    };
    let out = run(&["check-config"], "ravpnd.toml");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ravpnd.toml: OK"), "{}", stdout(&out));
    // --config wins over the environment.
    let out = run(&["check-config", "--config", "missing.toml"], "ravpnd.toml");
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));

    let out = run(&["user", "add"], "ravpnd.toml");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Usage: ravpnd user add <NAME>"),
        "{}",
        stderr(&out)
    );
    let help = run(&["user", "add", "--help"], "ravpnd.toml");
    assert!(
        stdout(&help).contains("[default: $RAVPND_CONFIG"),
        "{}",
        stdout(&help)
    );
}

/// With its stderr gone (the log pipe's reader closed: a supervisor or journal stream that
/// died), the daemon keeps answering and still stops on SIGTERM. Before, every log line
/// panicked (tracing-subscriber reports write errors with `eprintln!`): requests were dropped
/// and the SIGTERM handler died before it could start the shutdown.
#[test]
fn a_broken_log_pipe_neither_drops_requests_nor_blocks_shutdown() {
    use std::io::BufRead;
    let dir = dir_with(&default_config(true));
    let mut child = std::process::Command::new(crate::support::daemon::BIN)
        .args(["serve", "--config", "ravpnd.toml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails: no daemon left behind.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut child = Reap(child);
    let mut line = String::new();
    while !line.contains("ravpnd ready") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the daemon exited");
    }
    let auth: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("radius_auth="))
        .unwrap()
        .parse()
        .unwrap();
    drop(log);
    for _ in 0..2 {
        let r = radclient::send(
            auth,
            "status",
            crate::support::daemon::SECRET,
            "Message-Authenticator=0x00",
        );
        assert!(r.is("Access-Accept"), "{}", r.output);
        let r = radclient::auth(auth, "nobody", "pw");
        assert!(r.is("Access-Reject"), "{}", r.output);
    }
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    for _ in 0..100 {
        if child.0.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no exit within 10 s of SIGTERM");
}

/// Runs `serve` in `dir` and expects it to exit by itself within 10 s; returns its stderr.
fn serve_exits(dir: &std::path::Path) -> String {
    let mut child = std::process::Command::new(crate::support::daemon::BIN)
        .args(["--config", "ravpnd.toml", "serve"])
        .current_dir(dir)
        .env_remove("RAVPND_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success());
            return stderr(&out);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    panic!("serve kept running:\n{}", stderr(&out));
}

/// An emptied or truncated token file would make every admin request fail with 401: the
/// daemon refuses to start instead, saying why.
#[test]
fn serve_refuses_an_empty_or_short_admin_token_file() {
    let dir = dir_with(&default_config(true));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    for short in ["", "\n", "too-short\n"] {
        std::fs::write(dir.path().join("data/admin.token"), short).unwrap();
        let e = serve_exits(dir.path());
        assert!(
            e.contains("admin.token") && e.contains("fewer than 16"),
            "{short:?}: {e}"
        );
    }
}

#[test]
fn a_token_file_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = TestDaemon::start();
    assert!(
        !d.log().contains("admin token file is readable"),
        "{}",
        d.log()
    );
    d.terminate();
    let token = d.dir.path().join("data/admin.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    assert!(
        d.log()
            .contains("the admin token file is readable by group or others"),
        "{}",
        d.log()
    );
}

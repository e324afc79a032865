//! Users survive a clean restart and a crash (SIGKILL right after the CLI returned).

use crate::support::radclient;
use crate::support::TestDaemon;

#[test]
fn users_survive_kill_9_and_restart() {
    let mut d = TestDaemon::start();
    d.add_vpn_user("alice", "pass-alice");
    d.kill9();
    d.restart();
    let r = radclient::auth(d.auth_addr, "alice", "pass-alice");
    assert!(r.is("Access-Accept"), "{}", r.output);

    let out = d.cli(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("pass-two"),
    );
    assert!(out.status.success());
    assert!(d.terminate().success());
    d.restart();
    assert!(radclient::auth(d.auth_addr, "alice", "pass-two").is("Access-Accept"));
    assert!(radclient::auth(d.auth_addr, "alice", "pass-alice").is("Access-Reject"));
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused() {
    let d = TestDaemon::start();
    let out = std::process::Command::new(crate::support::daemon::BIN)
        .args(["--config", "ravpnd.toml", "serve"])
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(err.contains("is another ravpnd running on it?"), "{err}");
}

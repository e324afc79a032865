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

/// A small file system of its own for the store, unmounted when dropped (after the daemon,
/// which must be stopped first).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` where mounting is not permitted (not root, or no CAP_SYS_ADMIN).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Once the store cannot write (its disk filled up), `/readyz` says so until a restart:
/// sled keeps failing even after space is freed, so a ready daemon would Reject every new
/// session while a load balancer kept sending it traffic.
#[test]
fn readyz_reports_a_store_that_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), "4m") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    let config = crate::support::daemon::default_config(true).replace(
        "path = \"data\"",
        &format!("path = \"{}\"", fs.0.join("data").display()),
    );
    let mut d = TestDaemon::with_config(&config);
    assert!(crate::support::daemon::http_get(d.admin_addr, "/readyz").contains(" 200 "));
    // Fill the file system, then write.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", fs.0.join("fill").display()))
        .status();
    let mut refused = false;
    for i in 0..50 {
        let out = d.cli(
            &["user", "add", &format!("u{i}"), "--password-stdin"],
            Some("pw-123456"),
        );
        if !out.status.success() {
            refused = true;
            break;
        }
    }
    assert!(refused, "no write failed on a full disk");
    let body = crate::support::daemon::http_get(d.admin_addr, "/readyz");
    assert!(
        body.contains(" 503 ") && body.contains("store cannot write"),
        "{body}"
    );
    std::fs::remove_file(fs.0.join("fill")).unwrap();
    let body = crate::support::daemon::http_get(d.admin_addr, "/readyz");
    assert!(
        body.contains(" 503 "),
        "still failed after space is freed: {body}"
    );
    d.kill9();
    drop(d);
}

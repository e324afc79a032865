//! A mail relay that accepts the connection and then never says a word (no greeting, no
//! replies): lettre bounds only the connect, so without `[smtp] timeout` around each send
//! the registration-failure mail task, and with it SIGTERM, waited forever.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::daemon::{default_config, TestDaemon};
use crate::support::radclient;

const UID_A: &str = "F1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
const UID_B: &str = "0000C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E0000";

#[test]
fn sigterm_ends_the_daemon_while_the_mail_relay_is_silent() {
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    relay.set_nonblocking(true).unwrap();
    let port = relay.local_addr().unwrap().port();
    let config = default_config(true)
        + &format!(
            "[registration]\nnotify_on_failure = true\nnotify_to = [\"noc@example.com\"]\nbatch_window = \"0s\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"ravpnd@example.com\"\ntimeout = \"1s\"\n"
        );
    let mut d = TestDaemon::with_config(&config);
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    // Her only slot is taken: the failure is queued for mail.
    let uid = format!("mdm-tlv=device-uid={UID_B}");
    let r = radclient::anyconnect(
        d.auth_addr,
        "alice",
        "alice-pass",
        &[&uid, "mdm-tlv=device-platform=win"],
    );
    assert_eq!(
        r.attr("Reply-Message").as_deref(),
        Some("no free device slot to register this device"),
        "{}",
        r.output
    );
    // Wait until the mail task is connected and waiting for the greeting; hold the socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _conn = loop {
        match relay.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the mail task never connected ({e}):\n{}", d.log()),
        }
    };
    // `terminate` fails the test when the daemon is still running 10 s after SIGTERM.
    let started = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

//! Devices: registry rules, assignment, device-ID/MAC binding and auto-registration,
//! with real Cisco-AVPair values through radclient.

use std::time::Duration;

use crate::support::daemon::{default_config, stderr, SECRET};
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient;
use crate::support::smtp::{free_port, SmtpServer};
use crate::support::TestDaemon;

const UID_A: &str = "F1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
const UID_B: &str = "0000C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E0000";

fn win(uid: &str) -> Vec<String> {
    vec![
        format!("mdm-tlv=device-uid={uid}"),
        "mdm-tlv=device-uid-global=5B07C29A9E2E1D5A0C61F34B2F9C1C6E0F9D0E11".into(),
        "mdm-tlv=device-platform=win".into(),
        "mdm-tlv=device-mac=a1-b2-c3-d4-e5-f6".into(),
        "mdm-tlv=device-type=VMware, Inc. VMware Virtual Platform".into(),
        "mdm-tlv=ac-user-agent=AnyConnect Windows 4.10.07073".into(),
        "audit-session-id=0a0a0a0a000010006569a5b1".into(),
    ]
}

fn connect(d: &TestDaemon, user: &str, pw: &str, pairs: &[String]) -> radclient::Reply {
    let p: Vec<&str> = pairs.iter().map(String::as_str).collect();
    radclient::anyconnect(d.auth_addr, user, pw, &p)
}

fn reply_message(r: &radclient::Reply) -> String {
    r.attr("Reply-Message").unwrap_or_default()
}

#[test]
fn first_connect_registers_then_accepts_and_other_serials_are_refused() {
    let d = TestDaemon::start();
    d.add_user("alice", "alice-pass");
    d.ok(&["device", "add", "alice-laptop", "--type", "windows"]);

    let none = connect(&d, "alice", "alice-pass", &win(UID_A));
    assert_eq!(
        reply_message(&none),
        "device not assigned",
        "{}",
        none.output
    );

    d.ok(&["assign", "alice", "alice-laptop"]);
    let first = connect(&d, "alice", "alice-pass", &win(UID_A));
    assert!(first.is("Access-Reject"), "{}", first.output);
    assert!(
        reply_message(&first).contains("device registered"),
        "{}",
        first.output
    );
    assert!(d.ok(&["device", "show", "alice-laptop"]).contains(UID_A));

    let second = connect(&d, "alice", "alice-pass", &win(UID_A));
    assert!(second.is("Access-Accept"), "{}", second.output);
    // Serial IDs compare case-insensitively.
    let lower = connect(&d, "alice", "alice-pass", &win(&UID_A.to_lowercase()));
    assert!(lower.is("Access-Accept"), "{}", lower.output);

    let other = connect(&d, "alice", "alice-pass", &win(UID_B));
    assert!(other.is("Access-Reject"));
    assert_eq!(
        reply_message(&other),
        "no free device slot to register this device"
    );

    // The password is still checked first.
    let bad = connect(&d, "alice", "wrong-pass", &win(UID_A));
    assert_eq!(reply_message(&bad), "bad password");

    // Without a device ID the request is refused.
    let bare = radclient::auth(d.auth_addr, "alice", "alice-pass");
    assert_eq!(
        reply_message(&bare),
        "no device id presented",
        "{}",
        bare.output
    );

    // Reset: the next first connection registers again.
    d.ok(&["device", "reset-serial", "alice-laptop"]);
    let again = connect(&d, "alice", "alice-pass", &win(UID_B));
    assert!(
        reply_message(&again).contains("device registered"),
        "{}",
        again.output
    );
    assert!(connect(&d, "alice", "alice-pass", &win(UID_B)).is("Access-Accept"));
    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"reject\",reason=\"device_registered\",type=\"access\"}"),
        2.0
    );

    // Another user's first connection with alice's device id (in another case) is refused:
    // no device of bob's proves it, and the serial index names alice's.
    d.add_user("bob", "bob-pass");
    d.ok(&["device", "add", "bob-laptop", "--type", "windows"]);
    d.ok(&["assign", "bob", "bob-laptop"]);
    let taken = connect(&d, "bob", "bob-pass", &win(&UID_B.to_lowercase()));
    assert_eq!(
        reply_message(&taken),
        "device id already registered to another device",
        "{}",
        taken.output
    );
    assert!(!d.ok(&["device", "show", "bob-laptop"]).contains(UID_B));

    assert_eq!(d.metric("ravpnd_registrations_total"), 2.0);
    let failed = |reason: &str| {
        d.metric(&format!(
            "ravpnd_registration_failures_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(failed("no_free_device_slot"), 1.0, "alice's third serial");
    assert_eq!(failed("serial_in_use"), 1.0, "bob with alice's serial");
}

#[test]
fn without_auto_registration_an_unknown_serial_is_a_mismatch() {
    let config = default_config(true) + "[registration]\nauto_register = false\n";
    let d = TestDaemon::with_config(&config);
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    assert!(connect(&d, "alice", "alice-pass", &win(UID_A)).is("Access-Accept"));
    let wrong = connect(&d, "alice", "alice-pass", &win(UID_B));
    assert_eq!(reply_message(&wrong), "device id mismatch");
}

#[test]
fn mac_method_disabled_devices_and_device_auth_off() {
    let d = TestDaemon::start();
    d.add_user("bob", "bob-pass-1");
    d.ok(&[
        "device",
        "add",
        "bob-desk",
        "--type",
        "windows",
        "--method",
        "mac",
        "--mac",
        "A1:B2:C3:D4:E5:F6",
    ]);
    d.ok(&["assign", "bob", "bob-desk"]);
    // win() presents the MAC as a1-b2-c3-d4-e5-f6.
    let r = connect(&d, "bob", "bob-pass-1", &win(UID_A));
    assert!(r.is("Access-Accept"), "{}", r.output);
    let other_mac: Vec<String> = win(UID_A)
        .into_iter()
        .map(|p| p.replace("a1-b2-c3-d4-e5-f6", "a1-b2-c3-d4-e5-00"))
        .collect();
    assert_eq!(
        reply_message(&connect(&d, "bob", "bob-pass-1", &other_mac)),
        "no free device slot to register this device"
    );

    d.ok(&["device", "set", "bob-desk", "--disable"]);
    assert_eq!(
        reply_message(&connect(&d, "bob", "bob-pass-1", &win(UID_A))),
        "device disabled"
    );
    d.ok(&["device", "set", "bob-desk", "--enable"]);
    assert!(connect(&d, "bob", "bob-pass-1", &win(UID_A)).is("Access-Accept"));

    // Device authentication off: any request of that platform type is accepted.
    d.add_user("carol", "carol-pass");
    d.ok(&[
        "device",
        "add",
        "carol-tablet",
        "--type",
        "android",
        "--no-device-auth",
    ]);
    d.ok(&["assign", "carol", "carol-tablet"]);
    let android = [
        "mdm-tlv=device-platform=android".to_string(),
        format!("mdm-tlv=device-uid={UID_B}"),
    ];
    assert!(connect(&d, "carol", "carol-pass", &android).is("Access-Accept"));
    // A Windows client is not that Android tablet.
    let r = connect(&d, "carol", "carol-pass", &win(UID_A));
    assert!(r.is("Access-Reject"), "{}", r.output);
}

#[test]
fn registry_rules_are_enforced_with_clear_errors() {
    let d = TestDaemon::start();
    let e = d.fails(&["device", "add", "bad name!", "--type", "windows"]);
    assert!(e.contains("name:"), "{e}");
    let e = d.fails(&[
        "device",
        "add",
        "phone",
        "--type",
        "ios",
        "--method",
        "mac",
        "--mac",
        "12:34:56:78:90:ab",
    ]);
    assert!(e.contains("method: mac is not allowed for ios"), "{e}");
    let e = d.fails(&["device", "add", "pc", "--type", "toaster"]);
    assert!(e.contains("type `toaster`"), "{e}");
    let e = d.fails(&[
        "device", "add", "pc", "--type", "windows", "--mac", "12:34:56",
    ]);
    assert!(e.contains("mac:"), "{e}");
    let e = d.fails(&[
        "device", "add", "pc", "--type", "windows", "--method", "mac",
    ]);
    assert!(e.contains("mac: required"), "{e}");

    d.ok(&[
        "device",
        "add",
        "pc1",
        "--type",
        "windows",
        "--mac",
        "12:34:56:78:90:AB",
    ]);
    assert!(d
        .ok(&["device", "show", "pc1"])
        .contains("12:34:56:78:90:ab"));
    let e = d.fails(&["device", "add", "pc1", "--type", "mac"]);
    assert!(e.contains("already exists"), "{e}");
    d.ok(&[
        "device", "add", "pc2", "--type", "windows", "--serial", "SN-1",
    ]);
    let e = d.fails(&[
        "device", "add", "pc3", "--type", "windows", "--serial", "sn-1",
    ]);
    assert!(e.contains("already registered to device `pc2`"), "{e}");

    d.add_user("alice", "alice-pass");
    d.ok(&["assign", "alice", "pc1"]);
    let e = d.fails(&["device", "remove", "pc1"]);
    assert!(e.contains("unassign it first"), "{e}");
    d.ok(&["unassign", "alice", "pc1"]);
    d.ok(&["device", "remove", "pc1"]);
    let e = d.fails(&["device", "show", "pc1"]);
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn device_limit_is_two_by_default_and_can_be_raised_per_user() {
    let d = TestDaemon::start();
    d.add_user("alice", "alice-pass");
    d.add_user("bob", "bob-pass-1");
    for n in ["d1", "d2", "d3"] {
        d.ok(&["device", "add", n, "--type", "windows"]);
    }
    d.ok(&["assign", "alice", "d1"]);
    d.ok(&["assign", "alice", "d2"]);
    let e = d.fails(&["assign", "alice", "d3"]);
    assert!(e.contains("limit"), "{e}");
    let e = d.fails(&["assign", "bob", "d1"]);
    assert!(e.contains("assigned to user `alice`"), "{e}");
    d.ok(&["user", "set", "alice", "--max-devices", "3"]);
    d.ok(&["assign", "alice", "d3"]);
    assert!(d.ok(&["user", "list"]).contains("d1,d2,d3"));
    // Removing the user frees the devices.
    d.ok(&["user", "remove", "alice"]);
    d.ok(&["assign", "bob", "d1"]);
}

/// `[devices] max_per_user` is read at each assignment and import, so a reload raising it
/// takes effect; a restart-only change in the same file is named in the log.
#[test]
fn device_limit_raised_by_a_reload_is_enforced() {
    let d = TestDaemon::with_config(&(default_config(true) + "[devices]\nmax_per_user = 1\n"));
    d.add_user("alice", "alice-pass");
    for n in ["d1", "d2"] {
        d.ok(&["device", "add", n, "--type", "windows"]);
    }
    d.ok(&["assign", "alice", "d1"]);
    let e = d.fails(&["assign", "alice", "d2"]);
    assert!(e.contains("limit"), "{e}");

    d.write_config(
        &(default_config(true) + "[devices]\nmax_per_user = 2\n[auth.local]\ncache_ttl = \"1m\"\n"),
    );
    d.reload();
    d.wait_for_log("configuration reloaded", 1);
    d.ok(&["assign", "alice", "d2"]);
    // The import checks the same limit: a third device is one too many at 2.
    std::fs::write(
        d.dir.path().join("d3.csv"),
        "name,type,user\nd3,windows,alice\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "d3.csv"]);
    assert!(e.contains("limit of 2 device(s)"), "{e}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("auth.local") && l.contains("takes effect after a restart")),
        "{log}"
    );
}

#[test]
fn concurrent_first_connects_register_exactly_one_serial() {
    let d = TestDaemon::start();
    d.add_user("alice", "alice-pass");
    d.ok(&["device", "add", "laptop", "--type", "windows"]);
    d.ok(&["assign", "alice", "laptop"]);

    // Many clients with different serials race for the one free device.
    let serials: Vec<String> = (0..8).map(|i| format!("{i:064X}")).collect();
    let handles: Vec<_> = serials
        .iter()
        .enumerate()
        .map(|(i, serial)| {
            let addr = d.auth_addr;
            let serial = serial.clone();
            std::thread::spawn(move || {
                let mut req = Request::access(i as u8)
                    .user(b"alice")
                    .password("alice-pass", SECRET);
                for pair in win(&serial) {
                    let mut vsa = 9u32.to_be_bytes().to_vec();
                    vsa.push(1);
                    vsa.push(2 + pair.len() as u8);
                    vsa.extend(pair.as_bytes());
                    req = req.attr(26, &vsa);
                }
                let c = Client::new(addr);
                c.send(&req.build(SECRET));
                let resp = c.recv().expect("answered");
                verify(&resp, &req, SECRET).reply_message.unwrap()
            })
        })
        .collect();
    let replies: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let registered = replies
        .iter()
        .filter(|m| m.contains("device registered"))
        .count();
    assert_eq!(registered, 1, "{replies:?}");
    let show = d.ok(&["device", "show", "laptop"]);
    assert_eq!(
        serials.iter().filter(|s| show.contains(s.as_str())).count(),
        1,
        "{show}"
    );
}

#[test]
fn registration_survives_kill_9_right_after_the_reject() {
    let mut d = TestDaemon::start();
    d.add_user("alice", "alice-pass");
    d.ok(&["device", "add", "laptop", "--type", "windows"]);
    d.ok(&["assign", "alice", "laptop"]);
    let first = connect(&d, "alice", "alice-pass", &win(UID_A));
    assert!(reply_message(&first).contains("device registered"));
    d.kill9();
    d.restart();
    assert!(d.ok(&["device", "show", "laptop"]).contains(UID_A));
    assert!(connect(&d, "alice", "alice-pass", &win(UID_A)).is("Access-Accept"));
}

/// Users moved from another system keep their passwords: the CSV carries argon2 PHC strings.
#[test]
fn csv_import_of_argon2_hashes() {
    let d = TestDaemon::start();
    let dir = d.dir.path();
    let hash = ravpnd::auth::local::hash_password(b"carried-over").unwrap();
    std::fs::write(
        dir.join("bad.csv"),
        format!("name,password,password_hash\nann,x-pass-123,\"{hash}\"\nben,,$2b$12$notargon2\n"),
    )
    .unwrap();
    let e = d.fails(&["import", "users", "bad.csv"]);
    assert!(e.contains("line 2: give password or password_hash"), "{e}");
    assert!(e.contains("line 3: password_hash:"), "{e}");
    std::fs::write(
        dir.join("users.csv"),
        format!("name,password_hash\nann,\"{hash}\"\n"),
    )
    .unwrap();
    assert!(d
        .ok(&["import", "users", "users.csv"])
        .contains("1 row(s) imported"));
    d.ok(&["device", "add", "laptop", "--type", "windows"]);
    d.ok(&["assign", "ann", "laptop"]);
    assert!(connect(&d, "ann", "carried-over", &win(UID_A)).is("Access-Reject"));
    assert!(connect(&d, "ann", "carried-over", &win(UID_A)).is("Access-Accept"));
    let wrong = connect(&d, "ann", "wrong-password", &win(UID_A));
    assert_eq!(reply_message(&wrong), "bad password");
}

#[test]
fn csv_import_all_or_nothing_with_line_numbers() {
    let d = TestDaemon::start();
    let dir = d.dir.path();
    std::fs::write(
        dir.join("users.csv"),
        "name,password\nalice,alice-pass\nbob,\n",
    )
    .unwrap();
    assert!(d
        .ok(&["import", "users", "users.csv"])
        .contains("2 row(s) imported"));

    std::fs::write(
        dir.join("bad.csv"),
        "name,type,method,serial,mac,device_auth,enabled,user\n\
         good1,windows,,,,yes,yes,alice\n\
         bad name,windows,,,,,,\n\
         phone,ios,mac,,12:34:56:78:90:ab,,,\n\
         good2,mac,serial,SN1,,,,nobody\n\
         good3,android,,sn1,,maybe,,\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "bad.csv"]);
    assert!(e.contains("line 6: device_auth"), "{e}");
    // With line 6 fixed, the daemon reports every remaining bad row (a short one too: its
    // missing cells are empty, not a parse error hiding the rest).
    std::fs::write(
        dir.join("bad.csv"),
        "name,type,method,serial,mac,device_auth,enabled,user\n\
         good1,windows,,,,yes,yes,alice\n\
         bad name,windows,,,,,,\n\
         phone,ios,mac,,12:34:56:78:90:ab,,,\n\
         good2,mac,serial,SN1,,,,nobody\n\
         good3,android,,sn1,,no,,\n\
         short\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "bad.csv"]);
    for expect in [
        "line 7: type",
        "line 3: name:",
        "line 4: method: mac is not allowed",
        "line 5: user `nobody` not found",
        "line 6: serial `sn1` also on line 5",
    ] {
        assert!(e.contains(expect), "{expect} in:\n{e}");
    }
    assert!(!e.contains("line 2"), "{e}");
    assert!(
        d.ok(&["device", "list"]).lines().count() == 1,
        "nothing imported"
    );

    std::fs::write(
        dir.join("good.csv"),
        "name,type,serial,user\ngood1,windows,,alice\ngood2,mac,SN1,bob\ngood3,android,,\n",
    )
    .unwrap();
    assert!(d
        .ok(&["import", "devices", "good.csv"])
        .contains("3 row(s) imported"));
    let list = d.ok(&["device", "list"]);
    assert!(list.contains("good2") && list.contains("SN1"), "{list}");
    let users = d.ok(&["user", "list"]);
    assert!(
        users.contains("good1") && users.contains("good2"),
        "{users}"
    );

    let e = d.fails(&["import", "devices", "missing.csv"]);
    assert!(e.contains("cannot read"), "{e}");
    std::fs::write(dir.join("cols.csv"), "name,colour\nx,red\n").unwrap();
    let e = d.fails(&["import", "devices", "cols.csv"]);
    assert!(
        e.contains("unknown column `colour`") && e.contains("`type` is missing"),
        "{e}"
    );
}

fn mail_config(smtp_port: u16) -> String {
    default_config(true)
        + &format!(
            "[registration]\nnotify_on_failure = true\nnotify_to = [\"vpn-admins@example.com\", \"noc@example.com\"]\nbatch_window = \"1s\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\nfrom = \"ravpnd@example.com\"\nretry_for = \"2m\"\n"
        )
}

#[test]
fn registration_failure_mail_reaches_every_address() {
    let smtp = SmtpServer::start();
    let d = TestDaemon::with_config(&mail_config(smtp.port));
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    // Two failures in a burst: one mail.
    for _ in 0..2 {
        let r = connect(&d, "alice", "alice-pass", &win(UID_B));
        assert_eq!(
            reply_message(&r),
            "no free device slot to register this device"
        );
    }
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.messages().len(), 1, "a burst is batched into one mail");
    let m = &mails[0];
    for part in [
        "vpn-admins@example.com",
        "noc@example.com",
        "user:     alice",
        UID_B,
        "platform: win",
        "no free device slot",
        "client:   loopback",
        "time:     20",
    ] {
        assert!(m.contains(part), "{part} in:\n{m}");
    }
    assert!(m.contains("2 device registration failure(s)"), "{m}");
}

/// Notifications turned on by a reload are mailed: the mail task follows the config.
#[test]
fn registration_failure_mail_turned_on_by_a_reload_is_sent() {
    let smtp = SmtpServer::start();
    let on = mail_config(smtp.port);
    let d = TestDaemon::with_config(
        &on.replace("notify_on_failure = true", "notify_on_failure = false"),
    );
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    d.write_config(&on);
    d.reload();
    d.wait_for_log("configuration reloaded", 1);
    let r = connect(&d, "alice", "alice-pass", &win(UID_B));
    assert_eq!(
        reply_message(&r),
        "no free device slot to register this device"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    assert!(mails[0].contains("user:     alice"), "{}", mails[0]);
}

#[test]
fn mail_server_down_does_not_delay_answers_and_mail_follows_when_it_is_back() {
    let port = free_port();
    let d = TestDaemon::with_config(&mail_config(port));
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    // The relay is down: the reject still comes back at once (radclient waits 2 s, one try).
    for _ in 0..3 {
        let r = connect(&d, "alice", "alice-pass", &win(UID_B));
        assert_eq!(
            reply_message(&r),
            "no free device slot to register this device",
            "{}",
            r.output
        );
    }
    assert!(connect(&d, "alice", "alice-pass", &win(UID_A)).is("Access-Accept"));
    std::thread::sleep(Duration::from_secs(2));
    let smtp = SmtpServer::start_on(port);
    let mails = smtp.wait_for(1, Duration::from_secs(40));
    assert!(mails[0].contains("user:     alice"), "{}", mails[0]);
    assert!(d.log().contains("will retry"), "{}", d.log());
    d.wait_for_metric("ravpnd_mail_sent_total", 1.0, Duration::from_secs(10));
}

#[test]
fn check_config_wants_addresses_and_a_relay_for_notifications() {
    let config = default_config(true)
        + "[registration]\nnotify_on_failure = true\nnotify_to = [\"not an address\"]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ravpnd.toml"), config).unwrap();
    let out = crate::support::daemon::cli_in(dir.path(), &["check-config"], None);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("registration.notify_to[0]") && e.contains("smtp.host"),
        "{e}"
    );
}

#[test]
fn device_set_without_a_change_is_refused() {
    let d = TestDaemon::start();
    d.ok(&["device", "add", "pc1", "--type", "windows"]);
    let e = d.fails(&["device", "set", "pc1"]);
    assert!(e.contains("nothing to change"), "{e}");
    d.ok(&["device", "set", "pc1", "--disable"]);
    assert!(d.ok(&["device", "show", "pc1"]).contains("enabled:     no"));
}

/// `device list` keeps its columns under their headers with a 64-character serial ID.
#[test]
fn device_list_columns_fit_long_serials() {
    let d = TestDaemon::start();
    d.add_user("alice", "alice-pass");
    let serial = "F1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
    d.ok(&[
        "device", "add", "pc1", "--type", "windows", "--serial", serial,
    ]);
    d.ok(&["device", "add", "pc2", "--type", "windows"]);
    d.ok(&["assign", "alice", "pc1"]);
    let list = d.ok(&["device", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    let column = lines[0].find("USER").unwrap();
    let row = lines.iter().find(|l| l.starts_with("pc1")).unwrap();
    assert_eq!(row.find("alice"), Some(column), "{list}");
    let other = lines.iter().find(|l| l.starts_with("pc2")).unwrap();
    assert_eq!(&other[column..column + 1], "-", "{list}");
}

/// `.` and `..` vanish from URLs (the CLI could never name the device again) and a leading
/// `-` reads as an option: refused in add and import, with the reason.
#[test]
fn device_names_dot_dotdot_and_dash_are_refused() {
    let d = TestDaemon::start();
    for name in [".", ".."] {
        let e = d.fails(&["device", "add", name, "--type", "windows"]);
        assert!(
            e.contains(&format!("name: `{name}` is not allowed")) && e.contains("URLs"),
            "{name}: {e}"
        );
    }
    let e = d.fails(&["device", "add", "--type", "windows", "--", "-x"]);
    assert!(e.contains("must not start with `-`"), "{e}");
    std::fs::write(
        d.dir.path().join("dots.csv"),
        "name,type\n.,windows\nok,windows\n-x,mac\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "dots.csv"]);
    assert!(e.contains("line 2: name: `.` is not allowed"), "{e}");
    assert!(
        e.contains("line 4: name: `-x` must not start with `-`"),
        "{e}"
    );
    assert!(!e.contains("line 3"), "{e}");
    assert_eq!(
        d.ok(&["device", "list"]).lines().count(),
        1,
        "nothing added"
    );
}

/// A MAC already stored is reported on its line, like a stored serial.
#[test]
fn csv_import_reports_a_stored_mac_on_its_line() {
    let d = TestDaemon::start();
    d.ok(&[
        "device",
        "add",
        "d1",
        "--type",
        "windows",
        "--method",
        "mac",
        "--mac",
        "12:34:56:78:90:ab",
    ]);
    std::fs::write(
        d.dir.path().join("macs.csv"),
        "name,type,method,mac\n\
         d2,windows,mac,aa:bb:cc:dd:ee:ff\n\
         d3,mac,mac,12-34-56-78-90-AB\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "macs.csv"]);
    assert!(
        e.contains("line 3: mac `12:34:56:78:90:ab` is already used by device `d1`"),
        "{e}"
    );
    assert!(!e.contains("line 2"), "{e}");
}

/// The CLI's own cell checks (a yes/no) and the daemon's (a user that does not exist) are
/// reported together, in file order, and nothing is imported.
#[test]
fn csv_import_reports_cli_and_daemon_problems_in_one_run() {
    let d = TestDaemon::start();
    std::fs::write(
        d.dir.path().join("mixed.csv"),
        "name,type,device_auth,enabled,user\n\
         ok1,windows,yes,yes,\n\
         bad1,windows,maybe,yes,\n\
         bad2,windows,no,yes,nobody\n\
         bad3,windows,yes,perhaps,nobody\n",
    )
    .unwrap();
    let e = d.fails(&["import", "devices", "mixed.csv"]);
    let expected = [
        "line 3: device_auth: `maybe` is not yes or no",
        "line 4: user `nobody` not found",
        "line 5: enabled: `perhaps` is not yes or no",
        "line 5: user `nobody` not found",
    ];
    let mut at = 0;
    for expect in expected {
        let found = e[at..].find(expect);
        assert!(found.is_some(), "{expect} (in order) in:\n{e}");
        at += found.unwrap();
    }
    assert!(e.contains("4 bad row(s); nothing was imported"), "{e}");
    assert!(!e.contains("line 2"), "{e}");
    assert_eq!(
        d.ok(&["device", "list"]).lines().count(),
        1,
        "nothing added"
    );
}

/// A notification not mailed before a stop (the relay was down) is kept in the store and
/// mailed after the next start.
#[test]
fn registration_failure_mail_survives_a_restart() {
    let port = free_port();
    let mut d = TestDaemon::with_config(&mail_config(port));
    d.add_user("alice", "alice-pass");
    d.ok(&[
        "device", "add", "laptop", "--type", "windows", "--serial", UID_A,
    ]);
    d.ok(&["assign", "alice", "laptop"]);
    let r = connect(&d, "alice", "alice-pass", &win(UID_B));
    assert_eq!(
        reply_message(&r),
        "no free device slot to register this device"
    );
    d.wait_for_log("will retry", 1);
    assert!(d.terminate().success());
    let smtp = SmtpServer::start_on(port);
    d.restart();
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    assert!(
        mails[0].contains("user:     alice") && mails[0].contains(UID_B),
        "{}",
        mails[0]
    );
    // Mailed once: not again after another restart.
    assert!(d.terminate().success());
    d.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp.messages().len(), 1);
}

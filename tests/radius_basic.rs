//! The basic RADIUS exchange against radclient and raw packets.

use std::time::Duration;

use ravpnd::radius::packet::Frame;

use crate::support::daemon::{default_config, SECRET};
use crate::support::packet::{verify, Client, Request};
use crate::support::radclient;
use crate::support::TestDaemon;

#[test]
fn radclient_accepts_good_password_and_rejects_bad_and_unknown() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "correct horse");

    let ok = radclient::auth(d.auth_addr, "alice", "correct horse");
    assert!(ok.is("Access-Accept"), "{}", ok.output);
    assert!(ok.attr("Message-Authenticator").is_some(), "{}", ok.output);

    let bad = radclient::auth(d.auth_addr, "alice", "wrong horse");
    assert!(bad.is("Access-Reject"), "{}", bad.output);
    assert_eq!(bad.attr("Reply-Message").as_deref(), Some("bad password"));

    let unknown = radclient::auth(d.auth_addr, "mallory", "correct horse");
    assert!(unknown.is("Access-Reject"), "{}", unknown.output);
    assert_eq!(
        unknown.attr("Reply-Message").as_deref(),
        Some("unknown user")
    );

    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"accept\",reason=\"accepted\",type=\"access\"}"),
        1.0
    );
    assert_eq!(
        d.metric(
            "ravpnd_requests_total{outcome=\"reject\",reason=\"bad_password\",type=\"access\"}"
        ),
        1.0
    );
    assert!(d.log().contains("access decision"));
    assert!(
        !d.log().contains("correct horse"),
        "password reached the log"
    );
}

#[test]
fn missing_message_authenticator_is_dropped_when_required() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let r = radclient::send(
        d.auth_addr,
        "auth",
        SECRET,
        "User-Name=alice,User-Password=pw-alice-1",
    );
    assert_eq!(r.code, None, "{}", r.output);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"missing_message_authenticator\"}"),
        1.0
    );
    // Said at warn level (a gateway that never sends one would fail without a word).
    let log = d.log();
    assert!(
        log.contains("WARN") && log.contains("dropped a request without Message-Authenticator"),
        "{log}"
    );
}

#[test]
fn missing_message_authenticator_is_answered_when_not_required() {
    let d = TestDaemon::with_config(&default_config(false));
    d.add_vpn_user("alice", "pw-alice-1");
    let r = radclient::send(
        d.auth_addr,
        "auth",
        SECRET,
        "User-Name=alice,User-Password=pw-alice-1",
    );
    assert!(r.is("Access-Accept"), "{}", r.output);
    // Message-Authenticator is added to every response all the same.
    assert!(r.attr("Message-Authenticator").is_some(), "{}", r.output);
}

#[test]
fn wrong_shared_secret_gets_no_valid_answer() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let r = radclient::send(
        d.auth_addr,
        "auth",
        "not-the-secret",
        "User-Name=alice,User-Password=pw-alice-1,Message-Authenticator=0x00",
    );
    assert_eq!(r.code, None, "{}", r.output);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"bad_message_authenticator\"}"),
        1.0
    );
}

/// An unknown name costs an argon2 run (against the decoy), as a wrong password does (against
/// the user's hash), so reply timing does not tell who exists; a repeat of either is refused
/// from the cache, with none.
#[test]
fn an_unknown_name_costs_an_argon2_run_as_a_wrong_password_does() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "correct horse");
    let checks = |against: &str| {
        d.metric(&format!(
            "ravpnd_password_hash_checks_total{{against=\"{against}\"}}"
        ))
    };
    assert!(d
        .metrics()
        .contains("ravpnd_password_hash_checks_total{against=\"decoy\"} 0"));
    for _ in 0..2 {
        for user in ["alice", "mallory"] {
            let r = radclient::auth(d.auth_addr, user, "wrong horse");
            assert!(r.is("Access-Reject"), "{}", r.output);
        }
    }
    assert_eq!((checks("user"), checks("decoy")), (1.0, 1.0));
}

#[test]
fn unknown_source_address_gets_nothing() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let req = Request::access(1)
        .user(b"alice")
        .password("pw-alice-1", SECRET);
    let stranger = Client::from("127.0.0.9", d.auth_addr);
    stranger.send(&req.build(SECRET));
    assert_eq!(stranger.recv_within(Duration::from_millis(700)), None);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"unknown_client\"}"),
        1.0
    );
    // The same request from the known address is answered.
    let known = Client::new(d.auth_addr);
    known.send(&req.build(SECRET));
    let resp = known.recv().expect("answer from known client");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
}

#[test]
fn status_server_is_answered() {
    let d = TestDaemon::start();
    let r = radclient::send(d.auth_addr, "status", SECRET, "Message-Authenticator=0x00");
    assert!(r.is("Access-Accept"), "{}", r.output);
    // RFC 5997: without Message-Authenticator it is silently discarded.
    let c = Client::new(d.auth_addr);
    let bare = Request::status(3).without_message_authenticator();
    c.send(&bare.build(SECRET));
    assert_eq!(c.recv_within(Duration::from_millis(500)), None);
}

#[test]
fn retransmitted_duplicate_gets_identical_response_and_is_processed_once() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let c = Client::new(d.auth_addr);
    let req = Request::access(42)
        .user(b"alice")
        .password("pw-alice-1", SECRET);
    let bytes = req.build(SECRET);
    c.send(&bytes);
    let first = c.recv().expect("first answer");
    c.send(&bytes);
    let second = c.recv().expect("answer to the retransmission");
    assert_eq!(first, second);
    assert_eq!(verify(&first, &req, SECRET).code, 2);
    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"accept\",reason=\"accepted\",type=\"access\"}"),
        1.0
    );
    assert_eq!(d.metric("ravpnd_duplicates_answered_total"), 1.0);

    // A new request (new authenticator, same id) is processed afresh.
    let again = Request::access(42)
        .user(b"alice")
        .password("pw-alice-1", SECRET);
    assert_ne!(again.authenticator, req.authenticator);
    c.send(&again.build(SECRET));
    assert_eq!(verify(&c.recv().unwrap(), &again, SECRET).code, 2);
    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"accept\",reason=\"accepted\",type=\"access\"}"),
        2.0
    );

    // The cache keeps what a response cannot be made again from and signs it again: a large
    // answer (echoed Proxy-States, kept outside its entry) and an Accounting-Response (signed
    // otherwise) come back the same bytes too.
    let large = (0..4).fold(
        Request::access(43)
            .user(b"alice")
            .password("pw-alice-1", SECRET),
        |r, i| r.attr(33, &[i; 200]),
    );
    let acct = Request::accounting(44)
        .attr(40, &3u32.to_be_bytes())
        .attr(44, b"s1")
        .user(b"alice")
        .attr(33, b"state")
        .with_message_authenticator();
    for (req, to) in [(&large, d.auth_addr), (&acct, d.acct_addr)] {
        let c = Client::new(to);
        let bytes = req.build(SECRET);
        c.send(&bytes);
        let first = c.recv().expect("first answer");
        c.send(&bytes);
        assert_eq!(c.recv().expect("answer to the retransmission"), first);
    }
    assert_eq!(d.metric("ravpnd_duplicates_answered_total"), 3.0);
    assert_eq!(d.metric("ravpnd_accounting_total{status=\"interim\"}"), 1.0);
    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"accept\",reason=\"accepted\",type=\"access\"}"),
        3.0
    );
}

#[test]
fn no_source_selected_rejects_with_reason() {
    let config = default_config(true).replace("source = \"local\"", "");
    let d = TestDaemon::with_config(&config);
    let r = radclient::auth(d.auth_addr, "alice", "whatever1");
    assert!(r.is("Access-Reject"), "{}", r.output);
    assert_eq!(
        r.attr("Reply-Message").as_deref(),
        Some("no authentication source selected")
    );
}

#[test]
fn health_and_readiness() {
    use crate::support::daemon::http_get;
    let d = TestDaemon::start();
    assert!(http_get(d.admin_addr, "/healthz").contains("200 OK"));
    assert!(http_get(d.admin_addr, "/readyz").contains("200 OK"));
    let idle = TestDaemon::with_config(&default_config(true).replace("source = \"local\"", ""));
    let r = http_get(idle.admin_addr, "/readyz");
    assert!(
        r.contains("503") && r.contains("no authentication source selected"),
        "{r}"
    );
}

#[test]
fn graceful_shutdown_on_sigterm() {
    let mut d = TestDaemon::start();
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(d.log().contains("stopped"));
}

/// RFC 2865 §5.33: a proxy's Proxy-States come back unmodified and in order, after the
/// Message-Authenticator, in accepts, rejects and Accounting-Responses.
#[test]
fn proxy_states_are_echoed_in_order() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let states = |output: &str| -> Vec<String> {
        output
            .lines()
            .skip_while(|l| !l.starts_with("Received "))
            .filter_map(|l| l.trim().strip_prefix("Proxy-State = "))
            .map(str::to_owned)
            .collect()
    };
    for (pw, code) in [("pw-alice-1", "Access-Accept"), ("nope", "Access-Reject")] {
        let r = radclient::send(
            d.auth_addr,
            "auth",
            SECRET,
            &format!("User-Name=alice,User-Password={pw},Message-Authenticator=0x00,Proxy-State=0x01020304,Proxy-State=0xaabb"),
        );
        assert!(r.is(code), "{}", r.output);
        assert_eq!(states(&r.output), ["0x01020304", "0xaabb"], "{}", r.output);
    }
    let r = radclient::send(
        d.acct_addr,
        "acct",
        SECRET,
        "Acct-Status-Type=Interim-Update,Acct-Session-Id=\"s1\",User-Name=alice,Proxy-State=0x0102",
    );
    assert!(r.is("Accounting-Response"), "{}", r.output);
    assert_eq!(states(&r.output), ["0x0102"], "{}", r.output);
    // The raw response: the Message-Authenticator first, then the state.
    let c = Client::new(d.auth_addr);
    let req = Request::access(5)
        .user(b"alice")
        .password("pw-alice-1", SECRET)
        .attr(33, b"state-1");
    c.send(&req.build(SECRET));
    let resp = c.recv().expect("answered");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
    assert_eq!(&resp[38..47], b"\x21\x09state-1");
    // As many as fit a response are echoed; more are refused, not answered truncated.
    let many = |id, n| {
        (0..n).fold(
            Request::access(id)
                .user(b"alice")
                .password("pw-alice-1", SECRET),
            |r, _| r.attr(33, &[7; 253]),
        )
    };
    let req = many(6, 11);
    c.send(&req.build(SECRET));
    let resp = c.recv().expect("answered");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
    c.send(&many(7, 12).build(SECRET));
    assert_eq!(c.recv_within(Duration::from_millis(700)), None);
}

/// An Accounting-Request's Message-Authenticator, when sent, is checked (its Request
/// Authenticator alone does not make a wrong one right).
#[test]
fn accounting_with_a_wrong_message_authenticator_is_dropped() {
    let d = TestDaemon::start();
    let c = Client::new(d.acct_addr);
    let req = |id| {
        Request::accounting(id)
            .attr(40, &3u32.to_be_bytes())
            .attr(44, b"s1")
            .user(b"alice")
            .with_message_authenticator()
    };
    c.send(&req(1).build(SECRET));
    assert!(c.recv().is_some(), "a right one is answered");
    let mut bad = req(2).build(SECRET);
    let ma = Frame::parse(&bad).unwrap().message_authenticator.unwrap();
    bad[ma] ^= 1;
    ravpnd::radius::crypto::sign_accounting_request(&mut bad, SECRET.as_bytes());
    c.send(&bad);
    assert_eq!(c.recv_within(Duration::from_millis(700)), None);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"bad_message_authenticator\"}"),
        1.0
    );
}

/// RFC 3579 §3.2: an Access-Request with an EAP-Message and no Message-Authenticator is
/// discarded, also from a client that does not require one otherwise.
#[test]
fn eap_without_message_authenticator_is_dropped() {
    let d = TestDaemon::with_config(&default_config(false));
    let c = Client::new(d.auth_addr);
    let req = Request::access(1)
        .user(b"alice")
        .attr(79, &[2, 0, 0, 10, 1, b'a', b'l', b'i', b'c', b'e'])
        .without_message_authenticator();
    c.send(&req.build(SECRET));
    assert_eq!(c.recv_within(Duration::from_millis(700)), None);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"missing_message_authenticator\"}"),
        1.0
    );
}

//! Hostile datagrams are counted and dropped; good requests are still answered afterwards.

use std::time::Duration;

use crate::support::daemon::SECRET;
use crate::support::packet::{verify, Client, Request};
use crate::support::TestDaemon;

fn good(c: &Client, id: u8) {
    let req = Request::access(id)
        .user(b"alice")
        .password("pw-alice-1", SECRET);
    c.send(&req.build(SECRET));
    let resp = c.recv().expect("good request answered");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
}

fn with_len(mut p: Vec<u8>, len: u16) -> Vec<u8> {
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let c = Client::new(d.auth_addr);
    good(&c, 1);

    let base = Request::access(9)
        .user(b"alice")
        .password("pw-alice-1", SECRET)
        .build(SECRET);
    let n = base.len() as u16;
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],                         // empty
        base[..10].to_vec(),            // truncated header
        with_len(base.clone(), n + 40), // length larger than datagram
        with_len(base.clone(), 19),     // length below the header size
        with_len(base.clone(), 5000),   // length above the maximum
    ];
    // Attributes of length 0 and 1, and one running past the end.
    for bad_attr in [&[1u8, 0][..], &[1, 1], &[1, 200, b'x']] {
        let mut p = base[..20].to_vec();
        p.extend_from_slice(bad_attr);
        let len = p.len() as u16;
        junk.push(with_len(p, len));
    }
    // A 4097-byte datagram claiming 4097 octets.
    let mut big = base[..20].to_vec();
    big.resize(4097, 0);
    junk.push(with_len(big, 4097));
    // 4096 bytes of random-looking noise with a plausible header.
    let mut noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    noise[0] = 1;
    junk.push(with_len(noise, 4096));

    for j in &junk {
        c.send(j);
    }
    assert_eq!(
        c.recv_within(Duration::from_millis(500)),
        None,
        "junk is never answered"
    );
    good(&c, 2);
    assert_eq!(
        d.metric("ravpnd_dropped_total{cause=\"malformed\"}"),
        junk.len() as f64,
        "{}",
        d.metrics()
    );
}

#[test]
fn maximum_size_packet_is_answered() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let c = Client::new(d.auth_addr);
    // Fill to exactly 4096 octets with Class attributes (type 25), which we ignore.
    let mut req = Request::access(5)
        .user(b"alice")
        .password("pw-alice-1", SECRET);
    let base_len = req.build(SECRET).len();
    let mut room = 4096 - base_len;
    while room > 0 {
        let mut take = room.min(255);
        if room - take == 1 {
            take -= 1; // leave 2: the smallest attribute
        }
        req = req.attr(25, &vec![b'c'; take - 2]);
        room -= take;
    }
    let bytes = req.build(SECRET);
    assert_eq!(bytes.len(), 4096);
    c.send(&bytes);
    let resp = c.recv().expect("4096-byte request answered");
    assert_eq!(verify(&resp, &req, SECRET).code, 2);
}

#[test]
fn non_utf8_user_name_is_rejected_and_daemon_keeps_going() {
    let d = TestDaemon::start();
    d.add_vpn_user("alice", "pw-alice-1");
    let c = Client::new(d.auth_addr);
    let req = Request::access(7)
        .user(&[0xff, 0xfe, b'a', 0xc3])
        .password("pw-alice-1", SECRET);
    c.send(&req.build(SECRET));
    let r = verify(&c.recv().expect("answered"), &req, SECRET);
    assert_eq!(r.code, 3);
    assert_eq!(r.reply_message.as_deref(), Some("invalid user name"));
    good(&c, 8);
    assert_eq!(
        d.metric("ravpnd_requests_total{outcome=\"reject\",reason=\"invalid_user_name\",type=\"access\"}"),
        1.0
    );
}

#[test]
fn broken_pap_and_missing_attributes_are_rejected_with_reasons() {
    let d = TestDaemon::start();
    let c = Client::new(d.auth_addr);
    let cases: Vec<(Request, &str)> = vec![
        (
            Request::access(1).password("x", SECRET),
            "missing user name",
        ),
        (
            Request::access(2).user(b"alice"),
            "missing password (only PAP is supported)",
        ),
        (
            Request::access(3).user(b"alice").attr(2, &[0; 15]),
            "malformed password attribute",
        ),
    ];
    for (req, why) in cases {
        c.send(&req.build(SECRET));
        let r = verify(&c.recv().expect("answered"), &req, SECRET);
        assert_eq!((r.code, r.reply_message.as_deref()), (3, Some(why)));
    }
}

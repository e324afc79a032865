//! Micro-benchmarks of the per-request protocol work: framing + Message-Authenticator
//! verification, PAP decoding, response signing, the full decode of a realistic AnyConnect
//! request (radius crate + Cisco-AVPairs) and the encoding of the reply.

mod common;

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use radius::core::packet::Packet;
use ravpnd::config::GatewayKind;
use ravpnd::policy::proxy::ProxyPush;
use ravpnd::policy::{Decision, Reason, ReplyPlan};
use ravpnd::radius::packet::{Attributes, Frame};
use ravpnd::radius::{crypto, dict};
use ravpnd::reply::{DnsConfig, Original, ReplyContext};
use ravpnd::store::{Access, AccessDevice, DeviceType};

const SECRET: &[u8] = b"testing123";

fn request() -> Vec<u8> {
    let auth = [0x42u8; 16];
    let mut p = vec![1, 7, 0, 0];
    p.extend(auth);
    p.extend([1, 7]);
    p.extend(b"alice");
    let hidden = crypto::encode_pap(b"correct horse", SECRET, &auth);
    p.extend([2, 2 + hidden.len() as u8]);
    p.extend(&hidden);
    p.extend([80, 18]);
    p.extend([0; 16]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let off = p.len() - 16;
    crypto::sign_request(&mut p, off, SECRET);
    p
}

fn benches(c: &mut Criterion) {
    let req = request();
    c.bench_function("frame+verify_message_authenticator", |b| {
        b.iter(|| {
            let f = Frame::parse(black_box(&req)).unwrap();
            crypto::verify_request_message_authenticator(
                f.bytes,
                f.message_authenticator.unwrap(),
                SECRET,
            )
        })
    });
    let auth = [0x42u8; 16];
    let hidden = crypto::encode_pap(b"correct horse", SECRET, &auth);
    c.bench_function("pap_decode", |b| {
        b.iter(|| crypto::decode_pap(black_box(&hidden), SECRET, &auth).unwrap())
    });
    let mut resp = vec![2, 7, 0, 38];
    resp.extend([0; 16]);
    resp.extend([80, 18]);
    resp.extend([0; 16]);
    c.bench_function("sign_response", |b| {
        b.iter(|| crypto::sign_response(black_box(&mut resp), &auth, Some(22), SECRET))
    });
}

/// What an ASA sends, read in place (and the radius crate's full decode, for comparison),
/// and the reply built from a decision.
fn anyconnect(c: &mut Criterion) {
    let req = common::anyconnect_request("user0", &common::serial_of(0), 7, [0x42; 16]);
    c.bench_function("anyconnect_frame+verify_message_authenticator", |b| {
        b.iter(|| {
            let f = Frame::parse(black_box(&req)).unwrap();
            crypto::verify_request_message_authenticator(
                f.bytes,
                f.message_authenticator.unwrap(),
                common::SECRET,
            )
        })
    });
    c.bench_function("anyconnect_packet_decode", |b| {
        b.iter(|| Packet::decode(black_box(&req), common::SECRET).unwrap())
    });
    c.bench_function("anyconnect_cisco_avpairs", |b| {
        b.iter(|| dict::cisco_avpairs(Attributes::of(black_box(&req))))
    });
    // What the listener does for an Access-Request (read in place, no `Packet`).
    c.bench_function("anyconnect_user+avpairs+pap", |b| {
        b.iter(|| {
            let req = black_box(&req);
            let user = Attributes::first(req, dict::USER_NAME).unwrap();
            let pairs = dict::cisco_avpairs(Attributes::of(req));
            let hidden = Attributes::first(req, dict::USER_PASSWORD).unwrap();
            let pw = crypto::decode_pap(hidden, common::SECRET, &[0x42; 16]).unwrap();
            (user, pairs, pw)
        })
    });
    let original = Original::of(&Frame::parse(&req).unwrap(), common::SECRET);
    let dns = DnsConfig {
        primary: Some([10, 0, 0, 53].into()),
        secondary: Some([10, 0, 0, 54].into()),
    };
    let ctx = ReplyContext {
        kind: GatewayKind::Asa,
        dns: &dns,
        interim_interval: Duration::from_secs(600),
    };
    // No address here (see benches/pipeline.rs for an Accept with a pool address).
    let laptop = AccessDevice::new("laptop", DeviceType::Windows, Some("SER1"), None).unwrap();
    let user = Access::with_devices("alice", None, [laptop]);
    let accept = Decision::Accept(ReplyPlan {
        user,
        device: 0,
        address: None,
        proxy: ProxyPush::Nothing,
    });
    c.bench_function("reply_access_accept_dns", |b| {
        b.iter(|| ravpnd::reply::access_response(black_box(&original), &accept, &ctx))
    });
    let reject = Decision::Reject(Reason::BadPassword);
    c.bench_function("reply_access_reject", |b| {
        b.iter(|| ravpnd::reply::access_response(black_box(&original), &reject, &ctx))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = group;
    config = config();
    targets = benches, anyconnect
}
criterion_main!(group);

//! Micro-benchmarks of the per-request protocol work: framing + Message-Authenticator
//! verification, PAP decoding, and response signing.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ravpnd::radius::crypto;
use ravpnd::radius::packet::Frame;

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

criterion_group!(group, benches);
criterion_main!(group);

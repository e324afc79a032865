//! The whole request path in process: datagram → framing → authenticators → dedup →
//! decode → policy (store, argon2, device check, auto-registration, proxy, address lease) or
//! accounting (lease bookkeeping) → signed reply.
//!
//! One `Handler` (built by `setup.rs` from a validated config over a temporary store: user
//! `alice` with password `PASSWORD` and three assigned devices, a small address pool, DNS,
//! a managed proxy, an ASA and an ocserv client) and one tokio runtime are built once. Each
//! input becomes a datagram according to its first byte, so that most inputs get past the
//! cheap checks instead of dying at the framing or the authenticators:
//!
//! | `data[0] & 3` | datagram |
//! |---|---|
//! | 0 | the rest, as is |
//! | 1 | the rest, with the length field fixed |
//! | 2 | the rest, length fixed, then signed: Message-Authenticator (appended when absent), or the Accounting-Request authenticator |
//! | 3 | a request built from the rest (`Unstructured`): Access-Request (known or fuzzed user, PAP-hidden right or fuzzed password, AnyConnect AVPairs), Accounting-Request (status, session, pool address) or Status-Server, plus raw attributes; signed |
//!
//! `data[0] & 4` picks the client (ASA requiring Message-Authenticator, or ocserv without),
//! `data[0] & 8` the port (authentication or accounting).
//!
//! Properties: no panic; every response is a well-framed reply of the right code to this
//! request (same identifier), with the Message-Authenticator first and the authenticators
//! valid under the client's secret; the same datagram sent again gets the same bytes (from the
//! duplicate cache, which keeps part of a response and signs it again).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use ravpnd::radius::listener::{Handler, Port};
use ravpnd::radius::packet::{Frame, HEADER_LEN, MAX_LEN};
use ravpnd::radius::{crypto, dict};

mod setup;

const SECRET: &str = "fuzz-shared-secret";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
/// The serial registered on `laptop`; `phone` has none until a request registers one.
const SERIAL: &str = "F1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
/// The MAC `desk` proves itself with.
const MAC: &str = "a1-b2-c3-d4-e5-f6";

struct World {
    rt: tokio::runtime::Runtime,
    handler: Handler,
    /// The ASA (requires Message-Authenticator) and the ocserv (does not).
    sources: [SocketAddr; 2],
    /// `FUZZ_TRACE_OUTCOMES=1`: print each input's outcome (`fuzz/run --outcomes`).
    trace: bool,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let handler = rt.block_on(setup::build(SECRET, USER, PASSWORD, SERIAL, MAC));
        World {
            rt,
            handler,
            sources: [
                "127.0.0.1:40000".parse().expect("address"),
                "127.0.0.2:40000".parse().expect("address"),
            ],
            trace: std::env::var_os("FUZZ_TRACE_OUTCOMES").is_some(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let source = w.sources[usize::from(mode & 4 != 0)];
    let port = if mode & 8 == 0 { Port::Auth } else { Port::Acct };
    let datagram = match mode & 3 {
        0 => rest.to_vec(),
        1 => fix_length(rest.to_vec()),
        2 => sign(fix_length(rest.to_vec())),
        _ => build(&mut Unstructured::new(rest), port),
    };
    let live = w.handler.live();
    let nas = live.nas.lookup(source.ip()).expect("both sources are clients").clone();
    // As the listener's worker does, on the datagram before any check.
    w.handler.prefetch([&datagram[..]]);
    let response = w
        .rt
        .block_on(w.handler.handle_datagram(&datagram, source, &nas, port, &live));
    match response {
        Some(response) => {
            check_response(&datagram, &response, port);
            let again = w
                .rt
                .block_on(w.handler.handle_datagram(&datagram, source, &nas, port, &live));
            assert_eq!(
                again.as_deref(),
                Some(&response[..]),
                "a retransmission got another answer than {}",
                hex(&response)
            );
            if w.trace {
                eprintln!("outcome: {}", describe(&response));
            }
        }
        None if w.trace => eprintln!("outcome: dropped ({})", why_dropped(&datagram, port)),
        None => {}
    }
});

/// A response must answer this request and verify under the shared secret.
fn check_response(request: &[u8], response: &[u8], port: Port) {
    let req = Frame::parse(request).expect("a request that got an answer was well framed");
    let resp = Frame::parse(response)
        .unwrap_or_else(|e| panic!("malformed response ({e}): {}", hex(response)));
    assert_eq!(resp.bytes.len(), response.len(), "response has trailing bytes");
    assert_eq!(resp.identifier(), req.identifier(), "identifier not echoed");
    let codes: &[u8] = match port {
        Port::Auth => &[dict::code::ACCESS_ACCEPT, dict::code::ACCESS_REJECT],
        Port::Acct => &[dict::code::ACCOUNTING_RESPONSE],
    };
    assert!(
        codes.contains(&resp.code()),
        "response code {} to request code {} on {port:?}",
        resp.code(),
        req.code()
    );
    let first_ma = HEADER_LEN + 2;
    assert_eq!(
        resp.message_authenticator,
        Some(first_ma),
        "Message-Authenticator missing or not the first attribute"
    );
    let secret = SECRET.as_bytes();
    if req.code() == dict::code::ACCOUNTING_REQUEST {
        // Signing the response again must not change a byte.
        let mut resigned = response.to_vec();
        crypto::sign_accounting_response(&mut resigned, &req.authenticator(), Some(first_ma), secret);
        assert_eq!(resigned, response, "Accounting-Response authenticators do not verify");
    } else {
        assert!(
            crypto::verify_response(response, &req.authenticator(), Some(first_ma), secret),
            "response authenticators do not verify"
        );
    }
}

/// Sets the length field to the datagram's length (capped at the RADIUS maximum).
fn fix_length(mut d: Vec<u8>) -> Vec<u8> {
    if d.len() < HEADER_LEN {
        d.resize(HEADER_LEN, 0);
    }
    d.truncate(MAX_LEN);
    let len = d.len() as u16;
    d[2..4].copy_from_slice(&len.to_be_bytes());
    d
}

/// Signs a framed datagram as its code asks: an Accounting-Request gets its Request
/// Authenticator, anything else its Message-Authenticator (appended when absent and there is
/// room).
fn sign(mut d: Vec<u8>) -> Vec<u8> {
    let Ok(frame) = Frame::parse(&d) else {
        return d;
    };
    if frame.code() == dict::code::ACCOUNTING_REQUEST {
        crypto::sign_accounting_request(&mut d, SECRET.as_bytes());
        return d;
    }
    let off = match frame.message_authenticator {
        Some(off) => off,
        None if d.len() + 18 <= MAX_LEN => {
            push_attr(&mut d, dict::MESSAGE_AUTHENTICATOR, &[0; 16]);
            d = fix_length(d);
            d.len() - 16
        }
        None => return d,
    };
    crypto::sign_request(&mut d, off, SECRET.as_bytes());
    d
}

/// A request a gateway could send, with the fuzzer choosing each part.
fn build(u: &mut Unstructured<'_>, port: Port) -> Vec<u8> {
    let code = if u.ratio(1, 16).unwrap_or(false) {
        dict::code::STATUS_SERVER
    } else if port == Port::Acct {
        dict::code::ACCOUNTING_REQUEST
    } else {
        dict::code::ACCESS_REQUEST
    };
    let identifier: u8 = u.arbitrary().unwrap_or(0);
    let authenticator: [u8; 16] = u.arbitrary().unwrap_or([0; 16]);
    let mut d = vec![code, identifier, 0, 0];
    d.extend_from_slice(&authenticator);
    let add_ma = !u.ratio(1, 16).unwrap_or(false);

    let mut attrs = 0;
    while !u.is_empty() && attrs < 40 {
        attrs += 1;
        let Ok(kind) = u.int_in_range(0u8..=14) else {
            break;
        };
        let (typ, value): (u8, Vec<u8>) = match kind {
            0 => (dict::USER_NAME, USER.into()),
            1 => (dict::USER_NAME, bytes(u)),
            2 => (
                dict::USER_PASSWORD,
                crypto::encode_pap(PASSWORD.as_bytes(), SECRET.as_bytes(), &authenticator),
            ),
            3 => {
                let pw = bytes(u);
                let pw = &pw[..pw.len().min(128)];
                (
                    dict::USER_PASSWORD,
                    crypto::encode_pap(pw, SECRET.as_bytes(), &authenticator),
                )
            }
            4 => (dict::USER_PASSWORD, bytes(u)),
            5 | 6 => (dict::VENDOR_SPECIFIC, cisco_avpair(u, kind == 5)),
            7 => {
                // A raw Vendor-Specific: vendor id then sub-attributes as the fuzzer writes them.
                let mut v = if u.ratio(3, 4).unwrap_or(true) {
                    dict::VENDOR_CISCO.to_be_bytes().to_vec()
                } else {
                    u.arbitrary::<[u8; 4]>().unwrap_or_default().to_vec()
                };
                v.extend(bytes(u));
                (dict::VENDOR_SPECIFIC, v)
            }
            8 => (dict::MESSAGE_AUTHENTICATOR, vec![0; 16]),
            9 => {
                // Acct-Status-Type: the ones the daemon knows, or anything.
                let known = [1u32, 2, 3, 7, 8];
                let v = if u.ratio(7, 8).unwrap_or(true) {
                    *u.choose(&known).unwrap_or(&1)
                } else {
                    u.arbitrary().unwrap_or(0)
                };
                let mut b = v.to_be_bytes().to_vec();
                if u.ratio(1, 16).unwrap_or(false) {
                    b.pop(); // a malformed integer
                }
                (dict::ACCT_STATUS_TYPE, b)
            }
            10 => {
                let sessions: [&[u8]; 3] = [b"session-1", b"session-2", b""];
                let s = u.choose(&sessions).map(|s| s.to_vec()).unwrap_or_default();
                (dict::ACCT_SESSION_ID, s)
            }
            11 => (dict::ACCT_SESSION_ID, bytes(u)),
            12 => {
                // Framed-IP-Address: in the pool (10.8.0.0/29), or anything of any length.
                let v = if u.ratio(3, 4).unwrap_or(true) {
                    vec![10, 8, 0, u.int_in_range(0u8..=8).unwrap_or(2)]
                } else {
                    bytes(u)
                };
                (dict::FRAMED_IP_ADDRESS, v)
            }
            _ => (u.arbitrary().unwrap_or(0), bytes(u)),
        };
        push_attr(&mut d, typ, &value);
    }
    let needs_ma = add_ma && code != dict::code::ACCOUNTING_REQUEST;
    if needs_ma
        && Frame::parse(&fix_length(d.clone())).is_ok_and(|f| f.message_authenticator.is_none())
    {
        push_attr(&mut d, dict::MESSAGE_AUTHENTICATOR, &[0; 16]);
    }
    sign(fix_length(d))
}

fn bytes(u: &mut Unstructured<'_>) -> Vec<u8> {
    let len = u.int_in_range(0usize..=64).unwrap_or(0);
    u.bytes(len).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A Cisco-AVPair VSA (vendor 9, type 1) with an AnyConnect `mdm-tlv` key.
fn cisco_avpair(u: &mut Unstructured<'_>, known_values: bool) -> Vec<u8> {
    const KEYS: [&str; 7] = [
        "device-uid",
        "device-uid-global",
        "device-mac",
        "device-platform",
        "device-type",
        "ac-user-agent",
        "",
    ];
    let key = *u.choose(&KEYS).unwrap_or(&"device-uid");
    let value: Vec<u8> = if known_values {
        let values: [&[u8]; 9] = [
            SERIAL.as_bytes(),
            b"0000000000000000000000000000000000000000000000000000000000000000",
            b"1111111111111111111111111111111111111111111111111111111111111111",
            MAC.as_bytes(),
            b"win",
            b"android",
            b"apple-ios",
            b"mac-intel",
            b"AnyConnect Windows 4.10.07061",
        ];
        u.choose(&values).map(|v| v.to_vec()).unwrap_or_default()
    } else {
        bytes(u)
    };
    let mut s = if key.is_empty() {
        Vec::new()
    } else {
        format!("mdm-tlv={key}=").into_bytes()
    };
    s.extend(value);
    s.truncate(253 - 6 - 2);
    let mut v = dict::VENDOR_CISCO.to_be_bytes().to_vec();
    v.push(dict::CISCO_AVPAIR);
    v.push(2 + s.len() as u8);
    v.extend(s);
    v
}

fn push_attr(d: &mut Vec<u8>, typ: u8, value: &[u8]) {
    let value = &value[..value.len().min(253)];
    if d.len() + 2 + value.len() > MAX_LEN {
        return;
    }
    d.push(typ);
    d.push(2 + value.len() as u8);
    d.extend_from_slice(value);
}

/// The listener's first check a dropped datagram fails, recomputed here (for tracing).
fn why_dropped(d: &[u8], port: Port) -> &'static str {
    let Ok(f) = Frame::parse(d) else {
        return "framing";
    };
    let secret = SECRET.as_bytes();
    match (port, f.code()) {
        (Port::Acct, dict::code::ACCOUNTING_REQUEST) => {
            if crypto::verify_accounting_request(f.bytes, secret) {
                "accounting not recorded, or a later check"
            } else {
                "bad Accounting-Request authenticator"
            }
        }
        (Port::Auth, dict::code::ACCESS_REQUEST) | (_, dict::code::STATUS_SERVER) => {
            match f.message_authenticator {
                Some(off) if !crypto::verify_request_message_authenticator(f.bytes, off, secret) => {
                    "bad Message-Authenticator"
                }
                None => "no Message-Authenticator (when required), or a later check",
                _ => "a later check",
            }
        }
        _ => "code not taken on this port",
    }
}

/// `Access-Accept "accepted"`: the code and Reply-Message of a response.
fn describe(response: &[u8]) -> String {
    let code = match response[0] {
        dict::code::ACCESS_ACCEPT => "Access-Accept",
        dict::code::ACCESS_REJECT => "Access-Reject",
        dict::code::ACCOUNTING_RESPONSE => "Accounting-Response",
        _ => "other",
    };
    let decoded = radius::core::packet::Packet::decode(response, SECRET.as_bytes()).ok();
    let message = decoded
        .as_ref()
        .and_then(|p| p.lookup(dict::REPLY_MESSAGE).map(|a| a.encode_bytes()))
        .map(|m| format!(" {:?}", String::from_utf8_lossy(&m)))
        .unwrap_or_default();
    let framed = decoded
        .as_ref()
        .and_then(|p| p.lookup(dict::FRAMED_IP_ADDRESS).map(|a| a.encode_bytes()))
        .map(|a| format!(" with {}", a.iter().map(u8::to_string).collect::<Vec<_>>().join(".")))
        .unwrap_or_default();
    format!("{code}{message}{framed}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

//! What goes on the wire: AnyConnect-like Access-Requests built from per-user templates, and
//! the client-side check of every response (identifier, Response Authenticator,
//! Message-Authenticator wherever the server put it).

use ravpnd::radius::crypto;
use ravpnd::radius::packet::{Frame, HEADER_LEN};

const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const NAS_IP_ADDRESS: u8 = 4;
const REPLY_MESSAGE: u8 = 18;
const VENDOR_SPECIFIC: u8 = 26;
const CALLING_STATION_ID: u8 = 31;
const NAS_PORT_TYPE: u8 = 61;
const MESSAGE_AUTHENTICATOR: u8 = 80;
/// RFC 2865 §5.41: NAS-Port-Type = Virtual.
const NAS_PORT_TYPE_VIRTUAL: u32 = 5;
const VENDOR_CISCO: u32 = 9;
const CISCO_AVPAIR: u8 = 1;

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;

/// The serial ID user `i` presents (`mdm-tlv=device-uid=`): 64 upper-case hex digits.
pub fn serial_of(i: u32) -> String {
    format!("{i:064X}")
}

fn attr(out: &mut Vec<u8>, typ: u8, value: &[u8]) {
    assert!(value.len() <= 253, "attribute value too long");
    out.push(typ);
    out.push(2 + value.len() as u8);
    out.extend_from_slice(value);
}

fn cisco_avpair(out: &mut Vec<u8>, value: &str) {
    let mut v = VENDOR_CISCO.to_be_bytes().to_vec();
    attr(&mut v, CISCO_AVPAIR, value.as_bytes());
    attr(out, VENDOR_SPECIFIC, &v);
}

/// The parts of one user's request that do not change between requests.
struct UserTemplate {
    /// User-Name.
    before_password: Vec<u8>,
    /// NAS-IP-Address, NAS-Port-Type, Calling-Station-Id, the Cisco-AVPairs.
    after_password: Vec<u8>,
}

/// Builds the Access-Requests of `user0..userN-1`, as an ASA sends them for AnyConnect on
/// Windows: PAP, NAS-Port-Type = Virtual, device platform and device UID, and a
/// Message-Authenticator (last, where an ASA puts it).
pub struct RequestBuilder {
    users: Vec<UserTemplate>,
    password: Vec<u8>,
    secret: Vec<u8>,
}

impl RequestBuilder {
    /// Users `user{first}..user{first + users - 1}`.
    pub fn new(first: u32, users: u32, password: &str, secret: &str) -> Self {
        let users = (first..first.saturating_add(users))
            .map(|i| {
                let mut before = Vec::new();
                attr(&mut before, USER_NAME, format!("user{i}").as_bytes());
                let mut after = Vec::new();
                attr(&mut after, NAS_IP_ADDRESS, &[127, 0, 0, 1]);
                attr(
                    &mut after,
                    NAS_PORT_TYPE,
                    &NAS_PORT_TYPE_VIRTUAL.to_be_bytes(),
                );
                // A documentation address (RFC 5737): only an attribute value, never a target.
                attr(&mut after, CALLING_STATION_ID, b"198.51.100.7");
                cisco_avpair(&mut after, "mdm-tlv=device-platform=win");
                cisco_avpair(&mut after, &format!("mdm-tlv=device-uid={}", serial_of(i)));
                UserTemplate {
                    before_password: before,
                    after_password: after,
                }
            })
            .collect();
        Self {
            users,
            password: password.as_bytes().to_vec(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    pub fn users(&self) -> u32 {
        self.users.len() as u32
    }

    /// Writes the signed request of `user` with `id` and `authenticator` into `out`.
    pub fn build(&self, out: &mut Vec<u8>, user: u32, id: u8, authenticator: &[u8; 16]) {
        let t = &self.users[user as usize];
        out.clear();
        out.extend_from_slice(&[ACCESS_REQUEST, id, 0, 0]);
        out.extend_from_slice(authenticator);
        out.extend_from_slice(&t.before_password);
        let hidden = crypto::encode_pap(&self.password, &self.secret, authenticator);
        attr(out, USER_PASSWORD, &hidden);
        out.extend_from_slice(&t.after_password);
        out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
        out.extend_from_slice(&[0; 16]);
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let ma = out.len() - 16;
        crypto::sign_request(out, ma, &self.secret);
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// What a response turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reject,
    Invalid(&'static str),
}

/// Checks a response against the request it answers. The Message-Authenticator is found by
/// walking the attributes ([`Frame::parse`]), so a server may put it anywhere.
pub fn check_response(
    resp: &[u8],
    id: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
    require_message_authenticator: bool,
) -> Outcome {
    let Ok(frame) = Frame::parse(resp) else {
        return Outcome::Invalid("framing");
    };
    if frame.identifier() != id {
        return Outcome::Invalid("identifier");
    }
    let ma = frame.message_authenticator;
    if ma.is_none() && require_message_authenticator {
        return Outcome::Invalid("no Message-Authenticator");
    }
    if !crypto::verify_response(frame.bytes, request_authenticator, ma, secret) {
        return Outcome::Invalid("authenticator");
    }
    match frame.code() {
        ACCESS_ACCEPT => Outcome::Accept,
        ACCESS_REJECT => Outcome::Reject,
        _ => Outcome::Invalid("code"),
    }
}

/// The Reply-Message of a response, if any (for the first reject's diagnostics).
pub fn reply_message(resp: &[u8]) -> Option<String> {
    let frame = Frame::parse(resp).ok()?;
    let b = frame.bytes;
    let mut i = HEADER_LEN;
    while i + 2 <= b.len() {
        let (t, l) = (b[i], b[i + 1] as usize);
        if l < 2 || i + l > b.len() {
            return None;
        }
        if t == REPLY_MESSAGE {
            return Some(String::from_utf8_lossy(&b[i + 2..i + l]).into_owned());
        }
        i += l;
    }
    None
}

/// The Reply-Message of the null responder's rejects (`--reject-every`).
pub const NULL_REJECT_MESSAGE: &str = "null responder: rejected (--reject-every)";

/// The null responder's whole job for one datagram: frame check, Message-Authenticator
/// verification, PAP decode, and a signed Access-Accept with the Message-Authenticator first
/// and a Reply-Message (the shape of ravpnd's answer) — or, with `reject`, the same as an
/// Access-Reject with [`NULL_REJECT_MESSAGE`]. `None`: drop it.
pub fn null_answer(req: &[u8], secret: &[u8], reject: bool, out: &mut Vec<u8>) -> Option<()> {
    let frame = Frame::parse(req).ok()?;
    if frame.code() != ACCESS_REQUEST {
        return None;
    }
    let ma = frame.message_authenticator?;
    if !crypto::verify_request_message_authenticator(frame.bytes, ma, secret) {
        return None;
    }
    let authenticator = frame.authenticator();
    let b = frame.bytes;
    let mut i = HEADER_LEN;
    let mut password_ok = false;
    while i < b.len() {
        let (t, l) = (b[i], b[i + 1] as usize);
        if t == USER_PASSWORD {
            password_ok = crypto::decode_pap(&b[i + 2..i + l], secret, &authenticator)
                .is_ok_and(|pw| !pw.is_empty());
        }
        i += l;
    }
    if !password_ok {
        return None;
    }
    out.clear();
    let (code, message) = if reject {
        (ACCESS_REJECT, NULL_REJECT_MESSAGE.as_bytes())
    } else {
        (ACCESS_ACCEPT, &b"accepted"[..])
    };
    out.extend_from_slice(&[code, frame.identifier(), 0, 0]);
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    out.extend_from_slice(&[0; 16]);
    attr(out, REPLY_MESSAGE, message);
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    crypto::sign_response(out, &authenticator, Some(HEADER_LEN + 2), secret);
    Some(())
}

//! Decision → response attributes. Message-Authenticator goes first in every response
//! (RFC 3579; BlastRADIUS hardening asks for it first so it cannot be displaced).

use radius::core::avp::AVP;
use radius::core::code::Code;
use radius::core::packet::Packet;

use crate::policy::{Decision, Reason};
use crate::radius::{crypto, dict, packet::HEADER_LEN};

/// Offset of the Message-Authenticator value when it is the first attribute.
const FIRST_MA_OFFSET: usize = HEADER_LEN + 2;

/// Encodes and signs the response to `request` (decoded with the client's secret).
pub fn access_response(request: &Packet, decision: &Decision) -> Vec<u8> {
    let (code, reason) = match decision {
        Decision::Accept(_plan) => (Code::AccessAccept, Reason::Accepted),
        Decision::Reject(reason) => (Code::AccessReject, *reason),
    };
    let mut resp = request.make_response_packet(code);
    resp.add(AVP::from_bytes(dict::MESSAGE_AUTHENTICATOR, &[0; 16]));
    resp.add(AVP::from_string(dict::REPLY_MESSAGE, reason.message()));
    sign(request, resp)
}

/// RFC 5997 §3: Status-Server is answered with an Access-Accept carrying a
/// Message-Authenticator.
pub fn status_response(request: &Packet) -> Vec<u8> {
    let mut resp = request.make_response_packet(Code::AccessAccept);
    resp.add(AVP::from_bytes(dict::MESSAGE_AUTHENTICATOR, &[0; 16]));
    resp.add(AVP::from_string(dict::REPLY_MESSAGE, "ravpnd is alive"));
    sign(request, resp)
}

fn sign(request: &Packet, resp: Packet) -> Vec<u8> {
    let mut bytes = resp
        .encode()
        .expect("our responses are small and well formed");
    let req_auth: [u8; 16] = request
        .get_authenticator()
        .as_slice()
        .try_into()
        .expect("decoded requests have 16-octet authenticators");
    crypto::sign_response(
        &mut bytes,
        &req_auth,
        Some(FIRST_MA_OFFSET),
        request.get_secret(),
    );
    bytes
}

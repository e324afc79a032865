//! The RADIUS cryptography the `radius` crate lacks or does allocation-heavily:
//! Message-Authenticator (RFC 3579 §3.2), response signing (RFC 2865 §3) and PAP (RFC 2865 §5.2).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::packet::HEADER_LEN;

type HmacMd5 = Hmac<Md5>;

/// An HMAC-MD5 instance keyed with `secret`. Keying hashes two blocks (inner and outer
/// pads); a request needs two HMACs with its client's secret, so each thread keeps the last
/// keyed state and clones it while the secret is the same.
fn keyed(secret: &[u8]) -> HmacMd5 {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Vec<u8>, HmacMd5)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((key, mac)) if key.as_slice() == secret => mac.clone(),
        _ => {
            let mac = HmacMd5::new_from_slice(secret).expect("HMAC takes any key length");
            *last = Some((secret.to_vec(), mac.clone()));
            mac
        }
    })
}

/// HMAC-MD5 over `packet` with the 16 octets at `ma_offset` taken as zero and, when given,
/// `authenticator` standing in the header's authenticator field.
fn message_authenticator(
    packet: &[u8],
    ma_offset: usize,
    authenticator: Option<&[u8; 16]>,
    secret: &[u8],
) -> [u8; 16] {
    let mut mac = keyed(secret);
    match authenticator {
        Some(auth) => {
            mac.update(&packet[..4]);
            mac.update(auth);
            mac.update(&packet[HEADER_LEN..ma_offset]);
        }
        None => mac.update(&packet[..ma_offset]),
    }
    mac.update(&[0u8; 16]);
    mac.update(&packet[ma_offset + 16..]);
    mac.finalize().into_bytes().into()
}

/// Verifies a request's Message-Authenticator in constant time.
///
/// RFC 3579 §3.2: "For Access-Request packets, the Message-Authenticator is an HMAC-MD5
/// hash of the entire Access-Request packet [...] using the shared secret as the key".
pub fn verify_request_message_authenticator(
    packet: &[u8],
    ma_offset: usize,
    secret: &[u8],
) -> bool {
    let expected = message_authenticator(packet, ma_offset, None, secret);
    expected.ct_eq(&packet[ma_offset..ma_offset + 16]).into()
}

/// Verifies an Accounting-Request's Message-Authenticator in constant time: computed with
/// the Request Authenticator field zeroed, since that field is itself a hash over the
/// packet (as FreeRADIUS computes and checks it).
pub fn verify_accounting_message_authenticator(
    packet: &[u8],
    ma_offset: usize,
    secret: &[u8],
) -> bool {
    let expected = message_authenticator(packet, ma_offset, Some(&[0; 16]), secret);
    expected.ct_eq(&packet[ma_offset..ma_offset + 16]).into()
}

/// Verifies an Accounting-Request's Request Authenticator in constant time.
///
/// RFC 2866 §3: "Request Authenticator = MD5(Code + Identifier + Length + 16 zero octets +
/// request attributes + shared secret)".
pub fn verify_accounting_request(packet: &[u8], secret: &[u8]) -> bool {
    let digest = accounting_authenticator(packet, secret);
    digest.ct_eq(&packet[4..HEADER_LEN]).into()
}

fn accounting_authenticator(packet: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(&packet[..4]);
    md5.update([0u8; 16]);
    md5.update(&packet[HEADER_LEN..]);
    md5.update(secret);
    md5.finalize().into()
}

/// Fills an Accounting-Request's Request Authenticator (the client side; tests).
pub fn sign_accounting_request(packet: &mut [u8], secret: &[u8]) {
    let digest = accounting_authenticator(packet, secret);
    packet[4..HEADER_LEN].copy_from_slice(&digest);
}

/// Fills a request's Message-Authenticator in place (the client side; tests, load driver).
pub fn sign_request(packet: &mut [u8], ma_offset: usize, secret: &[u8]) {
    let ma = message_authenticator(packet, ma_offset, None, secret);
    packet[ma_offset..ma_offset + 16].copy_from_slice(&ma);
}

/// Signs an encoded response in place: fills its Message-Authenticator (if `ma_offset`)
/// and then the Response Authenticator.
///
/// RFC 3579 §3.2: for responses the Message-Authenticator is calculated "using the
/// Request Authenticator from the Access-Request this packet is in reply to"; RFC 2865 §3:
/// ResponseAuth = MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
pub fn sign_response(
    packet: &mut [u8],
    request_authenticator: &[u8; 16],
    ma_offset: Option<usize>,
    secret: &[u8],
) {
    packet[4..HEADER_LEN].copy_from_slice(request_authenticator);
    if let Some(off) = ma_offset {
        let ma = message_authenticator(packet, off, None, secret);
        packet[off..off + 16].copy_from_slice(&ma);
    }
    let mut md5 = Md5::new();
    md5.update(&packet[..]);
    md5.update(secret);
    let digest = md5.finalize();
    packet[4..HEADER_LEN].copy_from_slice(&digest);
}

/// Signs an Accounting-Response in place. Its Message-Authenticator is computed with the
/// authenticator field zeroed, as FreeRADIUS does for accounting, then the Response
/// Authenticator over the Request Authenticator (RFC 2866 §3).
pub fn sign_accounting_response(
    packet: &mut [u8],
    request_authenticator: &[u8; 16],
    ma_offset: Option<usize>,
    secret: &[u8],
) {
    packet[4..HEADER_LEN].fill(0);
    if let Some(off) = ma_offset {
        let ma = message_authenticator(packet, off, None, secret);
        packet[off..off + 16].copy_from_slice(&ma);
    }
    packet[4..HEADER_LEN].copy_from_slice(request_authenticator);
    let mut md5 = Md5::new();
    md5.update(&packet[..]);
    md5.update(secret);
    let digest = md5.finalize();
    packet[4..HEADER_LEN].copy_from_slice(&digest);
}

/// Verifies a response's authenticators (the client side; used by tests and the load driver).
pub fn verify_response(
    response: &[u8],
    request_authenticator: &[u8; 16],
    ma_offset: Option<usize>,
    secret: &[u8],
) -> bool {
    if response.len() < HEADER_LEN {
        return false;
    }
    let mut md5 = Md5::new();
    md5.update(&response[..4]);
    md5.update(request_authenticator);
    md5.update(&response[HEADER_LEN..]);
    md5.update(secret);
    let ok_auth: bool = md5
        .finalize()
        .as_slice()
        .ct_eq(&response[4..HEADER_LEN])
        .into();
    let ok_ma = match ma_offset {
        Some(off) => {
            let ma = message_authenticator(response, off, Some(request_authenticator), secret);
            ma.ct_eq(&response[off..off + 16]).into()
        }
        None => true,
    };
    ok_auth && ok_ma
}

/// Why a User-Password attribute could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("User-Password length must be a multiple of 16 between 16 and 128")]
pub struct PapError;

/// A decoded PAP password: at most 128 octets (RFC 2865 §5.2), kept inline rather than in an
/// allocation of its own, and overwritten with zeros when dropped, so that no copy of it is
/// left in freed memory by the request path (the hash functions' state and the LDAP and HTTPS
/// clients' buffers aside).
pub struct PapPassword {
    bytes: [u8; 128],
    len: u8,
}

impl std::ops::Deref for PapPassword {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Drop for PapPassword {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl std::fmt::Debug for PapPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PapPassword({} octets)", self.len)
    }
}

impl PapPassword {
    /// No password yet: a buffer for `decode`.
    pub fn new() -> Self {
        Self {
            bytes: [0; 128],
            len: 0,
        }
    }

    /// Decodes a PAP User-Password (RFC 2865 §5.2) into this buffer, dropping the zero
    /// padding. In place, so that the plaintext is not moved (a move leaves a copy behind,
    /// which nothing wipes); the request path keeps the buffer where it is used.
    pub fn decode(
        &mut self,
        hidden: &[u8],
        secret: &[u8],
        request_authenticator: &[u8; 16],
    ) -> Result<(), PapError> {
        self.wipe();
        if hidden.is_empty() || hidden.len() > 128 || !hidden.len().is_multiple_of(16) {
            return Err(PapError);
        }
        let mut prev: &[u8] = request_authenticator;
        for (chunk, plain) in hidden.chunks_exact(16).zip(self.bytes.chunks_exact_mut(16)) {
            let mut md5 = Md5::new();
            md5.update(secret);
            md5.update(prev);
            let b = md5.finalize();
            for ((p, c), b) in plain.iter_mut().zip(chunk).zip(b.iter()) {
                *p = c ^ b;
            }
            prev = chunk;
        }
        let decoded = &self.bytes[..hidden.len()];
        let end = decoded.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        self.len = u8::try_from(end).expect("at most 128 octets");
        Ok(())
    }

    /// Overwrites the password's octets with zeros; past them the buffer holds the decoded
    /// padding (zeros) or was never written.
    fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes[..usize::from(self.len)]);
        self.len = 0;
    }
}

impl Default for PapPassword {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes a PAP User-Password (RFC 2865 §5.2), dropping the zero padding, into a new buffer
/// (`PapPassword::decode` decodes in place).
pub fn decode_pap(
    hidden: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<PapPassword, PapError> {
    let mut out = PapPassword::new();
    out.decode(hidden, secret, request_authenticator)?;
    Ok(out)
}

/// Hides a PAP password (the client side; used by tests and the load driver).
pub fn encode_pap(password: &[u8], secret: &[u8], request_authenticator: &[u8; 16]) -> Vec<u8> {
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut out = password.to_vec();
    out.resize(padded_len, 0);
    let mut prev = *request_authenticator;
    for chunk in out.chunks_exact_mut(16) {
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(prev);
        let b = md5.finalize();
        for (c, b) in chunk.iter_mut().zip(b.iter()) {
            *c ^= b;
        }
        prev.copy_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pap_matches_rfc2865_example() {
        // RFC 2865 §7.1: secret "xyzzy5461", password "arctangent".
        let auth = [
            0x0f, 0x40, 0x3f, 0x94, 0x73, 0x97, 0x80, 0x57, 0xbd, 0x83, 0xd5, 0xcb, 0x98, 0xf4,
            0x22, 0x7a,
        ];
        let hidden = [
            0x0d, 0xbe, 0x70, 0x8d, 0x93, 0xd4, 0x13, 0xce, 0x31, 0x96, 0xe4, 0x3f, 0x78, 0x2a,
            0x0a, 0xee,
        ];
        assert_eq!(
            &*decode_pap(&hidden, b"xyzzy5461", &auth).unwrap(),
            b"arctangent"
        );
        assert_eq!(encode_pap(b"arctangent", b"xyzzy5461", &auth), hidden);
    }

    #[test]
    fn pap_round_trips_long_passwords_and_refuses_bad_lengths() {
        let auth = [7u8; 16];
        let pw = b"a password that is longer than sixteen bytes, twice over";
        let hidden = encode_pap(pw, b"s3cret", &auth);
        assert_eq!(hidden.len(), 64);
        assert_eq!(&*decode_pap(&hidden, b"s3cret", &auth).unwrap(), pw);
        assert_ne!(&*decode_pap(&hidden, b"other", &auth).unwrap(), pw);
        for bad in [&[0; 15][..], &[], &[0; 144], &[0; 129]] {
            assert_eq!(decode_pap(bad, b"s", &auth).err(), Some(PapError));
        }
        // The longest a PAP password can be, and one of all zeros (only padding).
        let longest = [0xa5; 128];
        let hidden = encode_pap(&longest, b"s3cret", &auth);
        assert_eq!(&*decode_pap(&hidden, b"s3cret", &auth).unwrap(), longest);
        let hidden = encode_pap(&[0; 16], b"s3cret", &auth);
        assert!(decode_pap(&hidden, b"s3cret", &auth).unwrap().is_empty());
    }

    /// What a dropped password leaves: zeros, in every octet of its buffer (the padding's
    /// octets decode to zeros, and a wrong secret's garbage is part of the password).
    #[test]
    fn a_wiped_password_leaves_only_zeros() {
        let auth = [7u8; 16];
        for (pw, secret) in [
            (&b"arctangent"[..], &b"s3cret"[..]),
            (&[0xa5; 128], b"s3cret"),
            (
                b"a password that is longer than sixteen bytes, twice over",
                b"other",
            ),
        ] {
            let hidden = encode_pap(pw, b"s3cret", &auth);
            let mut decoded = decode_pap(&hidden, secret, &auth).unwrap();
            assert!(!decoded.is_empty());
            decoded.wipe();
            assert_eq!((decoded.bytes, decoded.len), ([0; 128], 0));
            // And through its drop, which is what the request path relies on.
            let mut decoded =
                std::mem::ManuallyDrop::new(decode_pap(&hidden, secret, &auth).unwrap());
            let at: *mut PapPassword = &mut *decoded;
            // SAFETY: dropped once, in place; its bytes are read after (plain octets, still
            // in `decoded`'s storage, which is not dropped again).
            let left = unsafe {
                std::ptr::drop_in_place(at);
                std::ptr::addr_of!((*at).bytes).read()
            };
            assert_eq!(left, [0; 128]);
        }
    }

    /// Only the padding is dropped: zero octets inside a password, and a decode into a buffer
    /// that held a longer one, read back exactly.
    #[test]
    fn a_password_keeps_its_inner_zeros_and_a_reused_buffer_nothing_else() {
        let auth = [9u8; 16];
        let mut buf = PapPassword::new();
        let long = [0x5a; 100];
        buf.decode(&encode_pap(&long, b"k", &auth), b"k", &auth)
            .unwrap();
        assert_eq!(&*buf, long);
        for pw in [&b"ab\0cd"[..], b"\0\0x", b"x"] {
            buf.decode(&encode_pap(pw, b"k", &auth), b"k", &auth)
                .unwrap();
            assert_eq!(&*buf, pw);
            assert!(buf.bytes[pw.len()..].iter().all(|&b| b == 0));
        }
        assert_eq!(buf.decode(&[1; 17], b"k", &auth), Err(PapError));
        assert!(buf.is_empty() && buf.bytes == [0; 128]);
    }

    #[test]
    fn signed_response_verifies_and_tampering_is_detected() {
        let req_auth = [9u8; 16];
        let mut resp = vec![2, 1, 0, 38];
        resp.extend([0; 16]);
        resp.extend([80, 18]);
        resp.extend([0; 16]);
        sign_response(&mut resp, &req_auth, Some(22), b"secret");
        assert!(verify_response(&resp, &req_auth, Some(22), b"secret"));
        assert!(!verify_response(&resp, &req_auth, Some(22), b"secreT"));
        resp[30] ^= 1;
        assert!(!verify_response(&resp, &req_auth, Some(22), b"secret"));
    }

    #[test]
    fn accounting_authenticator_round_trip() {
        let mut req = vec![4, 1, 0, 26];
        req.extend([0; 16]);
        req.extend([40, 6, 0, 0, 0, 1]);
        sign_accounting_request(&mut req, b"k");
        assert!(verify_accounting_request(&req, b"k"));
        assert!(!verify_accounting_request(&req, b"j"));
        req[25] = 2;
        assert!(!verify_accounting_request(&req, b"k"));
    }

    #[test]
    fn request_message_authenticator_round_trip() {
        let mut req = vec![1, 1, 0, 38];
        req.extend([5; 16]);
        req.extend([80, 18]);
        req.extend([0; 16]);
        sign_request(&mut req, 22, b"k");
        assert!(verify_request_message_authenticator(&req, 22, b"k"));
        assert!(!verify_request_message_authenticator(&req, 22, b"j"));
    }
}

//! The first, cheap look at a datagram: header, length and attribute framing, before any
//! cryptography or allocation; then the attributes read in place. Full decoding (the `radius`
//! crate) is left to Accounting-Requests, whose record reads many attributes.

use super::dict;

pub const HEADER_LEN: usize = 20;
/// RFC 2865 §3: "The maximum length is 4096."
pub const MAX_LEN: usize = 4096;

/// Why a datagram is not a RADIUS packet we can consider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("datagram shorter than a RADIUS header")]
    Truncated,
    #[error("length field outside 20..=4096")]
    BadLength,
    #[error("datagram shorter than its length field")]
    ShortDatagram,
    #[error("attribute framing broken at offset {0}")]
    BadAttribute(usize),
    #[error("Message-Authenticator is not 16 octets or occurs twice")]
    BadMessageAuthenticator,
}

/// A framed packet: the bytes the length field covers, with the Message-Authenticator located.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Exactly the octets covered by the length field.
    pub bytes: &'a [u8],
    /// Offset of the Message-Authenticator *value* (16 octets), if present.
    pub message_authenticator: Option<usize>,
    /// Octets of Proxy-State attributes (headers included), which the response echoes.
    pub proxy_state: usize,
    /// An EAP-Message is present: RFC 3579 §3.2 requires a Message-Authenticator then.
    pub eap: bool,
}

impl<'a> Frame<'a> {
    /// Checks framing without trusting anything the datagram says.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, Malformed> {
        if datagram.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            return Err(Malformed::BadLength);
        }
        // RFC 2865 §3: "If the packet is shorter than the Length field indicates, it MUST be
        // silently discarded." / "Octets outside the range of the Length field MUST be treated
        // as padding and ignored on reception."
        if datagram.len() < len {
            return Err(Malformed::ShortDatagram);
        }
        let bytes = &datagram[..len];
        let mut message_authenticator = None;
        let (mut proxy_state, mut eap) = (0, false);
        let mut i = HEADER_LEN;
        while i < len {
            if len - i < 2 {
                return Err(Malformed::BadAttribute(i));
            }
            let (typ, alen) = (bytes[i], bytes[i + 1] as usize);
            if alen < 2 || i + alen > len {
                return Err(Malformed::BadAttribute(i));
            }
            if typ == dict::MESSAGE_AUTHENTICATOR {
                if alen != 18 || message_authenticator.is_some() {
                    return Err(Malformed::BadMessageAuthenticator);
                }
                message_authenticator = Some(i + 2);
            }
            if typ == dict::PROXY_STATE {
                proxy_state += alen;
            }
            eap |= typ == dict::EAP_MESSAGE;
            i += alen;
        }
        Ok(Self {
            bytes,
            message_authenticator,
            proxy_state,
            eap,
        })
    }

    pub fn code(&self) -> u8 {
        self.bytes[0]
    }

    pub fn identifier(&self) -> u8 {
        self.bytes[1]
    }

    pub fn authenticator(&self) -> [u8; 16] {
        self.bytes[4..HEADER_LEN]
            .try_into()
            .expect("header checked")
    }
}

/// The attributes of a framed packet (`Frame::bytes`), in order, as (type, value), read in
/// place. Stops at the first broken attribute, which `Frame::parse` refuses; on a datagram not
/// yet framed (`Handler::prefetch`) it reads what is well-formed up to the Length field.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    /// Up to the header's length field: octets past it are padding (RFC 2865 §3).
    pub fn of(packet: &'a [u8]) -> Self {
        let len = match packet {
            [_, _, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])).min(packet.len()),
            _ => 0,
        };
        Self {
            rest: packet.get(HEADER_LEN..len).unwrap_or_default(),
        }
    }

    /// The value of the first attribute of type `typ`.
    pub fn first(packet: &'a [u8], typ: u8) -> Option<&'a [u8]> {
        Self::of(packet).find(|(t, _)| *t == typ).map(|(_, v)| v)
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let [typ, len, ..] = *self.rest else {
            return None;
        };
        let len = usize::from(len);
        if len < 2 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let (attr, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some((typ, &attr[2..]))
    }
}

/// Encodes a response: header, then attributes in the order added. The authenticator is
/// left zero for `crypto::sign_response` to fill.
///
/// Hand-written because responses are built per request and the `radius` crate's encoder
/// (an attribute list of owned vectors, then a copy) cost 7 % of the request path.
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub fn new(code: u8, identifier: u8) -> Self {
        let mut buf = Vec::with_capacity(160);
        buf.extend_from_slice(&[code, identifier, 0, 0]);
        buf.extend_from_slice(&[0; 16]);
        Self { buf }
    }

    /// Appends an attribute. Values longer than an attribute can carry (253 octets) are a
    /// programming error: the config validation bounds everything that reaches here.
    pub fn attr(&mut self, typ: u8, value: &[u8]) {
        assert!(
            value.len() <= 253,
            "attribute {typ} value of {} octets",
            value.len()
        );
        self.buf.push(typ);
        self.buf.push(2 + value.len() as u8);
        self.buf.extend_from_slice(value);
    }

    /// Appends a Vendor-Specific attribute (RFC 2865 §5.26) with one sub-attribute.
    pub fn vsa(&mut self, vendor: u32, typ: u8, value: &[u8]) {
        assert!(
            value.len() <= 247,
            "VSA {vendor}/{typ} value of {} octets",
            value.len()
        );
        self.buf.push(dict::VENDOR_SPECIFIC);
        self.buf.push(8 + value.len() as u8);
        self.buf.extend_from_slice(&vendor.to_be_bytes());
        self.buf.push(typ);
        self.buf.push(2 + value.len() as u8);
        self.buf.extend_from_slice(value);
    }

    /// Appends attributes already encoded (a response kept by the duplicate cache).
    pub fn raw(&mut self, attributes: &[u8]) {
        self.buf.extend_from_slice(attributes);
    }

    /// The encoded packet with its length set; unsigned.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len();
        assert!(len <= MAX_LEN, "response of {len} octets");
        self.buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(attrs: &[u8]) -> Vec<u8> {
        let mut p = vec![1, 7, 0, 0];
        p.extend([0xAA; 16]);
        p.extend(attrs);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn attributes_are_read_in_place_in_order() {
        let p = packet(&[
            1, 7, b'a', b'l', b'i', b'c', b'e', 4, 6, 10, 0, 0, 1, 1, 3, b'x', 5, 2,
        ]);
        let all: Vec<_> = Attributes::of(&p).collect();
        assert_eq!(
            all,
            [
                (1, &b"alice"[..]),
                (4, &[10, 0, 0, 1][..]),
                (1, &b"x"[..]),
                (5, &[][..])
            ]
        );
        assert_eq!(
            Attributes::first(&p, 1),
            Some(&b"alice"[..]),
            "the first of two"
        );
        assert_eq!(Attributes::first(&p, 2), None);
        assert_eq!(Attributes::of(&packet(&[])).count(), 0);
        assert_eq!(Attributes::of(&p[..10]).count(), 0, "shorter than a header");
        let mut padded = p.clone();
        padded.extend([1, 3, b'p']);
        assert_eq!(
            Attributes::of(&padded).count(),
            4,
            "octets past the length are padding"
        );
        // Broken framing (which `Frame::parse` refuses) ends the walk instead of panicking.
        for broken in [&[1, 9, b'a'][..], &[1, 1, 1, 0], &[1]] {
            let mut p = packet(&[4, 3, 1]);
            p.extend(broken);
            assert_eq!(Attributes::of(&p).collect::<Vec<_>>(), [(4, &[1][..])]);
        }
    }

    #[test]
    fn accepts_well_framed_and_finds_message_authenticator() {
        let mut attrs = vec![1, 7, b'a', b'l', b'i', b'c', b'e', 80, 18];
        attrs.extend([0; 16]);
        let p = packet(&attrs);
        let f = Frame::parse(&p).unwrap();
        assert_eq!(f.message_authenticator, Some(HEADER_LEN + 9));
        assert_eq!(f.identifier(), 7);
    }

    #[test]
    fn builder_output_frames_and_decodes() {
        let mut b = Builder::new(2, 9);
        b.attr(dict::MESSAGE_AUTHENTICATOR, &[0; 16]);
        b.vsa(3076, 5, &[10, 0, 0, 53]);
        b.attr(18, b"ok");
        let bytes = b.finish();
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!(f.bytes.len(), bytes.len());
        assert_eq!((f.code(), f.identifier()), (2, 9));
        assert_eq!(f.message_authenticator, Some(HEADER_LEN + 2));
        let p = radius::core::packet::Packet::decode(&bytes, b"s").unwrap();
        assert_eq!(p.lookup(18).unwrap().encode_string().unwrap(), "ok");
        assert_eq!(
            p.lookup(dict::VENDOR_SPECIFIC).unwrap().encode_bytes(),
            [0, 0, 12, 4, 5, 6, 10, 0, 0, 53]
        );
    }

    #[test]
    fn padding_beyond_length_is_ignored() {
        let mut p = packet(&[1, 3, b'x']);
        p.extend([0xFF; 10]);
        assert_eq!(Frame::parse(&p).unwrap().bytes.len(), 23);
    }

    #[test]
    fn rejects_broken_framing() {
        assert_eq!(Frame::parse(&[1; 19]).unwrap_err(), Malformed::Truncated);
        let mut p = packet(&[1, 3, b'x']);
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(Frame::parse(&p).unwrap_err(), Malformed::ShortDatagram);
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Frame::parse(&p).unwrap_err(), Malformed::BadLength);
        p[2..4].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(Frame::parse(&p).unwrap_err(), Malformed::BadLength);
        for attrs in [&[1u8, 0][..], &[1, 1], &[1, 9, b'x'], &[1]] {
            assert!(matches!(
                Frame::parse(&packet(attrs)).unwrap_err(),
                Malformed::BadAttribute(20)
            ));
        }
        let mut two = vec![80, 18];
        two.extend([0; 16]);
        two.extend(two.clone());
        assert_eq!(
            Frame::parse(&packet(&two)).unwrap_err(),
            Malformed::BadMessageAuthenticator
        );
        assert_eq!(
            Frame::parse(&packet(&[80, 4, 0, 0])).unwrap_err(),
            Malformed::BadMessageAuthenticator
        );
    }
}

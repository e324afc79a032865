//! Arbitrary bytes through every parser an unauthenticated datagram reaches: the framing
//! check, the `radius` crate's decoder, the Cisco-AVPair walk, the device identity parser
//! and PAP decoding. None of them may panic, and the framing check must agree with the
//! decoder: the listener decodes exactly what `Frame::parse` accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radius::core::packet::Packet;
use ravpnd::policy::device::DeviceIdentity;
use ravpnd::radius::packet::{Attributes, Frame, Malformed};
use ravpnd::radius::{crypto, dict};

const SECRET: &[u8] = b"fuzz-shared-secret";

fuzz_target!(|data: &[u8]| {
    let frame = Frame::parse(data);
    if let Ok(f) = &frame {
        assert!(f.bytes.len() >= 20 && f.bytes.len() <= 4096);
        assert_eq!(
            usize::from(u16::from_be_bytes([f.bytes[2], f.bytes[3]])),
            f.bytes.len()
        );
        let _ = (f.code(), f.identifier(), f.authenticator());
        if let Some(off) = f.message_authenticator {
            assert!(off >= 22 && off + 16 <= f.bytes.len());
            assert_eq!(f.bytes[off - 2], dict::MESSAGE_AUTHENTICATOR);
            assert_eq!(f.bytes[off - 1], 18);
            let _ = crypto::verify_request_message_authenticator(f.bytes, off, SECRET);
        }
    }

    // The decoder sees what the listener hands it: the framed bytes (or, for a datagram the
    // framing refused, the raw bytes, which must be refused without a panic as well).
    let bytes = match &frame {
        Ok(f) => f.bytes,
        Err(_) => data,
    };
    let decoded = Packet::decode(bytes, SECRET);
    match (&frame, &decoded) {
        // Same framing rules: whatever Frame accepts, the decoder must accept.
        (Ok(_), Err(e)) => panic!("Frame::parse accepted what Packet::decode refused: {e}"),
        // The decoder does not look at the Message-Authenticator's size or count; anything
        // else Frame refuses, the decoder must refuse too.
        (Err(m), Ok(_)) => assert!(
            matches!(m, Malformed::BadMessageAuthenticator),
            "Packet::decode accepted what Frame::parse refused as {m:?}"
        ),
        _ => {}
    }
    let Ok(packet) = decoded else { return };

    // The listener reads Access-Requests in place: for the attributes it reads, the in-place
    // reader must see exactly what the decoder does.
    for typ in [dict::USER_NAME, dict::USER_PASSWORD, dict::VENDOR_SPECIFIC] {
        let decoded: Vec<Vec<u8>> = packet.lookup_all(typ).iter().map(|a| a.encode_bytes()).collect();
        let in_place: Vec<&[u8]> = Attributes::of(bytes).filter(|(t, _)| *t == typ).map(|(_, v)| v).collect();
        assert_eq!(decoded, in_place, "attribute type {typ}");
        assert_eq!(Attributes::first(bytes, typ), in_place.first().copied());
    }

    let avpairs = dict::cisco_avpairs(Attributes::of(bytes));
    for serial_key in ["device-uid", "device-uid-global"] {
        let id = DeviceIdentity::from_avpairs(avpairs.iter().copied(), serial_key);
        let _ = id.is_empty();
    }
    for a in &avpairs {
        if let Some((_, v)) = a.rsplit_once('=') {
            let _ = ravpnd::policy::device::normalize_mac(v);
            let _ = ravpnd::policy::device::platform(v);
        }
    }

    let authenticator: [u8; 16] = bytes[4..20].try_into().expect("decoded: header present");
    for attr in packet.lookup_all(dict::USER_PASSWORD) {
        let hidden = attr.encode_bytes();
        match crypto::decode_pap(&hidden, SECRET, &authenticator) {
            Ok(pw) => {
                assert!(pw.len() <= hidden.len());
                // Hiding the decoded password again gives back the attribute, up to the
                // zero padding the decoder strips (a password that itself ends in NULs).
                if pw.len() > hidden.len() - 16 {
                    assert_eq!(crypto::encode_pap(&pw, SECRET, &authenticator), hidden);
                }
            }
            Err(_) => assert!(
                hidden.is_empty() || hidden.len() > 128 || hidden.len() % 16 != 0,
                "decode_pap refused a {}-octet value",
                hidden.len()
            ),
        }
    }
    // decode_pap also on the raw tail, whatever its length.
    let _ = crypto::decode_pap(&data[data.len().min(20)..], SECRET, &authenticator);
});

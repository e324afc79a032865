//! Attribute numbers and vendor facts (RFC 2865/2869/3579, Cisco, Cisco ASA), in one place.

pub const USER_NAME: u8 = 1;
pub const USER_PASSWORD: u8 = 2;
pub const REPLY_MESSAGE: u8 = 18;
pub const VENDOR_SPECIFIC: u8 = 26;
pub const MESSAGE_AUTHENTICATOR: u8 = 80;

/// Packet codes handled here.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const STATUS_SERVER: u8 = 12;
}

/// Cisco (vendor 9): Cisco-AVPair (type 1) carries `key=value` strings.
pub const VENDOR_CISCO: u32 = 9;
pub const CISCO_AVPAIR: u8 = 1;

/// The Cisco-AVPair values in a packet's Vendor-Specific attributes (RFC 2865 §5.26 layout:
/// vendor id, then vendor type, vendor length, value). Malformed ones are skipped.
pub fn cisco_avpairs(packet: &radius::core::packet::Packet) -> Vec<String> {
    let mut out = Vec::new();
    for avp in packet.lookup_all(VENDOR_SPECIFIC) {
        let v = avp.encode_bytes();
        if v.len() < 6 || u32::from_be_bytes([v[0], v[1], v[2], v[3]]) != VENDOR_CISCO {
            continue;
        }
        let mut i = 4;
        while i + 2 <= v.len() {
            let (typ, len) = (v[i], v[i + 1] as usize);
            if len < 2 || i + len > v.len() {
                break;
            }
            if typ == CISCO_AVPAIR {
                if let Ok(s) = std::str::from_utf8(&v[i + 2..i + len]) {
                    out.push(s.to_owned());
                }
            }
            i += len;
        }
    }
    out
}

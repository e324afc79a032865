//! Attribute numbers and vendor facts (RFC 2865/2869/3579, Cisco, Cisco ASA), in one place.

pub const USER_NAME: u8 = 1;
pub const USER_PASSWORD: u8 = 2;
pub const SERVICE_TYPE: u8 = 6;
pub const FRAMED_IP_ADDRESS: u8 = 8;
pub const FRAMED_IP_NETMASK: u8 = 9;
pub const REPLY_MESSAGE: u8 = 18;
pub const PROXY_STATE: u8 = 33;
pub const VENDOR_SPECIFIC: u8 = 26;
pub const ACCT_STATUS_TYPE: u8 = 40;
pub const ACCT_SESSION_ID: u8 = 44;
pub const EAP_MESSAGE: u8 = 79;
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
pub const ACCT_INTERIM_INTERVAL: u8 = 85;

/// Service-Type value Framed (RFC 2865 §5.6).
pub const SERVICE_TYPE_FRAMED: u32 = 2;

/// Acct-Status-Type values (RFC 2866 §5.1).
pub mod acct_status {
    pub const START: u32 = 1;
    pub const STOP: u32 = 2;
    pub const INTERIM_UPDATE: u32 = 3;
    pub const ACCOUNTING_ON: u32 = 7;
    pub const ACCOUNTING_OFF: u32 = 8;
}

/// Cisco ASA (vendor 3076) attribute types, as FreeRADIUS's dictionary.cisco.asa names them.
pub mod asa {
    pub const VENDOR: u32 = 3076;
    pub const PRIMARY_DNS: u8 = 5;
    pub const SECONDARY_DNS: u8 = 6;
    pub const IE_PROXY_SERVER: u8 = 80;
    pub const IE_PROXY_SERVER_POLICY: u8 = 81;
    pub const IE_PROXY_EXCEPTION_LIST: u8 = 82;
    /// IE-Proxy-Server-Policy values.
    pub const POLICY_NO_MODIFY: u32 = 1;
    pub const POLICY_NO_PROXY: u32 = 2;
    pub const POLICY_USE_CONCENTRATOR: u32 = 4;
}

/// Microsoft (vendor 311) attributes ocserv reads for DNS (RFC 2548).
pub mod ms {
    pub const VENDOR: u32 = 311;
    pub const PRIMARY_DNS_SERVER: u8 = 28;
    pub const SECONDARY_DNS_SERVER: u8 = 29;
}

/// Packet codes handled here.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const ACCOUNTING_REQUEST: u8 = 4;
    pub const ACCOUNTING_RESPONSE: u8 = 5;
    pub const STATUS_SERVER: u8 = 12;
}

/// Cisco (vendor 9): Cisco-AVPair (type 1) carries `key=value` strings.
pub const VENDOR_CISCO: u32 = 9;
pub const CISCO_AVPAIR: u8 = 1;

/// The Cisco-AVPair values in a packet's Vendor-Specific attributes (RFC 2865 §5.26 layout:
/// vendor id, then vendor type, vendor length, value). Malformed ones are skipped.
pub fn cisco_avpairs<'a>(attributes: impl Iterator<Item = (u8, &'a [u8])>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (_, v) in attributes.filter(|(t, _)| *t == VENDOR_SPECIFIC) {
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
                    out.push(s);
                }
            }
            i += len;
        }
    }
    out
}

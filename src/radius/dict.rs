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

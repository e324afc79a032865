//! Accounting-Request → lease bookkeeping (RFC 2866): Start binds the lease to the session,
//! Interim-Update refreshes it, Stop releases the address, Accounting-On/Off release all of
//! the NAS's leases.

use std::net::Ipv4Addr;

use radius::core::packet::Packet;

use crate::ipam::{AcctStatus, IpamError};
use crate::policy::Policy;
use crate::radius::dict::{self, acct_status};

/// Every `status` label an Accounting-Request is counted under.
pub const STATUS_LABELS: [&str; 6] = [
    "start",
    "interim",
    "stop",
    "accounting_on",
    "accounting_off",
    "other",
];

/// What an Accounting-Request carried, for the log line.
#[derive(Debug)]
pub struct AcctSummary {
    pub status: &'static str,
    pub session_id: String,
    pub user: String,
    pub framed_ip: Option<Ipv4Addr>,
    /// A lease was found and updated.
    pub matched: bool,
}

fn u32_attr(p: &Packet, typ: u8) -> Option<u32> {
    p.lookup(typ).and_then(|a| a.encode_u32().ok())
}

fn str_attr(p: &Packet, typ: u8) -> Option<String> {
    p.lookup(typ)
        .map(|a| String::from_utf8_lossy(&a.encode_bytes()).into_owned())
}

/// Applies one (authenticated) Accounting-Request. The caller answers only if this
/// returns `Ok` (RFC 2866 §4.1: respond only once the request is recorded).
pub async fn handle_accounting(
    policy: &Policy,
    packet: &Packet,
    nas: &str,
    now: u64,
) -> Result<AcctSummary, IpamError> {
    let status_type = u32_attr(packet, dict::ACCT_STATUS_TYPE);
    let session_id = str_attr(packet, dict::ACCT_SESSION_ID).unwrap_or_default();
    let framed_ip = packet
        .lookup(dict::FRAMED_IP_ADDRESS)
        .and_then(|a| a.encode_ipv4().ok());
    let user = str_attr(packet, dict::USER_NAME).unwrap_or_default();
    let (status, label) = match status_type {
        Some(acct_status::START) => (Some(AcctStatus::Start), "start"),
        Some(acct_status::INTERIM_UPDATE) => (Some(AcctStatus::Interim), "interim"),
        Some(acct_status::STOP) => (Some(AcctStatus::Stop), "stop"),
        Some(acct_status::ACCOUNTING_ON) => (Some(AcctStatus::NasRestart), "accounting_on"),
        Some(acct_status::ACCOUNTING_OFF) => (Some(AcctStatus::NasRestart), "accounting_off"),
        _ => (None, "other"),
    };
    let matched = match status {
        Some(s) => {
            // The lease names its user as the store does (`CORP\alice` → `alice`).
            let key = if user.is_empty() {
                String::new()
            } else {
                policy.user_key(&user)
            };
            policy
                .ipam()
                .account(s, &session_id, framed_ip, &key, nas, now)
                .await?
        }
        None => false,
    };
    Ok(AcctSummary {
        status: label,
        session_id,
        user,
        framed_ip,
        matched,
    })
}

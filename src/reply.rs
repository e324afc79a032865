//! Decision → response attributes, in the dialect of the gateway. Message-Authenticator goes
//! first in every response (RFC 3579; BlastRADIUS hardening asks for it first).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::GatewayKind;
use crate::policy::proxy::ProxyPush;
use crate::policy::{Decision, Reason, ReplyPlan};
use crate::radius::dict::{self, asa, ms};
use crate::radius::packet::{Attributes, Builder, Frame, HEADER_LEN};
use crate::radius::{crypto, dict::code};

/// `[dns]`: the DNS servers every client gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub primary: Option<Ipv4Addr>,
    pub secondary: Option<Ipv4Addr>,
}

/// What a response needs of the request it answers, and the secret it is signed with.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub secret: &'a [u8],
    /// The request, if it carries Proxy-State attributes: RFC 2865 §5.33, a proxy's state
    /// "MUST be copied unmodified and in order into the response packet".
    pub proxy_state: Option<&'a [u8]>,
}

impl<'a> Original<'a> {
    /// Of a framed request.
    pub fn of(frame: &Frame<'a>, secret: &'a [u8]) -> Self {
        Self {
            identifier: frame.identifier(),
            authenticator: frame.authenticator(),
            secret,
            proxy_state: (frame.proxy_state > 0).then_some(frame.bytes),
        }
    }
}

/// The most Proxy-State octets a request may carry: echoed, they must leave room in a
/// 4,096-octet response for the largest set of reply attributes (under 1,000 octets).
pub const MAX_PROXY_STATE: usize = 3_000;

/// What the reply needs besides the decision.
pub struct ReplyContext<'a> {
    pub kind: GatewayKind,
    pub dns: &'a DnsConfig,
    pub interim_interval: Duration,
}

/// Offset of the Message-Authenticator value when it is the first attribute.
const FIRST_MA_OFFSET: usize = HEADER_LEN + 2;

/// Encodes and signs the response to `request`.
pub fn access_response(
    request: &Original<'_>,
    decision: &Decision,
    ctx: &ReplyContext<'_>,
) -> Vec<u8> {
    let (code, reason) = match decision {
        Decision::Accept(_) => (code::ACCESS_ACCEPT, Reason::Accepted),
        Decision::Reject(reason) => (code::ACCESS_REJECT, *reason),
    };
    let mut resp = response(request, code);
    if let Decision::Accept(plan) = decision {
        session_attributes(&mut resp, plan, ctx);
    }
    resp.attr(dict::REPLY_MESSAGE, reason.message().as_bytes());
    sign(request, resp)
}

/// A response to `request` with the Message-Authenticator (zeroed until signing) first,
/// then the request's Proxy-States.
fn response(request: &Original<'_>, code: u8) -> Builder {
    let mut b = Builder::new(code, request.identifier);
    b.attr(dict::MESSAGE_AUTHENTICATOR, &[0; 16]);
    if let Some(req) = request.proxy_state {
        for (_, value) in Attributes::of(req).filter(|(t, _)| *t == dict::PROXY_STATE) {
            b.attr(dict::PROXY_STATE, value);
        }
    }
    b
}

/// Address, DNS and proxy, as the gateway's dictionary has them.
fn session_attributes(resp: &mut Builder, plan: &ReplyPlan, ctx: &ReplyContext<'_>) {
    if ctx.kind == GatewayKind::Ocserv {
        // ocserv refuses any Service-Type but Framed.
        resp.attr(dict::SERVICE_TYPE, &dict::SERVICE_TYPE_FRAMED.to_be_bytes());
    }
    if let Some(a) = &plan.address {
        resp.attr(dict::FRAMED_IP_ADDRESS, &a.addr.octets());
        resp.attr(dict::FRAMED_IP_NETMASK, &a.netmask.octets());
    }
    match ctx.kind {
        GatewayKind::Asa => {
            if let Some(p) = ctx.dns.primary {
                resp.vsa(asa::VENDOR, asa::PRIMARY_DNS, &p.octets());
            }
            if let Some(s) = ctx.dns.secondary {
                resp.vsa(asa::VENDOR, asa::SECONDARY_DNS, &s.octets());
            }
            let policy = |v: u32| v.to_be_bytes();
            match &plan.proxy {
                ProxyPush::Nothing => {}
                ProxyPush::NoModify => resp.vsa(
                    asa::VENDOR,
                    asa::IE_PROXY_SERVER_POLICY,
                    &policy(asa::POLICY_NO_MODIFY),
                ),
                ProxyPush::NoProxy => resp.vsa(
                    asa::VENDOR,
                    asa::IE_PROXY_SERVER_POLICY,
                    &policy(asa::POLICY_NO_PROXY),
                ),
                ProxyPush::Managed { server, exceptions } => {
                    resp.vsa(
                        asa::VENDOR,
                        asa::IE_PROXY_SERVER_POLICY,
                        &policy(asa::POLICY_USE_CONCENTRATOR),
                    );
                    resp.vsa(asa::VENDOR, asa::IE_PROXY_SERVER, server.as_bytes());
                    if let Some(e) = exceptions {
                        resp.vsa(asa::VENDOR, asa::IE_PROXY_EXCEPTION_LIST, e.as_bytes());
                    }
                }
            }
        }
        GatewayKind::Ocserv => {
            if let Some(p) = ctx.dns.primary {
                resp.vsa(ms::VENDOR, ms::PRIMARY_DNS_SERVER, &p.octets());
            }
            if let Some(s) = ctx.dns.secondary {
                resp.vsa(ms::VENDOR, ms::SECONDARY_DNS_SERVER, &s.octets());
            }
            let secs = ctx.interim_interval.as_secs().min(u64::from(u32::MAX)) as u32;
            resp.attr(dict::ACCT_INTERIM_INTERVAL, &secs.to_be_bytes());
        }
    }
}

/// RFC 5997 §3: Status-Server is answered with an Access-Accept (on the authentication
/// port) or an Accounting-Response (on the accounting port), with a Message-Authenticator.
pub fn status_response(request: &Original<'_>, accounting: bool) -> Vec<u8> {
    let code = if accounting {
        code::ACCOUNTING_RESPONSE
    } else {
        code::ACCESS_ACCEPT
    };
    let mut resp = response(request, code);
    resp.attr(dict::REPLY_MESSAGE, b"ravpnd is alive");
    sign(request, resp)
}

/// RFC 2866 §4.2: an Accounting-Response (with a Message-Authenticator first, like every
/// response here).
pub fn accounting_response(request: &Original<'_>) -> Vec<u8> {
    let mut bytes = response(request, code::ACCOUNTING_RESPONSE).finish();
    crypto::sign_accounting_response(
        &mut bytes,
        &request.authenticator,
        Some(FIRST_MA_OFFSET),
        request.secret,
    );
    bytes
}

fn sign(request: &Original<'_>, resp: Builder) -> Vec<u8> {
    let mut bytes = resp.finish();
    crypto::sign_response(
        &mut bytes,
        &request.authenticator,
        Some(FIRST_MA_OFFSET),
        request.secret,
    );
    bytes
}

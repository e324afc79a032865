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
    sign_accounting(request, response(request, code::ACCOUNTING_RESPONSE))
}

/// What the duplicate cache keeps of a response (`kept`): its code, which reason's
/// Reply-Message ended it (0: none, or another text, kept among the attributes), and the
/// attributes between its Message-Authenticator and that Reply-Message.
pub struct Kept<'a> {
    head: [u8; 2],
    attributes: &'a [u8],
}

impl Kept<'_> {
    /// The bytes to keep, in two parts.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, self.attributes]
    }
}

/// What the duplicate cache keeps of a response: the rest (identifier, length, both
/// authenticators, and an access response's closing Reply-Message, its reason's text) follows
/// from the request, the secret and the reason's number: `resigned` makes the same bytes
/// again. 36 bytes less to keep of every answer, a third of a typical Accept's, and the
/// Reply-Message's 10–68 more.
pub fn kept(response: &[u8]) -> Kept<'_> {
    assert_eq!(
        response.get(HEADER_LEN..FIRST_MA_OFFSET),
        Some(&[dict::MESSAGE_AUTHENTICATOR, 18][..]),
        "a response of this module, its Message-Authenticator first"
    );
    let attributes = &response[FIRST_MA_OFFSET + 16..];
    // The bytes end as a reason's Reply-Message would: `resigned` appends those very bytes
    // (whatever attribute they were part of, the response comes out the same).
    let ending = |text: &[u8]| {
        let before = attributes.strip_suffix(text)?;
        before.strip_suffix(&[dict::REPLY_MESSAGE, 2 + text.len() as u8])
    };
    Reason::ALL
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            Some(Kept {
                head: [response[0], i as u8 + 1],
                attributes: ending(r.message().as_bytes())?,
            })
        })
        .unwrap_or(Kept {
            head: [response[0], 0],
            attributes,
        })
}

/// A reason's number (`kept`) is its index in `Reason::ALL` plus one, in a byte.
const _: () = assert!(Reason::ALL.len() < 256);

/// The response `kept` kept (its parts concatenated), signed again for a retransmission of
/// `request`: the very bytes first sent, signing being deterministic (unless the client's
/// secret changed meanwhile: then signed as the client now expects).
pub fn resigned(request: &Original<'_>, kept: &[u8]) -> Vec<u8> {
    let [code, reason, attributes @ ..] = kept else {
        panic!("a kept response has its code and reason");
    };
    // The echoed Proxy-States are among the kept attributes.
    let request = &Original {
        proxy_state: None,
        ..*request
    };
    let mut resp = response(request, *code);
    resp.raw(attributes);
    if let Some(reason) = usize::from(*reason).checked_sub(1) {
        resp.attr(
            dict::REPLY_MESSAGE,
            Reason::ALL[reason].message().as_bytes(),
        );
    }
    // As `access_response` and `accounting_response` sign (Status-Server's answers, signed
    // otherwise, are never cached).
    if *code == code::ACCOUNTING_RESPONSE {
        sign_accounting(request, resp)
    } else {
        sign(request, resp)
    }
}

fn sign_accounting(request: &Original<'_>, resp: Builder) -> Vec<u8> {
    let mut bytes = resp.finish();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::Allocation;
    use crate::store::{Access, AccessDevice, DeviceType};

    /// What the duplicate cache keeps of each kind of response makes the same bytes again,
    /// Proxy-States included; another request's identifier and authenticator make another.
    #[test]
    fn a_kept_response_is_resigned_to_the_same_bytes() {
        let mut request = Builder::new(code::ACCESS_REQUEST, 9);
        request.attr(dict::PROXY_STATE, b"state-1");
        request.attr(dict::PROXY_STATE, &[7; 200]);
        let request = request.finish();
        let original = Original {
            identifier: 9,
            authenticator: [3; 16],
            secret: b"secret",
            proxy_state: Some(&request),
        };
        let plain = Original {
            proxy_state: None,
            ..original
        };
        let dns = DnsConfig {
            primary: Some([10, 0, 0, 53].into()),
            secondary: Some([10, 0, 0, 54].into()),
        };
        let ctx = |kind| ReplyContext {
            kind,
            dns: &dns,
            interim_interval: Duration::from_secs(60),
        };
        let accept = |proxy| {
            let laptop =
                AccessDevice::new("laptop", DeviceType::Windows, Some("SER1"), None).unwrap();
            Decision::Accept(ReplyPlan {
                user: Access::with_devices("alice", None, [laptop]),
                device: 0,
                address: Some(Allocation {
                    addr: [10, 8, 0, 2].into(),
                    netmask: [255, 255, 0, 0].into(),
                    new: true,
                }),
                proxy,
            })
        };
        let managed = ProxyPush::Managed {
            server: "proxy.example.com:8080".into(),
            exceptions: Some("*.example.com".into()),
        };
        // Access responses closing with a text no reason has, or with a reason's text before
        // another attribute, or with a malformed attribute: kept whole.
        let mut other_text = response(&plain, code::ACCESS_REJECT);
        other_text.attr(dict::REPLY_MESSAGE, b"not a reason's");
        let mut not_last = response(&plain, code::ACCESS_REJECT);
        not_last.attr(
            dict::REPLY_MESSAGE,
            Reason::BadPassword.message().as_bytes(),
        );
        not_last.attr(dict::FRAMED_IP_ADDRESS, &[10, 8, 0, 2]);
        let mut malformed = response(&plain, code::ACCESS_REJECT);
        malformed.attr(
            dict::REPLY_MESSAGE,
            Reason::BadPassword.message().as_bytes(),
        );
        malformed.raw(&[dict::REPLY_MESSAGE, 40, b'x']);
        // Each response, with the reason whose Reply-Message `kept` leaves out (if any).
        let asa = access_response(&plain, &accept(ProxyPush::Nothing), &ctx(GatewayKind::Asa));
        let ocserv = access_response(
            &plain,
            &accept(ProxyPush::Nothing),
            &ctx(GatewayKind::Ocserv),
        );
        // What an ASA's and an ocserv's Accept keep: 1 + 1 + 36 and 1 + 1 + 48 bytes.
        assert_eq!(kept(&asa).parts().concat().len(), 38);
        assert_eq!(kept(&ocserv).parts().concat().len(), 50);
        let mut responses = vec![
            (asa, Some(Reason::Accepted)),
            (ocserv, Some(Reason::Accepted)),
            (
                access_response(&plain, &accept(ProxyPush::NoProxy), &ctx(GatewayKind::Asa)),
                Some(Reason::Accepted),
            ),
            (
                access_response(&original, &accept(managed), &ctx(GatewayKind::Asa)),
                Some(Reason::Accepted),
            ),
            (accounting_response(&original), None),
            (accounting_response(&plain), None),
            (sign(&plain, other_text), None),
            (sign(&plain, not_last), None),
            (sign(&plain, malformed), None),
        ];
        for reason in Reason::ALL.into_iter().filter(|r| *r != Reason::Accepted) {
            for request in [&original, &plain] {
                let reject =
                    access_response(request, &Decision::Reject(reason), &ctx(GatewayKind::Asa));
                responses.push((reject, Some(reason)));
            }
        }
        for (response, left_out) in responses {
            let kept = kept(&response).parts().concat();
            let message = left_out.map_or(0, |r| 2 + r.message().len());
            assert_eq!(kept.len(), response.len() - 36 - message, "{response:?}");
            assert_eq!(kept[1] != 0, left_out.is_some(), "{response:?}");
            assert_eq!(resigned(&original, &kept), response);
            let other = Original {
                identifier: 10,
                authenticator: [4; 16],
                ..original
            };
            let again = resigned(&other, &kept);
            assert_eq!(again[1], 10);
            assert_eq!(again[38..], response[38..], "the same attributes");
            if response[0] != code::ACCOUNTING_RESPONSE {
                assert!(crypto::verify_response(
                    &again,
                    &other.authenticator,
                    Some(FIRST_MA_OFFSET),
                    b"secret"
                ));
            } else {
                let mut expected = again.clone();
                expected[FIRST_MA_OFFSET..FIRST_MA_OFFSET + 16].fill(0);
                crypto::sign_accounting_response(
                    &mut expected,
                    &other.authenticator,
                    Some(FIRST_MA_OFFSET),
                    b"secret",
                );
                assert_eq!(again, expected, "signed for the other request");
            }
        }
    }
}

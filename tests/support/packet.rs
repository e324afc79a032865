//! Raw requests for what radclient cannot send: chosen source addresses, exact
//! retransmissions, malformed datagrams, back-to-back requests to both ports.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ravpnd::radius::crypto;
use ravpnd::radius::packet::Frame;

/// A request under construction; `build` signs it.
pub struct Request {
    pub id: u8,
    pub authenticator: [u8; 16],
    attrs: Vec<u8>,
    message_authenticator: bool,
    code: u8,
}

impl Request {
    pub fn access(id: u8) -> Self {
        let mut authenticator = [0u8; 16];
        for (i, b) in authenticator.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ id ^ rand_byte();
        }
        Self {
            id,
            authenticator,
            attrs: Vec::new(),
            message_authenticator: true,
            code: 1,
        }
    }

    pub fn status(id: u8) -> Self {
        Self {
            code: 12,
            ..Self::access(id)
        }
    }

    /// An Accounting-Request: `build` signs its Request Authenticator (RFC 2866 §3).
    pub fn accounting(id: u8) -> Self {
        Self {
            code: 4,
            authenticator: [0; 16],
            message_authenticator: false,
            ..Self::access(id)
        }
    }

    pub fn attr(mut self, typ: u8, value: &[u8]) -> Self {
        assert!(value.len() <= 253);
        self.attrs.push(typ);
        self.attrs.push(2 + value.len() as u8);
        self.attrs.extend_from_slice(value);
        self
    }

    pub fn user(self, name: &[u8]) -> Self {
        self.attr(1, name)
    }

    pub fn password(self, pw: &str, secret: &str) -> Self {
        let hidden = crypto::encode_pap(pw.as_bytes(), secret.as_bytes(), &self.authenticator);
        self.attr(2, &hidden)
    }

    pub fn without_message_authenticator(mut self) -> Self {
        self.message_authenticator = false;
        self
    }

    /// With a Message-Authenticator (an Accounting-Request's is computed, as FreeRADIUS
    /// does, before its Request Authenticator, with that field zero).
    pub fn with_message_authenticator(mut self) -> Self {
        self.message_authenticator = true;
        self
    }

    pub fn build(&self, secret: &str) -> Vec<u8> {
        let mut p = vec![self.code, self.id, 0, 0];
        p.extend(self.authenticator);
        p.extend(&self.attrs);
        let ma = self.message_authenticator.then(|| {
            p.extend([80, 18]);
            p.extend([0; 16]);
            p.len() - 16
        });
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        if let Some(off) = ma {
            crypto::sign_request(&mut p, off, secret.as_bytes());
        }
        if self.code == 4 {
            crypto::sign_accounting_request(&mut p, secret.as_bytes());
        }
        p
    }
}

fn rand_byte() -> u8 {
    use std::time::{SystemTime, UNIX_EPOCH};
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 251) as u8
}

/// A UDP client bound to `from` (any 127/8 address works on Linux loopback).
pub struct Client {
    pub socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    pub fn new(server: SocketAddr) -> Self {
        Self::from("127.0.0.1", server)
    }

    pub fn from(ip: &str, server: SocketAddr) -> Self {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        Self { socket, server }
    }

    pub fn send(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.server).unwrap();
    }

    /// The next datagram, or `None` after the timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn recv_within(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let r = self.recv();
        self.socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        r
    }
}

/// A verified response: its code and Reply-Message.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u8,
    pub reply_message: Option<String>,
}

/// Checks the response authenticator and the Message-Authenticator (which must come first).
pub fn verify(resp: &[u8], req: &Request, secret: &str) -> Response {
    let frame = Frame::parse(resp).expect("well-framed response");
    assert_eq!(frame.identifier(), req.id, "identifier echoes the request");
    assert_eq!(
        frame.message_authenticator,
        Some(22),
        "Message-Authenticator is the first attribute"
    );
    assert!(
        crypto::verify_response(resp, &req.authenticator, Some(22), secret.as_bytes()),
        "response authenticators verify"
    );
    let mut i = 20;
    let mut reply_message = None;
    while i < resp.len() {
        let (t, l) = (resp[i], resp[i + 1] as usize);
        if t == 18 {
            reply_message = Some(String::from_utf8(resp[i + 2..i + l].to_vec()).unwrap());
        }
        i += l;
    }
    Response {
        code: resp[0],
        reply_message,
    }
}

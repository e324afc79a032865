//! Runs FreeRADIUS's `radclient` and reads what it received.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// What radclient printed; `code` is e.g. "Access-Accept", `None` when nothing valid came back.
#[derive(Debug)]
pub struct Reply {
    pub code: Option<String>,
    pub output: String,
}

impl Reply {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The value radclient printed for an attribute, unquoted.
    pub fn attr(&self, name: &str) -> Option<String> {
        let received = self.output.split("Received ").nth(1)?;
        received.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(" = ")?;
            (k == name).then(|| v.trim_matches('"').to_owned())
        })
    }
}

/// Sends one request: `kind` is "auth" or "status"; `attrs` in radclient's `A=v,B=w` form.
pub fn send(addr: SocketAddr, kind: &str, secret: &str, attrs: &str) -> Reply {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "2"])
        .arg(addr.to_string())
        .arg(kind)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient must be installed (Debian freeradius-utils); .ci/run installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attrs.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = output.lines().find_map(|l| {
        l.strip_prefix("Received ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    });
    // radclient prints "Received" only for responses whose authenticator verified.
    Reply { code, output }
}

/// An Access-Request with PAP and a Message-Authenticator.
pub fn auth(addr: SocketAddr, user: &str, password: &str) -> Reply {
    send(
        addr,
        "auth",
        super::daemon::SECRET,
        &format!("User-Name=\"{user}\",User-Password=\"{password}\",Message-Authenticator=0x00"),
    )
}

/// An AnyConnect-like Access-Request: PAP, Message-Authenticator and Cisco-AVPair device data.
pub fn anyconnect(addr: SocketAddr, user: &str, password: &str, avpairs: &[&str]) -> Reply {
    let mut attrs = format!(
        "User-Name=\"{user}\",User-Password=\"{password}\",Message-Authenticator=0x00,NAS-Port-Type=Virtual"
    );
    for pair in avpairs {
        attrs.push_str(&format!(",Cisco-AVPair=\"{pair}\""));
    }
    send(addr, "auth", super::daemon::SECRET, &attrs)
}

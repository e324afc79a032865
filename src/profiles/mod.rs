//! Profile distribution (SPEC §2.4): for each (user, assigned device), a one-time style
//! download link mailed to the user; the link expires and counts its downloads; the status
//! follows the device to "ready" once it has registered.
//!
//! The clock and the mailer are injected, so expiry is tested without sleeping and the
//! link mail without a relay.

pub mod http;
mod xml;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Problem;
use crate::store::{AuthMethod, DeviceRecord, DownloadRefusal, ProfileRecord, Store, StoreError};

/// Download connections open at once. Downloads are rare and small: this is far more than
/// real use needs, and far below a service's usual open-files limit (1024 at the least).
pub const MAX_CONNECTIONS: usize = 256;

/// The longest a download connection stays open, whatever it does: bounds a slow request or
/// response and HTTP/2 connections, which the HTTP/1 header-read timeout does not cover.
pub const MAX_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// `[profiles]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Public HTTP(S) listener for the download links; absent = no download service.
    pub listen: Option<SocketAddr>,
    /// The links' base, as users reach the listener (e.g. through a reverse proxy).
    pub base_url: String,
    /// The gateway the profile points the client at (host name or address).
    pub gateway_host: String,
    /// The name the client shows for it; default: `gateway_host`.
    pub gateway_name: Option<String>,
    /// PEM certificate chain and key: serve HTTPS directly (else plain HTTP, for a TLS proxy).
    /// The key: RSA (PKCS#1 or PKCS#8), or ECDSA/Ed25519 in PKCS#8.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Subject of the link mail unless `profile send --subject` says otherwise.
    pub subject: String,
    /// Requests for unknown, expired or used-up links allowed per source address and minute;
    /// then those answer 429 (a working link is always served: a proxy is one address).
    pub invalid_per_minute: u32,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self {
            listen: None,
            base_url: "http://127.0.0.1:8080".into(),
            gateway_host: "vpn.example.com".into(),
            gateway_name: None,
            cert: None,
            key: None,
            subject: "Your VPN profile".into(),
            invalid_per_minute: 10,
        }
    }
}

impl ProfilesConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut problem = |k: &str, why: &str| p.push(Problem::at(prefix, k, why));
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            problem("base_url", "must start with https:// (or http://)");
        }
        if self.gateway_host.trim().is_empty() {
            problem("gateway_host", "must not be empty");
        }
        if self.cert.is_some() != self.key.is_some() {
            problem("cert", "cert and key go together");
        }
        if self.invalid_per_minute == 0 {
            problem("invalid_per_minute", "must be at least 1");
        }
        p
    }
}

/// Unix seconds; injected so tests can move time.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        crate::store::now_secs()
    }
}

pub type MailFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Sends the link mail.
pub trait LinkMailer: Send + Sync {
    fn send<'a>(&'a self, to: &'a str, subject: &'a str, body: String) -> MailFuture<'a>;
}

/// SPEC §2.4 statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    SendMail,
    WaitingForDownload,
    UrlExpired,
    WaitingForRegistration,
    Ready,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::SendMail => "send mail",
            Status::WaitingForDownload => "waiting for download",
            Status::UrlExpired => "URL expired",
            Status::WaitingForRegistration => "waiting for device-ID registration",
            Status::Ready => "ready",
        }
    }

    pub fn of(rec: Option<&ProfileRecord>, device: &DeviceRecord, now: u64) -> Self {
        let Some(rec) = rec.filter(|r| r.sent_at.is_some()) else {
            return Status::SendMail;
        };
        if rec.downloads_used == 0 {
            return if rec.expires_at.is_none_or(|e| now >= e) {
                Status::UrlExpired
            } else {
                Status::WaitingForDownload
            };
        }
        let needs_registration =
            device.device_auth && device.method == AuthMethod::Serial && device.serial.is_none();
        if needs_registration {
            Status::WaitingForRegistration
        } else {
            Status::Ready
        }
    }
}

/// One profile as the admin sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    pub user: String,
    pub device: String,
    pub status: Status,
    pub email: Option<String>,
    pub sent_at: Option<u64>,
    pub expires_at: Option<u64>,
    pub downloads_used: u32,
    /// `None`: unlimited.
    pub downloads_allowed: Option<u32>,
}

/// What `profile send` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Recipient; default: the user's address.
    pub email: Option<String>,
    pub subject: Option<String>,
    /// 1–30.
    pub valid_days: u32,
    /// 1–5, or `None` for unlimited.
    pub downloads: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("device `{device}` is not assigned to `{user}`")]
    NotAssigned { device: String, user: String },
    #[error("the mail could not be sent: {0}")]
    Mail(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A download: the XML and the file name to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub xml: String,
    pub filename: String,
}

pub struct Profiles {
    store: Store,
    config: ProfilesConfig,
    clock: Arc<dyn Clock>,
    mailer: Arc<dyn LinkMailer>,
}

pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Profiles {
    pub fn new(
        store: Store,
        config: ProfilesConfig,
        clock: Arc<dyn Clock>,
        mailer: Arc<dyn LinkMailer>,
    ) -> Self {
        Self {
            store,
            config,
            clock,
            mailer,
        }
    }

    /// Every (user, assigned device) with its status.
    pub fn list(&self) -> Result<Vec<ProfileView>, ProfileError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for d in self.store.devices()? {
            let Some(user) = d.owner.clone() else {
                continue;
            };
            let rec = self.store.profile(&user, &d.name)?;
            out.push(view(&user, &d, rec.as_ref(), now));
        }
        out.sort_by(|a, b| (&a.user, &a.device).cmp(&(&b.user, &b.device)));
        Ok(out)
    }

    /// Whether links can be sent as `req` asks, whoever for.
    pub fn check_request(&self, req: &SendRequest) -> Result<(), ProfileError> {
        // Else the mail would carry a link that nothing serves. (A conflict with the config,
        // not a bad request: 409, as the admin API maps it.)
        if self.config.listen.is_none() {
            return Err(ProfileError::Store(StoreError::Conflict(
                "profile links cannot be sent: the download listener is not configured \
                 (set [profiles] listen, and base_url as users reach it, then restart ravpnd)"
                    .into(),
            )));
        }
        if !(1..=30).contains(&req.valid_days) {
            return Err(ProfileError::Invalid(format!(
                "valid days must be 1 to 30, not {}",
                req.valid_days
            )));
        }
        if let Some(n) = req.downloads {
            if !(1..=5).contains(&n) {
                return Err(ProfileError::Invalid(format!(
                    "downloads must be 1 to 5 or unlimited, not {n}"
                )));
            }
        }
        Ok(())
    }

    /// Creates a new link (invalidating the previous one), mails it, and records it.
    pub async fn send(
        &self,
        user: &str,
        device: &str,
        req: &SendRequest,
    ) -> Result<ProfileView, ProfileError> {
        self.check_request(req)?;
        let u = self
            .store
            .user(user)?
            .ok_or_else(|| ProfileError::NotFound(format!("user `{user}`")))?;
        let d = self
            .store
            .device(device)?
            .ok_or_else(|| ProfileError::NotFound(format!("device `{device}`")))?;
        if d.owner.as_deref() != Some(user) {
            return Err(ProfileError::NotAssigned {
                device: device.to_owned(),
                user: user.to_owned(),
            });
        }
        let email = req
            .email
            .clone()
            .or_else(|| u.email.clone())
            .ok_or_else(|| ProfileError::Invalid(format!(
                "no address for `{user}`: give --email, or set one with `ravpnd user set {user} --email ADDR`"
            )))?;
        if email.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ProfileError::Invalid(format!(
                "`{email}` is not a mail address"
            )));
        }

        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex(&raw);
        let now = self.clock.now();
        let expires = now + u64::from(req.valid_days) * 86_400;
        let link = format!(
            "{}/profile/{token}",
            self.config.base_url.trim_end_matches('/')
        );
        let downloads = req.downloads.map_or("unlimited downloads".to_owned(), |n| {
            format!("{n} download(s)")
        });
        let body = format!(
            "Hello {user},\n\n\
             download the VPN profile for your device {device} here:\n\n  {link}\n\n\
             The link works until {} ({downloads}). Install it in Cisco Secure Client /\n\
             AnyConnect, then connect once: the first connection registers your device and\n\
             is refused with \"reconnect\"; the next one connects.\n",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires)
            ),
        );
        let subject = req
            .subject
            .clone()
            .unwrap_or_else(|| self.config.subject.clone());
        if let Err(e) = self.mailer.send(&email, &subject, body).await {
            // The admin sees it too, but `send --all` may run longer than anyone watches.
            tracing::warn!(%user, %device, error = %e, "profile link mail failed");
            return Err(ProfileError::Mail(e));
        }
        // Recorded only once the mail is out: a failed send leaves the old link working.
        let rec = ProfileRecord {
            user: user.to_owned(),
            device: device.to_owned(),
            email: Some(email),
            sent_at: Some(now),
            expires_at: Some(expires),
            downloads_allowed: req.downloads,
            downloads_used: 0,
            last_download: None,
            token_hash: Some(token_hash(&token)),
        };
        self.store.set_profile_link(&rec).await?;
        tracing::info!(%user, %device, "profile link sent");
        Ok(view(user, &d, Some(&rec), now))
    }

    /// Serves a download for `token`, counting it.
    pub async fn download(
        &self,
        token: &str,
    ) -> Result<Result<Download, DownloadRefusal>, ProfileError> {
        // Tokens are 64 hex characters; anything else cannot match and costs no store read.
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(DownloadRefusal::Unknown));
        }
        let rec = match self
            .store
            .count_download(&token_hash(&token.to_ascii_lowercase()), self.clock.now())
            .await?
        {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // A device unassigned since the link was sent: the link is dead.
        let assigned = self
            .store
            .device(&rec.device)?
            .is_some_and(|d| d.owner.as_deref() == Some(rec.user.as_str()));
        if !assigned {
            return Ok(Err(DownloadRefusal::Gone));
        }
        tracing::info!(user = %rec.user, device = %rec.device, used = rec.downloads_used, "profile downloaded");
        let name = self
            .config
            .gateway_name
            .clone()
            .unwrap_or_else(|| self.config.gateway_host.clone());
        Ok(Ok(Download {
            xml: xml::anyconnect_profile(&name, &self.config.gateway_host),
            filename: format!("{}.xml", sanitize(&name)),
        }))
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "vpn".into()
    } else {
        s
    }
}

fn view(user: &str, d: &DeviceRecord, rec: Option<&ProfileRecord>, now: u64) -> ProfileView {
    ProfileView {
        user: user.to_owned(),
        device: d.name.clone(),
        status: Status::of(rec, d, now),
        email: rec.and_then(|r| r.email.clone()),
        sent_at: rec.and_then(|r| r.sent_at),
        expires_at: rec.and_then(|r| r.expires_at),
        downloads_used: rec.map_or(0, |r| r.downloads_used),
        downloads_allowed: rec.and_then(|r| r.downloads_allowed),
    }
}

#[cfg(test)]
mod tests;

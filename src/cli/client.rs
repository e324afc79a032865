//! The admin-API client the CLI uses. It finds the daemon and its token from the same config.

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{token, ErrorBody};
use crate::config::Config;

/// How long a slow request (an import) may take before the CLI gives up.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(3600);

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut addr = config.admin.addr;
        if addr.port() == 0 {
            let file = config.admin.addr_file(&config.store);
            addr = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    anyhow!(
                        "[admin] addr has port 0 and {} does not name the running daemon's address; is it running?",
                        file.display()
                    )
                })?;
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let token = match &config.admin.token {
            Some(t) => t.expose().to_owned(),
            None => {
                let path = config.admin.token_file(&config.store);
                token::read(&path)
                    .map_err(|e| {
                        anyhow!(
                            "cannot read the admin token {}: {e}\n\
                             (the daemon creates it on its first start with this config; \
                             is it running, and may you read its store directory?)",
                            path.display()
                        )
                    })?
                    .expose()
                    .to_owned()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("while building the HTTP client")?;
        Ok(Self {
            base: format!("http://{addr}/api/v1"),
            token,
            http,
        })
    }

    /// Sends a request; maps transport and API failures to messages for a person.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Option<R>> {
        self.call_within(method, path, body, None).await
    }

    /// [`AdminClient::call`] for a request that may take longer than the usual 30 s: an
    /// import hashes each password it carries (1,500 took over 30 s), and a request given up
    /// on imports nothing.
    pub async fn call_slow<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Option<R>> {
        self.call_within(method, path, body, Some(SLOW_REQUEST))
            .await
    }

    async fn call_within<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<Option<R>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "the ravpnd daemon is not running (nothing answers at {}); start it with `ravpnd serve`",
                    self.base.trim_end_matches("/api/v1")
                )
            } else {
                anyhow!("admin API request failed: {e}")
            }
        })?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return resp
                .json()
                .await
                .map(Some)
                .context("while reading the admin API answer");
        }
        let message = resp
            .json::<ErrorBody>()
            .await
            .map(|b| {
                let mut m = b.error;
                for p in b.problems {
                    m.push_str("\n  ");
                    m.push_str(&p);
                }
                m
            })
            .unwrap_or_else(|_| status.to_string());
        match status {
            StatusCode::UNAUTHORIZED => bail!(
                "the daemon refused the admin token ({message}); check [admin] token in the config"
            ),
            _ => bail!("{message}"),
        }
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

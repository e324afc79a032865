//! The admin-API client the CLI uses. It finds the daemon and its token from the same config.

use anyhow::{anyhow, Context};
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
        let text = resp.text().await.unwrap_or_default();
        Err(ApiFailure::from_answer(status, &text).into())
    }
}

/// An error answer of the admin API. Kept whole so that a caller can merge its `problems`
/// with its own (the import does); displayed as a message for a person.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub error: String,
    pub problems: Vec<String>,
}

impl ApiFailure {
    /// The daemon's own errors are JSON ([`ErrorBody`]); those of the HTTP layer (a body too
    /// large, a malformed request) are plain text or empty, and get a message here.
    fn from_answer(status: StatusCode, text: &str) -> Self {
        let (error, problems) = match serde_json::from_str::<ErrorBody>(text) {
            Ok(b) => (b.error, b.problems),
            Err(_) if status == StatusCode::PAYLOAD_TOO_LARGE => (
                format!(
                    "the daemon refused the request as too large ({status}): imports may \
                     send up to {} MiB; split the file into smaller ones",
                    crate::admin::MAX_IMPORT_BODY / (1024 * 1024)
                ),
                Vec::new(),
            ),
            Err(_) => {
                let text: String = text.trim().chars().take(300).collect();
                let error = if text.is_empty() {
                    format!("the admin API answered {status}")
                } else {
                    format!("the admin API answered {status}: {text}")
                };
                (error, Vec::new())
            }
        };
        Self {
            status,
            error,
            problems,
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == StatusCode::UNAUTHORIZED {
            return write!(
                f,
                "the daemon refused the admin token ({}); check [admin] token in the config",
                self.error
            );
        }
        f.write_str(&self.error)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_a_json_body_get_a_message() {
        let e = ApiFailure::from_answer(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded");
        assert!(e.to_string().contains("too large") && e.to_string().contains("split the file"));
        let e = ApiFailure::from_answer(StatusCode::UNPROCESSABLE_ENTITY, "missing field `x`\n");
        assert_eq!(
            e.to_string(),
            "the admin API answered 422 Unprocessable Entity: missing field `x`"
        );
        let e = ApiFailure::from_answer(StatusCode::BAD_GATEWAY, "");
        assert_eq!(e.to_string(), "the admin API answered 502 Bad Gateway");
        let e = ApiFailure::from_answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"2 bad row(s)","problems":["line 2: a","line 3: b"]}"#,
        );
        assert_eq!(e.to_string(), "2 bad row(s)\n  line 2: a\n  line 3: b");
        assert_eq!(e.problems.len(), 2);
    }
}

//! Azure AD / Entra ID: the password is checked with the OAuth 2.0 resource-owner password
//! credentials grant (ROPC) on `{authority}/{domain}/oauth2/v2.0/token`; users are listed
//! with Microsoft Graph `/v1.0/users`, following `@odata.nextLink`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use super::ldap::DirectoryUser;
use super::AuthError;
use crate::config::{Problem, Secret};
use crate::metrics::METRICS;

/// `[auth.azure_ad]` (SPEC §1.1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AzureAdConfig {
    /// The application (client) ID registered for ravpnd.
    pub application_id: String,
    pub application_secret: Secret,
    /// The tenant's domain, e.g. `example.onmicrosoft.com`; users are `user@domain`.
    pub domain: String,
    /// Account used to list users through Microsoft Graph.
    pub admin_user: String,
    pub admin_password: Secret,
    /// Token endpoint base; change it for a sovereign cloud or a test server.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Microsoft Graph base.
    #[serde(default = "default_graph")]
    pub graph_url: String,
    /// Longest wait for one call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the tenant's OpenID discovery document is fetched to know whether Entra ID
    /// answers (`/readyz`); "0s" turns the check off.
    #[serde(default = "default_health_check_interval", with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Password checks sent to Entra ID at once; more wait for one to finish, up to
    /// `timeout`. A reconnect storm would otherwise open a connection per request and be
    /// throttled (HTTP 429) as a whole.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph() -> String {
    "https://graph.microsoft.com".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_health_check_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    32
}

impl AzureAdConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut need = |k: &str, empty: bool| {
            if empty {
                p.push(Problem::at(prefix, k, "is required"));
            }
        };
        need("application_id", self.application_id.trim().is_empty());
        need("application_secret", self.application_secret.is_empty());
        need("domain", self.domain.trim().is_empty());
        need("admin_user", self.admin_user.trim().is_empty());
        need("admin_password", self.admin_password.is_empty());
        if self.max_in_flight == 0 {
            p.push(Problem::at(prefix, "max_in_flight", "must be at least 1"));
        }
        for (k, v) in [
            ("authority", &self.authority),
            ("graph_url", &self.graph_url),
        ] {
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                p.push(Problem::at(
                    prefix,
                    k,
                    format!("`{v}` is not an http(s) URL"),
                ));
            }
        }
        p
    }

    /// The configured admin's UPN (`admin_user` with or without the domain).
    fn upn(&self, name: &str) -> String {
        let n = name.rsplit('\\').next().unwrap_or(name);
        if n.contains('@') {
            n.to_owned()
        } else {
            format!("{n}@{}", self.domain)
        }
    }

    /// A user's name as typed → the UPN whose password is checked: always `key@domain`, the
    /// account the store key names. `None` for another domain's suffix: `alice@fabrikam.com`
    /// is another account than the tenant domain's `alice`, whose store key it would share.
    fn user_upn(&self, name: &str) -> Option<String> {
        let n = name.rsplit('\\').next().unwrap_or(name);
        let local = match n.rsplit_once('@') {
            Some((local, suffix)) => suffix.eq_ignore_ascii_case(&self.domain).then_some(local)?,
            None => n,
        };
        (!local.is_empty() && !local.contains('@')).then(|| format!("{local}@{}", self.domain))
    }

    /// Whether a directory UPN is in the tenant domain (only those can log in as their key).
    fn in_domain(&self, upn: &str) -> bool {
        upn.rsplit_once('@')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case(&self.domain))
    }
}

/// Maps the AADSTS code of a refused token request to a reason.
fn aadsts(code: u64) -> AuthError {
    match code {
        50126 => AuthError::BadPassword,
        50034 => AuthError::UnknownUser,
        50057 => AuthError::AccountDisabled,
        50053 => AuthError::LockedOut,
        50055 => AuthError::PasswordExpired,
        50056 => AuthError::BadPassword,
        50076 | 50079 | 50074 => AuthError::MfaRequired,
        53003 | 50105 => AuthError::NotPermitted,
        _ => AuthError::Internal(format!("AADSTS{code}")),
    }
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error_codes: Vec<u64>,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(Deserialize)]
struct GraphUser {
    #[serde(rename = "userPrincipalName")]
    upn: Option<String>,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    #[serde(rename = "accountEnabled", default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct GraphPage {
    value: Vec<GraphUser>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
}

pub struct AzureVerifier {
    config: AzureAdConfig,
    http: reqwest::Client,
    /// Why Entra ID was last found unreachable; `None` once it answers again.
    down: parking_lot::Mutex<Option<String>>,
    /// `max_in_flight` password checks at once.
    permits: tokio::sync::Semaphore,
}

impl AzureVerifier {
    pub fn new(config: &AzureAdConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.max_in_flight.max(1))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            config: config.clone(),
            http,
            down: parking_lot::Mutex::new(None),
            permits: tokio::sync::Semaphore::new(config.max_in_flight.max(1)),
        })
    }

    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.config.authority.trim_end_matches('/'),
            self.config.domain
        )
    }

    /// `None` while Entra ID answers; else why it did not, last time it was asked (by a
    /// request or by the health check).
    pub fn unreachable(&self) -> Option<String> {
        self.down.lock().clone()
    }

    fn mark(&self, down: Option<String>) {
        let mut d = self.down.lock();
        match (&*d, &down) {
            (None, Some(why)) => tracing::warn!(%why, "Entra ID unreachable"),
            (Some(_), None) => tracing::info!("Entra ID reachable again"),
            _ => {}
        }
        *d = down;
    }

    /// Fetches the tenant's OpenID discovery document, which needs no credentials, every
    /// `health_check_interval` until `shutdown`.
    pub async fn health_check(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let interval = self.config.health_check_interval;
        if interval.is_zero() {
            return;
        }
        let url = format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            self.config.authority.trim_end_matches('/'),
            self.config.domain
        );
        loop {
            let down = match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("Entra ID ({url}) answered {}", r.status())),
                Err(e) => Some(format!("Entra ID ({url}) unreachable: {e}")),
            };
            self.mark(down);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// The store key of a directory user: the lower-cased name before `@`.
    pub fn user_key(&self, name: &str) -> String {
        let n = name.rsplit('\\').next().unwrap_or(name);
        n.split('@').next().unwrap_or(n).to_lowercase()
    }

    async fn token(&self, user: &str, password: &str) -> Result<String, AuthError> {
        let url = self.token_url();
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(&url)
            .form(&[
                ("client_id", self.config.application_id.as_str()),
                ("client_secret", self.config.application_secret.expose()),
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await;
        METRICS
            .directory_seconds
            .with_label_values(&["azure"])
            .observe(started.elapsed().as_secs_f64());
        let resp = resp.map_err(|e| {
            METRICS.directory_errors.with_label_values(&["azure"]).inc();
            tracing::warn!(error = %e, "Entra ID token endpoint unreachable");
            self.mark(Some(format!("Entra ID ({url}) unreachable: {e}")));
            AuthError::DirectoryUnavailable
        })?;
        let status = resp.status();
        self.mark(if status.is_server_error() {
            Some(format!("Entra ID ({url}) answered {status}"))
        } else {
            None
        });
        if status.is_success() {
            let t: Token = resp
                .json()
                .await
                .map_err(|e| AuthError::Internal(format!("token answer: {e}")))?;
            return Ok(t.access_token);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            METRICS.directory_errors.with_label_values(&["azure"]).inc();
            return Err(AuthError::DirectoryUnavailable);
        }
        let e: TokenError = resp
            .json()
            .await
            .map_err(|e| AuthError::Internal(format!("token error answer: {e}")))?;
        let code = e.error_codes.first().copied().or_else(|| {
            e.error_description
                .strip_prefix("AADSTS")
                .and_then(|s| s.split(':').next())
                .and_then(|s| s.parse().ok())
        });
        Err(code.map_or(AuthError::BadPassword, aadsts))
    }

    /// Checks a password with the ROPC grant.
    pub async fn bind_user(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        if password.is_empty() {
            return Err(AuthError::BadPassword);
        }
        let password = std::str::from_utf8(password).map_err(|_| AuthError::BadPassword)?;
        let upn = self.config.user_upn(name).ok_or(AuthError::UnknownUser)?;
        let _permit = tokio::time::timeout(self.config.timeout, self.permits.acquire())
            .await
            // ravpnd's own queue, not Entra ID, was too long: no directory error.
            .map_err(|_| AuthError::DirectoryUnavailable)?
            .map_err(|_| AuthError::DirectoryUnavailable)?;
        self.token(&upn, password).await.map(|_| ())
    }

    /// Users through Microsoft Graph, all pages.
    pub async fn list_users(&self, only: Option<&str>) -> Result<Vec<DirectoryUser>, AuthError> {
        let admin = self.config.upn(&self.config.admin_user);
        let token = self
            .token(&admin, self.config.admin_password.expose())
            .await?;
        let mut url = format!(
            "{}/v1.0/users?$select=userPrincipalName,displayName,accountEnabled",
            self.config.graph_url.trim_end_matches('/')
        );
        let mut out = Vec::new();
        loop {
            let page: GraphPage = self
                .http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|_| AuthError::DirectoryUnavailable)?
                .error_for_status()
                .map_err(|e| AuthError::Internal(format!("graph: {e}")))?
                .json()
                .await
                .map_err(|e| AuthError::Internal(format!("graph answer: {e}")))?;
            for u in page.value {
                // Another domain's users could not log in as their key: not candidates.
                let Some(upn) = u.upn.filter(|upn| self.config.in_domain(upn)) else {
                    continue;
                };
                let sam = self.user_key(&upn);
                out.push(DirectoryUser {
                    sam_account_name: sam,
                    user_principal_name: Some(upn),
                    display_name: u.display_name,
                    enabled: u.enabled.unwrap_or(true),
                });
            }
            match page.next {
                Some(n) => url = n,
                None => break,
            }
        }
        if let Some(name) = only {
            let key = self.user_key(name);
            out.retain(|u| u.sam_account_name == key);
        }
        out.sort_by(|a, b| a.sam_account_name.cmp(&b.sam_account_name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_map_to_the_tenant_domain_only() {
        let c: AzureAdConfig = toml::from_str(
            "application_id = \"a\"\napplication_secret = \"s\"\ndomain = \"contoso.com\"\nadmin_user = \"admin\"\nadmin_password = \"p\"",
        )
        .unwrap();
        for name in [
            "alice",
            "alice@contoso.com",
            "alice@CONTOSO.COM",
            "CONTOSO\\alice",
        ] {
            assert_eq!(
                c.user_upn(name).as_deref(),
                Some("alice@contoso.com"),
                "{name}"
            );
        }
        for name in [
            "alice@fabrikam.com",
            "alice@contoso.com.evil",
            "a@b@contoso.com",
            "",
            "@contoso.com",
        ] {
            assert_eq!(c.user_upn(name), None, "{name}");
        }
        assert!(c.in_domain("Alice@Contoso.com") && !c.in_domain("alice@fabrikam.com"));
    }

    #[test]
    fn aadsts_codes_map_to_reasons() {
        assert!(matches!(aadsts(50126), AuthError::BadPassword));
        assert!(matches!(aadsts(50034), AuthError::UnknownUser));
        assert!(matches!(aadsts(50057), AuthError::AccountDisabled));
        assert!(matches!(aadsts(50053), AuthError::LockedOut));
        assert!(matches!(aadsts(50055), AuthError::PasswordExpired));
        assert!(matches!(aadsts(50076), AuthError::MfaRequired));
        assert!(matches!(aadsts(50079), AuthError::MfaRequired));
        assert!(matches!(aadsts(1), AuthError::Internal(_)));
    }
}

//! The admin HTTP API (bearer token), `/metrics` and `/healthz`. The CLI is its client.

mod devices;
mod import;
mod profiles;
mod sessions;
pub mod token;
mod users;

pub use devices::{Assignment, DeviceInput, DevicePatch, DeviceView};
pub use import::{DeviceRow, Imported, UserRow, MAX_BODY as MAX_IMPORT_BODY};
pub use profiles::{SendBody, SendOutcome};
pub use users::UserView;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;

use crate::auth::local::LocalVerifier;
use crate::config::Secret;
use crate::metrics::METRICS;
use crate::radius::kernel_drops::KernelDrops;
use crate::radius::listener::Handler;
use crate::store::{Store, StoreError};

/// The admin API's connections at once: the CLI, a scraper or two. It listens on loopback
/// by default; the cap keeps a flood from taking the daemon's file descriptors all the same.
pub const MAX_CONNECTIONS: usize = 64;

/// The longest an admin connection stays open: an import of 100,000 users with passwords
/// hashes for minutes (the CLI waits up to an hour), so only a bound against leaks.
pub const MAX_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// What the handlers share.
pub struct AdminState {
    pub store: Store,
    pub local: Arc<LocalVerifier>,
    pub token: Secret,
    /// The request path: live settings and the address pools.
    pub handler: Arc<Handler>,
    pub profiles: Arc<crate::profiles::Profiles>,
    /// The Active Directory, when it is the source: users must exist there to be added.
    pub directory: Option<Arc<dyn crate::auth::UserDirectory>>,
    /// The RADIUS sockets' kernel drop counters, read at each scrape.
    pub kernel_drops: KernelDrops,
}

impl AdminState {
    /// `[devices] max_per_user` as the last reload left it (the request path's copy).
    pub fn max_devices(&self) -> u32 {
        self.handler.live().settings.devices.max_per_user
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/users", get(users::list).post(users::add))
        .route("/users/candidates", get(users::candidates))
        .route("/users/{name}", delete(users::remove).patch(users::update))
        .route("/users/{name}/password", put(users::set_password))
        .route("/devices", get(devices::list).post(devices::add))
        .route(
            "/devices/{name}",
            get(devices::show)
                .patch(devices::update)
                .delete(devices::remove),
        )
        .route("/devices/{name}/reset-serial", post(devices::reset_serial))
        .route("/assignments", post(devices::assign))
        .route("/assignments/{user}/{device}", delete(devices::unassign))
        .route(
            "/sessions",
            get(sessions::list).delete(sessions::release_nas),
        )
        .route("/sessions/{addr}", delete(sessions::release))
        .route("/profiles", get(profiles::list))
        .route("/profiles/send", post(profiles::send))
        .nest(
            "/import",
            Router::new()
                .route("/users", post(import::users))
                .route("/devices", post(import::devices))
                .route("/users/check", post(import::check_users))
                .route("/devices/check", post(import::check_devices))
                .layer(DefaultBodyLimit::max(import::MAX_BODY)),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .with_state(state)
}

/// Ready when the store answers and can still write, an authentication source is selected
/// and, for a directory source, its health checks find at least one server reachable (the
/// local source lives in the store).
async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if let Err(e) = s.store.user("") {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response();
    }
    if let Some(why) = s.store.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store cannot write (restart the daemon once the cause is fixed): {why}\n"),
        )
            .into_response();
    }
    if !s.handler.policy().source_selected() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no authentication source selected\n",
        )
            .into_response();
    }
    if let Some(why) = s.directory.as_ref().and_then(|d| d.unreachable()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    s.kernel_drops.refresh();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.render(),
    )
}

async fn require_token(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()));
    match presented {
        Some(token) if state.token.matches(token) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token")
                .into_response();
            // RFC 7235 §3.1: "The server generating a 401 response MUST send a
            // WWW-Authenticate header field containing at least one challenge".
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

/// The credentials of an `Authorization: Bearer …` header. RFC 7235 §2.1: the scheme is
/// "a case-insensitive token", followed by one or more spaces.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii_start();
    (scheme.eq_ignore_ascii_case(b"Bearer") && !token.is_empty()).then_some(token)
}

/// An API error: status plus a message meant for the CLI user.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    problems: Vec<String>,
}

#[derive(Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Itemized problems (e.g. one per bad import row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn with_problems(
        status: StatusCode,
        message: impl Into<String>,
        problems: Vec<String>,
    ) -> Self {
        Self {
            problems,
            ..Self::new(status, message)
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Exists(_) => StatusCode::CONFLICT,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => {
                tracing::error!(error = %e, "store failure in admin API");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                problems: self.problems,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc"] {
            assert_eq!(
                bearer_token(header.as_bytes()),
                Some(&b"abc"[..]),
                "{header}"
            );
        }
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(header.as_bytes()), None, "{header}");
        }
    }
}

//! The admin HTTP API (bearer token), `/metrics` and `/healthz`. The CLI is its client.

pub mod token;
mod users;

pub use users::UserView;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;

use crate::auth::local::LocalVerifier;
use crate::config::Secret;
use crate::metrics::METRICS;
use crate::store::{Store, StoreError};

/// What the handlers share.
pub struct AdminState {
    pub store: Store,
    pub local: Arc<LocalVerifier>,
    pub token: Secret,
}

pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/users", get(users::list).post(users::add))
        .route("/users/{name}", axum::routing::delete(users::remove))
        .route("/users/{name}/password", put(users::set_password))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

async fn require_token(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if state.token.matches(token) => next.run(req).await,
        _ => {
            ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token").into_response()
        }
    }
}

/// An API error: status plus a message meant for the CLI user.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

#[derive(Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
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
            }),
        )
            .into_response()
    }
}

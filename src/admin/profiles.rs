//! `/api/v1/profiles`: profile status, and sending download links.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::profiles::{ProfileError, ProfileView, SendRequest, Status};

impl From<ProfileError> for ApiError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::Invalid(m) => ApiError::bad_request(m),
            ProfileError::NotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{m} not found"))
            }
            e @ ProfileError::NotAssigned { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            ProfileError::Mail(m) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the mail could not be sent: {m}"),
            ),
            ProfileError::Store(e) => e.into(),
        }
    }
}

/// `profile send`: one profile, or `all` in "send mail" status that have an address.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendBody {
    pub user: Option<String>,
    pub device: Option<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(flatten)]
    pub request: SendRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SendOutcome {
    pub sent: Vec<ProfileView>,
    /// Profiles skipped by `--all` (no address) or whose mail failed, with why.
    pub skipped: Vec<String>,
}

pub async fn list(State(s): State<Arc<AdminState>>) -> Result<Json<Vec<ProfileView>>, ApiError> {
    Ok(Json(s.profiles.list()?))
}

pub async fn send(
    State(s): State<Arc<AdminState>>,
    Json(body): Json<SendBody>,
) -> Result<Json<SendOutcome>, ApiError> {
    if !body.all {
        let (Some(user), Some(device)) = (&body.user, &body.device) else {
            return Err(ApiError::bad_request("give USER and DEVICE, or --all"));
        };
        let v = s.profiles.send(user, device, &body.request).await?;
        return Ok(Json(SendOutcome {
            sent: vec![v],
            skipped: Vec::new(),
        }));
    }
    if body.request.email.is_some() {
        return Err(ApiError::bad_request(
            "--all sends to each user's own address; --email cannot go with it",
        ));
    }
    let mut out = SendOutcome {
        sent: Vec::new(),
        skipped: Vec::new(),
    };
    for p in s.profiles.list()? {
        if p.status != Status::SendMail {
            continue;
        }
        let has_address = s.store.user(&p.user)?.is_some_and(|u| u.email.is_some());
        if !has_address {
            out.skipped
                .push(format!("{}/{}: no address", p.user, p.device));
            continue;
        }
        match s.profiles.send(&p.user, &p.device, &body.request).await {
            Ok(v) => out.sent.push(v),
            Err(ProfileError::Invalid(m)) => return Err(ApiError::bad_request(m)),
            Err(e) => out.skipped.push(format!("{}/{}: {e}", p.user, p.device)),
        }
    }
    Ok(Json(out))
}

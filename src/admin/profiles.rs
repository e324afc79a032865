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

/// Mails `profile send --all` has under way at once.
const SEND_CONCURRENCY: usize = 4;

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
    // What would refuse every profile refuses the request, before any mail.
    s.profiles.check_request(&body.request)?;
    let mut out = SendOutcome {
        sent: Vec::new(),
        skipped: Vec::new(),
    };
    let mut due = Vec::new();
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
        due.push((p.user, p.device));
    }
    // A few mails at once: a slow relay then costs its timeout once per few profiles, not
    // once per profile. Tasks of their own: a request given up on goes on sending unseen,
    // and each mail that went out is recorded.
    let permits = Arc::new(tokio::sync::Semaphore::new(SEND_CONCURRENCY));
    let sends: Vec<_> = due
        .into_iter()
        .map(|(user, device)| {
            let (s, request, permits) = (s.clone(), body.request.clone(), permits.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let sent = s.profiles.send(&user, &device, &request).await;
                (user, device, sent)
            })
        })
        .collect();
    for send in sends {
        let (user, device, sent) = send.await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("a send failed: {e}"),
            )
        })?;
        match sent {
            Ok(v) => out.sent.push(v),
            Err(e) => out.skipped.push(format!("{user}/{device}: {e}")),
        }
    }
    Ok(Json(out))
}

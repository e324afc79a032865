//! `/api/v1/users`: add, list, re-password and remove users.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::auth::local::hash_password;
use crate::store::UserRecord;

/// RFC 2865 caps an attribute value at 253 octets; PAP passwords at 128.
const MAX_NAME: usize = 253;
const MAX_PASSWORD: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub has_password: bool,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The user's own limit, if set.
    #[serde(default)]
    pub max_devices: Option<u32>,
    pub created: u64,
    pub updated: u64,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            name: u.name,
            has_password: u.password_hash.is_some(),
            devices: u.devices,
            email: u.email,
            max_devices: u.max_devices,
            created: u.created,
            updated: u.updated,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

pub async fn list(State(s): State<Arc<AdminState>>) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(s.store.users()?.into_iter().map(Into::into).collect()))
}

/// Directory users not added yet (Active Directory source only).
pub async fn candidates(
    State(s): State<Arc<AdminState>>,
) -> Result<Json<Vec<crate::auth::ldap::DirectoryUser>>, ApiError> {
    let Some(dir) = &s.directory else {
        return Err(ApiError::bad_request(
            "the authentication source is not a directory: there are no candidates to list",
        ));
    };
    let users = dir.list_users(None).await.map_err(directory_error)?;
    let mut out = Vec::new();
    for u in users {
        if s.store.user(&u.sam_account_name.to_lowercase())?.is_none() {
            out.push(u);
        }
    }
    Ok(Json(out))
}

fn directory_error(e: crate::auth::AuthError) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, format!("directory: {e}"))
}

pub async fn add(
    State(s): State<Arc<AdminState>>,
    Json(mut body): Json<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    check_name(&body.name)?;
    if let Some(dir) = &s.directory {
        // Directory users: the password stays in the directory; the user must exist there.
        if body.password.is_some() {
            return Err(ApiError::bad_request(
                "passwords of directory users live in the directory; add the user without one",
            ));
        }
        let found = dir
            .list_users(Some(&body.name))
            .await
            .map_err(directory_error)?;
        let Some(u) = found.into_iter().next() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("`{}` is not a user of the directory", body.name),
            ));
        };
        body.name = u.sam_account_name.to_lowercase();
    }
    let hash = match body.password {
        Some(pw) => Some(hash(pw).await?),
        None => None,
    };
    let record = UserRecord::new(body.name, hash);
    s.store.insert_user(&record).await?;
    tracing::info!(user = %record.name, "user added");
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The user's own device limit; `null` returns to `[devices] max_per_user`.
    #[serde(default, deserialize_with = "present")]
    pub max_devices: Option<Option<u32>>,
    /// Where profile links go; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub async fn update(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(patch): Json<UserPatch>,
) -> Result<StatusCode, ApiError> {
    if patch.max_devices == Some(Some(0)) {
        return Err(ApiError::bad_request("max_devices must be at least 1"));
    }
    if let Some(Some(e)) = &patch.email {
        check_email(e)?;
    }
    s.store
        .update_user(&name, |u| {
            if let Some(m) = patch.max_devices {
                u.max_devices = m;
            }
            if let Some(e) = &patch.email {
                u.email = e.clone();
            }
        })
        .await?;
    tracing::info!(user = %name, "user changed");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn check_email(e: &str) -> Result<(), ApiError> {
    e.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|_| ApiError::bad_request(format!("`{e}` is not a mail address")))
}

pub async fn set_password(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(body): Json<NewPassword>,
) -> Result<StatusCode, ApiError> {
    // As on `add`: a directory user's password is the directory's; a hash stored here would
    // never be checked, and `user list` would show a password as set.
    if s.directory.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "passwords of directory users live in the directory; change it there",
        ));
    }
    let hash = hash(body.password).await?;
    s.store.set_user_password(&name, hash).await?;
    s.local.forget(&name);
    tracing::info!(user = %name, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.remove_user(&name).await?;
    s.local.forget(&name);
    tracing::info!(user = %name, "user removed");
    Ok(StatusCode::NO_CONTENT)
}

/// A user name the CLI can name again: see [`super::devices::unaddressable`].
pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::bad_request(format!(
            "user name must be 1 to {MAX_NAME} bytes"
        )));
    }
    if let Some(why) = super::devices::unaddressable(name) {
        return Err(ApiError::bad_request(format!("user name `{name}` {why}")));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(ApiError::bad_request(
            "user name must not contain control characters or surrounding spaces",
        ));
    }
    Ok(())
}

pub(super) fn check_password(password: &str) -> Result<(), ApiError> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(ApiError::bad_request(format!(
            "password must be 1 to {MAX_PASSWORD} bytes (the PAP limit)"
        )));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, ApiError> {
    check_password(&password)?;
    tokio::task::spawn_blocking(move || hash_password(password.as_bytes()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn user_names_the_cli_cannot_address_are_refused() {
        for (bad, why) in [
            (".", "`.` and `..`"),
            ("..", "`.` and `..`"),
            ("-bob", "must not start with `-`"),
            ("", "1 to 253"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.message().contains(why), "{bad:?}: {}", e.message());
        }
        for good in [
            "alice",
            "DOMAIN\\alice smith",
            "bob@example.com",
            "...",
            "a-",
        ] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}

//! `/api/v1/import/{users,devices}`: bulk import from rows the CLI read out of CSV files.
//! Every bad row is reported with its line number, and nothing is imported unless all are good.
//! With a directory source every user must exist in the directory (as for `user add`) and is
//! stored under its directory key (lower-cased sAMAccountName), without a password.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::devices::DeviceInput;
use super::users::{check_name, check_password};
use super::{AdminState, ApiError};
use crate::auth::local::{check_password_hash, hash_password};
use crate::store::{serial_key, UserRecord};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRow {
    pub line: u64,
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    /// An argon2 PHC string from another system, instead of `password`.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRow {
    pub line: u64,
    pub device: DeviceInput,
    /// Assign the device to this (existing) user.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Imported {
    pub imported: usize,
}

fn rejected(problems: Vec<String>) -> ApiError {
    ApiError::with_problems(
        StatusCode::BAD_REQUEST,
        format!("{} bad row(s); nothing was imported", problems.len()),
        problems,
    )
}

pub async fn users(
    State(s): State<Arc<AdminState>>,
    Json(mut rows): Json<Vec<UserRow>>,
) -> Result<Json<Imported>, ApiError> {
    let mut problems = Vec::new();
    if let Some(dir) = &s.directory {
        problems = in_directory(dir.as_ref(), &mut rows).await?;
    }
    let mut seen = HashMap::new();
    for r in &rows {
        if let Err(e) = check_name(&r.name) {
            problems.push(format!("line {}: name: {}", r.line, e.message()));
        } else if let Some(first) = seen.insert(r.name.as_str(), r.line) {
            problems.push(format!(
                "line {}: user `{}` also on line {first}",
                r.line, r.name
            ));
        } else if s.store.user(&r.name)?.is_some() {
            problems.push(format!("line {}: user `{}` already exists", r.line, r.name));
        }
        if let Some(e) = r.email.as_deref() {
            if let Err(e) = super::users::check_email(e) {
                problems.push(format!("line {}: email: {}", r.line, e.message()));
            }
        }
        if let Some(pw) = r.password.as_deref().filter(|p| !p.is_empty()) {
            if let Err(e) = check_password(pw) {
                problems.push(format!("line {}: password: {}", r.line, e.message()));
            }
        }
        if let Some(h) = r.password_hash.as_deref().filter(|h| !h.is_empty()) {
            if r.password.as_deref().is_some_and(|p| !p.is_empty()) {
                problems.push(format!(
                    "line {}: give password or password_hash, not both",
                    r.line
                ));
            } else if let Err(e) = check_password_hash(h) {
                problems.push(format!("line {}: password_hash: {e}", r.line));
            }
        }
    }
    if !problems.is_empty() {
        return Err(rejected(problems));
    }
    let records = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|r| {
                let hash = match (r.password.filter(|p| !p.is_empty()), r.password_hash) {
                    (Some(pw), _) => Some(hash_password(pw.as_bytes())?),
                    (None, h) => h.filter(|h| !h.is_empty()),
                };
                let mut u = UserRecord::new(r.name, hash);
                u.email = r.email;
                Ok(u)
            })
            .collect::<Result<Vec<_>, crate::auth::AuthError>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.store.import(&records, &[], s.max_devices()).await?;
    tracing::info!(users = records.len(), "users imported");
    Ok(Json(Imported {
        imported: records.len(),
    }))
}

/// Checks every row's user against the directory in one pass (all missing ones reported) and
/// renames the found ones to their store key; passwords are refused (they live there).
async fn in_directory(
    dir: &dyn crate::auth::UserDirectory,
    rows: &mut [UserRow],
) -> Result<Vec<String>, ApiError> {
    let mut problems = Vec::new();
    let given = |v: &Option<String>| v.as_deref().is_some_and(|p| !p.is_empty());
    for r in rows
        .iter()
        .filter(|r| given(&r.password) || given(&r.password_hash))
    {
        problems.push(format!(
            "line {}: password: passwords of directory users live in the directory; leave the column empty",
            r.line
        ));
    }
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let found = dir
        .find_users(&names)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("directory: {e}")))?;
    let keys: std::collections::HashSet<String> = found
        .iter()
        .map(|u| u.sam_account_name.to_lowercase())
        .collect();
    for r in rows.iter_mut() {
        let key = dir.user_key(&r.name);
        if keys.contains(&key) {
            r.name = key;
        } else if !r.name.is_empty() {
            problems.push(format!(
                "line {}: `{}` is not a user of the directory",
                r.line, r.name
            ));
        }
    }
    Ok(problems)
}

pub async fn devices(
    State(s): State<Arc<AdminState>>,
    Json(rows): Json<Vec<DeviceRow>>,
) -> Result<Json<Imported>, ApiError> {
    // One limit for the whole file, even if a reload lands meanwhile.
    let max_devices = s.max_devices();
    let mut problems = Vec::new();
    let mut records = Vec::new();
    let mut names = HashMap::new();
    let mut serials = HashMap::new();
    let mut macs = HashMap::new();
    let mut per_user: HashMap<String, u32> = HashMap::new();
    for row in rows {
        let line = row.line;
        let mut record = match row.device.into_record() {
            Ok(r) => r,
            Err(ps) => {
                problems.extend(ps.into_iter().map(|p| format!("line {line}: {p}")));
                continue;
            }
        };
        if let Some(first) = names.insert(record.name.clone(), line) {
            problems.push(format!(
                "line {line}: device `{}` also on line {first}",
                record.name
            ));
        } else if s.store.device(&record.name)?.is_some() {
            problems.push(format!(
                "line {line}: device `{}` already exists",
                record.name
            ));
        }
        if let Some(serial) = &record.serial {
            if let Some(first) = serials.insert(serial_key(serial), line) {
                problems.push(format!(
                    "line {line}: serial `{serial}` also on line {first}"
                ));
            } else if let Some(other) = s.store.device_by_serial(serial)? {
                problems.push(format!(
                    "line {line}: serial `{serial}` is registered to device `{other}`"
                ));
            }
        }
        if let Some(mac) = &record.mac {
            if let Some(first) = macs.insert(mac.clone(), line) {
                problems.push(format!("line {line}: mac `{mac}` also on line {first}"));
            }
        }
        if let Some(user) = row.user.filter(|u| !u.is_empty()) {
            match s.store.user(&user)? {
                None => problems.push(format!("line {line}: user `{user}` not found")),
                Some(u) => {
                    let n = per_user
                        .entry(user.clone())
                        .or_insert(u.devices.len() as u32);
                    *n += 1;
                    let limit = u.max_devices.unwrap_or(max_devices);
                    if *n > limit {
                        problems.push(format!(
                            "line {line}: user `{user}` would exceed the limit of {limit} device(s)"
                        ));
                    }
                }
            }
            record.owner = Some(user);
        }
        records.push(record);
    }
    if !problems.is_empty() {
        return Err(rejected(problems));
    }
    // The transaction re-checks everything (a MAC clash with an existing device, a race).
    s.store.import(&[], &records, max_devices).await?;
    tracing::info!(devices = records.len(), "devices imported");
    Ok(Json(Imported {
        imported: records.len(),
    }))
}

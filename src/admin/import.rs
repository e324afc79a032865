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

/// Request body limit of the import routes. axum's default, 2 MB, stopped at about 30,000
/// short rows; the README's target is 100,000 users. A row with a 64-character name and
/// mail address and an argon2 hash is about 300 bytes of JSON (30 MB for 100,000), a device
/// row with a 128-character serial about 420: 64 MiB leaves room for longer cells. See
/// `tests::the_body_limit_fits_100000_rows`.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Whether an import only checks (the `/check` routes): every check, problems reported,
/// nothing imported. The CLI uses them when it found bad cells itself, so one run reports
/// every problem — routes, not a parameter, so that a daemon without them (not restarted
/// since an upgrade) answers 404 instead of importing the rows.
#[derive(Debug, Clone, Copy)]
struct Mode {
    check_only: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Imported {
    pub imported: usize,
    /// Rows imported as given that are likely not what was meant (by line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn rejected(problems: Vec<String>) -> ApiError {
    ApiError::with_problems(
        StatusCode::BAD_REQUEST,
        format!("{} bad row(s); nothing was imported", problems.len()),
        problems,
    )
}

/// `POST /import/users`.
pub async fn users(
    state: State<Arc<AdminState>>,
    rows: Json<Vec<UserRow>>,
) -> Result<Json<Imported>, ApiError> {
    import_users(state, Mode { check_only: false }, rows).await
}

/// `POST /import/users/check`: every check, nothing imported.
pub async fn check_users(
    state: State<Arc<AdminState>>,
    rows: Json<Vec<UserRow>>,
) -> Result<Json<Imported>, ApiError> {
    import_users(state, Mode { check_only: true }, rows).await
}

/// `POST /import/devices`.
pub async fn devices(
    state: State<Arc<AdminState>>,
    rows: Json<Vec<DeviceRow>>,
) -> Result<Json<Imported>, ApiError> {
    import_devices(state, Mode { check_only: false }, rows).await
}

/// `POST /import/devices/check`: every check, nothing imported.
pub async fn check_devices(
    state: State<Arc<AdminState>>,
    rows: Json<Vec<DeviceRow>>,
) -> Result<Json<Imported>, ApiError> {
    import_devices(state, Mode { check_only: true }, rows).await
}

async fn import_users(
    State(s): State<Arc<AdminState>>,
    params: Mode,
    Json(mut rows): Json<Vec<UserRow>>,
) -> Result<Json<Imported>, ApiError> {
    let mut problems = Vec::new();
    if let Some(dir) = &s.directory {
        problems = in_directory(dir.as_ref(), &mut rows).await?;
    }
    // Decided here, not in the CLI: only the daemon knows its running source. Directory
    // users have no password here; a local one without any cannot log in until
    // `user passwd`, which may be intended (passwords set later), so it is a warning.
    let local = s.directory.is_none() && s.handler.policy().source_selected();
    let mut warnings = Vec::new();
    let given = |v: &Option<String>| v.as_deref().is_some_and(|p| !p.is_empty());
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
        if local && !given(&r.password) && !given(&r.password_hash) {
            warnings.push(format!(
                "line {}: user `{}` has no password or password_hash: with the local source \
                 they cannot log in until `ravpnd user passwd`",
                r.line, r.name
            ));
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
    if params.check_only {
        return Ok(Json(Imported {
            imported: 0,
            warnings,
        }));
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
        warnings,
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

async fn import_devices(
    State(s): State<Arc<AdminState>>,
    params: Mode,
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
            } else if let Some(other) = s.store.device_by_mac(mac)? {
                problems.push(format!(
                    "line {line}: mac `{mac}` is already used by device `{other}`"
                ));
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
    if params.check_only {
        return Ok(Json(Imported::default()));
    }
    // The transaction re-checks everything (a race with another change).
    s.store.import(&[], &records, max_devices).await?;
    tracing::info!(devices = records.len(), "devices imported");
    Ok(Json(Imported {
        imported: records.len(),
        ..Imported::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 rows with long cells fit under `MAX_BODY` with room to spare.
    #[test]
    fn the_body_limit_fits_100000_rows() {
        let hash = hash_password(b"pw").unwrap();
        let long = |c: char| c.to_string().repeat(64);
        let users: Vec<UserRow> = (0..100_000)
            .map(|i| UserRow {
                line: i + 2,
                name: long('n'),
                password: None,
                password_hash: Some(hash.clone()),
                email: Some(format!("{}@example.com", "m".repeat(52))),
            })
            .collect();
        let users = serde_json::to_vec(&users).unwrap().len();
        let devices: Vec<DeviceRow> = (0..100_000)
            .map(|i| DeviceRow {
                line: i + 2,
                device: DeviceInput {
                    name: long('d'),
                    device_type: "windows".into(),
                    method: Some("serial".into()),
                    serial: Some("s".repeat(128)),
                    mac: Some("12:34:56:78:90:ab".into()),
                    device_auth: Some(true),
                    enabled: Some(true),
                },
                user: Some(long('u')),
            })
            .collect();
        let devices = serde_json::to_vec(&devices).unwrap().len();
        for len in [users, devices] {
            assert!(len > 2_000_000 && len < MAX_BODY * 3 / 4, "{len}");
        }
    }
}

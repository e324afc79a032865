//! `/api/v1/devices` and `/api/v1/assignments`: the device registry and who owns what.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::policy::device::{normalize_mac, valid_serial, MAX_SERIAL};
use crate::store::{AuthMethod, DeviceRecord, DeviceType};

const MAX_NAME: usize = 64;

/// A device as the admin describes it (add, import). Strings are parsed here so every
/// problem can be reported by field name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub device_auth: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Fields to change; absent ones stay. `mac: ""` clears the MAC.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_auth: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Assignment {
    pub user: String,
    pub device: String,
}

/// Checks the name rule: letters, digits, `-`, `_`, `.`. Not `.` or `..`: URLs drop those
/// path segments, so the CLI could not name the device again; not a leading `-`: the CLI
/// would read the name as an option.
pub fn check_device_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("name: must be 1 to {MAX_NAME} characters"));
    }
    if let Some(why) = unaddressable(name) {
        return Err(format!("name: `{name}` {why}"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "name: `{name}` may contain only letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Why the CLI could not name `name` in a command (shared by user and device names).
pub(super) fn unaddressable(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("is not allowed: `.` and `..` cannot be named in the admin API's URLs")
    } else if name.starts_with('-') {
        Some("must not start with `-`: the CLI would take it for an option")
    } else {
        None
    }
}

fn check_serial(serial: &str) -> Result<String, String> {
    let s = serial.trim();
    if !valid_serial(s) {
        return Err(format!(
            "serial: must be 1 to {MAX_SERIAL} printable characters without spaces"
        ));
    }
    Ok(s.to_owned())
}

fn parse_mac(mac: &str) -> Result<String, String> {
    normalize_mac(mac)
        .ok_or_else(|| format!("mac: `{mac}` is not a MAC address like 12:34:56:78:90:ab"))
}

/// The cross-field rules of SPEC §2.2, on a complete record.
fn check_rules(d: &DeviceRecord, problems: &mut Vec<String>) {
    if d.method == AuthMethod::Mac && matches!(d.device_type, DeviceType::Ios | DeviceType::Android)
    {
        problems.push(format!(
            "method: mac is not allowed for {} devices; use serial",
            d.device_type.as_str()
        ));
    }
}

impl DeviceInput {
    /// A validated record, or every problem found (each naming its field).
    pub fn into_record(self) -> Result<DeviceRecord, Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = check_device_name(&self.name) {
            problems.push(e);
        }
        let device_type = self
            .device_type
            .parse::<DeviceType>()
            .map_err(|e| problems.push(e))
            .ok();
        let method = match self.method.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => m.parse().map_err(|e| problems.push(e)).ok(),
            None => Some(AuthMethod::Serial),
        };
        let serial = self
            .serial
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| check_serial(s).map_err(|e| problems.push(e)).ok());
        let mac = self
            .mac
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|m| parse_mac(m).map_err(|e| problems.push(e)).ok());
        let (Some(device_type), Some(method)) = (device_type, method) else {
            return Err(problems);
        };
        let now = crate::store::now_secs();
        let record = DeviceRecord {
            name: self.name,
            device_type,
            enabled: self.enabled.unwrap_or(true),
            device_auth: self.device_auth.unwrap_or(true),
            method,
            serial,
            mac,
            owner: None,
            registered_at: None,
            created: now,
            updated: now,
        };
        check_rules(&record, &mut problems);
        if record.device_auth && record.method == AuthMethod::Mac && record.mac.is_none() {
            problems.push("mac: required when the method is mac".into());
        }
        if problems.is_empty() {
            Ok(record)
        } else {
            Err(problems)
        }
    }
}

fn invalid(problems: Vec<String>) -> ApiError {
    ApiError::bad_request(problems.join("; "))
}

/// A device as listed: the record plus what the proxy policy does for its profile.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceView {
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// `-` (no proxy mode), `client`, `managed`, `none`, `not applied`, …
    pub proxy: String,
}

pub async fn list(State(s): State<Arc<AdminState>>) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let live = s.handler.live();
    let views = s
        .store
        .devices()?
        .into_iter()
        .map(|d| {
            let proxy = match &d.owner {
                Some(owner) => live
                    .settings
                    .proxy
                    .describe_for(owner, &d.name, d.device_type),
                None => "-",
            };
            DeviceView {
                device: d,
                proxy: proxy.to_owned(),
            }
        })
        .collect();
    Ok(Json(views))
}

pub async fn show(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    s.store
        .device(&name)?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("device `{name}` not found")))
}

pub async fn add(
    State(s): State<Arc<AdminState>>,
    Json(input): Json<DeviceInput>,
) -> Result<(StatusCode, Json<DeviceRecord>), ApiError> {
    let record = input.into_record().map_err(invalid)?;
    s.store.insert_device(&record).await?;
    tracing::info!(device = %record.name, "device added");
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn update(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(patch): Json<DevicePatch>,
) -> Result<Json<DeviceRecord>, ApiError> {
    // Parse once, outside the (retryable) transaction closure.
    let mut problems = Vec::new();
    let device_type = patch
        .device_type
        .as_deref()
        .map(|t| t.parse::<DeviceType>().map_err(|e| problems.push(e)).ok());
    let method = patch
        .method
        .as_deref()
        .map(|m| m.parse::<AuthMethod>().map_err(|e| problems.push(e)).ok());
    let serial = patch
        .serial
        .as_deref()
        .map(|s| check_serial(s).map_err(|e| problems.push(e)).ok());
    let mac = patch.mac.as_deref().map(|m| {
        if m.is_empty() {
            Some(None)
        } else {
            parse_mac(m).map_err(|e| problems.push(e)).ok().map(Some)
        }
    });
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let updated = s
        .store
        .update_device(&name, |d| {
            if let Some(Some(t)) = device_type {
                d.device_type = t;
            }
            if let Some(Some(m)) = method {
                d.method = m;
            }
            if let Some(Some(serial)) = &serial {
                d.serial = Some(serial.clone());
                d.registered_at = None;
            }
            if let Some(Some(mac)) = &mac {
                d.mac = mac.clone();
            }
            if let Some(a) = patch.device_auth {
                d.device_auth = a;
            }
            if let Some(e) = patch.enabled {
                d.enabled = e;
            }
            let mut problems = Vec::new();
            check_rules(d, &mut problems);
            if d.device_auth && d.method == AuthMethod::Mac && d.mac.is_none() {
                problems.push("mac: required when the method is mac".into());
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(crate::store::StoreError::Invalid(problems.join("; ")))
            }
        })
        .await?;
    tracing::info!(device = %name, "device changed");
    Ok(Json(updated))
}

pub async fn reset_serial(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let updated = s
        .store
        .update_device(&name, |d| {
            d.serial = None;
            d.registered_at = None;
            Ok(())
        })
        .await?;
    tracing::info!(device = %name, "device serial reset");
    Ok(Json(updated))
}

pub async fn remove(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.remove_device(&name).await?;
    tracing::info!(device = %name, "device removed");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn assign(
    State(s): State<Arc<AdminState>>,
    Json(a): Json<Assignment>,
) -> Result<StatusCode, ApiError> {
    s.store.assign(&a.user, &a.device, s.max_devices()).await?;
    tracing::info!(user = %a.user, device = %a.device, "device assigned");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unassign(
    State(s): State<Arc<AdminState>>,
    Path((user, device)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.store.unassign(&user, &device).await?;
    tracing::info!(%user, %device, "device unassigned");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::check_device_name;

    #[test]
    fn names_the_cli_cannot_address_are_refused() {
        for bad in [".", "..", "-rf", "--help", "", "a b"] {
            assert!(check_device_name(bad).is_err(), "{bad:?}");
        }
        let e = check_device_name("..").unwrap_err();
        assert!(e.contains("`.` and `..`"), "{e}");
        let e = check_device_name("-x").unwrap_err();
        assert!(e.contains("must not start with `-`"), "{e}");
        for good in ["...", "a.b", ".hidden", "x-", "laptop_1", "a..b"] {
            assert_eq!(check_device_name(good), Ok(()), "{good:?}");
        }
    }
}

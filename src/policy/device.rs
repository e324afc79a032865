//! Device identity from the Access-Request, matching against the user's assigned devices,
//! and the decision to auto-register. Pure: the store write is the caller's.

use serde::{Deserialize, Serialize};

use super::Reason;
use crate::config::Problem;
use crate::store::{Access, AuthMethod, Device, DeviceType};

/// `[devices]`: device assignment rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Devices a user may have unless their own limit says otherwise.
    pub max_per_user: u32,
    /// Which `mdm-tlv` key of the Cisco-AVPair carries the device's serial ID.
    pub serial_key: String,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            max_per_user: 2,
            serial_key: "device-uid".into(),
        }
    }
}

/// `[registration]`: first-connect auto-registration and its failure mail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Register the serial a user's device presents on its first connection (recommended).
    pub auto_register: bool,
    /// Mail every address in `notify_to` when an auto-registration fails (recommended).
    pub notify_on_failure: bool,
    /// Where failure mail goes (one or more addresses); sent through `[smtp]`.
    pub notify_to: Vec<String>,
    /// Failures within this window are sent as one mail.
    #[serde(with = "humantime_serde")]
    pub batch_window: std::time::Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            auto_register: true,
            notify_on_failure: false,
            notify_to: Vec::new(),
            batch_window: std::time::Duration::from_secs(30),
        }
    }
}

impl DevicesConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.max_per_user == 0 {
            p.push(Problem::at(prefix, "max_per_user", "must be at least 1"));
        }
        if self.serial_key.is_empty() || self.serial_key.contains('=') {
            p.push(Problem::at(
                prefix,
                "serial_key",
                "must be an mdm-tlv key such as \"device-uid\"",
            ));
        }
        p
    }
}

/// The longest serial ID a device record holds.
pub const MAX_SERIAL: usize = 128;

/// A serial ID as a record may hold it: 1 to `MAX_SERIAL` printable ASCII characters, no
/// spaces. What a request presents goes into records, logs and admin mail: anything else is
/// no device ID.
pub fn valid_serial(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SERIAL && s.bytes().all(|b| b.is_ascii_graphic())
}

/// What the request says about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub serial: Option<String>,
    /// Canonical form.
    pub mac: Option<String>,
    pub platform: Option<DeviceType>,
    /// The platform string as sent, for logs and mail.
    pub platform_raw: Option<String>,
}

impl DeviceIdentity {
    /// Reads `mdm-tlv=<key>=<value>` Cisco-AVPairs (AnyConnect's device data). A value
    /// that is not a serial, MAC or platform name as records hold them is ignored; of
    /// several valid ones the first counts.
    pub fn from_avpairs<'a>(pairs: impl IntoIterator<Item = &'a str>, serial_key: &str) -> Self {
        let mut id = Self::default();
        for pair in pairs {
            let Some((key, value)) = pair
                .strip_prefix("mdm-tlv=")
                .and_then(|kv| kv.split_once('='))
            else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if key == serial_key {
                if id.serial.is_none() && valid_serial(value) {
                    id.serial = Some(value.to_owned());
                }
            } else if key == "device-mac" {
                id.mac = id.mac.take().or_else(|| normalize_mac(value));
            } else if key == "device-platform"
                && id.platform_raw.is_none()
                && value.len() <= 64
                && value.bytes().all(|b| b.is_ascii_graphic())
            {
                id.platform = platform(value);
                id.platform_raw = Some(value.to_owned());
            }
        }
        id
    }

    pub fn is_empty(&self) -> bool {
        self.serial.is_none() && self.mac.is_none()
    }
}

/// AnyConnect's `device-platform` values.
pub fn platform(s: &str) -> Option<DeviceType> {
    match s {
        "win" => Some(DeviceType::Windows),
        "mac-intel" | "mac-arm" | "mac" => Some(DeviceType::Mac),
        "apple-ios" => Some(DeviceType::Ios),
        "android" => Some(DeviceType::Android),
        _ => None,
    }
}

/// `12:34:56:78:90:AB`, `12-34-56-78-90-ab`, `1234.5678.90ab` or `123456789abc` →
/// `12:34:56:78:90:ab`. Separators only where those forms put them: `1:234:56:…` is no MAC.
pub fn normalize_mac(s: &str) -> Option<String> {
    let (separator, count) = match s.len() {
        12 => (None, 1),
        17 if s.as_bytes()[2] == b':' => (Some(':'), 6),
        17 if s.as_bytes()[2] == b'-' => (Some('-'), 6),
        14 => (Some('.'), 3),
        _ => return None,
    };
    let groups: Vec<&str> = match separator {
        Some(c) => s.split(c).collect(),
        None => vec![s],
    };
    let exact = groups.len() == count
        && groups
            .iter()
            .all(|g| g.len() == 12 / count && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !exact {
        return None;
    }
    let lower = groups.concat().to_ascii_lowercase();
    Some(
        lower
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Whether the request proves to be this device, by its method (serial or MAC).
pub fn proves(d: &Device<'_>, id: &DeviceIdentity) -> bool {
    d.device_auth
        && match d.method {
            AuthMethod::Serial => {
                matches!((d.serial(), &id.serial), (Some(a), Some(b)) if a.matches(b))
            }
            AuthMethod::Mac => d.mac().is_some() && d.mac() == id.mac.as_deref(),
        }
}

/// What to do about the device, given the user's assigned devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCheck {
    /// The device at this index of the user's devices.
    Accept {
        device: usize,
    },
    Reject(Reason),
    /// Auto-register `serial` on `device`, then reject asking to reconnect.
    Register {
        device: String,
        serial: String,
    },
    /// Auto-registration is not possible: reject, and tell the admins.
    RegistrationFailed(Reason),
}

/// Decides on the device, as the policy does (which reads the serial index only when
/// `assigned` leaves the request to `first_connection`). `serial_owner` is the device already
/// holding the presented serial, if any (from the store's serial index).
#[cfg(test)]
pub fn check(
    devices: &[crate::store::AccessDevice],
    id: &DeviceIdentity,
    auto_register: bool,
    serial_owner: Option<&str>,
) -> DeviceCheck {
    let user = Access::with_devices("u", None, devices.iter().cloned());
    assigned(&user, id).unwrap_or_else(|| first_connection(&user, id, auto_register, serial_owner))
}

/// The decision when the user's assigned devices settle it (one proves itself, or one needs
/// no device authentication); `None`: it is a first connection, see `first_connection`.
pub fn assigned(user: &Access, id: &DeviceIdentity) -> Option<DeviceCheck> {
    if user.devices().len() == 0 {
        return Some(DeviceCheck::Reject(Reason::DeviceNotAssigned));
    }
    // 1. A device that proves itself by serial or MAC.
    let all = || user.devices();
    let proven = all().enumerate().find(|(_, d)| proves(d, id));
    if let Some((i, d)) = proven {
        return Some(if !d.enabled {
            DeviceCheck::Reject(Reason::DeviceDisabled)
        } else if id.platform.is_some_and(|p| p != d.device_type) {
            DeviceCheck::Reject(Reason::PlatformMismatch)
        } else {
            DeviceCheck::Accept { device: i }
        });
    }
    // 2. A device without device authentication, of the presented platform's type.
    let unchecked = || {
        all()
            .enumerate()
            .filter(|(_, d)| !d.device_auth && id.platform.is_none_or(|p| p == d.device_type))
    };
    if let Some((i, _)) = unchecked().find(|(_, d)| d.enabled) {
        return Some(DeviceCheck::Accept { device: i });
    }
    if unchecked().next().is_some() {
        return Some(DeviceCheck::Reject(Reason::DeviceDisabled));
    }
    None
}

/// Step 3: the first connection of a device none of the user's proves, and
/// auto-registration. `serial_owner` as for `check`.
pub fn first_connection(
    user: &Access,
    id: &DeviceIdentity,
    auto_register: bool,
    serial_owner: Option<&str>,
) -> DeviceCheck {
    let free: Vec<_> = user
        .devices()
        .filter(|d| d.device_auth && d.method == AuthMethod::Serial && d.serial().is_none())
        .collect();
    if !auto_register {
        return DeviceCheck::Reject(if id.is_empty() {
            Reason::NoDeviceId
        } else {
            Reason::DeviceIdMismatch
        });
    }
    let Some(serial) = &id.serial else {
        // Without a serial there is nothing to register: with a free slot waiting, that is a
        // failed registration (mailed), else a device the user does not have.
        let reason = if id.is_empty() {
            Reason::NoDeviceId
        } else {
            Reason::DeviceIdMismatch
        };
        return if free.is_empty() {
            DeviceCheck::Reject(reason)
        } else {
            DeviceCheck::RegistrationFailed(reason)
        };
    };
    if serial_owner.is_some() {
        return DeviceCheck::RegistrationFailed(Reason::SerialInUse);
    }
    if free.is_empty() {
        return DeviceCheck::RegistrationFailed(Reason::NoFreeDeviceSlot);
    }
    let of_type: Vec<_> = free
        .iter()
        .filter(|d| id.platform == Some(d.device_type))
        .collect();
    match of_type.iter().find(|d| d.enabled) {
        Some(d) => DeviceCheck::Register {
            device: d.name().to_owned(),
            serial: serial.clone(),
        },
        None if !of_type.is_empty() => DeviceCheck::Reject(Reason::DeviceDisabled),
        None => DeviceCheck::RegistrationFailed(Reason::PlatformMismatch),
    }
}

#[cfg(test)]
mod tests;

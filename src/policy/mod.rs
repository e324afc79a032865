//! The decision: request view in, [`Decision`] out. Knows nothing of sockets or sled.
//!
//! Order: the user must exist in the store (for every source) → the source verifies the
//! password → the device is checked against the user's assignments, or auto-registered.

pub mod device;
mod reason;

use std::time::SystemTime;

use tracing::{error, info};

pub use reason::Reason;

use crate::auth::{AuthError, PasswordVerifier, Source};
use crate::notify::{Notifier, RegistrationFailure};
use crate::store::{DeviceRecord, Registration, Store, UserRecord};
use device::{DeviceCheck, DeviceIdentity, DevicesConfig, RegistrationConfig};

/// What the policy needs from an Access-Request, already decoded.
#[derive(Debug)]
pub struct AccessRequest<'a> {
    pub user_name: &'a str,
    pub password: &'a [u8],
    /// Cisco-AVPair values (`mdm-tlv=device-uid=…`), as sent.
    pub avpairs: &'a [String],
    /// The NAS client's name, for logs and mail.
    pub client: &'a str,
}

/// The outcome of an Access-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(ReplyPlan),
    Reject(Reason),
}

/// What an Access-Accept carries beyond the protocol's own attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyPlan {
    /// The device the session runs on.
    pub device: String,
}

/// Authorization policy over one password source and the device registry.
pub struct Policy {
    store: Store,
    source: Source,
    devices: DevicesConfig,
    registration: RegistrationConfig,
    notifier: Notifier,
}

/// Re-evaluations after losing a registration race; one is enough in practice.
const REGISTRATION_ATTEMPTS: usize = 3;

impl Policy {
    pub fn new(
        store: Store,
        source: Source,
        devices: DevicesConfig,
        registration: RegistrationConfig,
        notifier: Notifier,
    ) -> Self {
        Self {
            store,
            source,
            devices,
            registration,
            notifier,
        }
    }

    pub async fn authorize(&self, req: &AccessRequest<'_>) -> Decision {
        if matches!(self.source, Source::NotSelected) {
            return Decision::Reject(Reason::NoAuthSource);
        }
        let user = match self.store.user(req.user_name) {
            Ok(Some(u)) => u,
            Ok(None) => return Decision::Reject(Reason::UnknownUser),
            Err(e) => return internal("reading the user", &e),
        };
        if let Err(e) = self.source.verify(&user, req.password).await {
            return Decision::Reject(Reason::from_auth(&e));
        }
        let id = DeviceIdentity::from_avpairs(
            req.avpairs.iter().map(String::as_str),
            &self.devices.serial_key,
        );
        self.authorize_device(&user, &id, req.client).await
    }

    async fn authorize_device(
        &self,
        user: &UserRecord,
        id: &DeviceIdentity,
        client: &str,
    ) -> Decision {
        let mut user_devices = user.devices.clone();
        for _ in 0..REGISTRATION_ATTEMPTS {
            let devices = match self.assigned(&user.name, &user_devices) {
                Ok(d) => d,
                Err(e) => return internal("reading devices", &e),
            };
            let serial_owner = match id.serial.as_deref().map(|s| self.store.device_by_serial(s)) {
                Some(Ok(owner)) => owner,
                Some(Err(e)) => return internal("reading the serial index", &e),
                None => None,
            };
            let check = device::check(
                &devices,
                id,
                self.registration.auto_register,
                serial_owner.as_deref(),
            );
            let (device, serial) = match check {
                DeviceCheck::Accept { device } => return Decision::Accept(ReplyPlan { device }),
                DeviceCheck::Reject(r) => return Decision::Reject(r),
                DeviceCheck::RegistrationFailed(r) => {
                    return self.registration_failed(user, id, client, r)
                }
                DeviceCheck::Register { device, serial } => (device, serial),
            };
            match self.store.register_serial(&device, &serial).await {
                Ok(Registration::Registered) => {
                    info!(user = %user.name, device = %device, serial = %serial, "device registered");
                    return Decision::Reject(Reason::DeviceRegistered);
                }
                Ok(Registration::SerialInUse { .. }) => {
                    return self.registration_failed(user, id, client, Reason::SerialInUse)
                }
                // A concurrent first connection took the slot: look again.
                Ok(Registration::SlotTaken) => {}
                Err(e) => return internal("registering a device", &e),
            }
            user_devices = match self.store.user(&user.name) {
                Ok(Some(u)) => u.devices,
                Ok(None) => return Decision::Reject(Reason::UnknownUser),
                Err(e) => return internal("reading the user", &e),
            };
        }
        Decision::Reject(Reason::NoFreeDeviceSlot)
    }

    /// The user's devices that still name the user as owner.
    fn assigned(
        &self,
        user: &str,
        names: &[String],
    ) -> Result<Vec<DeviceRecord>, crate::store::StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(d) = self.store.device(name)? {
                if d.owner.as_deref() == Some(user) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn registration_failed(
        &self,
        user: &UserRecord,
        id: &DeviceIdentity,
        client: &str,
        reason: Reason,
    ) -> Decision {
        if self.registration.notify_on_failure {
            self.notifier.notify(RegistrationFailure {
                user: user.name.clone(),
                serial: id.serial.clone(),
                mac: id.mac.clone(),
                platform: id.platform_raw.clone(),
                reason: reason.message(),
                client: client.to_owned(),
                at: SystemTime::now(),
            });
        }
        Decision::Reject(reason)
    }
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Decision {
    error!(error = %e, "store failure while {what}");
    Decision::Reject(Reason::InternalError)
}

impl Reason {
    fn from_auth(e: &AuthError) -> Self {
        match e {
            AuthError::NotSelected => Reason::NoAuthSource,
            AuthError::UnknownUser => Reason::UnknownUser,
            AuthError::BadPassword => Reason::BadPassword,
            AuthError::NoPassword => Reason::NoPassword,
            AuthError::Store(err) => {
                error!(error = %err, "store failure during password check");
                Reason::InternalError
            }
            AuthError::Internal(err) => {
                error!(error = %err, "password check failed");
                Reason::InternalError
            }
        }
    }
}

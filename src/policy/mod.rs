//! The decision: request view in, [`Decision`] out. Knows nothing of sockets or sled.
//!
//! Order: the user must exist in the store (for every source) → the source verifies the
//! password → the device is checked against the user's assignments, or auto-registered.

pub mod device;
pub mod proxy;
mod reason;

use std::time::SystemTime;

use tracing::{error, info};

pub use reason::Reason;

use std::sync::Arc;

use crate::auth::{AuthError, PasswordVerifier, Source};
use crate::config::Config;
use crate::ipam::{Allocation, Holder, Ipam, IpamError, LeaseRequest};
use crate::metrics::METRICS;
use crate::notify::{Notifier, RegistrationFailure};
use crate::radius::nas::Nas;
use crate::reply::DnsConfig;
use crate::store::{Access, Registration, Store};
use device::{DeviceCheck, DeviceIdentity, DevicesConfig, RegistrationConfig};
use proxy::{ProxyConfig, ProxyPush};

/// The parts of the config a request reads, swapped whole on reload (SIGHUP) so a request
/// sees one consistent version.
#[derive(Debug, Clone)]
pub struct Settings {
    pub devices: DevicesConfig,
    pub registration: RegistrationConfig,
    pub proxy: ProxyConfig,
    pub dns: DnsConfig,
    pub interim_interval: std::time::Duration,
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            devices: c.devices.clone(),
            registration: c.registration.clone(),
            proxy: c.proxy.clone(),
            dns: c.dns.clone(),
            interim_interval: c.radius.interim_interval,
        }
    }
}

/// What the policy needs from an Access-Request, already decoded. Its `Debug` leaves the
/// password out.
pub struct AccessRequest<'a> {
    pub user_name: &'a str,
    pub password: &'a [u8],
    /// Cisco-AVPair values (`mdm-tlv=device-uid=…`), as sent.
    pub avpairs: &'a [&'a str],
    /// The NAS client that asked.
    pub nas: &'a Nas,
    /// Unix seconds.
    pub now: u64,
    /// When a directory's password check is given up on ("directory unavailable"), so the
    /// gateway gets an answer before the request's own timeout drops it unanswered.
    pub directory_deadline: Option<std::time::Instant>,
}

impl std::fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequest")
            .field("user_name", &self.user_name)
            .field(
                "password",
                &format_args!("({} octets)", self.password.len()),
            )
            .field("avpairs", &self.avpairs)
            .field("nas", &self.nas.name)
            .field("now", &self.now)
            .field("directory_deadline", &self.directory_deadline)
            .finish()
    }
}

/// The outcome of an Access-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(ReplyPlan),
    Reject(Reason),
}

/// What an Access-Accept carries beyond the protocol's own attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPlan {
    /// The user as read for this request, and the index of the device the session runs on
    /// among theirs (shared, not copied: see `device`).
    pub user: Access,
    pub device: usize,
    /// The session's VPN address, when pools are configured.
    pub address: Option<Allocation>,
    pub proxy: ProxyPush,
}

impl ReplyPlan {
    /// The name of the device the session runs on.
    pub fn device_name(&self) -> &str {
        self.user.device(self.device).name()
    }
}

/// Authorization policy over one password source and the device registry.
pub struct Policy {
    store: Store,
    source: Source,
    ipam: Arc<Ipam>,
    notifier: Notifier,
}

/// Re-evaluations after losing a registration race; one is enough in practice.
const REGISTRATION_ATTEMPTS: usize = 3;

impl Policy {
    pub fn new(store: Store, source: Source, ipam: Arc<Ipam>, notifier: Notifier) -> Self {
        Self {
            store,
            source,
            ipam,
            notifier,
        }
    }

    pub fn source_selected(&self) -> bool {
        !matches!(self.source, Source::NotSelected)
    }

    pub fn ipam(&self) -> &Arc<Ipam> {
        &self.ipam
    }

    /// Starts loading the entries of local users named `user_names` (the first
    /// `PREFETCH_KEYS` that are UTF-8) into the CPU's cache (see `Store::prefetch_access`);
    /// nothing for directory users, whose checks take far longer than a cache miss.
    pub fn prefetch_users<'a>(&self, user_names: impl IntoIterator<Item = &'a [u8]>) {
        if let Source::Local(_) = &self.source {
            self.store.prefetch_access(
                user_names
                    .into_iter()
                    .filter_map(|name| std::str::from_utf8(name).ok()),
            );
        }
    }

    /// The store's name for a user as a NAS sends it.
    pub fn user_key(&self, user_name: &str) -> String {
        match &self.source {
            // Directory users are stored by lower-cased sAMAccountName; the NAS may send
            // `alice`, `CORP\alice` or `alice@corp.example.com`.
            Source::ActiveDirectory(v) => v.user_key(user_name),
            Source::AzureAd(v) => v.user_key(user_name),
            _ => user_name.to_owned(),
        }
    }

    /// User → password → device → proxy → address. The address comes last: it is the
    /// only step that writes for an accepted request.
    pub async fn authorize(&self, req: &AccessRequest<'_>, settings: &Settings) -> Decision {
        if matches!(self.source, Source::NotSelected) {
            return Decision::Reject(Reason::NoAuthSource);
        }
        let key = self.user_key(req.user_name);
        let mut user = match self.store.access(&key) {
            Ok(Some(u)) => u,
            Ok(None) => {
                self.source.refuse_unknown(&key, req.password).await;
                return Decision::Reject(Reason::UnknownUser);
            }
            Err(e) => return internal("reading the user", &e),
        };
        if matches!(self.source, Source::Local(_)) {
            // A directory's check takes far longer than the lines would stay cached.
            self.ipam.prefetch_leases(&user);
        }
        let mut verified = self.check_password(&user, req).await;
        if matches!(verified, Err(AuthError::Stale)) {
            // The user changed (or went) while their password was checked: once more, as
            // they are now (read from the store: the write may not have dropped the cached
            // entry yet).
            user = match self.store.access_fresh(&key) {
                Ok(Some(u)) => u,
                Ok(None) => return Decision::Reject(Reason::UnknownUser),
                Err(e) => return internal("reading the user", &e),
            };
            verified = self.check_password(&user, req).await;
        }
        if let Err(e) = verified {
            return Decision::Reject(Reason::from_auth(&e));
        }
        let id =
            DeviceIdentity::from_avpairs(req.avpairs.iter().copied(), &settings.devices.serial_key);
        let (user, i) = match self
            .authorize_device(user, &id, &req.nas.name, settings)
            .await
        {
            Ok(found) => found,
            Err(reason) => return Decision::Reject(reason),
        };
        let device = user.device(i);
        let proxy = match settings
            .proxy
            .decide(user.name(), device.name(), device.device_type)
        {
            Ok(p) => p,
            Err(reason) => return Decision::Reject(reason),
        };
        let lease = LeaseRequest {
            pool: req.nas.pool.as_deref(),
            holder: Holder::Entry(&user, i),
            nas: &req.nas.name,
            now: req.now,
            renew_bound: req.nas.kind != crate::config::GatewayKind::Ocserv,
        };
        let address = match self.ipam.lease(&lease).await {
            Ok(a) => a,
            Err(IpamError::Exhausted(pool)) => {
                tracing::warn!(%pool, user = %user.name(), "address pool exhausted");
                return Decision::Reject(Reason::PoolExhausted);
            }
            Err(e) => return internal("leasing an address", &e),
        };
        Decision::Accept(ReplyPlan {
            user,
            device: i,
            address,
            proxy,
        })
    }

    /// The password check of the configured source, a directory's bounded by the request's
    /// directory deadline.
    async fn check_password(
        &self,
        user: &Access,
        req: &AccessRequest<'_>,
    ) -> Result<(), AuthError> {
        let verify = self.source.verify(user, req.user_name, req.password);
        match req.directory_deadline {
            Some(by) if self.source.is_directory() => tokio::time::timeout_at(by.into(), verify)
                .await
                .unwrap_or(Err(AuthError::DirectoryUnavailable)),
            _ => verify.await,
        }
    }

    /// The device this request comes from (after matching), or why not. Registers the
    /// device on its first connection. Returns the user as last read (after a lost
    /// registration race the user is read again) and the device's index among theirs.
    async fn authorize_device(
        &self,
        mut user: Access,
        id: &DeviceIdentity,
        client: &str,
        settings: &Settings,
    ) -> Result<(Access, usize), Reason> {
        for _ in 0..REGISTRATION_ATTEMPTS {
            // The serial index only decides a first connection (which device already holds
            // the serial): a request the user's devices settle does without it.
            let check = match device::assigned(&user, id) {
                Some(check) => check,
                None => {
                    let serial_owner = match id.serial.as_deref() {
                        Some(s) => self
                            .store
                            .device_by_serial(s)
                            .map_err(|e| internal_reason("reading the serial index", &e))?,
                        None => None,
                    };
                    device::first_connection(
                        &user,
                        id,
                        settings.registration.auto_register,
                        serial_owner.as_deref(),
                    )
                }
            };
            let (device, serial) = match check {
                DeviceCheck::Accept { device } => return Ok((user, device)),
                DeviceCheck::Reject(r) => return Err(r),
                DeviceCheck::RegistrationFailed(r) => {
                    return Err(self.registration_failed(user.name(), id, client, r, settings))
                }
                DeviceCheck::Register { device, serial } => (device, serial),
            };
            match self
                .store
                .register_serial(&device, &serial, user.name())
                .await
            {
                Ok(Registration::Registered) => {
                    info!(user = %user.name(), device = %device, serial = %serial, "device registered");
                    METRICS.registrations.inc();
                    return Err(Reason::DeviceRegistered);
                }
                Ok(Registration::SerialInUse { .. }) => {
                    return Err(self.registration_failed(
                        user.name(),
                        id,
                        client,
                        Reason::SerialInUse,
                        settings,
                    ))
                }
                // A concurrent first connection took the slot: look again.
                Ok(Registration::SlotTaken) => {}
                Err(e) => return Err(internal_reason("registering a device", &e)),
            }
            user = match self.store.access(user.name()) {
                Ok(Some(u)) => u,
                Ok(None) => return Err(Reason::UnknownUser),
                Err(e) => return Err(internal_reason("reading the user", &e)),
            };
        }
        // Every attempt lost its slot (to a concurrent first connection, or an admin's change).
        Err(self.registration_failed(user.name(), id, client, Reason::NoFreeDeviceSlot, settings))
    }

    fn registration_failed(
        &self,
        user: &str,
        id: &DeviceIdentity,
        client: &str,
        reason: Reason,
        settings: &Settings,
    ) -> Reason {
        METRICS.registration_failed(reason);
        if settings.registration.notify_on_failure {
            self.notifier.notify(RegistrationFailure {
                user: user.to_owned(),
                serial: id.serial.clone(),
                mac: id.mac.clone(),
                platform: id.platform_raw.clone(),
                reason: reason.message().to_owned(),
                client: client.to_owned(),
                at: SystemTime::now(),
            });
        }
        reason
    }
}

fn internal_reason(what: &str, e: &dyn std::fmt::Display) -> Reason {
    error!(error = %e, "failure while {what}");
    Reason::InternalError
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Decision {
    Decision::Reject(internal_reason(what, e))
}

impl Reason {
    fn from_auth(e: &AuthError) -> Self {
        match e {
            AuthError::NotSelected => Reason::NoAuthSource,
            AuthError::UnknownUser => Reason::UnknownUser,
            AuthError::BadPassword => Reason::BadPassword,
            AuthError::NoPassword => Reason::NoPassword,
            AuthError::AccountDisabled => Reason::AccountDisabled,
            AuthError::AccountExpired => Reason::AccountExpired,
            AuthError::PasswordExpired => Reason::PasswordExpired,
            AuthError::MustChangePassword => Reason::MustChangePassword,
            AuthError::LockedOut => Reason::LockedOut,
            AuthError::NotPermitted => Reason::NotPermitted,
            AuthError::DirectoryUnavailable => Reason::DirectoryUnavailable,
            AuthError::LockoutPrevented => Reason::LockoutPrevented,
            AuthError::MfaRequired => Reason::MfaRequired,
            AuthError::Stale => {
                error!("the user changed again during the password check's retry");
                Reason::InternalError
            }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::auth::ldap::{ActiveDirectoryConfig, AdVerifier};
    use crate::config::{ClientConfig, Config, GatewayKind, Secret};
    use crate::radius::nas::NasTable;
    use crate::store::UserRecord;

    /// A DC that accepts connections and never answers: the password check is given up on
    /// at the request's directory deadline, and the gateway gets "directory unavailable"
    /// instead of no answer at all (the request's own timeout drops it unanswered).
    #[tokio::test]
    async fn a_silent_directory_is_given_up_on_at_the_deadline() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let ad: ActiveDirectoryConfig = toml::from_str(&format!(
            "primary_host = \"dc1.corp.example.com\"\nprimary_address = \"127.0.0.1\"\n\
             domain = \"corp.example.com\"\nnetbios_domain = \"CORP\"\nadmin_password = \"x\"\n\
             tls = \"none\"\nport = {port}\ntimeout = \"30s\"\nhealth_check_interval = \"0s\""
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_user(&UserRecord::new("alice", None))
            .await
            .unwrap();
        let ipam = Arc::new(Ipam::new(store.clone(), &[], 0).unwrap());
        let source = Source::ActiveDirectory(Arc::new(AdVerifier::new(&ad).unwrap()));
        let policy = Policy::new(store, source, ipam, Notifier::disabled());
        let nas = NasTable::new(&[ClientConfig {
            name: "gw".into(),
            address: "127.0.0.1/32".parse().unwrap(),
            secret: Secret::new("secret123"),
            require_message_authenticator: true,
            kind: GatewayKind::Asa,
            pool: None,
        }]);
        let started = Instant::now();
        let req = AccessRequest {
            user_name: "alice",
            password: b"pw",
            avpairs: &[],
            nas: nas.lookup([127, 0, 0, 1].into()).unwrap(),
            now: 0,
            directory_deadline: Some(started + Duration::from_millis(300)),
        };
        let settings = Settings::from_config(&Config::default());
        let decision =
            tokio::time::timeout(Duration::from_secs(5), policy.authorize(&req, &settings))
                .await
                .expect("no decision: the silent DC was waited for past the deadline");
        assert_eq!(decision, Decision::Reject(Reason::DirectoryUnavailable));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

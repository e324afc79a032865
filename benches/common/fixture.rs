//! The daemon's request path for the benches that run it in process (`pipeline`, `users`),
//! built the way `server::run` builds it, from a TOML configuration: local users with an
//! assigned, registered Windows device each, an address pool and DNS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ravpnd::auth::local::LocalVerifier;
use ravpnd::auth::Source;
use ravpnd::config::Config;
use ravpnd::ipam::Ipam;
use ravpnd::notify::Notifier;
use ravpnd::policy::Policy;
use ravpnd::policy::Settings;
use ravpnd::radius::listener::{Handler, Live};
use ravpnd::radius::nas::{Nas, NasTable};
use ravpnd::store::{AuthMethod, DeviceRecord, DeviceType, LeaseRecord, Store, UserRecord};

use crate::common;

pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    // Kept alive for the store's lifetime.
    _dir: tempfile::TempDir,
    pub config: Config,
    pub store: Store,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The daemon's configuration for these benches: a pool for 100,000 devices, DNS, one ASA
/// client; imported hashes kept as they are (cheap ones stay cheap).
fn config(dir: &Path) -> Config {
    let path = dir.join("ravpnd.toml");
    let toml = format!(
        r#"
[radius]
auth_addr = "127.0.0.1:0"
acct_addr = "127.0.0.1:0"

[store]
path = "{store}"

[auth]
source = "local"

[auth.local]
upgrade_imported_hashes = false

[registration]
auto_register = true
notify_on_failure = false

[[pools]]
name = "bench"
network = "10.8.0.0/15"

[dns]
primary = "10.0.0.53"
secondary = "10.0.0.54"

[[clients]]
name = "bench"
address = "127.0.0.1"
secret = "{secret}"
require_message_authenticator = true
"#,
        store = dir.join("data").display(),
        secret = std::str::from_utf8(common::SECRET).unwrap(),
    );
    std::fs::write(&path, toml).unwrap();
    Config::load_valid(&path).unwrap()
}

/// User `i`'s name and device's name.
pub fn user(i: u32) -> String {
    format!("user{i}")
}

fn device(i: u32) -> DeviceRecord {
    DeviceRecord {
        name: format!("dev{i}"),
        device_type: DeviceType::Windows,
        enabled: true,
        device_auth: true,
        method: AuthMethod::Serial,
        serial: Some(common::serial_of(i)),
        mac: None,
        owner: Some(user(i)),
        registered_at: None,
        created: 0,
        updated: 0,
    }
}

impl Fixture {
    /// A temporary store holding `users` users `user<i>`, each with the PHC hash `phc` of the
    /// bench password and device `dev<i>` (Windows, serial = user i's device UID).
    pub fn new(users: u32, phc: &str) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = Store::open(&config.store.path).unwrap();
        // In chunks, as `ravpnd import` sends them: one transaction each.
        for first in (0..users).step_by(10_000) {
            let ids = first..users.min(first + 10_000);
            let records: Vec<_> = ids
                .clone()
                .map(|i| UserRecord::new(user(i), Some(phc.into())))
                .collect();
            let devices: Vec<_> = ids.map(device).collect();
            rt.block_on(store.import(&records, &devices, 2)).unwrap();
        }
        Fixture {
            rt,
            _dir: dir,
            config,
            store,
        }
    }

    /// Gives every user a lease (addresses from 10.8.0.1 on, an hour from now), written
    /// straight to the store as a restarted daemon finds them: `policy` restores them.
    #[allow(dead_code)] // the users bench's; pipeline leases through its requests
    pub fn lease_all(&self, users: u32) {
        let now = unix_now();
        let first = u32::from(std::net::Ipv4Addr::new(10, 8, 0, 1));
        for i in 0..users {
            let lease = LeaseRecord {
                addr: (first + i).into(),
                pool: "bench".into(),
                user: user(i),
                device: device(i).name,
                nas: "bench".into(),
                session_id: None,
                granted: now,
                expires: now + 3600,
                renewed: false,
            };
            self.store.write_lease(&lease).unwrap();
        }
        self.rt.block_on(self.store.flush()).unwrap();
    }

    pub fn policy(&self) -> Policy {
        let ipam = Ipam::new(self.store.clone(), &self.config.pools, unix_now()).unwrap();
        Policy::new(
            self.store.clone(),
            Source::Local(Arc::new(LocalVerifier::new(
                &self.config.auth.local,
                self.store.clone(),
            ))),
            Arc::new(ipam),
            Notifier::disabled(),
        )
    }

    pub fn live(&self) -> Live {
        Live {
            nas: NasTable::new(&self.config.clients),
            settings: Settings::from_config(&self.config),
        }
    }

    /// The request handler of the daemon's sockets (duplicate window 5 s, timeout 10 s).
    pub fn handler(&self) -> Handler {
        Handler::new(
            self.live(),
            self.policy(),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }
}

pub fn nas(live: &Live) -> Arc<Nas> {
    live.nas
        .lookup([127, 0, 0, 1].into())
        .cloned()
        .expect("the bench client")
}

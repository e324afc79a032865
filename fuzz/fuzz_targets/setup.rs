//! Builds the `Handler` the `handle` target drives, the way `src/server.rs` `run` does, from
//! a config file the daemon's own loader validates, over a temporary store. The only part of
//! the fuzz targets that follows ravpnd's constructors: when they change, this file changes.

use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ravpnd::auth::local::LocalVerifier;
use ravpnd::auth::Source;
use ravpnd::config::Config;
use ravpnd::ipam::Ipam;
use ravpnd::notify::Notifier;
use ravpnd::policy::{Policy, Settings};
use ravpnd::radius::listener::{Handler, Live};
use ravpnd::radius::nas::NasTable;
use ravpnd::store::{AuthMethod, DeviceRecord, DeviceType, Store, UserRecord};

/// The world the inputs hit. Two NAS clients share the secret: 127.0.0.1 is an ASA that
/// requires Message-Authenticator, 127.0.0.2 an ocserv that does not. A /29 pool (five
/// addresses) runs out, so exhaustion is reachable; DNS and a managed proxy are pushed.
fn config_toml(store: &Path, secret: &str) -> String {
    format!(
        r#"
[radius]
auth_addr = "127.0.0.1:0"
acct_addr = "127.0.0.1:0"
dedup_window = "5s"
request_timeout = "10s"

[store]
path = "{store}"

[admin]
addr = "127.0.0.1:0"
token = "fuzz-admin-token-0123456789"

[auth]
source = "local"

[registration]
auto_register = true
notify_on_failure = false

[[pools]]
name = "vpn"
network = "10.8.0.0/29"
exclude = ["10.8.0.1"]
lease_time = "1h"

[dns]
primary = "10.0.0.53"
secondary = "10.0.0.54"

[proxy]
mode = "managed"
address = "10.0.0.80"
port = 8080
exceptions = "*.example.com;10.*"
apply_to = "all"

[[clients]]
name = "asa"
address = "127.0.0.1"
secret = "{secret}"
require_message_authenticator = true
kind = "asa"

[[clients]]
name = "ocserv"
address = "127.0.0.2"
secret = "{secret}"
require_message_authenticator = false
kind = "ocserv"
"#,
        store = store.display()
    )
}

/// Devices of the one user: `laptop` has `serial` registered, `phone` waits for
/// auto-registration, `desk` proves itself by MAC.
pub async fn build(secret: &str, user: &str, password: &str, serial: &str, mac: &str) -> Handler {
    // A fresh directory per process; fuzz/run points TMPDIR at a folder it removes.
    let dir = std::env::temp_dir().join(format!("ravpnd-fuzz-handle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let config_path = dir.join("ravpnd.toml");
    std::fs::write(&config_path, config_toml(&dir.join("store"), secret)).expect("write config");
    let config = Config::load_valid(&config_path).unwrap_or_else(|e| panic!("fuzz config: {e}"));

    let store = Store::open(&config.store.path).expect("temporary store");
    // argon2id with tiny parameters: verification reads them from the PHC string, so every
    // request with the known user costs microseconds instead of ~20 ms at the defaults.
    let params = Params::new(8, 1, 1, None).expect("argon2 params");
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(
            password.as_bytes(),
            &SaltString::from_b64("ZnV6enNhbHRmdXp6").expect("salt"),
        )
        .expect("argon2 hash")
        .to_string();
    store
        .insert_user(&UserRecord::new(user, Some(hash)))
        .await
        .expect("insert user");
    let mac = ravpnd::policy::device::normalize_mac(mac).expect("MAC");
    for (name, device_type, method, serial, mac) in [
        ("laptop", DeviceType::Windows, AuthMethod::Serial, Some(serial.to_owned()), None),
        ("phone", DeviceType::Android, AuthMethod::Serial, None, None),
        ("desk", DeviceType::Windows, AuthMethod::Mac, None, Some(mac)),
    ] {
        store
            .insert_device(&DeviceRecord {
                name: name.into(),
                device_type,
                enabled: true,
                device_auth: true,
                method,
                serial,
                mac,
                owner: None,
                registered_at: None,
                created: 0,
                updated: 0,
            })
            .await
            .expect("insert device");
        store.assign(user, name, 3).await.expect("assign device");
    }

    // Unknown names are checked against a decoy with the same tiny parameters.
    let local =
        Arc::new(LocalVerifier::new(&config.auth.local, store.clone()).with_hash_params(params));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ipam = Arc::new(Ipam::new(store.clone(), &config.pools, now).expect("address pools"));
    Handler::new(
        Live {
            nas: NasTable::new(&config.clients),
            settings: Settings::from_config(&config),
        },
        Policy::new(store, Source::Local(local), ipam, Notifier::disabled()),
        config.radius.dedup_window,
        config.radius.request_timeout,
    )
}

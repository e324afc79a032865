//! SIGHUP: re-reads the config file, swaps in what can change while running, and names in the
//! log each changed key that keeps its old value until a restart.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::notify::{Mailer, Notifier, Relay, SmtpLinkMailer};
use crate::policy::Settings;
use crate::radius::listener::{Handler, Live};
use crate::radius::nas::NasTable;

/// Both mail paths: registration-failure mail (the policy's notifier) and profile links.
pub(super) struct Mail {
    pub notifier: Notifier,
    pub links: Arc<SmtpLinkMailer>,
    /// The notifier's mail tasks, waited for at shutdown.
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

/// The mail side of a config, built before anything is swapped: a relay that cannot be set
/// up refuses the reload (or the start) instead of leaving mail half-configured.
pub(super) struct MailSetup {
    registration: Option<Mailer>,
    links: Option<Relay>,
}

impl MailSetup {
    pub(super) fn new(c: &Config) -> Result<Self, String> {
        let registration = if c.registration.notify_on_failure {
            let r = &c.registration;
            Some(Mailer::new(&c.smtp, &r.notify_to, r.batch_window)?)
        } else {
            None
        };
        Ok(Self {
            registration,
            links: Relay::new(&c.smtp)?,
        })
    }
}

impl Mail {
    pub(super) fn install(&self, setup: MailSetup) {
        self.notifier
            .switch(setup.registration, &self.tasks, &self.stop);
        self.links.set(setup.links);
    }
}

/// Whether `[smtp]` or the registration mail settings differ (a mail task is restarted only then).
fn mail_changed(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.registration, &new.registration);
    old.smtp != new.smtp
        || a.notify_on_failure != b.notify_on_failure
        || a.notify_to != b.notify_to
        || a.batch_window != b.batch_window
}

/// What a reload compares a new file with. Restart-only keys compare with the config the
/// daemon started with, which is what still runs (a change reverted in the file is then no
/// change); the keys a reload applies compare with the last config applied.
struct Baseline {
    started: Config,
    applied: Config,
}

impl Baseline {
    fn new(config: Config) -> Self {
        Self {
            started: config.clone(),
            applied: config,
        }
    }

    /// The restart-only keys of `new` that differ from the running values.
    fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        restart_only(&self.started, new)
    }

    /// Whether the mail tasks must be rebuilt for `new`.
    fn mail_changed(&self, new: &Config) -> bool {
        mail_changed(&self.applied, new)
    }

    /// Records `new` as applied by a successful reload.
    fn applied(&mut self, new: Config) {
        self.applied = new;
    }
}

/// A load error for the log. figment's parse errors (unknown key, bad value) name only the
/// key, so the file is added; the other errors name their file or variable already.
fn load_error(path: &Path, e: ConfigError) -> String {
    let parse = matches!(e, ConfigError::Parse(_));
    let e = anyhow::Error::new(e);
    if parse {
        format!("{}: {e:#}", path.display())
    } else {
        format!("{e:#}")
    }
}

/// Swaps in clients, DNS, proxy, device and registration settings, mail settings and new
/// pools. A config that does not validate, changes a pool in place, or names a mail relay that
/// cannot be set up is refused and the running one kept.
pub(super) async fn reload_on_sighup(
    handler: Arc<Handler>,
    mail: Mail,
    started: Config,
    path: PathBuf,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the SIGHUP handler; reload disabled");
            return;
        }
    };
    let mut baseline = Baseline::new(started);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        let new = match Config::load_valid(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    error = load_error(&path, e),
                    "reload refused; the running configuration stays"
                );
                continue;
            }
        };
        let ipam = handler.policy().ipam();
        if let Err(why) = ipam.check_reload(&new.pools) {
            error!(%why, "reload refused; the running configuration stays");
            continue;
        }
        let setup = match baseline
            .mail_changed(&new)
            .then(|| MailSetup::new(&new))
            .transpose()
        {
            Ok(setup) => setup,
            Err(e) => {
                error!(error = %e, "reload refused; the running configuration stays");
                continue;
            }
        };
        if let Err(e) = ipam.add_pools(&new.pools, crate::store::now_secs()) {
            error!(error = %e, "reload refused: new pools could not be added");
            continue;
        }
        for key in baseline.needs_restart(&new) {
            warn!(
                key,
                "changed in the config file; takes effect after a restart"
            );
        }
        if let Some(setup) = setup {
            mail.install(setup);
        }
        ipam.set_clients(new.clients.iter().map(|c| c.name.as_str()));
        handler.reload(Live {
            nas: NasTable::new(&new.clients),
            settings: Settings::from_config(&new),
        });
        info!(
            clients = new.clients.len(),
            pools = new.pools.len(),
            "configuration reloaded"
        );
        baseline.applied(new);
    }
}

/// `Debug` stands in for `PartialEq` on sections that lack it; it redacts secrets, so the
/// callers compare those on their own.
fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The keys whose change a reload does not apply: what was built or bound once at start
/// (sockets, store, admin API, listeners' limits, auth verifiers, profile service, logging).
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let (r, n) = (&old.radius, &new.radius);
    let (a, b) = (&old.auth, &new.auth);
    let ad = |c: &Config| {
        c.auth
            .active_directory
            .as_ref()
            .map(|d| d.admin_password.clone())
    };
    let azure = |c: &Config| {
        c.auth
            .azure_ad
            .as_ref()
            .map(|z| (z.application_secret.clone(), z.admin_password.clone()))
    };
    [
        ("radius.auth_addr", r.auth_addr != n.auth_addr),
        ("radius.acct_addr", r.acct_addr != n.acct_addr),
        ("radius.max_in_flight", r.max_in_flight != n.max_in_flight),
        ("radius.dedup_window", r.dedup_window != n.dedup_window),
        (
            "radius.request_timeout",
            r.request_timeout != n.request_timeout,
        ),
        ("radius.workers", r.workers != n.workers),
        ("radius.busy_poll", r.busy_poll != n.busy_poll),
        ("radius.pin_workers", r.pin_workers != n.pin_workers),
        (
            "radius.max_queue_delay",
            r.max_queue_delay != n.max_queue_delay,
        ),
        ("store", differs(&old.store, &new.store)),
        (
            "admin",
            old.admin.addr != new.admin.addr || old.admin.token != new.admin.token,
        ),
        ("auth.source", a.source != b.source),
        ("auth.local", differs(&a.local, &b.local)),
        (
            "auth.active_directory",
            differs(&a.active_directory, &b.active_directory) || ad(old) != ad(new),
        ),
        (
            "auth.azure_ad",
            differs(&a.azure_ad, &b.azure_ad) || azure(old) != azure(new),
        ),
        ("profiles", differs(&old.profiles, &new.profiles)),
        ("log", differs(&old.log, &new.log)),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reloadable_changes_ask_for_no_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.devices.max_per_user = 5;
        new.registration.notify_on_failure = true;
        new.registration.notify_to = vec!["noc@example.com".into()];
        new.smtp.host = Some("mail.example.com".into());
        new.radius.interim_interval = Duration::from_secs(300);
        new.dns.primary = Some([10, 0, 0, 53].into());
        assert!(restart_only(&old, &new).is_empty());
        assert!(mail_changed(&old, &new));
        assert!(!mail_changed(&old, &old.clone()));
    }

    #[test]
    fn restart_only_changes_are_named() {
        let old = Config::default();
        let mut new = old.clone();
        new.radius.max_in_flight = 10;
        new.radius.pin_workers = false;
        new.auth.local.cache_ttl = Duration::from_secs(60);
        new.profiles.base_url = "https://vpn.example.com".into();
        new.log.level = "debug".into();
        assert_eq!(
            restart_only(&old, &new),
            [
                "radius.max_in_flight",
                "radius.pin_workers",
                "auth.local",
                "profiles",
                "log"
            ]
        );
    }

    /// A restart-only key changed in the file is named at each reload while the daemon runs
    /// the old value, and no more once the file is back at the running value.
    #[test]
    fn a_reverted_restart_only_change_is_no_change() {
        let started = Config::default();
        let mut baseline = Baseline::new(started.clone());
        let mut moved = started.clone();
        moved.radius.acct_addr = "127.0.0.1:11813".parse().unwrap();
        assert_eq!(baseline.needs_restart(&moved), ["radius.acct_addr"]);
        baseline.applied(moved.clone());
        assert_eq!(baseline.needs_restart(&moved), ["radius.acct_addr"]);
        baseline.applied(moved);
        assert!(baseline.needs_restart(&started).is_empty());
    }

    /// Keys a reload applies compare with the last config applied, not the first.
    #[test]
    fn reloaded_keys_compare_with_the_last_applied() {
        let started = Config::default();
        let mut baseline = Baseline::new(started.clone());
        let mut relay = started.clone();
        relay.smtp.host = Some("mail.example.com".into());
        assert!(baseline.mail_changed(&relay));
        baseline.applied(relay.clone());
        assert!(!baseline.mail_changed(&relay));
        assert!(baseline.mail_changed(&started));
    }

    /// A file that does not parse (an unknown key, a bad value) is named with the key.
    #[test]
    fn a_parse_error_names_the_file() {
        for (toml, key) in [
            ("[radius]\nbogus = 1\n", "bogus"),
            ("[radius]\nacct_addr = \"nowhere\"\n", "radius.acct_addr"),
        ] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), toml).unwrap();
            let e = Config::load_valid(file.path()).unwrap_err();
            let text = load_error(file.path(), e);
            let path = file.path().display().to_string();
            assert!(text.starts_with(&format!("{path}: ")), "{text}");
            assert!(text.contains(key), "{text}");
        }
    }

    /// `Debug` redacts secrets: a changed password alone must still be seen.
    #[test]
    fn a_changed_secret_alone_is_named() {
        let ad = |password: &str| -> Config {
            toml::from_str(&format!(
                "[auth.active_directory]\nprimary_host = \"dc1\"\nprimary_address = \"192.0.2.1\"\n\
                 domain = \"corp.example.com\"\nadmin_password = \"{password}\"\n"
            ))
            .unwrap()
        };
        assert_eq!(
            restart_only(&ad("old-password"), &ad("new-password")),
            ["auth.active_directory"]
        );
        let mut smtp = Config::default();
        smtp.smtp.password = Some(crate::config::Secret::new("new-password"));
        assert!(mail_changed(&Config::default(), &smtp));
    }
}

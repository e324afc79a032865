//! SIGHUP: re-reads the config file, swaps in what can change while running, and names in the
//! log each changed key that keeps its old value until a restart.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Config;
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

/// Swaps in clients, DNS, proxy, device and registration settings, mail settings and new
/// pools. A config that does not validate, changes a pool in place, or names a mail relay that
/// cannot be set up is refused and the running one kept.
pub(super) async fn reload_on_sighup(
    handler: Arc<Handler>,
    mail: Mail,
    mut current: Config,
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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        let new = match Config::load_valid(&path) {
            Ok(c) => c,
            Err(e) => {
                let e = anyhow::Error::new(e);
                error!(
                    error = format!("{e:#}"),
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
        let setup = match mail_changed(&current, &new)
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
        for key in restart_only(&current, &new) {
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
        current = new;
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
        new.auth.local.cache_ttl = Duration::from_secs(60);
        new.profiles.base_url = "https://vpn.example.com".into();
        new.log.level = "debug".into();
        assert_eq!(
            restart_only(&old, &new),
            ["radius.max_in_flight", "auth.local", "profiles", "log"]
        );
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

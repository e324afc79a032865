//! Registration-failure mail. The request path only does a non-blocking `try_send` into a
//! bounded queue; a background task batches what arrives within `batch_window` into one
//! mail to every address, and retries with backoff for `retry_for`. A slow or dead mail
//! server therefore never delays a RADIUS answer, and a burst is one mail, not a storm.
//! Each notification is also kept in the store's outbox until mailed (or given up on), and
//! a start queues what a stop or crash left there: none is lost to a restart.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Problem, Secret};
use crate::metrics::METRICS;
use crate::store::Store;

/// Events queued at most; beyond, new ones are dropped and counted.
const QUEUE: usize = 1024;
/// Events in one mail at most; the rest wait for the next mail.
const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (only for a relay on loopback or a trusted network).
    None,
    /// STARTTLS upgrade, certificate checked (default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, certificate checked (default port 465).
    Tls,
}

/// `[smtp]`: the mail relay for notifications and profile links. `PartialEq` tells a reload
/// whether to rebuild the mailers (`Debug` would miss a new password: it redacts it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Relay host name (checked against its certificate unless `tls = "none"`).
    pub host: Option<String>,
    /// Port; default by `tls`: 25, 587 or 465.
    pub port: Option<u16>,
    /// Sender address, e.g. `"ravpnd <ravpnd@example.com>"`.
    pub from: String,
    /// Login, if the relay requires one.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `"none"`, `"starttls"` or `"tls"`.
    pub tls: SmtpTls,
    /// Time allowed for one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long undelivered mail is retried before it is dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            from: "ravpnd <ravpnd@localhost>".into(),
            username: None,
            password: None,
            tls: SmtpTls::Starttls,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(15 * 60),
        }
    }
}

impl SmtpConfig {
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.from.parse::<Mailbox>().is_err() {
            p.push(Problem::at(
                prefix,
                "from",
                format!("`{}` is not a mail address", self.from),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            p.push(Problem::at(
                prefix,
                "username",
                "username and password go together",
            ));
        }
        if self.port == Some(0) {
            p.push(Problem::at(prefix, "port", "must be 1..=65535"));
        }
        p
    }

    fn transport(
        &self,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
        let host = self.host.as_deref().unwrap_or("localhost");
        let mut b = match self.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        };
        if let Some(port) = self.port {
            b = b.port(port);
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().to_owned()));
        }
        Ok(b.timeout(Some(self.timeout)).build())
    }
}

/// Sends `message`, giving up after `timeout`. lettre's own timeout bounds only the TCP
/// connect: a relay that accepts and then stays silent (no greeting, no reply) would hold
/// the send, and with it the mail task and shutdown, forever.
async fn send_within(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Ok(sent) => sent.map(|_| ()).map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer from the mail relay within {timeout:?}")),
    }
}

/// One failed auto-registration, as the admin reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationFailure {
    pub user: String,
    /// What the device presented.
    pub serial: Option<String>,
    pub mac: Option<String>,
    pub platform: Option<String>,
    pub reason: String,
    /// The NAS that asked.
    pub client: String,
    pub at: SystemTime,
}

/// A queued notification, with its id in the store's outbox (if it was kept there).
#[derive(Debug)]
struct Queued {
    id: Option<u64>,
    event: RegistrationFailure,
}

/// Handle the request path uses; cheap to clone. Clones share one queue, so `switch` on a
/// reload reaches the copy the policy holds.
#[derive(Clone, Default)]
pub struct Notifier {
    tx: Arc<ArcSwapOption<mpsc::Sender<Queued>>>,
    /// Where notifications wait until mailed; `None`: in memory only (tests).
    outbox: Option<Store>,
}

impl Notifier {
    /// A notifier that sends nothing (notifications off) until `switch`, keeping nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A notifier that keeps each notification in `store`'s outbox until it is mailed.
    pub fn kept_in(store: Store) -> Self {
        Self {
            outbox: Some(store),
            ..Self::default()
        }
    }

    /// Queues what the outbox holds from before the start (call once, after the first
    /// `switch`; a reload's task takes over its predecessor's queue, not the outbox).
    pub fn resume(&self) {
        let (Some(store), Some(tx)) = (&self.outbox, self.tx.load_full()) else {
            return;
        };
        let kept = match store.outbox() {
            Ok(kept) => kept,
            Err(e) => return warn!(error = %e, "cannot read the notifications not mailed yet"),
        };
        if !kept.is_empty() {
            info!(
                events = kept.len(),
                "queueing notifications not mailed before the start"
            );
        }
        for (id, bytes) in kept {
            let queued = serde_json::from_slice(&bytes).ok().is_some_and(|event| {
                tx.try_send(Queued {
                    id: Some(id),
                    event,
                })
                .is_ok()
            });
            if queued {
                METRICS.mail_queue.inc();
            } else {
                // Undecodable, or more than the queue holds: not mailed.
                METRICS.mail_dropped.inc();
                forget(&self.outbox, [Some(id)]);
            }
        }
    }

    /// Queues events from now on for a new task of `mailer`, spawned on `tasks` (`None`:
    /// drops them). The previous task, its queue closed, mails what it holds and ends. Tasks
    /// stop when `shutdown` is cancelled, after one last attempt (at most `[smtp] timeout`).
    pub fn switch(
        &self,
        mailer: Option<Mailer>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let tx = mailer.map(|mut mailer| {
            mailer.outbox = self.outbox.clone();
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.spawn(mailer.run(rx, shutdown.clone()));
            Arc::new(tx)
        });
        self.tx.store(tx);
    }

    /// Queues a notification without waiting; a full queue drops it (counted).
    pub fn notify(&self, event: RegistrationFailure) {
        let tx = self.tx.load();
        let Some(tx) = tx.as_deref() else { return };
        let id = self.outbox.as_ref().and_then(|store| {
            let bytes = serde_json::to_vec(&event).expect("serializes infallibly");
            store
                .outbox_add(&bytes)
                .map_err(|e| warn!(error = %e, "cannot keep a notification in the store"))
                .ok()
        });
        match tx.try_send(Queued { id, event }) {
            Ok(()) => METRICS.mail_queue.inc(),
            Err(_) => {
                METRICS.mail_dropped.inc();
                forget(&self.outbox, [id]);
            }
        }
    }
}

/// Removes notifications from the outbox: mailed, given up on, or dropped.
fn forget(outbox: &Option<Store>, ids: impl IntoIterator<Item = Option<u64>>) {
    if let Some(store) = outbox {
        if let Err(e) = store.outbox_remove(ids.into_iter().flatten()) {
            warn!(error = %e, "cannot remove mailed notifications from the store");
        }
    }
}

/// The registration-failure mail task, built but not started: a reload builds it before it
/// commits to anything, so a relay that cannot be set up refuses the reload.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    batch_window: Duration,
    retry_for: Duration,
    /// `[smtp] timeout`: one attempt at most, the last one at shutdown included.
    timeout: Duration,
    /// The notifier's outbox (set by `Notifier::switch`).
    outbox: Option<Store>,
}

impl Mailer {
    pub fn new(smtp: &SmtpConfig, to: &[String], batch_window: Duration) -> Result<Self, String> {
        let from: Mailbox = smtp.from.parse().map_err(|e| format!("smtp.from: {e}"))?;
        let to = to
            .iter()
            .map(|a| a.parse::<Mailbox>().map_err(|e| format!("`{a}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            transport: smtp.transport().map_err(|e| format!("smtp: {e}"))?,
            from,
            to,
            batch_window,
            retry_for: smtp.retry_for,
            timeout: smtp.timeout,
            outbox: None,
        })
    }

    async fn run(self, mut rx: mpsc::Receiver<Queued>, shutdown: CancellationToken) {
        let mut batch: Vec<Queued> = Vec::new();
        loop {
            // Wait for the first event of a batch.
            if batch.is_empty() {
                tokio::select! {
                    // Shutdown first: queued events must not start attempts after the last one.
                    biased;
                    _ = shutdown.cancelled() => return,
                    ev = rx.recv() => match ev {
                        Some(ev) => self.take(&mut batch, ev),
                        None => return,
                    },
                }
                // Gather what else arrives within the window.
                let until = tokio::time::Instant::now() + self.batch_window;
                self.gather(&mut rx, &mut batch, until, &shutdown).await;
            }
            let first_try = Instant::now();
            let mut backoff = Duration::from_secs(1);
            loop {
                match self.send(&batch).await {
                    Ok(()) => {
                        info!(events = batch.len(), "registration failure mail sent");
                        METRICS.mail_sent.inc();
                        forget(&self.outbox, batch.drain(..).map(|q| q.id));
                        break;
                    }
                    Err(e) if shutdown.is_cancelled() => {
                        // Kept in the outbox: the next start mails them.
                        warn!(error = %e, events = batch.len(), "registration failure mail not sent before the stop; kept for the next start");
                        return;
                    }
                    Err(e) if first_try.elapsed() >= self.retry_for => {
                        warn!(error = %e, events = batch.len(), "giving up on registration failure mail");
                        METRICS.mail_failed.inc();
                        forget(&self.outbox, batch.drain(..).map(|q| q.id));
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?backoff, "registration failure mail not sent; will retry");
                        let until = tokio::time::Instant::now() + backoff;
                        self.gather(&mut rx, &mut batch, until, &shutdown).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            // That was the last attempt: what is still queued stays in the outbox for the
            // next start.
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    fn take(&self, batch: &mut Vec<Queued>, ev: Queued) {
        METRICS.mail_queue.dec();
        if batch.len() < MAX_BATCH {
            batch.push(ev);
        } else {
            METRICS.mail_dropped.inc();
            forget(&self.outbox, [ev.id]);
        }
    }

    /// Adds arriving events to `batch` until `until` (or shutdown). A closed queue (a reload
    /// replaced this task's) still waits until `until`: the retry backoff must not spin.
    async fn gather(
        &self,
        rx: &mut mpsc::Receiver<Queued>,
        batch: &mut Vec<Queued>,
        until: tokio::time::Instant,
        shutdown: &CancellationToken,
    ) {
        let mut open = true;
        loop {
            tokio::select! {
                ev = rx.recv(), if open => match ev {
                    Some(ev) => self.take(batch, ev),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(until) => return,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn send(&self, batch: &[Queued]) -> Result<(), String> {
        let mut builder = Message::builder().from(self.from.clone()).subject(format!(
            "ravpnd: {} device registration failure(s)",
            batch.len()
        ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        // Plain 7-bit when possible, so serials stay whole and greppable in the raw mail.
        let text = render(batch.iter().map(|q| &q.event));
        let body = Body::new_with_encoding(text.clone(), ContentTransferEncoding::SevenBit)
            .unwrap_or_else(|_| Body::new(text));
        let message = builder
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?;
        send_within(&self.transport, message, self.timeout).await
    }
}

/// The mail body: one paragraph per failure.
fn render<'a>(batch: impl IntoIterator<Item = &'a RegistrationFailure>) -> String {
    let mut body = String::from(
        "ravpnd could not auto-register the following devices. Check the users' device\n\
         assignments (`ravpnd device list`) and reset or add devices as needed.\n\n",
    );
    // Every field is one line: a control character in one (none should pass the request
    // path's checks) is shown escaped.
    let line = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    for ev in batch {
        body.push_str(&format!(
            "time:     {}\nuser:     {}\nserial:   {}\nmac:      {}\nplatform: {}\nreason:   {}\nclient:   {}\n\n",
            humantime::format_rfc3339_seconds(ev.at),
            line(&ev.user),
            line(ev.serial.as_deref().unwrap_or("-")),
            line(ev.mac.as_deref().unwrap_or("-")),
            line(ev.platform.as_deref().unwrap_or("-")),
            ev.reason,
            line(&ev.client)
        ));
    }
    body
}

/// Sends profile links through `[smtp]` (the admin waits for the outcome); `set` swaps the
/// relay on a reload.
#[derive(Default)]
pub struct SmtpLinkMailer {
    relay: ArcSwapOption<Relay>,
}

/// `[smtp]` as the link mail uses it, built.
pub struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `[smtp] timeout`: the admin waiting for the send gets an error, not a hang.
    timeout: Duration,
}

impl Relay {
    /// `None` when no `[smtp] host` is configured.
    pub fn new(smtp: &SmtpConfig) -> Result<Option<Self>, String> {
        if smtp.host.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            transport: smtp.transport().map_err(|e| format!("smtp: {e}"))?,
            from: smtp.from.parse().map_err(|e| format!("smtp.from: {e}"))?,
            timeout: smtp.timeout,
        }))
    }
}

impl SmtpLinkMailer {
    /// Links from now on go through `relay` (`None`: refused, no relay configured).
    pub fn set(&self, relay: Option<Relay>) {
        self.relay.store(relay.map(Arc::new));
    }
}

impl crate::profiles::LinkMailer for SmtpLinkMailer {
    fn send<'a>(
        &'a self,
        to: &'a str,
        subject: &'a str,
        body: String,
    ) -> crate::profiles::MailFuture<'a> {
        let relay = self.relay.load_full();
        Box::pin(async move {
            let relay = relay.ok_or("no mail relay configured ([smtp] host)")?;
            let to: Mailbox = to.parse().map_err(|e| format!("`{to}`: {e}"))?;
            let body = Body::new_with_encoding(body.clone(), ContentTransferEncoding::SevenBit)
                .unwrap_or_else(|_| Body::new(body));
            let message = Message::builder()
                .from(relay.from.clone())
                .to(to)
                .subject(subject)
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(|e| e.to_string())?;
            send_within(&relay.transport, message, relay.timeout).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay that accepts connections and never says a word (no greeting, no replies);
    /// each accepted connection is announced on the returned channel.
    async fn silent_relay() -> (SmtpConfig, mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
                let _ = tx.send(());
            }
        });
        let smtp = SmtpConfig {
            host: Some("127.0.0.1".into()),
            port: Some(port),
            tls: SmtpTls::None,
            timeout: Duration::from_secs(1),
            ..SmtpConfig::default()
        };
        (smtp, rx)
    }

    /// A relay that never answers cannot hold the mail task, and so shutdown, past its
    /// last attempt's `[smtp] timeout`.
    #[tokio::test]
    async fn failure_mail_to_a_silent_relay_ends_at_shutdown() {
        let (smtp, mut accepted) = silent_relay().await;
        let mailer = Mailer::new(&smtp, &["noc@example.com".into()], Duration::ZERO).unwrap();
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let notifier = Notifier::disabled();
        notifier.switch(Some(mailer), &tasks, &shutdown);
        notifier.notify(RegistrationFailure {
            user: "alice".into(),
            serial: Some("ABC".into()),
            mac: None,
            platform: None,
            reason: "no free device slot".into(),
            client: "asa1".into(),
            at: SystemTime::now(),
        });
        // Shut down while the attempt is waiting for the greeting.
        tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("the mail task never connected");
        shutdown.cancel();
        tasks.close();
        let margin = Duration::from_secs(2);
        assert!(
            tokio::time::timeout(smtp.timeout + margin, tasks.wait())
                .await
                .is_ok(),
            "mail task still running {:?} after shutdown",
            smtp.timeout + margin
        );
    }

    /// The admin sending a profile link to a relay that never answers gets an error.
    #[tokio::test]
    async fn profile_link_to_a_silent_relay_fails_within_the_timeout() {
        use crate::profiles::LinkMailer;
        let (smtp, _accepted) = silent_relay().await;
        let links = SmtpLinkMailer::default();
        links.set(Relay::new(&smtp).unwrap());
        let sent = tokio::time::timeout(
            smtp.timeout + Duration::from_secs(2),
            links.send("alice@example.com", "your VPN profile", "link".into()),
        )
        .await
        .expect("profile link send still waiting for the relay");
        let e = sent.expect_err("a silent relay accepted the mail");
        assert!(e.contains("no answer from the mail relay"), "{e}");
    }

    /// A closed queue (a reload replaced the task's) does not end the wait: the retry
    /// backoff sleeps instead of spinning against a relay that refuses.
    #[tokio::test]
    async fn gathering_from_a_closed_queue_still_waits() {
        let smtp = SmtpConfig {
            host: Some("127.0.0.1".into()),
            ..SmtpConfig::default()
        };
        let mailer = Mailer::new(&smtp, &["noc@example.com".into()], Duration::ZERO).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        drop(tx);
        let started = tokio::time::Instant::now();
        let until = started + Duration::from_millis(200);
        mailer
            .gather(&mut rx, &mut Vec::new(), until, &CancellationToken::new())
            .await;
        assert!(tokio::time::Instant::now() >= until, "returned early");
    }

    #[test]
    fn body_names_user_device_reason_and_time() {
        let body = render(&[RegistrationFailure {
            user: "alice".into(),
            serial: Some("ABC".into()),
            mac: None,
            platform: Some("win".into()),
            reason: "no free device slot".into(),
            client: "asa1".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }]);
        for part in [
            "alice",
            "serial:   ABC",
            "platform: win",
            "no free device slot",
            "2023-11-14T22:13:20Z",
            "asa1",
        ] {
            assert!(body.contains(part), "{part} in {body}");
        }
        // A field cannot add lines of its own.
        let forged = render(&[RegistrationFailure {
            user: "mallory".into(),
            serial: Some("X\nuser:     alice".into()),
            mac: None,
            platform: None,
            reason: "serial in use".into(),
            client: "asa1".into(),
            at: SystemTime::UNIX_EPOCH,
        }]);
        assert!(
            forged.contains("serial:   X\\nuser:     alice\n"),
            "{forged}"
        );
        assert!(!forged.contains("\nuser:     alice"), "{forged}");
    }
}

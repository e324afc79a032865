//! Lifecycle: takes bound sockets and a cancellation token, runs the listeners and the admin
//! API, and shuts down as a tree: stop receiving → finish in-flight → flush → admin last.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::auth::local::LocalVerifier;
use crate::auth::Source;
use crate::config::{AuthSource, Config, Secret};
use crate::notify::Notifier;
use crate::policy::Policy;
use crate::radius::listener::{self, Handler};
use crate::radius::nas::NasTable;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}: {source} (is another ravpnd running on it?)")]
    Store { path: String, source: StoreError },
    #[error("cannot read or create the admin token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("final store flush failed: {0}")]
    Flush(StoreError),
    #[error("cannot start the mailer: {0}")]
    Mail(String),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// The sockets the daemon serves on, bound before `run` so tests can use port 0.
pub struct Sockets {
    pub auth: UdpSocket,
    pub admin: TcpListener,
}

impl Sockets {
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let auth = UdpSocket::bind(config.radius.auth_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "the RADIUS auth socket",
                addr: config.radius.auth_addr,
                source,
            })?;
        let admin = TcpListener::bind(config.admin.addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "the admin API",
                addr: config.admin.addr,
                source,
            })?;
        Ok(Self { auth, admin })
    }
}

/// Opens the store named by the config.
pub fn open_store(config: &Config) -> Result<Store, ServerError> {
    Store::open(&config.store.path).map_err(|source| ServerError::Store {
        path: config.store.path.display().to_string(),
        source,
    })
}

/// The admin token: from the config, else generated beside the store.
fn admin_token(config: &Config) -> Result<Secret, ServerError> {
    if let Some(t) = &config.admin.token {
        return Ok(t.clone());
    }
    let path = config.admin.token_file(&config.store);
    admin::token::load_or_create(&path).map_err(|source| ServerError::Token {
        path: path.display().to_string(),
        source,
    })
}

/// Serves until `shutdown` is cancelled, then drains and flushes.
pub async fn run(
    config: Config,
    store: Store,
    sockets: Sockets,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let token = admin_token(&config)?;
    let local = Arc::new(LocalVerifier::new(&config.auth.local));
    let mail_stop = CancellationToken::new();
    let (notifier, mail_task) = if config.registration.notify_on_failure {
        let (n, task) = Notifier::start(
            &config.smtp,
            &config.registration.notify_to,
            config.registration.batch_window,
            mail_stop.clone(),
        )
        .map_err(ServerError::Mail)?;
        (n, Some(task))
    } else {
        (Notifier::disabled(), None)
    };
    let source = match config.auth.source {
        None => Source::NotSelected,
        Some(AuthSource::Local) => Source::Local(local.clone()),
        // Refused by `Config::validate`; kept total so a new source cannot be forgotten here.
        Some(AuthSource::ActiveDirectory | AuthSource::AzureAd) => Source::NotSelected,
    };
    let handler = Arc::new(Handler::new(
        NasTable::new(&config.clients),
        Policy::new(
            store.clone(),
            source,
            config.devices.clone(),
            config.registration.clone(),
            notifier,
        ),
        config.radius.dedup_window,
        config.radius.request_timeout,
    ));

    let auth_addr = sockets.auth.local_addr().map_err(ServerError::Admin)?;
    let admin_addr = sockets.admin.local_addr().map_err(ServerError::Admin)?;
    let addr_file = config.admin.addr_file(&config.store);
    if let Err(e) = std::fs::write(&addr_file, admin_addr.to_string()) {
        tracing::warn!(file = %addr_file.display(), error = %e, "cannot record the admin address");
    }
    let admin_stop = CancellationToken::new();
    let app = admin::router(Arc::new(AdminState {
        store: store.clone(),
        local,
        token,
        max_devices: config.devices.max_per_user,
    }));
    let admin_task = tokio::spawn({
        let stop = admin_stop.clone();
        async move {
            axum::serve(sockets.admin, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });

    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.radius.max_in_flight));
    info!(
        radius_auth = %auth_addr,
        admin = %admin_addr,
        source = ?config.auth.source,
        clients = config.clients.len(),
        "ravpnd ready"
    );
    listener::serve(
        Arc::new(sockets.auth),
        handler,
        permits,
        tracker.clone(),
        shutdown,
    )
    .await;

    info!(
        in_flight = tracker.len(),
        "shutting down: finishing in-flight requests"
    );
    tracker.close();
    tracker.wait().await;
    store.flush().await.map_err(ServerError::Flush)?;
    mail_stop.cancel();
    if let Some(task) = mail_task {
        let _ = task.await;
    }
    admin_stop.cancel();
    match admin_task.await {
        Ok(r) => r.map_err(ServerError::Admin)?,
        Err(e) => tracing::error!(error = %e, "admin task panicked"),
    }
    info!("stopped");
    Ok(())
}

//! Lifecycle: takes bound sockets and a cancellation token, runs the listeners and the admin
//! API, and shuts down as a tree: stop receiving → finish in-flight → flush → admin last.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::auth::azure::AzureVerifier;
use crate::auth::ldap::AdVerifier;
use crate::auth::local::LocalVerifier;
use crate::auth::Source;
use crate::auth::UserDirectory;
use crate::config::{AuthSource, Config, Secret};
use crate::connection_cap::ConnectionCap;
use crate::ipam::{Ipam, IpamError};
use crate::notify::{Notifier, SmtpLinkMailer};
use crate::policy::{Policy, Settings};
use crate::profiles::{Profiles, ProfilesConfig, SystemClock};
use crate::radius::kernel_drops::KernelDrops;
use crate::radius::listener::{self, Handler, Listener, Live, Port};
use crate::radius::nas::NasTable;
use crate::store::{Store, StoreError};

mod reload;

use reload::{Mail, MailSetup};

/// Printed as a chain (`{:#}`): a cause that is the error's `source` is not in its message too.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The cause follows as the error's source; the hint only when the store is locked.
    #[error("cannot open the store at {path}{}", lock_hint(.source))]
    Store { path: String, source: StoreError },
    #[error("cannot read or create the admin token file {path}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("final store flush failed: {0}")]
    Flush(StoreError),
    #[error("cannot start the mailer: {0}")]
    Mail(String),
    #[error("profile download TLS: {0}")]
    Tls(String),
    #[error("directory source: {0}")]
    Directory(String),
    #[error("cannot restore address leases: {0}")]
    Ipam(IpamError),
    #[error("cannot start the RADIUS worker threads: {0}")]
    Workers(std::io::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// The sockets the daemon serves on, bound before `run` so tests can use port 0.
pub struct Sockets {
    pub auth: std::net::UdpSocket,
    pub acct: std::net::UdpSocket,
    pub admin: TcpListener,
    /// The public profile-download listener, when `[profiles] listen` is set.
    pub profiles: Option<std::net::TcpListener>,
}

impl Sockets {
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let auth = udp_socket(config.radius.auth_addr).map_err(|source| ServerError::Bind {
            what: "the RADIUS auth socket",
            addr: config.radius.auth_addr,
            source,
        })?;
        let acct = udp_socket(config.radius.acct_addr).map_err(|source| ServerError::Bind {
            what: "the RADIUS accounting socket",
            addr: config.radius.acct_addr,
            source,
        })?;
        let admin = TcpListener::bind(config.admin.addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "the admin API",
                addr: config.admin.addr,
                source,
            })?;
        let profiles = match config.profiles.listen {
            Some(addr) => {
                Some(
                    std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind {
                        what: "the profile download listener",
                        addr,
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            auth,
            acct,
            admin,
            profiles,
        })
    }
}

/// Receive buffer asked for on the RADIUS sockets: a burst of thousands of requests (a
/// gateway reconnecting all its users) must queue, not be dropped by the kernel. Linux caps
/// it at net.core.rmem_max.
const UDP_RECV_BUFFER: usize = 8 << 20;

/// A blocking socket: the worker threads wait in a receive (see `listener::serve`).
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        warn!(%addr, error = %e, "cannot enlarge the UDP receive buffer");
    }
    // Arrival times for `[radius] max_queue_delay`; without them nothing is dropped as late.
    // (The kernel starts stamping on arrival shortly after the first socket asks; until then
    // datagrams are stamped when read, so they look fresh, never late.)
    if let Err(e) = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    ) {
        warn!(%addr, error = %e, "cannot have datagrams time-stamped: max_queue_delay is not enforced");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// What a store that will not open because its lock is held most likely means. (sled 0.34
/// reports a held lock as an I/O error of kind `Other` saying so.)
fn lock_hint(e: &StoreError) -> &'static str {
    match e {
        StoreError::Sled(sled::Error::Io(io)) if io.to_string().contains("acquire lock") => {
            " (is another ravpnd running on it?)"
        }
        _ => "",
    }
}

/// Opens the store named by the config.
pub fn open_store(config: &Config) -> Result<Store, ServerError> {
    Store::open_with_cache(
        &config.store.path,
        config.store.cache_records,
        config.store.page_cache_mib,
    )
    .map_err(|source| ServerError::Store {
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

/// Serves until `shutdown` is cancelled, then drains and flushes. SIGHUP reloads
/// `config_path`.
pub async fn run(
    config: Config,
    config_path: PathBuf,
    store: Store,
    sockets: Sockets,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let token = admin_token(&config)?;
    let local = Arc::new(LocalVerifier::new(&config.auth.local, store.clone()));
    let mail = Mail {
        notifier: Notifier::kept_in(store.clone()),
        links: Arc::new(SmtpLinkMailer::default()),
        tasks: TaskTracker::new(),
        stop: CancellationToken::new(),
    };
    mail.install(MailSetup::new(&config).map_err(ServerError::Mail)?);
    mail.notifier.resume();
    let source = match config.auth.source {
        None => Source::NotSelected,
        Some(AuthSource::Local) => Source::Local(local.clone()),
        Some(AuthSource::ActiveDirectory) => match &config.auth.active_directory {
            Some(ad) => Source::ActiveDirectory(Arc::new(
                AdVerifier::new(ad).map_err(ServerError::Directory)?,
            )),
            None => Source::NotSelected, // refused by `Config::validate`
        },
        Some(AuthSource::AzureAd) => match &config.auth.azure_ad {
            Some(az) => Source::AzureAd(Arc::new(
                AzureVerifier::new(az).map_err(ServerError::Directory)?,
            )),
            None => Source::NotSelected, // refused by `Config::validate`
        },
    };
    // The directory's health checks: until shutdown (the task ends when the token is
    // cancelled).
    match &source {
        Source::ActiveDirectory(v) => {
            tokio::spawn(v.clone().health_check(shutdown.clone()));
        }
        Source::AzureAd(v) => {
            tokio::spawn(v.clone().health_check(shutdown.clone()));
        }
        _ => {}
    }
    let directory: Option<Arc<dyn UserDirectory>> = match &source {
        Source::ActiveDirectory(v) => Some(v.clone()),
        Source::AzureAd(v) => Some(v.clone()),
        _ => None,
    };
    let ipam = Arc::new(
        Ipam::new(store.clone(), &config.pools, crate::store::now_secs())
            .map_err(ServerError::Ipam)?,
    );
    ipam.set_clients(config.clients.iter().map(|c| c.name.as_str()));
    let handler = Arc::new(Handler::new(
        Live {
            nas: NasTable::new(&config.clients),
            settings: Settings::from_config(&config),
        },
        Policy::new(store.clone(), source, ipam.clone(), mail.notifier.clone()),
        config.radius.dedup_window,
        config.radius.request_timeout,
    ));
    let background = TaskTracker::new();
    background.spawn(sweep_leases(ipam.clone(), shutdown.clone()));
    background.spawn(sweep_duplicates(handler.clone(), shutdown.clone()));
    background.spawn(compact_memory(store.clone(), shutdown.clone()));
    let (links, mail_tasks, mail_stop) =
        (mail.links.clone(), mail.tasks.clone(), mail.stop.clone());
    background.spawn(reload::reload_on_sighup(
        handler.clone(),
        mail,
        config.clone(),
        config_path,
        shutdown.clone(),
    ));

    let auth_addr = sockets.auth.local_addr().map_err(ServerError::Admin)?;
    let acct_addr = sockets.acct.local_addr().map_err(ServerError::Admin)?;
    let admin_addr = sockets.admin.local_addr().map_err(ServerError::Admin)?;
    let addr_file = config.admin.addr_file(&config.store);
    if let Err(e) = std::fs::write(&addr_file, admin_addr.to_string()) {
        tracing::warn!(file = %addr_file.display(), error = %e, "cannot record the admin address");
    }
    let profiles = Arc::new(Profiles::new(
        store.clone(),
        config.profiles.clone(),
        Arc::new(SystemClock),
        links,
    ));
    let public_handle = axum_server::Handle::new();
    let mut profiles_addr = None;
    // Bad certificate or key files stop the start, with the reason, instead of a dead port.
    let tls = match (&config.profiles.cert, &config.profiles.key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    ServerError::Tls(format!("{} / {}: {e}", cert.display(), key.display()))
                })?,
        ),
        _ => None,
    };
    let public_task = match sockets.profiles {
        Some(listener) => {
            profiles_addr = Some(listener.local_addr().map_err(ServerError::Admin)?);
            let (profiles, config, handle) = (
                profiles.clone(),
                config.profiles.clone(),
                public_handle.clone(),
            );
            Some(tokio::spawn(async move {
                let r = serve_profiles(listener, profiles, config, tls, handle).await;
                if let Err(e) = &r {
                    error!(error = %e, "profile download listener stopped");
                }
                r
            }))
        }
        None => None,
    };
    let admin_handle = axum_server::Handle::<SocketAddr>::new();
    let kernel_drops = KernelDrops::watch(&[&sockets.auth, &sockets.acct]);
    let app = admin::router(Arc::new(AdminState {
        store: store.clone(),
        local,
        token,
        handler: handler.clone(),
        profiles,
        directory,
        kernel_drops,
    }));
    let admin_task = tokio::spawn(
        limit_requests(axum_server::Server::from_listener(sockets.admin).acceptor(
            ConnectionCap::new(
                admin::MAX_CONNECTIONS,
                admin::MAX_CONNECTION_LIFETIME,
                "admin API",
            ),
        ))
        .handle(admin_handle.clone())
        .serve(app.into_make_service()),
    );

    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.radius.max_in_flight));
    info!(
        radius_auth = %auth_addr,
        radius_acct = %acct_addr,
        admin = %admin_addr,
        profiles = profiles_addr.map(tracing::field::display),
        pools = config.pools.len(),
        source = config.auth.source.map(|s| tracing::field::display(s.name())),
        clients = config.clients.len(),
        "ravpnd ready"
    );
    let workers = config.radius.worker_threads();
    let mut threads = Vec::new();
    for (socket, port) in [(sockets.auth, Port::Auth), (sockets.acct, Port::Acct)] {
        let l = Arc::new(Listener {
            socket: Arc::new(socket),
            port,
            handler: handler.clone(),
            permits: permits.clone(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            runtime: tokio::runtime::Handle::current(),
            busy_poll: config.radius.busy_poll,
            max_queue_delay: config.radius.max_queue_delay,
            // `[radius] pin_workers` binds the authentication workers only: theirs is the
            // traffic that waits for an answer in bulk. The accounting workers, a few requests
            // a second per thousand sessions, stay free to run wherever a CPU is idle rather
            // than tied to an authentication worker's.
            pin_workers: config.radius.pin_workers && port == Port::Auth,
        });
        threads.extend(listener::serve(l, workers).map_err(ServerError::Workers)?);
    }
    shutdown.cancelled().await;
    // Every worker notices within `listener::SHUTDOWN_POLL`; none spawns after this.
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    background.close();
    background.wait().await;

    info!(
        in_flight = tracker.len(),
        "shutting down: finishing in-flight requests"
    );
    tracker.close();
    tracker.wait().await;
    public_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    if let Some(task) = public_task {
        if let Err(e) = task.await {
            error!(error = %e, "profile download task panicked");
        }
    }
    store.flush().await.map_err(ServerError::Flush)?;
    mail_stop.cancel();
    mail_tasks.close();
    mail_tasks.wait().await;
    admin_handle.graceful_shutdown(None);
    match admin_task.await {
        Ok(r) => r.map_err(ServerError::Admin)?,
        Err(e) => tracing::error!(error = %e, "admin task panicked"),
    }
    // What the mail tasks' last attempt and the last admin requests wrote (a mailed
    // notification's removal from the outbox: else mailed again after the next start).
    store.flush().await.map_err(ServerError::Flush)?;
    info!("stopped");
    Ok(())
}

/// Runs `tick` every `period` until `shutdown`.
async fn every(period: Duration, shutdown: CancellationToken, mut tick: impl FnMut()) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        tick();
    }
}

/// Frees expired leases, paced by the shortest lease time.
async fn sweep_leases(ipam: Arc<Ipam>, shutdown: CancellationToken) {
    let period = ipam
        .shortest_lease()
        .map_or(Duration::from_secs(30), |t| t / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    every(period, shutdown, || {
        match ipam.sweep(crate::store::now_secs()) {
            0 => {}
            n => info!(expired = n, "expired leases released"),
        }
    })
    .await
}

/// How often the store's page-table entries are moved out of mostly empty allocator slabs
/// (`Store::compact_memory`): one pass over a 100,000-user store's ~34,000 pages takes 4–18 ms
/// of one thread.
const COMPACT_PERIOD: Duration = Duration::from_secs(10);

/// Keeps what bulk writes leave behind in the allocator from holding memory until a restart:
/// with 100,000 users imported into the running daemon, VmRSS with all of them connected is
/// the restarted daemon's (~58 MiB) instead of ~70 (docs/PERFORMANCE.md, "Memory after an
/// import"). Off the async workers: a pass takes milliseconds.
async fn compact_memory(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(COMPACT_PERIOD) => {}
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.compact_memory()).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::debug!(
                    moved,
                    "page-table entries moved out of sparse allocator slabs"
                )
            }
            Err(e) => error!(error = %e, "the store's memory compaction failed"),
        }
    }
}

/// Frees expired duplicate-cache answers every second (those arrived after a request still
/// in progress wait for it, as in `begin`); a sweep of an idle cache is eight uncontended
/// locks.
async fn sweep_duplicates(handler: Arc<Handler>, shutdown: CancellationToken) {
    every(Duration::from_secs(1), shutdown, || {
        handler.sweep_duplicates()
    })
    .await
}

/// How long a client may take to send a request's headers, and an idle keep-alive
/// connection may wait for the next request, before it is closed (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeouts for an HTTP listener. hyper's header-read timeout (off in axum_server's builder)
/// covers HTTP/1 requests after the first too; the first-request timeout also bounds what
/// precedes the headers: protocol detection, and a client that sends nothing at all.
fn limit_requests<A: axum_server::Address, Acc>(
    mut server: axum_server::Server<A, Acc>,
) -> axum_server::Server<A, Acc> {
    server
        .http_builder()
        .http1()
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server.first_request_timeout(HEADER_READ_TIMEOUT)
}

/// Serves `GET /profile/<token>`, over TLS when `[profiles] cert`/`key` are set, with the
/// request timeouts and at most `profiles::MAX_CONNECTIONS` connections (before any TLS
/// handshake).
async fn serve_profiles(
    listener: std::net::TcpListener,
    profiles: Arc<Profiles>,
    config: ProfilesConfig,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    handle: axum_server::Handle<SocketAddr>,
) -> std::io::Result<()> {
    let app = crate::profiles::http::router(profiles, config.invalid_per_minute)
        .into_make_service_with_connect_info::<SocketAddr>();
    let cap = ConnectionCap::new(
        crate::profiles::MAX_CONNECTIONS,
        crate::profiles::MAX_CONNECTION_LIFETIME,
        "profile downloads",
    );
    match tls {
        Some(tls) => {
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls)?
                .map(|tls| tls.acceptor(cap));
            limit_requests(server).handle(handle).serve(app).await
        }
        None => {
            let server = axum_server::from_tcp(listener)?.acceptor(cap);
            limit_requests(server).handle(handle).serve(app).await
        }
    }
}

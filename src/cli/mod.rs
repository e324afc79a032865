//! The `ravpnd` command line: clap types and what each subcommand does.

mod client;
mod devices;
mod import;
mod profiles;
mod sessions;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{AuthSource, Config, ConfigError, LogFormat};
use crate::server;

#[derive(Debug, Parser)]
#[command(
    name = "ravpnd",
    version,
    about = "RADIUS authorization daemon for remote-access VPNs"
)]
pub struct Cli {
    /// Configuration file, also how admin commands find the running daemon [default:
    /// $RAVPND_CONFIG, else /etc/ravpnd/ravpnd.toml].
    // No clap `env`: clap echoes a value from the environment into an error's usage line,
    // where `--config <CONFIG>` then reads as required. `Cli::config_path` falls back.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Validate the configuration and print every problem.
    CheckConfig,
    /// Manage the users allowed to connect.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Manage devices.
    #[command(subcommand)]
    Device(devices::DeviceCommand),
    /// Assign a device to a user.
    Assign {
        /// The user.
        user: String,
        /// The device (not assigned to anyone yet).
        device: String,
    },
    /// Take a device away from a user.
    Unassign {
        /// The user.
        user: String,
        /// The device assigned to that user.
        device: String,
    },
    /// Bulk import from CSV (all rows or none).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Live sessions (address leases).
    #[command(subcommand)]
    Session(sessions::SessionCommand),
    /// AnyConnect profiles: status and download links.
    #[command(subcommand)]
    Profile(profiles::ProfileCommand),
}

/// Where the configuration is read when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/ravpnd/ravpnd.toml";

impl Cli {
    /// `--config`, else `RAVPND_CONFIG` (when not empty), else [`DEFAULT_CONFIG`].
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| {
                std::env::var_os("RAVPND_CONFIG")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| DEFAULT_CONFIG.into())
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config_path();
    match cli.command {
        Command::Serve => serve(&path),
        Command::CheckConfig => Ok(check_config(&path)),
        admin => {
            let config =
                Config::load(&path).with_context(|| format!("while reading {}", path.display()))?;
            let client = client::AdminClient::from_config(&config)?;
            runtime()?.block_on(async move {
                match admin {
                    Command::User(cmd) => {
                        let directory = matches!(
                            config.auth.source,
                            Some(AuthSource::ActiveDirectory | AuthSource::AzureAd)
                        );
                        users::run(&client, cmd, directory).await
                    }
                    Command::Device(cmd) => devices::run(&client, cmd).await,
                    Command::Assign { user, device } => {
                        devices::assign(&client, user, device).await
                    }
                    Command::Unassign { user, device } => {
                        devices::unassign(&client, user, device).await
                    }
                    Command::Import(cmd) => import::run(&client, cmd).await,
                    Command::Session(cmd) => sessions::run(&client, cmd).await,
                    Command::Profile(cmd) => profiles::run(&client, cmd).await,
                    Command::Serve | Command::CheckConfig => unreachable!("handled above"),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A time the admin API gives as Unix seconds, for a table: RFC 3339, or "-" for none.
fn when(t: Option<u64>) -> String {
    t.map_or("-".into(), |s| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            .to_string()
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load_valid(path) {
        Ok(_) => {
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            for p in &problems {
                eprintln!("{}: {p}", path.display());
            }
            eprintln!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {:#}", path.display(), anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load_valid(path)?;
    init_tracing(&config);
    // One TLS crypto provider for the whole process (LDAPS, HTTPS, SMTP): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    rt.block_on(async move {
        let store = server::open_store(&config)?;
        let sockets = server::Sockets::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        server::run(config, path.to_owned(), store, sockets, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
    shutdown.cancel();
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // No internal error reports: tracing-subscriber prints them with `eprintln!`, which
    // panics when stderr is gone (a log pipe closed, a journal stream broken) — a panic in
    // every request that logs, and in the SIGTERM handler, which then never shuts down.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

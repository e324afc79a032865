//! `ravpnd session list`: live address leases and their accounting sessions.

use clap::Subcommand;
use reqwest::Method;

use super::client::AdminClient;
use crate::store::LeaseRecord;

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions (address leases).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &AdminClient, cmd: SessionCommand) -> anyhow::Result<()> {
    let SessionCommand::List { json } = cmd;
    let leases: Vec<LeaseRecord> = client
        .call::<(), _>(Method::GET, "/sessions", None)
        .await?
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&leases)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<20} {:<20} {:<24} {:<16} EXPIRES",
        "ADDRESS", "POOL", "USER", "DEVICE", "ACCT-SESSION", "NAS"
    );
    for l in &leases {
        let expires = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(l.expires),
        );
        println!(
            "{:<16} {:<12} {:<20} {:<20} {:<24} {:<16} {}",
            l.addr.to_string(),
            l.pool,
            l.user,
            l.device,
            l.session_id.as_deref().unwrap_or("-"),
            l.nas,
            expires
        );
    }
    Ok(())
}

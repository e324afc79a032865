//! `ravpnd profile list|send`.

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;

use super::client::AdminClient;
use super::when;
use crate::admin::{SendBody, SendOutcome};
use crate::profiles::{ProfileView, SendRequest};

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Every (user, assigned device) profile with its status.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mail a profile download link (a new link invalidates the previous one).
    Send {
        /// The user (omit with --all).
        user: Option<String>,
        /// The assigned device (omit with --all).
        device: Option<String>,
        /// Send to every profile in "send mail" status whose user has an address.
        #[arg(long, conflicts_with_all = ["user", "device", "email"])]
        all: bool,
        /// Recipient; default: the user's address (`ravpnd user set NAME --email`).
        #[arg(long)]
        email: Option<String>,
        /// Mail subject; default: `[profiles] subject`.
        #[arg(long)]
        subject: Option<String>,
        /// How long the link works: 1 to 30 days.
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
        /// Downloads allowed: 1 to 5, or `unlimited`.
        #[arg(long, default_value = "1")]
        downloads: String,
    },
}

pub async fn run(client: &AdminClient, cmd: ProfileCommand) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::List { json } => {
            let list: Vec<ProfileView> = client
                .call::<(), _>(Method::GET, "/profiles", None)
                .await?
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<20} {:<36} {:<21} {:<21} DOWNLOADS",
                "USER", "DEVICE", "STATUS", "SENT", "EXPIRES"
            );
            for p in &list {
                let allowed = p
                    .downloads_allowed
                    .map_or("unlimited".into(), |n| n.to_string());
                println!(
                    "{:<20} {:<20} {:<36} {:<21} {:<21} {}/{}",
                    p.user,
                    p.device,
                    p.status.label(),
                    when(p.sent_at),
                    when(p.expires_at),
                    p.downloads_used,
                    allowed
                );
            }
        }
        ProfileCommand::Send {
            user,
            device,
            all,
            email,
            subject,
            valid_days,
            downloads,
        } => {
            if !all && (user.is_none() || device.is_none()) {
                bail!("give USER and DEVICE, or --all");
            }
            let downloads = match downloads.as_str() {
                "unlimited" => None,
                n => Some(n.parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("--downloads: `{n}` is not 1 to 5 or `unlimited`")
                })?),
            };
            let body = SendBody {
                user,
                device,
                all,
                request: SendRequest {
                    email,
                    subject,
                    valid_days,
                    downloads,
                },
            };
            // The daemon sends a few mails at a time, each bounded by [smtp] timeout:
            // `--all` (or a slow relay) can take longer than the usual 30 s, and a request
            // given up on goes on sending unseen.
            let out: SendOutcome = client
                .call_slow(Method::POST, "/profiles/send", Some(&body))
                .await?
                .ok_or_else(|| anyhow::anyhow!("empty answer"))?;
            for p in &out.sent {
                println!(
                    "sent the profile link of {}/{} to {}",
                    p.user,
                    p.device,
                    p.email.as_deref().unwrap_or("-")
                );
            }
            for s in &out.skipped {
                eprintln!("skipped {s}");
            }
            if all && out.sent.is_empty() && out.skipped.is_empty() {
                println!("no profile is waiting for its mail");
            }
        }
    }
    Ok(())
}

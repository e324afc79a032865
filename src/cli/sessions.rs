//! `ravpnd session list` and `ravpnd session release`: live address leases and their
//! accounting sessions, and an admin's release of leases whose sessions are gone.

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Method;

use super::client::{encode, AdminClient};
use crate::store::LeaseRecord;

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions (address leases).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End leases by hand, for sessions the gateway will not report ended (ocserv, a
    /// killed client, a gateway gone without Accounting-Off). The address may be handed out
    /// again at once: release only sessions that are really gone.
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["address", "nas"])))]
pub struct ReleaseArgs {
    /// The leased address to free.
    address: Option<String>,
    /// Free every lease held through this NAS client (its `[[clients]] name`).
    #[arg(long, value_name = "NAME")]
    nas: Option<String>,
    /// Print the released leases as JSON (a list, as `session list --json`).
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &AdminClient, cmd: SessionCommand) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::List { json } => {
            let leases: Vec<LeaseRecord> = client
                .call::<(), _>(Method::GET, "/sessions", None)
                .await?
                .unwrap_or_default();
            print_leases(&leases, json)
        }
        SessionCommand::Release(args) => release(client, args).await,
    }
}

async fn release(client: &AdminClient, args: ReleaseArgs) -> anyhow::Result<()> {
    let released: Vec<LeaseRecord> = match (&args.address, &args.nas) {
        (Some(addr), None) => client
            .call::<(), LeaseRecord>(Method::DELETE, &format!("/sessions/{}", encode(addr)), None)
            .await?
            .into_iter()
            .collect(),
        (None, Some(nas)) => client
            .call::<(), _>(
                Method::DELETE,
                &format!("/sessions?nas={}", encode(nas)),
                None,
            )
            .await?
            .unwrap_or_default(),
        _ => unreachable!("clap takes exactly one of ADDRESS and --nas"),
    };
    if args.json {
        return print_leases(&released, true);
    }
    if released.is_empty() {
        let nas = args.nas.as_deref().unwrap_or_default();
        println!("no lease was held through NAS `{nas}`: nothing released");
        return Ok(());
    }
    print_leases(&released, false)?;
    println!("{} lease(s) released", released.len());
    Ok(())
}

/// A table, one lease a line (or JSON).
fn print_leases(leases: &[LeaseRecord], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(leases)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<20} {:<20} {:<24} {:<16} EXPIRES",
        "ADDRESS", "POOL", "USER", "DEVICE", "ACCT-SESSION", "NAS"
    );
    // An address freed from an unreadable record has no user, device, NAS or expiry.
    fn or_dash(s: &str) -> &str {
        if s.is_empty() {
            "-"
        } else {
            s
        }
    }
    for l in leases {
        let expires = super::when((l.expires != 0).then_some(l.expires));
        println!(
            "{:<16} {:<12} {:<20} {:<20} {:<24} {:<16} {}",
            l.addr.to_string(),
            l.pool,
            or_dash(&l.user),
            or_dash(&l.device),
            l.session_id.as_deref().unwrap_or("-"),
            or_dash(&l.nas),
            expires
        );
    }
    Ok(())
}

//! `ravpnd user …`.

use std::io::Read;

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::{encode, AdminClient};
use crate::admin::{Imported, UserView};
use crate::auth::ldap::DirectoryUser;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: local source, with a password (prompted, or --password-stdin); directory
    /// source, one that exists in the directory.
    Add {
        /// The user (omit with --all).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Directory source: add every enabled directory user not added yet.
        #[arg(long, conflicts_with_all = ["name", "password_stdin"])]
        all: bool,
    },
    /// Directory source: the directory's users not added yet.
    Candidates {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user.
    Remove {
        /// The user.
        name: String,
    },
    /// Change a user's settings.
    Set {
        /// The user.
        name: String,
        /// Devices this user may have: a number, or `default` for `[devices] max_per_user`.
        #[arg(long)]
        max_devices: Option<String>,
        /// Where profile links go by default (`none` clears it).
        #[arg(long)]
        email: Option<String>,
    },
    /// Set a user's password.
    Passwd {
        /// The user.
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(client: &AdminClient, cmd: UserCommand, directory: bool) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { all: true, .. } => {
            if !directory {
                bail!("--all adds directory users; the authentication source is not a directory");
            }
            let candidates: Vec<DirectoryUser> = client
                .call::<(), _>(Method::GET, "/users/candidates", None)
                .await?
                .unwrap_or_default();
            let rows: Vec<_> = candidates
                .iter()
                .filter(|c| c.enabled)
                .enumerate()
                .map(|(i, c)| json!({ "line": i + 1, "name": c.sam_account_name.to_lowercase() }))
                .collect();
            if rows.is_empty() {
                println!("no enabled directory user is left to add");
                return Ok(());
            }
            let done: Imported = client
                .call(Method::POST, "/import/users", Some(&rows))
                .await?
                .ok_or_else(|| anyhow::anyhow!("empty answer"))?;
            println!("{} directory user(s) added", done.imported);
        }
        UserCommand::Add {
            name,
            password_stdin,
            ..
        } => {
            let name = name.expect("clap requires NAME without --all");
            let password = if directory {
                if password_stdin {
                    bail!("directory users keep their password in the directory; leave out --password-stdin");
                }
                None
            } else {
                Some(read_password(password_stdin)?)
            };
            let added: UserView = client
                .call(
                    Method::POST,
                    "/users",
                    Some(&json!({ "name": name, "password": password })),
                )
                .await?
                .ok_or_else(|| anyhow::anyhow!("empty answer"))?;
            println!("user {} added", added.name);
        }
        UserCommand::Candidates { json } => {
            let candidates: Vec<DirectoryUser> = client
                .call::<(), _>(Method::GET, "/users/candidates", None)
                .await?
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&candidates)?);
            } else {
                println!(
                    "{:<24} {:<36} {:<28} ENABLED",
                    "SAMACCOUNTNAME", "UPN", "DISPLAY NAME"
                );
                for c in &candidates {
                    println!(
                        "{:<24} {:<36} {:<28} {}",
                        c.sam_account_name,
                        c.user_principal_name.as_deref().unwrap_or("-"),
                        c.display_name.as_deref().unwrap_or("-"),
                        if c.enabled { "yes" } else { "no" }
                    );
                }
            }
        }
        UserCommand::List { json } => {
            let users: Vec<UserView> = client
                .call::<(), _>(Method::GET, "/users", None)
                .await?
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!(
                    "{:<32} {:<8} {:<11} DEVICES",
                    "NAME", "PASSWORD", "MAX-DEVICES"
                );
                for u in &users {
                    let pw = if u.has_password { "set" } else { "-" };
                    let max = u
                        .max_devices
                        .map_or("default".to_owned(), |m| m.to_string());
                    println!(
                        "{:<32} {:<8} {:<11} {}",
                        u.name,
                        pw,
                        max,
                        u.devices.join(",")
                    );
                }
            }
        }
        UserCommand::Set {
            name,
            max_devices,
            email,
        } => {
            let mut patch = serde_json::Map::new();
            if let Some(m) = max_devices {
                let max: Option<u32> = if m == "default" {
                    None
                } else {
                    Some(m.parse().map_err(|_| {
                        anyhow::anyhow!("--max-devices: `{m}` is not a number or `default`")
                    })?)
                };
                patch.insert("max_devices".into(), json!(max));
            }
            if let Some(e) = email {
                let e = (e != "none").then_some(e);
                patch.insert("email".into(), json!(e));
            }
            if patch.is_empty() {
                anyhow::bail!("nothing to change: give --max-devices and/or --email");
            }
            client
                .call::<_, ()>(
                    Method::PATCH,
                    &format!("/users/{}", encode(&name)),
                    Some(&serde_json::Value::Object(patch)),
                )
                .await?;
            println!("user {name} changed");
        }
        UserCommand::Remove { name } => {
            client
                .call::<(), ()>(Method::DELETE, &format!("/users/{}", encode(&name)), None)
                .await?;
            println!("user {name} removed");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            client
                .call::<_, ()>(
                    Method::PUT,
                    &format!("/users/{}/password", encode(&name)),
                    Some(&json!({ "password": password })),
                )
                .await?;
            println!("password of {name} changed");
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("while reading the password from standard input")?;
        s.lines().next().unwrap_or_default().to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ")
            .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
        let second = rpassword::prompt_password("Repeat password: ")
            .context("cannot prompt for a password")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

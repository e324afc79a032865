//! `ravpnd user …`.

use std::io::Read;

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::AdminClient;
use crate::admin::UserView;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (prompts for the password unless --password-stdin).
    Add {
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user.
    Remove { name: String },
    /// Set a user's password.
    Passwd {
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    match cmd {
        UserCommand::Add {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            client
                .call::<_, UserView>(
                    Method::POST,
                    "/users",
                    Some(&json!({ "name": name, "password": password })),
                )
                .await?;
            println!("user {name} added");
        }
        UserCommand::List { json } => {
            let users: Vec<UserView> = client
                .call::<(), _>(Method::GET, "/users", None)
                .await?
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<32} {:<8} CREATED (unix)", "NAME", "PASSWORD");
                for u in &users {
                    let pw = if u.has_password { "set" } else { "-" };
                    println!("{:<32} {:<8} {}", u.name, pw, u.created);
                }
            }
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

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

//! `ravpnd import users|devices FILE.csv`: reads CSV (header row), reports every bad row by
//! line number, and sends all rows in one all-or-nothing request. The daemon checks what only
//! it can: names taken, and with a directory source, that every user exists there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;

use super::client::AdminClient;
use crate::admin::{DeviceInput, DeviceRow, Imported, UserRow};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Users: columns `name` and optionally `password` (or `password_hash`, an argon2 PHC
    /// string from another system, quoted: it contains commas), `email`. With a directory
    /// source (Active Directory, Azure AD) every user must exist in the directory and has no
    /// password here; one missing name imports nothing, and every one is reported.
    Users {
        /// The CSV file.
        file: PathBuf,
    },
    /// Devices: columns `name`, `type` and optionally `method`, `serial`, `mac`,
    /// `device_auth`, `enabled` (yes/no), `user` (assign to this existing user).
    Devices {
        /// The CSV file.
        file: PathBuf,
    },
}

pub async fn run(client: &AdminClient, cmd: ImportCommand) -> anyhow::Result<()> {
    let (path, endpoint, body) = match cmd {
        ImportCommand::Users { file } => {
            let rows = read(
                &file,
                &["name"],
                &["name", "password", "password_hash", "email"],
                |line, get| {
                    Ok(serde_json::to_value(UserRow {
                        line,
                        name: get("name").unwrap_or_default(),
                        password: get("password"),
                        password_hash: get("password_hash"),
                        email: get("email"),
                    })?)
                },
            )?;
            let passwords = rows.iter().filter(|r| r["password"].is_string()).count();
            if passwords > 100 {
                // About 20-40 ms each on a small server: a large file takes minutes.
                eprintln!("{passwords} passwords to hash: this takes a while");
            }
            (file, "/import/users", rows)
        }
        ImportCommand::Devices { file } => {
            let cols = [
                "name",
                "type",
                "method",
                "serial",
                "mac",
                "device_auth",
                "enabled",
                "user",
            ];
            let rows = read(&file, &["name", "type"], &cols, |line, get| {
                Ok(serde_json::to_value(DeviceRow {
                    line,
                    device: DeviceInput {
                        name: get("name").unwrap_or_default(),
                        device_type: get("type").unwrap_or_default(),
                        method: get("method"),
                        serial: get("serial"),
                        mac: get("mac"),
                        device_auth: get("device_auth")
                            .map(|v| boolean("device_auth", &v))
                            .transpose()?,
                        enabled: get("enabled").map(|v| boolean("enabled", &v)).transpose()?,
                    },
                    user: get("user"),
                })?)
            })?;
            (file, "/import/devices", rows)
        }
    };
    let done: Imported = client
        .call_slow(Method::POST, endpoint, Some(&body))
        .await?
        .context("empty answer")?;
    println!("{}: {} row(s) imported", path.display(), done.imported);
    Ok(())
}

fn boolean(column: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" | "on" | "enabled" => Ok(true),
        "no" | "n" | "false" | "0" | "off" | "disabled" => Ok(false),
        _ => bail!("{column}: `{v}` is not yes or no"),
    }
}

type Getter<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Parses the file; `row` builds one JSON row from a column getter. Collects every problem.
fn read(
    path: &Path,
    required: &[&str],
    known: &[&str],
    row: impl Fn(u64, &Getter<'_>) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    // Flexible: a short row's missing cells are empty, so its problems are reported with the
    // others' instead of one "found 2 fields, expected 4" hiding them.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut problems = Vec::new();
    for h in &headers {
        if !known.contains(&h.as_str()) {
            problems.push(format!(
                "line 1: unknown column `{h}` (known: {})",
                known.join(", ")
            ));
        }
    }
    for r in required {
        if !headers.iter().any(|h| h == r) {
            problems.push(format!("line 1: required column `{r}` is missing"));
        }
    }
    let mut rows = Vec::new();
    if problems.is_empty() {
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    problems.push(format!("line {line}: {e}"));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
            let get = |col: &str| {
                headers
                    .iter()
                    .position(|h| h == col)
                    .and_then(|i| record.get(i))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            match row(line, &get) {
                Ok(v) => rows.push(v),
                Err(e) => problems.push(format!("line {line}: {e}")),
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} bad row(s); nothing was imported\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    if rows.is_empty() {
        bail!("{}: no rows to import", path.display());
    }
    Ok(rows)
}

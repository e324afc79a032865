//! `ravpnd import users|devices FILE.csv`: reads CSV (header row), reports every bad row by
//! line number, and sends all rows in one all-or-nothing request. The daemon checks what only
//! it can: names taken, and with a directory source, that every user exists there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::{Method, StatusCode};

use super::client::{AdminClient, ApiFailure};
use crate::admin::{DeviceInput, DeviceRow, Imported, UserRow};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Users: columns `name` and optionally `password` (or `password_hash`, an argon2 PHC
    /// string from another system, quoted: it contains commas), `email`. With a directory
    /// source (Active Directory, Azure AD) every user must exist in the directory and has no
    /// password here; one missing name imports nothing, and every one is reported. Cells
    /// are trimmed except passwords; quote a cell that contains a comma.
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
    let (path, endpoint, parsed) = match cmd {
        ImportCommand::Users { file } => {
            let parsed = read(
                &file,
                &["name"],
                &["name", "password", "password_hash", "email"],
                |line, get, _| {
                    Ok(serde_json::to_value(UserRow {
                        line,
                        name: get("name").unwrap_or_default(),
                        password: get("password"),
                        password_hash: get("password_hash"),
                        email: get("email"),
                    })?)
                },
            )?;
            let passwords = parsed
                .rows
                .iter()
                .filter(|r| r["password"].is_string())
                .count();
            if passwords > 100 && parsed.problems.is_empty() {
                // About 20-40 ms each on a small server: a large file takes minutes.
                eprintln!("{passwords} passwords to hash: this takes a while");
            }
            (file, "/import/users", parsed)
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
            let parsed = read(&file, &["name", "type"], &cols, |line, get, bad| {
                // A bad yes/no is reported and left out, so the daemon still checks the rest
                // of the row.
                let mut flag = |col: &str| {
                    get(col).and_then(|v| boolean(col, &v).map_err(|e| bad.push(e)).ok())
                };
                let device_auth = flag("device_auth");
                let enabled = flag("enabled");
                Ok(serde_json::to_value(DeviceRow {
                    line,
                    device: DeviceInput {
                        name: get("name").unwrap_or_default(),
                        device_type: get("type").unwrap_or_default(),
                        method: get("method"),
                        serial: get("serial"),
                        mac: get("mac"),
                        device_auth,
                        enabled,
                    },
                    user: get("user"),
                })?)
            })?;
            (file, "/import/devices", parsed)
        }
    };
    let Parsed { rows, mut problems } = parsed;
    // With problems of its own the CLI still has the daemon check the rows (importing
    // nothing), so one run reports every bad row.
    let check_only = !problems.is_empty();
    let url = if check_only {
        format!("{endpoint}/check")
    } else {
        endpoint.to_owned()
    };
    let answer = match client
        .call_slow::<_, Imported>(Method::POST, &url, Some(&rows))
        .await
    {
        Ok(done) => done.context("empty answer")?,
        Err(e) => match e.downcast::<ApiFailure>() {
            Ok(f) if f.status == StatusCode::BAD_REQUEST && !f.problems.is_empty() => {
                problems.extend(f.problems);
                Imported::default()
            }
            // A daemon older than the check route (not restarted since an upgrade): the
            // CLI's own problems are all there is to report.
            Ok(f) if check_only && f.status == StatusCode::NOT_FOUND => Imported::default(),
            Ok(f) => return Err(f.into()),
            Err(e) => return Err(e),
        },
    };
    for w in &answer.warnings {
        eprintln!("warning: {w}");
    }
    if !problems.is_empty() {
        // The CLI's and the daemon's problems, in file order.
        problems.sort_by_key(|p| line_of(p));
        bail!(
            "{}: {} bad row(s); nothing was imported\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    println!("{}: {} row(s) imported", path.display(), answer.imported);
    Ok(())
}

/// The line number a problem starts with (`line N: …`).
fn line_of(problem: &str) -> u64 {
    problem
        .strip_prefix("line ")
        .and_then(|p| p.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn boolean(column: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" | "on" | "enabled" => Ok(true),
        "no" | "n" | "false" | "0" | "off" | "disabled" => Ok(false),
        _ => Err(format!("{column}: `{v}` is not yes or no")),
    }
}

type Getter<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A file's rows (as JSON) and the problems the CLI found in them, by line.
struct Parsed {
    rows: Vec<serde_json::Value>,
    problems: Vec<String>,
}

/// Cells taken exactly as written: a password's spaces are part of it (other cells are
/// trimmed).
const UNTRIMMED: [&str; 2] = ["password", "password_hash"];

/// Parses the file; `row` builds one JSON row from a column getter, pushing the problems of
/// its cells. Collects every problem; a bad header row stops here (no row can be read).
fn read(
    path: &Path,
    required: &[&str],
    known: &[&str],
    row: impl Fn(u64, &Getter<'_>, &mut Vec<String>) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<Parsed> {
    // Flexible: a short row's missing cells are empty, so its problems are reported with the
    // others' instead of one "found 2 fields, expected 4" hiding them. A long row is reported
    // below. Only headers are trimmed by the reader: see `UNTRIMMED`.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
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
    if !problems.is_empty() {
        bail!(
            "{}: bad header row; nothing was imported\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    let mut rows = Vec::new();
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
        if record.len() > headers.len() {
            // An unquoted comma (in a password, say) shifts or cuts cells: never guess.
            problems.push(format!(
                "line {line}: {} cells but {} columns; quote a cell that contains a comma",
                record.len(),
                headers.len()
            ));
        }
        let get = |col: &str| {
            let i = headers.iter().position(|h| h == col)?;
            let cell = record.get(i)?;
            let cell = if UNTRIMMED.contains(&col) {
                cell
            } else {
                cell.trim()
            };
            (!cell.is_empty()).then(|| cell.to_owned())
        };
        let mut bad = Vec::new();
        let value = row(line, &get, &mut bad)?;
        problems.extend(bad.into_iter().map(|p| format!("line {line}: {p}")));
        rows.push(value);
    }
    if rows.is_empty() && problems.is_empty() {
        bail!("{}: no rows to import", path.display());
    }
    Ok(Parsed { rows, problems })
}

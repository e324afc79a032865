//! `ravpnd device …`, `ravpnd assign`, `ravpnd unassign`.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;

use super::client::{encode, AdminClient};
use crate::admin::{Assignment, DeviceInput, DevicePatch, DeviceView};
use crate::store::DeviceRecord;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device.
    Add {
        /// The new device's name.
        name: String,
        /// windows, mac, ios or android.
        #[arg(long = "type", value_name = "TYPE")]
        device_type: String,
        /// serial (default) or mac; mac is not allowed for ios and android.
        #[arg(long)]
        method: Option<String>,
        /// Serial ID (usually left empty: auto-registration fills it).
        #[arg(long)]
        serial: Option<String>,
        /// MAC address, 12:34:56:78:90:ab.
        #[arg(long)]
        mac: Option<String>,
        /// No device-ID check for this device (not recommended).
        #[arg(long)]
        no_device_auth: bool,
        /// Add it without connect permission.
        #[arg(long)]
        disabled: bool,
    },
    /// List devices.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one device.
    Show {
        /// The device.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a device.
    Set(SetArgs),
    /// Remove a device (it must be unassigned first).
    Remove {
        /// The device.
        name: String,
    },
    /// Forget a device's serial so the next first connection registers it again.
    ResetSerial {
        /// The device.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The device.
    name: String,
    /// New type: windows, mac, ios or android.
    #[arg(long = "type", value_name = "TYPE")]
    device_type: Option<String>,
    /// New method: serial or mac; mac is not allowed for ios and android.
    #[arg(long)]
    method: Option<String>,
    /// New serial ID (`reset-serial` clears it).
    #[arg(long)]
    serial: Option<String>,
    /// New MAC address; an empty string clears it.
    #[arg(long)]
    mac: Option<String>,
    /// Device authentication on or off.
    #[arg(long)]
    device_auth: Option<OnOff>,
    /// Give connect permission.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Take connect permission away.
    #[arg(long)]
    disable: bool,
}

pub async fn run(client: &AdminClient, cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Add {
            name,
            device_type,
            method,
            serial,
            mac,
            no_device_auth,
            disabled,
        } => {
            let input = DeviceInput {
                name: name.clone(),
                device_type,
                method,
                serial,
                mac,
                device_auth: Some(!no_device_auth),
                enabled: Some(!disabled),
            };
            client
                .call::<_, DeviceRecord>(Method::POST, "/devices", Some(&input))
                .await?;
            println!("device {name} added");
        }
        DeviceCommand::List { json } => {
            let devices: Vec<DeviceView> = client
                .call::<(), _>(Method::GET, "/devices", None)
                .await?
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                print_table(&devices);
            }
        }
        DeviceCommand::Show { name, json } => {
            let d: DeviceRecord = client
                .call::<(), _>(Method::GET, &format!("/devices/{}", encode(&name)), None)
                .await?
                .ok_or_else(|| anyhow::anyhow!("empty answer"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_one(&d);
            }
        }
        DeviceCommand::Set(a) => {
            let patch = DevicePatch {
                device_type: a.device_type,
                method: a.method,
                serial: a.serial,
                mac: a.mac,
                device_auth: a.device_auth.map(|v| matches!(v, OnOff::On)),
                enabled: match (a.enable, a.disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            let p = &patch;
            if p.device_type.is_none()
                && p.method.is_none()
                && p.serial.is_none()
                && p.mac.is_none()
                && p.device_auth.is_none()
                && p.enabled.is_none()
            {
                bail!(
                    "nothing to change: give --type, --method, --serial, --mac, --device-auth, \
                     --enable or --disable"
                );
            }
            client
                .call::<_, DeviceRecord>(
                    Method::PATCH,
                    &format!("/devices/{}", encode(&a.name)),
                    Some(&patch),
                )
                .await?;
            println!("device {} changed", a.name);
        }
        DeviceCommand::Remove { name } => {
            client
                .call::<(), ()>(Method::DELETE, &format!("/devices/{}", encode(&name)), None)
                .await?;
            println!("device {name} removed");
        }
        DeviceCommand::ResetSerial { name } => {
            client
                .call::<(), DeviceRecord>(
                    Method::POST,
                    &format!("/devices/{}/reset-serial", encode(&name)),
                    None,
                )
                .await?;
            println!("serial of device {name} reset: its next first connection registers it");
        }
    }
    Ok(())
}

pub async fn assign(client: &AdminClient, user: String, device: String) -> anyhow::Result<()> {
    client
        .call::<_, ()>(
            Method::POST,
            "/assignments",
            Some(&Assignment {
                user: user.clone(),
                device: device.clone(),
            }),
        )
        .await?;
    println!("device {device} assigned to {user}");
    Ok(())
}

pub async fn unassign(client: &AdminClient, user: String, device: String) -> anyhow::Result<()> {
    client
        .call::<(), ()>(
            Method::DELETE,
            &format!("/assignments/{}/{}", encode(&user), encode(&device)),
            None,
        )
        .await?;
    println!("device {device} unassigned from {user}");
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_table(devices: &[DeviceView]) {
    // Columns as wide as their longest value (a serial ID may be 64 characters).
    let width = |min: usize, f: &dyn Fn(&DeviceRecord) -> usize| {
        devices.iter().map(|v| f(&v.device)).fold(min, usize::max)
    };
    let name = width(20, &|d| d.name.chars().count());
    let serial = width(24, &|d| {
        d.serial.as_deref().map_or(1, |s| s.chars().count())
    });
    let user = width(16, &|d| d.owner.as_deref().map_or(1, |s| s.chars().count()));
    println!(
        "{:<name$} {:<8} {:<8} {:<7} {:<7} {:<serial$} {:<18} {:<user$} PROXY",
        "NAME", "TYPE", "ENABLED", "DEVAUTH", "METHOD", "SERIAL", "MAC", "USER"
    );
    for v in devices {
        let d = &v.device;
        println!(
            "{:<name$} {:<8} {:<8} {:<7} {:<7} {:<serial$} {:<18} {:<user$} {}",
            d.name,
            d.device_type.as_str(),
            yes_no(d.enabled),
            yes_no(d.device_auth),
            d.method.as_str(),
            d.serial.as_deref().unwrap_or("-"),
            d.mac.as_deref().unwrap_or("-"),
            d.owner.as_deref().unwrap_or("-"),
            v.proxy,
        );
    }
}

fn print_one(d: &DeviceRecord) {
    println!("name:        {}", d.name);
    println!("type:        {}", d.device_type.as_str());
    println!("enabled:     {}", yes_no(d.enabled));
    println!("device auth: {}", yes_no(d.device_auth));
    println!("method:      {}", d.method.as_str());
    println!("serial:      {}", d.serial.as_deref().unwrap_or("-"));
    println!("mac:         {}", d.mac.as_deref().unwrap_or("-"));
    println!("user:        {}", d.owner.as_deref().unwrap_or("-"));
    if d.registered_at.is_some() {
        println!("registered:  {}", super::when(d.registered_at));
    }
}

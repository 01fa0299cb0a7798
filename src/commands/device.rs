//! `shellyctl device ...`: what each meter is (grid connection, sub-meter,
//! PV), which decides what `report costs` bills.

use crate::db::{self, devices};
use crate::exit::ExitKind;
use crate::output::{self, cell, Report};
use crate::settings::GlobalArgs;
use clap::{Args, Subcommand};
use serde::Serialize;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct DeviceArgs {
    #[command(subcommand)]
    pub command: DeviceCommand,
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// List the known devices and their roles.
    List,
    /// Declare what a meter measures: `grid` (the connection the seller
    /// bills; `report costs` prices grid meters only), `submeter` or `pv`.
    /// With `--channel`, what one channel of a multi-channel meter measures
    /// (EM Gen3, Pro EM, a 3EM in the monophase profile: independent
    /// circuits), including `load`.
    SetRole {
        /// The device id, e.g. shelly3em63g3-e4b063a1b2c3.
        device: String,
        #[arg(value_enum)]
        role: devices::Role,
        /// The channel: em1:0, em1:1 or em1:2 (stored as phase A, B, C).
        #[arg(long)]
        channel: Option<String>,
        /// With `grid`: the point of delivery (PPE, the DSO's meter number)
        /// this meter measures, whose hourly data `ami import` brings in;
        /// `report reconcile` then compares the two without --pod.
        #[arg(long, conflicts_with = "channel")]
        pod: Option<String>,
    },
}

#[derive(Serialize)]
struct List(Vec<devices::DeviceRow>);

#[derive(Tabled)]
struct Row {
    device: String,
    model: String,
    host: String,
    role: String,
    channels: String,
    #[tabled(rename = "last seen")]
    last_seen: String,
}

impl Report for List {
    fn table(&self) -> String {
        if self.0.is_empty() {
            return "no devices yet; run `shellyctl snapshot` or `shellyctl ingest-intervals`\n"
                .into();
        }
        output::table(self.0.iter().map(|d| Row {
            device: d.device_id.clone(),
            model: cell(&d.model),
            host: cell(&d.host),
            role: d.role.map_or("-", crate::db::devices::Role::as_str).into(),
            channels: cell(&d.channels),
            last_seen: cell(&d.last_seen.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC"))),
        }))
    }
}

#[derive(Serialize)]
struct RoleSet {
    device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    role: devices::Role,
}

impl Report for RoleSet {
    fn table(&self) -> String {
        let what = match &self.channel {
            Some(c) => format!("{} channel {c}", output::printable(&self.device_id)),
            None => output::printable(&self.device_id),
        };
        format!("{what} is now {}\n", self.role.as_str())
    }
}

pub fn run(global: &GlobalArgs, args: &DeviceArgs) -> anyhow::Result<ExitKind> {
    let mut client = db::connect(&global.database_url()?)?;
    match &args.command {
        DeviceCommand::List => output::print(global.format, &List(devices::list(&mut client)?))?,
        DeviceCommand::SetRole {
            device,
            role,
            channel,
            pod,
        } => {
            if let Some(p) = pod {
                if *role != devices::Role::Grid {
                    return Err(crate::exit::UsageError(
                        "--pod goes with the grid role: the point of delivery is the grid connection".into(),
                    )
                    .into());
                }
                if !crate::ami::valid_pod(p) {
                    return Err(crate::exit::ConfigError(format!(
                        "--pod {:?}: 1 to 64 letters, digits, '.', '-' or '_'",
                        output::printable(p)
                    ))
                    .into());
                }
            }
            match channel {
                Some(c) => devices::set_channel_role(&mut client, device, c, *role)?,
                None => devices::set_role(&mut client, device, *role)?,
            }
            if let Some(p) = pod {
                devices::set_pod(&mut client, device, p)?;
            }
            output::print(
                global.format,
                &RoleSet {
                    device_id: device.clone(),
                    channel: channel
                        .as_deref()
                        .and_then(devices::channel_letter)
                        .map(String::from),
                    role: *role,
                },
            )?
        }
    }
    Ok(ExitKind::Success)
}

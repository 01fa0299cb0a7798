//! `shellyctl device ...`: what each meter is (grid connection, sub-meter,
//! PV), which decides what `report costs` bills.

use crate::cli::GlobalArgs;
use crate::db::{self, devices};
use crate::exit::ExitKind;
use crate::output::{self, cell, Report};
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
    SetRole {
        /// The device id, e.g. shelly3em63g3-e4b063a1b2c3.
        device: String,
        #[arg(value_enum)]
        role: devices::Role,
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
            device: output::printable(&d.device_id),
            model: output::printable(&cell(&d.model)),
            host: output::printable(&cell(&d.host)),
            role: d.role.clone().unwrap_or_else(|| "-".into()),
            last_seen: cell(&d.last_seen.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC"))),
        }))
    }
}

#[derive(Serialize)]
struct RoleSet {
    device_id: String,
    role: devices::Role,
}

impl Report for RoleSet {
    fn table(&self) -> String {
        format!(
            "{} is now {}\n",
            output::printable(&self.device_id),
            self.role.as_str()
        )
    }
}

pub fn run(global: &GlobalArgs, args: &DeviceArgs) -> anyhow::Result<ExitKind> {
    let mut client = db::connect(&global.database_url()?)?;
    match &args.command {
        DeviceCommand::List => output::print(global.format, &List(devices::list(&mut client)?))?,
        DeviceCommand::SetRole { device, role } => {
            devices::set_role(&mut client, device, *role)?;
            output::print(
                global.format,
                &RoleSet {
                    device_id: device.clone(),
                    role: *role,
                },
            )?
        }
    }
    Ok(ExitKind::Success)
}

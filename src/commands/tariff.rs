//! `shellyctl tariff ...`: import, list and show tariffs; import dynamic
//! prices; print the shipped examples.

use crate::db::{self, tariffs};
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::tariff::{parse_prices, Tariff, EXAMPLES};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct TariffArgs {
    #[command(subcommand)]
    pub command: TariffCommand,
}

#[derive(Subcommand, Debug)]
pub enum TariffCommand {
    /// Validate a tariff file (JSON) and store it as a new version.
    Import {
        /// The tariff file; `-` reads standard input.
        file: PathBuf,
        /// Replace the version with the same name and valid_from (a price
        /// correction); reports use it at once.
        #[arg(long)]
        replace: bool,
    },
    /// List the stored tariffs and their versions.
    List,
    /// Show one tariff's versions in full.
    Show { name: String },
    /// Price series: a dynamic tariff's energy prices, or the export
    /// (market) prices that value net-billing export, per hour or
    /// quarter-hour.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Print an example tariff file to edit (g11, g12, g12w, dynamic,
    /// g11-prosumer: net-billing with hourly balancing), or a DSO's 2026
    /// tariff with its default seller's energy price: tauron-g11-2026,
    /// tauron-g12-2026, pge-g11-2026, pge-g12-2026, energa-g11-2026,
    /// energa-g12-2026, enea-g11-2026, enea-g12-2026 (sources in the README).
    Example { name: String },
}

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Import prices from CSV (columns start, price[, end]); upserts, so a
    /// corrected file replaces what it covers. Rows are 15 or 60 minutes
    /// long, contiguous: a hole is an error naming it.
    Import {
        file: PathBuf,
        /// The tariff the prices belong to.
        #[arg(long)]
        tariff: String,
        /// `import`: a dynamic tariff's energy prices; `export`: the market
        /// price of exported energy (net-billing, e.g. PSE's RCE), net per kWh.
        #[arg(long, value_enum, default_value = "import")]
        series: tariffs::Series,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[derive(Serialize)]
struct Message {
    result: String,
    #[serde(flatten)]
    details: serde_json::Value,
}

impl Report for Message {
    fn table(&self) -> String {
        format!("{}\n", self.result)
    }
}

#[derive(Serialize)]
struct Versions(Vec<crate::tariff::TariffFile>);

#[derive(Tabled)]
struct Row {
    name: String,
    kind: String,
    currency: String,
    #[tabled(rename = "valid from")]
    from: String,
    #[tabled(rename = "valid to")]
    to: String,
    zones: String,
    #[tabled(rename = "VAT %")]
    vat: String,
    balancing: String,
    export: String,
}

impl Report for Versions {
    fn table(&self) -> String {
        if self.0.is_empty() {
            return "no tariffs; import one with `shellyctl tariff import FILE.json` (see `shellyctl tariff example g12`)\n".into();
        }
        output::table(self.0.iter().map(|f| {
            Row {
                name: f.name.clone(),
                kind: format!("{:?}", f.kind).to_lowercase(),
                currency: f.currency.clone(),
                from: f.valid_from.to_string(),
                to: f.valid_to.map(|d| d.to_string()).unwrap_or_default(),
                zones: f
                    .zones
                    .iter()
                    .map(|z| match z.energy_price {
                        Some(p) => format!(
                            "{} {}+{}",
                            z.name,
                            p,
                            z.distribution_price.unwrap_or_default()
                        ),
                        None => format!(
                            "{} (prices)+{}",
                            z.name,
                            z.distribution_price.unwrap_or_default()
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                vat: f.vat_percent.to_string(),
                balancing: f.balancing.as_str().into(),
                export: match (&f.export, f.export_price) {
                    (Some(e), _) => serde_json::to_value(e.rule)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    (None, Some(p)) => format!("fixed_price {p}"),
                    (None, None) => "none".into(),
                },
            }
        }))
    }
}

pub fn run(global: &GlobalArgs, args: &TariffArgs) -> anyhow::Result<ExitKind> {
    match &args.command {
        TariffCommand::Example { name } => {
            let text = EXAMPLES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "no example {name:?}; choose {}",
                        EXAMPLES.map(|(n, _)| n).join(", ")
                    ))
                })?;
            crate::output::write_stdout(text.as_bytes())?;
            Ok(ExitKind::Success)
        }
        TariffCommand::Import { file, replace } => {
            let text = read(file)?;
            let t = Tariff::parse(&text)
                .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
            let mut client = db::connect(&global.database_url()?)?;
            let what = tariffs::import(&mut client, &t, *replace)?;
            crate::log::info(
                "tariff_imported",
                None,
                json!({"name": t.file.name, "valid_from": t.file.valid_from, "action": what}),
            );
            output::print(
                global.format,
                &Message {
                    result: format!(
                        "{what} tariff {} valid from {}",
                        t.file.name, t.file.valid_from
                    ),
                    details: json!({"name": t.file.name, "valid_from": t.file.valid_from, "valid_to": t.file.valid_to, "action": what}),
                },
            )?;
            Ok(ExitKind::Success)
        }
        TariffCommand::List => {
            let mut client = db::connect(&global.database_url()?)?;
            let all = tariffs::all(&mut client, None)?;
            output::print(
                global.format,
                &Versions(all.into_iter().map(|t| t.file).collect()),
            )?;
            Ok(ExitKind::Success)
        }
        TariffCommand::Show { name } => {
            let mut client = db::connect(&global.database_url()?)?;
            let all = tariffs::all(&mut client, Some(name))?;
            if all.is_empty() {
                return Err(ConfigError(format!("no tariff named {name}")).into());
            }
            output::print(
                global.format,
                &Versions(all.into_iter().map(|t| t.file).collect()),
            )?;
            Ok(ExitKind::Success)
        }
        TariffCommand::Prices {
            command:
                PricesCommand::Import {
                    file,
                    tariff,
                    series,
                },
        } => {
            let mut client = db::connect(&global.database_url()?)?;
            let versions = tariffs::all(&mut client, Some(tariff))?;
            let tz = versions.first().map(|t| t.tz).ok_or_else(|| {
                ConfigError(format!(
                    "no tariff named {tariff}; import it first with `shellyctl tariff import`"
                ))
            })?;
            let prices = parse_prices(&read(file)?, tz)
                .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
            let (inserted, updated) = tariffs::store_prices(&mut client, tariff, *series, &prices)?;
            output::print(
                global.format,
                &Message {
                    result: format!(
                        "{inserted} {} prices added, {updated} corrected for {tariff}",
                        series.as_str()
                    ),
                    details: json!({"tariff": tariff, "series": series.as_str(), "inserted": inserted, "updated": updated}),
                },
            )?;
            Ok(ExitKind::Success)
        }
    }
}

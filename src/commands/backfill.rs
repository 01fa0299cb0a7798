//! `shellyctl backfill`: re-request local days from the devices and upsert
//! them; fills holes the cursor-driven ingest left behind. The cursor never
//! moves backwards.

use super::ingest::{run_all, Range};
use crate::cli::{DeviceArgs, GlobalArgs};
use crate::exit::ExitKind;
use crate::timerange::{parse_date, resolve_days, Zone};
use chrono::NaiveDate;
use clap::Args;

#[derive(Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub device: DeviceArgs,

    /// The local day to re-request (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date, conflicts_with_all = ["from", "to", "yesterday"])]
    pub day: Option<NaiveDate>,

    /// Re-request yesterday (in --tz): what the nightly timer runs.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub yesterday: bool,

    /// First local day of a range (inclusive).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,

    /// Last local day of a range (inclusive; default: --from).
    #[arg(long, value_parser = parse_date, requires = "from")]
    pub to: Option<NaiveDate>,

    /// How long to wait for a device that another run is ingesting.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lock_wait: std::time::Duration,

    /// Time zone of the days (IANA name, e.g. Europe/Warsaw). Default: TZ,
    /// else the system zone.
    #[arg(long)]
    pub tz: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &BackfillArgs) -> anyhow::Result<ExitKind> {
    let zone = Zone::resolve(args.tz.as_deref())?;
    let day = match (args.yesterday, args.day) {
        (true, _) => Some(zone.today().pred_opt().expect("date")),
        (false, d) => d,
    };
    let (from, to) = resolve_days(day, args.from, args.to, zone)?;
    run_all(
        global,
        &args.device,
        Range::Window { from, to },
        super::ingest::Limits::unbounded(chrono::Utc::now().timestamp()),
        args.lock_wait,
    )
}

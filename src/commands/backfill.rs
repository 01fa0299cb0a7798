//! `shellyctl backfill`: re-request local days from the devices and upsert
//! them; fills holes the cursor-driven ingest left behind. The cursor never
//! moves backwards.

use crate::exit::ExitKind;
use crate::settings::{DeviceArgs, GlobalArgs};
use crate::sync::{run_all, Limits, Range};
use crate::timerange::{DayRange, Zone};
use clap::Args;

#[derive(Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub days: DayRange,

    /// Re-request yesterday (in --tz): what the nightly timer runs.
    #[arg(long, conflicts_with_all = ["day", "from", "to"])]
    pub yesterday: bool,

    /// How long to wait for a device that another run is ingesting.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lock_wait: std::time::Duration,
}

pub fn run(global: &GlobalArgs, args: &BackfillArgs) -> anyhow::Result<ExitKind> {
    let mut days = args.days.clone();
    if args.yesterday {
        let zone = Zone::resolve(days.tz.as_deref())?;
        days.day = Some(zone.today().pred_opt().expect("date"));
    }
    let (_, from, to) = days.resolve()?;
    run_all(
        global,
        &args.device,
        Range::Window { from, to },
        Limits::unbounded(global.now()),
        args.lock_wait,
    )
}

//! `shellyctl ingest-intervals`: the meters' stored interval records from
//! each device's cursor (the engine is `crate::sync`).

use crate::exit::ExitKind;
use crate::settings::{DeviceArgs, GlobalArgs};
use crate::sync::{run_all, Limits, Range};
use clap::Args;

#[derive(Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    pub device: DeviceArgs,

    /// At most this many pages per interval database in one run; the next
    /// run continues from the cursor (a long backlog is caught up over
    /// several runs, and a device that never stops paging cannot keep a
    /// run busy).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pages: u64,

    /// Stop fetching after this long (the pages stored so far are kept; the
    /// next run continues).
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    pub max_run_time: std::time::Duration,

    /// A device's first run reads its history back at most this far (a
    /// meter keeps 7 to 60 days; one whose records go back further has a
    /// clock that jumped, and its history is cut here with a
    /// `history_capped` warning naming it). `backfill` reaches further.
    #[arg(long, env = "INGEST_MAX_HISTORY", default_value = "400days", value_parser = humantime::parse_duration)]
    pub max_history: std::time::Duration,
}

pub fn run(global: &GlobalArgs, args: &IngestArgs) -> anyhow::Result<ExitKind> {
    let limits = Limits {
        now: global.now(),
        max_pages: args.max_pages,
        deadline: std::time::Instant::now().checked_add(args.max_run_time),
        max_history_s: i64::try_from(args.max_history.as_secs()).unwrap_or(i64::MAX),
    };
    run_all(
        global,
        &args.device,
        Range::FromCursor,
        limits,
        std::time::Duration::ZERO,
    )
}

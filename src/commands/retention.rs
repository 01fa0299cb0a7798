//! `shellyctl retention`: raw power_readings older than N days become
//! one-minute aggregates (min/avg/max per column); aggregates older than M
//! days go. A whole month past the limit is aggregated and its partition
//! dropped in one transaction; the rest goes in short transactions (one
//! batch of minutes each), so no lock is held for long. Creates the coming
//! months' partitions of every table. Interval data is never touched.

use crate::db::{self, retention};
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::json;

#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Days of raw power_readings to keep.
    #[arg(long, env = "RETENTION_RAW_DAYS", default_value_t = 30)]
    pub raw_days: i64,
    /// Days of one-minute aggregates to keep.
    #[arg(long, env = "RETENTION_AGGREGATE_DAYS", default_value_t = 365)]
    pub aggregate_days: i64,
    /// Minutes of readings per transaction.
    #[arg(long, default_value_t = 60)]
    pub batch_minutes: i64,
    /// Run VACUUM (not FULL) afterwards, so the space is reused at once.
    #[arg(long)]
    pub vacuum: bool,
}

#[derive(Serialize, Default)]
struct RetentionReport {
    raw_cutoff: Option<DateTime<Utc>>,
    /// Whole months of raw readings past the limit: aggregated, then dropped.
    partitions_dropped: Vec<retention::Dropped>,
    /// Monthly partitions made ahead of time (this month and the next few).
    partitions_created: i32,
    raw_rows_deleted: i64,
    minutes_aggregated: i64,
    aggregate_rows_deleted: i64,
    /// Size of the deleted rows: space PostgreSQL reuses after (auto)vacuum.
    bytes_reclaimed: i64,
    batches: i64,
}

impl Report for RetentionReport {
    fn table(&self) -> String {
        let mut out = String::new();
        for d in &self.partitions_dropped {
            out.push_str(&format!(
                "dropped partition {} ({} to {}): {} raw readings into {} one-minute aggregates, {} bytes\n",
                d.partition,
                d.from.map(|t| t.to_rfc3339()).unwrap_or_else(|| "the start".into()),
                d.to.to_rfc3339(),
                d.rows,
                d.minutes,
                d.bytes
            ));
        }
        out + &format!(
            "deleted {} raw readings older than {} into {} one-minute aggregates ({} batches); deleted {} old aggregates; {} bytes reclaimed\n",
            self.raw_rows_deleted,
            self.raw_cutoff.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.minutes_aggregated,
            self.batches,
            self.aggregate_rows_deleted,
            self.bytes_reclaimed
        )
    }
}

pub fn run(global: &GlobalArgs, args: &RetentionArgs) -> anyhow::Result<ExitKind> {
    if args.raw_days < 1 || args.aggregate_days < args.raw_days || args.batch_minutes < 1 {
        return Err(ConfigError(
            "need --raw-days ≥ 1, --aggregate-days ≥ --raw-days and --batch-minutes ≥ 1".into(),
        )
        .into());
    }
    let mut c = db::connect(&global.database_url()?)?;
    let now = global.now();
    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    let cutoff = ts(now - now.rem_euclid(60) - args.raw_days * 86_400);
    let mut r = RetentionReport {
        raw_cutoff: Some(cutoff),
        partitions_created: db::partitions::ensure_ahead(&mut c, ts(now))?,
        ..Default::default()
    };
    // Whole months in one statement each: no statement timeout for them.
    c.batch_execute("SET statement_timeout = 0")?;
    r.partitions_dropped = retention::drop_partitions_before(&mut c, cutoff)?;
    for d in &r.partitions_dropped {
        r.raw_rows_deleted += d.rows;
        r.minutes_aggregated += d.minutes;
        r.bytes_reclaimed += d.bytes;
        crate::metrics::add_rows(d.minutes as u64);
    }
    while let Some(b) = retention::aggregate_batch(&mut c, cutoff, args.batch_minutes)? {
        r.batches += 1;
        r.minutes_aggregated += b.minutes;
        r.raw_rows_deleted += b.raw_rows_deleted;
        r.bytes_reclaimed += b.bytes;
        crate::metrics::add_rows(b.minutes as u64);
    }
    r.aggregate_rows_deleted =
        retention::delete_aggregates_before(&mut c, ts(now - args.aggregate_days * 86_400))?;
    if args.vacuum {
        retention::vacuum(&mut c)?;
    }
    crate::log::info(
        "retention_done",
        None,
        json!({"partitions_dropped": r.partitions_dropped.iter().map(|d| d.partition.as_str()).collect::<Vec<_>>(),
        "raw_rows_deleted": r.raw_rows_deleted, "minutes_aggregated": r.minutes_aggregated,
        "aggregate_rows_deleted": r.aggregate_rows_deleted, "bytes_reclaimed": r.bytes_reclaimed}),
    );
    output::print(global.format, &r)?;
    Ok(ExitKind::Success)
}

//! `shellyctl retention`: raw power_readings older than N days go, their
//! one-minute aggregates (min/avg/max per column, written with the rows)
//! stay; aggregates older than M days go. A whole month past the limit is
//! a partition dropped at once; the rest goes in short transactions (one
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
    /// Days of raw power_readings to keep, at least: a month goes whole
    /// (its partition dropped, no row-by-row delete) once its last day is
    /// this old, so up to a month more stays. See --exact-cutoff.
    #[arg(long, env = "RETENTION_RAW_DAYS", default_value_t = 30)]
    pub raw_days: i64,
    /// Also delete, row by row, the raw readings of the month the cutoff
    /// falls in (slower, and leaves dead rows for VACUUM).
    #[arg(long)]
    pub exact_cutoff: bool,
    /// Days of one-minute aggregates to keep.
    #[arg(long, env = "RETENTION_AGGREGATE_DAYS", default_value_t = 365)]
    pub aggregate_days: i64,
    /// Minutes of readings per transaction.
    #[arg(long, default_value_t = 60)]
    pub batch_minutes: i64,
    /// Run VACUUM (not FULL) afterwards, so the space is reused at once.
    #[arg(long)]
    pub vacuum: bool,
    /// Before dropping a month, count its raw readings against its
    /// aggregates and aggregate it again if they differ. shellyctl writes
    /// both together; use this when another tool writes power_readings
    /// (or run `shellyctl minutes rebuild` after it). Reads the whole month.
    #[arg(long)]
    pub verify: bool,
    /// Also drop the empty monthly partitions of every table before this
    /// month (months a device's wrong clock once asked for, or emptied by
    /// hand): each is checked to hold no row, under a lock, first.
    #[arg(long)]
    pub drop_empty: bool,
    /// Longest one step (making partitions, dropping the old months, a
    /// batch of deletions, the aggregates, a vacuum) may wait on the
    /// database before the run counts it as unavailable and exits 75 (a
    /// frozen server, or a lock held without end) instead of waiting until
    /// the unit's TimeoutStartSec. Steps take seconds on a healthy server
    /// (a 3 GB month's exact check: 8.6 s).
    #[arg(long, env = "RETENTION_STEP_DEADLINE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub step_deadline: std::time::Duration,
}

#[derive(Serialize, Default)]
struct RetentionReport {
    /// Another retention run was at work: this one did nothing (it would
    /// have raced it for the same partitions).
    skipped_busy: bool,
    raw_cutoff: Option<DateTime<Utc>>,
    /// Raw readings before this are gone: the cutoff with --exact-cutoff,
    /// otherwise the start of the oldest month still kept, if earlier.
    raw_kept_from: Option<DateTime<Utc>>,
    /// Whole months of raw readings past the limit, dropped.
    partitions_dropped: Vec<retention::Dropped>,
    /// Monthly partitions made ahead of time (this month and the next few).
    partitions_created: i32,
    /// Empty monthly partitions dropped (--drop-empty).
    empty_partitions_dropped: Vec<String>,
    /// Raw readings deleted row by row (not counting dropped partitions).
    raw_rows_deleted: i64,
    /// Minutes aggregated again because readings had no aggregates (found
    /// by the sample before a drop, or by --verify).
    minutes_rebuilt: u64,
    aggregate_rows_deleted: i64,
    /// Size of the deleted rows: space PostgreSQL reuses after (auto)vacuum.
    bytes_reclaimed: i64,
    batches: i64,
}

impl Report for RetentionReport {
    fn table(&self) -> String {
        if self.skipped_busy {
            return "another retention run is at work: nothing done\n".into();
        }
        let mut out = String::new();
        for d in &self.partitions_dropped {
            out.push_str(&format!(
                "dropped partition {} ({} to {}): {} raw readings, {} bytes{}\n",
                d.partition,
                d.from
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "the start".into()),
                d.to.to_rfc3339(),
                match (d.rows, d.rows_counted) {
                    (Some(n), true) => n.to_string(),
                    (Some(n), false) => format!("about {n}"),
                    (None, _) => "uncounted".into(),
                },
                d.bytes,
                if d.minutes_rebuilt > 0 {
                    format!("; {} minutes aggregated again first", d.minutes_rebuilt)
                } else {
                    String::new()
                }
            ));
        }
        if !self.empty_partitions_dropped.is_empty() {
            out.push_str(&format!(
                "dropped {} empty partitions: {}\n",
                self.empty_partitions_dropped.len(),
                self.empty_partitions_dropped.join(", ")
            ));
        }
        out + &format!(
            "deleted {} raw readings older than {} ({} batches; their one-minute aggregates stay); deleted {} old aggregates; {} bytes reclaimed\n",
            self.raw_rows_deleted,
            self.raw_kept_from.map(|t| t.to_rfc3339()).unwrap_or_default(),
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
    // One retention at a time: two would race for the same partitions (the
    // second found a month the first had just dropped and failed).
    if !db::try_lock(&mut c, "retention")? {
        crate::log::info(
            "retention_busy",
            None,
            json!({"detail": "another retention run is at work; it does the work, this one stops"}),
        );
        let r = RetentionReport {
            skipped_busy: true,
            ..Default::default()
        };
        output::print(global.format, &r)?;
        return Ok(ExitKind::Success);
    }
    let now = global.now();
    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    let cutoff = ts(now - now.rem_euclid(60) - args.raw_days * 86_400);
    let step = |what: &str| db::deadline(&format!("retention: {what}"), args.step_deadline, || {});
    let made = {
        let _deadline = step("making partitions");
        db::minutes::ensure_ahead_and_aggregate(&mut c, ts(now))?
    };
    let mut r = RetentionReport {
        raw_cutoff: Some(cutoff),
        partitions_created: made,
        ..Default::default()
    };
    // Whole months in one statement each: no statement timeout for them.
    c.batch_execute("SET statement_timeout = 0")?;
    r.partitions_dropped = {
        let _deadline = step("dropping the old months");
        retention::drop_partitions_before(&mut c, cutoff, args.verify)?
    };
    for d in &r.partitions_dropped {
        r.minutes_rebuilt += d.minutes_rebuilt;
        r.bytes_reclaimed += d.bytes;
        crate::metrics::add_rows(d.rows.unwrap_or(0).max(0) as u64);
    }
    let rows_before = {
        let _deadline = step("finding the row cutoff");
        retention::row_cutoff(&mut c, cutoff, !args.exact_cutoff)?
    };
    r.raw_kept_from = Some(rows_before);
    loop {
        let batch = {
            let _deadline = step("deleting a batch of rows");
            retention::delete_batch(&mut c, rows_before, args.batch_minutes, args.verify)?
        };
        let Some(b) = batch else { break };
        r.batches += 1;
        r.minutes_rebuilt += b.minutes_rebuilt;
        r.raw_rows_deleted += b.raw_rows_deleted;
        r.bytes_reclaimed += b.bytes;
        crate::metrics::add_rows(b.raw_rows_deleted as u64);
    }
    r.aggregate_rows_deleted = {
        let _deadline = step("deleting old aggregates");
        retention::delete_aggregates_before(&mut c, ts(now - args.aggregate_days * 86_400))?
    };
    if args.drop_empty {
        let _deadline = step("dropping empty partitions");
        r.empty_partitions_dropped = retention::drop_empty_partitions(&mut c, ts(now))?;
    }
    if args.vacuum {
        let _deadline = step("vacuuming");
        retention::vacuum(&mut c)?;
    }
    crate::log::info(
        "retention_done",
        None,
        json!({"partitions_dropped": r.partitions_dropped.iter().map(|d| d.partition.as_str()).collect::<Vec<_>>(),
        "raw_rows_deleted": r.raw_rows_deleted, "minutes_rebuilt": r.minutes_rebuilt,
        "aggregate_rows_deleted": r.aggregate_rows_deleted, "bytes_reclaimed": r.bytes_reclaimed}),
    );
    output::print(global.format, &r)?;
    Ok(ExitKind::Success)
}

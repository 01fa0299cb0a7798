//! `shellyctl retention`: raw power_readings older than N days become
//! one-minute aggregates (min/avg/max per column); aggregates older than M
//! days go. Works in short transactions (one batch of minutes each), so no
//! lock is held for long. Interval data is never touched.

use crate::cli::GlobalArgs;
use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
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
    /// Treat this unix time as now (tests).
    #[arg(long, hide = true)]
    pub now: Option<i64>,
}

pub const COLUMNS: [&str; 10] = [
    "total_power_w",
    "phase_a_power_w",
    "phase_b_power_w",
    "phase_c_power_w",
    "phase_a_voltage_v",
    "phase_b_voltage_v",
    "phase_c_voltage_v",
    "phase_a_current_a",
    "phase_b_current_a",
    "phase_c_current_a",
];

#[derive(Serialize, Default)]
struct RetentionReport {
    raw_cutoff: Option<DateTime<Utc>>,
    raw_rows_deleted: i64,
    minutes_aggregated: i64,
    aggregate_rows_deleted: i64,
    /// Size of the deleted rows: space PostgreSQL reuses after (auto)vacuum.
    bytes_reclaimed: i64,
    batches: i64,
}

impl Report for RetentionReport {
    fn table(&self) -> String {
        format!(
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

fn aggregate_sql() -> String {
    let cols = COLUMNS
        .iter()
        .map(|c| format!("{c}_min, {c}_avg, {c}_max"))
        .collect::<Vec<_>>()
        .join(", ");
    let aggs = COLUMNS
        .iter()
        .map(|c| format!("min({c}), avg({c}), max({c})"))
        .collect::<Vec<_>>()
        .join(", ");
    // A minute already aggregated (it cannot be, as each batch deletes what
    // it aggregates, but a re-run must stay correct) is merged by count.
    let merge = COLUMNS
        .iter()
        .map(|c| {
            format!(
                "{c}_min = LEAST(a.{c}_min, EXCLUDED.{c}_min), {c}_max = GREATEST(a.{c}_max, EXCLUDED.{c}_max),
                 {c}_avg = CASE WHEN a.{c}_avg IS NULL THEN EXCLUDED.{c}_avg WHEN EXCLUDED.{c}_avg IS NULL THEN a.{c}_avg
                           ELSE (a.{c}_avg * a.readings + EXCLUDED.{c}_avg * EXCLUDED.readings) / (a.readings + EXCLUDED.readings) END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO power_readings_1m AS a (device_id, minute, readings, {cols})
         SELECT device_id, date_trunc('minute', ts, 'UTC'), count(*), {aggs}
           FROM power_readings WHERE ts >= $1 AND ts < $2
          GROUP BY 1, 2
         ON CONFLICT (device_id, minute) DO UPDATE SET {merge}, readings = a.readings + EXCLUDED.readings"
    )
}

pub fn run(global: &GlobalArgs, args: &RetentionArgs) -> anyhow::Result<ExitKind> {
    if args.raw_days < 1 || args.aggregate_days < args.raw_days || args.batch_minutes < 1 {
        return Err(ConfigError(
            "need --raw-days ≥ 1, --aggregate-days ≥ --raw-days and --batch-minutes ≥ 1".into(),
        )
        .into());
    }
    let mut c = db::connect(&global.database_url()?)?;
    let now = args.now.unwrap_or_else(|| Utc::now().timestamp());
    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    let cutoff = ts(now - now.rem_euclid(60) - args.raw_days * 86_400);
    let mut r = RetentionReport {
        raw_cutoff: Some(cutoff),
        ..Default::default()
    };
    let sql = aggregate_sql();
    loop {
        let mut tx = c.transaction()?;
        let first: Option<DateTime<Utc>> = tx
            .query_one(
                "SELECT date_trunc('minute', min(ts), 'UTC') FROM power_readings WHERE ts < $1",
                &[&cutoff],
            )?
            .get(0);
        let Some(start) = first else { break };
        let end = (start + chrono::Duration::minutes(args.batch_minutes)).min(cutoff);
        let size: i64 = tx
            .query_one("SELECT COALESCE(sum(pg_column_size(p.*)), 0)::bigint FROM power_readings p WHERE ts >= $1 AND ts < $2", &[&start, &end])?
            .get(0);
        let minutes = tx.execute(&sql, &[&start, &end])?;
        let deleted = tx.execute(
            "DELETE FROM power_readings WHERE ts >= $1 AND ts < $2",
            &[&start, &end],
        )?;
        tx.commit()?;
        r.batches += 1;
        r.minutes_aggregated += minutes as i64;
        r.raw_rows_deleted += deleted as i64;
        r.bytes_reclaimed += size;
        crate::metrics::add_rows(minutes);
    }
    let agg_cutoff = ts(now - args.aggregate_days * 86_400);
    loop {
        let n = c.execute(
            "DELETE FROM power_readings_1m WHERE ctid IN
               (SELECT ctid FROM power_readings_1m WHERE minute < $1 LIMIT 10000)",
            &[&agg_cutoff],
        )?;
        if n == 0 {
            break;
        }
        r.aggregate_rows_deleted += n as i64;
    }
    if args.vacuum {
        // VACUUM of a large table may outlast the jobs' statement timeout.
        c.batch_execute("SET statement_timeout = 0")?;
        c.batch_execute("VACUUM (ANALYZE) power_readings; VACUUM (ANALYZE) power_readings_1m")?;
    }
    crate::log::info(
        "retention_done",
        None,
        json!({"raw_rows_deleted": r.raw_rows_deleted, "minutes_aggregated": r.minutes_aggregated,
        "aggregate_rows_deleted": r.aggregate_rows_deleted, "bytes_reclaimed": r.bytes_reclaimed}),
    );
    output::print(global.format, &r)?;
    Ok(ExitKind::Success)
}

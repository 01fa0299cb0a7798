//! Retention of live readings: raw `power_readings` into one-minute
//! aggregates (`power_readings_1m`), old aggregates deleted. Each batch is
//! its own short transaction.

use super::partitions;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The columns aggregated per minute (min, avg, max each).
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

/// The statement that aggregates the raw readings of [$1, $2) (of ts < $1
/// with `lower` false).
fn aggregate_sql(lower: bool) -> String {
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
           FROM power_readings WHERE {range}
          GROUP BY 1, 2
         ON CONFLICT (device_id, minute) DO UPDATE SET {merge}, readings = a.readings + EXCLUDED.readings",
        range = if lower { "ts >= $1 AND ts < $2" } else { "ts < $1" }
    )
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch {
    pub minutes: i64,
    pub raw_rows_deleted: i64,
    /// Size of the deleted rows (space PostgreSQL reuses after vacuum).
    pub bytes: i64,
}

/// Aggregates and deletes the oldest `batch_minutes` of raw readings
/// before `cutoff`, in one transaction; `None` when none are left.
pub fn aggregate_batch(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
    batch_minutes: i64,
) -> Result<Option<Batch>, postgres::Error> {
    let mut tx = c.transaction()?;
    let first: Option<DateTime<Utc>> = tx
        .query_one(
            "SELECT date_trunc('minute', min(ts), 'UTC') FROM power_readings WHERE ts < $1",
            &[&cutoff],
        )?
        .get(0);
    let Some(start) = first else { return Ok(None) };
    let end = (start + chrono::Duration::minutes(batch_minutes)).min(cutoff);
    let bytes: i64 = tx
        .query_one(
            "SELECT COALESCE(sum(pg_column_size(p.*)), 0)::bigint FROM power_readings p WHERE ts >= $1 AND ts < $2",
            &[&start, &end],
        )?
        .get(0);
    let minutes = tx.execute(&aggregate_sql(true), &[&start, &end])?;
    let deleted = tx.execute(
        "DELETE FROM power_readings WHERE ts >= $1 AND ts < $2",
        &[&start, &end],
    )?;
    tx.commit()?;
    Ok(Some(Batch {
        minutes: minutes as i64,
        raw_rows_deleted: deleted as i64,
        bytes,
    }))
}

/// A partition of raw readings aggregated and dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub partition: String,
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    pub rows: i64,
    pub minutes: i64,
    pub bytes: i64,
}

/// Aggregates and drops every partition of raw readings that lies wholly
/// before `cutoff` (a whole month past the limit: no row-by-row delete),
/// oldest first, one transaction each: the aggregates are written in the
/// same transaction that drops the rows.
pub fn drop_partitions_before(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Dropped>, postgres::Error> {
    let mut out = Vec::new();
    for p in partitions::list(c, "power_readings")?
        .into_iter()
        .filter(|p| p.to <= cutoff)
    {
        let mut tx = c.transaction()?;
        let (rows, minutes) = match p.from {
            Some(from) => {
                let rows: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM power_readings WHERE ts >= $1 AND ts < $2",
                        &[&from, &p.to],
                    )?
                    .get(0);
                (rows, tx.execute(&aggregate_sql(true), &[&from, &p.to])?)
            }
            None => {
                let rows: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM power_readings WHERE ts < $1",
                        &[&p.to],
                    )?
                    .get(0);
                (rows, tx.execute(&aggregate_sql(false), &[&p.to])?)
            }
        };
        partitions::drop(&mut tx, &p)?;
        tx.commit()?;
        out.push(Dropped {
            partition: p.name,
            from: p.from,
            to: p.to,
            rows,
            minutes: minutes as i64,
            bytes: p.bytes,
        });
    }
    Ok(out)
}

/// Deletes aggregates older than `cutoff`, 10,000 rows a statement.
pub fn delete_aggregates_before(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
) -> Result<i64, postgres::Error> {
    let mut total = 0;
    loop {
        let n = c.execute(
            "DELETE FROM power_readings_1m WHERE ctid IN
               (SELECT ctid FROM power_readings_1m WHERE minute < $1 LIMIT 10000)",
            &[&cutoff],
        )?;
        if n == 0 {
            return Ok(total);
        }
        total += n as i64;
    }
}

/// VACUUM (not FULL) of both tables, without the jobs' statement timeout.
pub fn vacuum(c: &mut postgres::Client) -> Result<(), postgres::Error> {
    c.batch_execute("SET statement_timeout = 0")?;
    c.batch_execute("VACUUM (ANALYZE) power_readings; VACUUM (ANALYZE) power_readings_1m")
}

//! Retention of live readings: raw `power_readings` past the limit are
//! dropped (their one-minute aggregates, `power_readings_1m`, were written
//! with them: see `db::minutes`), old aggregates deleted. A whole month is
//! a partition dropped at once; the rest is deleted in batches, each its
//! own short transaction.

use super::minutes;
use super::partitions;
use super::scope::Scope;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch {
    pub raw_rows_deleted: i64,
    /// Size of the deleted rows (space PostgreSQL reuses after vacuum).
    pub bytes: i64,
    pub minutes_rebuilt: u64,
}

/// Where row-by-row deletes stop: `cutoff`, or with `whole_months` the
/// start of the oldest monthly partition left if that is earlier (the rows
/// of a month go with its partition, once all of them are past the limit;
/// rows in the history partition, which has no months, go row by row).
pub fn row_cutoff(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
    whole_months: bool,
) -> Result<DateTime<Utc>, postgres::Error> {
    if !whole_months {
        return Ok(cutoff);
    }
    let first_month = partitions::list(c, "power_readings")?
        .into_iter()
        .filter_map(|p| p.from)
        .min();
    Ok(first_month.map_or(cutoff, |m| m.min(cutoff)))
}

/// Deletes the oldest `batch_minutes` of raw readings before `cutoff`, in
/// one transaction; `None` when none are left.
/// With `verify`, the batch's minutes are aggregated again first (readings
/// another tool wrote have no aggregates).
pub fn delete_batch(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
    batch_minutes: i64,
    verify: bool,
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
    let minutes_rebuilt = if verify {
        minutes::rebuild_in(&mut tx, &Scope::between(Some(start), Some(end)))?.minutes_written
    } else {
        0
    };
    let r = tx.query_one(
        "WITH gone AS (DELETE FROM power_readings WHERE ts >= $1 AND ts < $2 RETURNING pg_column_size(power_readings.*) AS b)
         SELECT count(*), COALESCE(sum(b), 0)::bigint FROM gone",
        &[&start, &end],
    )?;
    minutes::mark_dropped(&mut tx, "power_readings", end)?;
    tx.commit()?;
    Ok(Some(Batch {
        raw_rows_deleted: r.get(0),
        bytes: r.get(1),
        minutes_rebuilt,
    }))
}

/// A partition of raw readings dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub partition: String,
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    /// Raw readings dropped: counted with `verify`, otherwise PostgreSQL's
    /// estimate (`pg_class.reltuples`, as of the last ANALYZE; null if the
    /// month was never analyzed).
    pub rows: Option<i64>,
    pub rows_counted: bool,
    /// Minutes aggregated again because the aggregates did not cover
    /// every raw row (readings another tool wrote), found by the exact
    /// check every month gets before it is dropped.
    pub minutes_rebuilt: u64,
    pub bytes: i64,
}

/// Drops every partition of raw readings that lies wholly before `cutoff`
/// (a whole month past the limit: no row-by-row delete), oldest first, one
/// transaction each. Their aggregates were written with the rows; before a
/// month goes, every one of its minutes is compared, exactly, with its
/// aggregate (`minutes::unaggregated`), and a month found short (readings
/// another tool wrote) is aggregated again in the same transaction. The
/// point raw rows are dropped to is recorded (`raw_dropped`), so no later
/// rebuild recomputes those minutes from what is left.
pub fn drop_partitions_before(
    c: &mut postgres::Client,
    cutoff: DateTime<Utc>,
    verify: bool,
) -> Result<Vec<Dropped>, postgres::Error> {
    let mut out = Vec::new();
    for p in partitions::list(c, "power_readings")?
        .into_iter()
        .filter(|p| p.to <= cutoff)
    {
        let mut tx = c.transaction()?;
        // No row may arrive between the check and the drop.
        tx.batch_execute("LOCK TABLE power_readings IN SHARE ROW EXCLUSIVE MODE")?;
        let rows = if verify {
            Some(minutes::counts(&mut tx, p.from, p.to)?.0)
        } else {
            let estimate: f32 = tx
                .query_one(
                    "SELECT reltuples FROM pg_class WHERE oid = to_regclass(quote_ident($1))",
                    &[&p.name],
                )?
                .get(0);
            (estimate >= 0.0).then_some(estimate as i64)
        };
        let minutes_rebuilt = if minutes::unaggregated(&mut tx, &p.name)? {
            minutes::rebuild_in(&mut tx, &Scope::between(p.from, Some(p.to)))?.minutes_written
        } else {
            0
        };
        partitions::drop(&mut tx, &p)?;
        minutes::mark_dropped(&mut tx, "power_readings", p.to)?;
        tx.commit()?;
        out.push(Dropped {
            partition: p.name,
            from: p.from,
            to: p.to,
            rows,
            rows_counted: verify,
            minutes_rebuilt,
            bytes: p.bytes,
        });
    }
    Ok(out)
}

/// Drops every monthly partition of every partitioned table that ends
/// before the month of `now` and holds no row (checked under a lock that
/// keeps writers out of the table for that moment); returns their names.
/// The default and history partitions are never dropped.
pub fn drop_empty_partitions(
    c: &mut postgres::Client,
    now: DateTime<Utc>,
) -> Result<Vec<String>, postgres::Error> {
    let mut out = Vec::new();
    for (table, _) in partitions::TABLES {
        for p in partitions::list(c, table)?
            .into_iter()
            .filter(|p| p.from.is_some() && p.to <= now && p.name.contains("_p"))
        {
            let mut tx = c.transaction()?;
            tx.batch_execute(&format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                partitions::quote_ident(table)
            ))?;
            let empty: bool = tx
                .query_one(
                    &format!(
                        "SELECT NOT EXISTS (SELECT 1 FROM {})",
                        partitions::quote_ident(&p.name)
                    ),
                    &[],
                )?
                .get(0);
            if empty {
                partitions::drop(&mut tx, &p)?;
                tx.commit()?;
                out.push(p.name);
            }
        }
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

//! One-minute aggregates of live readings (`power_readings_1m`): min, sum,
//! count and max of each column per device and minute (the average is a
//! generated column, sum / count, what `avg()` computes).
//!
//! Written with the raw rows, not after: every writer of `power_readings`
//! adds its row to its minute in the same statement ([`insert_sql`]), so
//! the aggregates of a month are complete before retention drops its
//! partition, and retention never waits for an aggregation. Like the energy
//! slots this needs no trigger, so it works on partitions, hypertables and
//! distributed tables alike. Readings written by anything else (a restore,
//! another tool) are aggregated by [`rebuild`] (`shellyctl minutes
//! rebuild`); [`check`] compares the aggregates with the raw rows, and
//! retention looks a sample of each month up in them before it drops it
//! ([`sample_unaggregated`]; [`counts`] with `--verify`).

use super::slots::Scope;
use chrono::{DateTime, Utc};
use postgres::GenericClient;
use serde::Serialize;

/// The columns aggregated per minute.
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

fn each(f: impl Fn(&str) -> String) -> String {
    COLUMNS.iter().map(|c| f(c)).collect::<Vec<_>>().join(", ")
}

/// The aggregate of each minute of `src` (a relation with `device_id`, `ts`
/// and the [`COLUMNS`]): `device_id, minute, readings, <c>_min, <c>_sum,
/// <c>_n, <c>_max...`.
fn aggregate(src: &str) -> String {
    format!(
        "SELECT device_id, date_trunc('minute', ts, 'UTC') AS minute, count(*)::integer AS readings, {}
           FROM {src} GROUP BY 1, 2",
        each(|c| format!("min({c}) AS {c}_min, sum({c}) AS {c}_sum, count({c})::integer AS {c}_n, max({c}) AS {c}_max"))
    )
}

fn targets() -> String {
    each(|c| format!("{c}_min, {c}_sum, {c}_n, {c}_max"))
}

/// `INSERT ... SELECT` adding the readings of `src` to their minutes,
/// merged into a minute that already has some.
pub fn insert_sql(src: &str) -> String {
    format!(
        "INSERT INTO power_readings_1m AS a (device_id, minute, readings, {targets})
         {select}
         ON CONFLICT (device_id, minute) DO UPDATE SET readings = a.readings + EXCLUDED.readings, {merge}",
        targets = targets(),
        select = aggregate(src),
        merge = each(|c| format!(
            "{c}_min = LEAST(a.{c}_min, EXCLUDED.{c}_min), {c}_max = GREATEST(a.{c}_max, EXCLUDED.{c}_max),
             {c}_sum = COALESCE(a.{c}_sum + EXCLUDED.{c}_sum, a.{c}_sum, EXCLUDED.{c}_sum),
             {c}_n = a.{c}_n + EXCLUDED.{c}_n"
        )),
    )
}

/// The raw readings of `scope` (whole minutes) as SQL over $1 from, $2 to,
/// $3 devices.
fn raw_filter() -> &'static str {
    "(cardinality($3::text[]) = 0 OR device_id = ANY($3))
     AND ($1::timestamptz IS NULL OR ts >= $1) AND ($2::timestamptz IS NULL OR ts < $2)"
}

/// What a rebuild did.
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub minutes_deleted: u64,
    pub minutes_written: u64,
}

/// Recomputes, in one transaction, every minute of `scope` that still has
/// raw readings. Minutes whose raw rows retention has dropped keep their
/// aggregates (they cannot be computed again).
pub fn rebuild(c: &mut postgres::Client, scope: &Scope) -> Result<Rebuilt, postgres::Error> {
    let mut tx = c.transaction()?;
    let r = rebuild_in(&mut tx, scope)?;
    tx.commit()?;
    Ok(r)
}

/// [`rebuild`] inside the caller's transaction.
pub fn rebuild_in(tx: &mut impl GenericClient, scope: &Scope) -> Result<Rebuilt, postgres::Error> {
    let s = scope.aligned_to(60);
    let minutes_deleted = tx.execute(
        &format!(
            "DELETE FROM power_readings_1m a
              USING (SELECT DISTINCT device_id, date_trunc('minute', ts, 'UTC') AS minute
                       FROM power_readings WHERE {f}) r
              WHERE a.device_id = r.device_id AND a.minute = r.minute",
            f = raw_filter()
        ),
        &[&s.from, &s.to, &s.devices],
    )?;
    let minutes_written = tx.execute(
        &insert_sql(&format!(
            "(SELECT * FROM power_readings WHERE {}) r",
            raw_filter()
        )),
        &[&s.from, &s.to, &s.devices],
    )?;
    Ok(Rebuilt {
        minutes_deleted,
        minutes_written,
    })
}

/// One minute whose aggregate differs from its raw readings.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub device_id: String,
    pub minute: DateTime<Utc>,
    /// Readings counted in the stored aggregate; `None` if it is missing.
    pub stored_readings: Option<i32>,
    pub raw_readings: i32,
}

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// Minutes with raw readings in the scope.
    pub minutes_compared: u64,
    pub mismatches: u64,
    /// The first mismatches (at most `limit`).
    pub examples: Vec<Mismatch>,
}

/// Compares, exactly, the aggregate of every minute of `scope` that has
/// raw readings with the aggregate computed from them.
pub fn check(
    c: &mut impl GenericClient,
    scope: &Scope,
    limit: i64,
) -> Result<Checked, postgres::Error> {
    let s = scope.aligned_to(60);
    let cols = format!("readings, {}", targets());
    let sql = format!(
        "WITH want AS ({want}),
              cmp AS (SELECT w.device_id, w.minute, w.readings AS wr, a.readings AS hr,
                             (w.device_id, w.minute, {wcols}) IS DISTINCT FROM (a.device_id, a.minute, {acols}) AS bad
                        FROM want w LEFT JOIN power_readings_1m a USING (device_id, minute))
         SELECT (SELECT count(*) FROM cmp), (SELECT count(*) FROM cmp WHERE bad), device_id, minute, hr, wr
           FROM cmp WHERE bad ORDER BY device_id, minute LIMIT $4",
        want = aggregate(&format!(
            "(SELECT * FROM power_readings WHERE {}) r",
            raw_filter()
        )),
        wcols = cols
            .split(", ")
            .map(|c| format!("w.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        acols = cols
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let rows = c.query(&sql, &[&s.from, &s.to, &s.devices, &limit])?;
    let mut out = Checked::default();
    let Some(first) = rows.first() else {
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM (SELECT DISTINCT device_id, date_trunc('minute', ts, 'UTC')
                       FROM power_readings WHERE {}) m",
                    raw_filter()
                ),
                &[&s.from, &s.to, &s.devices],
            )?
            .get(0);
        out.minutes_compared = n as u64;
        return Ok(out);
    };
    out.minutes_compared = first.get::<_, i64>(0) as u64;
    out.mismatches = first.get::<_, i64>(1) as u64;
    out.examples = rows
        .iter()
        .map(|r| Mismatch {
            device_id: r.get(2),
            minute: r.get(3),
            stored_readings: r.get(4),
            raw_readings: r.get(5),
        })
        .collect();
    Ok(out)
}

/// Raw readings of [from, to) and the readings that the aggregates of
/// their minutes count (from the minute of the oldest raw row on: earlier
/// minutes may have lost their raw rows to retention already). Equal when
/// every raw row was aggregated: `retention --verify` counts before it
/// drops a month.
pub fn counts(
    c: &mut impl GenericClient,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> Result<(i64, i64), postgres::Error> {
    let r = c.query_one(
        "WITH raw AS (SELECT count(*) AS n, min(ts) AS lo FROM power_readings
                       WHERE ($1::timestamptz IS NULL OR ts >= $1) AND ts < $2)
         SELECT raw.n, (SELECT COALESCE(sum(readings), 0)::bigint FROM power_readings_1m
                         WHERE minute >= date_trunc('minute', raw.lo, 'UTC') AND minute < $2)
           FROM raw",
        &[&from, &to],
    )?;
    Ok((r.get(0), r.get(1)))
}

/// Whether a sample of the partition `partition` (of `power_readings`; a
/// name from `partitions::list`) has a reading whose minute has no
/// aggregate: some 200 pages (all of a small month, 0.01% of a huge one at
/// least), one row of each looked up. Rows are written in pages, so a
/// month written in bulk by another tool is caught by any page of it; a
/// few such rows among shellyctl's may slip through (`retention --verify`
/// counts them all). A probe for every row of the pages (some 13,000)
/// took 0.8 s from a cold cache against 55 ms for one a page (3 GB month).
pub fn sample_unaggregated(
    c: &mut impl GenericClient,
    partition: &str,
) -> Result<bool, postgres::Error> {
    let pages: i64 = c
        .query_one(
            "SELECT GREATEST(pg_relation_size(to_regclass(quote_ident($1))) / current_setting('block_size')::bigint, 1)",
            &[&partition],
        )?
        .get(0);
    let percent = (20_000.0 / pages as f64).clamp(0.01, 100.0);
    c.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM (SELECT DISTINCT ON ((s.ctid::text::point)[0]) s.device_id, s.ts
                                             FROM {} AS s TABLESAMPLE SYSTEM ($1)) AS r
                             WHERE NOT EXISTS (SELECT 1 FROM power_readings_1m a
                                                WHERE a.device_id = r.device_id
                                                  AND a.minute = date_trunc('minute', r.ts, 'UTC')))",
            super::partitions::quote_ident(partition)
        ),
        &[&(percent as f32)],
    )
    .map(|r| r.get(0))
}

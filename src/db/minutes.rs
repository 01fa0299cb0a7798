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
//! rebuild`), which never takes readings out of a minute; [`check`]
//! compares the aggregates with the raw rows, and retention compares every
//! minute of a month with its aggregate before it drops it
//! ([`unaggregated`]; [`counts`] with `--verify`).

use super::scope::Scope;
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
    /// Minutes whose aggregate was written (new, or recomputed from raw
    /// readings at least as many as it counted).
    pub minutes_written: u64,
    /// Minutes with raw readings whose aggregate was kept as it was: it
    /// counts more readings than are left (retention dropped some), or
    /// the minute is before the point retention has dropped raw rows to.
    pub minutes_kept: u64,
}

/// Records that raw rows of `table` before `before` are gone (retention).
pub fn mark_dropped(
    tx: &mut impl GenericClient,
    table: &str,
    before: DateTime<Utc>,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO raw_dropped (table_name, dropped_before) VALUES ($1, $2)
         ON CONFLICT (table_name) DO UPDATE
             SET dropped_before = GREATEST(raw_dropped.dropped_before, EXCLUDED.dropped_before)",
        &[&table, &before],
    )?;
    Ok(())
}

/// Makes the coming months' partitions of every table and adopts rows
/// waiting in default partitions (`partitions::ensure_ahead`), then
/// aggregates the adopted readings' minutes (never taking readings out of a
/// minute); returns the partitions made.
pub fn ensure_ahead_and_aggregate(
    c: &mut postgres::Client,
    now: DateTime<Utc>,
) -> Result<i32, postgres::Error> {
    let ahead = super::partitions::ensure_ahead(c, now)?;
    if let Some(scope) = &ahead.adopted_readings {
        rebuild(c, scope)?;
    }
    Ok(ahead.made)
}

/// Recomputes, in one transaction, the minutes of `scope` that have raw
/// readings, where that is exact (see [`rebuild_in`]).
pub fn rebuild(c: &mut postgres::Client, scope: &Scope) -> Result<Rebuilt, postgres::Error> {
    let mut tx = c.transaction()?;
    // Writers of readings add to the aggregates in the same statement:
    // kept out while the minutes are recomputed, so none is counted twice
    // or lost between the rebuild's reading and its writing.
    tx.batch_execute("LOCK TABLE power_readings IN SHARE ROW EXCLUSIVE MODE")?;
    let r = rebuild_in(&mut tx, scope)?;
    tx.commit()?;
    Ok(r)
}

/// [`rebuild`] inside the caller's transaction. Aggregates only grow or are
/// recomputed exactly: a minute's aggregate is written from its raw rows
/// when it has none, or when the raw rows are at least as many as it
/// counts and the minute is after the point retention dropped raw rows to
/// (`raw_dropped`); otherwise it is kept (some of its readings exist only
/// in it). So a late reading in a dropped month, or a rebuild over a range
/// retention has thinned, never takes readings out of a minute.
pub fn rebuild_in(tx: &mut impl GenericClient, scope: &Scope) -> Result<Rebuilt, postgres::Error> {
    let s = scope.aligned_to(60);
    let sql = format!(
        "WITH want AS MATERIALIZED ({want}),
              upd AS (INSERT INTO power_readings_1m AS a (device_id, minute, readings, {targets})
                      SELECT * FROM want
                      ON CONFLICT (device_id, minute) DO UPDATE SET readings = EXCLUDED.readings, {set}
                      WHERE a.readings <= EXCLUDED.readings
                        AND a.minute >= COALESCE((SELECT dropped_before FROM raw_dropped
                                                   WHERE table_name = 'power_readings'), '-infinity')
                      RETURNING 1)
         SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM want)",
        want = aggregate(&format!(
            "(SELECT * FROM power_readings WHERE {}) r",
            raw_filter()
        )),
        targets = targets(),
        set = each(|c| format!(
            "{c}_min = EXCLUDED.{c}_min, {c}_sum = EXCLUDED.{c}_sum, {c}_n = EXCLUDED.{c}_n, {c}_max = EXCLUDED.{c}_max"
        )),
    );
    let r = tx.query_one(&sql, &[&s.from, &s.to, &s.devices])?;
    let (written, with_raw): (i64, i64) = (r.get(0), r.get(1));
    Ok(Rebuilt {
        minutes_written: written as u64,
        minutes_kept: (with_raw - written) as u64,
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

/// Whether some raw reading of the partition `partition` (of
/// `power_readings`; a name from `partitions::list`) is not counted in its
/// minute's aggregate: exactly, every minute of the month compared (its
/// raw readings against the readings its aggregate counts). Retention asks
/// this of every month before it drops it.
pub fn unaggregated(c: &mut impl GenericClient, partition: &str) -> Result<bool, postgres::Error> {
    c.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM (SELECT device_id, date_trunc('minute', ts, 'UTC') AS minute, count(*) AS n
                                             FROM {} GROUP BY 1, 2) r
                              LEFT JOIN power_readings_1m a USING (device_id, minute)
                             WHERE a.readings IS NULL OR a.readings < r.n)",
            super::partitions::quote_ident(partition)
        ),
        &[],
    )
    .map(|r| r.get(0))
}

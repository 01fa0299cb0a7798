//! Energy per 15-minute slot (`energy_slots`): a running sum of
//! `energy_intervals` that reports over months and years read instead of
//! every record.
//!
//! Kept without triggers, so the same schema works on plain tables,
//! partitions, TimescaleDB hypertables and Citus distributed tables: the
//! ingest page writes its records and their slots in one statement
//! ([`insert_records_sql`]), and [`rebuild`] / [`check`] repair and verify
//! any range (`shellyctl slots rebuild|check`). Anything else that writes
//! `energy_intervals` (an edit by hand) must rebuild the range it touched.
//!
//! A record that crosses a slot boundary is shared pro rata by time between
//! the slots it covers. Slots start at multiples of 15 minutes since the
//! epoch (every tariff boundary at a quarter hour of local time is one).

use super::scope::Scope;
use chrono::{DateTime, Utc};
use postgres::GenericClient;
use rust_decimal::Decimal;
use serde::Serialize;

/// The longest record the device sends (`emdata::MAX_PERIOD_S`, a day):
/// a range rebuild looks this far before its start for records reaching in.
pub(crate) const MAX_RECORD: &str = "1 day";

/// `(device_id, slot, channel, i, e, c)` rows from `src`, a relation with
/// `device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh`:
/// one row per record and slot it covers.
fn shares(src: &str) -> String {
    format!(
        "SELECT device_id, date_bin('15 minutes', start_ts, timestamptz 'epoch') AS slot, channel,
                energy_wh AS i, returned_energy_wh AS e, end_ts - start_ts AS c
           FROM {src} r0
          WHERE end_ts <= date_bin('15 minutes', start_ts, timestamptz 'epoch') + interval '15 minutes'
         UNION ALL
         SELECT r.device_id, g.slot, r.channel, r.energy_wh * o.share, r.returned_energy_wh * o.share, o.overlap
           FROM {src} r,
                LATERAL generate_series(date_bin('15 minutes', r.start_ts, timestamptz 'epoch'),
                                        r.end_ts - interval '1 microsecond', interval '15 minutes') AS g(slot),
                LATERAL (SELECT LEAST(r.end_ts, g.slot + interval '15 minutes') - GREATEST(r.start_ts, g.slot) AS overlap) ov,
                LATERAL (SELECT ov.overlap AS overlap,
                                EXTRACT(EPOCH FROM ov.overlap) / EXTRACT(EPOCH FROM r.end_ts - r.start_ts) AS share) o
          WHERE r.end_ts > date_bin('15 minutes', r.start_ts, timestamptz 'epoch') + interval '15 minutes'"
    )
}

/// Sums of `shares(src)` per slot, restricted by `slot_filter` (SQL on `slot`).
fn sums(src: &str, slot_filter: &str) -> String {
    format!(
        "SELECT device_id, slot, channel, COALESCE(sum(i), 0) AS import_wh,
                COALESCE(sum(e), 0) AS export_wh, sum(c) AS covered
           FROM ({}) x
          WHERE {slot_filter}
          GROUP BY device_id, slot, channel",
        shares(src)
    )
}

/// `INSERT ... SELECT` adding the slots of `src` to `energy_slots`.
fn add_sql(src: &str, slot_filter: &str) -> String {
    format!(
        "INSERT INTO energy_slots AS s (device_id, slot_start, channel, import_wh, export_wh, covered)
         {}
         ON CONFLICT (device_id, slot_start, channel) DO UPDATE SET
             import_wh = s.import_wh + EXCLUDED.import_wh,
             export_wh = s.export_wh + EXCLUDED.export_wh,
             covered = s.covered + EXCLUDED.covered",
        sums(src, slot_filter)
    )
}

/// One statement that inserts the rows of `staging` (columns `cols`) into
/// `energy_intervals`, skipping records already stored, adds the inserted
/// ones to their slots, and returns (rows inserted, records inserted).
pub fn insert_records_sql(staging: &str, cols: &str) -> String {
    format!(
        "WITH ins AS (
             INSERT INTO energy_intervals ({cols})
             SELECT {cols} FROM {staging}
             ON CONFLICT (device_id, channel, start_ts, end_ts) DO NOTHING
             RETURNING device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh),
         slots AS ({} RETURNING 1)
         SELECT count(*), count(DISTINCT start_ts), (SELECT count(*) FROM slots) FROM ins",
        add_sql("ins", "true")
    )
}

/// (records in a scope, slots in a scope) as SQL over $1 from, $2 to, $3
/// devices (an empty array is every device).
fn filters() -> (String, String) {
    let dev = "(cardinality($3::text[]) = 0 OR device_id = ANY($3))";
    let records = format!(
        "{dev} AND ($2::timestamptz IS NULL OR start_ts < $2)
               AND ($1::timestamptz IS NULL OR (end_ts > $1 AND start_ts > $1 - interval '{MAX_RECORD}'))"
    );
    let slots = format!(
        "{dev} AND ($1::timestamptz IS NULL OR {{slot}} >= $1) AND ($2::timestamptz IS NULL OR {{slot}} < $2)"
    );
    (records, slots)
}

/// The scope rounded out to whole slots.
fn aligned(scope: &Scope) -> Scope {
    scope.aligned_to(900)
}

/// What a rebuild did.
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub slots_deleted: u64,
    pub slots_written: u64,
    /// Rows (a device's channel on a UTC day) of `energy_hours` written.
    pub hour_rows_written: u64,
    /// Notes of other writers' statements cleared (a whole rebuild only).
    pub foreign_writes_cleared: u64,
}

/// Statements of other writers on `energy_intervals` not yet followed by a
/// whole `slots rebuild` (sql/0020): how many, and the first one's time.
pub fn foreign_writes(
    c: &mut impl GenericClient,
) -> Result<Option<(i64, DateTime<Utc>)>, postgres::Error> {
    let r = c.query_one(
        "SELECT count(*), min(at) FROM energy_intervals_foreign_writes",
        &[],
    )?;
    let n: i64 = r.get(0);
    Ok(r.get::<_, Option<DateTime<Utc>>>(1).map(|at| (n, at)))
}

/// Refuses to read slots that another writer's statements may have left
/// behind the records: the report would be silently wrong.
pub fn require_followed(c: &mut impl GenericClient) -> anyhow::Result<()> {
    if let Some((n, at)) = foreign_writes(c)? {
        anyhow::bail!(
            "energy_intervals were changed by {n} statement(s) of another writer since {} \
             (an INSERT by hand, a restore, another tool), which the 15-minute slots this report \
             reads do not follow yet: run `shellyctl slots rebuild` (without a range), then the report again",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(())
}

/// Recomputes the slots of `scope` from the records, in one transaction:
/// the slots in range are deleted and written again. The transaction first
/// locks `energy_slots` against writers (SHARE ROW EXCLUSIVE): an ingest
/// committing between the delete and the insert had its records added to
/// their slots twice, once by itself and once by the rebuild that saw them.
/// Ingests wait for the rebuild (and it for them).
pub fn rebuild(c: &mut postgres::Client, scope: &Scope) -> anyhow::Result<Rebuilt> {
    let s = aligned(scope);
    let (records, slots) = filters();
    // Partitions first, outside the transaction (making one locks the
    // table exclusively; see db::partitions). The same look finds a record
    // with negative energy, which no meter registers (shellyctl's writers
    // refuse it at the device's edge; another writer may not have): the
    // slots would carry it into every report, so the rebuild refuses it.
    let span = c.query_one(
        &format!(
            "SELECT min(start_ts), max(end_ts),
                    (array_agg(device_id || ' ' || channel || ' at '
                                  || to_char(start_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')
                               ORDER BY start_ts)
                        FILTER (WHERE energy_wh < 0 OR returned_energy_wh < 0))[1]
               FROM energy_intervals WHERE {records}"
        ),
        &[&s.from, &s.to, &s.devices],
    )?;
    if let Some(bad) = span.get::<_, Option<String>>(2) {
        anyhow::bail!(
            "a record with negative energy is stored for {bad} (energy_wh and returned_energy_wh \
             are 0 or more); correct or delete it, then run `shellyctl slots rebuild` again: \
             `SELECT * FROM energy_intervals WHERE energy_wh < 0 OR returned_energy_wh < 0`"
        );
    }
    if let (Some(lo), Some(hi)) = (span.get(0), span.get(1)) {
        super::partitions::ensure(c, "energy_slots", lo, hi)?;
    }
    let mut tx = c.transaction()?;
    let c = &mut tx;
    c.batch_execute("SET LOCAL jit = off; LOCK TABLE energy_slots IN SHARE ROW EXCLUSIVE MODE")?;
    // A whole rebuild brings every slot back to the records: the notes of
    // other writers' statements (sql/0020) are cleared first, so a write
    // that commits while this runs keeps its note (it may be missed below).
    let foreign_writes_cleared = if s.from.is_none() && s.to.is_none() && s.devices.is_empty() {
        c.execute("DELETE FROM energy_intervals_foreign_writes", &[])?
    } else {
        0
    };
    let slots_deleted = c.execute(
        &format!(
            "DELETE FROM energy_slots WHERE {}",
            slots.replace("{slot}", "slot_start")
        ),
        &[&s.from, &s.to, &s.devices],
    )?;
    let src = format!("(SELECT * FROM energy_intervals WHERE {records})");
    let slots_written = c.execute(
        &add_sql(&src, &slots.replace("{slot}", "slot")),
        &[&s.from, &s.to, &s.devices],
    )?;
    // The hours of the range's UTC days, from the slots just written (and
    // the ones beside the range on those days).
    let hour_rows_written = super::hours::rebuild(c, &s)?;
    tx.commit()?;
    Ok(Rebuilt {
        slots_deleted,
        slots_written,
        hour_rows_written,
        foreign_writes_cleared,
    })
}

/// One slot whose stored sums differ from its records.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub device_id: String,
    pub slot_start: DateTime<Utc>,
    pub channel: String,
    /// (import Wh, export Wh, covered seconds) stored; `None` if missing.
    pub stored: Option<(Decimal, Decimal, i64)>,
    /// The same computed from the records; `None` if there are none.
    pub expected: Option<(Decimal, Decimal, i64)>,
}

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub slots_compared: u64,
    pub mismatches: u64,
    /// The first mismatches (at most `limit`).
    pub examples: Vec<Mismatch>,
    /// Rows of `energy_hours` (a channel's UTC day) compared with their
    /// slots, and how many differ (db::hours).
    pub hour_rows_compared: u64,
    pub hour_mismatches: u64,
    pub hour_examples: Vec<super::hours::HourMismatch>,
}

/// Compares the stored slots of `scope` with slots computed from the
/// records. Exact: NUMERIC sums and whole-second coverage.
pub fn check(
    c: &mut impl GenericClient,
    scope: &Scope,
    limit: i64,
) -> Result<Checked, postgres::Error> {
    let s = aligned(scope);
    let (records, slots) = filters();
    c.batch_execute("SET jit = off")?;
    let (hour_rows_compared, hour_mismatches, hour_examples) = super::hours::check(c, &s, limit)?;
    let mut out = Checked {
        hour_rows_compared,
        hour_mismatches,
        hour_examples,
        ..Checked::default()
    };
    let src = format!("(SELECT * FROM energy_intervals WHERE {records})");
    let sql = format!(
        "WITH want AS ({}),
              have AS (SELECT device_id, slot_start AS slot, channel, import_wh, export_wh, covered
                         FROM energy_slots WHERE {}),
              cmp AS (
                 SELECT coalesce(h.device_id, w.device_id) AS device_id, coalesce(h.slot, w.slot) AS slot,
                        coalesce(h.channel, w.channel) AS channel,
                        h.import_wh AS hi, h.export_wh AS he, EXTRACT(EPOCH FROM h.covered)::bigint AS hc,
                        w.import_wh AS wi, w.export_wh AS we, EXTRACT(EPOCH FROM w.covered)::bigint AS wc
                   FROM have h FULL JOIN want w USING (device_id, slot, channel))
         SELECT (SELECT count(*) FROM cmp),
                (SELECT count(*) FROM cmp WHERE (hi, he, hc) IS DISTINCT FROM (wi, we, wc)),
                device_id, slot, channel, hi, he, hc, wi, we, wc
           FROM cmp
          WHERE (hi, he, hc) IS DISTINCT FROM (wi, we, wc)
          ORDER BY device_id, slot, channel
          LIMIT $4",
        sums(&src, &slots.replace("{slot}", "slot")),
        slots.replace("{slot}", "slot_start"),
    );
    let rows = c.query(&sql, &[&s.from, &s.to, &s.devices, &limit])?;
    if rows.is_empty() {
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM energy_slots WHERE {}",
                    slots.replace("{slot}", "slot_start")
                ),
                &[&s.from, &s.to, &s.devices],
            )?
            .get(0);
        out.slots_compared = n as u64;
        return Ok(out);
    }
    out.slots_compared = rows[0].get::<_, i64>(0) as u64;
    out.mismatches = rows[0].get::<_, i64>(1) as u64;
    let triple = |r: &postgres::Row, i: usize| -> Option<(Decimal, Decimal, i64)> {
        let imp: Option<Decimal> = r.get(i);
        Some((
            imp?,
            r.get(i + 1),
            r.get::<_, Option<i64>>(i + 2).unwrap_or(0),
        ))
    };
    out.examples = rows
        .iter()
        .map(|r| Mismatch {
            device_id: r.get(2),
            slot_start: r.get(3),
            channel: r.get(4),
            stored: triple(r, 5),
            expected: triple(r, 8),
        })
        .collect();
    Ok(out)
}

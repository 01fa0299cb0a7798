//! Writes interval records and moves ingest cursors.
//!
//! A page's rows, their 15-minute slots and the cursor move together in one
//! transaction. Rows go in with COPY through a temporary staging table and
//! `INSERT ... ON CONFLICT DO NOTHING`, which makes replays harmless.

use super::{partitions, slots};
use crate::shelly::emdata::{columns, Layout, Record};
use postgres::{GenericClient, Transaction};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PageOutcome {
    pub records_inserted: u64,
    pub records_present: u64,
    pub rows_inserted: u64,
}

fn column_list() -> String {
    format!(
        "device_id, channel, start_ts, end_ts, {}, source, meta",
        columns().collect::<Vec<_>>().join(", ")
    )
}

/// `YYYY-MM-DD HH:MM:SS+00` for COPY.
fn write_ts(buf: &mut String, ts: i64) {
    match chrono::DateTime::from_timestamp(ts, 0) {
        Some(t) => {
            let _ = write!(buf, "{}", t.format("%Y-%m-%d %H:%M:%S+00"));
        }
        None => buf.push_str("\\N"),
    }
}

/// Appends `s` as a COPY text field: backslash, tab, newline and carriage
/// return escaped, so no value can end a field or a row early.
fn push_field(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

/// Builds COPY text rows (one per record and channel) for a page. Every
/// text field is escaped (ids are validated too, but a field never trusts
/// that); values are the device's number text, validated by the page parser.
pub fn copy_rows(
    device_id: &str,
    source: &str,
    layout: &Layout,
    records: &[Record],
) -> (String, u64) {
    let mut buf = String::with_capacity(records.len() * layout.channels.len() * 200);
    let mut rows = 0;
    for r in records {
        for ch in &layout.channels {
            let has_values = ch.columns.iter().flatten().any(|i| r.values[*i].is_some())
                || ch.meta.iter().any(|(_, i)| r.values[*i].is_some());
            // The neutral row carries only currents; skip it when the
            // device has none (a meter without a neutral CT).
            if ch.channel == "N" && !has_values {
                continue;
            }
            push_field(&mut buf, device_id);
            buf.push('\t');
            push_field(&mut buf, &ch.channel);
            buf.push('\t');
            write_ts(&mut buf, r.ts);
            buf.push('\t');
            write_ts(&mut buf, r.ts.saturating_add(r.period));
            for col in ch.columns {
                buf.push('\t');
                match col.and_then(|i| r.values[i]) {
                    Some(text) => buf.push_str(text),
                    None => buf.push_str("\\N"),
                }
            }
            buf.push('\t');
            push_field(&mut buf, source);
            buf.push('\t');
            if ch.meta.is_empty() {
                buf.push_str("{}");
            } else {
                let meta: serde_json::Map<String, serde_json::Value> = ch
                    .meta
                    .iter()
                    .map(|(k, i)| {
                        let v = r.values[*i]
                            .and_then(|t| serde_json::from_str(t).ok())
                            .unwrap_or(serde_json::Value::Null);
                        (k.clone(), v)
                    })
                    .collect();
                push_field(&mut buf, &serde_json::Value::Object(meta).to_string());
            }
            buf.push('\n');
            rows += 1;
        }
    }
    (buf, rows)
}

fn copy_into(
    client: &mut impl GenericClient,
    table: &str,
    data: &str,
) -> Result<u64, postgres::Error> {
    let mut w = client.copy_in(&format!("COPY {table} ({}) FROM STDIN", column_list()))?;
    // Write errors surface as the server's error from finish().
    let _ = w.write_all(data.as_bytes());
    w.finish()
}

/// Writes one page's records and their 15-minute slots in one statement:
/// COPY into a temporary staging table, then `INSERT ... ON CONFLICT DO
/// NOTHING` (replays are harmless) feeding the slot sums of exactly the
/// rows it inserted (`db::slots`). The caller makes the monthly partitions
/// first, outside the transaction ([`ensure_partitions`]).
pub fn write_page(
    tx: &mut Transaction,
    device_id: &str,
    source: &str,
    layout: &Layout,
    records: &[Record],
) -> Result<PageOutcome, postgres::Error> {
    if records.is_empty() {
        return Ok(PageOutcome::default());
    }
    let (data, _) = copy_rows(device_id, source, layout, records);
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS energy_intervals_staging AS
             SELECT {} FROM energy_intervals WITH NO DATA;
         TRUNCATE energy_intervals_staging;
         SET LOCAL jit = off",
        column_list()
    ))?;
    copy_into(tx, "energy_intervals_staging", &data)?;
    let row = tx.query_one(
        &slots::insert_records_sql("energy_intervals_staging", &column_list()),
        &[],
    )?;
    let rows_inserted: i64 = row.get(0);
    let records_inserted: i64 = row.get(1);
    Ok(PageOutcome {
        records_inserted: records_inserted as u64,
        records_present: records.len() as u64 - records_inserted as u64,
        rows_inserted: rows_inserted as u64,
    })
}

/// Makes the monthly partitions of `energy_intervals` and `energy_slots`
/// that `records` need (before the page's transaction).
pub fn ensure_partitions(
    c: &mut postgres::Client,
    records: &[Record],
) -> Result<(), postgres::Error> {
    // The months the records fall in, not every month between the oldest
    // and the newest: a page with a record from years back makes one
    // month, not hundreds.
    let mut months = std::collections::BTreeSet::new();
    for r in records {
        for t in [r.ts, r.ts.saturating_add(r.period).saturating_sub(1)] {
            let d = crate::db::utc(t);
            months.insert((chrono::Datelike::year(&d), chrono::Datelike::month(&d), d));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (y, m, at) in months {
        if seen.insert((y, m)) {
            partitions::ensure(c, "energy_intervals", at, at)?;
            partitions::ensure(c, "energy_slots", at, at)?;
        }
    }
    Ok(())
}

/// The cursor of a device's data component (unix seconds).
pub fn read_cursor(
    client: &mut impl GenericClient,
    device_id: &str,
    component: &str,
) -> Result<Option<i64>, postgres::Error> {
    let row = client.query_opt(
        "SELECT EXTRACT(EPOCH FROM next_ts)::bigint FROM ingest_cursors WHERE device_id = $1 AND component = $2",
        &[&device_id, &component],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// Moves the cursor forward (never backwards) to `next_ts`.
pub fn advance_cursor(
    client: &mut impl GenericClient,
    device_id: &str,
    component: &str,
    next_ts: i64,
    period_s: Option<i32>,
) -> Result<(), postgres::Error> {
    client.execute(
        "INSERT INTO ingest_cursors (device_id, component, next_ts, period_s, updated_at)
         VALUES ($1, $2, to_timestamp($3), $4, now())
         ON CONFLICT (device_id, component) DO UPDATE SET
             next_ts = GREATEST(ingest_cursors.next_ts, EXCLUDED.next_ts),
             period_s = COALESCE(EXCLUDED.period_s, ingest_cursors.period_s),
             updated_at = now()",
        &[&device_id, &component, &(next_ts as f64), &period_s],
    )?;
    Ok(())
}

/// After a backfill of [from, to): moves an existing cursor that lay inside
/// that range to `to`, since everything before `to` is now stored. A cursor
/// before `from` stays, so the hole between it and `from` is not skipped.
pub fn advance_cursor_within(
    client: &mut impl GenericClient,
    device_id: &str,
    component: &str,
    from: i64,
    to: i64,
) -> Result<u64, postgres::Error> {
    client.execute(
        "UPDATE ingest_cursors SET next_ts = to_timestamp($4), updated_at = now()
          WHERE device_id = $1 AND component = $2
            AND next_ts >= to_timestamp($3) AND next_ts < to_timestamp($4)",
        &[&device_id, &component, &(from as f64), &(to as f64)],
    )
}

/// An interval source: (device, component, the device's host, period).
pub type SourceRow = (String, String, Option<String>, Option<i64>);

/// Every interval source that may have records in [from, to): the cursors
/// (with their period) and the sources of stored records.
pub fn sources(
    client: &mut impl GenericClient,
    from: i64,
    to: i64,
) -> Result<Vec<SourceRow>, postgres::Error> {
    Ok(client
        .query(
            "SELECT c.device_id, c.component, d.host, c.period_s
               FROM ingest_cursors c JOIN devices d USING (device_id)
             UNION
             SELECT DISTINCT e.device_id, e.source, d.host, NULL::integer
               FROM energy_intervals e JOIN devices d USING (device_id)
              WHERE e.start_ts < to_timestamp($2) AND e.end_ts > to_timestamp($1)
             ORDER BY 1, 2",
            &[&(from as f64), &(to as f64)],
        )?
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get::<_, Option<i32>>(3).map(i64::from),
            )
        })
        .collect())
}

/// The distinct record spans a source stored overlapping [from, to).
pub fn stored_spans(
    client: &mut impl GenericClient,
    device_id: &str,
    source: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT DISTINCT EXTRACT(EPOCH FROM start_ts)::bigint, EXTRACT(EPOCH FROM end_ts)::bigint
               FROM energy_intervals
              WHERE device_id = $1 AND source = $2
                AND start_ts < to_timestamp($4) AND end_ts > to_timestamp($3)
              ORDER BY 1, 2",
            &[&device_id, &source, &(from as f64), &(to as f64)],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

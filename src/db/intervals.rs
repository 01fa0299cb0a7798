//! Writes interval records and moves ingest cursors.
//!
//! A page's rows, their 15-minute slots and the cursor move together in one
//! transaction. Rows go in with COPY through a temporary staging table and
//! `INSERT ... ON CONFLICT DO NOTHING`, which makes replays harmless.

use super::{partitions, slots};
use crate::shelly::emdata::{columns, Layout, Record};
use postgres::{GenericClient, Transaction};
use rust_decimal::Decimal;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PageOutcome {
    pub records_inserted: u64,
    pub records_present: u64,
    pub rows_inserted: u64,
    /// Written by the direct COPY (a new page), not the merge path.
    pub direct: bool,
}

fn column_list() -> String {
    format!(
        "device_id, channel, start_ts, end_ts, {}, source, meta",
        columns().collect::<Vec<_>>().join(", ")
    )
}

/// `YYYY-MM-DD HH:MM:SS+00` for COPY (`\N` outside chrono's range), written
/// digit by digit: the strftime machinery was a sixth of a page's CPU.
fn write_ts(buf: &mut String, ts: i64) {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::from_timestamp(ts, 0) else {
        buf.push_str("\\N");
        return;
    };
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(buf, "{}", t.format("%Y-%m-%d %H:%M:%S+00"));
        return;
    }
    let mut out = *b"0000-00-00 00:00:00+00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    buf.push_str(std::str::from_utf8(&out).unwrap_or("\\N"));
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

/// Whether a record has a row for this channel: the neutral row carries
/// only currents and is left out when the device has none (a meter without
/// a neutral CT). [`copy_rows`] and [`page_slots`] agree through this.
fn row_written(ch: &crate::shelly::emdata::ChannelLayout, r: &Record) -> bool {
    ch.channel != "N"
        || ch.columns.iter().flatten().any(|i| r.values[*i].is_some())
        || ch.meta.iter().any(|(_, i)| r.values[*i].is_some())
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
    // The same for every row of the page: escaped once.
    let mut device = String::new();
    push_field(&mut device, device_id);
    let mut src = String::new();
    push_field(&mut src, source);
    let (mut start, mut end) = (String::new(), String::new());
    for r in records {
        start.clear();
        write_ts(&mut start, r.ts);
        end.clear();
        write_ts(&mut end, r.ts.saturating_add(r.period));
        for ch in &layout.channels {
            if !row_written(ch, r) {
                continue;
            }
            buf.push_str(&device);
            buf.push('\t');
            push_field(&mut buf, &ch.channel);
            buf.push('\t');
            buf.push_str(&start);
            buf.push('\t');
            buf.push_str(&end);
            for col in ch.columns {
                buf.push('\t');
                match col.and_then(|i| r.values[i]) {
                    Some(text) => buf.push_str(text),
                    None => buf.push_str("\\N"),
                }
            }
            buf.push('\t');
            buf.push_str(&src);
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

/// Writes one page's records and their 15-minute slots, in the caller's
/// transaction (the caller makes the monthly partitions first, outside it:
/// [`ensure_partitions`]).
///
/// The usual page is new: no record of this device is stored in its time
/// range (the cursor moves forward). Its rows are then COPYed straight into
/// `energy_intervals` and its slots added from sums made here ([`page_slots`];
/// exact decimal sums, the same the SQL of `db::slots` makes). Anything else
/// (a replay, a backfill over stored days, a record crossing a slot, a
/// concurrent writer that stored some of the same records first: a unique
/// violation rolls the direct COPY back) takes the general path: COPY into
/// a temporary staging table, then `INSERT ... ON CONFLICT DO NOTHING`
/// feeding the slot sums of exactly the rows it inserted (`db::slots`).
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
    let (data, rows) = copy_rows(device_id, source, layout, records);
    // This transaction keeps the slots itself: not a foreign write
    // (sql/0020).
    tx.batch_execute("SET LOCAL shellyctl.slots_maintained = on")?;
    let first = records.iter().map(|r| r.ts).min().unwrap_or(0);
    let last = records.iter().map(|r| r.ts).max().unwrap_or(0);
    // Where the page's slots end (records reach up to a day past their
    // start): the hours to refresh (db::hours).
    let last_end = records
        .iter()
        .map(|r| r.ts.saturating_add(r.period.max(1)))
        .max()
        .unwrap_or(last);
    if let Some(slots) = page_slots(layout, records) {
        let fresh: bool = tx
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM energy_intervals
                  WHERE device_id = $1 AND channel = ANY($2) AND start_ts >= $3 AND start_ts <= $4)",
                &[
                    &device_id,
                    &layout.channels.iter().map(|c| c.channel.as_str()).collect::<Vec<_>>(),
                    &super::utc(first),
                    &super::utc(last),
                ],
            )?
            .get(0);
        if fresh {
            let mut sp = tx.savepoint("direct_page")?;
            let edges = [first.div_euclid(900) * 900, last.div_euclid(900) * 900];
            let direct = copy_into(&mut sp, "energy_intervals", &data)
                .and_then(|_| add_slots(&mut sp, device_id, &slots, edges));
            match direct {
                Ok(()) => {
                    sp.commit()?;
                    super::hours::refresh(tx, device_id, first, last_end)?;
                    return Ok(PageOutcome {
                        records_inserted: records.len() as u64,
                        records_present: 0,
                        rows_inserted: rows,
                        direct: true,
                    });
                }
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    sp.rollback()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
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
    super::hours::refresh(tx, device_id, first, last_end)?;
    Ok(PageOutcome {
        records_inserted: records_inserted as u64,
        records_present: records.len() as u64 - records_inserted as u64,
        rows_inserted: rows_inserted as u64,
        direct: false,
    })
}

/// One slot's sums: (slot start, channel) -> (import Wh, export Wh, seconds covered).
type SlotSums = std::collections::BTreeMap<(i64, String), (Decimal, Decimal, i64)>;

/// The 15-minute slot sums of a page's rows, as `db::slots` computes them,
/// when every record lies within one slot and every energy value is a plain
/// decimal; `None` otherwise (the SQL then shares records out pro rata).
/// Rows are the ones [`copy_rows`] writes (the neutral row only with values).
pub fn page_slots(layout: &Layout, records: &[Record]) -> Option<SlotSums> {
    use std::str::FromStr;
    let energy = |ch: &crate::shelly::emdata::ChannelLayout, r: &Record, field: usize| match ch
        .columns[field]
        .and_then(|i| r.values[i])
    {
        Some(text) => Decimal::from_str(text).map(Some).map_err(|_| ()),
        None => Ok(None),
    };
    let mut out = SlotSums::new();
    for r in records {
        let slot = r.ts.div_euclid(900) * 900;
        let end = r.ts.checked_add(r.period)?;
        if r.period <= 0 || end > slot + 900 {
            return None;
        }
        for ch in &layout.channels {
            if !row_written(ch, r) {
                continue;
            }
            let i = energy(ch, r, ENERGY).ok()?;
            let e = energy(ch, r, RETURNED).ok()?;
            let sums =
                out.entry((slot, ch.channel.clone()))
                    .or_insert((Decimal::ZERO, Decimal::ZERO, 0));
            sums.0 = sums.0.checked_add(i.unwrap_or_default())?;
            sums.1 = sums.1.checked_add(e.unwrap_or_default())?;
            sums.2 += r.period;
        }
    }
    Some(out)
}

/// `FIELDS` indexes of `energy_wh` and `returned_energy_wh`.
const ENERGY: usize = 0;
const RETURNED: usize = 2;

/// Adds a page's slot sums to `energy_slots`. The slots at the page's two
/// edges (`edges`: the first and the last record's slot) may hold records
/// of the pages before and after: they are added to (the upsert of
/// `db::slots`). The slots between can hold no other record (no record was
/// stored in the page's range), so they are new and go in by COPY; one that
/// exists anyway (slots another tool wrote) is a unique violation, and the
/// caller takes the merge path.
fn add_slots(
    c: &mut impl GenericClient,
    device_id: &str,
    slots: &SlotSums,
    edges: [i64; 2],
) -> Result<(), postgres::Error> {
    let (edge, inner): (Vec<_>, Vec<_>) = slots.iter().partition(|((s, _), _)| edges.contains(s));
    if !inner.is_empty() {
        let mut device = String::new();
        push_field(&mut device, device_id);
        let mut data = String::with_capacity(inner.len() * 80);
        for ((slot, channel), (i, e, covered)) in &inner {
            data.push_str(&device);
            data.push('\t');
            write_ts(&mut data, *slot);
            data.push('\t');
            push_field(&mut data, channel);
            let _ = writeln!(data, "\t{i}\t{e}\t{covered} seconds");
        }
        let mut w = c.copy_in(
            "COPY energy_slots (device_id, slot_start, channel, import_wh, export_wh, covered) FROM STDIN",
        )?;
        let _ = w.write_all(data.as_bytes());
        w.finish()?;
    }
    if edge.is_empty() {
        return Ok(());
    }
    let starts: Vec<_> = edge.iter().map(|((s, _), _)| super::utc(*s)).collect();
    let channels: Vec<&str> = edge.iter().map(|((_, c), _)| c.as_str()).collect();
    let imports: Vec<Decimal> = edge.iter().map(|(_, v)| v.0).collect();
    let exports: Vec<Decimal> = edge.iter().map(|(_, v)| v.1).collect();
    let covered: Vec<i64> = edge.iter().map(|(_, v)| v.2).collect();
    c.execute(
        "INSERT INTO energy_slots AS s (device_id, slot_start, channel, import_wh, export_wh, covered)
         SELECT $1, t.slot, t.channel, t.i, t.e, make_interval(secs => t.c)
           FROM unnest($2::timestamptz[], $3::text[], $4::numeric[], $5::numeric[], $6::bigint[])
                AS t(slot, channel, i, e, c)
         ON CONFLICT (device_id, slot_start, channel) DO UPDATE SET
             import_wh = s.import_wh + EXCLUDED.import_wh,
             export_wh = s.export_wh + EXCLUDED.export_wh,
             covered = s.covered + EXCLUDED.covered",
        &[&device_id, &starts, &channels, &imports, &exports, &covered],
    )?;
    Ok(())
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
         VALUES ($1, $2, $3::timestamptz, $4, now())
         ON CONFLICT (device_id, component) DO UPDATE SET
             next_ts = GREATEST(ingest_cursors.next_ts, EXCLUDED.next_ts),
             period_s = COALESCE(EXCLUDED.period_s, ingest_cursors.period_s),
             updated_at = now()",
        &[&device_id, &component, &super::utc(next_ts), &period_s],
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
        "UPDATE ingest_cursors SET next_ts = $4::timestamptz, updated_at = now()
          WHERE device_id = $1 AND component = $2
            AND next_ts >= $3::timestamptz AND next_ts < $4::timestamptz",
        &[&device_id, &component, &super::utc(from), &super::utc(to)],
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
              WHERE e.start_ts < $2::timestamptz AND e.end_ts > $1::timestamptz
             ORDER BY 1, 2",
            &[&super::utc(from), &super::utc(to)],
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
                AND start_ts < $4::timestamptz AND end_ts > $3::timestamptz
              ORDER BY 1, 2",
            &[&device_id, &source, &super::utc(from), &super::utc(to)],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

#[cfg(test)]
mod ts_tests {
    #[test]
    fn timestamps_are_written_as_chrono_formats_them() {
        for ts in [
            0,
            1,
            59,
            86_399,
            951_782_400,
            1_790_000_000,
            4_102_444_799,
            253_402_300_799,
            -1,
            -62_167_219_200,
        ] {
            let mut fast = String::new();
            super::write_ts(&mut fast, ts);
            let slow = chrono::DateTime::from_timestamp(ts, 0)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S+00")
                .to_string();
            assert_eq!(fast, slow, "{ts}");
        }
        let mut out = String::new();
        super::write_ts(&mut out, i64::MAX);
        assert_eq!(out, "\\N");
    }
}

//! Energy from `energy_intervals`, aggregated for reports.

use crate::tariff::cost::Span;
use chrono::{DateTime, Utc};
use postgres::GenericClient;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// Devices that have interval records in [from, to).
pub fn devices_with_data(
    client: &mut impl GenericClient,
    from: i64,
    to: i64,
) -> Result<Vec<String>, postgres::Error> {
    Ok(client
        .query(
            "SELECT d.device_id FROM devices d
              WHERE EXISTS (SELECT 1 FROM energy_intervals e
                             WHERE e.device_id = d.device_id AND e.start_ts >= $1 AND e.start_ts < $2)
              ORDER BY 1",
            &[&ts(from), &ts(to)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Imported/exported energy of phases A, B and C over [from, to), as spans:
/// records that lie inside one `bucket`-second slot are summed per slot in
/// the database; records crossing a slot boundary (or the range's edges)
/// come back one by one, to be split pro rata. Also returns, per device,
/// the seconds of [from, to) that records cover (from phase A).
pub fn spans(
    client: &mut impl GenericClient,
    devices: &[String],
    from: i64,
    to: i64,
    bucket: i64,
) -> Result<(Vec<Span>, BTreeMap<String, i64>), postgres::Error> {
    let mut covered: BTreeMap<String, i64> = devices.iter().map(|d| (d.clone(), 0)).collect();
    let mut by_slot: BTreeMap<i64, Span> = BTreeMap::new();
    // `bucket` is our own integer, safe to put in the SQL text; date_bin
    // keeps the slot arithmetic in integer time (EXTRACT would be NUMERIC).
    let slot = |col: &str| format!("date_bin('{bucket} seconds', {col}, timestamptz 'epoch')");
    let same_slot = format!(
        "{} = {}",
        slot("start_ts"),
        slot("end_ts - interval '1 microsecond'")
    );
    let rows = client.query(
        &format!(
            "SELECT device_id, EXTRACT(EPOCH FROM {})::bigint,
                    COALESCE(sum(energy_wh), 0), COALESCE(sum(returned_energy_wh), 0),
                    COALESCE(sum(EXTRACT(EPOCH FROM end_ts - start_ts)) FILTER (WHERE channel = 'A'), 0)::bigint
               FROM energy_intervals
              WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C')
                AND start_ts >= $2 AND end_ts <= $3 AND {same_slot}
              GROUP BY 1, {}",
            slot("start_ts"),
            slot("start_ts")
        ),
        &[&devices, &ts(from), &ts(to)],
    )?;
    for r in &rows {
        let (device, slot): (String, i64) = (r.get(0), r.get(1));
        let (imp, exp): (Decimal, Decimal) = (r.get(2), r.get(3));
        *covered.entry(device).or_default() += r.get::<_, i64>(4);
        let s = by_slot.entry(slot).or_insert(Span {
            start: slot,
            end: slot + bucket,
            import_wh: Decimal::ZERO,
            export_wh: Decimal::ZERO,
        });
        s.import_wh += imp;
        s.export_wh += exp;
    }
    let mut spans: Vec<Span> = by_slot.into_values().collect();
    let rows = client.query(
        &format!(
            "SELECT device_id, EXTRACT(EPOCH FROM start_ts)::bigint, EXTRACT(EPOCH FROM end_ts)::bigint,
                    COALESCE(sum(energy_wh), 0), COALESCE(sum(returned_energy_wh), 0), bool_or(channel = 'A')
               FROM energy_intervals
              WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C')
                AND start_ts < $3 AND end_ts > $2 AND start_ts > $2 - interval '1 day'
                AND NOT (start_ts >= $2 AND end_ts <= $3 AND {same_slot})
              GROUP BY 1, 2, 3"
        ),
        &[&devices, &ts(from), &ts(to)],
    )?;
    for r in &rows {
        let (device, start, end): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if r.get::<_, bool>(5) {
            *covered.entry(device).or_default() += end.min(to) - start.max(from);
        }
        spans.push(Span {
            start,
            end,
            import_wh: r.get(3),
            export_wh: r.get(4),
        });
    }
    spans.sort_by_key(|s| s.start);
    Ok((spans, covered))
}

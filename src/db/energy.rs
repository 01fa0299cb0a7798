//! Energy from `energy_intervals`, aggregated for reports.

use crate::tariff::balance::MeterSpan;
use postgres::GenericClient;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

use super::utc as ts;

/// Devices that have interval records in [from, to).
pub fn devices_with_data(
    client: &mut impl GenericClient,
    from: i64,
    to: i64,
) -> Result<Vec<String>, postgres::Error> {
    Ok(client
        .query(
            // LIMIT 1 per device: as a semi-join the planner may read and
            // group every record of the range (seconds on a year of 50
            // meters) instead of probing the index once per device.
            //
            // The meters are the `devices` rows and every device id the
            // records hold (records written by another tool, or restored
            // without `devices`, are billed too, never left out): the ids
            // found by a loose index scan, one index probe per id.
            "WITH RECURSIVE ids(device_id) AS (
                 (SELECT device_id FROM energy_intervals ORDER BY device_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT e.device_id FROM energy_intervals e
                          WHERE e.device_id > ids.device_id ORDER BY e.device_id LIMIT 1)
                   FROM ids WHERE ids.device_id IS NOT NULL),
             meters AS (SELECT device_id FROM devices
                        UNION SELECT device_id FROM ids WHERE device_id IS NOT NULL)
             SELECT d.device_id FROM meters d,
                    LATERAL (SELECT 1 FROM energy_intervals e
                              WHERE e.device_id = d.device_id AND e.start_ts >= $1 AND e.start_ts < $2
                              LIMIT 1) x
              ORDER BY 1",
            &[&ts(from), &ts(to)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Session settings for report queries: they aggregate hundreds of
/// thousands of rows, where JIT compilation costs more than it saves, a
/// small work_mem makes the hash aggregate spill, and parallel workers pay.
/// Grouping by slot (the partition key) goes partition by partition, so
/// each month's groups fit in memory (a year of 50 meters' slots spilled).
pub fn tune_for_reports(client: &mut impl GenericClient) -> Result<(), postgres::Error> {
    client.batch_execute(
        "SET jit = off; SET work_mem = '64MB'; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
         SET enable_partitionwise_aggregate = on",
    )
}

/// Imported/exported energy of phases A, B and C over [from, to), per
/// meter (`MeterSpan::meter` indexes `devices`), as spans: records that lie
/// inside one `bucket`-second slot are summed per slot in the database;
/// records crossing a slot boundary (or the range's edges) come back one by
/// one, to be split pro rata. With `per_record`, the phases are first
/// netted within each record (import = the positive remainder, export = the
/// negative one). Also returns, per device, the seconds of [from, to) that
/// records cover (from phase A, or from the records when netted).
///
/// With 15-minute slots and a range on quarter hours, the sums come from
/// `energy_slots` (written with the records in the same statement by every
/// writer, `db::slots`; records crossing a slot already shared pro rata). Otherwise long ranges are read from the records in month-sized
/// chunks on `url`'s connections, two at a time; each record belongs to the
/// chunk its start falls in.
pub fn spans(
    url: &str,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
    bucket: i64,
    per_record: bool,
) -> anyhow::Result<(Vec<MeterSpan>, BTreeMap<String, i64>)> {
    let index: BTreeMap<&str, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    if !per_record && bucket == 900 && from % 900 == 0 && to % 900 == 0 {
        let mut client = super::connect(url)?;
        tune_for_reports(&mut client)?;
        return slot_spans(&mut client, devices, pairs, &index, from, to);
    }
    const CHUNK: i64 = 31 * 86_400;
    // Chunk edges on whole UTC days, so a slot never spans two chunks.
    let mut edges = vec![from - 86_400];
    let mut t = (from / 86_400 + 1) * 86_400;
    while t + CHUNK / 2 < to {
        t += CHUNK;
        edges.push(t.min(to));
    }
    if *edges.last().expect("edge") < to {
        edges.push(to);
    }
    let chunks: Vec<(i64, i64)> = edges.windows(2).map(|w| (w[0], w[1])).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = chunks.len().clamp(1, 2);
    let results: Vec<anyhow::Result<Vec<ChunkRow>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<ChunkRow>> {
                    let mut client = super::connect(url)?;
                    tune_for_reports(&mut client)?;
                    let mut rows = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(&(cf, ct)) = chunks.get(i) else {
                            break;
                        };
                        rows.extend(chunk_rows(
                            &mut client,
                            devices,
                            pairs,
                            (from, to),
                            (cf, ct),
                            bucket,
                            per_record,
                        )?);
                    }
                    Ok(rows)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("report worker"))
            .collect()
    });
    let mut covered: BTreeMap<String, (i64, i32)> =
        devices.iter().map(|d| (d.clone(), (0, 0))).collect();
    let mut out = Vec::new();
    for rows in results {
        for r in rows? {
            let c = covered.entry(r.device.clone()).or_default();
            c.0 += r.covered_s;
            c.1 |= r.channels;
            out.push(MeterSpan {
                meter: index[r.device.as_str()],
                start: r.start,
                end: r.end,
                import_wh: r.import_wh,
                export_wh: r.export_wh,
            });
        }
    }
    out.sort_by_key(|s| (s.start, s.end, s.meter));
    Ok((out, per_device_covered(covered)))
}

/// Measured energy per device and phase over [from, to): what the meter
/// saw, before any balancing.
pub fn measured(
    client: &mut impl GenericClient,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<(String, String, Decimal, Decimal)>> {
    let sql = if from % 900 == 0 && to % 900 == 0 {
        "SELECT device_id, channel, COALESCE(sum(import_wh), 0), COALESCE(sum(export_wh), 0)
           FROM energy_slots
          WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND slot_start >= $2 AND slot_start < $3
            AND (device_id || '/' || channel) = ANY($4)
          GROUP BY 1, 2 ORDER BY 1, 2"
    } else {
        "SELECT device_id, channel, COALESCE(sum(energy_wh), 0), COALESCE(sum(returned_energy_wh), 0)
           FROM energy_intervals
          WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND start_ts >= $2 AND start_ts < $3
            AND (device_id || '/' || channel) = ANY($4)
          GROUP BY 1, 2 ORDER BY 1, 2"
    };
    client
        .query(sql, &[&devices, &ts(from), &ts(to), &pairs])?
        .iter()
        .map(|r| {
            let (device, phase): (String, String) = (r.get(0), r.get(1));
            let at = || format!("{device}, phase {phase}");
            Ok((
                device.clone(),
                phase.clone(),
                super::stored_energy(r, 2, at)?,
                super::stored_energy(r, 3, at)?,
            ))
        })
        .collect()
}

/// Billed import per local month (first day) over [from, to), summed over
/// `devices`, as measured or, with `per_record`, with the phases netted
/// within each record (which needs the records): the capacity-fee tier's
/// basis; a year's look-back returns twelve rows. `tz` is an IANA name
/// (from a validated tariff). Hourly balancing nets in one place,
/// `tariff::balance`, over `hourly_spans`.
pub fn monthly_import(
    client: &mut impl GenericClient,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
    tz: &str,
    per_record: bool,
) -> anyhow::Result<Vec<(chrono::NaiveDate, Decimal)>> {
    let sql = if per_record {
        "SELECT (date_trunc('month', start_ts, $4) AT TIME ZONE $4)::date, sum(GREATEST(n, 0))
           FROM (SELECT device_id, start_ts, end_ts,
                        sum(COALESCE(energy_wh, 0) - COALESCE(returned_energy_wh, 0)) AS n
                   FROM energy_intervals
                  WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND start_ts >= $2 AND start_ts < $3
                    AND (device_id || '/' || channel) = ANY($5)
                  GROUP BY 1, 2, 3) r
          GROUP BY 1 ORDER BY 1"
    } else {
        "SELECT (date_trunc('month', slot_start, $4) AT TIME ZONE $4)::date, sum(import_wh)
           FROM energy_slots
          WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND slot_start >= $2 AND slot_start < $3
            AND (device_id || '/' || channel) = ANY($5)
          GROUP BY 1 ORDER BY 1"
    };
    client
        .query(sql, &[&devices, &ts(from), &ts(to), &tz, &pairs])?
        .iter()
        .map(|r| {
            let month: chrono::NaiveDate = r.get(0);
            Ok((
                month,
                super::stored_energy(r, 1, || format!("the month {month}"))?,
            ))
        })
        .collect()
}

/// Imported and exported Wh per phase and local period (`unit` is `hour`
/// or `day`, our own text) over [from, to): (period start, phase, import,
/// export). date_trunc in the zone keeps 23- and 25-hour days and repeated
/// hours apart. A record across a period's edge or the range's is shared
/// pro rata by time, as the slots `report costs` bills share it (so the
/// two reports' totals agree); a record inside one period goes whole.
pub fn per_period(
    client: &mut impl GenericClient,
    pairs: &[String],
    from: i64,
    to: i64,
    unit: &'static str,
    tz: &str,
) -> anyhow::Result<Vec<(i64, String, Decimal, Decimal)>> {
    debug_assert!(unit == "hour" || unit == "day");
    // The next period's start after a period start `ps.p`: an hour later,
    // or the next local midnight (26 h after one is always in the next
    // local day, days being 23 to 25 hours).
    let (next, step) = if unit == "hour" {
        ("ps.p + interval '1 hour'", 3600)
    } else {
        ("date_trunc('day', ps.p + interval '26 hours', $4)", 86_400)
    };
    let max_record = super::slots::MAX_RECORD;
    let filter = format!(
        "device_id = ANY($5) AND device_id || '/' || channel = ANY($1)
         AND channel IN ('A', 'B', 'C') AND start_ts < $3 AND end_ts > $2
         AND start_ts > $2 - interval '{max_record}'"
    );
    // Inside one UTC quarter hour, hence inside one local hour and day (every
    // zone's offset is a multiple of 15 minutes): the record goes whole.
    // Cheap (no time zone), and true of every record a meter sends; the
    // rest are split by the zone's periods.
    let whole = "date_bin('15 minutes', start_ts, timestamptz 'epoch')
                 = date_bin('15 minutes', end_ts - interval '1 microsecond', timestamptz 'epoch')";
    client
        .query(
            &format!(
                "WITH pieces AS (
                     SELECT date_trunc('{unit}', start_ts, $4) AS p, channel,
                            energy_wh AS i, returned_energy_wh AS e
                       FROM energy_intervals
                      WHERE {filter} AND start_ts >= $2 AND end_ts <= $3 AND {whole}
                     UNION ALL
                     SELECT q.p, r.channel,
                            r.energy_wh * q.secs / r.dur, r.returned_energy_wh * q.secs / r.dur
                       FROM (SELECT channel, start_ts, end_ts, energy_wh, returned_energy_wh,
                                    EXTRACT(EPOCH FROM end_ts - start_ts) AS dur
                               FROM energy_intervals
                              WHERE {filter} AND NOT (start_ts >= $2 AND end_ts <= $3 AND {whole})) r,
                            LATERAL (
                                SELECT ps.p, EXTRACT(EPOCH FROM LEAST(r.end_ts, $3, {next})
                                                      - GREATEST(r.start_ts, $2, ps.p)) AS secs
                                  FROM (SELECT DISTINCT date_trunc('{unit}',
                                               GREATEST(r.start_ts, $2) + k * interval '1 {unit}', $4) AS p
                                          FROM generate_series(0, (r.dur / {step})::int + 2) k) ps) q
                      WHERE q.secs > 0)
                 SELECT EXTRACT(EPOCH FROM p)::bigint, channel, COALESCE(sum(i), 0), COALESCE(sum(e), 0)
                   FROM pieces GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            &[&pairs, &ts(from), &ts(to), &tz, &devices_of(pairs)],
        )?
        .iter()
        .map(|r| {
            let (t, ch): (i64, String) = (r.get(0), r.get(1));
            let at = || format!("phase {ch} at {}", ts(t));
            Ok((
                t,
                ch.clone(),
                super::stored_energy(r, 2, at)?,
                super::stored_energy(r, 3, at)?,
            ))
        })
        .collect()
}

/// Net Wh (import − export) of each record per phase over [from, to), for
/// the load curve: (phase, start, length in seconds, net Wh).
pub fn net_per_record(
    client: &mut impl GenericClient,
    pairs: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<(String, i64, i64, Decimal)>> {
    // The billed channels only (`billing::meters`): a PV or sub-meter
    // channel of a meter with channel roles is not drawn as the grid's.
    client
        .query(
            "SELECT channel, EXTRACT(EPOCH FROM start_ts)::bigint, EXTRACT(EPOCH FROM end_ts - start_ts)::bigint,
                    sum(COALESCE(energy_wh, 0) - COALESCE(returned_energy_wh, 0))
               FROM energy_intervals
              WHERE device_id = ANY($1) AND (device_id || '/' || channel) = ANY($4)
                AND start_ts >= $2 AND start_ts < $3
              GROUP BY 1, 2, 3 ORDER BY 1, 2",
            &[&devices_of(pairs), &ts(from), &ts(to), &pairs],
        )?
        .iter()
        .map(|r| {
            let (ch, start, len): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let wh = super::stored_energy(r, 3, || format!("phase {ch} at {}", ts(start)))?;
            Ok((ch, start, len, wh))
        })
        .collect()
}

/// Per-slot sums from `energy_slots` over [from, to) (quarter-hour aligned).
fn slot_spans(
    client: &mut postgres::Client,
    devices: &[String],
    pairs: &[String],
    index: &BTreeMap<&str, usize>,
    from: i64,
    to: i64,
) -> anyhow::Result<(Vec<MeterSpan>, BTreeMap<String, i64>)> {
    let rows = client.query(
        // Covered channel-seconds and which channels (a bit each): the
        // device's seconds covered are averaged over the channels it has
        // slots of in the range (`per_device_covered`).
        &format!("SELECT device_id, EXTRACT(EPOCH FROM slot_start)::bigint, sum(import_wh), sum(export_wh),
                COALESCE(EXTRACT(EPOCH FROM sum(covered)), 0)::bigint, bit_or({CHANNEL_BIT})
           FROM energy_slots
          WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND slot_start >= $2 AND slot_start < $3
            AND (device_id || '/' || channel) = ANY($4)
          GROUP BY device_id, slot_start"),
        &[&devices, &ts(from), &ts(to), &pairs],
    )?;
    let mut covered: BTreeMap<String, (i64, i32)> =
        devices.iter().map(|d| (d.clone(), (0, 0))).collect();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let (device, slot): (&str, i64) = (r.get(0), r.get(1));
        let c = covered.entry(device.to_string()).or_default();
        c.0 += r.get::<_, i64>(4);
        c.1 |= r.get::<_, i32>(5);
        let at = || format!("{device} at {}", ts(slot));
        out.push(MeterSpan {
            meter: index[device],
            start: slot,
            end: slot + 900,
            import_wh: super::stored_energy(r, 2, at)?,
            export_wh: super::stored_energy(r, 3, at)?,
        });
    }
    // Sorted here: in the database the sort of a year of slots spilled.
    out.sort_by_key(|s| (s.start, s.end, s.meter));
    Ok((out, per_device_covered(covered)))
}

/// The bit of a phase in the channel masks (`bit_or` over a group).
const CHANNEL_BIT: &str = "(CASE channel WHEN 'A' THEN 1 WHEN 'B' THEN 2 ELSE 4 END)";

/// Per device: the seconds covered from its covered channel-seconds and
/// the mask of the channels it has records of in the range: a channel
/// missing for some hours counts them as not covered (averaging over the
/// channels present in each hour would call them covered).
fn per_device_covered(c: BTreeMap<String, (i64, i32)>) -> BTreeMap<String, i64> {
    c.into_iter()
        .map(|(d, (s, mask))| (d, s / i64::from(mask.count_ones().max(1))))
        .collect()
}

struct ChunkRow {
    device: String,
    start: i64,
    end: i64,
    import_wh: Decimal,
    export_wh: Decimal,
    /// Covered channel-seconds.
    covered_s: i64,
    /// The channels' bits.
    channels: i32,
}

/// Records starting in [cf, ct), for the report range [from, to).
fn chunk_rows(
    client: &mut postgres::Client,
    devices: &[String],
    pairs: &[String],
    (from, to): (i64, i64),
    (cf, ct): (i64, i64),
    bucket: i64,
    per_record: bool,
) -> anyhow::Result<Vec<ChunkRow>> {
    // A record inside one slot (and inside the range) is grouped by its
    // slot; any other record by its own span, to be split pro rata.
    // `bucket` is our own integer, safe in the SQL text; date_bin keeps the
    // slot arithmetic in integer time. Netted records count as phase A,
    // covering as many channel-seconds as they have channels (`weight`).
    let filter = "device_id = ANY($1) AND channel IN ('A', 'B', 'C')
                  AND start_ts >= $4 AND start_ts < $5 AND start_ts < $3 AND end_ts > $2
                  AND (device_id || '/' || channel) = ANY($6)";
    let source = if per_record {
        format!(
            "SELECT device_id, 'A'::text AS channel, start_ts, end_ts,
                    GREATEST(n, 0) AS energy_wh, GREATEST(-n, 0) AS returned_energy_wh, weight, mask
               FROM (SELECT device_id, start_ts, end_ts,
                            sum(COALESCE(energy_wh, 0) - COALESCE(returned_energy_wh, 0)) AS n,
                            count(*) AS weight, bit_or({CHANNEL_BIT}) AS mask
                       FROM energy_intervals WHERE {filter} GROUP BY 1, 2, 3) rec"
        )
    } else {
        format!(
            "SELECT device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh,
                    1 AS weight, {CHANNEL_BIT} AS mask
               FROM energy_intervals WHERE {filter}"
        )
    };
    let rows = client.query(
        &format!(
            "WITH r AS (
                 SELECT device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, weight, mask,
                        date_bin('{bucket} seconds', start_ts, timestamptz 'epoch') AS slot,
                        date_bin('{bucket} seconds', start_ts, timestamptz 'epoch')
                            = date_bin('{bucket} seconds', end_ts - interval '1 microsecond', timestamptz 'epoch')
                          AND start_ts >= $2 AND end_ts <= $3 AS inside
                   FROM ({source}) src)
             SELECT device_id,
                    EXTRACT(EPOCH FROM CASE WHEN inside THEN slot ELSE start_ts END)::bigint,
                    EXTRACT(EPOCH FROM CASE WHEN inside THEN slot + interval '{bucket} seconds' ELSE end_ts END)::bigint,
                    COALESCE(sum(energy_wh), 0), COALESCE(sum(returned_energy_wh), 0),
                    COALESCE(EXTRACT(EPOCH FROM sum((LEAST(end_ts, $3) - GREATEST(start_ts, $2)) * weight)), 0)::bigint,
                    bit_or(mask)
               FROM r
              GROUP BY device_id, inside, CASE WHEN inside THEN slot ELSE start_ts END,
                       CASE WHEN inside THEN slot + interval '{bucket} seconds' ELSE end_ts END"
        ),
        &[&devices, &ts(from), &ts(to), &ts(cf), &ts(ct), &pairs],
    )?;
    rows.iter()
        .map(|r| {
            let (device, start): (String, i64) = (r.get(0), r.get(1));
            let at = || format!("{device} at {}", ts(start));
            Ok(ChunkRow {
                import_wh: super::stored_energy(r, 3, at)?,
                export_wh: super::stored_energy(r, 4, at)?,
                device,
                start,
                end: r.get(2),
                covered_s: r.get(5),
                channels: r.get(6),
            })
        })
        .collect()
}

/// The devices of `device/channel` pairs (for an index condition beside
/// the pair filter).
pub fn devices_of(pairs: &[String]) -> Vec<String> {
    let mut d: Vec<String> = pairs
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    d.sort();
    d.dedup();
    d
}

/// Seconds of [from, to) the records of each `device/channel` pair cover,
/// per local month (from the slots' `covered`).
pub fn covered_by_month(
    client: &mut impl GenericClient,
    pairs: &[String],
    from: i64,
    to: i64,
    tz: chrono_tz::Tz,
) -> Result<BTreeMap<(chrono::NaiveDate, String), i64>, postgres::Error> {
    use chrono::{Datelike, TimeZone};
    // The local months' UTC starts, computed here: bucketing each slot by
    // them (width_bucket) costs half of a per-row date_trunc in the zone.
    let local = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .with_timezone(&tz)
            .date_naive()
    };
    let start_of = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map_or(0, |t| t.timestamp())
    };
    let first = local(from);
    let mut months = vec![first.with_day(1).expect("day 1")];
    while start_of(*months.last().expect("month")) < to {
        let next = months
            .last()
            .expect("month")
            .checked_add_months(chrono::Months::new(1));
        match next {
            Some(n) => months.push(n),
            None => break,
        }
    }
    let bounds: Vec<chrono::DateTime<chrono::Utc>> =
        months.iter().map(|m| ts(start_of(*m))).collect();
    Ok(client
        .query(
            "SELECT width_bucket(slot_start, $4::timestamptz[]),
                    device_id || '/' || channel, EXTRACT(EPOCH FROM sum(covered))::bigint
               FROM energy_slots
              WHERE device_id = ANY($5) AND device_id || '/' || channel = ANY($1)
                AND slot_start >= $2 AND slot_start < $3
              GROUP BY 1, 2",
            &[&pairs, &ts(from), &ts(to), &bounds, &devices_of(pairs)],
        )?
        .iter()
        .filter_map(|r| {
            // Bucket i: from bounds[i - 1] to bounds[i].
            let i: i32 = r.get(0);
            let month = *months.get(usize::try_from(i).ok()?.checked_sub(1)?)?;
            Some(((month, r.get(1)), r.get(2)))
        })
        .collect())
}

/// Local hours (`tz`) of [from, to) in which the records of `device` (its
/// best covered billed channel) cover some but not all of the hour: unix
/// starts, oldest first. Hours without any record are not listed.
pub fn partly_covered_hours(
    client: &mut impl GenericClient,
    device: &str,
    pairs: &[String],
    from: i64,
    to: i64,
    tz: &str,
) -> Result<Vec<i64>, postgres::Error> {
    Ok(client
        .query(
            "SELECT EXTRACT(EPOCH FROM h)::bigint FROM (
                 SELECT date_trunc('hour', slot_start, $4) AS h, channel,
                        sum(EXTRACT(EPOCH FROM covered)) AS c
                   FROM energy_slots
                  WHERE device_id = $1 AND device_id || '/' || channel = ANY($5)
                    AND slot_start >= $2 AND slot_start < $3
                  GROUP BY 1, 2) x
              GROUP BY h HAVING max(c) < 3600 ORDER BY 1",
            &[&device, &ts(from), &ts(to), &tz, &pairs],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The first slot of the billed `device/channel` pairs before `before`
/// (unix), if any: where a history that carries credits forward starts.
pub fn first_slot(
    client: &mut impl GenericClient,
    pairs: &[String],
    before: i64,
) -> Result<Option<i64>, postgres::Error> {
    let devices = devices_of(pairs);
    // Per device its first slot (the primary key's order), then the least.
    let row = client.query_one(
        "SELECT min(f) FROM (
             SELECT (SELECT EXTRACT(EPOCH FROM slot_start)::bigint FROM energy_slots s
                      WHERE s.device_id = d AND s.device_id || '/' || s.channel = ANY($1)
                        AND s.slot_start < $3
                      ORDER BY s.slot_start LIMIT 1) AS f
               FROM unnest($2::text[]) AS d) x",
        &[&pairs, &devices, &super::utc(before)],
    )?;
    Ok(row.get(0))
}

/// Per billed meter and UTC hour of [from, to): import and export Wh
/// summed over its billed channels from the slots (sums only: the netting
/// is `tariff::balance`'s). `meter` indexes `devices`.
pub fn hourly_spans(
    client: &mut impl GenericClient,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
) -> Result<Vec<MeterSpan>, postgres::Error> {
    let index: BTreeMap<&str, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let rows = client.query(
        "SELECT device_id, EXTRACT(EPOCH FROM date_bin('1 hour', slot_start, timestamptz 'epoch'))::bigint,
                sum(import_wh), sum(export_wh)
           FROM energy_slots
          WHERE device_id = ANY($1) AND (device_id || '/' || channel) = ANY($2)
            AND slot_start >= $3 AND slot_start < $4
          GROUP BY 1, 2",
        &[&devices, &pairs, &super::utc(from), &super::utc(to)],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let start: i64 = r.get(1);
            Some(MeterSpan {
                meter: *index.get(r.get::<_, &str>(0))?,
                start,
                end: start + 3600,
                import_wh: r.get(2),
                export_wh: r.get(3),
            })
        })
        .collect())
}

//! Energy per UTC hour (`energy_hours`, sql/0023): per device, channel and
//! UTC day, the 24 hours' sums of the 15-minute `energy_slots`. Reports over
//! months and years read one row a day per channel instead of 96 slots.
//!
//! Kept by the slots' own writers, in their transaction: an ingest page
//! refreshes the days it touched from their slots ([`refresh`]), `slots
//! rebuild` recomputes a range ([`rebuild`]) and `slots check` compares
//! ([`check`]). Each is a recomputation from `energy_slots` by the one SQL
//! function `shellyctl_hours_from_slots`, never a running delta, so the
//! hours cannot drift from the slots whoever wrote them; other writers of
//! `energy_intervals` are noted (sql/0020) and reports refuse until a
//! rebuild, as for the slots.

use super::scope::Scope;
use super::utc;
use crate::tariff::balance::MeterSpan;
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use postgres::GenericClient;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

const DAY: i64 = 86_400;

/// The UTC midnight at or before `t`.
fn day_floor(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// The UTC midnight at or after `t`.
fn day_ceil(t: i64) -> i64 {
    day_floor(t + DAY - 1)
}

/// Recomputes from the slots the hours of `device` on the UTC days that
/// [first, last_end) touches, in the writer's transaction, after its slots
/// are written. A transaction lock per device orders two writers of the
/// same device: the second recomputes after the first committed, so it
/// sees both pages' slots (without it, each could recompute a day from a
/// snapshot that misses the other's slots, and the last to commit would
/// win with a sum short of one page).
pub fn refresh(
    c: &mut impl GenericClient,
    device: &str,
    first: i64,
    last_end: i64,
) -> Result<(), postgres::Error> {
    c.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::lock_key(&format!("hours/{device}"))],
    )?;
    c.execute(
        "INSERT INTO energy_hours AS h
         SELECT * FROM shellyctl_hours_from_slots(ARRAY[$1::text], $2, $3)
         ON CONFLICT (device_id, day, channel) DO UPDATE SET
             import_wh = EXCLUDED.import_wh, export_wh = EXCLUDED.export_wh, covered_s = EXCLUDED.covered_s",
        &[
            &device,
            &utc(day_floor(first)),
            &utc(day_ceil(last_end.max(first + 1))),
        ],
    )?;
    Ok(())
}

/// The scope widened to whole UTC days (`None` stays unbounded).
fn days(scope: &Scope) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        scope.from.map(|t| utc(day_floor(t.timestamp()))),
        scope.to.map(|t| {
            utc(day_ceil(
                t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0),
            ))
        }),
    )
}

/// The devices of a scope as the SQL function's argument (NULL: all).
fn devices(scope: &Scope) -> Option<Vec<String>> {
    (!scope.devices.is_empty()).then(|| scope.devices.clone())
}

/// Recomputes the hours of the scope's UTC days from the slots, in the
/// caller's transaction (the slots' rebuild, after its slots): the days'
/// rows are deleted and written again. Returns the rows written.
pub fn rebuild(c: &mut impl GenericClient, scope: &Scope) -> Result<u64, postgres::Error> {
    let (lo, hi) = days(scope);
    let dev = devices(scope);
    c.execute(
        "DELETE FROM energy_hours
          WHERE ($1::text[] IS NULL OR device_id = ANY($1))
            AND ($2::timestamptz IS NULL OR day >= ($2 AT TIME ZONE 'UTC')::date)
            AND ($3::timestamptz IS NULL OR day < ($3 AT TIME ZONE 'UTC')::date)",
        &[&dev, &lo, &hi],
    )?;
    c.execute(
        "INSERT INTO energy_hours
         SELECT * FROM shellyctl_hours_from_slots($1::text[], COALESCE($2::timestamptz, '-infinity'), COALESCE($3::timestamptz, 'infinity'))",
        &[&dev, &lo, &hi],
    )
}

/// One day row of `energy_hours` that differs from its slots.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct HourMismatch {
    pub device_id: String,
    pub day: NaiveDate,
    pub channel: String,
    /// Whether the row is stored / computed from the slots.
    pub stored: bool,
    pub expected: bool,
}

/// Compares the stored hours of the scope's UTC days with their slots:
/// (rows compared, rows that differ, the first `limit` of them).
pub fn check(
    c: &mut impl GenericClient,
    scope: &Scope,
    limit: i64,
) -> Result<(u64, u64, Vec<HourMismatch>), postgres::Error> {
    let (lo, hi) = days(scope);
    let rows = c.query(
        "WITH want AS (SELECT * FROM shellyctl_hours_from_slots($1::text[], COALESCE($2::timestamptz, '-infinity'), COALESCE($3::timestamptz, 'infinity'))),
              have AS (SELECT device_id, channel, day, import_wh, export_wh, covered_s FROM energy_hours
                        WHERE ($1::text[] IS NULL OR device_id = ANY($1))
                          AND ($2::timestamptz IS NULL OR day >= ($2 AT TIME ZONE 'UTC')::date)
                          AND ($3::timestamptz IS NULL OR day < ($3 AT TIME ZONE 'UTC')::date)),
              cmp AS (
                 SELECT coalesce(h.device_id, w.device_id) AS device_id, coalesce(h.day, w.day) AS day,
                        coalesce(h.channel, w.channel) AS channel, h.day IS NOT NULL AS stored,
                        w.day IS NOT NULL AS expected,
                        (h.import_wh, h.export_wh, h.covered_s) IS DISTINCT FROM (w.import_wh, w.export_wh, w.covered_s) AS differs
                   FROM have h FULL JOIN want w USING (device_id, channel, day))
         SELECT (SELECT count(*) FROM cmp), (SELECT count(*) FROM cmp WHERE differs),
                device_id, day, channel, stored, expected
           FROM cmp WHERE differs ORDER BY device_id, day, channel LIMIT $4",
        &[&devices(scope), &lo, &hi, &limit],
    )?;
    let Some(first) = rows.first() else {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM energy_hours
                  WHERE ($1::text[] IS NULL OR device_id = ANY($1))
                    AND ($2::timestamptz IS NULL OR day >= ($2 AT TIME ZONE 'UTC')::date)
                    AND ($3::timestamptz IS NULL OR day < ($3 AT TIME ZONE 'UTC')::date)",
                &[&devices(scope), &lo, &hi],
            )?
            .get(0);
        return Ok((n as u64, 0, vec![]));
    };
    let (compared, differ): (i64, i64) = (first.get(0), first.get(1));
    Ok((
        compared as u64,
        differ as u64,
        rows.iter()
            .map(|r| HourMismatch {
                device_id: r.get(2),
                day: r.get(3),
                channel: r.get(4),
                stored: r.get(5),
                expected: r.get(6),
            })
            .collect(),
    ))
}

/// Whether [from, to) can be read by UTC hour for a report in `tz`: both
/// ends on whole hours, and every local clock hour of the range a UTC hour
/// (the zone's offset a whole number of hours on every day of it). Zones
/// with half-hour offsets read the slots.
pub fn whole_hours(tz: chrono_tz::Tz, from: i64, to: i64) -> bool {
    if from % 3600 != 0 || to % 3600 != 0 || from >= to {
        return false;
    }
    let whole = |t: i64| {
        let at = DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .naive_utc();
        tz.offset_from_utc_datetime(&at).fix().local_minus_utc() % 3600 == 0
    };
    let mut t = from;
    while t < to {
        if !whole(t) {
            return false;
        }
        t += DAY;
    }
    whole(to - 1)
}

/// What a report reads of [from, to) (whole UTC hours, see [`whole_hours`])
/// for the billed `device/channel` pairs, in one pass over `energy_hours`.
/// Only the phases (A, B, C) count, as in every energy query.
#[derive(Debug, Default)]
pub struct HourLoad {
    /// Per billed meter (`meter` indexes the devices) and UTC hour that
    /// holds records: its billed channels summed. Sorted by start, meter.
    pub spans: Vec<MeterSpan>,
    /// Per device: the seconds covered, averaged over the channels that
    /// have records in the range (a channel missing for some hours counts
    /// those hours as not covered).
    pub covered: BTreeMap<String, i64>,
    /// Per device and phase: imported and exported Wh.
    pub measured: Vec<(String, String, Decimal, Decimal)>,
    /// Per (local month in the report's zone, `device/channel`): seconds
    /// covered.
    pub covered_by_month: BTreeMap<(NaiveDate, String), i64>,
    /// Per device: the UTC hours its best covered channel covers in part
    /// (more than nothing, less than the hour), oldest first.
    pub partly_covered: BTreeMap<String, Vec<i64>>,
}

/// Reads [`HourLoad`] for `devices` and their billed `pairs` over [from,
/// to), the devices split between two connections to `url`.
pub fn load(
    url: &str,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
    tz: chrono_tz::Tz,
) -> anyhow::Result<HourLoad> {
    let halves: Vec<&[String]> = if devices.len() > 1 {
        let (a, b) = devices.split_at(devices.len() / 2);
        vec![a, b]
    } else {
        vec![devices]
    };
    let parts: Vec<anyhow::Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .map(|half| {
                s.spawn(move || -> anyhow::Result<Part> {
                    let mut client = super::connect(url)?;
                    super::energy::tune_for_reports(&mut client)?;
                    read(&mut client, half, pairs, from, to, tz)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hours reader"))
            .collect()
    });
    let index: HashMap<&str, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut out = HourLoad {
        covered: devices.iter().map(|d| (d.clone(), 0)).collect(),
        ..HourLoad::default()
    };
    for part in parts {
        let part = part?;
        for (device, hour, i, e) in part.spans {
            out.spans.push(MeterSpan {
                meter: index[device.as_str()],
                start: hour,
                end: hour + 3600,
                import_wh: i,
                export_wh: e,
            });
        }
        for (d, s) in part.covered {
            *out.covered.entry(d).or_default() += s;
        }
        out.measured.extend(part.measured);
        for (k, s) in part.covered_by_month {
            *out.covered_by_month.entry(k).or_default() += s;
        }
        out.partly_covered.extend(part.partly_covered);
    }
    out.spans.sort_by_key(|s| (s.start, s.meter));
    out.measured.sort();
    Ok(out)
}

/// One connection's share of a [`HourLoad`], spans still by device name.
#[derive(Default)]
struct Part {
    spans: Vec<(String, i64, Decimal, Decimal)>,
    covered: BTreeMap<String, i64>,
    measured: Vec<(String, String, Decimal, Decimal)>,
    covered_by_month: BTreeMap<(NaiveDate, String), i64>,
    partly_covered: BTreeMap<String, Vec<i64>>,
}

/// The local month of each hour of a UTC day, cached per day: most days
/// lie inside one local month, the rest are split hour by hour.
struct Months {
    tz: chrono_tz::Tz,
    cache: HashMap<i64, [NaiveDate; 24]>,
}

impl Months {
    fn of(&mut self, day: i64) -> &[NaiveDate; 24] {
        let tz = self.tz;
        self.cache.entry(day).or_insert_with(|| {
            let month = |t: i64| {
                let d = DateTime::from_timestamp(t, 0)
                    .unwrap_or_default()
                    .with_timezone(&tz)
                    .date_naive();
                d.with_day(1).unwrap_or(d)
            };
            let (a, b) = (month(day), month(day + DAY - 1));
            if a == b {
                [a; 24]
            } else {
                std::array::from_fn(|h| month(day + 3600 * h as i64))
            }
        })
    }
}

/// Per (device, hour of the day being summed): the billed channels' sums.
#[derive(Clone, Default)]
struct HourSum {
    import: Decimal,
    export: Decimal,
    covered: i64,
    channels: i64,
    best: i64,
}

fn read(
    client: &mut postgres::Client,
    devices: &[String],
    pairs: &[String],
    from: i64,
    to: i64,
    tz: chrono_tz::Tz,
) -> anyhow::Result<Part> {
    let mut part = Part::default();
    if devices.is_empty() {
        return Ok(part);
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    // Rows by device and day (the primary key's order), streamed: a
    // device's day is summed over its channels, then flushed.
    let params: [&(dyn postgres::types::ToSql + Sync); 4] =
        [&devices, &pairs, &utc(day_floor(from)), &utc(day_ceil(to))];
    let mut rows = client.query_raw(
        "SELECT device_id, channel, day - date '1970-01-01', import_wh, export_wh, covered_s
           FROM energy_hours
          WHERE device_id = ANY($1) AND channel IN ('A', 'B', 'C') AND (device_id || '/' || channel) = ANY($2)
            AND day >= ($3 AT TIME ZONE 'UTC')::date AND day < ($4 AT TIME ZONE 'UTC')::date
          ORDER BY device_id, day, channel",
        params,
    )?;
    let mut months = Months {
        tz,
        cache: HashMap::new(),
    };
    let mut measured: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
    let mut day_sums: Vec<HourSum> = vec![HourSum::default(); 24];
    let mut current: Option<(String, i64)> = None;
    let flush = |part: &mut Part, key: &(String, i64), sums: &mut Vec<HourSum>| {
        let (device, day) = key;
        let mut covered = 0;
        for (h, s) in sums.iter_mut().enumerate() {
            if s.channels > 0 {
                let hour = day + 3600 * h as i64;
                part.spans.push((device.clone(), hour, s.import, s.export));
                // Channel-seconds; divided by the device's channels at the end.
                covered += s.covered;
                if s.best > 0 && s.best < 3600 {
                    part.partly_covered
                        .entry(device.clone())
                        .or_default()
                        .push(hour);
                }
            }
            *s = HourSum::default();
        }
        *part.covered.entry(device.clone()).or_default() += covered;
    };
    use postgres::fallible_iterator::FallibleIterator;
    while let Some(r) = rows.next()? {
        let (device, channel): (&str, &str) = (r.get(0), r.get(1));
        let day = i64::from(r.get::<_, i32>(2)) * DAY;
        let at = || {
            format!(
                "{device}/{channel} on {}",
                epoch + chrono::Days::new((day / DAY).max(0) as u64)
            )
        };
        // A value too large to convert fails the whole array: named, as
        // `stored_energy` names a slot's.
        let values = |i: usize| -> anyhow::Result<Vec<Decimal>> {
            match r.try_get::<_, Vec<super::numeric::Numeric>>(i).ok() {
                Some(v) if v.len() == 24 => v
                    .into_iter()
                    .map(|x| super::plausible_energy(Some(x.0), at))
                    .collect(),
                Some(_) => anyhow::bail!("energy_hours of {} do not hold 24 hours", at()),
                None => super::plausible_energy(None, at).map(|_| vec![]),
            }
        };
        let (imports, exports) = (values(3)?, values(4)?);
        let covered: Vec<i32> = r.get(5);
        if covered.len() != 24 || covered.iter().any(|c| *c < 0) {
            anyhow::bail!("energy_hours of {} hold no valid 24 hours covered", at());
        }
        if current
            .as_ref()
            .is_none_or(|(d, t)| d.as_str() != device || *t != day)
        {
            if let Some(k) = current.take() {
                flush(&mut part, &k, &mut day_sums);
            }
            current = Some((device.to_string(), day));
        }
        let month = *months.of(day);
        // Covered seconds per local month of this row (a UTC day touches
        // at most two), added to the map once per month.
        let mut by_month: [(NaiveDate, i64, bool); 2] =
            [(month[0], 0, false), (month[23], 0, false)];
        let (mut mi, mut me, mut any) = (Decimal::ZERO, Decimal::ZERO, false);
        for h in 0..24 {
            let hour = day + 3600 * h as i64;
            let c = i64::from(covered[h]);
            if hour < from || hour >= to || (c == 0 && imports[h].is_zero() && exports[h].is_zero())
            {
                continue;
            }
            any = true;
            mi += imports[h];
            me += exports[h];
            let b = &mut by_month[usize::from(month[h] != by_month[0].0)];
            b.1 += c;
            b.2 = true;
            let s = &mut day_sums[h];
            s.import += imports[h];
            s.export += exports[h];
            s.covered += c;
            s.channels += 1;
            s.best = s.best.max(c);
        }
        if any {
            let pair = format!("{device}/{channel}");
            for (m, c, _) in by_month.iter().filter(|b| b.2) {
                *part.covered_by_month.entry((*m, pair.clone())).or_default() += c;
            }
            let m = measured
                .entry((device.to_string(), channel.to_string()))
                .or_insert((Decimal::ZERO, Decimal::ZERO));
            m.0 += mi;
            m.1 += me;
        }
    }
    if let Some(k) = current.take() {
        flush(&mut part, &k, &mut day_sums);
    }
    // Seconds covered: the channel-seconds over the channels with records.
    for (device, covered) in part.covered.iter_mut() {
        let channels = measured.keys().filter(|(d, _)| d == device).count() as i64;
        *covered /= channels.max(1);
    }
    part.measured = measured
        .into_iter()
        .map(|((d, c), (i, e))| (d, c, i, e))
        .collect();
    Ok(part)
}

//! `ami_readings`: the DSO's hourly meter data (sql/0021).

use crate::ami::Hour;
use postgres::GenericClient;
use rust_decimal::Decimal;

/// Writes `hours` of `pod`: new hours inserted, hours whose values differ
/// replaced, equal ones left alone. Returns (inserted, changed).
pub fn upsert(
    c: &mut impl GenericClient,
    pod: &str,
    hours: &[Hour],
    sha256: &str,
) -> Result<(u64, u64), postgres::Error> {
    let starts: Vec<_> = hours.iter().map(|h| super::utc(h.start)).collect();
    let imp: Vec<Decimal> = hours.iter().map(|h| h.import_kwh).collect();
    let exp: Vec<Decimal> = hours.iter().map(|h| h.export_kwh).collect();
    let bi: Vec<Option<Decimal>> = hours.iter().map(|h| h.balanced_import_kwh).collect();
    let be: Vec<Option<Decimal>> = hours.iter().map(|h| h.balanced_export_kwh).collect();
    let rows = c.query(
        "INSERT INTO ami_readings AS a (pod, hour_start, import_kwh, export_kwh,
                                        balanced_import_kwh, balanced_export_kwh, source_sha256)
         SELECT $1, t.h, t.i, t.e, t.bi, t.be, $7
           FROM unnest($2::timestamptz[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[])
                AS t(h, i, e, bi, be)
         ON CONFLICT (pod, hour_start) DO UPDATE SET
             import_kwh = EXCLUDED.import_kwh, export_kwh = EXCLUDED.export_kwh,
             balanced_import_kwh = EXCLUDED.balanced_import_kwh,
             balanced_export_kwh = EXCLUDED.balanced_export_kwh,
             source_sha256 = EXCLUDED.source_sha256, imported_at = now()
          WHERE (a.import_kwh, a.export_kwh, a.balanced_import_kwh, a.balanced_export_kwh)
                IS DISTINCT FROM
                (EXCLUDED.import_kwh, EXCLUDED.export_kwh, EXCLUDED.balanced_import_kwh, EXCLUDED.balanced_export_kwh)
         RETURNING (xmax = 0)",
        &[&pod, &starts, &imp, &exp, &bi, &be, &sha256],
    )?;
    let inserted = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    Ok((inserted, rows.len() as u64 - inserted))
}

/// The points of delivery with imported data.
pub fn pods(c: &mut impl GenericClient) -> Result<Vec<String>, postgres::Error> {
    Ok(
        c.query("SELECT DISTINCT pod FROM ami_readings ORDER BY 1", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    )
}

/// The DSO's hours of `pod` in [from, to), by unix start.
pub fn hours(
    c: &mut impl GenericClient,
    pod: &str,
    from: i64,
    to: i64,
) -> Result<std::collections::BTreeMap<i64, Hour>, postgres::Error> {
    Ok(c.query(
        "SELECT EXTRACT(EPOCH FROM hour_start)::bigint, import_kwh, export_kwh,
                balanced_import_kwh, balanced_export_kwh
           FROM ami_readings WHERE pod = $1 AND hour_start >= $2 AND hour_start < $3",
        &[&pod, &super::utc(from), &super::utc(to)],
    )?
    .iter()
    .map(|r| {
        let start: i64 = r.get(0);
        (
            start,
            Hour {
                start,
                import_kwh: r.get(1),
                export_kwh: r.get(2),
                balanced_import_kwh: r.get(3),
                balanced_export_kwh: r.get(4),
            },
        )
    })
    .collect())
}

/// The Shelly's energy in one hour over the billed channels.
#[derive(Debug, Clone, Default)]
pub struct ShellyHour {
    pub import_wh: Decimal,
    pub export_wh: Decimal,
    /// Seconds of the hour the records cover (the least covered channel).
    pub covered_s: i64,
}

/// Per UTC hour of [from, to) (hour-aligned): the billed `device/channel`
/// pairs' import and export from the slots, and how much of the hour every
/// pair's records cover.
pub fn shelly_hours(
    c: &mut impl GenericClient,
    pairs: &[String],
    from: i64,
    to: i64,
) -> Result<std::collections::BTreeMap<i64, ShellyHour>, postgres::Error> {
    let devices = super::energy::devices_of(pairs);
    Ok(c.query(
        "SELECT EXTRACT(EPOCH FROM h)::bigint, sum(i), sum(e), min(c)::bigint FROM (
             SELECT date_bin('1 hour', slot_start, timestamptz 'epoch') AS h, device_id, channel,
                    sum(import_wh) AS i, sum(export_wh) AS e, EXTRACT(EPOCH FROM sum(covered)) AS c
               FROM energy_slots
              WHERE device_id = ANY($4) AND device_id || '/' || channel = ANY($1)
                AND slot_start >= $2 AND slot_start < $3
              GROUP BY 1, 2, 3) x
          GROUP BY 1",
        &[&pairs, &super::utc(from), &super::utc(to), &devices],
    )?
    .iter()
    .map(|r| {
        (
            r.get::<_, i64>(0),
            ShellyHour {
                import_wh: r.get(1),
                export_wh: r.get(2),
                covered_s: r.get::<_, Option<i64>>(3).unwrap_or(0),
            },
        )
    })
    .collect())
}

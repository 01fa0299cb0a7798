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

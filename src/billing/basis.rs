//! The capacity-fee basis: each month's billed import of the 12 months
//! before it, balanced as the bill is, and how complete the data are.

use super::load::Data;
use crate::db;
use crate::db::energy;
use crate::tariff::balance;
use crate::tariff::cost::{AnnualBasis, Span};
use crate::tariff::{Balancing, Tariff};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Capacity-fee bases per month of [from, to): the billed import of the 12
/// months before each month (the months before the period summed in the
/// database, the period's from its billed spans), and whether the data
/// reach back that far.
pub(crate) fn annual_bases(
    client: &mut db::Client,
    data: &mut Data,
    t: &Tariff,
    billed: &[Span],
    from: i64,
    to: i64,
) -> anyhow::Result<BTreeMap<NaiveDate, AnnualBasis>> {
    let (devices, pairs) = (data.devices, data.pairs);
    let first_month = t.month_of(from);
    let lookback = t.day_start(
        first_month
            .checked_sub_months(chrono::Months::new(12))
            .expect("date"),
    );
    let mut by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    // Seconds covered per (local month, billed channel or point of delivery).
    let covered: BTreeMap<(NaiveDate, String), i64>;
    if let Some(a) = &data.ami {
        // The DSO's months before the period, balanced as the bill is.
        let before = crate::billing::ami::billed(std::slice::from_ref(t), &a.hours, lookback, from);
        for s in before.spans {
            *by_month.entry(t.month_of(s.start)).or_default() += s.import_wh;
        }
        let mut c = BTreeMap::new();
        for h in a.hours.range(lookback..to).map(|(h, _)| *h) {
            *c.entry((t.month_of(h), a.pod.clone())).or_default() += 3600;
        }
        covered = c;
    } else if let Some((months, c)) = hourly_basis(data, t, lookback, from, to)? {
        by_month = months;
        covered = c;
    } else {
        match t.file.balancing {
            Balancing::Hourly => {
                // The same netting as the bill's (tariff::balance), over the
                // hours the database sums.
                let hours = energy::hourly_spans(client, devices, pairs, lookback, from)?;
                for s in balance::billed(t, &hours) {
                    *by_month.entry(t.month_of(s.start)).or_default() += s.import_wh;
                }
            }
            b @ (Balancing::None | Balancing::PerRecord) => {
                by_month.extend(energy::monthly_import(
                    client,
                    devices,
                    pairs,
                    lookback,
                    from,
                    t.tz.name(),
                    b == Balancing::PerRecord,
                )?);
            }
        }
        // How much of each basis's 12 months the records cover, per billed
        // phase: a basis with a day missing is not complete, and says by
        // how many hours.
        covered = energy::covered_by_month(client, pairs, lookback, to, t.tz)?
            .into_iter()
            .collect();
    }
    for s in billed {
        *by_month.entry(t.month_of(s.start)).or_default() += s.import_wh;
    }
    let mut out = BTreeMap::new();
    let mut m = first_month;
    while t.day_start(m) < to {
        let start = m.checked_sub_months(chrono::Months::new(12)).expect("date");
        let wh: Decimal = by_month.range(start..m).map(|(_, v)| v).sum();
        let window_s = t.day_start(m) - t.day_start(start);
        let covered_by = |p: &str| -> i64 {
            covered
                .iter()
                .filter(|((month, pair), _)| pair == p && *month >= start && *month < m)
                .map(|(_, s)| *s)
                .sum()
        };
        let missing_s = match &data.ami {
            Some(a) => (window_s - covered_by(&a.pod)).max(0),
            // Per meter, its best covered billed channel (a meter's records
            // cover all its phases at once; a phase with no records at all
            // is a phase not wired, not a gap); the least covered meter
            // counts.
            None => devices
                .iter()
                .map(|d| {
                    let best = pairs
                        .iter()
                        .filter(|p| p.rsplit_once('/').is_some_and(|(pd, _)| pd == d))
                        .map(|p| covered_by(p))
                        .max()
                        .unwrap_or(0);
                    (window_s - best).max(0)
                })
                .max()
                .unwrap_or(window_s),
        };
        out.insert(
            m,
            AnnualBasis {
                kwh: wh / Decimal::from(1000),
                source: "measured",
                complete: missing_s == 0,
                missing_hours: Decimal::from(missing_s) / Decimal::from(3600),
            },
        );
        m = m.checked_add_months(chrono::Months::new(1)).expect("date");
    }
    Ok(out)
}

/// Billed import per local month of [lookback, from) and the seconds
/// covered per (local month, billed channel) of [lookback, to), from the
/// hourly sums, where both ranges can be read by UTC hour; `None` where
/// the slots or the records are needed (a zone with half-hour offsets,
/// phases netted per record).
fn hourly_basis(
    data: &mut Data,
    t: &Tariff,
    lookback: i64,
    from: i64,
    to: i64,
) -> anyhow::Result<Option<BasisData>> {
    if t.file.balancing == Balancing::PerRecord {
        return Ok(None);
    }
    let Some(during) = data.hours(from, to, t.tz)? else {
        return Ok(None);
    };
    let mut covered = during.covered_by_month.clone();
    let Some(before) = data.hours(lookback, from, t.tz)? else {
        return Ok(None);
    };
    let mut by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    let billed = match t.file.balancing {
        // The same netting as the bill's (tariff::balance).
        Balancing::Hourly => balance::billed(t, &before.spans),
        // Measured import.
        _ => before
            .spans
            .iter()
            .map(|s| Span {
                start: s.start,
                end: s.end,
                import_wh: s.import_wh,
                export_wh: s.export_wh,
            })
            .collect(),
    };
    for s in billed {
        *by_month.entry(t.month_of(s.start)).or_default() += s.import_wh;
    }
    for (k, s) in &before.covered_by_month {
        *covered.entry(k.clone()).or_default() += s;
    }
    Ok(Some((by_month, covered)))
}

/// Billed import per local month, seconds covered per (local month,
/// billed channel).
type BasisData = (
    BTreeMap<NaiveDate, Decimal>,
    BTreeMap<(NaiveDate, String), i64>,
);

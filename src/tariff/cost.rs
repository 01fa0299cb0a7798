//! Costs from energy and tariffs (pure, exact decimal arithmetic).
//!
//! Energy arrives as spans with imported/exported Wh. A span inside one
//! priced period is priced whole; a span that straddles period boundaries
//! (a zone change, a tariff change, an hourly price) is split pro rata by
//! time. Money lines are rounded to 0.01 once, at the end, half away from
//! zero; totals are sums of the rounded lines, so a printed bill adds up.

use super::{Kind, Tariff};
use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// Energy measured over [start, end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub import_wh: Decimal,
    pub export_wh: Decimal,
}

/// A dynamic energy price over [start, end), net per kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub start: i64,
    pub end: i64,
    pub price: Decimal,
}

/// A tariff version with, for dynamic tariffs, its prices (sorted).
pub struct Version<'a> {
    pub tariff: &'a Tariff,
    pub prices: &'a [Price],
}

#[derive(Debug, Clone, Copy)]
struct Priced {
    start: i64,
    end: i64,
    version: usize,
    zone: usize,
    energy_price: Decimal,
    distribution_price: Decimal,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CostError {
    #[error("tariff {tariff} has no dynamic price from {from} to {to}; import prices with `shellyctl tariff prices import`")]
    MissingPrices {
        tariff: String,
        from: String,
        to: String,
    },
}

fn money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn kwh(wh: Decimal) -> Decimal {
    (wh / Decimal::from(1000)).normalize()
}

fn fmt_ts(t: &Tariff, ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .with_timezone(&t.tz)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn priced_periods(versions: &[Version], from: i64, to: i64) -> Result<Vec<Priced>, CostError> {
    let mut out = Vec::new();
    for (vi, v) in versions.iter().enumerate() {
        for p in v.tariff.periods(from, to) {
            let zone = &v.tariff.file.zones[p.zone];
            let distribution_price = zone.distribution_price.unwrap_or_default();
            match v.tariff.file.kind {
                Kind::Fixed => out.push(Priced {
                    start: p.start,
                    end: p.end,
                    version: vi,
                    zone: p.zone,
                    energy_price: zone.energy_price.unwrap_or_default(),
                    distribution_price,
                }),
                Kind::Dynamic => {
                    let mut at = p.start;
                    let first = v.prices.partition_point(|x| x.end <= p.start);
                    for price in &v.prices[first..] {
                        if price.start >= p.end {
                            break;
                        }
                        if price.start > at {
                            return Err(CostError::MissingPrices {
                                tariff: v.tariff.file.name.clone(),
                                from: fmt_ts(v.tariff, at),
                                to: fmt_ts(v.tariff, price.start),
                            });
                        }
                        let (s, e) = (at.max(price.start), p.end.min(price.end));
                        if s < e {
                            out.push(Priced {
                                start: s,
                                end: e,
                                version: vi,
                                zone: p.zone,
                                energy_price: price.price,
                                distribution_price,
                            });
                            at = e;
                        }
                    }
                    if at < p.end {
                        return Err(CostError::MissingPrices {
                            tariff: v.tariff.file.name.clone(),
                            from: fmt_ts(v.tariff, at),
                            to: fmt_ts(v.tariff, p.end),
                        });
                    }
                }
            }
        }
    }
    out.sort_by_key(|p| p.start);
    Ok(out)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZoneLine {
    pub tariff: String,
    pub valid_from: NaiveDate,
    pub zone: String,
    pub kwh: Decimal,
    pub energy_net: Decimal,
    pub distribution_net: Decimal,
    pub net: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeeLine {
    pub tariff: String,
    pub name: String,
    /// Share of the month(s) charged (1 for a whole month).
    pub months: Decimal,
    pub net: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportLine {
    pub kwh: Decimal,
    /// Credited amount (net; not subject to VAT), when the tariff prices export.
    pub credit: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bill {
    pub currency: String,
    pub zones: Vec<ZoneLine>,
    pub fixed_fees: Vec<FeeLine>,
    pub net: Decimal,
    pub vat_percent: Option<Decimal>,
    pub vat: Decimal,
    pub gross: Decimal,
    pub export: ExportLine,
    /// Gross minus the export credit.
    pub total: Decimal,
    pub import_kwh: Decimal,
    /// Energy outside every tariff's validity (not priced).
    pub unpriced_kwh: Decimal,
}

#[derive(Default, Clone)]
struct Acc {
    wh: Decimal,
    energy: Decimal,
    distribution: Decimal,
}

/// Prices `spans` (sorted by start) over [from, to) with the tariff
/// versions in force.
pub fn bill(versions: &[Version], spans: &[Span], from: i64, to: i64) -> Result<Bill, CostError> {
    let periods = priced_periods(versions, from, to)?;
    let mut acc: Vec<Vec<Acc>> = versions
        .iter()
        .map(|v| vec![Acc::default(); v.tariff.file.zones.len()])
        .collect();
    let mut export_wh = vec![Decimal::ZERO; versions.len()];
    let mut unpriced_wh = Decimal::ZERO;
    let mut total_import = Decimal::ZERO;
    let thousand = Decimal::from(1000);
    for s in spans {
        let (start, end) = (s.start.max(from), s.end.min(to));
        if start >= end {
            continue;
        }
        let len = Decimal::from(s.end - s.start);
        let clipped = start != s.start || end != s.end;
        let (imp, exp) = if clipped {
            let f = Decimal::from(end - start) / len;
            (s.import_wh * f, s.export_wh * f)
        } else {
            (s.import_wh, s.export_wh)
        };
        total_import += imp;
        let mut priced_s = 0i64;
        let first = periods.partition_point(|p| p.end <= start);
        for p in &periods[first..] {
            if p.start >= end {
                break;
            }
            let (a, b) = (start.max(p.start), end.min(p.end));
            if a >= b {
                continue;
            }
            priced_s += b - a;
            let whole = a == start && b == end;
            let share = |x: Decimal| {
                if whole {
                    x
                } else {
                    x * Decimal::from(b - a) / Decimal::from(end - start)
                }
            };
            let (i, e) = (share(imp), share(exp));
            let z = &mut acc[p.version][p.zone];
            z.wh += i;
            z.energy += i * p.energy_price / thousand;
            z.distribution += i * p.distribution_price / thousand;
            export_wh[p.version] += e;
        }
        if priced_s < end - start {
            unpriced_wh += imp * Decimal::from(end - start - priced_s) / Decimal::from(end - start);
        }
    }

    let mut zones = Vec::new();
    let mut net_by_version = vec![Decimal::ZERO; versions.len()];
    for (vi, v) in versions.iter().enumerate() {
        for (zi, z) in acc[vi].iter().enumerate() {
            if v.tariff.periods(from, to).iter().all(|p| p.zone != zi) {
                continue; // the zone does not occur in the range
            }
            let (energy_net, distribution_net) = (money(z.energy), money(z.distribution));
            net_by_version[vi] += energy_net + distribution_net;
            zones.push(ZoneLine {
                tariff: v.tariff.file.name.clone(),
                valid_from: v.tariff.file.valid_from,
                zone: v.tariff.file.zones[zi].name.clone(),
                kwh: kwh(z.wh),
                energy_net,
                distribution_net,
                net: energy_net + distribution_net,
            });
        }
    }

    let mut fixed_fees = Vec::new();
    for (vi, v) in versions.iter().enumerate() {
        let share = month_share(v.tariff, from, to);
        if share.is_zero() {
            continue;
        }
        for fee in &v.tariff.file.fixed_monthly_fees {
            let net = money(fee.net * share);
            net_by_version[vi] += net;
            fixed_fees.push(FeeLine {
                tariff: v.tariff.file.name.clone(),
                name: fee.name.clone(),
                months: share.round_dp(6).normalize(),
                net,
            });
        }
    }

    let mut vat = Decimal::ZERO;
    let mut credit = Decimal::ZERO;
    for (vi, v) in versions.iter().enumerate() {
        vat += money(net_by_version[vi] * v.tariff.file.vat_percent / Decimal::from(100));
        if let Some(p) = v.tariff.file.export_price {
            credit += money(export_wh[vi] * p / thousand);
        }
    }
    let net: Decimal = net_by_version.iter().copied().sum();
    let rates: Vec<Decimal> = versions.iter().map(|v| v.tariff.file.vat_percent).collect();
    let vat_percent = rates
        .first()
        .copied()
        .filter(|r| rates.iter().all(|x| x == r));
    let gross = net + vat;
    Ok(Bill {
        currency: versions
            .first()
            .map(|v| v.tariff.file.currency.clone())
            .unwrap_or_default(),
        zones,
        fixed_fees,
        net,
        vat_percent,
        vat,
        gross,
        export: ExportLine {
            kwh: kwh(export_wh.iter().copied().sum()),
            credit,
        },
        total: gross - credit,
        import_kwh: kwh(total_import),
        unpriced_kwh: kwh(unpriced_wh),
    })
}

/// The monthly-fee share for [from, to) while the tariff is valid: whole
/// months count 1, partial months by their share of days.
fn month_share(t: &Tariff, from: i64, to: i64) -> Decimal {
    let from = from.max(t.valid_from_utc());
    let to = t.valid_to_utc().map_or(to, |v| to.min(v));
    if from >= to {
        return Decimal::ZERO;
    }
    let first = t.local_date(from);
    let last = t.local_date(to - 1);
    let mut share = Decimal::ZERO;
    let mut month_start = NaiveDate::from_ymd_opt(first.year(), first.month(), 1).expect("date");
    while month_start <= last {
        let next = month_start
            .checked_add_months(chrono::Months::new(1))
            .expect("date");
        let days_in_month = (next - month_start).num_days();
        let a = first.max(month_start);
        let b = last.min(next.checked_sub_days(Days::new(1)).expect("date"));
        let days = (b - a).num_days() + 1;
        share += Decimal::from(days) / Decimal::from(days_in_month);
        month_start = next;
    }
    share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::EXAMPLES;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn a_span_across_a_zone_boundary_is_split_pro_rata() {
        let g12 = Tariff::parse(EXAMPLES[1].1).unwrap();
        let v = [Version {
            tariff: &g12,
            prices: &[],
        }];
        // 2026-06-03 (Wednesday) 12:50-13:10 CEST = 10:50-11:10 UTC; 13:00 is peak→offpeak.
        let span = Span {
            start: at("2026-06-03T10:50:00Z"),
            end: at("2026-06-03T11:10:00Z"),
            import_wh: d("300"),
            export_wh: d("0"),
        };
        let b = bill(
            &v,
            &[span],
            at("2026-06-01T00:00:00Z"),
            at("2026-06-04T00:00:00Z"),
        )
        .unwrap();
        let peak = b.zones.iter().find(|z| z.zone == "peak").unwrap();
        let off = b.zones.iter().find(|z| z.zone == "offpeak").unwrap();
        assert_eq!((peak.kwh, off.kwh), (d("0.15"), d("0.15")));
        // 0.15 kWh × (0.6210 + 0.4480) = 0.160350 → 0.09 + 0.07
        assert_eq!(
            (peak.energy_net, peak.distribution_net),
            (d("0.09"), d("0.07"))
        );
    }

    #[test]
    fn monthly_fees_are_pro_rata_for_partial_months() {
        let g11 = Tariff::parse(EXAMPLES[0].1).unwrap();
        // June has 30 days; 10 days in range.
        let s = month_share(&g11, at("2026-06-10T22:00:00Z"), at("2026-06-20T22:00:00Z"));
        assert_eq!(s, d("10") / d("30"));
        let full = month_share(&g11, at("2026-05-31T22:00:00Z"), at("2026-06-30T22:00:00Z"));
        assert_eq!(full, d("1"));
    }

    #[test]
    fn dynamic_prices_must_cover_the_range() {
        let dynamic = Tariff::parse(EXAMPLES[3].1).unwrap();
        let prices = [Price {
            start: at("2026-06-01T00:00:00Z"),
            end: at("2026-06-01T01:00:00Z"),
            price: d("0.5"),
        }];
        let v = [Version {
            tariff: &dynamic,
            prices: &prices,
        }];
        let e = bill(
            &v,
            &[],
            at("2026-06-01T00:00:00Z"),
            at("2026-06-01T02:00:00Z"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tariff DYNAMIC has no dynamic price from 2026-06-01 03:00 to 2026-06-01 04:00; import prices with `shellyctl tariff prices import`"
        );
    }

    #[test]
    fn a_year_of_five_minute_intervals_sums_without_drift() {
        let g11 = Tariff::parse(EXAMPLES[0].1).unwrap();
        let v = [Version {
            tariff: &g11,
            prices: &[],
        }];
        let start = at("2026-01-01T00:00:00Z");
        let spans: Vec<Span> = (0..105_120)
            .map(|i| Span {
                start: start + i * 300,
                end: start + i * 300 + 300,
                import_wh: d("0.1"),
                export_wh: d("0.0001"),
            })
            .collect();
        let b = bill(&v, &spans, start, start + 105_120 * 300).unwrap();
        assert_eq!(b.import_kwh, d("10.512"));
        assert_eq!(b.export.kwh, d("0.010512"));
        // 10.512 kWh × 0.5050 = 5.30856 → 5.31; × 0.3620 = 3.805344 → 3.81
        let z = &b.zones[0];
        assert_eq!((z.energy_net, z.distribution_net), (d("5.31"), d("3.81")));
    }
}

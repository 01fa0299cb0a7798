//! Costs from billed energy and tariffs (pure, exact decimal arithmetic).
//!
//! Billed energy (after the tariff's balancing, see `balance`) arrives as
//! spans with imported/exported Wh. A span inside one priced period is
//! priced whole; a span that straddles period boundaries (a zone change, a
//! tariff change, a price override, an hourly price) is split pro rata by
//! time. Money lines are rounded to 0.01 once, at the end, half away from
//! zero; totals are sums of the rounded lines, so a printed bill adds up.
//!
//! Export is valued by the tariff's rule: a fixed price credited on the
//! bill; net-billing (each hour's export at the hour's mean market price,
//! a negative mean counted as 0, times the multiplier, into a deposit that
//! pays the gross energy part of the bills of the following months); or
//! net-metering (exported kWh × coefficient offset the import of the same
//! zone, free of energy and per-kWh distribution charges).

use super::components::{ExportKind, NegativePrice, Part};
use super::{Kind, Tariff};
use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Energy over [start, end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub import_wh: Decimal,
    pub export_wh: Decimal,
}

/// A price over [start, end), net per kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub start: i64,
    pub end: i64,
    pub price: Decimal,
}

/// A tariff version with its price series (sorted): import prices for
/// dynamic tariffs, export prices for net-billing.
pub struct Version<'a> {
    pub tariff: &'a Tariff,
    pub prices: &'a [Price],
    pub export_prices: &'a [Price],
}

/// The annual consumption that chooses a month's capacity-fee tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnualBasis {
    pub kwh: Decimal,
    /// `declared` (the tariff file) or `measured` (the 12 months before).
    pub source: &'static str,
    /// Whether the data cover the whole 12 months (always for declared).
    pub complete: bool,
    /// Hours of the 12 months no record covers (of the least covered
    /// billed meter; 0 when declared).
    pub missing_hours: Decimal,
}

/// What the bill needs besides energy and tariffs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Per local month (first day): the capacity-fee basis.
    pub annual: BTreeMap<NaiveDate, AnnualBasis>,
    /// Net-billing deposit available before the first month.
    pub opening_deposit: Decimal,
    /// Net-metering credits carried from settlement periods before the
    /// range (`billing::net_metering`).
    pub net_metering_carry_in: Vec<crate::billing::net_metering::Credit>,
}

#[derive(Debug, Clone, Copy)]
struct Priced {
    start: i64,
    end: i64,
    version: usize,
    zone: usize,
    energy_price: Decimal,
    distribution_price: Decimal,
    overridden: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CostError {
    #[error("tariff {tariff} has no dynamic price from {from} to {to}; import prices with `shellyctl tariff prices import`")]
    MissingPrices {
        tariff: String,
        from: String,
        to: String,
    },
    #[error("tariff {tariff} has no export price for the hour {hour} (energy was exported then); import the export series with `shellyctl tariff prices import --series export`")]
    MissingExportPrice { tariff: String, hour: String },
}

/// An amount of money: rounded half away from zero to, and shown with, two
/// decimals.
fn money(d: Decimal) -> Decimal {
    let mut m = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    m.rescale(2);
    m
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

/// [from, to) of a component's local-day validity, clipped to [a, b).
fn window(t: &Tariff, vf: Option<NaiveDate>, vt: Option<NaiveDate>, a: i64, b: i64) -> (i64, i64) {
    (
        vf.map_or(a, |d| t.day_start(d).max(a)),
        vt.map_or(b, |d| t.day_start(d).min(b)),
    )
}

fn priced_periods(versions: &[Version], from: i64, to: i64) -> Result<Vec<Priced>, CostError> {
    let mut out = Vec::new();
    for (vi, v) in versions.iter().enumerate() {
        let mut base = Vec::new();
        for p in v.tariff.periods(from, to) {
            let zone = &v.tariff.file.zones[p.zone];
            let distribution_price = zone.distribution_price.unwrap_or_default();
            let priced = Priced {
                start: p.start,
                end: p.end,
                version: vi,
                zone: p.zone,
                energy_price: zone.energy_price.unwrap_or_default(),
                distribution_price,
                overridden: None,
            };
            match v.tariff.file.kind {
                Kind::Fixed => base.push(priced),
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
                            base.push(Priced {
                                start: s,
                                end: e,
                                energy_price: price.price,
                                ..priced
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
        apply_overrides(v.tariff, &mut base);
        out.extend(base);
    }
    out.sort_by_key(|p| p.start);
    Ok(out)
}

/// Splits pieces at the overrides' edges and puts their prices in.
fn apply_overrides(t: &Tariff, pieces: &mut Vec<Priced>) {
    if t.file.price_overrides.is_empty() {
        return;
    }
    let windows: Vec<(i64, i64)> = t
        .file
        .price_overrides
        .iter()
        .map(|o| (t.day_start(o.valid_from), t.day_start(o.valid_to)))
        .collect();
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces.drain(..) {
        let mut cuts = vec![p.start, p.end];
        for &(a, b) in &windows {
            cuts.extend([a, b].into_iter().filter(|c| *c > p.start && *c < p.end));
        }
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let mut q = Priced {
                start: w[0],
                end: w[1],
                ..p
            };
            let zone = &t.file.zones[p.zone].name;
            if let Some(oi) = t
                .file
                .price_overrides
                .iter()
                .enumerate()
                .position(|(i, o)| {
                    windows[i].0 <= q.start
                        && q.end <= windows[i].1
                        && o.zones.as_ref().is_none_or(|z| z.contains(zone))
                })
            {
                let o = &t.file.price_overrides[oi];
                q.energy_price = o.energy_price.unwrap_or(q.energy_price);
                q.distribution_price = o.distribution_price.unwrap_or(q.distribution_price);
                q.overridden = Some(oi);
            }
            out.push(q);
        }
    }
    *pieces = out;
}

/// The mean export price of the local hour starting at `hour`: the
/// time-weighted mean of the series rows in it (four quarter-hours or one
/// hour), which must cover the whole hour.
fn hourly_export_price(prices: &[Price], hour: i64) -> Option<Decimal> {
    let end = hour + 3600;
    let first = prices.partition_point(|p| p.end <= hour);
    let (mut at, mut sum) = (hour, Decimal::ZERO);
    for p in &prices[first..] {
        if p.start >= end {
            break;
        }
        if p.start > at {
            return None;
        }
        let e = p.end.min(end);
        sum += p.price * Decimal::from(e - at);
        at = e;
    }
    (at >= end).then(|| sum / Decimal::from(3600))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZoneLine {
    pub tariff: String,
    pub valid_from: NaiveDate,
    pub zone: String,
    /// Billed import in the zone (after balancing).
    pub kwh: Decimal,
    /// Net-metering: kWh of it offset by export (not charged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_kwh: Option<Decimal>,
    pub energy_net: Decimal,
    pub distribution_net: Decimal,
    pub net: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChargeLine {
    pub tariff: String,
    pub name: String,
    /// `energy` or `distribution`.
    pub part: &'static str,
    pub kwh: Decimal,
    pub price: Decimal,
    pub net: Decimal,
    pub vat_percent: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeeLine {
    pub tariff: String,
    pub name: String,
    /// Share of the month(s) charged (1 for a whole month).
    pub months: Decimal,
    pub net: Decimal,
    pub vat_percent: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CapacityLine {
    pub tariff: String,
    pub name: String,
    /// The tier, e.g. "1200–2800 kWh".
    pub tier: String,
    /// Monthly net amount of the tier.
    pub monthly_net: Decimal,
    /// The annual consumption that chose the tier (of the first month).
    pub annual_kwh: Decimal,
    pub basis: &'static str,
    pub basis_complete: bool,
    /// Hours of the basis's 12 months without records (measured basis).
    pub basis_missing_hours: Decimal,
    pub months: Decimal,
    pub net: Decimal,
    pub vat_percent: Decimal,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VatLine {
    pub vat_percent: Decimal,
    pub base: Decimal,
    pub vat: Decimal,
}

/// One month of the deposit statement: opening + earned − paid −
/// refunded − expired = balance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DepositMonth {
    pub month: String,
    pub opening: Decimal,
    pub earned: Decimal,
    /// The gross energy part of the month's bill, which the deposit pays.
    pub energy_gross: Decimal,
    pub paid: Decimal,
    /// Refunded from deposits that reached their expiry unused.
    pub refunded: Decimal,
    pub expired: Decimal,
    pub balance: Decimal,
}

/// One month's credit to the deposit, as it stands at the end of the
/// period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DepositLot {
    /// The month whose export was credited (`opening` for the opening
    /// balance, counted as credited in the first month).
    pub credited_for: String,
    pub credited: Decimal,
    /// Left at the end of the period (0 once used, refunded or expired).
    pub left: Decimal,
    /// The most that is refunded of it when it expires unused
    /// (refund_percent of the month's export market value).
    pub refund_cap: Decimal,
    /// The first local day it can no longer pay.
    pub expires: NaiveDate,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Deposit {
    pub opening: Decimal,
    /// Export value × multiplier credited in the period.
    pub earned: Decimal,
    /// Energy charges it paid.
    pub paid: Decimal,
    /// Refunded from deposits that expired unused (at most
    /// `refund_percent` of their month's export market value).
    pub refunded: Decimal,
    pub refund_percent: Decimal,
    /// Deposit older than its validity and not refunded, lost.
    pub expired: Decimal,
    /// Left for later bills.
    pub closing: Decimal,
    pub months: Vec<DepositMonth>,
    /// Each month's credit with what is left of it and its expiry.
    pub lots: Vec<DepositLot>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportLine {
    /// none, fixed_price, net_billing or net_metering.
    pub rule: &'static str,
    /// Billed export (after balancing).
    pub kwh: Decimal,
    /// Credited on this bill (fixed price; net, not subject to VAT).
    pub credit: Decimal,
    /// Net-billing: market value of the export before the multiplier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market_value: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deposit: Option<Deposit>,
    /// Net-metering: import kWh offset, and exported kWh left unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_kwh: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused_kwh: Option<Decimal>,
    /// Net-metering: import kWh offset by credits carried from settlement
    /// periods before the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_in_kwh: Option<Decimal>,
    /// Net-metering: credits left at the end (import kWh they can offset,
    /// per zone, dated at their settlement reading, usable 365 days).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carry_out: Vec<CarriedCredit>,
    /// Net-metering: credits (import kWh) that reached 365 days unused in
    /// the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_credit_kwh: Option<Decimal>,
}

/// A net-metering credit carried to the next settlement period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CarriedCredit {
    pub zone: String,
    /// The settlement reading whose export it comes from.
    pub dated: NaiveDate,
    /// Import kWh it can still offset.
    pub kwh: Decimal,
    /// The last settlement reading at which it counts.
    pub last_usable: NaiveDate,
}

/// Net-metering settled over the range's settlement periods.
#[derive(Default)]
struct NetMetering {
    /// Import Wh offset per (version, zone).
    offsets: BTreeMap<(usize, usize), Decimal>,
    from_carry_wh: Decimal,
    /// Export Wh of the range whose credit was not used in it.
    unused_export_wh: Decimal,
    expired_wh: Decimal,
    carry_out: Vec<CarriedCredit>,
}

/// The settlement reading of the period holding local `month`: the
/// period's last local day, or the range's last day when the range ends
/// first.
fn reading_of(t: &Tariff, month: NaiveDate, to: i64) -> NaiveDate {
    let st = t.settlement();
    let end = st
        .period_start(month)
        .checked_add_months(chrono::Months::new(st.months))
        .and_then(|d| d.pred_opt())
        .expect("date");
    end.min(t.local_date(to - 1))
}

/// Net-metering over the settlement periods in the range, after the
/// credits carried in; offsets per zone name shared among the versions in
/// proportion to their import in that period and zone.
fn settle_net_metering(versions: &[Version], acc: &[VersionAcc], ctx: &Context) -> NetMetering {
    use crate::billing::net_metering::{settle, PeriodZone};
    let Some(coefficient) = versions.iter().find_map(|v| {
        let ex = v.tariff.export_rule();
        (ex.rule == ExportKind::NetMetering).then(|| ex.coefficient.unwrap_or(Decimal::ONE))
    }) else {
        return NetMetering::default();
    };
    let zone_name = |vi: usize, zi: usize| versions[vi].tariff.file.zones[zi].name.clone();
    let mut per: BTreeMap<(NaiveDate, String), (Decimal, Decimal)> = BTreeMap::new();
    for (vi, a) in acc.iter().enumerate() {
        for (&(r, zi), &(i, e)) in &a.by_reading {
            let x = per.entry((r, zone_name(vi, zi))).or_default();
            x.0 += i;
            x.1 += e;
        }
    }
    let periods: Vec<PeriodZone> = per
        .iter()
        .map(|((r, z), (i, e))| PeriodZone {
            reading: *r,
            zone: z.clone(),
            import_wh: *i,
            export_wh: *e,
        })
        .collect();
    let s = settle(&ctx.net_metering_carry_in, &periods, coefficient);
    let mut out = NetMetering {
        from_carry_wh: s.from_carry_wh,
        ..NetMetering::default()
    };
    for (vi, a) in acc.iter().enumerate() {
        for (&(r, zi), &(i, _)) in &a.by_reading {
            let key = (r, zone_name(vi, zi));
            let (total_import, _) = per[&key];
            let offset = s.offsets.get(&key).copied().unwrap_or_default();
            if total_import > Decimal::ZERO {
                *out.offsets.entry((vi, zi)).or_default() += offset * i / total_import;
            }
        }
    }
    let first_reading = periods.iter().map(|p| p.reading).min();
    let mine =
        |c: &crate::billing::net_metering::Credit| first_reading.is_some_and(|f| c.dated >= f);
    out.unused_export_wh = s
        .carry_out
        .iter()
        .chain(&s.expired)
        .filter(|c| mine(c))
        .map(|c| c.wh)
        .sum::<Decimal>()
        / coefficient;
    out.expired_wh = s.expired.iter().map(|c| c.wh).sum();
    out.carry_out = s
        .carry_out
        .iter()
        .map(|c| CarriedCredit {
            zone: c.zone.clone(),
            dated: c.dated,
            kwh: kwh(c.wh),
            last_usable: c.last_usable(),
        })
        .collect();
    out
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bill {
    pub currency: String,
    pub zones: Vec<ZoneLine>,
    pub charges: Vec<ChargeLine>,
    pub fixed_fees: Vec<FeeLine>,
    pub capacity_fees: Vec<CapacityLine>,
    pub net: Decimal,
    /// The one VAT rate when every line has it; null when mixed (see vat_lines).
    pub vat_percent: Option<Decimal>,
    pub vat_lines: Vec<VatLine>,
    pub vat: Decimal,
    pub gross: Decimal,
    pub export: ExportLine,
    /// Gross minus the export credit, the deposit paid and the deposit
    /// refunded.
    pub total: Decimal,
    /// Billed import (after balancing).
    pub import_kwh: Decimal,
    /// Energy outside every tariff's validity (not priced).
    pub unpriced_kwh: Decimal,
    /// Price overrides that applied in the period, by name.
    pub overrides_applied: Vec<String>,
}

#[derive(Default, Clone)]
struct ZoneAcc {
    wh: Decimal,
    energy: Decimal,
    distribution: Decimal,
    export_wh: Decimal,
    /// Per charge of the version: billed Wh in the charge's validity.
    charge_wh: Vec<Decimal>,
    occurs: bool,
}

#[derive(Default)]
struct VersionAcc {
    zones: Vec<ZoneAcc>,
    export_wh: Decimal,
    /// Energy money per local month and invoice line (net-billing
    /// deposit): a zone's energy (its index), or an energy-part per-kWh
    /// charge (zones + its index). Each is rounded as its line is.
    energy_by_month: BTreeMap<(NaiveDate, usize), Decimal>,
    /// Export Wh per local hour start (net-billing).
    export_by_hour: BTreeMap<i64, Decimal>,
    /// Net-metering: (import, export) Wh per (settlement reading, zone).
    by_reading: BTreeMap<(NaiveDate, usize), (Decimal, Decimal)>,
    overrides: Vec<bool>,
}

/// Prices `spans` (billed energy, sorted by start) over [from, to) with the
/// tariff versions in force.
pub fn bill(
    versions: &[Version],
    spans: &[Span],
    from: i64,
    to: i64,
    ctx: &Context,
) -> Result<Bill, CostError> {
    let periods = priced_periods(versions, from, to)?;
    let thousand = Decimal::from(1000);
    let mut acc: Vec<VersionAcc> = versions
        .iter()
        .map(|v| VersionAcc {
            zones: vec![
                ZoneAcc {
                    charge_wh: vec![Decimal::ZERO; v.tariff.file.per_kwh_charges.len()],
                    ..ZoneAcc::default()
                };
                v.tariff.file.zones.len()
            ],
            overrides: vec![false; v.tariff.file.price_overrides.len()],
            ..VersionAcc::default()
        })
        .collect();
    let clip = |v: &Version| {
        let t = v.tariff;
        (
            from.max(t.valid_from_utc()),
            t.valid_to_utc().map_or(to, |x| to.min(x)),
        )
    };
    let charge_windows: Vec<Vec<(i64, i64)>> = versions
        .iter()
        .map(|v| {
            let (lo, hi) = clip(v);
            v.tariff
                .file
                .per_kwh_charges
                .iter()
                .map(|c| window(v.tariff, c.valid_from, c.valid_to, lo, hi))
                .collect()
        })
        .collect();
    let net_metering: Vec<bool> = versions
        .iter()
        .map(|v| v.tariff.export_rule().rule == ExportKind::NetMetering)
        .collect();
    let net_billing: Vec<bool> = versions
        .iter()
        .map(|v| v.tariff.export_rule().rule == ExportKind::NetBilling)
        .collect();
    for p in &periods {
        acc[p.version].zones[p.zone].occurs = true;
        if let Some(o) = p.overridden {
            acc[p.version].overrides[o] = true;
        }
    }

    let mut unpriced_wh = Decimal::ZERO;
    let mut total_import = Decimal::ZERO;
    for s in spans {
        let (start, end) = (s.start.max(from), s.end.min(to));
        if start >= end {
            continue;
        }
        let (imp, exp) = if start != s.start || end != s.end {
            let f = Decimal::from(end - start) / Decimal::from(s.end - s.start);
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
            let v = &versions[p.version];
            let va = &mut acc[p.version];
            let z = &mut va.zones[p.zone];
            let energy = i * p.energy_price / thousand;
            z.wh += i;
            z.energy += energy;
            z.distribution += i * p.distribution_price / thousand;
            z.export_wh += e;
            va.export_wh += e;
            let month = v.tariff.month_of(a);
            let zones_n = v.tariff.file.zones.len();
            if net_metering[p.version] {
                let r = reading_of(v.tariff, month, to);
                let e2 = va.by_reading.entry((r, p.zone)).or_default();
                e2.0 += i;
                e2.1 += e;
            }
            if net_billing[p.version] {
                *va.energy_by_month.entry((month, p.zone)).or_default() += energy;
            }
            for (ci, &(ca, cb)) in charge_windows[p.version].iter().enumerate() {
                let (x, y) = (a.max(ca), b.min(cb));
                if x < y {
                    let w = if x == a && y == b {
                        i
                    } else {
                        i * Decimal::from(y - x) / Decimal::from(b - a)
                    };
                    z.charge_wh[ci] += w;
                    let c = &v.tariff.file.per_kwh_charges[ci];
                    if c.part() == Part::Energy && net_billing[p.version] {
                        *va.energy_by_month.entry((month, zones_n + ci)).or_default() +=
                            w * c.net / thousand;
                    }
                }
            }
            if net_billing[p.version] {
                let mut at = a;
                while !e.is_zero() && at < b {
                    let hour = v.tariff.hour_start(at);
                    let next = (hour + 3600).min(b);
                    let part = if at == a && next == b {
                        e
                    } else {
                        e * Decimal::from(next - at) / Decimal::from(b - a)
                    };
                    *va.export_by_hour.entry(hour).or_default() += part;
                    at = next;
                }
            }
        }
        if priced_s < end - start {
            unpriced_wh += imp * Decimal::from(end - start - priced_s) / Decimal::from(end - start);
        }
    }

    let mut vat_base: Vec<BTreeMap<Decimal, Decimal>> = vec![BTreeMap::new(); versions.len()];
    let mut zones = Vec::new();
    let mut charges = Vec::new();
    let nm = settle_net_metering(versions, &acc, ctx);
    let mut offset_wh = Decimal::ZERO;
    for (vi, v) in versions.iter().enumerate() {
        let t = v.tariff;
        let rate = t.file.vat_percent;
        let ex = t.export_rule();
        let coefficient =
            (ex.rule == ExportKind::NetMetering).then(|| ex.coefficient.unwrap_or(Decimal::ONE));
        // Share of each zone's import still charged after net-metering offsets.
        let mut charged = vec![Decimal::ONE; t.file.zones.len()];
        for (zi, z) in acc[vi].zones.iter().enumerate() {
            if !z.occurs {
                continue; // the zone does not occur in the range
            }
            let offset =
                coefficient.map(|_| nm.offsets.get(&(vi, zi)).copied().unwrap_or_default());
            if let Some(o) = offset {
                offset_wh += o;
                if z.wh > Decimal::ZERO {
                    charged[zi] = (z.wh - o) / z.wh;
                }
            }
            let (energy_net, distribution_net) = (
                money(z.energy * charged[zi]),
                money(z.distribution * charged[zi]),
            );
            *vat_base[vi].entry(rate).or_default() += energy_net + distribution_net;
            zones.push(ZoneLine {
                tariff: t.file.name.clone(),
                valid_from: t.file.valid_from,
                zone: t.file.zones[zi].name.clone(),
                kwh: kwh(z.wh),
                offset_kwh: offset.map(kwh),
                energy_net,
                distribution_net,
                net: energy_net + distribution_net,
            });
        }
        for (ci, c) in t.file.per_kwh_charges.iter().enumerate() {
            let (ca, cb) = charge_windows[vi][ci];
            if ca >= cb {
                continue;
            }
            let wh: Decimal = acc[vi]
                .zones
                .iter()
                .zip(&charged)
                .map(|(z, f)| z.charge_wh[ci] * f)
                .sum();
            let net = money(wh * c.net / thousand);
            let vat_percent = c.vat_percent.unwrap_or(rate);
            *vat_base[vi].entry(vat_percent).or_default() += net;
            charges.push(ChargeLine {
                tariff: t.file.name.clone(),
                name: c.name.clone(),
                part: match c.part() {
                    Part::Energy => "energy",
                    Part::Distribution => "distribution",
                },
                kwh: kwh(wh),
                price: c.net,
                net,
                vat_percent,
            });
        }
    }

    let mut fixed_fees = Vec::new();
    let mut capacity_fees = Vec::new();
    for (vi, v) in versions.iter().enumerate() {
        let t = v.tariff;
        let (lo, hi) = clip(v);
        for fee in &t.file.fixed_monthly_fees {
            let (a, b) = window(t, fee.valid_from, fee.valid_to, lo, hi);
            let share = month_share(t, a, b);
            if share.is_zero() {
                continue;
            }
            let net = money(fee.net * share);
            let vat_percent = fee.vat_percent.unwrap_or(t.file.vat_percent);
            *vat_base[vi].entry(vat_percent).or_default() += net;
            fixed_fees.push(FeeLine {
                tariff: t.file.name.clone(),
                name: fee.name.clone(),
                months: share.round_dp(6).normalize(),
                net,
                vat_percent,
            });
        }
        let cycle = t.settlement().months;
        for fee in &t.file.subscription_fees {
            let (a, b) = window(t, fee.valid_from, fee.valid_to, lo, hi);
            let share = month_share(t, a, b);
            // Validated at import: every subscription fee has the tariff's cycle.
            let Some(monthly) = fee.net_for(cycle).filter(|_| !share.is_zero()) else {
                continue;
            };
            let net = money(monthly * share);
            let vat_percent = fee.vat_percent.unwrap_or(t.file.vat_percent);
            *vat_base[vi].entry(vat_percent).or_default() += net;
            fixed_fees.push(FeeLine {
                tariff: t.file.name.clone(),
                name: format!(
                    "{} ({monthly}/month, settled every {cycle} month{})",
                    fee.name,
                    if cycle == 1 { "" } else { "s" }
                ),
                months: share.round_dp(6).normalize(),
                net,
                vat_percent,
            });
        }
        for fee in &t.file.capacity_fees {
            let (a, b) = window(t, fee.valid_from, fee.valid_to, lo, hi);
            let vat_percent = fee.vat_percent.unwrap_or(t.file.vat_percent);
            // Per tier: (months, unrounded net, basis of its first month).
            let mut tiers: BTreeMap<usize, (Decimal, Decimal, String, Decimal, AnnualBasis)> =
                BTreeMap::new();
            let mut month = if a < b { Some(t.month_of(a)) } else { None };
            while let Some(m) = month {
                let next = m.checked_add_months(chrono::Months::new(1)).expect("date");
                let (ma, mb) = (t.day_start(m).max(a), t.day_start(next).min(b));
                if ma >= b {
                    break;
                }
                let share = month_share(t, ma, mb);
                let basis = match t.file.declared_annual_kwh {
                    Some(kwh) => AnnualBasis {
                        kwh,
                        source: "declared",
                        complete: true,
                        missing_hours: Decimal::ZERO,
                    },
                    None => ctx.annual.get(&m).cloned().unwrap_or(AnnualBasis {
                        kwh: Decimal::ZERO,
                        source: "measured",
                        complete: false,
                        missing_hours: Decimal::ZERO,
                    }),
                };
                let (ti, monthly, label) = fee.tier(basis.kwh);
                let e = tiers.entry(ti).or_insert((
                    Decimal::ZERO,
                    Decimal::ZERO,
                    label,
                    monthly,
                    basis,
                ));
                e.0 += share;
                e.1 += monthly * share;
                month = Some(next);
            }
            for (_, (months, net, tier, monthly_net, basis)) in tiers {
                let net = money(net);
                *vat_base[vi].entry(vat_percent).or_default() += net;
                capacity_fees.push(CapacityLine {
                    tariff: t.file.name.clone(),
                    name: fee.name.clone(),
                    tier,
                    monthly_net,
                    annual_kwh: basis.kwh.round_dp(3).normalize(),
                    basis: basis.source,
                    basis_complete: basis.complete,
                    basis_missing_hours: basis.missing_hours.round_dp(2).normalize(),
                    months: months.round_dp(6).normalize(),
                    net,
                    vat_percent,
                });
            }
        }
    }

    // VAT as an invoice computes it: per rate, over the sum of that rate's
    // rounded nets (of every tariff version), rounded once.
    let mut vat_lines: BTreeMap<Decimal, (Decimal, Decimal)> = BTreeMap::new();
    for bases in &vat_base {
        for (rate, base) in bases {
            vat_lines.entry(*rate).or_default().0 += base;
        }
    }
    for (rate, l) in vat_lines.iter_mut() {
        l.1 = money(l.0 * *rate / Decimal::from(100));
    }
    let vat_lines: Vec<VatLine> = vat_lines
        .into_iter()
        .map(|(vat_percent, (base, vat))| VatLine {
            vat_percent,
            base,
            vat,
        })
        .collect();
    let vat = money(vat_lines.iter().map(|l| l.vat).sum());
    let net = money(vat_base.iter().flat_map(|b| b.values()).copied().sum());
    let vat_percent = match vat_lines.as_slice() {
        [one] => Some(one.vat_percent),
        [] => {
            let rates: Vec<Decimal> = versions.iter().map(|v| v.tariff.file.vat_percent).collect();
            rates
                .first()
                .copied()
                .filter(|r| rates.iter().all(|x| x == r))
        }
        _ => None,
    };
    let gross = net + vat;

    let export = export_line(versions, &acc, ctx, (from, to), offset_wh, nm)?;
    let (paid, refunded) = export
        .deposit
        .as_ref()
        .map_or((Decimal::ZERO, Decimal::ZERO), |d| (d.paid, d.refunded));
    let mut overrides_applied = Vec::new();
    for (vi, v) in versions.iter().enumerate() {
        for (oi, o) in v.tariff.file.price_overrides.iter().enumerate() {
            if acc[vi].overrides[oi] {
                overrides_applied.push(format!("{} ({} – {})", o.name, o.valid_from, o.valid_to));
            }
        }
    }
    Ok(Bill {
        currency: versions
            .first()
            .map(|v| v.tariff.file.currency.clone())
            .unwrap_or_default(),
        zones,
        charges,
        fixed_fees,
        capacity_fees,
        net,
        vat_percent,
        vat_lines,
        vat,
        gross,
        total: money(gross - export.credit - paid - refunded),
        export,
        import_kwh: kwh(total_import),
        unpriced_kwh: kwh(unpriced_wh),
        overrides_applied,
    })
}

fn export_line(
    versions: &[Version],
    acc: &[VersionAcc],
    ctx: &Context,
    (from, to): (i64, i64),
    offset_wh: Decimal,
    nm: NetMetering,
) -> Result<ExportLine, CostError> {
    let thousand = Decimal::from(1000);
    let rules: Vec<_> = versions.iter().map(|v| v.tariff.export_rule()).collect();
    let name = |k: ExportKind| match k {
        ExportKind::None => "none",
        ExportKind::FixedPrice => "fixed_price",
        ExportKind::NetBilling => "net_billing",
        ExportKind::NetMetering => "net_metering",
    };
    let mut kinds: Vec<&'static str> = rules.iter().map(|r| name(r.rule)).collect();
    kinds.dedup();
    let rule = if kinds.len() == 1 { kinds[0] } else { "mixed" };
    let mut credit = money(Decimal::ZERO);
    let mut market = Decimal::ZERO;
    let mut earned_by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    let mut energy_by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    let mut deposit_months = None;
    let mut refund_percent = None;
    let mut cap_by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    // Every local month the net-billing versions cover: the deposit's
    // statement has a row for each (a month without import or export still
    // sees older deposits expire and be refunded).
    let mut period_months: BTreeSet<NaiveDate> = BTreeSet::new();
    for (vi, v) in versions.iter().enumerate() {
        let r = &rules[vi];
        let t = v.tariff;
        match r.rule {
            ExportKind::FixedPrice => {
                credit += money(acc[vi].export_wh * r.price.unwrap_or_default() / thousand)
            }
            ExportKind::NetBilling => {
                deposit_months.get_or_insert(r.deposit_months());
                let pct = *refund_percent.get_or_insert(r.refund_percent());
                let (a, b) = (
                    from.max(t.valid_from_utc()),
                    t.valid_to_utc().map_or(to, |x| to.min(x)),
                );
                if a < b {
                    let last = t.month_of(b - 1);
                    let mut m = t.month_of(a);
                    while m <= last {
                        period_months.insert(m);
                        m = m.checked_add_months(chrono::Months::new(1)).expect("date");
                    }
                }
                let mut value_by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
                for (&hour, &wh) in &acc[vi].export_by_hour {
                    if wh <= Decimal::ZERO {
                        continue;
                    }
                    let mut price =
                        hourly_export_price(v.export_prices, hour).ok_or_else(|| {
                            CostError::MissingExportPrice {
                                tariff: t.file.name.clone(),
                                hour: fmt_ts(t, hour),
                            }
                        })?;
                    if r.negative() == NegativePrice::Zero {
                        price = price.max(Decimal::ZERO);
                    }
                    *value_by_month.entry(t.month_of(hour)).or_default() += wh * price / thousand;
                }
                for (m, value) in value_by_month {
                    market += value;
                    *earned_by_month.entry(m).or_default() += money(value * r.multiplier());
                    *cap_by_month.entry(m).or_default() += money(value * pct / Decimal::from(100));
                }
                // The month's energy part as its invoice lines show it: each
                // line's net rounded, summed, then its VAT once.
                let gross_factor = Decimal::ONE + t.file.vat_percent / Decimal::from(100);
                let mut net_by_month: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
                for ((m, _), energy) in &acc[vi].energy_by_month {
                    *net_by_month.entry(*m).or_default() += money(*energy);
                }
                for (m, net) in net_by_month {
                    *energy_by_month.entry(m).or_default() += money(net * gross_factor);
                }
            }
            ExportKind::None | ExportKind::NetMetering => {}
        }
    }
    let deposit = deposit_months.map(|months| {
        settle_deposit(
            ctx.opening_deposit,
            &earned_by_month,
            &cap_by_month,
            &energy_by_month,
            &period_months,
            (months, refund_percent.unwrap_or_default()),
        )
    });
    let net_metering = rules.iter().any(|r| r.rule == ExportKind::NetMetering);
    Ok(ExportLine {
        rule,
        kwh: kwh(acc.iter().map(|a| a.export_wh).sum()),
        credit: money(credit),
        market_value: deposit.as_ref().map(|_| money(market)),
        deposit,
        offset_kwh: net_metering.then(|| kwh(offset_wh)),
        unused_kwh: net_metering.then(|| kwh(nm.unused_export_wh)),
        carried_in_kwh: net_metering.then(|| kwh(nm.from_carry_wh)),
        carry_out: nm.carry_out,
        expired_credit_kwh: net_metering.then(|| kwh(nm.expired_wh)),
    })
}

/// Month by month (every month of `period`, and any month credited or
/// charged outside it): the month's deposit is added; deposits `months` old
/// expire before the month is paid, each refunded up to its cap (the rest
/// lost); then the month's gross energy charge is paid from the oldest
/// deposits first. The opening balance counts as credited in the first
/// month, with no refund cap (its export's value is not known here).
fn settle_deposit(
    opening: Decimal,
    earned: &BTreeMap<NaiveDate, Decimal>,
    caps: &BTreeMap<NaiveDate, Decimal>,
    energy: &BTreeMap<NaiveDate, Decimal>,
    period: &BTreeSet<NaiveDate>,
    (months, refund_percent): (u32, Decimal),
) -> Deposit {
    struct Lot {
        label: String,
        month: NaiveDate,
        credited: Decimal,
        left: Decimal,
        cap: Decimal,
    }
    let expiry = |m: NaiveDate| {
        m.checked_add_months(chrono::Months::new(months))
            .expect("date")
    };
    let all: BTreeSet<NaiveDate> = earned
        .keys()
        .chain(energy.keys())
        .chain(period)
        .copied()
        .collect();
    let mut lots: Vec<Lot> = Vec::new();
    if let Some(first) = all.first() {
        if opening > Decimal::ZERO {
            lots.push(Lot {
                label: "opening".into(),
                month: *first,
                credited: opening,
                left: opening,
                cap: Decimal::ZERO,
            });
        }
    }
    let mut out = Deposit {
        opening: money(opening),
        earned: money(Decimal::ZERO),
        paid: money(Decimal::ZERO),
        refunded: money(Decimal::ZERO),
        refund_percent,
        expired: money(Decimal::ZERO),
        closing: money(Decimal::ZERO),
        months: Vec::new(),
        lots: Vec::new(),
    };
    let mut balance = opening;
    for m in all {
        let month_opening = if out.months.is_empty() {
            opening
        } else {
            balance
        };
        let e = earned.get(&m).copied().unwrap_or_default();
        if e > Decimal::ZERO {
            lots.push(Lot {
                label: m.format("%Y-%m").to_string(),
                month: m,
                credited: e,
                left: e,
                cap: caps.get(&m).copied().unwrap_or_default(),
            });
        }
        let (mut expired, mut refunded) = (Decimal::ZERO, Decimal::ZERO);
        for lot in lots
            .iter_mut()
            .filter(|l| expiry(l.month) <= m && l.left > Decimal::ZERO)
        {
            let back = lot.left.min(lot.cap);
            refunded += back;
            expired += lot.left - back;
            lot.left = Decimal::ZERO;
        }
        let energy_gross = energy.get(&m).copied().unwrap_or_default();
        let mut due = energy_gross.max(Decimal::ZERO);
        let mut paid = Decimal::ZERO;
        for lot in lots.iter_mut().filter(|l| l.left > Decimal::ZERO) {
            if due.is_zero() {
                break;
            }
            let take = lot.left.min(due);
            lot.left -= take;
            due -= take;
            paid += take;
        }
        balance = lots.iter().map(|l| l.left).sum();
        out.earned += e;
        out.paid += paid;
        out.refunded += refunded;
        out.expired += expired;
        out.months.push(DepositMonth {
            month: m.format("%Y-%m").to_string(),
            opening: money(month_opening),
            earned: money(e),
            energy_gross: money(energy_gross),
            paid: money(paid),
            refunded: money(refunded),
            expired: money(expired),
            balance: money(balance),
        });
    }
    out.lots = lots
        .iter()
        .map(|l| DepositLot {
            credited_for: l.label.clone(),
            credited: money(l.credited),
            left: money(l.left),
            refund_cap: money(l.cap),
            expires: expiry(l.month),
        })
        .collect();
    out.closing = money(out.opening + out.earned - out.paid - out.refunded - out.expired);
    (out.earned, out.paid, out.refunded, out.expired) = (
        money(out.earned),
        money(out.paid),
        money(out.refunded),
        money(out.expired),
    );
    out
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

    fn bill4(v: &[Version], s: &[Span], from: i64, to: i64) -> Result<Bill, CostError> {
        bill(v, s, from, to, &Context::default())
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// One tariff version without market prices, billed from `from` to `to`.
    fn bill_one(t: &Tariff, spans: &[Span], from: i64, to: i64, ctx: &Context) -> Bill {
        let v = [Version {
            tariff: t,
            prices: &[],
            export_prices: &[],
        }];
        bill(&v, spans, from, to, ctx).unwrap()
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    /// A small deterministic generator (xorshift), seeded per case: the
    /// property test needs no crate and is repeatable.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn tauron_g12_2026_prices_a_march_month_line_by_line() {
        // March 2026 (CET), 3-phase, settled monthly: 100 kWh in the day
        // zone (10:00 local) and 50 kWh at night (23:00 local); the 12
        // months before took 2,000 kWh (capacity tier 1200–2800).
        //   day:   100 × 0.5480 = 54.80 energy, 100 × 0.2841 = 28.41 distribution
        //   night:  50 × 0.4180 = 20.90,          50 × 0.0558 =  2.79
        //   quality 150 × 0.0332 = 4.98 (the February rate), OZE 150 × 0.0073
        //   = 1.095 → 1.10, cogeneration 150 × 0.0030 = 0.45
        //   fixed network 10.86, subscription (monthly) 4.56, capacity 17.18
        //   net 146.03, VAT 23 % = 33.5869 → 33.59, gross 179.62
        let t = Tariff::parse(
            EXAMPLES
                .iter()
                .find(|(n, _)| *n == "tauron-g12-2026")
                .unwrap()
                .1,
        )
        .unwrap();
        let span = |s: &str, wh: &str| Span {
            start: at(s),
            end: at(s) + 900,
            import_wh: d(wh),
            export_wh: Decimal::ZERO,
        };
        let spans = [
            span("2026-03-10T10:00:00+01:00", "100000"),
            span("2026-03-10T23:00:00+01:00", "50000"),
        ];
        let ctx = Context {
            annual: BTreeMap::from([(
                NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                AnnualBasis {
                    kwh: d("2000"),
                    source: "measured",
                    complete: true,
                    missing_hours: Decimal::ZERO,
                },
            )]),
            ..Context::default()
        };
        let b = bill_one(
            &t,
            &spans,
            at("2026-03-01T00:00:00+01:00"),
            at("2026-04-01T00:00:00+02:00"),
            &ctx,
        );
        let zones: Vec<(&str, Decimal, Decimal)> = b
            .zones
            .iter()
            .map(|z| (z.zone.as_str(), z.energy_net, z.distribution_net))
            .collect();
        assert_eq!(
            zones,
            [
                ("day", d("54.80"), d("28.41")),
                ("night", d("20.90"), d("2.79"))
            ]
        );
        let charges: Vec<(&str, Decimal)> =
            b.charges.iter().map(|c| (c.name.as_str(), c.net)).collect();
        assert_eq!(
            charges,
            [
                ("opłata jakościowa", d("4.98")),
                ("opłata OZE", d("1.10")),
                ("opłata kogeneracyjna", d("0.45"))
            ]
        );
        let fees: Vec<Decimal> = b.fixed_fees.iter().map(|f| f.net).collect();
        assert_eq!(fees, [d("10.86"), d("4.56")]);
        assert_eq!(b.capacity_fees[0].net, d("17.18"));
        assert_eq!(
            (b.net, b.vat, b.gross),
            (d("146.03"), d("33.59"), d("179.62"))
        );
    }

    #[test]
    fn transition_and_capacity_fees_take_each_months_tier_side_by_side() {
        // A 2025 tariff version with both tiered monthly fees, billed for
        // July and August 2025 as one bill. The 12 months before July took
        // 450 kWh, before August 1,300 kWh (a heat pump was installed), so
        // each fee changes tier between the months, and each tier is a line
        // of its own. The fees are Enea Operator's of July-December 2025 as
        // transcribed with its invoices (PanSzelescik/home-assistant-enea-
        // prices, tariffs.py, _G12W_MONTHLY_2025_H2): capacity 2.86 / 6.86 /
        // 11.44 / 16.01, transition 0.02 / 0.10 / 0.33 a month.
        //   July: 10 kWh at 0.5050 + 0.3620 (the g11 example's prices)
        //     energy 5.05, distribution 3.62
        //     quality 10 × 0.0331 = 0.331 → 0.33, OZE 0.073 → 0.07,
        //     cogeneration 0.030 → 0.03
        //   fixed: trade fee 2 × 9.99 = 19.98, network 2 × 11.20 = 22.40
        //   capacity:   July ≤ 500 kWh 2.86, August 1200–2800 11.44
        //   transition: July ≤ 500 kWh 0.02, August > 1200 kWh 0.33
        //   net 5.05 + 3.62 + 0.33 + 0.07 + 0.03 + 19.98 + 22.40 + 2.86
        //     + 11.44 + 0.02 + 0.33 = 66.13
        //   VAT 23 % = 15.2099 → 15.21, gross 81.34
        let mut j: serde_json::Value =
            serde_json::from_str(EXAMPLES.iter().find(|(e, _)| *e == "g11").unwrap().1).unwrap();
        j["valid_from"] = "2025-01-01".into();
        let tiers = |a: &str, b: &str, c: &str, d: Option<&str>| {
            let mut t = vec![
                serde_json::json!({"up_to_kwh": "500", "net": a}),
                serde_json::json!({"up_to_kwh": "1200", "net": b}),
            ];
            match d {
                Some(d) => {
                    t.push(serde_json::json!({"up_to_kwh": "2800", "net": c}));
                    t.push(serde_json::json!({"net": d}));
                }
                None => t.push(serde_json::json!({"net": c})),
            }
            t
        };
        j["capacity_fees"] = serde_json::json!([
            {"name": "opłata mocowa", "tiers": tiers("2.86", "6.86", "11.44", Some("16.01"))},
            {"name": "opłata przejściowa", "valid_to": "2026-01-01",
             "tiers": tiers("0.02", "0.10", "0.33", None)},
        ]);
        let t = Tariff::parse(&j.to_string()).unwrap();
        let basis = |kwh: &str| AnnualBasis {
            kwh: d(kwh),
            source: "measured",
            complete: true,
            missing_hours: Decimal::ZERO,
        };
        let ctx = Context {
            annual: BTreeMap::from([
                (NaiveDate::from_ymd_opt(2025, 7, 1).unwrap(), basis("450")),
                (NaiveDate::from_ymd_opt(2025, 8, 1).unwrap(), basis("1300")),
            ]),
            ..Context::default()
        };
        let spans = [Span {
            start: at("2025-07-15T10:00:00+02:00"),
            end: at("2025-07-15T11:00:00+02:00"),
            import_wh: d("10000"),
            export_wh: Decimal::ZERO,
        }];
        let b = bill_one(
            &t,
            &spans,
            at("2025-07-01T00:00:00+02:00"),
            at("2025-09-01T00:00:00+02:00"),
            &ctx,
        );
        let tiered: Vec<(&str, &str, Decimal, Decimal)> = b
            .capacity_fees
            .iter()
            .map(|c| (c.name.as_str(), c.tier.as_str(), c.months, c.net))
            .collect();
        assert_eq!(
            tiered,
            [
                ("opłata mocowa", "≤ 500 kWh", d("1"), d("2.86")),
                ("opłata mocowa", "1200–2800 kWh", d("1"), d("11.44")),
                ("opłata przejściowa", "≤ 500 kWh", d("1"), d("0.02")),
                ("opłata przejściowa", "> 1200 kWh", d("1"), d("0.33")),
            ]
        );
        let fees: Vec<Decimal> = b.fixed_fees.iter().map(|f| f.net).collect();
        assert_eq!(fees, [d("19.98"), d("22.40")]);
        let charges: Vec<Decimal> = b.charges.iter().map(|c| c.net).collect();
        assert_eq!(charges, [d("0.33"), d("0.07"), d("0.03")]);
        assert_eq!(
            (b.zones[0].energy_net, b.zones[0].distribution_net),
            (d("5.05"), d("3.62"))
        );
        assert_eq!(
            (b.net, b.vat, b.gross),
            (d("66.13"), d("15.21"), d("81.34"))
        );
    }

    #[test]
    fn every_printed_total_is_the_sum_of_its_printed_lines() {
        // Random bills (200 cases) under the shipped example tariffs: random
        // records of random lengths and energies over a month that crosses
        // the October DST change, split by zones, per-kWh charges and fees.
        // Whatever the numbers, the bill must add up as printed: each zone
        // line is its energy plus distribution; the net is the sum of every
        // line; each VAT line is its base at its rate, rounded once, and the
        // bases sum to the net; the VAT is the sum of the VAT lines; gross
        // is net + VAT; the total is gross less the credit and the deposit.
        let tariffs: Vec<Tariff> = ["g11", "g12", "g12w", "pge-g12-2026", "tauron-g11-2026"]
            .iter()
            .map(|n| Tariff::parse(EXAMPLES.iter().find(|(e, _)| e == n).unwrap().1).unwrap())
            .collect();
        // And g11 in two versions (from October 16th), whose VAT is one
        // computation over both.
        let version = |from: &str, to: Option<&str>| {
            let mut j: serde_json::Value =
                serde_json::from_str(EXAMPLES.iter().find(|(e, _)| *e == "g11").unwrap().1)
                    .unwrap();
            j["valid_from"] = from.into();
            if let Some(to) = to {
                j["valid_to"] = to.into();
            }
            Tariff::parse(&j.to_string()).unwrap()
        };
        let split = [
            version("2026-01-01", Some("2026-10-16")),
            version("2026-10-16", None),
        ];
        let (from, to) = (
            at("2026-10-01T00:00:00+02:00"),
            at("2026-11-01T00:00:00+01:00"),
        );
        for case in 0..200u64 {
            let mut rng =
                Rng(0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let v: Vec<Version> = if case % 4 == 3 {
                split
                    .iter()
                    .map(|t| Version {
                        tariff: t,
                        prices: &[],
                        export_prices: &[],
                    })
                    .collect()
            } else {
                vec![Version {
                    tariff: &tariffs[(case % 4) as usize],
                    prices: &[],
                    export_prices: &[],
                }]
            };
            let t = v[0].tariff;
            let mut spans = Vec::new();
            let mut at_s = from + rng.below(3600) as i64;
            while at_s < to {
                let len = [60, 300, 900, 1800, 3600][rng.below(5) as usize];
                let end = (at_s + len).min(to);
                // Up to 9.999 kWh, in Wh with up to 4 decimals.
                let wh = Decimal::new(rng.below(100_000_000) as i64, 4);
                spans.push(Span {
                    start: at_s,
                    end,
                    import_wh: wh,
                    export_wh: Decimal::ZERO,
                });
                at_s = end + [0, 0, 0, 300, 7200][rng.below(5) as usize];
            }
            let b = bill4(&v, &spans, from, to).unwrap();
            let why = format!("case {case} ({}, {} spans)", t.file.name, spans.len());
            for z in &b.zones {
                assert_eq!(z.net, z.energy_net + z.distribution_net, "{why}");
            }
            let lines: Decimal = b.zones.iter().map(|z| z.net).sum::<Decimal>()
                + b.charges.iter().map(|c| c.net).sum::<Decimal>()
                + b.fixed_fees.iter().map(|f| f.net).sum::<Decimal>()
                + b.capacity_fees.iter().map(|c| c.net).sum::<Decimal>();
            assert_eq!(b.net, lines, "{why}: net is the sum of the lines");
            assert_eq!(
                b.vat_lines.iter().map(|l| l.base).sum::<Decimal>(),
                b.net,
                "{why}: the VAT bases are the net"
            );
            for l in &b.vat_lines {
                assert_eq!(
                    l.vat,
                    money(l.base * l.vat_percent / Decimal::from(100)),
                    "{why}"
                );
            }
            assert_eq!(
                b.vat,
                b.vat_lines.iter().map(|l| l.vat).sum::<Decimal>(),
                "{why}"
            );
            assert_eq!(b.gross, b.net + b.vat, "{why}");
            let paid = b.export.deposit.as_ref().map_or(Decimal::ZERO, |d| d.paid);
            assert_eq!(b.total, b.gross - b.export.credit - paid, "{why}");
            // Every printed amount has two decimals.
            for m in [b.net, b.vat, b.gross, b.total] {
                assert!(m.scale() <= 2, "{why}: {m}");
            }
        }
    }

    #[test]
    fn a_span_across_a_zone_boundary_is_split_pro_rata() {
        let g12 = Tariff::parse(EXAMPLES[1].1).unwrap();
        let v = [Version {
            tariff: &g12,
            prices: &[],
            export_prices: &[],
        }];
        // 2026-06-03 (Wednesday) 12:50-13:10 CEST = 10:50-11:10 UTC; 13:00 is peak→offpeak.
        let span = Span {
            start: at("2026-06-03T10:50:00Z"),
            end: at("2026-06-03T11:10:00Z"),
            import_wh: d("300"),
            export_wh: d("0"),
        };
        let b = bill4(
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
    fn deposits_pay_oldest_first_then_are_partly_refunded_and_partly_expire() {
        let m = |s: &str| NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").unwrap();
        // 10.00 earned in Jan 2026 (export market value 8.13 × 1.23 =
        // 9.9999 → 10.00; refund cap 20 % × 8.13 = 1.626 → 1.63) and 3.00
        // in Feb 2026 (cap 0.49), usable for 12 months.
        // Feb 2026: energy 4.00 paid from January's (6.00 left of it).
        // Jan 2027: January's 6.00 are 12 months old: 1.63 refunded, 4.37
        // lost; February's 3.00 pay 3.00 of 5.00. Feb 2027: nothing left
        // for 1.00, and February's lot is used up (nothing to refund).
        let earned = BTreeMap::from([(m("2026-01"), d("10.00")), (m("2026-02"), d("3.00"))]);
        let caps = BTreeMap::from([(m("2026-01"), d("1.63")), (m("2026-02"), d("0.49"))]);
        let energy = BTreeMap::from([
            (m("2026-02"), d("4.00")),
            (m("2027-01"), d("5.00")),
            (m("2027-02"), d("1.00")),
        ]);
        let dep = settle_deposit(
            Decimal::ZERO,
            &earned,
            &caps,
            &energy,
            &BTreeSet::new(),
            (12, d("20")),
        );
        let rows: Vec<(&str, [Decimal; 5])> = dep
            .months
            .iter()
            .map(|x| {
                (
                    x.month.as_str(),
                    [x.opening, x.paid, x.refunded, x.expired, x.balance],
                )
            })
            .collect();
        let z = d("0.00");
        assert_eq!(
            rows,
            [
                ("2026-01", [z, z, z, z, d("10.00")]),
                ("2026-02", [d("10.00"), d("4.00"), z, z, d("9.00")]),
                ("2027-01", [d("9.00"), d("3.00"), d("1.63"), d("4.37"), z]),
                ("2027-02", [z, z, z, z, z]),
            ]
        );
        // Every month: opening + earned − paid − refunded − expired = balance.
        for x in &dep.months {
            assert_eq!(
                x.opening + x.earned - x.paid - x.refunded - x.expired,
                x.balance
            );
        }
        assert_eq!(
            (dep.earned, dep.paid, dep.refunded, dep.expired, dep.closing),
            (d("13.00"), d("7.00"), d("1.63"), d("4.37"), d("0.00"))
        );
        let lots: Vec<(&str, Decimal, NaiveDate)> = dep
            .lots
            .iter()
            .map(|l| (l.credited_for.as_str(), l.left, l.expires))
            .collect();
        assert_eq!(
            lots,
            [("2026-01", z, m("2027-01")), ("2026-02", z, m("2027-02"))]
        );

        // An opening balance has no refund cap: it expires wholly.
        let dep = settle_deposit(
            d("2.00"),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::from([(m("2026-01"), d("0")), (m("2027-01"), d("0"))]),
            &BTreeSet::new(),
            (12, d("20")),
        );
        assert_eq!((dep.refunded, dep.expired, dep.closing), (z, d("2.00"), z));

        // A deposit expires in its month even when that month has no
        // import: January 2026's 10.00, never used, is refunded (1.63) and
        // lost (8.37) in January 2027, and the statement has all 13 months.
        let period: BTreeSet<NaiveDate> = (0..13)
            .map(|i| m("2026-01") + chrono::Months::new(i))
            .collect();
        let dep = settle_deposit(
            Decimal::ZERO,
            &BTreeMap::from([(m("2026-01"), d("10.00"))]),
            &BTreeMap::from([(m("2026-01"), d("1.63"))]),
            &BTreeMap::new(),
            &period,
            (12, d("20")),
        );
        assert_eq!(dep.months.len(), 13);
        let last = dep.months.last().unwrap();
        assert_eq!(
            (
                last.month.as_str(),
                last.refunded,
                last.expired,
                last.balance
            ),
            ("2027-01", d("1.63"), d("8.37"), z)
        );
        assert_eq!(dep.closing, z);
    }

    #[test]
    fn an_hourly_export_price_needs_the_whole_hour() {
        let q = |start: i64, p: &str| Price {
            start,
            end: start + 900,
            price: d(p),
        };
        let prices = [q(0, "0.4"), q(900, "-0.2"), q(1800, "0"), q(2700, "0.2")];
        assert_eq!(hourly_export_price(&prices, 0), Some(d("0.1")));
        assert_eq!(hourly_export_price(&prices[..3], 0), None);
        assert_eq!(hourly_export_price(&prices[1..], 0), None);
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
            export_prices: &[],
        }];
        let e = bill4(
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
            export_prices: &[],
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
        let b = bill4(&v, &spans, start, start + 105_120 * 300).unwrap();
        assert_eq!(b.import_kwh, d("10.512"));
        assert_eq!(b.export.kwh, d("0.010512"));
        // 10.512 kWh × 0.5050 = 5.30856 → 5.31; × 0.3620 = 3.805344 → 3.81
        let z = &b.zones[0];
        assert_eq!((z.energy_net, z.distribution_net), (d("5.31"), d("3.81")));
    }
}

//! `shellyctl report costs`: what the electricity cost, as the seller bills
//! it: measured energy, billed energy after the tariff's balancing rule,
//! zone prices, per-kWh charges, fees, the capacity fee, VAT, and export
//! (credit, net-billing deposit or net-metering offset). `--compare` prices
//! the same records under several tariffs.

use crate::db::{self, energy, tariffs};
use crate::exit::{ConfigError, ExitKind, UsageError};
use crate::output::{self, printable, Report};
use crate::settings::GlobalArgs;
use crate::tariff::balance::{self, MeterSpan};
use crate::tariff::cost::{bill, AnnualBasis, Bill, Context, Price, Span, Version};
use crate::tariff::{Balancing, ExportKind, Kind, Tariff};
use crate::timerange::{parse_date, parse_month, Zone};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct CostsArgs {
    /// A calendar month (YYYY-MM) in the tariff's time zone.
    #[arg(long, value_parser = parse_month, conflicts_with_all = ["year", "from", "to"])]
    pub month: Option<NaiveDate>,
    /// A calendar year (YYYY).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub year: Option<i32>,
    /// First local day (inclusive).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Last local day (inclusive; default: --from).
    #[arg(long, value_parser = parse_date, requires = "from")]
    pub to: Option<NaiveDate>,
    /// The tariff (required when several are stored).
    #[arg(long, conflicts_with = "compare")]
    pub tariff: Option<String>,
    /// Price the same period and records under several tariffs side by side
    /// (comma-separated names), with each one's difference to the cheapest.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub compare: Vec<String>,
    /// Only these devices (repeatable). Default: the meters marked as the
    /// grid connection (`shellyctl device set-role ID grid`), or the only
    /// meter with data.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Net-billing: the prosumer deposit left from before the period (in
    /// the tariff's currency); it pays energy charges before newer deposits.
    #[arg(long, default_value = "0")]
    pub opening_deposit: Decimal,
    /// Whose readings to price: `shelly` (the interval records), or `ami`
    /// (the distribution operator's hourly readings imported with `shellyctl
    /// ami import`: its hourly-balanced values where the file has them,
    /// otherwise balanced here per hour). Default: the Shelly's, and beside
    /// them the DSO's total and the difference when DSO readings of the
    /// period are imported.
    #[arg(long, value_enum)]
    pub data: Option<DataSource>,
    /// The point of delivery whose DSO readings to use (default: the one
    /// linked to the grid meter, else the only one imported).
    #[arg(long)]
    pub pod: Option<String>,
    /// The seller's settlement period holding this month (YYYY-MM), or
    /// exactly one period (YYYY-MM..YYYY-MM), as the tariff's `settlement`
    /// cuts them: the bill of the whole period (net-metering netted over
    /// it), with the settlement line when --forecast is given.
    #[arg(long, conflicts_with_all = ["month", "year", "from", "to"])]
    pub settlement: Option<String>,
    /// A forecast invoice of the settlement period, gross, as the seller
    /// issued it (repeatable): the settlement line is the period's total
    /// minus these, to pay or to be returned.
    #[arg(
        long = "forecast",
        requires = "settlement",
        conflicts_with = "compare",
        allow_hyphen_values = true
    )]
    pub forecasts: Vec<Decimal>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataSource {
    /// The Shelly's interval records.
    Shelly,
    /// The distribution operator's hourly readings (`ami import`).
    Ami,
}

#[derive(Serialize)]
struct Coverage {
    device_id: String,
    covered_s: i64,
    expected_s: i64,
    /// covered / expected, 4 decimals; below 1 means missing intervals.
    ratio: Decimal,
    /// Local hours (the tariff's zone) that records cover only in part
    /// (an interval missing inside the hour), the first 48; hours with no
    /// record at all are in `report gaps`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partly_covered_hours: Vec<String>,
    /// How many hours are partly covered in all.
    #[serde(skip_serializing_if = "is_zero")]
    partly_covered_count: i64,
    /// DSO readings: the local hours the imported file lacks (the first
    /// 48) and how many in all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_hours: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    missing_count: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Measured {
    device_id: String,
    phase: String,
    import_kwh: Decimal,
    export_kwh: Decimal,
}

#[derive(Serialize)]
struct CostsReport {
    tariff: String,
    /// Whose readings are priced: `shelly` or `ami` (the DSO's).
    data: &'static str,
    /// The point of delivery, when the DSO's readings are priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<String>,
    time_zone: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    devices: Vec<String>,
    /// none, per_record or hourly (of the first version in the period).
    balancing: &'static str,
    /// What the meters registered, summed over phases (before balancing).
    measured_import_kwh: Decimal,
    measured_export_kwh: Decimal,
    /// Import and export that cancelled out under the balancing rule.
    self_consumed_kwh: Decimal,
    measured: Vec<Measured>,
    #[serde(flatten)]
    bill: Bill,
    coverage: Vec<Coverage>,
    complete: bool,
    /// Every rule that shaped the numbers, in words.
    notes: Vec<String>,
    /// `--settlement`: the period and, with forecast invoices, what is left
    /// to pay or to be returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement: Option<SettlementLine>,
    /// The same tariff over the DSO's readings, when they are imported for
    /// the period (Shelly bills only).
    #[serde(skip_serializing_if = "Option::is_none")]
    dso: Option<DsoTotal>,
}

/// The settlement of one period: its total against the forecast invoices.
#[derive(Serialize)]
struct SettlementLine {
    /// First and last month, `YYYY-MM..YYYY-MM`.
    period: String,
    months: u32,
    total: Decimal,
    forecast_invoices: Vec<Decimal>,
    forecast_total: Decimal,
    /// total − forecast_total: above 0 to pay, below 0 to be returned.
    balance: Decimal,
    /// `to pay`, `to return` or `settled`.
    verdict: &'static str,
}

/// The DSO readings' bill beside the Shelly's.
#[derive(Serialize)]
struct DsoTotal {
    pod: String,
    import_kwh: Decimal,
    export_kwh: Decimal,
    total: Decimal,
    /// Shelly total − DSO total.
    difference: Decimal,
    /// Whether the DSO's readings cover every hour of the period.
    complete: bool,
}

#[derive(Tabled)]
struct Row {
    item: String,
    #[tabled(rename = "kWh")]
    kwh: String,
    energy: String,
    distribution: String,
    net: String,
}

fn row(item: String, kwh: String, energy: String, distribution: String, net: String) -> Row {
    Row {
        item,
        kwh,
        energy,
        distribution,
        net,
    }
}

impl Report for CostsReport {
    fn table(&self) -> String {
        let b = &self.bill;
        let many_versions = b
            .zones
            .iter()
            .map(|z| z.valid_from)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1;
        let e = String::new;
        let mut rows: Vec<Row> = b
            .zones
            .iter()
            .map(|z| {
                let mut item = if many_versions {
                    format!("{} (from {})", z.zone, z.valid_from)
                } else {
                    z.zone.clone()
                };
                if let Some(o) = z.offset_kwh.filter(|o| !o.is_zero()) {
                    item.push_str(&format!(" (offset {} kWh)", o.round_dp(3)));
                }
                row(
                    item,
                    z.kwh.round_dp(3).to_string(),
                    z.energy_net.to_string(),
                    z.distribution_net.to_string(),
                    z.net.to_string(),
                )
            })
            .collect();
        for c in &b.charges {
            let (en, dist) = if c.part == "energy" {
                (c.net.to_string(), e())
            } else {
                (e(), c.net.to_string())
            };
            rows.push(row(
                format!("{} × {}/kWh", c.name, c.price),
                c.kwh.round_dp(3).to_string(),
                en,
                dist,
                c.net.to_string(),
            ));
        }
        for f in &b.fixed_fees {
            rows.push(row(
                format!("{} × {}", f.name, f.months),
                e(),
                e(),
                e(),
                f.net.to_string(),
            ));
        }
        for c in &b.capacity_fees {
            rows.push(row(
                format!("{} ({}) × {}", c.name, c.tier, c.months),
                e(),
                e(),
                e(),
                c.net.to_string(),
            ));
        }
        let mut out = format!(
            "{}{} {} – {} ({}), balancing {}\n",
            self.tariff,
            match &self.pod {
                Some(p) => format!(" over the DSO's readings of {}", printable(p)),
                None => String::new(),
            },
            self.from.format("%Y-%m-%d %H:%M UTC"),
            self.to.format("%Y-%m-%d %H:%M UTC"),
            self.time_zone,
            self.balancing
        );
        out.push_str(&format!(
            "measured: import {} kWh, export {} kWh; billed: import {} kWh, export {} kWh; self-consumed {} kWh\n",
            self.measured_import_kwh.round_dp(3),
            self.measured_export_kwh.round_dp(3),
            b.import_kwh.round_dp(3),
            b.export.kwh.round_dp(3),
            self.self_consumed_kwh.round_dp(3)
        ));
        out.push_str(&output::table(rows));
        let vat = match b.vat_percent {
            Some(v) => format!("{v}% {}", b.vat),
            None => b
                .vat_lines
                .iter()
                .map(|l| format!("{}% of {}: {}", l.vat_percent, l.base, l.vat))
                .collect::<Vec<_>>()
                .join(", "),
        };
        out.push_str(&format!(
            "net {} {}   VAT {vat}   gross {}\n",
            b.net, b.currency, b.gross
        ));
        let x = &b.export;
        if x.kwh > Decimal::ZERO
            || x.credit > Decimal::ZERO
            || x.deposit.is_some()
            || x.offset_kwh.is_some_and(|o| o > Decimal::ZERO)
            || !x.carry_out.is_empty()
        {
            out.push_str(&format!("exported {} kWh ({})", x.kwh.round_dp(3), x.rule));
            if x.rule == "fixed_price" || x.credit > Decimal::ZERO {
                out.push_str(&format!(", credit {}", x.credit));
            }
            if let Some(m) = x.market_value {
                out.push_str(&format!(", market value {m}"));
            }
            if let (Some(o), Some(u)) = (x.offset_kwh, x.unused_kwh) {
                out.push_str(&format!(
                    ", offsets {} kWh of import, {} kWh unused",
                    o.round_dp(3),
                    u.round_dp(3)
                ));
            }
            if let Some(c) = x.carried_in_kwh.filter(|c| !c.is_zero()) {
                out.push_str(&format!(
                    ", {} kWh of it by surplus carried from earlier periods",
                    c.round_dp(3)
                ));
            }
            out.push('\n');
            for c in &x.carry_out {
                out.push_str(&format!(
                    "  surplus carried: {} kWh of {} import (from the reading of {}), usable until the reading of {}\n",
                    c.kwh.round_dp(3),
                    printable(&c.zone),
                    c.dated,
                    c.last_usable
                ));
            }
            if let Some(e) = x.expired_credit_kwh.filter(|e| !e.is_zero()) {
                out.push_str(&format!(
                    "  surplus expired unused (365 days): {} kWh of import\n",
                    e.round_dp(3)
                ));
            }
            if let Some(d) = &x.deposit {
                out.push_str(&format!(
                    "deposit: opening {}, earned {}, paid {} (energy only), refunded {}, expired {}, closing {}\n",
                    d.opening, d.earned, d.paid, d.refunded, d.expired, d.closing
                ));
                for l in d.lots.iter().filter(|l| l.left > Decimal::ZERO) {
                    out.push_str(&format!(
                        "  deposit credited for {}: {} of {} left, usable until {} (then up to {} refunded)\n",
                        l.credited_for,
                        l.left,
                        l.credited,
                        l.expires.pred_opt().unwrap_or(l.expires),
                        l.refund_cap
                    ));
                }
            }
        }
        out.push_str(&format!("total {} {}\n", b.total, b.currency));
        if let Some(st) = &self.settlement {
            out.push_str(&format!(
                "settlement {} (every {} month{}): total {} − forecast invoices {}{} = {} {} {}\n",
                st.period,
                st.months,
                if st.months == 1 { "" } else { "s" },
                st.total,
                st.forecast_total,
                if st.forecast_invoices.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        st.forecast_invoices
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join(" + ")
                    )
                },
                st.verdict,
                st.balance.abs(),
                b.currency
            ));
        }
        if b.unpriced_kwh > Decimal::ZERO {
            out.push_str(&format!(
                "warning: {} kWh fall outside the tariff's validity and are not priced\n",
                b.unpriced_kwh.round_dp(3)
            ));
        }
        if let Some(d) = &self.dso {
            out.push_str(&format!(
                "DSO readings of {} (same tariff): import {} kWh, export {} kWh, total {} {}; Shelly − DSO {} {}{}\n",
                printable(&d.pod),
                d.import_kwh.round_dp(3),
                d.export_kwh.round_dp(3),
                d.total,
                b.currency,
                d.difference,
                b.currency,
                if d.complete { "" } else { " (the DSO's readings miss hours of the period)" }
            ));
        }
        for c in &self.coverage {
            if c.missing_count > 0 {
                out.push_str(&format!(
                    "warning: the DSO's readings of {} lack {} hour(s) of the period: {}{}; costs are incomplete (import those days with `shellyctl ami import`)\n",
                    printable(&c.device_id),
                    c.missing_count,
                    c.missing_hours.join(", "),
                    if c.missing_count > c.missing_hours.len() as i64 { ", ..." } else { "" }
                ));
                continue;
            }
            if c.ratio < Decimal::ONE {
                out.push_str(&format!(
                    "warning: {} has interval data for {:.2}% of the period ({:.2} h missing); costs are incomplete (see `report gaps`)\n",
                    printable(&c.device_id),
                    c.ratio * Decimal::from(100),
                    Decimal::from(c.expected_s - c.covered_s) / Decimal::from(3600)
                ));
                if c.partly_covered_count > 0 {
                    out.push_str(&format!(
                        "warning: {} hour(s) of {} are billed from part of their records: {}{}\n",
                        c.partly_covered_count,
                        printable(&c.device_id),
                        c.partly_covered_hours.join(", "),
                        if c.partly_covered_count > c.partly_covered_hours.len() as i64 {
                            ", ..."
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note: {}\n", printable(n)));
        }
        out
    }

    fn csv(&self) -> Option<Vec<Vec<String>>> {
        let b = &self.bill;
        let c = b.currency.as_str();
        let e = "";
        let mut rows = vec![crate::csv_row![
            "item",
            "tariff",
            "valid_from",
            "kwh",
            "energy_net",
            "distribution_net",
            "net",
            "currency"
        ]];
        for z in &b.zones {
            rows.push(crate::csv_row![
                format!("zone:{}", z.zone),
                z.tariff,
                z.valid_from,
                z.kwh,
                z.energy_net,
                z.distribution_net,
                z.net,
                c
            ]);
        }
        for ch in &b.charges {
            let (en, dist) = if ch.part == "energy" {
                (ch.net.to_string(), String::new())
            } else {
                (String::new(), ch.net.to_string())
            };
            rows.push(crate::csv_row![
                format!("charge:{}", ch.name),
                ch.tariff,
                e,
                ch.kwh,
                en,
                dist,
                ch.net,
                c
            ]);
        }
        for f in &b.fixed_fees {
            rows.push(crate::csv_row![
                format!("fee:{}", f.name),
                f.tariff,
                e,
                e,
                e,
                e,
                f.net,
                c
            ]);
        }
        for f in &b.capacity_fees {
            rows.push(crate::csv_row![
                format!("capacity:{} ({})", f.name, f.tier),
                f.tariff,
                e,
                e,
                e,
                e,
                f.net,
                c
            ]);
        }
        let line = |item: &str, kwh: String, money: String, cur: &str| {
            crate::csv_row![item, e, e, kwh, e, e, money, cur]
        };
        rows.push(line(
            "measured_import",
            self.measured_import_kwh.to_string(),
            String::new(),
            e,
        ));
        rows.push(line(
            "measured_export",
            self.measured_export_kwh.to_string(),
            String::new(),
            e,
        ));
        rows.push(line(
            "self_consumed",
            self.self_consumed_kwh.to_string(),
            String::new(),
            e,
        ));
        rows.push(line("net", b.import_kwh.to_string(), b.net.to_string(), c));
        rows.push(line("vat", String::new(), b.vat.to_string(), c));
        rows.push(line("gross", String::new(), b.gross.to_string(), c));
        rows.push(line(
            "export_credit",
            b.export.kwh.to_string(),
            b.export.credit.to_string(),
            c,
        ));
        if let Some(d) = &b.export.deposit {
            rows.push(line(
                "deposit_earned",
                String::new(),
                d.earned.to_string(),
                c,
            ));
            rows.push(line("deposit_paid", String::new(), d.paid.to_string(), c));
            rows.push(line(
                "deposit_refunded",
                String::new(),
                d.refunded.to_string(),
                c,
            ));
            rows.push(line(
                "deposit_closing",
                String::new(),
                d.closing.to_string(),
                c,
            ));
        }
        rows.push(line("total", String::new(), b.total.to_string(), c));
        if let Some(st) = &self.settlement {
            rows.push(line(
                "forecast_invoices",
                String::new(),
                st.forecast_total.to_string(),
                c,
            ));
            rows.push(line(
                "settlement_balance",
                String::new(),
                st.balance.to_string(),
                c,
            ));
        }
        if let Some(d) = &self.dso {
            rows.push(line("dso_total", String::new(), d.total.to_string(), c));
            rows.push(line(
                "shelly_minus_dso",
                String::new(),
                d.difference.to_string(),
                c,
            ));
        }
        Some(rows)
    }
}

/// `--compare`: one line per tariff.
#[derive(Serialize)]
struct CompareReport {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    devices: Vec<String>,
    cheapest: String,
    tariffs: Vec<CompareLine>,
    complete: bool,
}

#[derive(Serialize, Tabled)]
struct CompareLine {
    tariff: String,
    balancing: String,
    #[tabled(rename = "billed kWh")]
    import_kwh: Decimal,
    net: Decimal,
    gross: Decimal,
    #[tabled(rename = "export credit")]
    export_credit: Decimal,
    #[tabled(rename = "deposit paid")]
    deposit_paid: Decimal,
    total: Decimal,
    /// Total minus the cheapest total.
    #[tabled(rename = "vs cheapest")]
    difference: Decimal,
    currency: String,
}

impl Report for CompareReport {
    fn table(&self) -> String {
        let mut out = format!(
            "{} – {}: cheapest {}\n",
            self.from.format("%Y-%m-%d %H:%M UTC"),
            self.to.format("%Y-%m-%d %H:%M UTC"),
            self.cheapest
        );
        out.push_str(&output::table(&self.tariffs));
        if !self.complete {
            out.push_str("warning: interval data are incomplete for the period (see `report costs --tariff NAME` for coverage)\n");
        }
        out
    }

    fn csv(&self) -> Option<Vec<Vec<String>>> {
        let mut rows = vec![crate::csv_row![
            "tariff",
            "balancing",
            "import_kwh",
            "net",
            "gross",
            "export_credit",
            "deposit_paid",
            "total",
            "difference",
            "currency"
        ]];
        for l in &self.tariffs {
            rows.push(crate::csv_row![
                l.tariff,
                l.balancing,
                l.import_kwh,
                l.net,
                l.gross,
                l.export_credit,
                l.deposit_paid,
                l.total,
                l.difference,
                l.currency
            ]);
        }
        Some(rows)
    }
}

/// The tariff names to price: `--compare`, `--tariff`, or the only one.
fn tariff_names(client: &mut db::Client, args: &CostsArgs) -> anyhow::Result<Vec<String>> {
    if !args.compare.is_empty() {
        return Ok(args.compare.clone());
    }
    if let Some(n) = &args.tariff {
        return Ok(vec![n.clone()]);
    }
    let names = tariffs::names(client)?;
    match names.as_slice() {
        [one] => Ok(vec![one.clone()]),
        [] => Err(ConfigError(
            "no tariffs stored; import one with `shellyctl tariff import FILE.json`".into(),
        )
        .into()),
        many => Err(ConfigError(format!(
            "several tariffs are stored ({}); choose one with --tariff, or --compare them",
            many.join(", ")
        ))
        .into()),
    }
}

/// `YYYY-MM` (the period holding the month) or `YYYY-MM..YYYY-MM` (one
/// whole period).
fn parse_settlement(s: &str) -> Result<(NaiveDate, Option<NaiveDate>), UsageError> {
    let month =
        |m: &str| parse_month(m.trim()).map_err(|e| UsageError(format!("--settlement {s:?}: {e}")));
    match s.split_once("..") {
        None => Ok((month(s)?, None)),
        Some((a, b)) => {
            let (a, b) = (month(a)?, month(b)?);
            if b < a {
                return Err(UsageError(format!(
                    "--settlement {s:?}: the last month is before the first"
                )));
            }
            Ok((a, Some(b)))
        }
    }
}

fn local_days(args: &CostsArgs) -> Result<(NaiveDate, NaiveDate), UsageError> {
    let (from_day, to_day) = match (args.month, args.year, args.from) {
        (Some(m), None, None) => (
            m,
            m.checked_add_months(chrono::Months::new(1))
                .and_then(|d| d.pred_opt())
                .expect("date"),
        ),
        (None, Some(y), None) => (
            NaiveDate::from_ymd_opt(y, 1, 1)
                .ok_or_else(|| UsageError(format!("invalid year {y}")))?,
            NaiveDate::from_ymd_opt(y, 12, 31).expect("date"),
        ),
        (None, None, Some(f)) => (f, args.to.unwrap_or(f)),
        _ => {
            return Err(UsageError(
                "give --month YYYY-MM, --year YYYY or --from D1 [--to D2]".into(),
            ))
        }
    };
    if to_day < from_day {
        return Err(UsageError(format!(
            "--to {to_day} is before --from {from_day}"
        )));
    }
    Ok((from_day, to_day))
}

/// Meter spans and the seconds each device's records cover.
type Fetched = (Vec<MeterSpan>, BTreeMap<String, i64>);

/// Meter spans fetched once per (range, bucket, netting), shared by every
/// tariff that needs them; or, with `ami`, the DSO's hours.
struct Data<'a> {
    url: &'a str,
    devices: &'a [String],
    pairs: &'a [String],
    cache: BTreeMap<(i64, i64, i64, bool), Fetched>,
    ami: Option<Ami>,
}

/// The DSO's readings of one point of delivery, from 12 months before the
/// period (the capacity basis) to its end.
struct Ami {
    pod: String,
    hours: BTreeMap<i64, crate::ami::Hour>,
    /// How the last billed period's hours were balanced.
    how: crate::billing::ami::Billed,
}

impl Data<'_> {
    fn spans(
        &mut self,
        from: i64,
        to: i64,
        bucket: i64,
        per_record: bool,
    ) -> anyhow::Result<&Fetched> {
        let key = (from, to, bucket, per_record);
        if !self.cache.contains_key(&key) {
            let v = energy::spans(
                self.url,
                self.devices,
                self.pairs,
                from,
                to,
                bucket,
                per_record,
            )?;
            self.cache.insert(key, v);
        }
        Ok(&self.cache[&key])
    }

    /// Billed spans over [from, to): each version balances the spans that
    /// start while it is in force. Also the covered seconds per device (per
    /// point of delivery for the DSO's readings).
    fn billed(
        &mut self,
        versions: &[Tariff],
        from: i64,
        to: i64,
        bucket: i64,
    ) -> anyhow::Result<(Vec<Span>, BTreeMap<String, i64>)> {
        if let Some(a) = &mut self.ami {
            let mut b = crate::billing::ami::billed(versions, &a.hours, from, to);
            let spans = std::mem::take(&mut b.spans);
            a.how = b;
            let covered = 3600 * a.hours.range(from..to).count() as i64;
            return Ok((spans, BTreeMap::from([(a.pod.clone(), covered)])));
        }
        let mut out = Vec::new();
        let mut covered = BTreeMap::new();
        for (v, (lo, hi)) in versions
            .iter()
            .zip(crate::billing::version_windows(versions, from, to))
        {
            let per_record = v.file.balancing == Balancing::PerRecord;
            let (spans, cov) = self.spans(from, to, bucket, per_record)?;
            if covered.is_empty() {
                covered = cov.clone();
            }
            let mine: Vec<MeterSpan> = spans
                .iter()
                .filter(|s| s.start >= lo && s.start < hi)
                .cloned()
                .collect();
            out.extend(balance::billed(v, &mine));
        }
        out.sort_by_key(|s| (s.start, s.end));
        Ok((out, covered))
    }
}

/// Capacity-fee bases per month of [from, to): the billed import of the 12
/// months before each month (the months before the period summed in the
/// database, the period's from its billed spans), and whether the data
/// reach back that far.
fn annual_bases(
    client: &mut db::Client,
    data: &Data,
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
    } else {
        if t.file.balancing == Balancing::Hourly {
            // The same netting as the bill's (tariff::balance), over the
            // hours the database sums.
            let hours = energy::hourly_spans(client, devices, pairs, lookback, from)?;
            for s in balance::billed(t, &hours) {
                *by_month.entry(t.month_of(s.start)).or_default() += s.import_wh;
            }
        } else {
            by_month.extend(energy::monthly_import(
                client,
                devices,
                pairs,
                lookback,
                from,
                t.tz.name(),
                t.file.balancing,
            )?);
        }
        // How much of each basis's 12 months the records cover, per billed
        // phase: a basis with a day missing is not complete, and says by
        // how many hours.
        covered = energy::covered_by_month(client, pairs, lookback, to, t.tz.name())?
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

fn describe(t: &Tariff, self_consumed: Decimal) -> Vec<String> {
    let mut notes = vec![match t.file.balancing {
        Balancing::None => "balancing none: import and export of each phase are billed as measured".to_string(),
        Balancing::PerRecord => format!(
            "balancing per_record: the phases are netted within each interval record; {} kWh cancelled out",
            self_consumed.round_dp(3)
        ),
        Balancing::Hourly => format!(
            "balancing hourly (ustawa o OZE): per clock hour, import minus export over all phases is billed; {} kWh self-consumed within the hours",
            self_consumed.round_dp(3)
        ),
    }];
    let ex = t.export_rule();
    notes.push(match ex.rule {
        ExportKind::None => "export is not paid for under this tariff".to_string(),
        ExportKind::FixedPrice => format!(
            "export credited at {} {} per kWh (net, no VAT)",
            ex.price.unwrap_or_default(),
            t.file.currency
        ),
        ExportKind::NetBilling => format!(
            "net-billing: each hour's export × the hour's mean export price{} × {} goes into the deposit, which pays the gross energy part of bills for {} months (not distribution, not fees)",
            if ex.negative() == crate::tariff::components::NegativePrice::Zero {
                " (a negative hourly mean counts as 0)"
            } else {
                ""
            },
            ex.multiplier(),
            ex.deposit_months()
        ),
        ExportKind::NetMetering => format!(
            "net-metering: each exported kWh offsets {} kWh of import in the same zone, free of energy and per-kWh charges, within the report period",
            ex.coefficient.unwrap_or_default()
        ),
    });
    notes
}

/// Everything `report costs` says about one tariff.
#[allow(clippy::too_many_arguments)]
fn price_under(
    client: &mut db::Client,
    data: &mut Data,
    name: &str,
    from: i64,
    to: i64,
    now: i64,
    opening_deposit: Decimal,
    measured: &[(String, String, Decimal, Decimal)],
) -> anyhow::Result<CostsReport> {
    let versions = tariffs::versions(client, name, from, to)?;
    let Some(first) = versions.first() else {
        let all = tariffs::all(client, Some(name))?;
        return Err(ConfigError(if all.is_empty() {
            format!("no tariff named {name}")
        } else {
            format!("tariff {name} is not valid at any time in the period")
        })
        .into());
    };
    let mut prices: Vec<(Vec<Price>, Vec<Price>)> = Vec::new();
    for v in &versions {
        prices.push((
            if v.file.kind == Kind::Dynamic {
                tariffs::prices(client, name, tariffs::Series::Import, from, to)?
            } else {
                vec![]
            },
            if v.export_rule().rule == ExportKind::NetBilling {
                tariffs::prices(client, name, tariffs::Series::Export, from, to)?
            } else {
                vec![]
            },
        ));
    }
    let bucket = if versions.iter().all(|t| t.quarter_hour_boundaries()) {
        900
    } else {
        60
    };
    let (billed, covered) = data.billed(&versions, from, to, bucket)?;
    let mut ctx = Context {
        opening_deposit,
        ..Context::default()
    };
    if let Some(t) = versions
        .iter()
        .find(|t| !t.file.capacity_fees.is_empty() && t.file.declared_annual_kwh.is_none())
    {
        ctx.annual = annual_bases(client, data, t, &billed, from, to)?;
    }
    if versions
        .iter()
        .any(|v| v.export_rule().rule == ExportKind::NetMetering)
    {
        ctx.net_metering_carry_in = net_metering_history(client, data, name, from, bucket)?;
    }
    let vs: Vec<Version> = versions
        .iter()
        .zip(&prices)
        .map(|(t, (p, x))| Version {
            tariff: t,
            prices: p,
            export_prices: x,
        })
        .collect();
    let bill = bill(&vs, &billed, from, to, &ctx).map_err(|e| ConfigError(e.to_string()))?;

    let expected_s = (to.min(now) - from).max(0);
    let mut coverage: Vec<Coverage> = covered
        .into_iter()
        .map(|(device_id, covered_s)| Coverage {
            ratio: if expected_s == 0 {
                Decimal::ONE
            } else {
                (Decimal::from(covered_s.min(expected_s)) / Decimal::from(expected_s)).round_dp(4)
            },
            device_id,
            covered_s,
            expected_s,
            partly_covered_hours: Vec::new(),
            partly_covered_count: 0,
            missing_hours: Vec::new(),
            missing_count: 0,
        })
        .collect();
    // Where data are missing, the hours billed from part of their records
    // are named (an hourly-balanced bill nets what is there).
    let t0 = &versions[0];
    let local_hour = |h: &i64| {
        DateTime::from_timestamp(*h, 0)
            .unwrap_or_default()
            .with_timezone(&t0.tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    if let Some(a) = &data.ami {
        // The DSO's file lacks these hours: named, never filled in.
        for c in coverage.iter_mut().filter(|c| c.ratio < Decimal::ONE) {
            let missing = crate::billing::ami::missing(&a.hours, from, to.min(now));
            c.missing_count = missing.len() as i64;
            c.missing_hours = missing.iter().take(48).map(local_hour).collect();
        }
    }
    for c in coverage
        .iter_mut()
        .filter(|c| c.ratio < Decimal::ONE && data.ami.is_none())
    {
        let hours = energy::partly_covered_hours(
            client,
            &c.device_id,
            data.pairs,
            from,
            to.min(now),
            t0.tz.name(),
        )?;
        c.partly_covered_count = hours.len() as i64;
        c.partly_covered_hours = hours.iter().take(48).map(local_hour).collect();
    }
    let complete = !coverage.is_empty() && coverage.iter().all(|c| c.ratio == Decimal::ONE);
    let thousand = Decimal::from(1000);
    let measured_import: Decimal = measured.iter().map(|m| m.2).sum::<Decimal>() / thousand;
    let measured_export: Decimal = measured.iter().map(|m| m.3).sum::<Decimal>() / thousand;
    let self_consumed = (measured_import - bill.import_kwh).normalize();
    let mut notes = describe(first, self_consumed);
    if let Some(a) = &data.ami {
        let h = &a.how;
        let how: Vec<String> = [
            (h.dso_balanced, "with the DSO's own hourly balance"),
            (
                h.netted_here,
                "balanced here per hour (the file has no balanced values for them)",
            ),
            (
                h.as_measured,
                "as measured (the DSO's meter registers the sum of its phases)",
            ),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} hour(s) {what}"))
        .collect();
        notes.insert(
            0,
            format!(
                "priced from the DSO's hourly readings of {} (`shellyctl ami import`): {}",
                printable(&a.pod),
                how.join(", ")
            ),
        );
    }
    if versions
        .iter()
        .any(|v| v.file.balancing != first.file.balancing)
    {
        notes.push("the tariff's versions in the period balance differently; each version's rule applies while it is in force".into());
    }
    for o in &bill.overrides_applied {
        notes.push(format!("price override applied: {o}"));
    }
    for c in &bill.capacity_fees {
        notes.push(format!(
            "{}: tier {} from {} kWh a year ({}{})",
            c.name,
            c.tier,
            c.annual_kwh,
            c.basis,
            if c.basis == "measured" {
                if c.basis_complete {
                    ", billed import of the 12 months before the month".to_string()
                } else {
                    format!(
                        ", but the records miss {} h of the 12 months before the month (see `report gaps`): set declared_annual_kwh in the tariff",
                        c.basis_missing_hours
                    )
                }
            } else {
                String::new()
            }
        ));
    }
    if bill.export.deposit.is_some() && opening_deposit.is_zero() {
        notes.push("the deposit starts at 0 in this period; give --opening-deposit for a balance left from earlier months".into());
    }
    if bill.export.offset_kwh.is_some() {
        let st = first.settlement();
        notes.push(format!(
            "net-metering is settled per settlement period (every {} month(s), the tariff's `settlement`): each period's export × coefficient offsets import of its zone, the surplus is carried to later periods and counts for 365 days after its period's reading (ustawa o OZE art. 4 ust. 5); {} kWh of import offset by surplus carried from before the report (every record of the billed meters replayed)",
            st.months,
            bill.export.carried_in_kwh.unwrap_or_default().round_dp(3)
        ));
        let start = t0.month_of(from);
        if st.period_start(start) != start {
            notes.push(format!(
                "the report starts inside a settlement period (it began {}): the period is settled from the report's start",
                st.period_start(start).format("%Y-%m")
            ));
        }
    }
    Ok(CostsReport {
        tariff: name.to_string(),
        data: if data.ami.is_some() { "ami" } else { "shelly" },
        pod: data.ami.as_ref().map(|a| a.pod.clone()),
        dso: None,
        settlement: None,
        time_zone: first.tz.name().to_string(),
        from: DateTime::from_timestamp(from, 0).unwrap_or_default(),
        to: DateTime::from_timestamp(to, 0).unwrap_or_default(),
        devices: match &data.ami {
            Some(_) => vec![],
            None => data.devices.to_vec(),
        },
        balancing: first.file.balancing.as_str(),
        measured_import_kwh: measured_import.normalize(),
        measured_export_kwh: measured_export.normalize(),
        self_consumed_kwh: self_consumed,
        measured: measured
            .iter()
            .map(|(d, p, i, e)| Measured {
                device_id: d.clone(),
                phase: p.clone(),
                import_kwh: (i / thousand).normalize(),
                export_kwh: (e / thousand).normalize(),
            })
            .collect(),
        bill,
        coverage,
        complete,
        notes,
    })
}

pub fn run(global: &GlobalArgs, args: &CostsArgs) -> anyhow::Result<ExitKind> {
    let spec = args
        .settlement
        .as_deref()
        .map(parse_settlement)
        .transpose()?;
    let days = match spec {
        Some(_) => None,
        None => Some(local_days(args)?),
    };
    let url = global.database_url()?;
    let mut client = db::connect(&url)?;
    energy::tune_for_reports(&mut client)?;
    db::slots::require_followed(&mut client)?;
    let names = tariff_names(&mut client, args)?;
    let first = tariffs::all(&mut client, Some(&names[0]))?;
    let tz = first
        .first()
        .ok_or_else(|| ConfigError(format!("no tariff named {}", names[0])))?
        .tz;
    let mut settlement = None;
    let (from_day, to_day) = match (days, spec) {
        (Some(d), _) => d,
        (None, Some((a, b))) => {
            let cycle = first
                .iter()
                .rev()
                .find(|t| t.file.valid_from <= a)
                .unwrap_or(&first[0])
                .settlement();
            let start = cycle.period_start(a);
            let last = start
                .checked_add_months(chrono::Months::new(cycle.months - 1))
                .expect("date");
            if b.is_some_and(|b| (a, b) != (start, last)) {
                return Err(UsageError(format!(
                    "{} is not one settlement period of tariff {}: its periods run every {} month(s){}, e.g. {}..{}",
                    args.settlement.as_deref().unwrap_or_default(),
                    names[0],
                    cycle.months,
                    cycle.starts.map(|d| format!(" from {}", d.format("%Y-%m"))).unwrap_or_default(),
                    start.format("%Y-%m"),
                    last.format("%Y-%m")
                ))
                .into());
            }
            settlement = Some((start, last, cycle.months));
            (
                start,
                last.checked_add_months(chrono::Months::new(1))
                    .and_then(|d| d.pred_opt())
                    .expect("date"),
            )
        }
        (None, None) => unreachable!("days or a settlement"),
    };
    let (from, to) = Zone::Named(tz).days(from_day, to_day);
    let crate::billing::meters::Billed {
        devices,
        pairs,
        notes: device_notes,
    } = if args.data == Some(DataSource::Ami) && args.pod.is_some() {
        crate::billing::meters::Billed {
            devices: vec![],
            pairs: vec![],
            notes: vec![],
        }
    } else {
        crate::billing::meters::select(&mut client, &args.devices, from, to)?
    };
    let ami = match args.data {
        Some(DataSource::Ami) => {
            let pod = crate::billing::pod::resolve(&mut client, args.pod.as_deref(), &devices)?;
            let a = load_ami(&mut client, pod, from, to)?;
            if a.hours.range(from..to).next().is_none() {
                return Err(ConfigError(format!(
                    "no DSO readings of {} from {from_day} to {to_day}; import them with `shellyctl ami import --pod {} FILE`",
                    printable(&a.pod),
                    printable(&a.pod)
                ))
                .into());
            }
            Some(a)
        }
        _ => None,
    };
    let measured = match &ami {
        Some(a) => vec![ami_measured(a, from, to)],
        None => energy::measured(&mut client, &devices, &pairs, from, to)?,
    };
    let device_notes = if ami.is_some() { vec![] } else { device_notes };
    let now = global.now();
    let mut data = Data {
        url: &url,
        devices: &devices,
        pairs: &pairs,
        cache: BTreeMap::new(),
        ami,
    };
    let mut reports = Vec::new();
    for name in &names {
        let mut r = price_under(
            &mut client,
            &mut data,
            name,
            from,
            to,
            now,
            args.opening_deposit,
            &measured,
        )?;
        r.notes.splice(0..0, device_notes.iter().cloned());
        reports.push(r);
    }
    if reports.iter().any(|r| !r.complete) {
        crate::log::warn(
            "costs_incomplete",
            None,
            serde_json::json!({"coverage": reports[0].coverage.iter().map(|c| (c.device_id.clone(), c.ratio)).collect::<Vec<_>>()}),
        );
    }
    if args.compare.is_empty() {
        let mut r = reports.pop().expect("one report");
        if let Some((start, last, months)) = settlement {
            let forecast_total: Decimal = args.forecasts.iter().sum();
            let balance = r.bill.total - forecast_total;
            r.settlement = Some(SettlementLine {
                period: format!("{}..{}", start.format("%Y-%m"), last.format("%Y-%m")),
                months,
                total: r.bill.total,
                forecast_invoices: args.forecasts.clone(),
                forecast_total,
                balance,
                verdict: match balance.cmp(&Decimal::ZERO) {
                    std::cmp::Ordering::Greater => "to pay",
                    std::cmp::Ordering::Less => "to return",
                    std::cmp::Ordering::Equal => "settled",
                },
            });
            for n in r.notes.iter_mut() {
                if n.starts_with("net-metering is settled within the report period") {
                    *n = format!(
                        "net-metering is settled over the settlement period {}..{}",
                        start.format("%Y-%m"),
                        last.format("%Y-%m")
                    );
                }
            }
        }
        if args.data.is_none() {
            r.dso = dso_beside(&mut client, &mut data, args, &r, (from, to), now)?;
        }
        output::print(global.format, &r)?;
        return Ok(ExitKind::Success);
    }
    let cheapest = reports
        .iter()
        .min_by_key(|r| r.bill.total)
        .expect("tariffs")
        .bill
        .total;
    let lines: Vec<CompareLine> = reports
        .iter()
        .map(|r| CompareLine {
            tariff: r.tariff.clone(),
            balancing: r.balancing.to_string(),
            import_kwh: r.bill.import_kwh.round_dp(3).normalize(),
            net: r.bill.net,
            gross: r.bill.gross,
            export_credit: r.bill.export.credit,
            deposit_paid: r
                .bill
                .export
                .deposit
                .as_ref()
                .map_or(Decimal::new(0, 2), |d| d.paid),
            total: r.bill.total,
            difference: r.bill.total - cheapest,
            currency: r.bill.currency.clone(),
        })
        .collect();
    output::print(
        global.format,
        &CompareReport {
            from: DateTime::from_timestamp(from, 0).unwrap_or_default(),
            to: DateTime::from_timestamp(to, 0).unwrap_or_default(),
            devices: devices.clone(),
            cheapest: lines
                .iter()
                .find(|l| l.difference.is_zero())
                .map(|l| l.tariff.clone())
                .unwrap_or_default(),
            complete: reports.iter().all(|r| r.complete),
            tariffs: lines,
        },
    )?;
    Ok(ExitKind::Success)
}

/// The DSO's readings of `pod` from 13 months before `from` (the capacity
/// basis) to `to`.
fn load_ami(client: &mut db::Client, pod: String, from: i64, to: i64) -> anyhow::Result<Ami> {
    let hours = db::ami::hours(client, &pod, from - 400 * 86_400, to)?;
    Ok(Ami {
        pod,
        hours,
        how: Default::default(),
    })
}

/// The DSO's readings summed over [from, to) as one measured line (Wh).
fn ami_measured(a: &Ami, from: i64, to: i64) -> (String, String, Decimal, Decimal) {
    let thousand = Decimal::from(1000);
    let (i, e) = a
        .hours
        .range(from..to)
        .fold((Decimal::ZERO, Decimal::ZERO), |(i, e), (_, h)| {
            (i + h.import_kwh * thousand, e + h.export_kwh * thousand)
        });
    (a.pod.clone(), "all".to_string(), i, e)
}

/// Without `--data`: when the DSO's readings of the billed meters' point of
/// delivery are imported for the period, the same tariff over them, beside
/// the Shelly's bill.
fn dso_beside(
    client: &mut db::Client,
    data: &mut Data,
    args: &CostsArgs,
    shelly: &CostsReport,
    (from, to): (i64, i64),
    now: i64,
) -> anyhow::Result<Option<DsoTotal>> {
    let Ok(pod) = crate::billing::pod::find(client, args.pod.as_deref(), data.devices)? else {
        return Ok(None);
    };
    let a = load_ami(client, pod, from, to)?;
    if a.hours.range(from..to).next().is_none() {
        return Ok(None);
    }
    let measured = vec![ami_measured(&a, from, to)];
    data.ami = Some(a);
    let r = price_under(
        client,
        data,
        &shelly.tariff,
        from,
        to,
        now,
        args.opening_deposit,
        &measured,
    );
    let a = data.ami.take().expect("ami");
    let r = r?;
    Ok(Some(DsoTotal {
        pod: a.pod,
        import_kwh: r.bill.import_kwh.round_dp(3).normalize(),
        export_kwh: r.bill.export.kwh.round_dp(3).normalize(),
        total: r.bill.total,
        difference: shelly.bill.total - r.bill.total,
        complete: r.complete,
    }))
}

/// Net-metering credits carried into `from`: every settlement period of
/// tariff `name` since the billed meters' first record (or the DSO's first
/// hour), replayed through the same pipeline.
fn net_metering_history(
    client: &mut db::Client,
    data: &mut Data,
    name: &str,
    from: i64,
    bucket: i64,
) -> anyhow::Result<Vec<crate::billing::net_metering::Credit>> {
    let first = match &data.ami {
        Some(a) => a.hours.range(..from).next().map(|(h, _)| *h),
        None => energy::first_slot(client, data.pairs, from)?,
    };
    let Some(first) = first else {
        return Ok(vec![]);
    };
    let versions = tariffs::versions(client, name, first, from)?;
    let Some(v0) = versions.first() else {
        return Ok(vec![]);
    };
    // From the start of the settlement period holding the first record.
    let start = v0
        .day_start(v0.settlement().period_start(v0.month_of(first)))
        .max(v0.valid_from_utc());
    if start >= from {
        return Ok(vec![]);
    }
    let (spans, _) = data.billed(&versions, start, from, bucket)?;
    let vs: Vec<Version> = versions
        .iter()
        .map(|t| Version {
            tariff: t,
            prices: &[],
            export_prices: &[],
        })
        .collect();
    let past = bill(&vs, &spans, start, from, &Context::default())
        .map_err(|e| ConfigError(format!("the net-metering history of tariff {name}: {e}")))?;
    Ok(past
        .export
        .carry_out
        .iter()
        .map(|c| crate::billing::net_metering::Credit {
            zone: c.zone.clone(),
            dated: c.dated,
            wh: c.kwh * Decimal::from(1000),
        })
        .collect())
}

//! `shellyctl report costs`: what the electricity cost, as the seller bills
//! it: measured energy, billed energy after the tariff's balancing rule,
//! zone prices, per-kWh charges, fees, the capacity fee, VAT, and export
//! (credit, net-billing deposit or net-metering offset). `--compare` prices
//! the same records under several tariffs.

use crate::billing::load::{load_ami, Data};
use crate::billing::price::{dso_beside, price_under, CostsReport, SettlementLine};
use crate::db::{self, energy, tariffs};
use crate::exit::{ConfigError, ExitKind, UsageError};
use crate::output::{self, printable, Report};
use crate::settings::GlobalArgs;
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
    #[arg(long, default_value = "0", value_parser = parse_deposit)]
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
        allow_hyphen_values = true,
        value_parser = parse_amount
    )]
    pub forecasts: Vec<Decimal>,
}

/// An amount of money as an invoice prints it: at most two decimals, below
/// a billion; kept with two decimals (`15.5` is 15.50).
fn parse_amount(s: &str) -> Result<Decimal, String> {
    let d: Decimal = s
        .trim()
        .parse()
        .map_err(|_| format!("expected an amount like 123.45, got {s:?}"))?;
    if d.normalize().scale() > 2 {
        return Err(format!("{s:?} has more than two decimals"));
    }
    if d.abs() >= Decimal::from(1_000_000_000) {
        return Err(format!("{s:?} is not a household amount"));
    }
    let mut d = d.normalize();
    d.rescale(2);
    Ok(d)
}

/// An opening deposit: an amount, not negative.
fn parse_deposit(s: &str) -> Result<Decimal, String> {
    let d = parse_amount(s)?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{s:?} is negative; a deposit is 0 or more"));
    }
    Ok(d)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataSource {
    /// The Shelly's interval records.
    Shelly,
    /// The distribution operator's hourly readings (`ami import`).
    Ami,
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
                    ", {} kWh of it by surplus carried in from before the report",
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
                    let then = if l.credited_for == "opening" {
                        "then lost: the opening balance's export is not known here".to_string()
                    } else {
                        format!(
                            "then up to {} refunded: {} % of its export's market value",
                            l.refund_cap, d.refund_percent
                        )
                    };
                    out.push_str(&format!(
                        "  deposit credited for {}: {} of {} left, usable until {} ({then})\n",
                        l.credited_for,
                        l.left,
                        l.credited,
                        l.expires.pred_opt().unwrap_or(l.expires),
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
                "deposit_opening",
                String::new(),
                d.opening.to_string(),
                c,
            ));
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
                "deposit_expired",
                String::new(),
                d.expired.to_string(),
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
    /// Unused deposit refunded after its months (net-billing).
    #[tabled(rename = "deposit refunded")]
    deposit_refunded: Decimal,
    /// gross − export credit − deposit paid − deposit refunded.
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
            "deposit_refunded",
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
                l.deposit_refunded,
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
    let now = global.now();
    if from >= now {
        // Nothing can be measured yet: a bill of 0 marked complete would
        // say otherwise.
        return Err(UsageError(format!(
            "the period {from_day} to {to_day} has not begun (now is {})",
            DateTime::from_timestamp(now, 0)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M UTC")
        ))
        .into());
    }
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
    let device_notes = if ami.is_some() { vec![] } else { device_notes };
    let mut data = Data {
        url: &url,
        devices: &devices,
        pairs: &pairs,
        cache: BTreeMap::new(),
        hours: BTreeMap::new(),
        ami,
    };
    let measured = data.measured(from, to, tz)?;
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
            r.dso = dso_beside(
                &mut client,
                &mut data,
                (args.pod.as_deref(), args.opening_deposit),
                &r,
                (from, to),
                now,
            )?;
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
            deposit_refunded: r
                .bill
                .export
                .deposit
                .as_ref()
                .map_or(Decimal::new(0, 2), |d| d.refunded),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_two_decimals_and_a_deposit_is_not_negative() {
        let ok = |s: &str| parse_amount(s).unwrap().to_string();
        assert_eq!(
            [ok("15.5"), ok("20"), ok("-6.75"), ok("1.230")],
            ["15.50", "20.00", "-6.75", "1.23"]
        );
        assert!(parse_amount("1.005").unwrap_err().contains("two decimals"));
        assert!(parse_amount("1e9").is_err());
        assert!(parse_amount("1000000000").is_err());
        assert_eq!(parse_deposit("0").unwrap().to_string(), "0.00");
        assert!(parse_deposit("-1").unwrap_err().contains("negative"));
    }
}

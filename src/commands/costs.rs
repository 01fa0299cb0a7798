//! `shellyctl report costs`: what the electricity cost, per tariff zone.

use crate::cli::GlobalArgs;
use crate::db::{self, energy, tariffs};
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, csv_field, Report};
use crate::tariff::cost::{bill, Bill, Version};
use crate::tariff::Kind;
use crate::timerange::{parse_date, Zone};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use rust_decimal::Decimal;
use serde::Serialize;
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
    #[arg(long)]
    pub tariff: Option<String>,
    /// Only these devices (repeatable). Default: every device with data.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Treat this unix time as now (tests).
    #[arg(long, hide = true)]
    pub now: Option<i64>,
}

pub fn parse_month(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map_err(|_| format!("expected a month like 2026-03, got {s:?}"))
}

#[derive(Serialize)]
struct Coverage {
    device_id: String,
    covered_s: i64,
    expected_s: i64,
    /// covered / expected, 4 decimals; below 1 means missing intervals.
    ratio: Decimal,
}

#[derive(Serialize)]
struct CostsReport {
    tariff: String,
    time_zone: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    devices: Vec<String>,
    #[serde(flatten)]
    bill: Bill,
    coverage: Vec<Coverage>,
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
        let mut rows: Vec<Row> = b
            .zones
            .iter()
            .map(|z| Row {
                item: if many_versions {
                    format!("{} (from {})", z.zone, z.valid_from)
                } else {
                    z.zone.clone()
                },
                kwh: z.kwh.round_dp(3).to_string(),
                energy: z.energy_net.to_string(),
                distribution: z.distribution_net.to_string(),
                net: z.net.to_string(),
            })
            .collect();
        for f in &b.fixed_fees {
            rows.push(Row {
                item: format!("{} × {}", f.name, f.months),
                kwh: String::new(),
                energy: String::new(),
                distribution: String::new(),
                net: f.net.to_string(),
            });
        }
        let mut out = format!(
            "{} {} – {} ({})\n",
            self.tariff,
            self.from.format("%Y-%m-%d %H:%M UTC"),
            self.to.format("%Y-%m-%d %H:%M UTC"),
            self.time_zone
        );
        out.push_str(&output::table(rows));
        let vat = b
            .vat_percent
            .map(|v| format!("{v}%"))
            .unwrap_or_else(|| "mixed".into());
        out.push_str(&format!(
            "net {} {}   VAT {vat} {}   gross {}\n",
            b.net, b.currency, b.vat, b.gross
        ));
        if b.export.kwh > Decimal::ZERO || b.export.credit > Decimal::ZERO {
            out.push_str(&format!(
                "exported {} kWh, credit {}\n",
                b.export.kwh.round_dp(3),
                b.export.credit
            ));
        }
        out.push_str(&format!("total {} {}\n", b.total, b.currency));
        if b.unpriced_kwh > Decimal::ZERO {
            out.push_str(&format!(
                "warning: {} kWh fall outside the tariff's validity and are not priced\n",
                b.unpriced_kwh.round_dp(3)
            ));
        }
        for c in &self.coverage {
            if c.ratio < Decimal::ONE {
                out.push_str(&format!(
                    "warning: {} has interval data for {:.2}% of the period ({:.2} h missing); costs are incomplete (see `report gaps`)\n",
                    c.device_id,
                    c.ratio * Decimal::from(100),
                    Decimal::from(c.expected_s - c.covered_s) / Decimal::from(3600)
                ));
            }
        }
        out
    }

    fn csv(&self) -> Option<String> {
        let b = &self.bill;
        let mut out =
            String::from("item,tariff,valid_from,kwh,energy_net,distribution_net,net,currency\n");
        for z in &b.zones {
            out.push_str(&format!(
                "zone:{},{},{},{},{},{},{},{}\n",
                csv_field(&z.zone),
                csv_field(&z.tariff),
                z.valid_from,
                z.kwh,
                z.energy_net,
                z.distribution_net,
                z.net,
                b.currency
            ));
        }
        for f in &b.fixed_fees {
            out.push_str(&format!(
                "fee:{},{},,,,,{},{}\n",
                csv_field(&f.name),
                csv_field(&f.tariff),
                f.net,
                b.currency
            ));
        }
        out.push_str(&format!(
            "net,,,{},,,{},{}\n",
            b.import_kwh, b.net, b.currency
        ));
        out.push_str(&format!("vat,,,,,,{},{}\n", b.vat, b.currency));
        out.push_str(&format!("gross,,,,,,{},{}\n", b.gross, b.currency));
        out.push_str(&format!(
            "export_credit,,,{},,,{},{}\n",
            b.export.kwh, b.export.credit, b.currency
        ));
        out.push_str(&format!("total,,,,,,{},{}\n", b.total, b.currency));
        Some(out)
    }
}

pub fn run(global: &GlobalArgs, args: &CostsArgs) -> anyhow::Result<ExitKind> {
    let url = global.database_url()?;
    let mut client = db::connect(&url)?;
    let name =
        match &args.tariff {
            Some(n) => n.clone(),
            None => {
                let names = tariffs::names(&mut client)?;
                match names.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(ConfigError(
                        "no tariffs stored; import one with `shellyctl tariff import FILE.json`"
                            .into(),
                    )
                    .into()),
                    many => {
                        return Err(ConfigError(format!(
                            "several tariffs are stored ({}); choose one with --tariff",
                            many.join(", ")
                        ))
                        .into())
                    }
                }
            }
        };
    let all = tariffs::all(&mut client, Some(&name))?;
    let first = all
        .first()
        .ok_or_else(|| ConfigError(format!("no tariff named {name}")))?;
    let zone = Zone::Named(first.tz);
    let (from_day, to_day) = match (args.month, args.year, args.from) {
        (Some(m), None, None) => (
            m,
            m.checked_add_months(chrono::Months::new(1))
                .and_then(|d| d.pred_opt())
                .expect("date"),
        ),
        (None, Some(y), None) => (
            NaiveDate::from_ymd_opt(y, 1, 1)
                .ok_or_else(|| ConfigError(format!("invalid year {y}")))?,
            NaiveDate::from_ymd_opt(y, 12, 31).expect("date"),
        ),
        (None, None, Some(f)) => (f, args.to.unwrap_or(f)),
        _ => {
            return Err(ConfigError(
                "give --month YYYY-MM, --year YYYY or --from D1 [--to D2]".into(),
            )
            .into())
        }
    };
    if to_day < from_day {
        return Err(ConfigError(format!("--to {to_day} is before --from {from_day}")).into());
    }
    let (from, to) = zone.days(from_day, to_day);

    let versions_owned = tariffs::versions(&mut client, &name, from, to)?;
    if versions_owned.is_empty() {
        return Err(ConfigError(format!(
            "tariff {name} is not valid at any time from {from_day} to {to_day}"
        ))
        .into());
    }
    let mut prices = Vec::new();
    for v in &versions_owned {
        prices.push(if v.file.kind == Kind::Dynamic {
            tariffs::prices(&mut client, &name, from, to)?
        } else {
            vec![]
        });
    }
    let versions: Vec<Version> = versions_owned
        .iter()
        .zip(&prices)
        .map(|(t, p)| Version {
            tariff: t,
            prices: p,
        })
        .collect();

    let devices = if args.devices.is_empty() {
        energy::devices_with_data(&mut client, from, to)?
    } else {
        args.devices.clone()
    };
    let bucket = if versions_owned.iter().all(|t| t.quarter_hour_boundaries()) {
        900
    } else {
        60
    };
    let (spans, covered) = energy::spans(&url, &devices, from, to, bucket)?;
    let bill = bill(&versions, &spans, from, to).map_err(|e| ConfigError(e.to_string()))?;

    let now = args.now.unwrap_or_else(|| Utc::now().timestamp());
    let expected_s = (to.min(now) - from).max(0);
    let coverage: Vec<Coverage> = covered
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
        })
        .collect();
    let complete = !coverage.is_empty() && coverage.iter().all(|c| c.ratio == Decimal::ONE);
    if !complete {
        crate::log::warn(
            "costs_incomplete",
            None,
            serde_json::json!({"coverage": coverage.iter().map(|c| (c.device_id.clone(), c.ratio)).collect::<Vec<_>>()}),
        );
    }
    output::print(
        global.format,
        &CostsReport {
            tariff: name,
            time_zone: first.tz.name().to_string(),
            from: DateTime::from_timestamp(from, 0).unwrap_or_default(),
            to: DateTime::from_timestamp(to, 0).unwrap_or_default(),
            devices,
            bill,
            coverage,
            complete,
        },
    )?;
    Ok(ExitKind::Success)
}

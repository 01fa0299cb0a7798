//! Pricing one tariff over the billed energy, the pipeline's middle
//! stages put together for `report costs`: the tariff's versions and price
//! series, the billed spans (`load`), the capacity basis (`basis`),
//! net-metering carried in, the bill (`tariff::cost`), coverage and the
//! rules applied in words. The result is rendered by the command.

use super::basis::annual_bases;
use super::load::{ami_measured, load_ami, Data};
use crate::db::{self, energy, tariffs};
use crate::exit::ConfigError;
use crate::output::printable;
use crate::tariff::cost::{bill, Bill, Context, Price, Version};
use crate::tariff::{Balancing, ExportKind, Kind, Tariff};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

#[derive(Serialize)]
pub(crate) struct Coverage {
    pub(crate) device_id: String,
    pub(crate) covered_s: i64,
    pub(crate) expected_s: i64,
    /// covered / expected, 4 decimals; below 1 means missing intervals.
    pub(crate) ratio: Decimal,
    /// Local hours (the tariff's zone) that records cover only in part
    /// (an interval missing inside the hour), the first 48; hours with no
    /// record at all are in `report gaps`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) partly_covered_hours: Vec<String>,
    /// How many hours are partly covered in all.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) partly_covered_count: i64,
    /// DSO readings: the local hours the imported file lacks (the first
    /// 48) and how many in all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) missing_hours: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) missing_count: i64,
}

pub(crate) fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize)]
pub(crate) struct Measured {
    pub(crate) device_id: String,
    pub(crate) phase: String,
    pub(crate) import_kwh: Decimal,
    pub(crate) export_kwh: Decimal,
}

#[derive(Serialize)]
pub(crate) struct CostsReport {
    pub(crate) tariff: String,
    /// Whose readings are priced: `shelly` or `ami` (the DSO's).
    pub(crate) data: &'static str,
    /// The point of delivery, when the DSO's readings are priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pod: Option<String>,
    pub(crate) time_zone: String,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) devices: Vec<String>,
    /// none, per_record or hourly (of the first version in the period).
    pub(crate) balancing: &'static str,
    /// What the meters registered, summed over phases (before balancing).
    pub(crate) measured_import_kwh: Decimal,
    pub(crate) measured_export_kwh: Decimal,
    /// Import and export that cancelled out under the balancing rule.
    pub(crate) self_consumed_kwh: Decimal,
    pub(crate) measured: Vec<Measured>,
    #[serde(flatten)]
    pub(crate) bill: Bill,
    pub(crate) coverage: Vec<Coverage>,
    pub(crate) complete: bool,
    /// Every rule that shaped the numbers, in words.
    pub(crate) notes: Vec<String>,
    /// `--settlement`: the period and, with forecast invoices, what is left
    /// to pay or to be returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) settlement: Option<SettlementLine>,
    /// The same tariff over the DSO's readings, when they are imported for
    /// the period (Shelly bills only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dso: Option<DsoTotal>,
}

/// The settlement of one period: its total against the forecast invoices.
#[derive(Serialize)]
pub(crate) struct SettlementLine {
    /// First and last month, `YYYY-MM..YYYY-MM`.
    pub(crate) period: String,
    pub(crate) months: u32,
    pub(crate) total: Decimal,
    pub(crate) forecast_invoices: Vec<Decimal>,
    pub(crate) forecast_total: Decimal,
    /// total − forecast_total: above 0 to pay, below 0 to be returned.
    pub(crate) balance: Decimal,
    /// `to pay`, `to return` or `settled`.
    pub(crate) verdict: &'static str,
}

/// The DSO readings' bill beside the Shelly's.
#[derive(Serialize)]
pub(crate) struct DsoTotal {
    pub(crate) pod: String,
    pub(crate) import_kwh: Decimal,
    pub(crate) export_kwh: Decimal,
    pub(crate) total: Decimal,
    /// Shelly total − DSO total.
    pub(crate) difference: Decimal,
    /// Whether the DSO's readings cover every hour of the period.
    pub(crate) complete: bool,
}

pub(crate) fn describe(t: &Tariff, self_consumed: Decimal) -> Vec<String> {
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
pub(crate) fn price_under(
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
    let super::load::Loaded {
        spans: billed,
        covered,
        dso_how,
    } = data.billed(&versions, from, to, bucket)?;
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
    let from_dso = data.ami.is_some();
    for c in coverage
        .iter_mut()
        .filter(|c| c.ratio < Decimal::ONE && !from_dso)
    {
        let until = to.min(now);
        let hours = match data.hours(from, to, t0.tz)? {
            // Local hours are UTC hours here (`hours::whole_hours`).
            Some(h) => h
                .partly_covered
                .get(&c.device_id)
                .map(|v| v.iter().copied().filter(|t| *t < until).collect())
                .unwrap_or_default(),
            None => energy::partly_covered_hours(
                client,
                &c.device_id,
                data.pairs,
                from,
                until,
                t0.tz.name(),
            )?,
        };
        c.partly_covered_count = hours.len() as i64;
        c.partly_covered_hours = hours.iter().take(48).map(local_hour).collect();
    }
    let complete = !coverage.is_empty() && coverage.iter().all(|c| c.ratio == Decimal::ONE);
    let thousand = Decimal::from(1000);
    let measured_import: Decimal = measured.iter().map(|m| m.2).sum::<Decimal>() / thousand;
    let measured_export: Decimal = measured.iter().map(|m| m.3).sum::<Decimal>() / thousand;
    let self_consumed = (measured_import - bill.import_kwh).normalize();
    let mut notes = describe(first, self_consumed);
    if let (Some(a), Some(h)) = (&data.ami, dso_how) {
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

/// Without `--data`: when the DSO's readings of the billed meters' point of
/// delivery are imported for the period, the same tariff over them, beside
/// the Shelly's bill.
pub(crate) fn dso_beside(
    client: &mut db::Client,
    data: &mut Data,
    (pod, opening_deposit): (Option<&str>, Decimal),
    shelly: &CostsReport,
    (from, to): (i64, i64),
    now: i64,
) -> anyhow::Result<Option<DsoTotal>> {
    let Ok(pod) = crate::billing::pod::find(client, pod, data.devices)? else {
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
        opening_deposit,
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
pub(crate) fn net_metering_history(
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
    let spans = data.billed(&versions, start, from, bucket)?.spans;
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

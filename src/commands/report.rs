//! `shellyctl report ...`: reports over the stored data.

use crate::db;
use crate::exit::ExitKind;
use crate::failure::classify;
use crate::gaps::{classify as classify_gap, missing, Availability, Span};
use crate::output::{self, Report};
use crate::settings::{ConnArgs, GlobalArgs};
use crate::shelly::emdata::get_records;
use crate::shelly::Client;
use crate::timerange::{DayRange, DeviceFilter};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// What the seller bills: measured and billed energy (after the
    /// tariff's balancing rule), cost per zone, per-kWh charges, fees, the
    /// capacity fee, VAT, export (credit, net-billing deposit or
    /// net-metering offset) and coverage, computed now from
    /// energy_intervals (retroactive by construction). `--compare A,B`
    /// ranks tariffs. `--format table|json|csv`; money as exact decimals.
    Costs(super::costs::CostsArgs),
    /// kWh per hour (--day) or per day (--month) and per phase, import and
    /// export; `--plot FILE.svg` draws the day's load curve per phase.
    Energy(super::energy::EnergyArgs),
    /// Interval records missing from the database in a range of local days,
    /// and whether the device still holds them (a backfill would fill them)
    /// or they are lost.
    Gaps(GapsArgs),
    /// For pushed devices (`listen`) and a local day: each logged channel's
    /// active periods (minutes above POWER_THRESHOLD_W), idle periods
    /// (connected, below it) and periods with no connection (with why the
    /// connection before ended).
    Activity(super::activity::ActivityArgs),
    /// The Shelly beside the distribution operator's meter (`ami import`):
    /// per day and hour, measured and hourly-balanced import and export on
    /// both sides, the differences, hours present on one side only, and
    /// the drift over the period. `--format table|json|csv`.
    Reconcile(super::reconcile::ReconcileArgs),
}

#[derive(Args, Debug)]
pub struct GapsArgs {
    #[command(flatten)]
    pub days: DayRange,
    #[command(flatten)]
    pub filter: DeviceFilter,
    /// Do not ask the devices what they still hold.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Serialize)]
struct Gap {
    device_id: String,
    component: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    duration_s: i64,
    records: Option<i64>,
    availability: Availability,
    #[serde(skip)]
    local: (String, String),
}

#[derive(Serialize)]
struct GapsReport {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    time_zone: String,
    components_checked: usize,
    gaps: Vec<Gap>,
}

#[derive(Tabled)]
struct Row {
    device: String,
    component: String,
    from: String,
    to: String,
    records: String,
    availability: String,
}

impl Report for GapsReport {
    fn table(&self) -> String {
        if self.gaps.is_empty() {
            return format!("no gaps in {} component(s)\n", self.components_checked);
        }
        output::table(self.gaps.iter().map(|g| Row {
            device: g.device_id.clone(),
            component: g.component.clone(),
            from: g.local.0.clone(),
            to: g.local.1.clone(),
            records: g.records.map(|r| r.to_string()).unwrap_or_default(),
            availability: format!("{:?}", g.availability).to_lowercase(),
        }))
    }
}

pub fn run(global: &GlobalArgs, args: &ReportArgs) -> anyhow::Result<ExitKind> {
    match &args.command {
        ReportCommand::Gaps(a) => gaps(global, a),
        ReportCommand::Costs(a) => super::costs::run(global, a),
        ReportCommand::Energy(a) => super::energy::run(global, a),
        ReportCommand::Activity(a) => super::activity::run(global, a),
        ReportCommand::Reconcile(a) => super::reconcile::run(global, a),
    }
}

struct Source {
    device_id: String,
    component: String,
    host: Option<String>,
    period: Option<i64>,
}

/// The device's stored spans for a component (`GetRecords`).
fn device_spans(client: &Client, component: &str) -> anyhow::Result<Vec<Span>> {
    let c = crate::shelly::emdata::Component::from_key(component)
        .ok_or_else(|| anyhow::anyhow!("unknown interval component {component:?}"))?;
    let mut spans: Vec<Span> = get_records(client, c.namespace, c.id)?
        .iter()
        .map(|b| (b.ts, b.ts + b.records * b.period))
        .collect();
    spans.sort();
    Ok(spans)
}

fn gaps(global: &GlobalArgs, args: &GapsArgs) -> anyhow::Result<ExitKind> {
    let (zone, from, to) = args.days.resolve()?;
    let opts = args.conn.client_options()?;
    let mut db = db::connect(&global.database_url()?)?;
    let now = global.now();

    let rows = db::intervals::sources(&mut db, from, to)?;
    let mut sources: Vec<Source> = Vec::new();
    for (device_id, component, host, period) in rows {
        let s = Source {
            device_id,
            component,
            host,
            period,
        };
        if !args.filter.devices.is_empty() && !args.filter.devices.contains(&s.device_id) {
            continue;
        }
        match sources
            .iter_mut()
            .find(|x| x.device_id == s.device_id && x.component == s.component)
        {
            Some(x) => x.period = x.period.or(s.period),
            None => sources.push(s),
        }
    }

    let mut exit = ExitKind::Success;
    let mut out = Vec::new();
    for src in &sources {
        let stored: Vec<Span> =
            db::intervals::stored_spans(&mut db, &src.device_id, &src.component, from, to)?;
        let period = src
            .period
            .or_else(|| stored.first().map(|(s, e)| e - s))
            .filter(|p| *p > 0);
        // A record exists only once its period is over: never report the future.
        let end = match period {
            Some(p) => to.min(now - now.rem_euclid(p)),
            None => to.min(now),
        };
        let holes = missing(&stored, from, end);
        if holes.is_empty() {
            continue;
        }
        let device = match (&src.host, args.offline) {
            (Some(host), false) => {
                match device_spans(&Client::new(host, opts.clone()), &src.component) {
                    Ok(spans) => Some(spans),
                    Err(e) => {
                        crate::log::warn(
                            "device_unavailable",
                            Some(&src.device_id),
                            json!({"host": host, "error": format!("{e:#}")}),
                        );
                        exit = exit.worst(classify(&e));
                        None
                    }
                }
            }
            _ => None,
        };
        for hole in holes {
            let parts = match &device {
                Some(spans) => classify_gap(hole, spans),
                None => vec![(hole, Availability::Unknown)],
            };
            for ((s, e), availability) in parts {
                out.push(Gap {
                    device_id: src.device_id.clone(),
                    component: src.component.clone(),
                    start: DateTime::from_timestamp(s, 0).unwrap_or_default(),
                    end: DateTime::from_timestamp(e, 0).unwrap_or_default(),
                    duration_s: e - s,
                    records: period.map(|p| (e - s + p - 1) / p),
                    availability,
                    local: (zone.format(s), zone.format(e)),
                });
            }
        }
    }
    output::print(
        global.format,
        &GapsReport {
            from: DateTime::from_timestamp(from, 0).unwrap_or_default(),
            to: DateTime::from_timestamp(to, 0).unwrap_or_default(),
            time_zone: zone.name(),
            components_checked: sources.len(),
            gaps: out,
        },
    )?;
    Ok(exit)
}

//! `shellyctl report reconcile`: the Shelly beside the distribution
//! operator's meter (`ami_readings`), hour by hour and day by day: measured
//! import and export, hourly-balanced import and export, the differences in
//! kWh and %, hours present on one side only, and the drift over the period.
//! The Shelly side is the meters `report costs` bills (`billing::meters`),
//! from the 15-minute slots.

use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::timerange::{parse_date, parse_month, Zone};
use chrono::NaiveDate;
use clap::Args;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// A month (YYYY-MM).
    #[arg(long, value_parser = parse_month, conflicts_with_all = ["from", "to"])]
    pub month: Option<NaiveDate>,
    /// First local day.
    #[arg(long, value_parser = parse_date, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last local day (inclusive).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// The point of delivery (default: the one linked to the grid meter
    /// with `device set-role ID grid --pod POD`, else the only one imported).
    #[arg(long)]
    pub pod: Option<String>,
    /// The Shelly meter(s) (default: the grid meters, as `report costs`).
    #[arg(long = "device", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Time zone of the days and hours.
    #[arg(long, default_value = "Europe/Warsaw")]
    pub tz: String,
    /// Also draw the daily differences (Shelly − DSO, import and export,
    /// over the hours on both sides) into this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// One side's hour: import, export, and the hourly-balanced pair.
#[derive(Serialize, Clone, Default, Debug, PartialEq)]
struct Side {
    import_kwh: Decimal,
    export_kwh: Decimal,
    balanced_import_kwh: Option<Decimal>,
    balanced_export_kwh: Option<Decimal>,
}

#[derive(Serialize)]
struct HourRow {
    hour: String,
    shelly: Option<Side>,
    dso: Option<Side>,
    import_diff_kwh: Option<Decimal>,
    export_diff_kwh: Option<Decimal>,
}

#[derive(Serialize, Default, Clone)]
struct DayRow {
    day: String,
    hours_both: u32,
    hours_shelly_only: u32,
    hours_dso_only: u32,
    shelly_import_kwh: Decimal,
    dso_import_kwh: Decimal,
    shelly_export_kwh: Decimal,
    dso_export_kwh: Decimal,
}

#[derive(Serialize)]
struct Summary {
    hours_both: u32,
    hours_missing_on_shelly: u32,
    hours_missing_on_dso: u32,
    /// Over the hours on both sides: Shelly − DSO.
    import_diff_kwh: Decimal,
    export_diff_kwh: Decimal,
    /// (Shelly − DSO) / DSO × 100, 2 decimals; null when the DSO shows 0.
    import_drift_percent: Option<Decimal>,
    export_drift_percent: Option<Decimal>,
    balanced_import_diff_kwh: Option<Decimal>,
    balanced_export_diff_kwh: Option<Decimal>,
    verdict: String,
}

#[derive(Serialize)]
struct ReconcileReport {
    pod: String,
    devices: Vec<String>,
    time_zone: String,
    summary: Summary,
    days: Vec<DayRow>,
    hours: Vec<HourRow>,
    notes: Vec<String>,
}

fn k(d: Decimal) -> String {
    format!("{:.3}", d)
}

impl Report for ReconcileReport {
    fn table(&self) -> String {
        #[derive(tabled::Tabled)]
        struct Row {
            day: String,
            #[tabled(rename = "Shelly in")]
            si: String,
            #[tabled(rename = "DSO in")]
            di: String,
            #[tabled(rename = "Shelly out")]
            so: String,
            #[tabled(rename = "DSO out")]
            dout: String,
            #[tabled(rename = "hours on one side")]
            one: String,
        }
        let mut t = output::table(self.days.iter().map(|d| Row {
            day: d.day.clone(),
            si: k(d.shelly_import_kwh),
            di: k(d.dso_import_kwh),
            so: k(d.shelly_export_kwh),
            dout: k(d.dso_export_kwh),
            one: format!("Shelly {} / DSO {}", d.hours_shelly_only, d.hours_dso_only),
        }));
        t.push_str(&self.summary.verdict);
        t.push('\n');
        for n in &self.notes {
            t.push_str(&format!("note: {}\n", output::printable(n)));
        }
        t
    }

    fn csv(&self) -> Option<Vec<Vec<String>>> {
        let mut rows = vec![crate::csv_row![
            "hour",
            "shelly_import_kwh",
            "dso_import_kwh",
            "shelly_export_kwh",
            "dso_export_kwh",
            "shelly_balanced_import_kwh",
            "dso_balanced_import_kwh"
        ]];
        let opt = |v: Option<Decimal>| v.map(|d| d.to_string()).unwrap_or_default();
        for h in &self.hours {
            rows.push(vec![
                h.hour.clone(),
                opt(h.shelly.as_ref().map(|s| s.import_kwh)),
                opt(h.dso.as_ref().map(|s| s.import_kwh)),
                opt(h.shelly.as_ref().map(|s| s.export_kwh)),
                opt(h.dso.as_ref().map(|s| s.export_kwh)),
                opt(h.shelly.as_ref().and_then(|s| s.balanced_import_kwh)),
                opt(h.dso.as_ref().and_then(|s| s.balanced_import_kwh)),
            ]);
        }
        Some(rows)
    }
}

fn percent(diff: Decimal, base: Decimal) -> Option<Decimal> {
    (!base.is_zero()).then(|| (diff / base * Decimal::from(100)).round_dp(2))
}

pub fn run(global: &GlobalArgs, args: &ReconcileArgs) -> anyhow::Result<ExitKind> {
    let tz: chrono_tz::Tz = args
        .tz
        .parse()
        .map_err(|_| ConfigError(format!("--tz {:?} is not an IANA time zone", args.tz)))?;
    let (first, last) = match (args.month, args.from, args.to) {
        (Some(m), _, _) => (
            m,
            m.checked_add_months(chrono::Months::new(1))
                .and_then(|n| n.pred_opt())
                .ok_or_else(|| ConfigError("month out of range".into()))?,
        ),
        (None, Some(f), Some(t)) if f <= t => (f, t),
        _ => {
            return Err(crate::exit::UsageError(
                "give --month YYYY-MM, or --from D1 --to D2".into(),
            )
            .into())
        }
    };
    let zone = Zone::Named(tz);
    let (from, to) = zone.days(first, last);
    let mut c = db::connect(&global.database_url()?)?;
    db::slots::require_followed(&mut c)?;
    let meters = crate::billing::meters::select(&mut c, &args.devices, from, to)?;
    let pod = crate::billing::pod::resolve(&mut c, args.pod.as_deref(), &meters.devices)?;
    let shelly = db::ami::shelly_hours(&mut c, &meters.pairs, from, to)?;
    let dso = db::ami::hours(&mut c, &pod, from, to)?;

    let thousand = Decimal::from(1000);
    let mut hours = Vec::new();
    let mut days: BTreeMap<NaiveDate, DayRow> = BTreeMap::new();
    let (mut both, mut missing_shelly, mut missing_dso) = (0u32, 0u32, 0u32);
    let (mut si, mut di, mut se, mut de) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let (mut sbi, mut dbi, mut sbe, mut dbe, mut balanced) = (
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        true,
    );
    let mut t = from;
    while t < to {
        let local = chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .with_timezone(&tz);
        let day = local.date_naive();
        // A Shelly hour counts when its records cover all of it.
        let s = shelly.get(&t).filter(|h| h.covered_s >= 3600).map(|h| {
            // The billed meters' hour netted by the bill's rule.
            let (bi, be) = crate::tariff::balance::remainder(h.import_wh - h.export_wh);
            Side {
                import_kwh: (h.import_wh / thousand).normalize(),
                export_kwh: (h.export_wh / thousand).normalize(),
                balanced_import_kwh: Some((bi / thousand).normalize()),
                balanced_export_kwh: Some((be / thousand).normalize()),
            }
        });
        let d = dso.get(&t).cloned().map(|h| Side {
            import_kwh: h.import_kwh.normalize(),
            export_kwh: h.export_kwh.normalize(),
            balanced_import_kwh: h.balanced_import_kwh.map(|v| v.normalize()),
            balanced_export_kwh: h.balanced_export_kwh.map(|v| v.normalize()),
        });
        let row = days.entry(day).or_insert_with(|| DayRow {
            day: day.to_string(),
            ..Default::default()
        });
        match (&s, &d) {
            (Some(s), Some(d)) => {
                both += 1;
                row.hours_both += 1;
                row.shelly_import_kwh += s.import_kwh;
                row.dso_import_kwh += d.import_kwh;
                row.shelly_export_kwh += s.export_kwh;
                row.dso_export_kwh += d.export_kwh;
                si += s.import_kwh;
                di += d.import_kwh;
                se += s.export_kwh;
                de += d.export_kwh;
                match (d.balanced_import_kwh, d.balanced_export_kwh) {
                    (Some(bi), Some(be)) => {
                        sbi += s.balanced_import_kwh.unwrap_or_default();
                        sbe += s.balanced_export_kwh.unwrap_or_default();
                        dbi += bi;
                        dbe += be;
                    }
                    _ => balanced = false,
                }
            }
            (Some(_), None) => {
                missing_dso += 1;
                row.hours_shelly_only += 1;
            }
            (None, Some(_)) => {
                missing_shelly += 1;
                row.hours_dso_only += 1;
            }
            (None, None) => {}
        }
        if s.is_some() || d.is_some() {
            hours.push(HourRow {
                hour: local.format("%Y-%m-%d %H:%M %Z").to_string(),
                import_diff_kwh: s
                    .as_ref()
                    .zip(d.as_ref())
                    .map(|(s, d)| s.import_kwh - d.import_kwh),
                export_diff_kwh: s
                    .as_ref()
                    .zip(d.as_ref())
                    .map(|(s, d)| s.export_kwh - d.export_kwh),
                shelly: s,
                dso: d,
            });
        }
        t += 3600;
    }
    let (import_drift, export_drift) = (percent(si - di, di), percent(se - de, de));
    let show = |p: Option<Decimal>, what: &str| match p {
        Some(p) if p >= Decimal::ZERO => format!("{p} % high on {what}"),
        Some(p) => format!("{} % low on {what}", -p),
        None => format!("no {what} on the DSO side"),
    };
    let verdict = format!(
        "Shelly reads {}, {} over {both} hours on both sides; {missing_shelly} hours missing on the Shelly side, {missing_dso} on the DSO side",
        show(import_drift, "import"),
        show(export_drift, "export")
    );
    let mut notes = meters.notes;
    if !balanced && both > 0 {
        notes.push("the DSO file has no hourly-balanced values for some hours: balanced differences are left out".into());
    }
    let report = ReconcileReport {
        pod,
        devices: meters.devices,
        time_zone: tz.name().to_string(),
        summary: Summary {
            hours_both: both,
            hours_missing_on_shelly: missing_shelly,
            hours_missing_on_dso: missing_dso,
            import_diff_kwh: (si - di).normalize(),
            export_diff_kwh: (se - de).normalize(),
            import_drift_percent: import_drift,
            export_drift_percent: export_drift,
            balanced_import_diff_kwh: (balanced && both > 0).then(|| (sbi - dbi).normalize()),
            balanced_export_diff_kwh: (balanced && both > 0).then(|| (sbe - dbe).normalize()),
            verdict,
        },
        days: days
            .into_values()
            .filter(|d| d.hours_both + d.hours_dso_only + d.hours_shelly_only > 0)
            .collect(),
        hours,
        notes,
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(&report))
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    }
    output::print(global.format, &report)?;
    Ok(ExitKind::Success)
}

/// Bars per day: import (blue) and export (orange) difference, Shelly −
/// DSO in kWh over the hours on both sides; above the line the Shelly reads
/// more. (Floats only place the drawing; every number shown is decimal.)
fn svg(r: &ReconcileReport) -> String {
    use rust_decimal::prelude::ToPrimitive;
    let (w, h, left, right, top, bottom) = (1000.0f64, 400.0f64, 70.0, 20.0, 50.0, 60.0);
    let diffs: Vec<(String, f64, f64)> = r
        .days
        .iter()
        .map(|d| {
            (
                d.day.clone(),
                (d.shelly_import_kwh - d.dso_import_kwh)
                    .to_f64()
                    .unwrap_or(0.0),
                (d.shelly_export_kwh - d.dso_export_kwh)
                    .to_f64()
                    .unwrap_or(0.0),
            )
        })
        .collect();
    let max = diffs
        .iter()
        .flat_map(|(_, i, e)| [i.abs(), e.abs()])
        .fold(0.001f64, f64::max);
    let plot_h = h - top - bottom;
    let y = |v: f64| top + plot_h / 2.0 - v / max * (plot_h / 2.0);
    let n = diffs.len().max(1) as f64;
    let slot = (w - left - right) / n;
    let bar = (slot * 0.4).max(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">{}: Shelly − DSO per day, kWh (import blue, export orange)</text>\n\
         <text x=\"{left}\" y=\"42\">{}</text>\n\
         <line x1=\"{left}\" y1=\"{z}\" x2=\"{x2}\" y2=\"{z}\" stroke=\"black\"/>\n\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">+{max:.3}</text>\n\
         <text x=\"{lx}\" y=\"{by}\" text-anchor=\"end\">−{max:.3}</text>\n",
        escape(&r.pod),
        escape(&r.summary.verdict),
        z = y(0.0),
        x2 = w - right,
        lx = left - 6.0,
        ty = top + 4.0,
        by = h - bottom,
    );
    for (i, (day, imp, exp)) in diffs.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.1;
        for (k, (v, colour)) in [(*imp, "#1f77b4"), (*exp, "#ff7f0e")].iter().enumerate() {
            let (y0, y1) = (y(0.0), y(*v));
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{day}: {v:+.3} kWh</title></rect>\n",
                x + bar * k as f64,
                y0.min(y1),
                (y1 - y0).abs(),
            ));
        }
        if diffs.len() <= 40 || i % 7 == 0 {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" transform=\"rotate(45 {:.1} {:.1})\">{}</text>\n",
                x,
                h - bottom + 14.0,
                x,
                h - bottom + 14.0,
                escape(day.get(5..).unwrap_or(day))
            ));
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

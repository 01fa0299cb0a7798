//! `shellyctl report energy`: kWh per hour (for a day) or per day (for a
//! month) and per phase, import and export; optionally an SVG load curve.

use crate::db::{self, energy};
use crate::exit::ExitKind;
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::timerange::{parse_date, Zone};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct EnergyArgs {
    /// A local day: one row per hour.
    #[arg(long, value_parser = parse_date, conflicts_with = "month")]
    pub day: Option<NaiveDate>,
    /// A month (YYYY-MM): one row per day.
    #[arg(long, value_parser = crate::timerange::parse_month)]
    pub month: Option<NaiveDate>,
    /// Time zone (IANA name). Default: TZ, else the system zone.
    #[arg(long)]
    pub tz: Option<String>,
    #[command(flatten)]
    pub filter: crate::timerange::DeviceFilter,
    /// With --day: draw the day's load curve per phase into this SVG file.
    #[arg(long, requires = "day")]
    pub plot: Option<PathBuf>,
}

#[derive(Serialize, Default, Clone)]
struct Phases {
    a: Decimal,
    b: Decimal,
    c: Decimal,
}

impl Phases {
    fn add(&mut self, channel: &str, v: Decimal) {
        match channel {
            "A" => self.a += v,
            "B" => self.b += v,
            _ => self.c += v,
        }
    }
    fn total(&self) -> Decimal {
        self.a + self.b + self.c
    }
    fn normalized(self) -> Phases {
        Phases {
            a: self.a.normalize(),
            b: self.b.normalize(),
            c: self.c.normalize(),
        }
    }
}

#[derive(Serialize)]
struct Period {
    /// Local start of the hour or day, with its UTC offset.
    start: String,
    start_utc: DateTime<Utc>,
    import_kwh: Phases,
    export_kwh: Phases,
    import_total_kwh: Decimal,
    export_total_kwh: Decimal,
}

#[derive(Serialize)]
struct EnergyReport {
    time_zone: String,
    resolution: &'static str,
    devices: Vec<String>,
    /// Which meters are counted and why (the meter policy of `report
    /// costs`: the grid meters, else the only meter with data).
    notes: Vec<String>,
    periods: Vec<Period>,
    import_total_kwh: Decimal,
    export_total_kwh: Decimal,
}

#[derive(Tabled)]
struct Row {
    start: String,
    #[tabled(rename = "A kWh")]
    a: String,
    #[tabled(rename = "B kWh")]
    b: String,
    #[tabled(rename = "C kWh")]
    c: String,
    #[tabled(rename = "import kWh")]
    import: String,
    #[tabled(rename = "export kWh")]
    export: String,
}

fn k(d: Decimal) -> String {
    format!("{:.3}", d)
}

impl Report for EnergyReport {
    fn table(&self) -> String {
        let mut t = output::table(self.periods.iter().map(|p| Row {
            start: p.start.clone(),
            a: k(p.import_kwh.a),
            b: k(p.import_kwh.b),
            c: k(p.import_kwh.c),
            import: k(p.import_total_kwh),
            export: k(p.export_total_kwh),
        }));
        t.push_str(&format!(
            "total import {} kWh, export {} kWh ({})\n",
            k(self.import_total_kwh),
            k(self.export_total_kwh),
            self.time_zone
        ));
        for n in &self.notes {
            t.push_str(&format!("note: {}\n", output::printable(n)));
        }
        t
    }

    fn csv(&self) -> Option<Vec<Vec<String>>> {
        let mut rows = vec![crate::csv_row![
            "start",
            "import_a_kwh",
            "import_b_kwh",
            "import_c_kwh",
            "export_a_kwh",
            "export_b_kwh",
            "export_c_kwh",
            "import_kwh",
            "export_kwh"
        ]];
        for p in &self.periods {
            rows.push(crate::csv_row![
                p.start,
                p.import_kwh.a,
                p.import_kwh.b,
                p.import_kwh.c,
                p.export_kwh.a,
                p.export_kwh.b,
                p.export_kwh.c,
                p.import_total_kwh,
                p.export_total_kwh
            ]);
        }
        Some(rows)
    }
}

pub fn run(global: &GlobalArgs, args: &EnergyArgs) -> anyhow::Result<ExitKind> {
    let zone = Zone::resolve(args.tz.as_deref())?;
    let (first, last, unit, resolution) = match (args.day, args.month) {
        (Some(d), None) => (d, d, "hour", "hour"),
        (None, Some(m)) => (
            m,
            m.checked_add_months(chrono::Months::new(1))
                .and_then(|d| d.pred_opt())
                .expect("date"),
            "day",
            "day",
        ),
        _ => {
            return Err(
                crate::exit::UsageError("give --day YYYY-MM-DD or --month YYYY-MM".into()).into(),
            )
        }
    };
    let (from, to) = zone.days(first, last);
    let mut client = db::connect(&global.database_url()?)?;
    // The same meters `report costs` bills: a PV meter or a sub-meter is
    // never added to the grid meter. (This report reads the records
    // themselves, not the slots.)
    let crate::billing::meters::Billed {
        devices,
        pairs,
        notes,
    } = crate::billing::meters::select(&mut client, &args.filter.devices, from, to)?;
    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    let rows = energy::per_period(&mut client, &pairs, from, to, unit, &zone.sql_name())?;
    let thousand = Decimal::from(1000);
    let mut by: BTreeMap<i64, (Phases, Phases)> = BTreeMap::new();
    for (t, ch, imp, exp) in rows {
        let e = by.entry(t).or_default();
        e.0.add(&ch, imp / thousand);
        e.1.add(&ch, exp / thousand);
    }
    let periods: Vec<Period> = by
        .into_iter()
        .map(|(t, (imp, exp))| Period {
            start: zone.format(t),
            start_utc: ts(t),
            import_total_kwh: imp.total().normalize(),
            export_total_kwh: exp.total().normalize(),
            import_kwh: imp.normalized(),
            export_kwh: exp.normalized(),
        })
        .collect();
    let report = EnergyReport {
        time_zone: zone.name(),
        resolution,
        import_total_kwh: periods
            .iter()
            .map(|p| p.import_total_kwh)
            .sum::<Decimal>()
            .normalize(),
        export_total_kwh: periods
            .iter()
            .map(|p| p.export_total_kwh)
            .sum::<Decimal>()
            .normalize(),
        devices: devices.clone(),
        notes,
        periods,
    };
    if let Some(path) = &args.plot {
        let curve = energy::net_per_record(&mut client, &pairs, from, to)?;
        let mut series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for (ch, start, len, wh) in curve {
            let watts = wh * Decimal::from(3600) / Decimal::from(len.max(1));
            let w: f64 = watts.to_string().parse().unwrap_or(0.0);
            series.entry(ch).or_default().push((start + len / 2, w));
        }
        let title = format!("{} — {} ({})", devices.join(", "), first, zone.name());
        std::fs::write(path, svg(&title, from, to, &series, &zone))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        crate::log::info(
            "plot_written",
            None,
            serde_json::json!({"file": path.display().to_string()}),
        );
    }
    output::print(global.format, &report)?;
    Ok(ExitKind::Success)
}

/// A line chart of average power per record and phase.
fn svg(
    title: &str,
    from: i64,
    to: i64,
    series: &BTreeMap<String, Vec<(i64, f64)>>,
    zone: &Zone,
) -> String {
    let (w, h, left, right, top, bottom) = (1000.0, 420.0, 70.0, 20.0, 40.0, 50.0);
    let hi = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(100.0f64, f64::max);
    let lo = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::min);
    // Round grid steps: 1, 2 or 5 × 10^n watts, about 5 of them.
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (min, max) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let x = |t: i64| left + (t - from) as f64 / (to - from).max(1) as f64 * (w - left - right);
    let y = |v: f64| top + (max - v) / (max - min) * (h - top - bottom);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"24\" font-size=\"15\">{}</text>\n",
        esc(title)
    );
    // Horizontal grid with watt labels.
    let mut v = min;
    while v <= max + step / 2.0 {
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0} W</text>\n",
            w - right, left - 6.0, yy + 4.0, v
        ));
        v += step;
    }
    // Hour ticks in local time, every 3 hours.
    let mut t = from - from.rem_euclid(3600) + 3600;
    while t < to {
        let label = zone.format(t);
        let hour = &label[11..13];
        if hour.parse::<u32>().is_ok_and(|hh| hh % 3 == 0) {
            let xx = x(t);
            s.push_str(&format!(
                "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                h - bottom, h - bottom + 18.0, &label[11..16]
            ));
        }
        t += 3600;
    }
    let zero = y(0.0);
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{zero:.1}\" x2=\"{:.1}\" y2=\"{zero:.1}\" stroke=\"#888\"/>\n",
        w - right
    ));
    let colours = [("A", "#d62728"), ("B", "#2ca02c"), ("C", "#1f77b4")];
    for (i, (ch, colour)) in colours.iter().enumerate() {
        if let Some(points) = series.get(*ch) {
            // A new line after a gap in the records: missing data is not drawn.
            let typical = points
                .windows(2)
                .map(|p| p[1].0 - p[0].0)
                .min()
                .unwrap_or(60);
            for run in points.chunk_by(|a, b| b.0 - a.0 <= 2 * typical) {
                let pts: Vec<String> = run
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                    .collect();
                s.push_str(&format!("<polyline class=\"phase-{ch}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" points=\"{}\"/>\n", pts.join(" ")));
            }
        }
        let lx = w - right - 240.0 + i as f64 * 80.0;
        s.push_str(&format!(
            "<rect x=\"{lx}\" y=\"14\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"25\">phase {ch}</text>\n",
            lx + 16.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

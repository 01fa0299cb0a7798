//! `shellyctl report activity`: for pushed devices and a local day, each
//! logged channel's active periods, idle periods and periods without a
//! connection to `listen` (from listen_sessions, activity and power_logs).

use crate::activity::{timeline, Kind, Segment};
use crate::db;
use crate::exit::ExitKind;
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::timerange::{parse_date, Zone};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use serde::Serialize;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct ActivityArgs {
    /// A local day (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub day: NaiveDate,
    /// Time zone of the day (IANA name). Default: TZ, else the system zone.
    #[arg(long)]
    pub tz: Option<String>,
    #[command(flatten)]
    pub filter: crate::timerange::DeviceFilter,
}

#[derive(Serialize)]
struct Period {
    kind: Kind,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    duration_s: i64,
    /// Disconnected: why the connection before it ended.
    reason: Option<String>,
    #[serde(skip)]
    local: (String, String),
}

#[derive(Serialize)]
struct Channel {
    device_id: String,
    component: String,
    channel: i32,
    active_s: i64,
    idle_s: i64,
    disconnected_s: i64,
    periods: Vec<Period>,
}

#[derive(Serialize)]
struct ActivityReport {
    day: NaiveDate,
    time_zone: String,
    from: DateTime<Utc>,
    /// The end of the day, or now if the day is not over.
    to: DateTime<Utc>,
    channels: Vec<Channel>,
}

#[derive(Tabled)]
struct Row {
    device: String,
    channel: String,
    kind: String,
    from: String,
    to: String,
    minutes: String,
    reason: String,
}

impl Report for ActivityReport {
    fn table(&self) -> String {
        if self.channels.is_empty() {
            return "no pushed channels\n".into();
        }
        output::table(self.channels.iter().flat_map(|c| {
            c.periods.iter().map(|p| Row {
                device: c.device_id.clone(),
                channel: format!("{}:{}", c.component, c.channel),
                kind: format!("{:?}", p.kind).to_lowercase(),
                from: p.local.0.clone(),
                to: p.local.1.clone(),
                minutes: format!("{:.1}", p.duration_s as f64 / 60.0),
                reason: p.reason.clone().unwrap_or_default(),
            })
        }))
    }
}

fn at(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

pub fn run(global: &GlobalArgs, args: &ActivityArgs) -> anyhow::Result<ExitKind> {
    let zone = Zone::resolve(args.tz.as_deref())?;
    let (from, day_end) = zone.days(args.day, args.day);
    let now = global.now();
    let to = day_end.min(now).max(from);
    let mut db = db::connect(&global.database_url()?)?;
    let mut channels = Vec::new();
    let channel_rows = db::listen::pushed_channels(&mut db)?;
    for (device_id, component, channel) in channel_rows {
        if !args.filter.devices.is_empty() && !args.filter.devices.contains(&device_id) {
            continue;
        }
        let connections = db::listen::sessions_between(&mut db, &device_id, from, to)?;
        // A period still running lasts as far as its logged minutes go.
        let active =
            db::listen::active_periods(&mut db, (&device_id, &component, channel), from, to)?;
        let segments = timeline(from, to, &connections, &active);
        let total = |k: Kind| -> i64 {
            segments
                .iter()
                .filter(|s| s.kind == k)
                .map(|s| s.end - s.start)
                .sum()
        };
        channels.push(Channel {
            active_s: total(Kind::Active),
            idle_s: total(Kind::Idle),
            disconnected_s: total(Kind::Disconnected),
            device_id,
            component,
            channel,
            periods: segments
                .iter()
                .map(|s: &Segment| Period {
                    kind: s.kind,
                    start: at(s.start),
                    end: at(s.end),
                    duration_s: s.end - s.start,
                    reason: s.reason.clone(),
                    local: (zone.format(s.start), zone.format(s.end)),
                })
                .collect(),
        });
    }
    output::print(
        global.format,
        &ActivityReport {
            day: args.day,
            time_zone: zone.name(),
            from: at(from),
            to: at(to),
            channels,
        },
    )?;
    Ok(ExitKind::Success)
}

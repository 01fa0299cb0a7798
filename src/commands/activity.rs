//! `shellyctl report activity`: for pushed devices and a local day, each
//! logged channel's active periods, idle periods and periods without a
//! connection to `listen` (from listen_sessions, activity and power_logs).

use crate::activity::{timeline, Connection, Kind, Segment};
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
    let channel_rows = db.query(
        "SELECT device_id, component, channel FROM power_log_state
          WHERE device_id IN (SELECT device_id FROM listen_sessions)
         UNION
         SELECT device_id, component, channel FROM activity
         ORDER BY 1, 2, 3",
        &[],
    )?;
    for r in channel_rows {
        let (device_id, component, channel): (String, String, i32) = (r.get(0), r.get(1), r.get(2));
        if !args.filter.devices.is_empty() && !args.filter.devices.contains(&device_id) {
            continue;
        }
        let connections: Vec<Connection> = db
            .query(
                "SELECT EXTRACT(EPOCH FROM connected_at)::bigint,
                        EXTRACT(EPOCH FROM COALESCE(disconnected_at, to_timestamp($3)))::bigint, reason
                   FROM listen_sessions
                  WHERE device_id = $1 AND connected_at < to_timestamp($3)
                    AND (disconnected_at IS NULL OR disconnected_at > to_timestamp($2) - interval '7 days')
                  ORDER BY 1",
                &[&device_id, &(from as f64), &(to as f64)],
            )?
            .iter()
            .map(|r| Connection {
                start: r.get(0),
                end: r.get(1),
                reason: r.get(2),
            })
            .collect();
        // A period still running lasts as far as its logged minutes go.
        let active: Vec<(i64, i64)> = db
            .query(
                "SELECT EXTRACT(EPOCH FROM a.started_at)::bigint,
                        EXTRACT(EPOCH FROM COALESCE(a.ended_at,
                            (SELECT max(l.\"timestamp\") + interval '1 minute' FROM power_logs l
                              WHERE l.device_id = a.device_id AND l.component = a.component
                                AND l.channel = a.channel AND l.\"timestamp\" >= a.started_at),
                            a.started_at + interval '1 minute'))::bigint
                   FROM activity a
                  WHERE a.device_id = $1 AND a.component = $2 AND a.channel = $3
                    AND a.started_at < to_timestamp($5)
                    AND (a.ended_at IS NULL OR a.ended_at > to_timestamp($4))
                  ORDER BY 1",
                &[
                    &device_id,
                    &component,
                    &channel,
                    &(from as f64),
                    &(to as f64),
                ],
            )?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).min(to)))
            .collect();
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

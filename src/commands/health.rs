//! `shellyctl health`: is data arriving? From the database only: the last
//! successful run of each job per device, the freshest reading and interval
//! cursor per device, and pending notifications. Exits 1 when something is
//! stale beyond its limit, when a configured device never delivered data,
//! when nothing is being collected at all (no device configured, none ever
//! seen), when a pushed device has been disconnected from `listen` too long,
//! or when a cursor stands in the future (for a monitoring check or
//! OnFailure=).

use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use std::time::Duration;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Oldest acceptable live reading per polled device.
    #[arg(long, env = "HEALTH_MAX_READING_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_reading_age: Duration,
    /// Largest acceptable lag of an interval cursor behind now.
    #[arg(long, env = "HEALTH_MAX_INTERVAL_LAG", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_interval_lag: Duration,
    /// Longest time a pushed device (one that has connected to `listen`)
    /// may be without a connection.
    #[arg(long, env = "HEALTH_MAX_DISCONNECTED", default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_disconnected: Duration,
    /// Oldest acceptable undelivered notification.
    #[arg(long, env = "HEALTH_MAX_PENDING_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_pending_age: Duration,
    /// Longest time since a job last succeeded, per job: JOB=DURATION
    /// (repeatable). Defaults: snapshot=5m, ingest-intervals=30m,
    /// backfill=26h, evaluate-alerts=5m, retention=26h, notify=1h.
    #[arg(long = "max-job-age", value_parser = parse_job_age)]
    pub max_job_age: Vec<(String, Duration)>,
    /// Configured devices (as for snapshot): each must have delivered a
    /// reading or an interval at least once.
    #[arg(long = "host", env = "SHELLY_HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
}

fn parse_job_age(s: &str) -> Result<(String, Duration), String> {
    let (j, d) = s
        .split_once('=')
        .ok_or("expected JOB=DURATION, e.g. snapshot=2m")?;
    Ok((
        j.to_string(),
        humantime::parse_duration(d).map_err(|e| e.to_string())?,
    ))
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    subject: String,
    /// When the thing last happened (reading, run, cursor), if ever.
    last: Option<DateTime<Utc>>,
    age_s: Option<i64>,
    /// None for a check without an age limit (a device must have delivered
    /// something, ever).
    limit_s: Option<i64>,
    ok: bool,
    detail: Option<String>,
}

#[derive(Serialize)]
struct HealthReport {
    ok: bool,
    checks: Vec<Check>,
}

#[derive(Tabled)]
struct Row {
    check: &'static str,
    subject: String,
    age: String,
    limit: String,
    status: &'static str,
    detail: String,
}

fn human(s: i64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string()
}

impl Report for HealthReport {
    fn table(&self) -> String {
        let mut t = output::table(self.checks.iter().map(|c| Row {
            check: c.check,
            subject: c.subject.clone(),
            age: c.age_s.map(human).unwrap_or_else(|| "never".into()),
            limit: c.limit_s.map(human).unwrap_or_else(|| "-".into()),
            status: if c.ok { "ok" } else { "STALE" },
            detail: c.detail.clone().unwrap_or_default(),
        }));
        t.push_str(if self.ok {
            "healthy\n"
        } else {
            "unhealthy: see STALE rows\n"
        });
        t
    }
}

/// How far ahead of now an interval cursor may stand (clock jitter) before
/// it means the device's clock is wrong.
const CLOCK_SKEW_S: i64 = 120;

pub fn run(global: &GlobalArgs, args: &HealthArgs) -> anyhow::Result<ExitKind> {
    let mut c = db::connect(&global.database_url()?)?;
    let now = global.now();
    let defaults = [
        ("snapshot", 300),
        ("ingest-intervals", 1800),
        ("backfill", 26 * 3600),
        ("evaluate-alerts", 300),
        ("retention", 26 * 3600),
        ("notify", 3600),
    ];
    let job_limit = |job: &str| -> i64 {
        args.max_job_age
            .iter()
            .rev()
            .find(|(j, _)| j == job)
            .map(|(_, d)| d.as_secs() as i64)
            .or_else(|| defaults.iter().find(|(j, _)| *j == job).map(|(_, s)| *s))
            .unwrap_or(3600)
    };
    for (j, _) in &args.max_job_age {
        if !defaults.iter().any(|(d, _)| d == j) {
            return Err(ConfigError(format!("--max-job-age: unknown job {j:?}")).into());
        }
    }
    let age = |t: Option<DateTime<Utc>>| t.map(|t| now - t.timestamp());
    let mut checks = Vec::new();

    for r in db::health::job_runs(&mut c)? {
        let limit = job_limit(&r.job);
        let a = age(r.last_success);
        let failing = r.last_failure.is_some() && r.last_failure > r.last_success;
        checks.push(Check {
            check: "job",
            subject: if r.device_id.is_empty() {
                r.job.clone()
            } else {
                format!("{} {}", r.job, r.device_id)
            },
            last: r.last_success,
            age_s: a,
            limit_s: Some(limit),
            ok: a.is_some_and(|a| a <= limit),
            detail: failing
                .then(|| format!("failing: {}", r.last_error.clone().unwrap_or_default())),
        });
    }
    let window = db::health::recent(&mut c, db::utc(now))?;
    // A configured device that never delivered anything is not "no news".
    let hosts = crate::settings::clean_hosts(&args.hosts);
    // Nor is a fresh install whose settings never reached the jobs: no
    // device configured here and none ever seen.
    if hosts.is_empty() && !db::health::any_device_seen(&mut c)? {
        checks.push(Check {
            check: "collection",
            subject: "devices".into(),
            last: None,
            age_s: None,
            limit_s: None,
            ok: false,
            detail: Some(
                "nothing is being collected: no device is configured (SHELLY_HOST) and none was \
                 ever seen; set SHELLY_HOST in the settings file (or connect a device to listen)"
                    .into(),
            ),
        });
    }
    for d in db::health::delivered(&mut c, &hosts, &window)? {
        checks.push(Check {
            check: "device",
            subject: d.subject,
            last: d.last,
            age_s: age(d.last),
            limit_s: None,
            ok: d.last.is_some(),
            detail: match (d.known, d.last) {
                (false, _) => {
                    Some("configured, but never identified: no job has reached it".into())
                }
                (true, None) => Some("never delivered a reading or an interval".into()),
                (true, Some(_)) => None,
            },
        });
    }
    let max_reading = args.max_reading_age.as_secs() as i64;
    for (device, last) in db::health::polled_readings(&mut c, &window)? {
        let a = age(last);
        checks.push(Check {
            check: "reading",
            subject: device,
            last,
            age_s: a,
            limit_s: Some(max_reading),
            ok: a.is_some_and(|a| a <= max_reading),
            detail: None,
        });
    }
    let max_lag = args.max_interval_lag.as_secs() as i64;
    for (subject, next_ts) in db::health::cursors(&mut c)? {
        let a = now - next_ts.timestamp();
        // A cursor ahead of now: the device's clock is ahead, and records
        // it writes with the right time will be skipped.
        let ahead = -a > CLOCK_SKEW_S;
        checks.push(Check {
            check: "intervals",
            subject,
            last: Some(next_ts),
            age_s: Some(a),
            limit_s: Some(max_lag),
            ok: a <= max_lag && !ahead,
            detail: ahead.then(|| {
                format!(
                    "cursor is {} in the future: is the device's clock ahead?",
                    human(-a)
                )
            }),
        });
    }
    let max_disconnected = args.max_disconnected.as_secs() as i64;
    for d in db::health::pushed_devices(&mut c)? {
        let a = d.disconnected_at.map(|t| (now - t.timestamp()).max(0));
        checks.push(Check {
            check: "connection",
            subject: d.device_id,
            last: d.disconnected_at.or(d.connected_at),
            age_s: a,
            limit_s: Some(max_disconnected),
            ok: a.is_none_or(|a| a <= max_disconnected),
            detail: match (d.disconnected_at, d.reason) {
                (None, _) => Some("connected to listen".into()),
                (Some(_), r) => Some(format!(
                    "not connected to listen (last connection ended: {})",
                    r.unwrap_or_else(|| "unknown".into())
                )),
            },
        });
    }
    let max_pending = args.max_pending_age.as_secs() as i64;
    let p = db::health::notifications(&mut c, now)?;
    let a = age(p.oldest);
    checks.push(Check {
        check: "notifications",
        subject: format!("{} pending, {} given up in 24 h", p.pending, p.given_up),
        last: p.oldest,
        age_s: a,
        limit_s: Some(max_pending),
        ok: a.is_none_or(|a| a <= max_pending) && p.given_up == 0,
        detail: None,
    });
    let ok = checks.iter().all(|c| c.ok);
    output::print(global.format, &HealthReport { ok, checks })?;
    Ok(if ok {
        ExitKind::Success
    } else {
        ExitKind::Failure
    })
}

//! `shellyctl health`: is data arriving? From the database only: the last
//! successful run of each job per device, the freshest reading and interval
//! cursor per device, and pending notifications. Exits 1 when something is
//! stale beyond its limit (for a monitoring check or OnFailure=).

use crate::cli::GlobalArgs;
use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
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
    /// Oldest acceptable undelivered notification.
    #[arg(long, env = "HEALTH_MAX_PENDING_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_pending_age: Duration,
    /// Longest time since a job last succeeded, per job: JOB=DURATION
    /// (repeatable). Defaults: snapshot=5m, ingest-intervals=30m,
    /// backfill=26h, evaluate-alerts=5m, retention=26h, notify=1h.
    #[arg(long = "max-job-age", value_parser = parse_job_age)]
    pub max_job_age: Vec<(String, Duration)>,
    /// Treat this unix time as now (tests).
    #[arg(long, hide = true)]
    pub now: Option<i64>,
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
    limit_s: i64,
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
            limit: human(c.limit_s),
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

pub fn run(global: &GlobalArgs, args: &HealthArgs) -> anyhow::Result<ExitKind> {
    let mut c = db::connect(&global.database_url()?)?;
    let now = args.now.unwrap_or_else(|| Utc::now().timestamp());
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

    for r in c.query(
        "SELECT job, device_id, last_success, last_failure, last_error FROM job_runs ORDER BY 1, 2",
        &[],
    )? {
        let (job, device): (String, String) = (r.get(0), r.get(1));
        let (ok_at, fail_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (r.get(2), r.get(3));
        let limit = job_limit(&job);
        let a = age(ok_at);
        let failing = fail_at.is_some() && fail_at > ok_at;
        checks.push(Check {
            check: "job",
            subject: if device.is_empty() {
                job.clone()
            } else {
                format!("{job} {device}")
            },
            last: ok_at,
            age_s: a,
            limit_s: limit,
            ok: a.is_some_and(|a| a <= limit),
            detail: failing.then(|| {
                format!(
                    "failing: {}",
                    r.get::<_, Option<String>>(4).unwrap_or_default()
                )
            }),
        });
    }
    let max_reading = args.max_reading_age.as_secs() as i64;
    for r in c.query(
        "SELECT d.device_id,
                GREATEST((SELECT max(ts) FROM power_readings p WHERE p.device_id = d.device_id),
                         (SELECT max(ts) FROM switch_readings s WHERE s.device_id = d.device_id))
           FROM devices d
          WHERE EXISTS (SELECT 1 FROM job_runs j WHERE j.job = 'snapshot' AND j.device_id = d.device_id)
          ORDER BY 1",
        &[],
    )? {
        let last: Option<DateTime<Utc>> = r.get(1);
        let a = age(last);
        checks.push(Check { check: "reading", subject: r.get(0), last, age_s: a, limit_s: max_reading, ok: a.is_some_and(|a| a <= max_reading), detail: None });
    }
    let max_lag = args.max_interval_lag.as_secs() as i64;
    for r in c.query(
        "SELECT device_id || ' ' || component, next_ts FROM ingest_cursors ORDER BY 1",
        &[],
    )? {
        let last: Option<DateTime<Utc>> = r.get(1);
        let a = age(last);
        checks.push(Check {
            check: "intervals",
            subject: r.get(0),
            last,
            age_s: a,
            limit_s: max_lag,
            ok: a.is_some_and(|a| a <= max_lag),
            detail: None,
        });
    }
    let max_pending = args.max_pending_age.as_secs() as i64;
    let p = c.query_one(
        "SELECT count(*) FILTER (WHERE delivery_status IN ('pending', 'failed')),
                min(created_at) FILTER (WHERE delivery_status IN ('pending', 'failed')),
                count(*) FILTER (WHERE delivery_status = 'given_up' AND created_at > to_timestamp($1) - interval '1 day')
           FROM alert_events",
        &[&(now as f64)],
    )?;
    let (pending, oldest, given_up): (i64, Option<DateTime<Utc>>, i64) =
        (p.get(0), p.get(1), p.get(2));
    let a = age(oldest);
    checks.push(Check {
        check: "notifications",
        subject: format!("{pending} pending, {given_up} given up in 24 h"),
        last: oldest,
        age_s: a,
        limit_s: max_pending,
        ok: a.is_none_or(|a| a <= max_pending) && given_up == 0,
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

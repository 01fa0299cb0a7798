//! What `shellyctl health` reads: job runs, the newest data per device,
//! interval cursors and undelivered notifications.

use chrono::{DateTime, Utc};
use postgres::Client;

pub struct JobRun {
    pub job: String,
    /// '' for jobs not tied to a device; a host for a device never identified.
    pub device_id: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Every job run, except a row recorded under a host name (the device had
/// not answered yet) that the same job's row for the device at that host
/// has superseded with a later success.
pub fn job_runs(c: &mut Client) -> Result<Vec<JobRun>, postgres::Error> {
    Ok(c.query(
        "SELECT j.job, j.device_id, j.last_success, j.last_failure, j.last_error
               FROM job_runs j
              WHERE NOT EXISTS (
                    SELECT 1 FROM devices d
                      JOIN job_runs k ON k.job = j.job AND k.device_id = d.device_id
                     WHERE d.host = j.device_id AND d.device_id <> j.device_id
                       AND k.last_success >= j.last_run)
              ORDER BY 1, 2",
        &[],
    )?
    .into_iter()
    .map(|r| JobRun {
        job: r.get(0),
        device_id: r.get(1),
        last_success: r.get(2),
        last_failure: r.get(3),
        last_error: r.get(4),
    })
    .collect())
}

/// A device id and the time of its newest live reading, if any.
pub type NewestReading = (String, Option<DateTime<Utc>>);

/// The tables a device delivers into: (table, time key, newest value).
const READINGS: [(&str, &str, &str); 2] = [
    ("power_readings", "ts", "ts"),
    ("switch_readings", "ts", "ts"),
];
const ANYTHING: [(&str, &str, &str); 4] = [
    ("power_readings", "ts", "ts"),
    ("switch_readings", "ts", "ts"),
    ("power_logs", "\"timestamp\"", "\"timestamp\""),
    ("energy_intervals", "start_ts", "end_ts"),
];

/// SQL: the newest value of device `d` over `tables`, among rows with the
/// key after $1 (which touches only the last months' partitions: with a
/// default partition PostgreSQL cannot stop at the newest partition that
/// has a row, it probes every month), among all rows when $1 is NULL. Each is ordered by (device_id, key), the order of an index
/// every such table has (sql/0017): ordered by the key alone, the planner
/// may walk the key's own index backwards and filter by device, reading
/// every row for a device that has none (38 s for 40 meters without
/// readings beside 10 with a month of them). The device is a range of one,
/// not `=`: with `=` the planner drops it from the order.
fn newest(tables: &[(&str, &str, &str)]) -> String {
    let each: Vec<String> = tables
        .iter()
        .map(|(table, key, value)| {
            format!(
                "(SELECT x.{value} FROM {table} x
                   WHERE x.device_id >= d.device_id AND x.device_id <= d.device_id
                     AND ($1::timestamptz IS NULL OR x.{key} > $1)
                   ORDER BY x.device_id DESC, x.{key} DESC LIMIT 1)"
            )
        })
        .collect();
    format!("GREATEST({})", each.join(", "))
}

/// How far back the first look goes: a device that delivered anything in
/// the last five weeks is answered from the newest two partitions.
pub fn recent(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::days(35)
}

/// The newest value over `tables` of each device `which` selects (SQL on
/// `d`, over $2, an array of ids or NULL), ordered by device: the last
/// five weeks first, and all the past only for the devices with nothing
/// in them (a row newer than `since` anywhere is newer than every older
/// one, so only those can need it).
fn newest_per_device(
    c: &mut Client,
    tables: &[(&str, &str, &str)],
    which: &str,
    since: DateTime<Utc>,
) -> Result<Vec<NewestReading>, postgres::Error> {
    let sql = format!(
        "SELECT d.device_id, {} FROM devices d
          WHERE ({which}) AND ($2::text[] IS NULL OR d.device_id = ANY($2))
          ORDER BY 1",
        newest(tables)
    );
    let mut out: Vec<NewestReading> = c
        .query(&sql, &[&Some(since), &None::<Vec<String>>])?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<String> = out
        .iter()
        .filter(|(_, t)| t.is_none())
        .map(|(d, _)| d.clone())
        .collect();
    if !missing.is_empty() {
        let older: std::collections::HashMap<String, Option<DateTime<Utc>>> = c
            .query(&sql, &[&None::<DateTime<Utc>>, &Some(missing)])?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (d, t) in &mut out {
            if t.is_none() {
                *t = older.get(d).copied().flatten();
            }
        }
    }
    Ok(out)
}

/// The newest live reading of each device that `snapshot` polls.
pub fn polled_readings(
    c: &mut Client,
    since: DateTime<Utc>,
) -> Result<Vec<NewestReading>, postgres::Error> {
    newest_per_device(
        c,
        &READINGS,
        "EXISTS (SELECT 1 FROM job_runs j WHERE j.job = 'snapshot' AND j.device_id = d.device_id)",
        since,
    )
}

/// A configured device: a `devices` row, or a configured host that has none.
pub struct Delivered {
    /// The device id, or the host when no device row names it.
    pub subject: String,
    pub known: bool,
    /// The newest reading, pushed log or interval end, if any ever came.
    pub last: Option<DateTime<Utc>>,
}

/// For every device row and every host in `hosts` without one: when it
/// last delivered anything.
pub fn delivered(
    c: &mut Client,
    hosts: &[String],
    since: DateTime<Utc>,
) -> Result<Vec<Delivered>, postgres::Error> {
    let mut out: Vec<Delivered> = newest_per_device(c, &ANYTHING, "true", since)?
        .into_iter()
        .map(|(subject, last)| Delivered {
            subject,
            known: true,
            last,
        })
        .collect();
    for r in c.query(
        "SELECT h FROM unnest($1::text[]) AS h
          WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.host = h)",
        &[&hosts],
    )? {
        out.push(Delivered {
            subject: r.get(0),
            known: false,
            last: None,
        });
    }
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    Ok(out)
}

/// A device that has connected to `listen`, and its latest connection.
pub struct Pushed {
    pub device_id: String,
    pub connected_at: Option<DateTime<Utc>>,
    /// None while connected.
    pub disconnected_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// Every pushed device: connected now (a session open), or when its last
/// session ended and why.
pub fn pushed_devices(c: &mut Client) -> Result<Vec<Pushed>, postgres::Error> {
    Ok(c.query(
        "SELECT DISTINCT ON (device_id) device_id, connected_at, disconnected_at, reason
           FROM listen_sessions
          ORDER BY device_id, (disconnected_at IS NULL) DESC, disconnected_at DESC",
        &[],
    )?
    .into_iter()
    .map(|r| Pushed {
        device_id: r.get(0),
        connected_at: r.get(1),
        disconnected_at: r.get(2),
        reason: r.get(3),
    })
    .collect())
}

/// Each interval cursor ("device component") and where it stands.
pub fn cursors(c: &mut Client) -> Result<Vec<(String, DateTime<Utc>)>, postgres::Error> {
    Ok(c.query(
        "SELECT device_id || ' ' || component, next_ts FROM ingest_cursors ORDER BY 1",
        &[],
    )?
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

pub struct Pending {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
    /// Events given up on in the 24 hours before `now`.
    pub given_up: i64,
}

pub fn notifications(c: &mut Client, now: i64) -> Result<Pending, postgres::Error> {
    let p = c.query_one(
        "SELECT count(*) FILTER (WHERE delivery_status IN ('pending', 'failed')),
                min(created_at) FILTER (WHERE delivery_status IN ('pending', 'failed')),
                count(*) FILTER (WHERE delivery_status = 'given_up' AND created_at > $1::timestamptz - interval '1 day')
           FROM alert_events",
        &[&super::utc(now)],
    )?;
    Ok(Pending {
        pending: p.get(0),
        oldest: p.get(1),
        given_up: p.get(2),
    })
}

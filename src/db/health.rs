//! What `shellyctl health` reads: job runs, the newest data per device,
//! interval cursors and undelivered notifications.

use chrono::{DateTime, Utc};
use postgres::Client;

use super::partitions;

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

/// SQL: the newest value of device `d` over `tables`, each read from the
/// relations given with it, among rows with the key in ($1, $3] (see
/// [`Recent`]), among all rows when $1 is NULL. Each is ordered by
/// (device_id, key), the order of an index every such table has
/// (sql/0017): ordered by the key alone, the planner may walk the key's
/// own index backwards and filter by device, reading every row for a
/// device that has none (38 s for 40 meters without readings beside 10
/// with a month of them). The device is a range of one, not `=`: with `=`
/// the planner drops it from the order.
fn newest(tables: &[&Source]) -> String {
    let each: Vec<String> = tables
        .iter()
        .flat_map(|s| {
            s.relations.iter().map(|rel| {
                format!(
                    "(SELECT x.{value} FROM {rel} x
                       WHERE x.device_id >= d.device_id AND x.device_id <= d.device_id
                         AND ($1::timestamptz IS NULL OR (x.{key} > $1 AND x.{key} <= $3))
                       ORDER BY x.device_id DESC, x.{key} DESC LIMIT 1)",
                    rel = partitions::quote_ident(rel),
                    key = s.key,
                    value = s.value,
                )
            })
        })
        .collect();
    if each.is_empty() {
        // Every month of the window is empty: NULL, with $1 and $3 typed.
        return "CASE WHEN $1::timestamptz <= $3::timestamptz THEN NULL::timestamptz END".into();
    }
    format!("GREATEST({})", each.join(", "))
}

/// Where health looks, widening: rows of the last day, then of the last
/// five weeks, then all, each later look only for the devices the earlier
/// ones found nothing for (a row after a lower bound is newer than every
/// row before it). Bounded looks stop where a device's clock may run ahead
/// of `now` (a row later than that was not written by this clock).
pub struct Recent {
    day: DateTime<Utc>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// Where the day's look reads each table of [`ANYTHING`]: asked of the
    /// catalog once for every statement of the run.
    day_sources: Vec<Source>,
}

pub fn recent(c: &mut Client, now: DateTime<Utc>) -> Result<Recent, postgres::Error> {
    let day = now - chrono::Duration::days(1);
    let until = now + chrono::Duration::seconds(crate::device::MAX_AHEAD_S);
    Ok(Recent {
        day,
        since: now - chrono::Duration::days(35),
        until,
        day_sources: sources_within(c, &ANYTHING, day, until)?,
    })
}

/// A table as health reads it: the relations that hold the rows looked
/// at, the time key and the value reported.
struct Source {
    table: &'static str,
    relations: Vec<String>,
    key: &'static str,
    value: &'static str,
}

impl Source {
    /// The whole table.
    fn whole(&(table, key, value): &(&'static str, &'static str, &'static str)) -> Source {
        Source {
            table,
            relations: vec![table.to_string()],
            key,
            value,
        }
    }
}

/// A partition: its name, whether it is a plain table, and whether it has
/// a page (if asked).
struct Child {
    name: String,
    plain: bool,
    paged: Option<bool>,
}

/// Each table's rows keyed in (`from`, `to`], read from the partitions
/// that can hold them rather than from the table: the window's months'
/// own partitions, and, when a month has none, the partitions that are
/// not months (the default partition, the pre-upgrade `_history`, any a
/// user attached), since partitions are disjoint. A partition without a
/// page (a month made ahead, the new month of a window across a month's
/// end, an empty default) holds no row and is left out. A table that is
/// not partitioned, or has a partition that is itself partitioned or not a
/// plain table, is read as a whole.
///
/// Why: a process is new at each run, and a statement on a partitioned
/// table first opens every partition's bounds (some 1 ms for four tables
/// with a year and a half of months, and energy_intervals gains twelve a
/// year); named directly, the day's month costs what an unpartitioned
/// table does. (A row that lands in an empty partition while health runs
/// is seen by the next run.)
fn sources_within(
    c: &mut Client,
    tables: &[(&'static str, &'static str, &'static str)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Source>, postgres::Error> {
    let mut months = Vec::new();
    let mut m = partitions::month_start(from);
    while m <= to && months.len() < 3 {
        months.push(m);
        m = m
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(to + chrono::Duration::days(1));
    }
    let covered = m > to;
    let parents: Vec<&str> = tables.iter().map(|(t, _, _)| *t).collect();
    let own: Vec<String> = parents
        .iter()
        .flat_map(|t| months.iter().map(|m| partitions::month_name(t, *m)))
        .collect();
    // Every partition of the tables, by table. Its size is asked (a stat of
    // its file) only of the window's months and of partitions not named
    // like a month (NULL for the rest; one of those that is not one of ours
    // after all is read).
    let mut children: std::collections::HashMap<String, Vec<Child>> =
        std::collections::HashMap::new();
    for r in c.query(
        "SELECT t, c.relname::text, c.relkind = 'r',
                CASE WHEN c.relname = ANY($2) OR c.relname !~ '_p[0-9]{6,}$'
                     THEN pg_relation_size(c.oid) > 0 END
           FROM unnest($1::text[]) AS t
           JOIN pg_inherits i ON i.inhparent = to_regclass(quote_ident(t))
           JOIN pg_class c ON c.oid = i.inhrelid",
        &[&parents, &own],
    )? {
        children.entry(r.get(0)).or_default().push(Child {
            name: r.get(1),
            plain: r.get(2),
            paged: r.get(3),
        });
    }
    Ok(tables
        .iter()
        .map(|t| {
            let (table, _, _) = *t;
            match children.get(table) {
                Some(parts) if covered && parts.iter().all(|p| p.plain) => {
                    let month = |n: &str| partitions::month_of(table, n);
                    let missing = months
                        .iter()
                        .any(|m| !parts.iter().any(|p| month(&p.name) == Some(*m)));
                    Source {
                        relations: parts
                            .iter()
                            .filter(|p| match month(&p.name) {
                                Some(m) => months.contains(&m) && p.paged == Some(true),
                                None => missing && p.paged != Some(false),
                            })
                            .map(|p| p.name.clone())
                            .collect(),
                        ..Source::whole(t)
                    }
                }
                _ => Source::whole(t),
            }
        })
        .collect())
}

/// The newest value over `tables` of each device `which` selects (SQL on
/// `d`, over $2, an array of ids or NULL), ordered by device, looking in
/// `window`'s widening steps. A row dated after `until` counts only for a
/// device with nothing else.
fn newest_per_device(
    c: &mut Client,
    tables: &[(&'static str, &'static str, &'static str)],
    which: &str,
    window: &Recent,
) -> Result<Vec<NewestReading>, postgres::Error> {
    let sql = |sources: &[&Source]| {
        format!(
            "SELECT d.device_id, {} FROM devices d
              WHERE ({which}) AND ($2::text[] IS NULL OR d.device_id = ANY($2))
              ORDER BY 1",
            newest(sources)
        )
    };
    let first = sql(&window
        .day_sources
        .iter()
        .filter(|s| tables.iter().any(|(t, _, _)| *t == s.table))
        .collect::<Vec<_>>());
    let mut out: Vec<NewestReading> = c
        .query(
            &first,
            &[&Some(window.day), &None::<Vec<String>>, &window.until],
        )?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let whole: Vec<Source> = tables.iter().map(Source::whole).collect();
    let wide = sql(&whole.iter().collect::<Vec<_>>());
    for lower in [Some(window.since), None] {
        let missing: Vec<String> = out
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        if missing.is_empty() {
            break;
        }
        let older: std::collections::HashMap<String, Option<DateTime<Utc>>> = c
            .query(&wide, &[&lower, &Some(missing), &window.until])?
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
    window: &Recent,
) -> Result<Vec<NewestReading>, postgres::Error> {
    newest_per_device(
        c,
        &READINGS,
        "EXISTS (SELECT 1 FROM job_runs j WHERE j.job = 'snapshot' AND j.device_id = d.device_id)",
        window,
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
    window: &Recent,
) -> Result<Vec<Delivered>, postgres::Error> {
    let mut out: Vec<Delivered> = newest_per_device(c, &ANYTHING, "true", window)?
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

/// Whether any device was ever seen (identified by a job or connected to
/// `listen`): a database that never saw one collects nothing.
pub fn any_device_seen(c: &mut Client) -> Result<bool, postgres::Error> {
    Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM devices)", &[])?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The day's look is planned once over `ANYTHING` and read for each
    /// statement's tables: every table of `READINGS` must be there.
    #[test]
    fn the_readings_tables_are_among_those_planned() {
        assert!(READINGS.iter().all(|t| ANYTHING.contains(t)));
    }
}

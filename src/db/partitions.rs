//! Monthly partitions of the tables that grow with time (sql/0010 to 0015).
//!
//! Partitions are whole UTC months, `<table>_pYYYYMM`; a table converted
//! with rows in it keeps them in `<table>_history` (everything before the
//! month after its conversion). `migrate` and `retention` create the
//! coming months ahead of time; every writer makes sure the months it
//! writes exist first ([`ensure`]), which is one cheap query per month and
//! process (a partition is created at most once, and only when missing).
//!
//! Creating a partition locks its parent table exclusively, so it is never
//! done inside a writer's transaction: [`ensure`] takes a `Client`, not a
//! `Transaction`, and runs as its own short statement before the writer
//! opens its transaction. (Inside the transactions, two ingests creating
//! months of energy_intervals and energy_slots deadlocked each other:
//! each held one parent while waiting for the other.)

use chrono::{DateTime, Datelike, TimeZone, Utc};
use postgres::GenericClient;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Mutex;

/// The partitioned tables and their partition keys.
pub const TABLES: [(&str, &str); 5] = [
    ("power_readings", "ts"),
    ("switch_readings", "ts"),
    ("power_logs", "timestamp"),
    ("energy_intervals", "start_ts"),
    ("energy_slots", "slot_start"),
];

/// Months ahead of now that `migrate` and `retention` create.
pub const AHEAD_MONTHS: u32 = 3;

/// (table, months since year 0) known to exist in this process.
///
/// An entry may go stale: `retention` in another process can drop a month
/// this one cached (a long-running `listen`). That costs nothing: a row
/// written into a dropped month lands in the default partition (never
/// lost, never an error), its one-minute aggregate is added in the same
/// statement, and the month's `raw_dropped` mark (sql/0019) keeps any later
/// rebuild from recomputing that minute from the few raw rows left; the
/// next `retention` adopts the default partition's rows like any others.
/// Re-creating a dropped month here would be the wrong thing: it was
/// dropped on purpose.
static KNOWN: Mutex<Option<HashSet<(&'static str, i32)>>> = Mutex::new(None);

fn month_index(t: DateTime<Utc>) -> i32 {
    t.year() * 12 + t.month0() as i32
}

/// Makes sure the monthly partitions of `table` covering [from, to] exist
/// (or that the history partition covers them); returns how many it made.
pub fn ensure(
    c: &mut postgres::Client,
    table: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i32, postgres::Error> {
    let (lo, hi) = (month_index(from), month_index(to));
    {
        let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = known.as_ref() {
            if (lo..=hi).all(|m| k.contains(&(table, m))) {
                return Ok(0);
            }
        }
    }
    let made: i32 = c
        .query_one(
            "SELECT shellyctl_ensure_partitions($1, $2, $3)",
            &[&table, &from, &to],
        )?
        .get(0);
    guard(c, table, made)?;
    // Committed: the statement was its own transaction.
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let k = known.get_or_insert_with(HashSet::new);
    // The SQL function refused ranges over 100 years before we get here.
    for m in lo..=hi {
        k.insert((table, m));
    }
    Ok(made)
}

/// After `made` new partitions of `table`: a partition of energy_intervals
/// gets the statement trigger that notes other writers' statements
/// addressed to it (sql/0024), as the parent has.
fn guard(c: &mut postgres::Client, table: &str, made: i32) -> Result<(), postgres::Error> {
    if table == "energy_intervals" && made > 0 {
        c.execute("SELECT shellyctl_guard_interval_partitions()", &[])?;
    }
    Ok(())
}

/// Forgets what this process knows (after partitions were dropped).
pub fn forget() {
    *KNOWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// What [`ensure_ahead`] did.
#[derive(Debug, Default)]
pub struct Ahead {
    /// Partitions made.
    pub made: i32,
    /// The span and devices of readings adopted from the default partition
    /// of `power_readings`: another tool may have written them without
    /// their one-minute aggregates, so the caller rebuilds those minutes
    /// (`minutes::rebuild`, which never takes readings out of a minute).
    pub adopted_readings: Option<super::scope::Scope>,
}

/// Creates this month's and the next `AHEAD_MONTHS` months' partitions of
/// every table, and a partition for every month that has rows waiting in a
/// default partition.
pub fn ensure_ahead(
    c: &mut postgres::Client,
    now: DateTime<Utc>,
) -> Result<Ahead, postgres::Error> {
    let until = now
        .checked_add_months(chrono::Months::new(AHEAD_MONTHS))
        .unwrap_or(now);
    let mut out = Ahead::default();
    for (table, _) in TABLES {
        // A look of its own first (adopting locks the whole table).
        let default = format!("{table}_default");
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&default])?
            .get(0);
        let waiting = exists
            && c.query_one(&format!("SELECT EXISTS (SELECT 1 FROM {default})"), &[])?
                .get::<_, bool>(0);
        if waiting {
            let readings = (table == "power_readings")
                .then(|| {
                    c.query_one(
                        "SELECT min(ts), max(ts), COALESCE(array_agg(DISTINCT device_id), '{}') FROM power_readings_default",
                        &[],
                    )
                })
                .transpose()?;
            let adopted = c
                .query_one("SELECT shellyctl_adopt_default($1)", &[&table])?
                .get::<_, i32>(0);
            guard(c, table, adopted)?;
            out.made += adopted;
            if let Some(span) = readings {
                let last: Option<DateTime<Utc>> = span.get(1);
                let mut scope = super::scope::Scope::between(
                    span.get(0),
                    last.map(|t| t + chrono::Duration::seconds(1)),
                );
                scope.devices = span.get(2);
                out.adopted_readings = Some(scope);
            }
        }
        out.made += ensure(c, table, now, until)?;
    }
    Ok(out)
}

/// One partition of a table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Partition {
    pub table: String,
    pub name: String,
    /// Lower bound; `None` for the history partition (MINVALUE).
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    pub bytes: i64,
}

/// The partitions of `table`, oldest first. Bounds are read from the
/// partition names and `partition_history`, which shellyctl alone writes.
pub fn list(c: &mut impl GenericClient, table: &str) -> Result<Vec<Partition>, postgres::Error> {
    let rows = c.query(
        "SELECT p.relname::text, pg_total_relation_size(p.oid),
                (SELECT h.upper FROM partition_history h WHERE h.table_name = $1)
           FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
          WHERE i.inhparent = to_regclass(quote_ident($1))
          ORDER BY 1",
        &[&table],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let bytes: i64 = r.get(1);
        let history: Option<DateTime<Utc>> = r.get(2);
        if name == format!("{table}_history") {
            if let Some(upper) = history {
                out.push(Partition {
                    table: table.into(),
                    name,
                    from: None,
                    to: upper,
                    bytes,
                });
            }
            continue;
        }
        let Some(month) = month_of(table, &name) else {
            continue; // not one of ours: never touched
        };
        let to = month
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(month);
        out.push(Partition {
            table: table.into(),
            name,
            from: Some(month),
            to,
            bytes,
        });
    }
    out.sort_by_key(|p| (p.from.is_some(), p.from));
    Ok(out)
}

/// The first instant of `t`'s month, UTC: where a monthly partition
/// starts.
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// The name of `table`'s partition of the month starting at `month`, as
/// `shellyctl_ensure_partitions` (sql/0010) names it.
pub fn month_name(table: &str, month: DateTime<Utc>) -> String {
    format!("{table}_p{}", month.format("%Y%m"))
}

/// The month a partition of `table` named `name` holds, if it is one of
/// the monthly partitions `month_name` names.
pub fn month_of(table: &str, name: &str) -> Option<DateTime<Utc>> {
    name.strip_prefix(table)
        .and_then(|s| s.strip_prefix("_p"))
        .and_then(parse_month)
}

/// `YYYYMM` (year up to 5 digits) to the month's first instant, UTC.
fn parse_month(s: &str) -> Option<DateTime<Utc>> {
    if s.len() < 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m) = s.split_at(s.len() - 2);
    Utc.with_ymd_and_hms(y.parse().ok()?, m.parse().ok()?, 1, 0, 0, 0)
        .single()
}

/// Drops a partition (it must be one of `list`'s): detached, then dropped.
pub fn drop(c: &mut impl GenericClient, p: &Partition) -> Result<(), postgres::Error> {
    c.batch_execute(&format!(
        "ALTER TABLE {t} DETACH PARTITION {n}; DROP TABLE {n}",
        t = quote_ident(&p.table),
        n = quote_ident(&p.name)
    ))?;
    if p.from.is_none() {
        c.execute(
            "DELETE FROM partition_history WHERE table_name = $1",
            &[&p.table],
        )?;
    }
    forget();
    Ok(())
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_give_their_month() {
        assert_eq!(
            parse_month("202612"),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single()
        );
        assert_eq!(
            parse_month("3365801"),
            Utc.with_ymd_and_hms(33658, 1, 1, 0, 0, 0).single()
        );
        assert_eq!(parse_month("202613"), None);
        assert_eq!(parse_month("2026"), None);
        assert_eq!(parse_month("20261x"), None);
    }

    #[test]
    fn a_month_name_is_read_back_as_its_month() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let m = month_start(t);
        assert_eq!(m, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(month_name("power_logs", m), "power_logs_p202612");
        assert_eq!(parse_month("202612"), Some(m));
        assert_eq!(month_of("power_logs", "power_logs_p202612"), Some(m));
        assert_eq!(month_of("power_logs", "power_logs_default"), None);
        assert_eq!(month_of("power_logs", "power_readings_p202612"), None);
    }

    #[test]
    fn months_are_counted_across_years() {
        let t = |y, m| Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap();
        assert_eq!(month_index(t(2027, 1)) - month_index(t(2026, 12)), 1);
    }
}

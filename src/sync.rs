//! The interval-sync engine behind `ingest-intervals` and `backfill`: pull
//! each meter's stored interval records from its cursor (or a window), page
//! by page; each page's rows and the advanced cursor commit together.

use crate::db::{self, intervals};
use crate::exit::ExitKind;
use crate::failure::classify;
use crate::output::{self, Report};
use crate::settings::{DeviceArgs, GlobalArgs};
use crate::shelly::emdata::{components_of, Component};
use crate::shelly::emdata::{get_records, layout, parse_page, Layout};
use crate::shelly::{Client, ClientOptions, DeviceInfo};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tabled::Tabled;

/// Bounds of one run: the clock that devices' times are checked against,
/// and how much one run may fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub now: i64,
    pub max_pages: u64,
    pub deadline: Option<std::time::Instant>,
    /// How far back a device's first run reads (seconds).
    pub max_history_s: i64,
}

impl Limits {
    /// No page or time limit (backfill: its window bounds the work).
    pub fn unbounded(now: i64) -> Limits {
        Limits {
            now,
            max_pages: u64::MAX,
            deadline: None,
            max_history_s: i64::MAX,
        }
    }

    fn exhausted(&self, pages: u64) -> bool {
        pages >= self.max_pages
            || self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
    }
}

/// What to fetch: from the cursor onwards, or a fixed window (backfill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    FromCursor,
    Window { from: i64, to: i64 },
}

#[derive(Debug, Default, Serialize)]
pub struct ComponentReport {
    pub component: String,
    pub pages: u64,
    pub records_inserted: u64,
    pub records_already_present: u64,
    pub rows_inserted: u64,
    pub period_s: Option<i64>,
    pub cursor_before: Option<DateTime<Utc>>,
    pub cursor_after: Option<DateTime<Utc>>,
    /// Records refused at the edge (implausible time or value).
    pub records_refused: u64,
    /// The run stopped at its page or time limit; the next one continues.
    pub paused: bool,
}

#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub host: String,
    /// Another run held this device's lock.
    pub skipped: bool,
    pub device_id: Option<String>,
    pub ok: bool,
    pub components: Vec<ComponentReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct IngestReport {
    pub devices: Vec<DeviceReport>,
}

#[derive(Tabled)]
struct Row {
    device: String,
    component: String,
    pages: u64,
    inserted: u64,
    #[tabled(rename = "already present")]
    present: u64,
    cursor: String,
    result: String,
}

impl Report for IngestReport {
    fn table(&self) -> String {
        let mut rows = Vec::new();
        for d in &self.devices {
            let device = d.device_id.clone().unwrap_or_else(|| d.host.clone());
            for c in &d.components {
                rows.push(Row {
                    device: device.clone(),
                    component: c.component.clone(),
                    pages: c.pages,
                    inserted: c.records_inserted,
                    present: c.records_already_present,
                    cursor: c.cursor_after.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    result: "ok".into(),
                });
            }
            if let Some(e) = &d.error {
                rows.push(Row {
                    device,
                    component: String::new(),
                    pages: 0,
                    inserted: 0,
                    present: 0,
                    cursor: String::new(),
                    result: format!("error: {e}"),
                });
            }
        }
        output::table(rows)
    }
}

fn to_dt(ts: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts, 0)
}

/// The oldest record the device still has (`GetRecords`).
fn oldest_record(client: &Client, comp: &Component) -> anyhow::Result<Option<i64>> {
    Ok(get_records(client, comp.namespace, comp.id)?
        .iter()
        .map(|b| b.ts)
        .min())
}

/// Fetches pages from `ts` on, following `next_record_ts`, and hands each
/// body to the writer. Stops at the last page, at the end of a window, on
/// an error (which it passes on), or when the writer has gone.
fn fetch_pages(
    client: &Client,
    comp: &Component,
    method: &str,
    mut ts: i64,
    range: Range,
    limits: Limits,
    pages: std::sync::mpsc::SyncSender<anyhow::Result<(i64, String)>>,
) {
    #[derive(serde::Deserialize)]
    struct Next {
        #[serde(default)]
        next_record_ts: Option<i64>,
    }
    let mut first = true;
    let mut fetched = 0u64;
    loop {
        if limits.exhausted(fetched) {
            return;
        }
        fetched += 1;
        let mut params = vec![("id", comp.id.to_string()), ("ts", ts.to_string())];
        if let Range::Window { to, .. } = range {
            params.push(("end_ts", (to - 1).to_string()));
        }
        if !first {
            // The keys came with the first page; later pages are smaller without.
            params.push(("add_keys", "false".into()));
        }
        first = false;
        let body = match client.call_raw(method, &params) {
            Ok(b) => b,
            Err(e) => {
                let _ = pages.send(Err(e));
                return;
            }
        };
        // Only the next page's time is needed here; the writer parses and
        // validates the page (and reports a malformed one).
        let next = serde_json::from_str::<Next>(&body)
            .ok()
            .and_then(|n| n.next_record_ts);
        if pages.send(Ok((ts, body))).is_err() {
            return;
        }
        // A next page in the device's future is never asked for (the
        // writer refuses it and reports the device).
        match next {
            Some(n)
                if n > ts
                    && crate::device::check_time(n, limits.now).is_ok()
                    && !matches!(range, Range::Window { to, .. } if n >= to) =>
            {
                ts = n
            }
            _ => return,
        }
    }
}

/// Fetches and stores one component's records in `range`.
fn sync_component(
    client: &Client,
    db: &mut db::Client,
    device_id: &str,
    comp: &Component,
    range: Range,
    limits: Limits,
    report: &mut ComponentReport,
) -> anyhow::Result<()> {
    let cursor = intervals::read_cursor(db, device_id, &comp.key)?;
    report.cursor_before = cursor.and_then(to_dt);
    report.cursor_after = report.cursor_before;
    let mut ts = match (range, cursor) {
        (Range::FromCursor, Some(c)) => c,
        // History dated before 2000 (a device that had no time yet) is
        // never asked for: the first plausible record is.
        (Range::FromCursor, None) => match oldest_record(client, comp)? {
            Some(t) if t > limits.now.saturating_add(crate::device::MAX_AHEAD_S) => {
                anyhow::bail!(crate::shelly::Error::Malformed(format!(
                    "{} ({}): its oldest record is dated {}, ahead of now: the device's clock is wrong; fix its time (NTP) first",
                    device_id,
                    comp.key,
                    to_dt(t).map(|d| d.to_rfc3339()).unwrap_or_else(|| t.to_string())
                )))
            }
            Some(t) => {
                let earliest = limits
                    .now
                    .saturating_sub(limits.max_history_s)
                    .max(crate::device::EARLIEST_TS);
                if t < earliest {
                    // One month of partitions per month of history: a clock
                    // that jumped to 2000 would make hundreds.
                    crate::log::warn(
                        "history_capped",
                        Some(device_id),
                        json!({"component": comp.key,
                               "oldest_record": to_dt(t).map(|d| d.to_rfc3339()),
                               "reading_from": to_dt(earliest).map(|d| d.to_rfc3339()),
                               "hint": "the device's records go back further than INGEST_MAX_HISTORY; use `shellyctl backfill` for older days if they are real"}),
                    );
                }
                t.max(earliest)
            }
            None => return Ok(()), // the device has no records yet
        },
        (Range::Window { from, .. }, _) => from,
    };
    let method = format!("{}.GetData", comp.namespace);
    // The first reason a record was refused, reported once the rest is stored.
    let mut refusals: Option<String> = None;
    // One thread fetches pages (one request in flight, as devices want)
    // while this one parses and stores the previous page.
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (tx_pages, rx_pages) =
            std::sync::mpsc::sync_channel::<anyhow::Result<(i64, String)>>(1);
        let method = method.as_str();
        s.spawn(move || fetch_pages(client, comp, method, ts, range, limits, tx_pages));
        let mut keys: Option<Vec<String>> = None;
        let mut plan: Option<Layout> = None;
        for fetched in rx_pages {
            if limits.exhausted(report.pages) {
                report.paused = true;
                break;
            }
            let (page_ts, body) = fetched?;
            ts = page_ts;
            let page = parse_page(&body, keys.as_deref(), limits.now)
                .map_err(|e| crate::shelly::Error::Malformed(e.to_string()))
                .with_context(|| {
                    format!("reading {method} page at ts={ts} from {}", client.host())
                })?;
            if let Some(first) = page.refused.first() {
                report.records_refused += page.refused.len() as u64;
                crate::log::warn(
                    "records_refused",
                    Some(device_id),
                    json!({"component": comp.key, "page_ts": ts, "refused": page.refused.len(),
                           "first": first.reason}),
                );
                refusals.get_or_insert_with(|| first.reason.clone());
            }
            if keys.as_ref() != Some(&page.keys) {
                plan = Some(layout(&page.keys, comp.em1_channel()));
                keys = Some(page.keys.clone());
            }
            let layout = plan.as_ref().expect("layout set with keys");
            // A record dated before what was asked for is not what the
            // device was asked for (its clock jumped back, or it is hostile):
            // refused, like one outside the plausible window.
            let (before, mut records): (Vec<_>, Vec<_>) =
                page.records.iter().cloned().partition(|r| r.ts < ts);
            if let Some(first) = before.first() {
                report.records_refused += before.len() as u64;
                let why = format!(
                    "record dated {} is before the page asked for ({})",
                    to_dt(first.ts).map(|d| d.to_rfc3339()).unwrap_or_default(),
                    to_dt(ts).map(|d| d.to_rfc3339()).unwrap_or_default()
                );
                crate::log::warn(
                    "records_refused",
                    Some(device_id),
                    json!({"component": comp.key, "page_ts": ts, "refused": before.len(), "first": why}),
                );
                refusals.get_or_insert(why);
            }
            if let Range::Window { to, .. } = range {
                records.retain(|r| r.ts < to);
            }
            let covered_to = page
                .next_record_ts
                .or_else(|| records.last().map(|r| r.ts + r.period));

            // A database that stops answering mid-run (frozen, a lock that
            // never comes) ends the run with exit 75 after this long: the
            // page's transaction is rolled back with the connection, the
            // cursor stays at the last committed page.
            let _deadline =
                crate::db::deadline("storing a page of intervals", page_deadline(), || {});
            intervals::ensure_partitions(db, &records)?;
            let mut tx = db.transaction()?;
            let outcome = intervals::write_page(&mut tx, device_id, &comp.key, layout, &records)?;
            let period = records.last().map(|r| r.period);
            match (range, covered_to) {
                (Range::FromCursor, Some(next)) => intervals::advance_cursor(
                    &mut tx,
                    device_id,
                    &comp.key,
                    next,
                    period.map(|p| p as i32),
                )?,
                (Range::Window { from, to }, Some(next)) => {
                    intervals::advance_cursor_within(
                        &mut tx,
                        device_id,
                        &comp.key,
                        from,
                        next.min(to),
                    )?;
                }
                (_, None) => {}
            }
            tx.commit().context("committing a page of intervals")?;

            report.pages += 1;
            report.records_inserted += outcome.records_inserted;
            report.records_already_present += outcome.records_present;
            report.rows_inserted += outcome.rows_inserted;
            report.period_s = period.or(report.period_s);
            if let (Range::FromCursor, Some(next)) = (range, covered_to) {
                report.cursor_after = report.cursor_after.max(to_dt(next));
            }
            crate::log::debug(
                "interval_page_stored",
                Some(device_id),
                json!({"component": comp.key, "ts": ts, "records": records.len(),
                       "inserted": outcome.records_inserted, "next": page.next_record_ts,
                       "path": if outcome.direct { "direct" } else { "merge" }}),
            );
            if page.next_record_ts.is_some() && limits.exhausted(report.pages) {
                report.paused = true;
            }
            if let Some(next) = page.next_record_ts.filter(|n| *n <= ts) {
                anyhow::bail!(crate::shelly::Error::Malformed(format!(
                    "{method} from {}: next_record_ts {next} does not advance past ts {ts}",
                    client.host()
                )));
            }
        }
        Ok(())
    })?;
    if matches!(range, Range::Window { .. }) {
        report.cursor_after = intervals::read_cursor(db, device_id, &comp.key)?.and_then(to_dt);
    }
    if report.paused {
        crate::log::warn(
            "ingest_paused",
            Some(device_id),
            json!({"component": comp.key, "pages": report.pages,
                   "detail": "page or time limit of this run reached; the next run continues from the cursor"}),
        );
    }
    if let Some(first) = refusals {
        // The plausible records are stored and the cursor is past them;
        // the device still needs a human (its clock or its firmware).
        anyhow::bail!(crate::shelly::Error::Malformed(format!(
            "{} ({}) sent {} implausible record(s), refused and not stored; first: {first}",
            device_id, comp.key, report.records_refused
        )));
    }
    Ok(())
}

/// Identifies the device, finds its interval databases and syncs each.
pub fn sync_device(
    host: &str,
    opts: ClientOptions,
    db_url: &str,
    range: Range,
    limits: Limits,
    lock_wait: std::time::Duration,
) -> (DeviceReport, ExitKind) {
    let client = Client::new(host, opts);
    let mut report = DeviceReport {
        skipped: false,
        host: host.to_string(),
        device_id: None,
        ok: true,
        components: Vec::new(),
        error: None,
    };
    // The database connection, once made; `None` after a failed attempt.
    let mut conn: Option<Option<db::Client>> = None;
    let result = (|| -> anyhow::Result<()> {
        let info: DeviceInfo = client.identify()?;
        report.device_id = Some(info.id.to_string());
        let status: serde_json::Value = client.call("Shelly.GetStatus", &[])?;
        let components = components_of(&status);
        if components.is_empty() {
            anyhow::bail!(
                "{} ({}) stores no interval data (no emdata:N or em1data:N component)",
                info.id,
                info.model.as_deref().unwrap_or("unknown model")
            );
        }
        let db = conn.insert(None).insert(db::connect(db_url)?);
        // One run per device at a time: ingest skips a busy device (the
        // running one does the work), backfill waits for it.
        let lock = format!("intervals/{}", info.id);
        let got = match range {
            Range::FromCursor => db::try_lock(db, &lock)?,
            Range::Window { .. } => db::lock_within(db, &lock, lock_wait)?,
        };
        if !got {
            crate::log::info(
                "device_busy",
                Some(&info.id),
                json!({"detail": "another run is ingesting this device; skipped"}),
            );
            report.skipped = true;
            return Ok(());
        }
        db::readings::upsert_device(db, Some(host), &info, Utc::now())
            .context("storing the device row")?;
        for comp in &components {
            let mut c = ComponentReport {
                component: comp.key.clone(),
                ..ComponentReport::default()
            };
            let r = sync_component(&client, db, &info.id, comp, range, limits, &mut c);
            crate::log::info(
                "intervals_synced",
                Some(&info.id),
                json!({"component": comp.key, "pages": c.pages, "records_inserted": c.records_inserted,
                       "records_already_present": c.records_already_present,
                       "cursor": c.cursor_after.map(|t| t.to_rfc3339()), "complete": r.is_ok()}),
            );
            report.components.push(c);
            r?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            if !report.skipped {
                record_run(conn, db_url, range, &report, None);
            }
            (report, ExitKind::Success)
        }
        Err(e) => {
            let error = crate::failure::describe(&e);
            record_run(conn, db_url, range, &report, Some(&error));
            crate::log::error(
                "device_failed",
                report.device_id.as_deref(),
                json!({"host": host, "error": error}),
            );
            report.ok = false;
            report.error = Some(error);
            (report, classify(&e))
        }
    }
}

/// Records the device's run for `health` (as `ingest-intervals` or
/// `backfill`), connecting when the run had not got that far; a database
/// that already refused the run is not asked again.
fn record_run(
    conn: Option<Option<db::Client>>,
    db_url: &str,
    range: Range,
    report: &DeviceReport,
    error: Option<&str>,
) {
    let job = match range {
        Range::FromCursor => "ingest-intervals",
        Range::Window { .. } => "backfill",
    };
    let client = match conn {
        Some(c) => c,
        None => db::connect(db_url).ok(),
    };
    if let Some(mut c) = client {
        db::jobs::record_for_host(
            &mut c,
            job,
            &report.host,
            report.device_id.as_deref(),
            error,
        );
    }
}

/// Syncs every device concurrently (one history request in flight per
/// device) and prints the report.
pub fn run_all(
    global: &GlobalArgs,
    device: &DeviceArgs,
    range: Range,
    limits: Limits,
    lock_wait: std::time::Duration,
) -> anyhow::Result<ExitKind> {
    let opts = device.client_options()?;
    let db_url = global.database_url()?;
    let hosts = device.hosts();
    let results: Vec<(DeviceReport, ExitKind)> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (opts, url) = (opts.clone(), db_url.as_str());
                s.spawn(move || sync_device(h, opts, url, range, limits, lock_wait))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("device thread"))
            .collect()
    });
    let exit = results
        .iter()
        .fold(ExitKind::Success, |acc, (_, k)| acc.worst(*k));
    let devices = results.into_iter().map(|(r, _)| r).collect();
    output::print(global.format, &IngestReport { devices })?;
    Ok(exit)
}

/// How long one page's database work may take: six times DATABASE_TIMEOUT
/// (30 s by default), well above a page's usual tens of milliseconds and
/// well below the units' TimeoutStartSec.
pub fn page_deadline() -> std::time::Duration {
    crate::db::timeout() * 6
}

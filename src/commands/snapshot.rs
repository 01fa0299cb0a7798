//! `shellyctl snapshot`: poll every device concurrently, then store each
//! device's readings in its own transaction. A dead device does not stop
//! the others; the exit code reports the worst failure.

use crate::db::{self, readings::Source, readings::Written};
use crate::exit::ExitKind;
use crate::failure::classify;
use crate::output::{self, cell, Report};
use crate::settings::{DeviceArgs, GlobalArgs};
use crate::shelly::status::{parse_status, DeviceStatus};
use crate::shelly::{Client, ClientOptions, DeviceInfo};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tabled::Tabled;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub device: DeviceArgs,

    /// Read the devices and print what would be written, without a database.
    #[arg(long)]
    pub dry_run: bool,

    /// Take this many snapshots, one every --every (for cron, whose finest
    /// step is a minute: `--repeat 6 --every 10s`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub repeat: u32,

    /// Where readings go when the database is unreachable (replayed by the
    /// next run that reaches it). Default: $STATE_DIRECTORY/spool, else the
    /// state directory's spool/.
    #[arg(long, env = "SHELLYCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Spacing of repeated snapshots.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub every: Duration,
}

/// What one device gave us.
struct Poll {
    ts: DateTime<Utc>,
    info: DeviceInfo,
    status: DeviceStatus,
}

#[derive(Serialize)]
struct DeviceResult {
    host: String,
    ok: bool,
    device_id: Option<String>,
    model: Option<String>,
    profile: Option<String>,
    ts: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<DeviceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<Written>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct SnapshotReport {
    dry_run: bool,
    devices: Vec<DeviceResult>,
}

#[derive(Tabled)]
struct Row {
    host: String,
    device: String,
    #[tabled(rename = "total W")]
    total: String,
    #[tabled(rename = "A W")]
    a: String,
    #[tabled(rename = "B W")]
    b: String,
    #[tabled(rename = "C W")]
    c: String,
    #[tabled(rename = "switch W")]
    switches: String,
    result: String,
}

impl Report for SnapshotReport {
    fn table(&self) -> String {
        let rows = self.devices.iter().map(|d| {
            let meter = d.status.as_ref().and_then(|s| s.meter.as_ref());
            let phase = |i: usize| {
                meter
                    .map(|m| cell(&m.phases[i].power_w))
                    .unwrap_or_default()
            };
            let switches = d
                .status
                .as_ref()
                .map(|s| {
                    s.switches
                        .iter()
                        .map(|sw| format!("{}:{}", sw.channel, cell(&sw.apower_w)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let result = match (&d.error, &d.written) {
                (Some(e), _) => format!("error: {e}"),
                (None, Some(w)) => format!("stored {}+{}", w.power_readings, w.switch_readings),
                (None, None) if self.dry_run => "not stored (dry run)".into(),
                (None, None) => "spooled (database unreachable)".into(),
            };
            Row {
                host: d.host.clone(),
                device: d.device_id.clone().unwrap_or_default(),
                total: meter.map(|m| cell(&m.total_power_w)).unwrap_or_default(),
                a: phase(0),
                b: phase(1),
                c: phase(2),
                switches,
                result,
            }
        });
        output::table(rows)
    }
}

fn poll_device(client: &Client) -> anyhow::Result<Poll> {
    let started = std::time::Instant::now();
    let info = client.identify()?;
    let raw: serde_json::Value = client.call("Shelly.GetStatus", &[])?;
    let ts = Utc::now();
    crate::metrics::device_latency(&info.id, started.elapsed().as_secs_f64());
    let status = parse_status(&raw)
        .map_err(|e| crate::shelly::Error::Malformed(e.to_string()))
        .with_context(|| format!("reading Shelly.GetStatus from {}", client.host()))?;
    crate::log::debug(
        "device_polled",
        Some(&info.id),
        json!({"host": client.host(), "model": info.model, "profile": info.profile}),
    );
    Ok(Poll { ts, info, status })
}

fn failed(host: &str, err: &anyhow::Error, device_id: Option<&str>) -> DeviceResult {
    crate::log::error(
        "device_failed",
        device_id,
        json!({"host": host, "error": crate::failure::describe(err)}),
    );
    not_stored(host, crate::failure::describe(err), device_id)
}

/// A device result without readings, with why.
fn not_stored(host: &str, why: String, device_id: Option<&str>) -> DeviceResult {
    DeviceResult {
        host: host.to_string(),
        ok: false,
        device_id: device_id.map(str::to_string),
        model: None,
        profile: None,
        ts: None,
        status: None,
        written: None,
        error: Some(why),
    }
}

/// Where a device's reading goes.
enum Sink<'a> {
    Database(&'a mut db::Client),
    /// The database is unreachable: readings are kept in the spool.
    Spool(&'a mut Vec<crate::spool::Entry>),
    DryRun,
}

fn spooled(poll: &Poll, host: &str) -> crate::spool::SpooledReading {
    crate::spool::SpooledReading {
        ts: poll.ts,
        host: Some(host.to_string()),
        info: poll.info.clone(),
        status: poll.status.clone(),
        source: "poll".into(),
    }
}

/// Stores one device's poll (or spools it) and describes it. When the
/// database connection is lost while storing (it went down while we waited
/// for a slow device), the reading goes to `fallback` (the spool) instead
/// of being dropped, and `lost` is set so the next devices spool at once.
fn store(
    sink: &mut Sink,
    host: &str,
    poll: anyhow::Result<Poll>,
    fallback: Option<&mut Vec<crate::spool::Entry>>,
    lost: &mut bool,
) -> (DeviceResult, ExitKind) {
    let poll = match poll {
        Ok(p) => p,
        Err(e) => {
            if let Sink::Database(c) = sink {
                crate::db::jobs::record_for_host(
                    *c,
                    "snapshot",
                    host,
                    None,
                    Some(&format!("{e:#}")),
                );
            }
            return (failed(host, &e, None), classify(&e));
        }
    };
    let mut written = None;
    let mut kind = ExitKind::Success;
    match sink {
        Sink::Database(client) => {
            // A device another run is storing right now is left to it.
            let lock = format!("snapshot/{}", poll.info.id);
            match db::try_lock(client, &lock) {
                Ok(true) => {}
                Ok(false) => {
                    crate::log::info(
                        "device_busy",
                        Some(&poll.info.id),
                        json!({"detail": "another snapshot is storing this device; skipped"}),
                    );
                    return (
                        not_stored(
                            host,
                            "skipped: another run is storing this device".into(),
                            Some(&poll.info.id),
                        ),
                        ExitKind::Success,
                    );
                }
                Err(e) => {
                    let e = anyhow::Error::new(e);
                    if let Some(spool) = fallback.filter(|_| classify(&e) == ExitKind::Temporary) {
                        return spool_after_loss(spool, poll, host, &e, lost);
                    }
                    return (failed(host, &e, Some(&poll.info.id)), classify(&e));
                }
            }
            let r = db::readings::write_snapshot(
                client,
                poll.ts,
                Some(host),
                &poll.info,
                &poll.status,
                Source::Poll,
            )
            .with_context(|| format!("storing the readings of {}", poll.info.id));
            let _ = db::unlock(client, &lock);
            match r {
                Ok(w) => {
                    crate::metrics::add_rows(w.power_readings + w.switch_readings);
                    crate::db::jobs::record_for_host(
                        *client,
                        "snapshot",
                        host,
                        Some(&poll.info.id),
                        None,
                    );
                    crate::log::info(
                        "snapshot_stored",
                        Some(&poll.info.id),
                        json!({"host": host, "power_readings": w.power_readings,
                               "switch_readings": w.switch_readings}),
                    );
                    written = Some(w);
                }
                Err(e) => {
                    if let Some(spool) = fallback.filter(|_| classify(&e) == ExitKind::Temporary) {
                        return spool_after_loss(spool, poll, host, &e, lost);
                    }
                    crate::db::jobs::record_for_host(
                        *client,
                        "snapshot",
                        host,
                        Some(&poll.info.id),
                        Some(&format!("{e:#}")),
                    );
                    return (failed(host, &e, Some(&poll.info.id)), classify(&e));
                }
            }
        }
        Sink::Spool(v) => {
            v.push(crate::spool::Entry::Reading(Box::new(spooled(&poll, host))));
            kind = ExitKind::Temporary;
        }
        Sink::DryRun => {}
    }
    (polled(host, poll, written), kind)
}

/// A device that answered, with what was written of it.
fn polled(host: &str, poll: Poll, written: Option<Written>) -> DeviceResult {
    DeviceResult {
        host: host.to_string(),
        ok: true,
        device_id: Some(poll.info.id.to_string()),
        model: poll.info.model,
        profile: poll.info.profile,
        ts: Some(poll.ts),
        status: Some(poll.status),
        written,
        error: None,
    }
}

/// The database went away while a reading was being stored: the reading
/// is spooled (replayed by the next run that reaches the database).
fn spool_after_loss(
    spool: &mut Vec<crate::spool::Entry>,
    poll: Poll,
    host: &str,
    e: &anyhow::Error,
    lost: &mut bool,
) -> (DeviceResult, ExitKind) {
    crate::log::warn(
        "database_lost",
        Some(&poll.info.id),
        json!({"host": host, "error": format!("{e:#}"), "action": "spooling the reading"}),
    );
    spool.push(crate::spool::Entry::Reading(Box::new(spooled(&poll, host))));
    *lost = true;
    (polled(host, poll, None), ExitKind::Temporary)
}

/// How long replaying the spool may take before the run gives up on the
/// database (the files stay for the next run).
fn replay_deadline() -> std::time::Duration {
    db::timeout() * 6
}

/// Spools `entries` when the database missed its deadline (the process
/// ends right after).
fn spool_at_deadline(dir: &std::path::Path, entries: &[crate::spool::Entry]) {
    if entries.is_empty() {
        return;
    }
    match crate::spool::write(dir, entries) {
        Ok(file) => crate::log::warn(
            "readings_spooled",
            None,
            json!({"file": file.display().to_string(), "readings": entries.len()}),
        ),
        Err(e) => crate::log::error(
            "spool_write_failed",
            None,
            json!({"dir": dir.display().to_string(), "error": e.to_string(), "readings": entries.len()}),
        ),
    }
}

pub fn run(global: &GlobalArgs, args: &SnapshotArgs) -> anyhow::Result<ExitKind> {
    let start = std::time::Instant::now();
    let mut exit = ExitKind::Success;
    for i in 0..args.repeat {
        // Keep to the schedule: the i-th snapshot starts at i × every.
        let due = args.every * i;
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        exit = exit.worst(run_once(global, args)?);
    }
    Ok(exit)
}

fn run_once(global: &GlobalArgs, args: &SnapshotArgs) -> anyhow::Result<ExitKind> {
    let opts: ClientOptions = args.device.client_options()?;
    let hosts = args.device.hosts();
    let db_url = if args.dry_run {
        None
    } else {
        Some(global.database_url()?)
    };
    let spool_dir = if args.dry_run {
        None
    } else {
        crate::spool::dir(args.spool_dir.as_deref())
    };

    // Devices are polled in parallel while this thread connects to the
    // database; each device is stored as soon as its answer arrives, so a
    // slow or dead device never delays the others.
    let mut results: Vec<Option<DeviceResult>> = hosts.iter().map(|_| None).collect();
    let mut exit = ExitKind::Success;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, host) in hosts.iter().enumerate() {
            let (tx, opts) = (tx.clone(), opts.clone());
            s.spawn(move || {
                let _ = tx.send((i, poll_device(&Client::new(host, opts))));
            });
        }
        drop(tx);
        // An unreachable database is no reason to lose the readings.
        let mut db = match db_url.as_deref().map(db::connect).transpose() {
            Ok(c) => c,
            Err(e) if classify(&e) == ExitKind::Temporary && spool_dir.is_some() => {
                crate::log::warn(
                    "database_unavailable",
                    None,
                    json!({"error": format!("{e:#}"), "action": "spooling readings"}),
                );
                None
            }
            Err(e) => return Err(e),
        };
        if let (Some(c), Some(dir)) = (db.as_mut(), spool_dir.as_deref()) {
            // A database that stops answering mid-replay: the files stay.
            let _deadline = db::deadline("replaying the spool", replay_deadline(), || {});
            if let Err(e) = crate::spool::replay(dir, c) {
                crate::log::error(
                    "spool_replay_failed",
                    None,
                    json!({"error": format!("{e:#}")}),
                );
            }
        }
        let mut spool = Vec::new();
        for (i, poll) in rx {
            let mut lost = false;
            let (result, kind) = match (db.as_mut(), args.dry_run) {
                (_, true) => store(&mut Sink::DryRun, &hosts[i], poll, None, &mut lost),
                (Some(c), false) => {
                    // A database that stops answering while this device is
                    // stored (its connection still up): what this run has
                    // goes to the spool, and the run ends with 75.
                    let mut keep = spool.clone();
                    if let Ok(p) = &poll {
                        keep.push(crate::spool::Entry::Reading(Box::new(spooled(
                            p, &hosts[i],
                        ))));
                    }
                    let dir = spool_dir.clone();
                    let _deadline = db::deadline("storing a snapshot", db::timeout(), move || {
                        if let Some(dir) = dir {
                            spool_at_deadline(&dir, &keep);
                        }
                    });
                    let fallback = spool_dir.is_some().then_some(&mut spool);
                    store(&mut Sink::Database(c), &hosts[i], poll, fallback, &mut lost)
                }
                (None, false) => store(
                    &mut Sink::Spool(&mut spool),
                    &hosts[i],
                    poll,
                    None,
                    &mut lost,
                ),
            };
            if lost {
                db = None;
            }
            exit = exit.worst(kind);
            results[i] = Some(result);
        }
        if !spool.is_empty() {
            let dir = spool_dir
                .as_deref()
                .expect("spooling only with a spool directory");
            let file = crate::spool::write(dir, &spool)
                .with_context(|| format!("writing the spool in {}", dir.display()))?;
            crate::log::warn(
                "readings_spooled",
                None,
                json!({"file": file.display().to_string(), "readings": spool.len()}),
            );
            exit = exit.worst(ExitKind::Temporary);
        }
        Ok(())
    })?;

    let devices = results
        .into_iter()
        .zip(&hosts)
        .map(|(r, host)| {
            r.unwrap_or_else(|| {
                exit = exit.worst(ExitKind::Failure);
                failed(
                    host,
                    &anyhow::anyhow!("polling thread ended without a result"),
                    None,
                )
            })
        })
        .collect();
    output::print(
        global.format,
        &SnapshotReport {
            dry_run: args.dry_run,
            devices,
        },
    )?;
    Ok(exit)
}

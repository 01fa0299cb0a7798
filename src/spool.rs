//! A local spool for readings the database could not take.
//!
//! Each run that cannot store its readings writes them to one new file
//! (written to a temporary name, fsync'd, renamed, directory fsync'd), so a
//! crash never leaves half a file under a spool name. The next run that
//! reaches the database replays the files oldest first; rows are keyed
//! (device, ts), so a file replayed twice adds nothing. A file that cannot
//! be read, or whose data the database refuses (say, text it cannot hold),
//! is moved to `quarantine/` with a clear log line, and replay continues.

use crate::db::{self, readings::Source};
use crate::minute_log::{ChannelKey, ChannelState, Component, Period};
use crate::shelly::status::DeviceStatus;
use crate::shelly::DeviceInfo;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpooledReading {
    pub ts: DateTime<Utc>,
    pub host: Option<String>,
    pub info: DeviceInfo,
    pub status: DeviceStatus,
    pub source: String,
}

/// The spool directory: `--spool-dir`, else `<state dir>/spool`.
pub fn dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| crate::settings::default_state_dir().map(|d| d.join("spool")))
}

/// One `power_logs` row (listen).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRow {
    /// Absent in files spooled before pm1 channels were logged: a switch.
    #[serde(default)]
    pub component: Component,
    pub channel: i32,
    pub minute: i64,
    pub values: crate::minute_log::Values,
}

/// A spooled item: a reading (snapshot or pushed meter) or power-log rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Reading(Box<SpooledReading>),
    PowerLogs {
        device_id: crate::device::DeviceId,
        rows: Vec<LogRow>,
        /// The channel states after these rows (stored with them, so a
        /// restart after the outage continues from them).
        #[serde(default, with = "spooled_states")]
        states: Vec<(ChannelKey, ChannelState)>,
        /// Active periods these rows start or end.
        #[serde(default)]
        periods: Vec<(ChannelKey, Period)>,
    },
    /// A listen session opened or closed.
    Session(db::listen::Session),
    /// What a pushing device said it is (`Shelly.GetDeviceInfo`), and the
    /// address it connected from.
    Device {
        info: DeviceInfo,
        peer: String,
    },
}

/// Channel states as spooled: `[[component, id], state]`, or `[id, state]`
/// (a switch, in files spooled before pm1 channels were logged).
mod spooled_states {
    use crate::minute_log::{ChannelKey, ChannelState, Component};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Key {
        Keyed(Component, i32),
        Switch(i32),
    }

    pub fn serialize<S: Serializer>(
        v: &[(ChannelKey, ChannelState)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(ChannelKey, ChannelState)>, D::Error> {
        let v: Vec<(Key, ChannelState)> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(k, st)| match k {
                Key::Keyed(c, n) => ((c, n), st),
                Key::Switch(n) => ((Component::Switch, n), st),
            })
            .collect())
    }
}

/// Appends entries as one durable file; returns its path.
pub fn write(dir: &Path, readings: &[Entry]) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let now = Utc::now();
    let name = format!(
        "{}-{:09}-{}.jsonl",
        now.timestamp(),
        now.timestamp_subsec_nanos(),
        std::process::id()
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(&name);
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut text = Vec::new();
        for r in readings {
            serde_json::to_writer(&mut text, r).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        // A full disk: no temporary file is left behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Spool files, oldest first.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
        .collect();
    v.sort();
    v
}

fn quarantine(dir: &Path, file: &Path, why: &str) {
    let q = dir.join("quarantine");
    let dest = q.join(file.file_name().unwrap_or_default());
    let moved = fs::create_dir_all(&q).and_then(|_| fs::rename(file, &dest));
    crate::log::error(
        "spool_file_quarantined",
        None,
        json!({"file": file.display().to_string(), "moved_to": dest.display().to_string(), "reason": why, "moved": moved.is_ok()}),
    );
}

#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub files: u64,
    pub readings: u64,
    pub rows_written: u64,
    pub quarantined: u64,
}

/// Replays every spool file into the database, oldest first. Stops at the
/// first database error (the file stays for the next run).
pub fn replay(dir: &Path, client: &mut db::Client) -> anyhow::Result<Replay> {
    let mut r = Replay::default();
    for file in pending(dir) {
        let one = replay_file(dir, &file, client)?;
        r.files += one.files;
        r.readings += one.readings;
        r.rows_written += one.rows_written;
        r.quarantined += one.quarantined;
    }
    if r.files > 0 || r.quarantined > 0 {
        crate::log::info(
            "spool_replayed",
            None,
            json!({"files": r.files, "readings": r.readings, "rows_written": r.rows_written, "quarantined": r.quarantined}),
        );
    }
    Ok(r)
}

/// Replays one spool file, each entry in its own transaction, and removes
/// it. An entry that cannot be parsed, or whose data the database refuses
/// (say, text it cannot hold), is moved alone to `quarantine/` with the
/// reason (the database's own message) beside it, and the others go in.
/// Any other database error stops the replay and keeps the file: entries
/// already stored are stored again by the next replay, which adds nothing
/// (every write is keyed).
pub fn replay_file(dir: &Path, file: &Path, client: &mut db::Client) -> anyhow::Result<Replay> {
    let mut r = Replay::default();
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(r),
        Err(e) => {
            quarantine(dir, file, &format!("unreadable: {e}"));
            r.quarantined += 1;
            return Ok(r);
        }
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                quarantine_entry(dir, file, i + 1, line, &format!("not a spool entry: {e}"));
                r.quarantined += 1;
                continue;
            }
        };
        match store(client, &entry) {
            Ok(rows) => {
                r.rows_written += rows;
                r.readings += 1;
            }
            // The database refused the data itself: this entry will never
            // go in, the next ones may.
            Err(e) if refused_data(&e) && !client.is_closed() => {
                quarantine_entry(
                    dir,
                    file,
                    i + 1,
                    line,
                    &format!("refused by the database: {}", db::error_text(&e)),
                );
                r.quarantined += 1;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "replaying {}: {}",
                    file.display(),
                    db::error_text(&e)
                ))
            }
        }
    }
    match fs::remove_file(file) {
        Ok(()) => {}
        // Another process replayed it at the same time (idempotent).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    r.files += 1;
    crate::log::debug(
        "spool_file_replayed",
        None,
        json!({"file": file.display().to_string(), "entries": r.readings, "rows_written": r.rows_written, "quarantined": r.quarantined}),
    );
    Ok(r)
}

/// Moves one entry (line `line_no` of `file`) to `quarantine/`, with the
/// reason in a `.reason` file beside it.
fn quarantine_entry(dir: &Path, file: &Path, line_no: usize, line: &str, why: &str) {
    let q = dir.join("quarantine");
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = q.join(format!("{stem}.line{line_no}.jsonl"));
    let moved = fs::create_dir_all(&q)
        .and_then(|_| fs::write(&dest, format!("{line}\n")))
        .and_then(|_| fs::write(dest.with_extension("reason"), format!("{why}\n")));
    crate::log::error(
        "spool_entry_quarantined",
        None,
        json!({"file": file.display().to_string(), "line": line_no, "moved_to": dest.display().to_string(), "reason": why, "moved": moved.is_ok()}),
    );
}

/// Stores one entry (in its own transaction); rows written.
fn store(client: &mut db::Client, e: &Entry) -> Result<u64, postgres::Error> {
    Ok(match e {
        Entry::Reading(s) => {
            let source = if s.source == "push" {
                Source::Push
            } else {
                Source::Poll
            };
            let w = db::readings::write_snapshot(
                client,
                s.ts,
                s.host.as_deref(),
                &s.info,
                &s.status,
                source,
            )?;
            w.power_readings + w.switch_readings
        }
        Entry::PowerLogs {
            device_id,
            rows: logs,
            states,
            periods,
        } => {
            let logs: Vec<_> = logs
                .iter()
                .map(|r| ((r.component, r.channel), r.minute, &r.values))
                .collect();
            db::listen::write_logs(client, device_id, &logs, periods, states)?
        }
        Entry::Session(s) => {
            db::listen::write_session(client, s)?;
            0
        }
        Entry::Device { info, peer } => {
            let mut tx = client.transaction()?;
            db::readings::upsert_device(&mut tx, Some(peer), info, Utc::now())?;
            tx.commit()?;
            0
        }
    })
}

/// Whether the database refused the data (SQLSTATE class 22, data
/// exception, or 23, integrity violation) rather than failed.
fn refused_data(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_and_listed_oldest_first() {
        let d = std::env::temp_dir().join(format!("shellyctl-spool-{}", std::process::id()));
        let info: DeviceInfo = serde_json::from_str(include_str!(
            "../tests/fixtures/shelly/pro3em-shelly-getdeviceinfo.json"
        ))
        .unwrap();
        let status = crate::shelly::status::parse_status(
            &serde_json::from_str(include_str!(
                "../tests/fixtures/shelly/pro3em-shelly-getstatus-triphase.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let r = SpooledReading {
            ts: Utc::now(),
            host: Some("h".into()),
            info,
            status,
            source: "poll".into(),
        };
        let a = write(&d, &[Entry::Reading(Box::new(r.clone()))]).unwrap();
        let logs = Entry::PowerLogs {
            device_id: crate::device::DeviceId::parse("x").unwrap(),
            rows: vec![],
            states: vec![],
            periods: vec![],
        };
        let b = write(&d, &[Entry::Reading(Box::new(r.clone())), logs]).unwrap();
        assert_eq!(pending(&d), vec![a.clone(), b]);
        let back: Entry = serde_json::from_str(fs::read_to_string(&a).unwrap().trim()).unwrap();
        assert_eq!(
            back,
            Entry::Reading(Box::new(r)),
            "exact decimals survive the spool"
        );
        assert!(fs::read_dir(&d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn states_spooled_by_an_older_version_are_switch_channels() {
        let old = r#"{"kind":"power_logs","device_id":"x","rows":[{"channel":1,"minute":60,"values":{"apower_w":"5","voltage_v":null,"current_a":null,"energy_total_wh":null}}],"states":[[1,{"last_minute":60,"values":{"apower_w":"5","voltage_v":null,"current_a":null,"energy_total_wh":null},"values_ts":61}]]}"#;
        let Entry::PowerLogs { rows, states, .. } = serde_json::from_str(old).unwrap() else {
            panic!()
        };
        assert_eq!(rows[0].component, Component::Switch);
        assert_eq!(states[0].0, (Component::Switch, 1));
        let new = Entry::PowerLogs {
            device_id: crate::device::DeviceId::parse("x").unwrap(),
            rows: vec![],
            states: vec![((Component::Pm1, 0), ChannelState::default())],
            periods: vec![],
        };
        let back: Entry = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}

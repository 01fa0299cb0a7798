//! The one database writer of `listen`: takes writes from the connections
//! through a queue, stores them, and spools what the database cannot take.

use super::session::Output;
use crate::db::{self, readings::Source};
use crate::device::DeviceId;
use crate::minute_log::{ChannelState, Row};
use crate::shelly::DeviceInfo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

pub enum WriteOp {
    Device(DeviceInfo, String),
    LoadStates {
        device_id: DeviceId,
        reply: Sender<HashMap<i32, ChannelState>>,
    },
    Logs {
        device_id: DeviceId,
        rows: Vec<(i32, Row)>,
        states: Vec<(i32, ChannelState)>,
    },
    Reading {
        device_id: DeviceId,
        at: chrono::DateTime<chrono::Utc>,
        status: Box<crate::shelly::status::DeviceStatus>,
    },
}

impl WriteOp {
    /// A session's output; `peer` is where the device connected from.
    pub fn of(o: Output, peer: &str) -> WriteOp {
        match o {
            Output::Device(info) => WriteOp::Device(info, peer.to_string()),
            Output::Logs {
                device_id,
                rows,
                states,
            } => WriteOp::Logs {
                device_id,
                rows,
                states,
            },
            Output::Reading {
                device_id,
                at,
                status,
            } => WriteOp::Reading {
                device_id,
                at,
                status,
            },
        }
    }
}

/// What a write that could not reach the database leaves in the spool.
fn spool_entry(msg: &WriteOp) -> Option<crate::spool::Entry> {
    use crate::spool::{Entry, LogRow, SpooledReading};
    match msg {
        WriteOp::Logs {
            device_id, rows, ..
        } if !rows.is_empty() => Some(Entry::PowerLogs {
            device_id: device_id.clone(),
            rows: rows
                .iter()
                .map(|(ch, r)| LogRow {
                    channel: *ch,
                    minute: r.minute,
                    values: r.values.clone(),
                })
                .collect(),
        }),
        WriteOp::Reading {
            device_id,
            at,
            status,
        } => Some(Entry::Reading(Box::new(SpooledReading {
            ts: *at,
            host: None,
            info: DeviceInfo {
                id: device_id.to_string(),
                name: None,
                mac: None,
                model: None,
                gen: 0,
                fw_id: None,
                ver: None,
                app: None,
                auth_en: None,
                profile: None,
            },
            status: (**status).clone(),
            source: "push".into(),
        }))),
        _ => None,
    }
}

/// Stores every write from `rx` until all senders are gone.
pub fn run(url: String, rx: Receiver<WriteOp>, spool: Option<PathBuf>) {
    let mut client: Option<db::Client> = None;
    for msg in rx {
        let mut stored = false;
        for attempt in 0..3 {
            if client.is_none() {
                match db::connect(&url) {
                    Ok(mut c) => {
                        // Back after an outage: what was spooled goes first.
                        if let Some(dir) = &spool {
                            if let Err(e) = crate::spool::replay(dir, &mut c) {
                                crate::log::error(
                                    "spool_replay_failed",
                                    None,
                                    json!({"error": format!("{e:#}")}),
                                );
                            }
                        }
                        client = Some(c)
                    }
                    Err(e) => {
                        crate::log::error(
                            "listen_db_unavailable",
                            None,
                            json!({"error": format!("{e:#}")}),
                        );
                        std::thread::sleep(Duration::from_millis(500 * (attempt + 1)));
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected");
            match write(c, &msg) {
                Ok(()) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    crate::log::error(
                        "listen_write_failed",
                        None,
                        json!({"error": format!("{e:#}")}),
                    );
                    if c.is_closed() {
                        client = None;
                    } else {
                        break;
                    }
                }
            }
        }
        if !stored {
            if let (Some(dir), Some(entry)) = (&spool, spool_entry(&msg)) {
                match crate::spool::write(dir, &[entry]) {
                    Ok(f) => crate::log::warn(
                        "readings_spooled",
                        None,
                        json!({"file": f.display().to_string()}),
                    ),
                    Err(e) => crate::log::error(
                        "spool_write_failed",
                        None,
                        json!({"error": e.to_string()}),
                    ),
                }
            }
        }
        // When the database could not be reached, answer with no state
        // rather than leave the connection waiting (a second answer after a
        // successful load is simply never read).
        if let WriteOp::LoadStates { reply, .. } = msg {
            let _ = reply.send(HashMap::new());
        }
    }
}

fn write(c: &mut db::Client, msg: &WriteOp) -> anyhow::Result<()> {
    match msg {
        WriteOp::Device(info, peer) => {
            let mut tx = c.transaction()?;
            db::readings::upsert_device(&mut tx, Some(peer), info, chrono::Utc::now())?;
            tx.commit()?;
        }
        WriteOp::LoadStates { device_id, reply } => {
            let rows = c.query(
                "SELECT channel, state FROM power_log_state WHERE device_id = $1",
                &[device_id],
            )?;
            let states = rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get::<_, i32>(0),
                        serde_json::from_value(r.get::<_, Value>(1)).ok()?,
                    ))
                })
                .collect();
            let _ = reply.send(states);
        }
        WriteOp::Logs {
            device_id,
            rows,
            states,
        } => {
            let mut tx = c.transaction()?;
            for (ch, r) in rows {
                db::readings::insert_power_log(&mut tx, device_id, *ch, r.minute, &r.values)?;
            }
            for (ch, st) in states {
                tx.execute(
                    "INSERT INTO power_log_state (device_id, channel, state, updated_at) VALUES ($1, $2, $3, now())
                     ON CONFLICT (device_id, channel) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
                    &[device_id, ch, &serde_json::to_value(st)?],
                )?;
            }
            tx.commit()?;
        }
        WriteOp::Reading {
            device_id,
            at,
            status,
        } => {
            let mut tx = c.transaction()?;
            db::readings::ensure_device(&mut tx, device_id)?;
            db::readings::insert_meter(&mut tx, *at, device_id, status.as_ref(), Source::Push)?;
            tx.commit()?;
        }
    }
    Ok(())
}

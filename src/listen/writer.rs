//! The one database writer of `listen`: takes writes from the connections
//! through a queue, stores them, and spools what the database cannot take.

use super::health::Health;
use super::session::Output;
use crate::db::{self, readings::Source};
use crate::device::DeviceId;
use crate::minute_log::{ChannelKey, ChannelState, Period, Row};
use crate::shelly::DeviceInfo;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum WriteOp {
    Device(DeviceInfo, String),
    LoadStates {
        device_id: DeviceId,
        reply: Sender<HashMap<ChannelKey, ChannelState>>,
    },
    Logs {
        device_id: DeviceId,
        rows: Vec<(ChannelKey, Row)>,
        periods: Vec<(ChannelKey, Period)>,
        states: Vec<(ChannelKey, ChannelState)>,
    },
    /// A connection session opened or closed.
    Session(db::listen::Session),
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
                periods,
                states,
            } => WriteOp::Logs {
                device_id,
                rows,
                periods,
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
        WriteOp::Session(s) => Some(Entry::Session(s.clone())),
        WriteOp::Logs {
            device_id,
            rows,
            periods,
            states,
        } if !rows.is_empty() || !states.is_empty() => Some(Entry::PowerLogs {
            device_id: device_id.clone(),
            states: states.clone(),
            periods: periods.clone(),
            rows: rows
                .iter()
                .map(|((component, ch), r)| LogRow {
                    component: *component,
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
                id: device_id.clone(),
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

/// Writes waiting for the writer at most; a connection whose write does
/// not fit waits (backpressure: minutes are never dropped).
pub const QUEUE_LEN: usize = 1024;
/// How often a database known to be down is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(2);

struct Writer {
    url: String,
    spool: Option<PathBuf>,
    client: Option<db::Client>,
    /// No connection attempt before this (the database is known down).
    next_try: Instant,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
}

impl WriteOp {
    /// The device a write stores data of (not a lookup).
    fn device(&self) -> Option<&DeviceId> {
        match self {
            WriteOp::Device(info, _) => Some(&info.id),
            WriteOp::Logs { device_id, .. } | WriteOp::Reading { device_id, .. } => Some(device_id),
            WriteOp::Session(s) => Some(&s.device_id),
            WriteOp::LoadStates { .. } => None,
        }
    }
}

impl Writer {
    /// The connection, if there is one or one can be made now. Once the
    /// database is known down, writes go to the spool at once instead of
    /// waiting on it; after SIGTERM it is not tried again.
    fn client(&mut self) -> Option<&mut db::Client> {
        if self.client.is_none()
            && Instant::now() >= self.next_try
            && !self.shutdown.load(Ordering::SeqCst)
        {
            match db::connect(&self.url) {
                Ok(mut c) => {
                    // Back after an outage: what was spooled goes first.
                    if let Some(dir) = &self.spool {
                        if let Err(e) = crate::spool::replay(dir, &mut c) {
                            crate::log::error(
                                "spool_replay_failed",
                                None,
                                json!({"error": format!("{e:#}")}),
                            );
                        }
                    }
                    self.client = Some(c);
                    self.health.database(true);
                }
                Err(e) => {
                    self.health.database(false);
                    crate::log::error(
                        "listen_db_unavailable",
                        None,
                        json!({"error": format!("{e:#}"), "retry_in_s": RETRY_EVERY.as_secs()}),
                    );
                    self.next_try = Instant::now() + RETRY_EVERY;
                }
            }
        }
        self.client.as_mut()
    }

    /// Stores a write; false if the database could not take it.
    fn store(&mut self, msg: &WriteOp) -> bool {
        // A connection found closed is replaced once, at once.
        for _ in 0..2 {
            let Some(c) = self.client() else {
                return false;
            };
            match write(c, msg) {
                Ok(()) => {
                    if let Some(id) = msg.device() {
                        self.health.wrote(id);
                    }
                    return true;
                }
                Err(e) => {
                    crate::log::error(
                        "listen_write_failed",
                        None,
                        json!({"error": format!("{e:#}")}),
                    );
                    if !c.is_closed() {
                        return false;
                    }
                    self.client = None;
                    self.health.database(false);
                }
            }
        }
        false
    }

    /// Spools `msg` and everything already queued behind it, in one file.
    fn spool(&mut self, msg: WriteOp, rx: &Receiver<WriteOp>) {
        let mut entries = Vec::new();
        let mut take = |m: WriteOp| {
            entries.extend(spool_entry(&m));
            // Nothing stored to load: the connection goes on without.
            if let WriteOp::LoadStates { reply, .. } = m {
                let _ = reply.send(HashMap::new());
            }
        };
        take(msg);
        if self.client.is_none() {
            while let Ok(m) = rx.try_recv() {
                take(m);
            }
        }
        let Some(dir) = &self.spool else { return };
        if entries.is_empty() {
            return;
        }
        match crate::spool::write(dir, &entries) {
            Ok(f) => crate::log::warn(
                "readings_spooled",
                None,
                json!({"file": f.display().to_string(), "entries": entries.len()}),
            ),
            Err(e) => crate::log::error(
                "spool_write_failed",
                None,
                json!({"error": e.to_string(), "entries": entries.len()}),
            ),
        }
    }
}

/// Stores every write from `rx` until all senders are gone.
pub fn run(
    url: String,
    rx: Receiver<WriteOp>,
    spool: Option<PathBuf>,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) {
    let mut w = Writer {
        url,
        spool,
        client: None,
        next_try: Instant::now(),
        shutdown,
        health,
    };
    loop {
        match rx.recv_timeout(RETRY_EVERY) {
            Ok(msg) => {
                if !w.store(&msg) {
                    w.spool(msg, &rx);
                }
            }
            // Quiet: a database that was down is tried again, so what was
            // spooled goes in without waiting for the next frame.
            // A connection that went bad while nothing was written is
            // noticed here too (for /healthz).
            Err(RecvTimeoutError::Timeout) => {
                if w.client
                    .as_mut()
                    .is_some_and(|c| c.is_valid(Duration::from_secs(1)).is_err())
                {
                    w.client = None;
                    w.health.database(false);
                }
                w.client();
            }
            Err(RecvTimeoutError::Disconnected) => break,
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
            let _ = reply.send(db::listen::load_states(c, device_id)?);
        }
        WriteOp::Logs {
            device_id,
            rows,
            periods,
            states,
        } => {
            let rows: Vec<_> = rows
                .iter()
                .map(|(k, r)| (*k, r.minute, &r.values))
                .collect();
            db::listen::write_logs(c, device_id, &rows, periods, states)?;
        }
        WriteOp::Session(s) => db::listen::write_session(c, s)?,
        WriteOp::Reading {
            device_id,
            at,
            status,
        } => {
            db::readings::ensure_partitions(c, *at)?;
            let mut tx = c.transaction()?;
            db::readings::ensure_device(&mut tx, device_id)?;
            let reading = db::readings::Reading {
                ts: *at,
                device_id,
                status: status.as_ref(),
                source: Source::Push,
            };
            db::readings::insert_meter(&mut tx, reading)?;
            tx.commit()?;
        }
    }
    Ok(())
}

//! The database writer of `listen`: a group-committing coordinator and a
//! database worker it waits for with a deadline.
//!
//! Connections apply frames to their sessions at once and queue what the
//! frames produced ([`WriteOp`]). The coordinator takes everything queued,
//! waits at most the batch window for more, and hands the batch to the
//! worker, which writes it in one transaction (prepared `unnest`
//! statements: one per table, not one per row). While a batch is written
//! the next one gathers in the queue, so the batch grows with the load.
//!
//! Every call to the worker has a deadline. A batch that misses it, or
//! fails, means the database is down: the batch goes to the spool, the
//! worker is abandoned (its connection is dropped when it comes back), and
//! until a write succeeds again every batch is spooled at once. The first
//! successful write is followed by a replay of the spool, a file at a
//! time between batches. A deadlock is retried at once; a batch the
//! database refuses as data (say, text it cannot hold) goes through the
//! spool, whose replay quarantines the one refused entry alone.
//!
//! When neither the database nor the spool takes a batch, it is held in
//! memory and the queue is no longer read: connections block on it, and
//! devices on their sockets (backpressure). Nothing is dropped while it
//! can wait.

use super::health::Health;
use super::registry::Registry;
use super::session::Output;
use crate::db::listen::{Claim, Committed, Item, Statements};
use crate::device::DeviceId;
use crate::minute_log::{ChannelKey, ChannelState};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a connection asks of the writer.
pub enum WriteOp {
    /// Something to store, from connection `conn`.
    Store { conn: u64, item: Item },
    /// Connection `conn` is now device `device_id`'s: its epoch goes up
    /// (older connections' writes are refused from now on), and its stored
    /// channel states come back on `reply` (empty when the database is
    /// away: the session starts afresh).
    Claim {
        conn: u64,
        device_id: DeviceId,
        reply: Sender<HashMap<ChannelKey, ChannelState>>,
    },
}

impl WriteOp {
    /// A session's output from connection `conn`; `peer` is where the
    /// device connected from.
    pub fn of(o: Output, conn: u64, peer: &str) -> WriteOp {
        let item = match o {
            Output::Device(info) => Item::Device {
                info,
                peer: peer.to_string(),
            },
            Output::Logs {
                device_id,
                rows,
                periods,
                states,
            } => Item::Logs {
                device_id,
                rows,
                periods,
                states,
            },
            Output::Reading {
                device_id,
                at,
                status,
            } => Item::Reading {
                device_id,
                at,
                status,
            },
        };
        WriteOp::Store { conn, item }
    }
}

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub database_url: String,
    pub spool: Option<PathBuf>,
    /// Longest wait for more writes once one is queued.
    pub window: Duration,
    /// Most items in one batch.
    pub max_items: usize,
    /// Longest a call to the database may take (connect included).
    pub deadline: Duration,
    /// This listen's name in `listen_owners` (LISTEN_INSTANCE).
    pub instance: String,
    /// When this process started: sessions an earlier run of this instance
    /// left open before it are closed at the first connection.
    pub started: chrono::DateTime<chrono::Utc>,
}

/// Writes waiting for the writer at most; a connection whose write does
/// not fit waits (backpressure: minutes are never dropped).
pub const QUEUE_LEN: usize = 65_536;
/// How often a database known to be down is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Abandoned workers (stuck on a frozen database) at most; beyond that no
/// new connection is tried until one of them returns.
const MAX_ABANDONED: usize = 3;

enum Job {
    Batch {
        items: Arc<Vec<Item>>,
        held: Vec<(DeviceId, i64)>,
        claims: Vec<Claim>,
    },
    /// Replays one spool file.
    Replay(PathBuf),
    /// Connects if not connected (a probe while nothing is written).
    Connect,
}

enum Failure {
    /// The database refused the data itself (SQLSTATE class 22 or 23).
    Refused(String),
    /// Unreachable, too slow, or failed otherwise.
    Down(String),
}

enum Done {
    Batch(Committed),
    Replay(PathBuf, crate::spool::Replay),
    Connected,
}

/// The thread that owns the database connection.
struct Worker {
    jobs: Sender<Job>,
    done: Receiver<Result<Done, Failure>>,
}

fn spawn_worker(cfg: &WriterConfig, abandoned: &Arc<AtomicUsize>) -> Worker {
    let (jobs, job_rx) = channel::<Job>();
    let (done_tx, done) = channel();
    let cfg = cfg.clone();
    let abandoned = abandoned.clone();
    std::thread::Builder::new()
        .name("listen-db".into())
        .spawn(move || {
            let mut conn: Option<(crate::db::Client, Statements)> = None;
            while let Ok(job) = job_rx.recv() {
                let r = work(&cfg, &mut conn, job);
                if r.is_err() {
                    // A failed connection is not trusted again.
                    conn = None;
                }
                if done_tx.send(r).is_err() {
                    // Abandoned after a deadline: give the slot back.
                    abandoned.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
        })
        .expect("spawning the database worker");
    Worker { jobs, done }
}

/// Opens the writer's connection: deadlines on the server side too (a
/// lock wait or a statement never outlives the client's deadline by much,
/// and a transaction left open by an abandoned worker is ended).
fn connect(cfg: &WriterConfig) -> Result<(crate::db::Client, Statements), Failure> {
    let down = |e: &dyn std::fmt::Display| Failure::Down(format!("{e:#}"));
    let mut c = crate::db::connect(&cfg.database_url).map_err(|e| down(&format!("{e:#}")))?;
    let ms = cfg.deadline.as_millis().max(100);
    c.batch_execute(&format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        ms * 4 / 5,
        ms / 2,
        ms * 6,
    ))
    .map_err(|e| down(&e))?;
    let st = Statements::prepare(&mut c).map_err(|e| down(&e))?;
    // Sessions this instance left open when it stopped without closing
    // them (a crash, a kill): closed once, at the first connection.
    static CLOSED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    CLOSED.call_once(|| {
        result = crate::db::listen::close_abandoned_sessions(&mut c, cfg.started, &cfg.instance)
            .map(|n| {
                if n > 0 {
                    crate::log::warn(
                        "listen_sessions_closed",
                        None,
                        json!({"sessions": n, "reason": "listen restarted"}),
                    );
                }
            });
    });
    result.map_err(|e| down(&e))?;
    Ok((c, st))
}

fn failure(e: postgres::Error) -> Failure {
    let data = e
        .code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
    if data {
        Failure::Refused(crate::db::error_text(&e))
    } else {
        Failure::Down(crate::db::error_text(&e))
    }
}

/// Whether a failed transaction may simply be run again (deadlock,
/// serialization failure).
fn retryable(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(c.code(), "40P01" | "40001"))
}

fn work(
    cfg: &WriterConfig,
    conn: &mut Option<(crate::db::Client, Statements)>,
    job: Job,
) -> Result<Done, Failure> {
    if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        *conn = Some(connect(cfg)?);
    }
    let (c, st) = conn.as_mut().expect("connected");
    match job {
        // Also a probe of a connection that has been quiet.
        Job::Connect => c
            .simple_query("")
            .map(|_| Done::Connected)
            .map_err(|e| Failure::Down(crate::db::error_text(&e))),
        Job::Batch {
            items,
            held,
            claims,
        } => {
            let mut tries = 0;
            loop {
                match crate::db::listen::write_batch(c, st, &cfg.instance, &items, &held, &claims) {
                    Ok(done) => return Ok(Done::Batch(done)),
                    Err(e) if retryable(&e) && tries < 3 => {
                        tries += 1;
                        crate::log::warn(
                            "listen_write_retried",
                            None,
                            json!({"error": crate::db::error_text(&e), "try": tries}),
                        );
                    }
                    Err(e) => return Err(failure(e)),
                }
            }
        }
        Job::Replay(file) => {
            let dir = cfg.spool.as_deref().expect("replay without a spool");
            crate::spool::replay_file(dir, &file, c)
                .map(|r| Done::Replay(file.clone(), r))
                .map_err(|e| Failure::Down(format!("{e:#}")))
        }
    }
}

/// A device's current connection in this process, and its epoch once
/// claimed in the database.
struct Owner {
    conn: u64,
    epoch: Option<i64>,
}

struct Writer {
    cfg: WriterConfig,
    worker: Option<Worker>,
    abandoned: Arc<AtomicUsize>,
    /// No connection attempt before this (the database is known down).
    next_try: Instant,
    /// The last write failed: batches go to the spool until one succeeds.
    down: bool,
    /// Spool files may be waiting for a replay.
    spooled: bool,
    owners: HashMap<DeviceId, Owner>,
    /// Items not yet stored anywhere (neither database nor spool took them).
    held: Vec<Item>,
    health: Arc<Health>,
    registry: Arc<Registry>,
    /// Connections whose writes were refused as stale (logged once each).
    stale: HashSet<u64>,
    /// Devices with a claim in the batch being gathered.
    claiming: HashSet<DeviceId>,
}

impl Writer {
    /// Runs a job with the deadline; a worker that misses it is abandoned.
    fn call(&mut self, job: Job) -> Result<Done, Failure> {
        if self.worker.is_none() {
            if self.abandoned.load(Ordering::SeqCst) >= MAX_ABANDONED {
                return Err(Failure::Down(
                    "earlier connections are still stuck on the database".into(),
                ));
            }
            self.worker = Some(spawn_worker(&self.cfg, &self.abandoned));
        }
        let w = self.worker.as_ref().expect("worker");
        if w.jobs.send(job).is_err() {
            self.worker = None;
            return Err(Failure::Down("the database worker stopped".into()));
        }
        match w.done.recv_timeout(self.cfg.deadline) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                self.abandoned.fetch_add(1, Ordering::SeqCst);
                self.worker = None;
                Err(Failure::Down(format!(
                    "no answer within the deadline of {}",
                    humantime::format_duration(self.cfg.deadline)
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.worker = None;
                Err(Failure::Down("the database worker stopped".into()))
            }
        }
    }

    fn went_down(&mut self, why: &str) {
        if !self.down {
            crate::log::error(
                "listen_db_unavailable",
                None,
                json!({"error": why, "retry_in_s": RETRY_EVERY.as_secs()}),
            );
        }
        self.down = true;
        self.next_try = Instant::now() + RETRY_EVERY;
        self.health.database(false);
    }

    fn came_back(&mut self) {
        if self.down {
            crate::log::info("listen_db_available", None, json!({}));
        }
        self.down = false;
        self.health.database(true);
    }

    /// Takes a queued op into the batch: claims become claims, writes of a
    /// connection that is no longer its device's are refused.
    fn take(&mut self, op: WriteOp, items: &mut Vec<Item>, claims: &mut Vec<PendingClaim>) {
        match op {
            WriteOp::Claim {
                conn,
                device_id,
                reply,
            } => {
                self.owners
                    .insert(device_id.clone(), Owner { conn, epoch: None });
                // A device claimed twice in one batch: the newer claim. (The
                // older one's connection is being closed; its wait ends.)
                if !self.claiming.insert(device_id.clone()) {
                    if let Some(old) = claims.iter_mut().find(|c| c.device_id == device_id) {
                        if let Some(r) = old.reply.take() {
                            let _ = r.send(HashMap::new());
                        }
                        old.conn = conn;
                        old.reply = Some(reply);
                        return;
                    }
                }
                claims.push(PendingClaim {
                    conn,
                    device_id,
                    reply: Some(reply),
                });
            }
            WriteOp::Store { conn, item } => {
                if let Some(d) = item.fenced_device() {
                    let current = self.owners.get(d).map(|o| o.conn);
                    if current != Some(conn) {
                        if self.stale.insert(conn) {
                            crate::log::warn(
                                "listen_write_refused",
                                Some(d),
                                json!({"reason": "the device has a newer connection", "connection": conn}),
                            );
                        }
                        return;
                    }
                }
                items.push(item);
            }
        }
    }

    /// Stores a batch: the database if it is up (or due to be tried), else
    /// the spool; held in memory when neither takes it.
    fn flush(&mut self, mut items: Vec<Item>, mut claims: Vec<PendingClaim>, final_: bool) {
        self.claiming.clear();
        let mut all = std::mem::take(&mut self.held);
        all.append(&mut items);
        let items = all;
        if items.is_empty() && claims.is_empty() {
            return;
        }
        let started = Instant::now();
        if !self.down || Instant::now() >= self.next_try {
            // Devices whose items are fenced: by the epoch we hold, or
            // claimed now (once connected) when we hold none.
            let mut held = Vec::new();
            let mut seen: HashSet<&DeviceId> = claims.iter().map(|c| &c.device_id).collect();
            let mut extra = Vec::new();
            for d in items.iter().filter_map(Item::fenced_device) {
                if !seen.insert(d) {
                    continue;
                }
                match self.owners.get(d).and_then(|o| o.epoch) {
                    Some(e) => held.push((d.clone(), e)),
                    None => extra.push(PendingClaim {
                        conn: self.owners.get(d).map_or(0, |o| o.conn),
                        device_id: d.clone(),
                        reply: None,
                    }),
                }
            }
            claims.append(&mut extra);
            let job_claims = claims
                .iter()
                .map(|c| Claim {
                    device_id: c.device_id.clone(),
                    load: c.reply.is_some(),
                })
                .collect();
            let shared = Arc::new(items);
            self.health.writing(Some(started));
            let r = self.call(Job::Batch {
                items: shared.clone(),
                held: held.clone(),
                claims: job_claims,
            });
            self.health.writing(None);
            let items = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
            match r {
                Ok(Done::Batch(done)) => {
                    self.came_back();
                    // Whatever was held is stored now.
                    self.health.spool(None);
                    self.committed(&items, claims, &held, done);
                    return;
                }
                Ok(_) => unreachable!("a batch answers with a batch"),
                Err(Failure::Refused(why)) => {
                    // One item is refused: spool the batch; its replay
                    // quarantines that item alone, the others go in.
                    crate::log::warn(
                        "listen_batch_refused",
                        None,
                        json!({"error": why, "items": items.len(), "action": "spooled; the replay quarantines the refused entry alone"}),
                    );
                    self.answer_claims(claims);
                    self.spool_items(items, final_);
                    return;
                }
                Err(Failure::Down(why)) => {
                    self.went_down(&why);
                    self.answer_claims(claims);
                    self.spool_items(items, final_);
                    return;
                }
            }
        }
        self.answer_claims(claims);
        self.spool_items(items, final_);
    }

    /// Claims that could not be made: the connections go on with fresh
    /// sessions (their devices are claimed at their first stored batch).
    fn answer_claims(&mut self, claims: Vec<PendingClaim>) {
        for c in claims {
            if let Some(r) = c.reply {
                let _ = r.send(HashMap::new());
            }
        }
    }

    fn committed(
        &mut self,
        items: &[Item],
        claims: Vec<PendingClaim>,
        held: &[(DeviceId, i64)],
        done: Committed,
    ) {
        let mut epochs: HashMap<DeviceId, (i64, HashMap<ChannelKey, ChannelState>)> = done
            .claimed
            .into_iter()
            .map(|(d, e, s)| (d, (e, s)))
            .collect();
        for c in claims {
            let Some((epoch, states)) = epochs.remove(&c.device_id) else {
                continue;
            };
            if let Some(o) = self.owners.get_mut(&c.device_id) {
                if o.conn == c.conn {
                    o.epoch = Some(epoch);
                }
            }
            if let Some(r) = c.reply {
                let _ = r.send(states);
            }
        }
        for d in &done.revoked {
            let epoch = held.iter().find(|(h, _)| h == d).map(|(_, e)| *e);
            let Some(o) = self.owners.get(d) else {
                continue;
            };
            if o.epoch == epoch {
                crate::log::warn(
                    "listen_device_taken_over",
                    Some(d),
                    json!({"reason": "claimed by another connection (maybe another listen)", "connection": o.conn}),
                );
                self.registry
                    .revoke(d, o.conn, "replaced by a newer connection elsewhere");
                self.owners.remove(d);
            }
        }
        let revoked: HashSet<&DeviceId> = done.revoked.iter().collect();
        for i in items {
            if !i.fenced_device().is_some_and(|d| revoked.contains(d)) {
                self.health.wrote(i.device());
            }
        }
    }

    /// Writes items to the spool as one file; holds them when it cannot.
    fn spool_items(&mut self, items: Vec<Item>, final_: bool) {
        if items.is_empty() {
            return;
        }
        let Some(dir) = self.cfg.spool.clone() else {
            crate::log::error(
                "listen_write_lost",
                None,
                json!({"items": items.len(), "reason": "the database is unavailable and no spool directory is set"}),
            );
            return;
        };
        let entries: Vec<_> = items.iter().filter_map(spool_entry).collect();
        match crate::spool::write(&dir, &entries) {
            Ok(f) => {
                self.spooled = true;
                self.health.spool(None);
                crate::log::warn(
                    "readings_spooled",
                    None,
                    json!({"file": f.display().to_string(), "entries": entries.len()}),
                );
            }
            Err(e) => {
                let why = format!("the spool cannot be written: {e}");
                if self.health.spool(Some(why.clone())) || final_ {
                    crate::log::error(
                        "spool_write_failed",
                        None,
                        json!({"dir": dir.display().to_string(), "error": e.to_string(), "items": items.len(),
                               "action": if final_ { "lost at exit" } else { "held in memory; devices wait" }}),
                    );
                }
                if !final_ {
                    self.held = items;
                }
            }
        }
    }

    /// After a successful write: one spool file back into the database.
    fn replay_one(&mut self) {
        if !self.spooled || self.down {
            return;
        }
        let Some(dir) = self.cfg.spool.clone() else {
            return;
        };
        let Some(file) = crate::spool::pending(&dir).into_iter().next() else {
            self.spooled = false;
            return;
        };
        match self.call(Job::Replay(file)) {
            Ok(Done::Replay(file, r)) => crate::log::info(
                "spool_replayed",
                None,
                json!({"file": file.display().to_string(), "entries": r.readings,
                       "rows_written": r.rows_written, "quarantined": r.quarantined}),
            ),
            Ok(_) => {}
            Err(Failure::Refused(why) | Failure::Down(why)) => self.went_down(&why),
        }
    }
}

struct PendingClaim {
    conn: u64,
    device_id: DeviceId,
    /// None: a claim the writer makes itself (connected while the database
    /// was away); nothing to load, nobody waiting.
    reply: Option<Sender<HashMap<ChannelKey, ChannelState>>>,
}

/// What an item leaves in the spool.
fn spool_entry(item: &Item) -> Option<crate::spool::Entry> {
    use crate::spool::{Entry, LogRow, SpooledReading};
    match item {
        Item::Session(s) => Some(Entry::Session(s.clone())),
        Item::Logs {
            device_id,
            rows,
            periods,
            states,
        } if !rows.is_empty() || !states.is_empty() || !periods.is_empty() => {
            Some(Entry::PowerLogs {
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
            })
        }
        Item::Reading {
            device_id,
            at,
            status,
        } => Some(Entry::Reading(Box::new(SpooledReading {
            ts: *at,
            host: None,
            info: crate::shelly::DeviceInfo::bare(device_id.clone()),
            status: (**status).clone(),
            source: "push".into(),
        }))),
        Item::Device { info, peer } => Some(Entry::Device {
            info: info.clone(),
            peer: peer.clone(),
        }),
        Item::Logs { .. } => None,
    }
}

/// Stores every write from `rx` until all senders are gone; then whatever
/// is left goes to the database or the spool before it returns.
pub fn run(
    cfg: WriterConfig,
    rx: Receiver<WriteOp>,
    health: Arc<Health>,
    registry: Arc<Registry>,
    ready: Sender<()>,
) {
    let spooled = cfg
        .spool
        .as_deref()
        .is_some_and(|d| !crate::spool::pending(d).is_empty());
    let mut w = Writer {
        cfg,
        worker: None,
        abandoned: Arc::new(AtomicUsize::new(0)),
        next_try: Instant::now(),
        down: false,
        spooled,
        owners: HashMap::new(),
        held: Vec::new(),
        health,
        registry,
        stale: HashSet::new(),
        claiming: HashSet::new(),
    };
    // Connect (and replay what an earlier run spooled) before any frame.
    match w.call(Job::Connect) {
        Ok(_) => {
            w.came_back();
            w.replay_one();
        }
        Err(Failure::Refused(why) | Failure::Down(why)) => w.went_down(&why),
    }
    let _ = ready.send(());
    let mut open = true;
    while open {
        let mut items = Vec::new();
        let mut claims = Vec::new();
        // Held items: the queue is not read (backpressure) until they are
        // stored; try again each second.
        if !w.held.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
            w.flush(items, claims, false);
            continue;
        }
        // The first op: wait for it (quietly probing a database that is
        // down, and replaying the spool while nothing else is to do).
        let first = match rx.recv_timeout(if w.spooled && !w.down {
            Duration::ZERO
        } else {
            RETRY_EVERY
        }) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => {
                if !w.down || Instant::now() >= w.next_try {
                    match w.call(Job::Connect) {
                        Ok(_) => w.came_back(),
                        Err(Failure::Refused(why) | Failure::Down(why)) => w.went_down(&why),
                    }
                }
                w.replay_one();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let until = Instant::now() + w.cfg.window;
        w.take(first, &mut items, &mut claims);
        // Everything queued, then more until the window closes.
        while items.len() < w.cfg.max_items {
            let op = match rx.try_recv() {
                Ok(op) => op,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(op) => op,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            };
            w.take(op, &mut items, &mut claims);
        }
        w.health.queued(items.len());
        w.flush(items, claims, false);
        w.replay_one();
    }
    // Stopping: what is left, then the final word on anything held.
    let mut items = Vec::new();
    let mut claims = Vec::new();
    while let Ok(op) = rx.try_recv() {
        w.take(op, &mut items, &mut claims);
    }
    w.flush(items, claims, true);
    if !w.held.is_empty() {
        let held = std::mem::take(&mut w.held);
        w.spool_items(held, true);
    }
}

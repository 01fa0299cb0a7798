//! `shelly-load`: many simulated devices dialing into `shellyctl listen` at
//! once and pushing status frames as fast as the server takes them, for
//! scripts/bench-listen.
//!
//! Every device opens its WebSocket before any frame is sent; then each
//! sends a NotifyFullStatus at the start time and NotifyStatus frames after
//! it, its device time advancing by the step per frame, pipelined (no frame
//! waits for an answer). A few threads serve all sockets through an event
//! loop, round-robin in small bursts, so all devices progress together. At
//! the end each socket is closed normally, and one JSON line on stdout says
//! how it went.

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};
use shellyctl::exit::ExitKind;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::MidHandshake;
use tungstenite::{HandshakeError, Message, WebSocket};

const AFTER_HELP: &str = "\
Device ids are PREFIX-00000, PREFIX-00001, ... Channel c of every frame
reports apower 100 * (c + 1) W. The device time of frame k is START_TS + k *
STEP; `listen` refuses device times more than 300 s ahead of its clock.

The server's Shelly.GetDeviceInfo is answered; its Shelly.GetStatus is not
(an answer would carry a status dated now, after the frames still to come).

Stdout: one JSON line at the end: devices, frames_per_device, frames_sent,
connect_s, send_s, frames_per_s, close_s, send_started_unix_ms,
closed_clean, closed_without_reply, lost.

Exit codes:
  0   every frame sent and every socket closed
  1   failure (a connection refused or lost, or the close timed out)
  2   usage error (wrong arguments)";

#[derive(Parser, Debug)]
#[command(
    name = "shelly-load",
    version,
    about = "Push NotifyStatus frames from many simulated devices into `shellyctl listen`",
    after_help = AFTER_HELP
)]
struct Args {
    /// The listen endpoint, ws://HOST:PORT/PATH/TOKEN.
    #[arg(long)]
    url: String,
    /// Devices, each on its own WebSocket.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    devices: u64,
    /// Frames per device, the NotifyFullStatus included.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    frames: u64,
    /// switch:N channels per frame.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    channels: u32,
    /// Device time of the first frame (unix seconds, a multiple of 60).
    #[arg(long)]
    start_ts: i64,
    /// Seconds of device time between a device's frames.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    step: u64,
    /// Device ids are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// Threads serving the sockets.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// Frames written to one socket before the next socket's turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    burst: u64,
    /// WebSocket handshakes in flight at once (all threads): keep it below
    /// the server's LISTEN_MAX_PENDING, or it drops the oldest.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    connect_window: u64,
    /// Give up connecting, sending or closing after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What the threads share: the validated arguments.
#[derive(Debug, Clone)]
struct Plan {
    url: String,
    devices: usize,
    frames: u64,
    channels: u32,
    start_ts: i64,
    step: i64,
    prefix: String,
    threads: usize,
    burst: u64,
    connect_window: usize,
    timeout: Duration,
}

impl Plan {
    fn of(a: Args) -> Result<Plan, String> {
        if a.start_ts.rem_euclid(60) != 0 {
            return Err(format!(
                "--start-ts must be a multiple of 60, not {}",
                a.start_ts
            ));
        }
        let threads = (a.threads as usize).min(a.devices as usize);
        Ok(Plan {
            url: a.url,
            devices: a.devices as usize,
            frames: a.frames,
            channels: a.channels,
            start_ts: a.start_ts,
            step: a.step as i64,
            prefix: a.prefix,
            threads,
            burst: a.burst,
            connect_window: (a.connect_window as usize / threads).max(1),
            timeout: a.timeout,
        })
    }

    fn device_id(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    /// The devices thread `t` serves: every `threads`-th one.
    fn devices_of(&self, t: usize) -> Vec<usize> {
        (t..self.devices).step_by(self.threads).collect()
    }

    /// Frame `k` of device `id`: the full status first, then updates.
    fn frame(&self, id: &str, k: u64) -> String {
        let elapsed = k as i64 * self.step;
        let mut params = serde_json::Map::new();
        params.insert("ts".into(), json!((self.start_ts + elapsed) as f64));
        for c in 0..self.channels {
            let w = 100.0 * f64::from(c + 1);
            params.insert(
                format!("switch:{c}"),
                json!({
                    "id": c,
                    "apower": w,
                    "voltage": 230.0,
                    "current": 0.5 * f64::from(c + 1),
                    "aenergy": {"total": 1000.0 + w * elapsed as f64 / 3600.0},
                }),
            );
        }
        let method = if k == 0 {
            "NotifyFullStatus"
        } else {
            "NotifyStatus"
        };
        json!({"src": id, "dst": "ws", "method": method, "params": params}).to_string()
    }
}

/// The answer to a request from the server, if it gets one.
fn answer(id: &str, request: &str) -> Option<String> {
    let req: Value = serde_json::from_str(request).ok()?;
    if req.get("method")?.as_str()? != "Shelly.GetDeviceInfo" {
        return None;
    }
    let info =
        json!({"id": id, "gen": 2, "model": "S3PM-001PCEU16", "app": "Plus1PM", "ver": "1.4.4"});
    Some(json!({"id": req["id"], "src": id, "result": info}).to_string())
}

type Ws = WebSocket<TcpStream>;

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if e.kind() == ErrorKind::WouldBlock)
}

/// One device's socket and how far it got.
struct Device {
    id: String,
    ws: Ws,
    /// Frames written (buffered or in the kernel).
    sent: u64,
    /// The kernel took no more; waiting for the socket to be writable.
    blocked: bool,
    /// We sent our close frame.
    closing: bool,
    ended: Option<End>,
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// The server answered our close.
    Clean,
    /// The server closed the TCP connection after our close, without a
    /// close frame of its own.
    WithoutReply,
    /// Broken off before we closed (an error, or the server closed).
    Lost,
}

/// What one turn of a device achieved.
#[derive(Debug, PartialEq)]
enum Turn {
    More,
    Blocked,
    Done,
}

impl Device {
    /// Writes up to `burst` more frames and pushes them to the kernel.
    fn push_burst(&mut self, plan: &Plan) -> tungstenite::Result<Turn> {
        // What is already buffered goes before anything new.
        match self.ws.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => return Ok(Turn::Blocked),
            Err(e) => return Err(e),
        }
        if self.sent == plan.frames {
            return Ok(Turn::Done);
        }
        for _ in 0..plan.burst.min(plan.frames - self.sent) {
            let frame = plan.frame(&self.id, self.sent);
            // On WouldBlock the frame is buffered all the same.
            let r = self.ws.write(Message::text(frame));
            self.sent += 1;
            match r {
                Ok(()) => {}
                Err(e) if would_block(&e) => return Ok(Turn::Blocked),
                Err(e) => return Err(e),
            }
        }
        match self.ws.flush() {
            Ok(()) if self.sent == plan.frames => Ok(Turn::Done),
            Ok(()) => Ok(Turn::More),
            Err(e) if would_block(&e) => Ok(Turn::Blocked),
            Err(e) => Err(e),
        }
    }

    /// Reads whatever the server sent (until the socket has no more),
    /// answering its requests; pings are answered by tungstenite. Sets
    /// `ended` when the connection is over.
    fn drain(&mut self) {
        while self.ended.is_none() {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    if let Some(a) = answer(&self.id, t.as_str()) {
                        // Buffered on WouldBlock; flushed with the frames.
                        if let Err(e) = self.ws.write(Message::text(a)) {
                            if !would_block(&e) {
                                self.ended = Some(End::Lost);
                            }
                        }
                    }
                }
                Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {
                    self.ended = Some(if self.closing { End::Clean } else { End::Lost });
                }
                Ok(_) => {}
                Err(e) if would_block(&e) => return,
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) if self.closing => self.ended = Some(End::WithoutReply),
                Err(_) => self.ended = Some(End::Lost),
            }
        }
    }
}

/// What one thread did.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    /// When its last frame was in the kernel.
    sent_at: Option<Instant>,
    /// When its last socket ended.
    closed_at: Option<Instant>,
    clean: usize,
    without_reply: usize,
    lost: usize,
    error: Option<String>,
}

/// The threads' meeting points: all connected, then sending starts.
struct Sync {
    connected: Barrier,
    failed: AtomicBool,
}

fn run_thread(plan: &Plan, t: usize, sync: &Sync) -> Outcome {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            sync.failed.store(true, Ordering::SeqCst);
            sync.connected.wait();
            return Outcome {
                error: Some(format!("event loop: {e}")),
                ..Outcome::default()
            };
        }
    };
    let connected = connect_all(plan, &plan.devices_of(t), &mut poll);
    if connected.is_err() {
        sync.failed.store(true, Ordering::SeqCst);
    }
    sync.connected.wait();
    let mut devices = match connected {
        Ok(d) if !sync.failed.load(Ordering::SeqCst) => d,
        Ok(_) => return Outcome::default(),
        Err(e) => {
            return Outcome {
                error: Some(e),
                ..Outcome::default()
            }
        }
    };
    let mut out = Outcome::default();
    if let Err(e) = send_all(plan, &mut devices, &mut poll) {
        out.error = Some(e);
    }
    out.sent = devices.iter().map(|d| d.sent).sum();
    out.sent_at = Some(Instant::now());
    if let Err(e) = close_all(plan, &mut devices, &mut poll) {
        out.error.get_or_insert(e);
    }
    out.closed_at = Some(Instant::now());
    for d in &devices {
        match d.ended {
            Some(End::Clean) => out.clean += 1,
            Some(End::WithoutReply) => out.without_reply += 1,
            Some(End::Lost) | None => out.lost += 1,
        }
    }
    out
}

type Handshake = MidHandshake<ClientHandshake<TcpStream>>;
type Handshaking = Result<
    (Ws, tungstenite::handshake::client::Response),
    HandshakeError<ClientHandshake<TcpStream>>,
>;

/// A socket open, or its handshake still under way.
fn progress(r: Handshaking) -> Result<Result<Ws, Handshake>, String> {
    match r {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(HandshakeError::Interrupted(mid)) => Ok(Err(mid)),
        Err(HandshakeError::Failure(e)) => Err(e.to_string()),
    }
}

/// Opens the sockets of `indices`, at most `connect_window` handshakes
/// at a time. The token of each socket is its place in the result.
fn connect_all(plan: &Plan, indices: &[usize], poll: &mut Poll) -> Result<Vec<Device>, String> {
    let deadline = Instant::now() + plan.timeout;
    let addr = socket_addr(&plan.url)?;
    let failed =
        |slot: usize, e: String| format!("connecting {}: {e}", plan.device_id(indices[slot]));
    let mut pending: Vec<Option<Handshake>> = Vec::new();
    let mut open: Vec<Option<Ws>> = Vec::new();
    let (mut in_flight, mut done) = (0, 0);
    let mut events = Events::with_capacity(1024);
    while done < indices.len() {
        while in_flight < plan.connect_window && open.len() < indices.len() {
            let slot = open.len();
            let std = std::net::TcpStream::connect(addr).map_err(|e| {
                failed(
                    slot,
                    format!("{e} (is the open-files limit high enough? ulimit -n)"),
                )
            })?;
            let _ = std.set_nodelay(true);
            std.set_nonblocking(true)
                .map_err(|e| failed(slot, e.to_string()))?;
            let mut stream = TcpStream::from_std(std);
            poll.registry()
                .register(
                    &mut stream,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| failed(slot, e.to_string()))?;
            let r = tungstenite::client::client_with_config(plan.url.as_str(), stream, None);
            match progress(r).map_err(|e| failed(slot, e))? {
                Ok(ws) => {
                    done += 1;
                    open.push(Some(ws));
                    pending.push(None);
                }
                Err(mid) => {
                    in_flight += 1;
                    open.push(None);
                    pending.push(Some(mid));
                }
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let slot = ev.token().0;
            let Some(mid) = pending.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            match progress(mid.handshake()).map_err(|e| failed(slot, e))? {
                Ok(ws) => {
                    in_flight -= 1;
                    done += 1;
                    open[slot] = Some(ws);
                }
                Err(mid) => pending[slot] = Some(mid),
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} sockets not connected after {:?}",
                indices.len() - done,
                indices.len(),
                plan.timeout
            ));
        }
    }
    Ok(open
        .into_iter()
        .zip(indices)
        .map(|(ws, i)| Device {
            id: plan.device_id(*i),
            ws: ws.expect("every socket is open"),
            sent: 0,
            blocked: false,
            closing: false,
            ended: None,
        })
        .collect())
}

fn socket_addr(url: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws://, got {url:?}"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    host.to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// Writes every device's frames, round-robin in bursts, reading what the
/// server sends as it arrives.
fn send_all(plan: &Plan, devices: &mut [Device], poll: &mut Poll) -> Result<(), String> {
    let deadline = Instant::now() + plan.timeout;
    let mut events = Events::with_capacity(1024);
    // Data that came with the handshake raises no event of its own.
    for d in devices.iter_mut() {
        d.drain();
    }
    let mut ready: VecDeque<usize> = (0..devices.len()).collect();
    let mut unfinished = devices.len();
    while unfinished > 0 {
        for _ in 0..ready.len() {
            let Some(i) = ready.pop_front() else { break };
            let d = &mut devices[i];
            if d.ended.is_some() {
                unfinished -= 1;
                continue;
            }
            match d.push_burst(plan) {
                Ok(Turn::More) => ready.push_back(i),
                Ok(Turn::Blocked) => d.blocked = true,
                Ok(Turn::Done) => unfinished -= 1,
                Err(_) => {
                    d.ended = Some(End::Lost);
                    unfinished -= 1;
                }
            }
        }
        let wait = if ready.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        poll.poll(&mut events, Some(wait))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let d = &mut devices[i];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                d.drain();
            }
            if d.blocked && (ev.is_writable() || d.ended.is_some()) {
                d.blocked = false;
                ready.push_back(i);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{unfinished} sockets still sending after {:?}",
                plan.timeout
            ));
        }
    }
    Ok(())
}

/// Closes every socket normally and waits for the server to end each.
fn close_all(plan: &Plan, devices: &mut [Device], poll: &mut Poll) -> Result<(), String> {
    let deadline = Instant::now() + plan.timeout;
    let mut events = Events::with_capacity(1024);
    for d in devices.iter_mut().filter(|d| d.ended.is_none()) {
        d.closing = true;
        match d.ws.close(None) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => d.ended = Some(End::Lost),
        }
        d.drain();
    }
    while devices.iter().any(|d| d.ended.is_none()) {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let d = &mut devices[ev.token().0];
            if ev.is_writable() && d.ended.is_none() {
                // The close frame may still be in our buffer.
                match d.ws.flush() {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {}
                    Err(tungstenite::Error::ConnectionClosed) => {
                        d.ended.get_or_insert(End::Clean);
                    }
                    Err(_) => d.ended = Some(End::Lost),
                }
            }
            d.drain();
        }
        if Instant::now() > deadline {
            let open = devices.iter().filter(|d| d.ended.is_none()).count();
            return Err(format!(
                "{open} sockets not closed by the server after {:?}",
                plan.timeout
            ));
        }
    }
    Ok(())
}

fn seconds(from: Instant, to: Option<Instant>) -> f64 {
    to.map_or(0.0, |t| t.duration_since(from).as_secs_f64())
}

fn run(plan: Plan) -> Result<ExitKind, String> {
    let plan = Arc::new(plan);
    let sync = Arc::new(Sync {
        connected: Barrier::new(plan.threads + 1),
        failed: AtomicBool::new(false),
    });
    let started = Instant::now();
    let threads: Vec<_> = (0..plan.threads)
        .map(|t| {
            let (plan, sync) = (plan.clone(), sync.clone());
            std::thread::spawn(move || run_thread(&plan, t, &sync))
        })
        .collect();
    sync.connected.wait();
    let sending = Instant::now();
    let send_started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let connect_s = sending.duration_since(started).as_secs_f64();
    if !sync.failed.load(Ordering::SeqCst) {
        shellyctl::log::info(
            "load_connected",
            None,
            json!({"devices": plan.devices, "connect_s": connect_s}),
        );
    }
    let outcomes: Vec<Outcome> = threads
        .into_iter()
        .map(|t| {
            t.join().unwrap_or_else(|_| Outcome {
                error: Some("a thread panicked".into()),
                ..Outcome::default()
            })
        })
        .collect();
    if let Some(e) = outcomes.iter().find_map(|o| o.error.clone()) {
        if sync.failed.load(Ordering::SeqCst) {
            return Err(e);
        }
        shellyctl::log::error("load_incomplete", None, json!({"error": e}));
    }
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let send_s = seconds(sending, outcomes.iter().filter_map(|o| o.sent_at).max());
    let close_s = seconds(sending, outcomes.iter().filter_map(|o| o.closed_at).max());
    let sum = |f: fn(&Outcome) -> usize| outcomes.iter().map(f).sum::<usize>();
    let lost = sum(|o| o.lost);
    println!(
        "{}",
        json!({
            "devices": plan.devices,
            "frames_per_device": plan.frames,
            "frames_sent": sent,
            "connect_s": round3(connect_s),
            "send_s": round3(send_s),
            "frames_per_s": round3(sent as f64 / send_s.max(1e-9)),
            "close_s": round3(close_s),
            "send_started_unix_ms": send_started_ms as u64,
            "closed_clean": sum(|o| o.clean),
            "closed_without_reply": sum(|o| o.without_reply),
            "lost": lost,
        })
    );
    let complete = sent == plan.frames * plan.devices as u64 && lost == 0;
    let errors = outcomes.iter().any(|o| o.error.is_some());
    Ok(if complete && !errors {
        ExitKind::Success
    } else {
        ExitKind::Failure
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> ExitCode {
    let plan = match Plan::of(Args::parse()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(ExitKind::Usage.code());
        }
    };
    match run(plan) {
        Ok(kind) => ExitCode::from(kind.code()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(ExitKind::Failure.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn plan(devices: u64, threads: u64) -> Plan {
        Plan::of(Args::parse_from([
            "shelly-load",
            "--url",
            "ws://127.0.0.1:1/ws/token",
            "--devices",
            &devices.to_string(),
            "--frames",
            "5",
            "--start-ts",
            "1790000040",
            "--threads",
            &threads.to_string(),
        ]))
        .unwrap()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn the_first_frame_is_a_full_status_and_time_advances_by_the_step() {
        let p = plan(1, 1);
        let first: Value = serde_json::from_str(&p.frame("loadgen-00000", 0)).unwrap();
        assert_eq!(first["method"], "NotifyFullStatus");
        assert_eq!(first["src"], "loadgen-00000");
        assert_eq!(first["params"]["ts"], json!(1_790_000_040.0));
        let third: Value = serde_json::from_str(&p.frame("loadgen-00000", 2)).unwrap();
        assert_eq!(third["method"], "NotifyStatus");
        assert_eq!(third["params"]["ts"], json!(1_790_000_060.0));
    }

    #[test]
    fn channel_c_reports_100_times_c_plus_one_watts() {
        let f: Value = serde_json::from_str(&plan(1, 1).frame("d", 1)).unwrap();
        for c in 0..3 {
            let ch = &f["params"][format!("switch:{c}")];
            assert_eq!(ch["id"], json!(c));
            assert_eq!(ch["apower"], json!(100.0 * f64::from(c + 1)));
        }
        assert!(f["params"].get("switch:3").is_none());
    }

    #[test]
    fn devices_are_dealt_to_threads_in_turn() {
        let p = plan(7, 3);
        assert_eq!(p.devices_of(0), [0, 3, 6]);
        assert_eq!(p.devices_of(2), [2, 5]);
        assert_eq!(p.device_id(42), "loadgen-00042");
        assert_eq!(plan(2, 4).threads, 2);
    }

    #[test]
    fn a_start_time_off_the_minute_is_refused() {
        let a = Args::parse_from([
            "shelly-load",
            "--url",
            "ws://h:1/ws/t",
            "--devices",
            "1",
            "--frames",
            "1",
            "--start-ts",
            "1790000041",
        ]);
        assert!(Plan::of(a).is_err());
    }

    #[test]
    fn device_info_is_answered_and_status_is_not() {
        let info = answer(
            "d",
            r#"{"jsonrpc":"2.0","id":1,"src":"shellyctl","method":"Shelly.GetDeviceInfo"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["id"], "d");
        assert_eq!(v["result"]["gen"], 2);
        let status = r#"{"jsonrpc":"2.0","id":2,"src":"shellyctl","method":"Shelly.GetStatus"}"#;
        assert_eq!(answer("d", status), None);
    }
}

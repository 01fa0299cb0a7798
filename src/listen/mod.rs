//! `shellyctl listen`: a WebSocket endpoint for devices that dial out
//! (`Ws.SetConfig {enable, server}`) and push NotifyFullStatus /
//! NotifyStatus frames. A thread per connection, one database writer.

pub mod frames;

use crate::db::{self, readings::Source};
use crate::minute_log::{self, ChannelState, Row, Values};
use crate::secret::Secret;
use crate::shelly::DeviceInfo;
use frames::{merge, parse_frame, status_components, switch_values, switches, Frame};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

#[derive(Debug, Clone)]
pub struct Config {
    pub path: String,
    pub token: Secret,
    /// Device ids allowed to connect (empty: any with the token).
    pub allow: Vec<String>,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub ping_every: Duration,
    pub threshold_w: Decimal,
    /// Switch channels to log (None: all).
    pub channels: Option<Vec<i32>>,
    /// At most one power_readings row per device this often (meters).
    pub meter_every_s: i64,
    pub max_fill_minutes: i64,
    pub database_url: String,
    /// Where writes go while the database is unreachable.
    pub spool_dir: Option<std::path::PathBuf>,
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The token from `/path/<token>` or `/path?token=<token>`; None when the
/// path is not ours.
fn token_of<'a>(uri_path: &'a str, query: Option<&'a str>, path: &str) -> Option<Option<&'a str>> {
    let rest = uri_path.strip_prefix(path)?;
    if let Some(t) = rest.strip_prefix('/').filter(|t| !t.is_empty()) {
        return Some(Some(t));
    }
    if !rest.is_empty() && rest != "/" {
        return None;
    }
    let t = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    Some(t)
}

enum WriteOp {
    Device(DeviceInfo, String),
    LoadStates {
        device_id: String,
        reply: Sender<HashMap<i32, ChannelState>>,
    },
    Logs {
        device_id: String,
        rows: Vec<(i32, Row)>,
        states: Vec<(i32, ChannelState)>,
    },
    Reading {
        device_id: String,
        ts: f64,
        status: Box<crate::shelly::status::DeviceStatus>,
    },
}

/// A frame's `ts` (unix seconds with hundredths) as a timestamp.
fn frame_time(ts: f64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis((ts * 1000.0).round() as i64).unwrap_or_default()
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
            ts,
            status,
        } => Some(Entry::Reading(Box::new(SpooledReading {
            ts: frame_time(*ts),
            host: None,
            info: DeviceInfo {
                // An id that is not a valid device id cannot be spooled.
                id: crate::device::DeviceId::parse(device_id).ok()?,
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

fn writer(url: String, rx: Receiver<WriteOp>, spool: Option<std::path::PathBuf>) {
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
            ts,
            status,
        } => {
            let mut tx = c.transaction()?;
            db::readings::ensure_device(&mut tx, device_id)?;
            let at = frame_time(*ts);
            db::readings::insert_meter(&mut tx, at, device_id, status.as_ref(), Source::Push)?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// Serves until `shutdown` is set; calls `bound` with the listening address.
pub fn serve(
    bind: &str,
    cfg: Config,
    shutdown: Arc<AtomicBool>,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    bound(listener.local_addr()?);
    let (tx, rx) = channel();
    let url = cfg.database_url.clone();
    let spool = cfg.spool_dir.clone();
    let writer_thread = std::thread::spawn(move || writer(url, rx, spool));
    let cfg = Arc::new(cfg);
    let active = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    while !shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                if active.load(Ordering::SeqCst) >= cfg.max_connections {
                    crate::log::warn(
                        "listen_rejected",
                        None,
                        json!({"peer": peer.to_string(), "reason": "too many connections", "limit": cfg.max_connections}),
                    );
                    let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (cfg, tx, shutdown, active) =
                    (cfg.clone(), tx.clone(), shutdown.clone(), active.clone());
                handles.push(std::thread::spawn(move || {
                    connection(stream, peer, &cfg, &tx, &shutdown);
                    active.fetch_sub(1, Ordering::SeqCst);
                }));
                handles.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => crate::log::warn(
                "listen_accept_failed",
                None,
                json!({"error": e.to_string()}),
            ),
        }
    }
    crate::log::info(
        "listen_stopping",
        None,
        json!({"connections": active.load(Ordering::SeqCst)}),
    );
    for h in handles {
        let _ = h.join();
    }
    drop(tx);
    let _ = writer_thread.join();
    Ok(())
}

/// What a connection knows about its device.
struct Session {
    device_id: Option<String>,
    status: Map<String, Value>,
    channels: HashMap<i32, ChannelState>,
    last_meter_ts: Option<f64>,
    malformed: u32,
}

fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &Config,
    tx: &Sender<WriteOp>,
    shutdown: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // The error type is tungstenite's callback contract.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let uri = req.uri();
        let reason = match token_of(uri.path(), uri.query(), &cfg.path) {
            None => Some((404, "unknown path")),
            Some(None) => Some((401, "missing token")),
            Some(Some(t)) if !constant_time_eq(t.as_bytes(), cfg.token.expose().as_bytes()) => {
                Some((401, "wrong token"))
            }
            Some(Some(_)) => None,
        };
        match reason {
            None => Ok(resp),
            Some((code, why)) => {
                crate::log::warn(
                    "listen_rejected",
                    None,
                    json!({"peer": peer.to_string(), "reason": why}),
                );
                let mut r = ErrorResponse::new(Some(why.to_string()));
                *r.status_mut() = tungstenite::http::StatusCode::from_u16(code).expect("status");
                Err(r)
            }
        }
    };
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_frame_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    let mut ws = match tungstenite::accept_hdr_with_config(stream, check, Some(ws_cfg)) {
        Ok(ws) => ws,
        Err(e) => {
            crate::log::debug(
                "listen_handshake_failed",
                None,
                json!({"peer": peer.to_string(), "error": e.to_string()}),
            );
            return;
        }
    };
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(250)));
    crate::log::info("device_connected", None, json!({"peer": peer.to_string()}));
    // Learn who it is and where it stands, over the socket.
    for (id, method) in [(1, "Shelly.GetDeviceInfo"), (2, "Shelly.GetStatus")] {
        let _ = ws.send(Message::text(
            json!({"jsonrpc": "2.0", "id": id, "src": "shellyctl", "method": method}).to_string(),
        ));
    }
    let mut s = Session {
        device_id: None,
        status: Map::new(),
        channels: HashMap::new(),
        last_meter_ts: None,
        malformed: 0,
    };
    let mut last_rx = Instant::now();
    let mut last_ping = Instant::now();
    let reason = loop {
        if shutdown.load(Ordering::SeqCst) {
            close(&mut ws, CloseCode::Away, "server shutting down");
            break "shutdown";
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                last_rx = Instant::now();
                if let Err(why) = on_text(&t, &mut s, peer, cfg, tx) {
                    match why {
                        Stop::Refused => {
                            close(&mut ws, CloseCode::Policy, "device not allowed");
                            break "device not allowed";
                        }
                        Stop::TooManyMalformed => {
                            close(&mut ws, CloseCode::Protocol, "too many malformed frames");
                            break "too many malformed frames";
                        }
                    }
                }
            }
            Ok(Message::Binary(b)) => {
                last_rx = Instant::now();
                let text = String::from_utf8_lossy(&b).into_owned();
                if on_text(&text, &mut s, peer, cfg, tx).is_err() {
                    close(&mut ws, CloseCode::Policy, "closing");
                    break "refused";
                }
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                last_rx = Instant::now()
            }
            Ok(Message::Close(_)) => break "closed by the device",
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                if last_rx.elapsed() > cfg.idle_timeout {
                    close(&mut ws, CloseCode::Away, "idle");
                    break "idle timeout";
                }
                if last_ping.elapsed() >= cfg.ping_every && last_rx.elapsed() >= cfg.ping_every {
                    let _ = ws.send(Message::Ping(Vec::new().into()));
                    last_ping = Instant::now();
                }
            }
            Err(tungstenite::Error::Capacity(e)) => {
                crate::log::warn(
                    "frame_too_large",
                    s.device_id.as_deref(),
                    json!({"peer": peer.to_string(), "limit": cfg.max_frame_bytes, "error": e.to_string()}),
                );
                close(&mut ws, CloseCode::Size, "frame too large");
                break "frame too large";
            }
            Err(e) => {
                crate::log::warn(
                    "connection_error",
                    s.device_id.as_deref(),
                    json!({"peer": peer.to_string(), "error": e.to_string()}),
                );
                break "connection error";
            }
        }
    };
    crate::log::info(
        "device_disconnected",
        s.device_id.as_deref(),
        json!({"peer": peer.to_string(), "reason": reason}),
    );
}

fn close(ws: &mut WebSocket<TcpStream>, code: CloseCode, reason: &str) {
    let _ = ws.close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }));
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match ws.read() {
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                continue
            }
            Err(_) => break,
            Ok(_) => continue,
        }
    }
}

enum Stop {
    Refused,
    TooManyMalformed,
}

fn on_text(
    text: &str,
    s: &mut Session,
    peer: SocketAddr,
    cfg: &Config,
    tx: &Sender<WriteOp>,
) -> Result<(), Stop> {
    let frame = match parse_frame(text) {
        Ok(f) => f,
        Err(why) => {
            s.malformed += 1;
            crate::log::warn(
                "frame_malformed",
                s.device_id.as_deref(),
                json!({"peer": peer.to_string(), "reason": why, "count": s.malformed}),
            );
            return if s.malformed >= 20 {
                Err(Stop::TooManyMalformed)
            } else {
                Ok(())
            };
        }
    };
    let src = match &frame {
        Frame::Notify { src, .. } | Frame::Response { src, .. } => src.clone(),
    };
    if s.device_id.is_none() {
        if let Some(id) = src {
            if !cfg.allow.is_empty() && !cfg.allow.contains(&id) {
                crate::log::warn(
                    "listen_rejected",
                    Some(&id),
                    json!({"peer": peer.to_string(), "reason": "device not in the allow-list"}),
                );
                return Err(Stop::Refused);
            }
            let (reply, states) = channel();
            let _ = tx.send(WriteOp::LoadStates {
                device_id: id.clone(),
                reply,
            });
            s.channels = states
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_default();
            crate::log::info(
                "device_identified",
                Some(&id),
                json!({"peer": peer.to_string(), "channels_restored": s.channels.len()}),
            );
            s.device_id = Some(id);
        }
    }
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    match frame {
        Frame::Response {
            id: 1,
            result: Some(r),
            ..
        } => match serde_json::from_value::<DeviceInfo>(r) {
            Ok(info) => {
                let _ = tx.send(WriteOp::Device(info, peer.ip().to_string()));
            }
            Err(e) => crate::log::warn(
                "frame_malformed",
                s.device_id.as_deref(),
                json!({"reason": format!("device info: {e}")}),
            ),
        },
        Frame::Response {
            id: 2,
            result: Some(Value::Object(status)),
            ..
        } => {
            let ts = status
                .get("sys")
                .and_then(|x| x.get("unixtime"))
                .and_then(Value::as_f64)
                .unwrap_or(now);
            apply(s, ts, status, true, cfg, tx);
        }
        Frame::Response { .. } => {}
        Frame::Notify {
            method, ts, params, ..
        } => {
            let full = method == "NotifyFullStatus";
            if full || method == "NotifyStatus" {
                apply(
                    s,
                    ts.unwrap_or(now),
                    status_components(&params),
                    full,
                    cfg,
                    tx,
                );
            }
        }
    }
    Ok(())
}

/// Applies a (partial or full) status at device time `ts`: minute logs for
/// switch channels, a reading for meters.
fn apply(
    s: &mut Session,
    ts: f64,
    components: Map<String, Value>,
    full: bool,
    cfg: &Config,
    tx: &Sender<WriteOp>,
) {
    let Some(device_id) = s.device_id.clone() else {
        return;
    };
    if full {
        s.status = components.clone();
    } else {
        merge(&mut s.status, &components);
    }
    let settings = minute_log::Settings {
        threshold_w: cfg.threshold_w,
        max_fill_minutes: cfg.max_fill_minutes,
    };
    let wanted = |ch: i32| cfg.channels.as_ref().is_none_or(|c| c.contains(&ch));
    let second = ts.floor() as i64;
    let mut rows = Vec::new();
    let mut touched = Vec::new();
    // Channels in this frame get their new values; every other known
    // channel advances in time with its current ones.
    let mut updated: Vec<i32> = Vec::new();
    for (ch, comp) in switches(&components) {
        if !wanted(ch) {
            continue;
        }
        let st = s.channels.entry(ch).or_default();
        rows.extend(
            minute_log::update(st, second, &switch_values(comp), &settings)
                .into_iter()
                .map(|r| (ch, r)),
        );
        updated.push(ch);
        touched.push(ch);
    }
    for (ch, st) in s.channels.iter_mut() {
        if !updated.contains(ch) && st.values_ts.is_some() {
            rows.extend(
                minute_log::update(st, second, &Values::default(), &settings)
                    .into_iter()
                    .map(|r| (*ch, r)),
            );
            touched.push(*ch);
        }
    }
    if !touched.is_empty() {
        let states = touched
            .iter()
            .filter_map(|ch| Some((*ch, s.channels.get(ch)?.clone())))
            .collect();
        let _ = tx.send(WriteOp::Logs {
            device_id: device_id.clone(),
            rows,
            states,
        });
    }
    if frames::has_meter(&s.status)
        && s.last_meter_ts
            .is_none_or(|t| ts - t >= cfg.meter_every_s as f64)
    {
        if let Some(status) = frames::meter(&s.status) {
            s.last_meter_ts = Some(ts);
            let _ = tx.send(WriteOp::Reading {
                device_id,
                ts,
                status: Box::new(status),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn tokens_come_from_the_path_or_the_query() {
        assert_eq!(token_of("/ws/abc", None, "/ws"), Some(Some("abc")));
        assert_eq!(
            token_of("/ws", Some("token=abc&x=1"), "/ws"),
            Some(Some("abc"))
        );
        assert_eq!(token_of("/ws", None, "/ws"), Some(None));
        assert_eq!(token_of("/other", None, "/ws"), None);
        assert_eq!(token_of("/wsx", None, "/ws"), None);
    }
}

//! The listening side of `listen`: accepts sockets, enforces the limits,
//! checks the path and token in the WebSocket handshake, and runs one
//! thread per connection that feeds its [`Session`] and hands the
//! session's outputs to the writer.

use super::health::Health;
use super::registry::{Kick, Registry};
use super::session::{Session, Settings, Stop};
use super::writer::{self, WriteOp, WriterConfig};
use super::Config;
use serde_json::json;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::HandshakeError;
use tungstenite::{Message, WebSocket};

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

/// A counted place (a connection slot): released when dropped, so a
/// thread that panics still gives its slot back.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot if fewer than `max` are taken.
    fn try_take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
    let (tx, rx) = sync_channel(writer::QUEUE_LEN);
    let local = listener.local_addr()?;
    let wcfg = WriterConfig {
        database_url: cfg.database_url.clone(),
        spool: cfg.spool_dir.clone(),
        window: cfg.batch_window,
        max_items: cfg.batch_max,
        deadline: cfg.db_deadline,
        instance: cfg
            .instance
            .clone()
            .unwrap_or_else(|| default_instance(bind)),
        started: chrono::Utc::now(),
    };
    let mut health = Health::new(cfg.health_max_idle);
    health.late_after = cfg.db_deadline * 2;
    let health = Arc::new(health);
    let registry = Arc::new(Registry::default());
    let (h, r) = (health.clone(), registry.clone());
    let (ready, started) = channel();
    let deadline = wcfg.deadline;
    let writer_thread = std::thread::Builder::new()
        .name("listen-writer".into())
        .spawn(move || writer::run(wcfg, rx, h, r, ready))?;
    // The writer's first connection (it closes the sessions an earlier run
    // left open, and starts replaying the spool) is tried before devices
    // are told the port is open; a database that is down delays the start
    // by at most the deadline, and listen then serves and spools.
    let _ = started.recv_timeout(deadline + Duration::from_secs(1));
    bound(local);
    let cfg = Arc::new(cfg);
    let conns = AtomicU64::new(0);
    let active = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(Pending::default());
    let mut handles = Vec::new();
    while !shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                // Unauthenticated sockets wait in their own small pool; when
                // it is full the oldest gives way, so sockets that never
                // finish their handshake cannot lock devices out.
                let ticket = pending.enter(cfg.max_pending);
                let (cfg, tx, shutdown, active, health, registry) = (
                    cfg.clone(),
                    tx.clone(),
                    shutdown.clone(),
                    active.clone(),
                    health.clone(),
                    registry.clone(),
                );
                let conn = conns.fetch_add(1, Ordering::SeqCst) + 1;
                // A small stack: thousands of devices are thousands of
                // threads (their buffers are on the heap).
                let spawned = std::thread::Builder::new()
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || {
                        let deadline = Instant::now() + cfg.handshake_timeout;
                        if answer_plain_http(&stream, deadline, &ticket, &shutdown, &health) {
                            return;
                        }
                        let Some((ws, slot)) =
                            handshake(stream, peer, &cfg, &active, ticket, &shutdown, deadline)
                        else {
                            return;
                        };
                        let _slot = slot;
                        let mut c = Conn {
                            id: conn,
                            peer,
                            connected_at: None,
                            health: &health,
                            tx: &tx,
                            registry: &registry,
                            kick: None,
                            device: None,
                        };
                        connection(ws, &mut c, &cfg, &shutdown);
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => crate::log::error(
                        "listen_accept_failed",
                        None,
                        json!({"peer": peer.to_string(), "error": format!("no thread for the connection: {e}")}),
                    ),
                }
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

/// Sockets between accept and a completed handshake.
#[derive(Default)]
struct Pending {
    waiting: Mutex<VecDeque<(u64, Arc<AtomicBool>)>>,
    next: AtomicU64,
}

/// A place among the pending sockets; `evicted` is set when a newer
/// socket needs it.
struct Ticket {
    id: u64,
    evicted: Arc<AtomicBool>,
    pending: Arc<Pending>,
}

impl Pending {
    fn enter(self: &Arc<Self>, max: usize) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let evicted = Arc::new(AtomicBool::new(false));
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while w.len() >= max.max(1) {
            if let Some((_, oldest)) = w.pop_front() {
                oldest.store(true, Ordering::SeqCst);
            }
        }
        w.push_back((id, evicted.clone()));
        Ticket {
            id,
            evicted,
            pending: self.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = self
            .pending
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        w.retain(|(id, _)| *id != self.id);
    }
}

/// The WebSocket handshake by `deadline` (`cfg.handshake_timeout` after
/// accept): the path and token, then a device slot (503 when all are
/// taken).
fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &Config,
    active: &Arc<AtomicUsize>,
    ticket: Ticket,
    shutdown: &AtomicBool,
    deadline: Instant,
) -> Option<(WebSocket<TcpStream>, Slot)> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut slot = None;
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
            Some(Some(_)) => match Slot::try_take(active, cfg.max_connections) {
                Some(s) => {
                    slot = Some(s);
                    None
                }
                None => Some((503, "too many connections")),
            },
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
    // Small buffers: a frame is a few kB, and thousands of devices each
    // hold theirs.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(cfg.max_frame_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    let mut round = tungstenite::accept_hdr_with_config(stream, check, Some(ws_cfg));
    let ws = loop {
        match round {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                let why = if shutdown.load(Ordering::SeqCst) {
                    Some("shutdown")
                } else if ticket.evicted.load(Ordering::SeqCst) {
                    Some("evicted by newer connections")
                } else if Instant::now() >= deadline {
                    Some("handshake deadline")
                } else {
                    None
                };
                if let Some(why) = why {
                    crate::log::debug(
                        "listen_handshake_abandoned",
                        None,
                        json!({"peer": peer.to_string(), "reason": why}),
                    );
                    return None;
                }
                round = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                crate::log::debug(
                    "listen_handshake_failed",
                    None,
                    json!({"peer": peer.to_string(), "error": e.to_string()}),
                );
                return None;
            }
        }
    };
    drop(ticket);
    Some((ws, slot?))
}

/// Stack of a connection thread.
const CONNECTION_STACK: usize = 256 * 1024;

/// How long a connection waits for its device's stored state: longer than
/// the writer's batch window, deadline and spooling together (it gets an
/// empty answer from the writer when the database is away).
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// This listen's default name in `listen_owners`: host and the address it
/// was told to bind (the same across restarts, even for port 0).
fn default_instance(bind: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host} {bind}")
}

/// One device connection: where it came from, and since when it is
/// known as a device (its session).
struct Conn<'a> {
    id: u64,
    peer: SocketAddr,
    connected_at: Option<chrono::DateTime<chrono::Utc>>,
    health: &'a Health,
    tx: &'a SyncSender<WriteOp>,
    registry: &'a Registry,
    /// Set when a newer connection of the device replaces this one.
    kick: Option<Kick>,
    device: Option<crate::device::DeviceId>,
}

impl Conn<'_> {
    /// Why this connection must close, if it must.
    fn kicked(&self) -> Option<String> {
        self.kick
            .as_ref()
            .and_then(|k| k.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Opens the session of device `id`.
    fn open(&mut self, id: &crate::device::DeviceId) {
        // Stored to the microsecond: the close names the same row.
        let now = chrono::Utc::now();
        let at = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        self.connected_at = Some(at);
        self.health.connected(self.id, id.clone(), at);
        self.store(crate::db::listen::Item::Session(
            crate::db::listen::Session {
                device_id: id.clone(),
                connected_at: at,
                disconnected_at: None,
                reason: None,
                peer: Some(self.peer.ip().to_string()),
            },
        ));
    }

    fn store(&self, item: crate::db::listen::Item) {
        let _ = self.tx.send(WriteOp::Store {
            conn: self.id,
            item,
        });
    }

    /// Closes the session, if the device was ever identified.
    fn close(&mut self, id: Option<&str>, reason: &str) {
        self.health.disconnected(self.id);
        if let Some(d) = &self.device {
            self.registry.release(d, self.id);
        }
        let (Some(at), Some(id)) = (
            self.connected_at.take(),
            id.and_then(|i| crate::device::DeviceId::parse(i).ok()),
        ) else {
            return;
        };
        self.store(crate::db::listen::Item::Session(
            crate::db::listen::Session {
                device_id: id,
                connected_at: at,
                disconnected_at: Some(chrono::Utc::now().max(at)),
                reason: Some(reason.to_string()),
                peer: None,
            },
        ));
    }
}

fn connection(mut ws: WebSocket<TcpStream>, c: &mut Conn, cfg: &Config, shutdown: &AtomicBool) {
    let peer = c.peer;
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(500)));
    let peer_s = peer.to_string();
    crate::log::info("device_connected", None, json!({"peer": peer_s}));
    // Learn who it is and where it stands, over the socket.
    for (id, method) in [(1, "Shelly.GetDeviceInfo"), (2, "Shelly.GetStatus")] {
        let _ = ws.send(Message::text(
            json!({"jsonrpc": "2.0", "id": id, "src": "shellyctl", "method": method}).to_string(),
        ));
    }
    let settings = Settings::of(cfg);
    let mut s = Session::new();
    let mut last_rx = Instant::now();
    let mut last_ping = Instant::now();
    let reason = loop {
        if shutdown.load(Ordering::SeqCst) {
            close(&mut ws, CloseCode::Away, "server shutting down");
            break "shutdown".to_string();
        }
        if let Some(why) = c.kicked() {
            crate::log::warn(
                "device_replaced",
                s.device_id(),
                json!({"peer": peer_s, "connection": c.id, "reason": why}),
            );
            close(&mut ws, CloseCode::Policy, &why);
            break why;
        }
        let text = match ws.read() {
            Ok(Message::Text(t)) => t.as_str().to_string(),
            Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                last_rx = Instant::now();
                continue;
            }
            Ok(Message::Close(_)) => {
                // tungstenite queued the close reply: send it.
                let _ = ws.flush();
                break "closed by the device".into();
            }
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                if last_rx.elapsed() > cfg.idle_timeout {
                    close(&mut ws, CloseCode::Away, "idle");
                    break "idle timeout".into();
                }
                if last_ping.elapsed() >= cfg.ping_every && last_rx.elapsed() >= cfg.ping_every {
                    let _ = ws.send(Message::Ping(Vec::new().into()));
                    last_ping = Instant::now();
                }
                continue;
            }
            Err(tungstenite::Error::Capacity(e)) => {
                crate::log::warn(
                    "frame_too_large",
                    s.device_id(),
                    json!({"peer": peer_s, "limit": cfg.max_frame_bytes, "error": e.to_string()}),
                );
                close(&mut ws, CloseCode::Size, "frame too large");
                break "frame too large".into();
            }
            Err(e) => {
                crate::log::warn(
                    "connection_error",
                    s.device_id(),
                    json!({"peer": peer_s, "error": e.to_string()}),
                );
                break "connection error".into();
            }
        };
        last_rx = Instant::now();
        if let Err(stop) = on_text(&text, &mut s, &settings, c) {
            let (code, why) = match stop {
                Stop::Refused(why) => (CloseCode::Policy, why),
                Stop::TooManyMalformed => {
                    (CloseCode::Protocol, "too many malformed frames".to_string())
                }
            };
            close(&mut ws, code, &why);
            break why;
        }
    };
    crate::log::info(
        "device_disconnected",
        s.device_id(),
        json!({"peer": peer_s, "reason": reason}),
    );
    c.close(s.device_id(), &reason);
}

/// Feeds one text frame to the session: loads the device's stored state
/// when the frame identifies it, then queues what the frame produces.
fn on_text(text: &str, s: &mut Session, settings: &Settings, c: &mut Conn) -> Result<(), Stop> {
    let (addr, tx) = (c.peer, c.tx);
    let peer = &addr.to_string();
    let Some(frame) = s.parse(text, peer)? else {
        return Ok(());
    };
    if let Some(id) = s.newcomer(&frame, settings, peer)? {
        let (kick, replaced) = c.registry.take(&id, c.id);
        c.kick = Some(kick);
        c.device = Some(id.clone());
        if let Some(old) = replaced {
            crate::log::warn(
                "device_connected_twice",
                Some(&id),
                json!({"peer": peer, "connection": c.id, "replaces": old,
                       "action": "the older connection is closed; only this one writes"}),
            );
        }
        let (reply, states) = channel();
        let _ = tx.send(WriteOp::Claim {
            conn: c.id,
            device_id: id.clone(),
            reply,
        });
        let states = states.recv_timeout(CLAIM_WAIT).unwrap_or_default();
        crate::log::info(
            "device_identified",
            Some(&id),
            json!({"peer": peer, "channels_restored": states.len()}),
        );
        c.open(&id);
        s.identify(id, states, chrono::Utc::now().timestamp());
    }
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let ip = addr.ip().to_string();
    for out in s.on_frame(frame, now, settings)? {
        let _ = tx.send(WriteOp::of(out, c.id, &ip));
    }
    Ok(())
}

/// Answers a plain HTTP `GET /healthz` or `GET /` (one without a
/// WebSocket upgrade) before any handshake; true when it did. Only peeks
/// otherwise, so the handshake sees the request untouched.
fn answer_plain_http(
    stream: &TcpStream,
    deadline: Instant,
    ticket: &Ticket,
    shutdown: &AtomicBool,
    health: &Health,
) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    let head_len = loop {
        let n = match stream.peek(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(_) => return false,
        };
        if n >= 4 && &buf[..4] != b"GET " {
            return false;
        }
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if n == buf.len()
            || shutdown.load(Ordering::SeqCst)
            || ticket.evicted.load(Ordering::SeqCst)
            || Instant::now() >= deadline
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if !matches!(path, "/healthz" | "/") || head.contains("\r\nupgrade:") {
        return false;
    }
    let mut stream = stream;
    let _ = stream.read_exact(&mut buf[..head_len]);
    let (code, content_type, body) = if path == "/healthz" {
        let (code, body) = health.report();
        (code, "application/json", format!("{body}\n"))
    } else {
        let (code, line) = health.line();
        (code, "text/plain; charset=utf-8", format!("{line}\n"))
    };
    let reason = if code == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    true
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
    fn a_panicking_connection_gives_its_slot_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let slot = Slot::try_take(&count, 1).unwrap();
        assert!(Slot::try_take(&count, 1).is_none());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let t = std::thread::spawn(move || {
            let _slot = slot;
            panic!("a bug in a connection");
        });
        assert!(t.join().is_err());
        assert_eq!(count.load(Ordering::SeqCst), 0);
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

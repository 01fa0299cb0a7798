//! The listening side of `listen`: accepts sockets, enforces the limits,
//! checks the path and token in the WebSocket handshake, and runs one
//! thread per connection that feeds its [`Session`] and hands the
//! session's outputs to the writer.

use super::session::{Session, Settings, Stop};
use super::writer::{self, WriteOp};
use super::Config;
use serde_json::json;
use std::collections::VecDeque;
use std::io::ErrorKind;
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
    bound(listener.local_addr()?);
    let (tx, rx) = sync_channel(writer::QUEUE_LEN);
    let url = cfg.database_url.clone();
    let spool = cfg.spool_dir.clone();
    let stop = shutdown.clone();
    let writer_thread = std::thread::spawn(move || writer::run(url, rx, spool, stop));
    let cfg = Arc::new(cfg);
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
                let (cfg, tx, shutdown, active) =
                    (cfg.clone(), tx.clone(), shutdown.clone(), active.clone());
                handles.push(std::thread::spawn(move || {
                    let Some((ws, slot)) =
                        handshake(stream, peer, &cfg, &active, ticket, &shutdown)
                    else {
                        return;
                    };
                    let _slot = slot;
                    connection(ws, peer, &cfg, &tx, &shutdown);
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

/// The WebSocket handshake within `cfg.handshake_timeout`: the path and
/// token, then a device slot (503 when all are taken).
fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &Config,
    active: &Arc<AtomicUsize>,
    ticket: Ticket,
    shutdown: &AtomicBool,
) -> Option<(WebSocket<TcpStream>, Slot)> {
    let deadline = Instant::now() + cfg.handshake_timeout;
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
    let ws_cfg = WebSocketConfig::default()
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

fn connection(
    mut ws: WebSocket<TcpStream>,
    peer: SocketAddr,
    cfg: &Config,
    tx: &SyncSender<WriteOp>,
    shutdown: &AtomicBool,
) {
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(250)));
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
        let text = match ws.read() {
            Ok(Message::Text(t)) => t.as_str().to_string(),
            Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                last_rx = Instant::now();
                continue;
            }
            Ok(Message::Close(_)) => break "closed by the device".into(),
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
        if let Err(stop) = on_text(&text, &mut s, &settings, peer, tx) {
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
}

/// Feeds one text frame to the session: loads the device's stored state
/// when the frame identifies it, then queues what the frame produces.
fn on_text(
    text: &str,
    s: &mut Session,
    settings: &Settings,
    addr: SocketAddr,
    tx: &SyncSender<WriteOp>,
) -> Result<(), Stop> {
    let peer = &addr.to_string();
    let Some(frame) = s.parse(text, peer)? else {
        return Ok(());
    };
    if let Some(id) = s.newcomer(&frame, settings, peer)? {
        let (reply, states) = channel();
        let _ = tx.send(WriteOp::LoadStates {
            device_id: id.clone(),
            reply,
        });
        let states = states
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        crate::log::info(
            "device_identified",
            Some(&id),
            json!({"peer": peer, "channels_restored": states.len()}),
        );
        s.identify(id, states, chrono::Utc::now().timestamp());
    }
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let ip = addr.ip().to_string();
    for out in s.on_frame(frame, now, settings)? {
        let _ = tx.send(WriteOp::of(out, &ip));
    }
    Ok(())
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

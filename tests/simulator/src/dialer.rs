//! The simulated device dialing out to a `listen` server (outbound
//! WebSocket): NotifyFullStatus on connect, answers to requests sent over
//! the socket, and whatever frames the caller pushes.

use super::{device, SimConfig};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub struct Dialer {
    pub device_id: String,
    out: Sender<Message>,
    stop: Arc<AtomicBool>,
    /// Why the connection ended, once it has.
    pub ended: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// A `NotifyStatus` frame from `device_id` at `ts` with `params`.
pub fn notify_status(device_id: &str, ts: f64, params: Value) -> Value {
    let mut p = params;
    p["ts"] = json!(ts);
    json!({"src": device_id, "dst": "ws", "method": "NotifyStatus", "params": p})
}

impl Dialer {
    /// Connects, sends NotifyFullStatus at `now`, and serves requests.
    pub fn connect(url: &str, cfg: &SimConfig, now: i64) -> Result<Dialer, String> {
        let (mut ws, _) = tungstenite::connect(url).map_err(|e| e.to_string())?;
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        }
        let device_id = device::device_id(cfg);
        let mut full = device::status(cfg, now, 100);
        full["ts"] = json!(now as f64);
        let hello =
            json!({"src": device_id, "dst": "ws", "method": "NotifyFullStatus", "params": full});
        ws.send(Message::text(hello.to_string()))
            .map_err(|e| e.to_string())?;
        let (out, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Mutex::new(None));
        let (cfg, st, en, id) = (cfg.clone(), stop.clone(), ended.clone(), device_id.clone());
        let thread = std::thread::spawn(move || {
            let why = pump(&mut ws, &rx, &st, &cfg, &id, now);
            *en.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        });
        Ok(Dialer {
            device_id,
            out,
            stop,
            ended,
            thread: Some(thread),
        })
    }

    /// Sends a frame (JSON value).
    pub fn send(&self, frame: &Value) {
        let _ = self.out.send(Message::text(frame.to_string()));
    }

    /// Pushes a sub-minute burst: one NotifyStatus per (device time,
    /// apower) of `component` (`switch:N` or `pm1:N`), in order.
    pub fn burst(&self, component: &str, points: &[(f64, f64)]) {
        let id: i64 = component
            .split_once(':')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        for (ts, apower) in points {
            self.send(&notify_status(
                &self.device_id,
                *ts,
                json!({ component: {"id": id, "apower": apower} }),
            ));
        }
    }

    /// Sends raw text (for malformed-frame tests).
    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(Message::text(text.to_string()));
    }

    /// Why the connection ended (None while it is open).
    pub fn end_reason(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the connection and waits for the pump to finish.
    pub fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(
    ws: &mut WebSocket<MaybeTlsStream<TcpStream>>,
    rx: &Receiver<Message>,
    stop: &AtomicBool,
    cfg: &SimConfig,
    device_id: &str,
    now: i64,
) -> String {
    loop {
        if stop.load(Ordering::SeqCst) {
            let _ = ws.close(None);
            let _ = ws.flush();
            return "closed by the device".into();
        }
        while let Ok(m) = rx.try_recv() {
            if let Err(e) = ws.send(m) {
                return format!("send failed: {e}");
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let Ok(req) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                let (Some(id), Some(method)) = (
                    req.get("id").cloned(),
                    req.get("method").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let result = match method {
                    "Shelly.GetDeviceInfo" => device::device_info(cfg),
                    "Shelly.GetStatus" => device::status(cfg, now, 100),
                    _ => {
                        let e = json!({"id": id, "src": device_id, "error": {"code": 404, "message": format!("No handler for {method}")}});
                        let _ = ws.send(Message::text(e.to_string()));
                        continue;
                    }
                };
                let _ = ws.send(Message::text(
                    json!({"id": id, "src": device_id, "result": result}).to_string(),
                ));
            }
            Ok(Message::Close(frame)) => {
                return format!(
                    "closed by the server: {}",
                    frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                );
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return "connection closed".into()
            }
            Err(e) => return format!("error: {e}"),
        }
    }
}

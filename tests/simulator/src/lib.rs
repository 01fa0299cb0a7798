//! A simulated Shelly device serving the local HTTP RPC API: a 3EM-63T Gen3
//! (triphase or monophase), a Pro 3EM, or a Pro 4PM switch. It serves live
//! status, EMData/EM1Data history, optional digest auth with the firmware
//! 2.0 nonce rules, and injected faults. Tests run it in-process; users run
//! it as the `shelly-sim` binary (`src/main.rs`). It is a crate of its own so
//! that the production `shellyctl` ships no hand-written HTTP server.

pub mod auth;
pub mod device;
pub mod dialer;
pub mod history;

use auth::{AuthState, Verdict};
use history::History;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// Shelly 3EM-63T Gen3 (S3EM-003CXCEU63), three-phase meter
    #[value(name = "3em63g3")]
    Em3Gen3,
    /// Shelly Pro 3EM (SPEM-003CEBEU), three-phase meter
    #[value(name = "pro3em")]
    Pro3Em,
    /// Shelly Pro 4PM (SPSW-004PE16EU), four metered switches
    #[value(name = "pro4pm")]
    Pro4Pm,
    /// Shelly PM Mini Gen3 (S3PM-001PCEU16), one power meter `pm1:0`
    /// without an output
    #[value(name = "pmminig3")]
    PmMiniGen3,
    /// Shelly EM Gen3 (S3EM-002CXCEU), two independent channels `em1:0`,
    /// `em1:1` (with `em1data:0..1`) and an unmetered relay `switch:0`
    #[value(name = "emg3")]
    EmGen3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Triphase,
    Monophase,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Triphase => "triphase",
            Profile::Monophase => "monophase",
        }
    }
}

/// A fault the device shows instead of (or before) a normal answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answer normally after a delay.
    Latency(Duration),
    /// HTTP 500 with an empty body.
    Status500,
    /// HTTP 429 Too Many Requests.
    Throttle429,
    /// HTTP 200 with a truncated JSON body.
    Malformed,
    /// Close the connection without answering.
    Drop,
    /// Say nothing for a long time, then close.
    Hang,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        let (kind, arg) = s.split_once('=').unwrap_or((s, ""));
        Ok(match kind {
            "latency" => {
                Fault::Latency(Duration::from_millis(arg.parse().map_err(|_| {
                    format!("latency needs milliseconds, e.g. latency=200: {s}")
                })?))
            }
            "500" => Fault::Status500,
            "429" => Fault::Throttle429,
            "malformed" => Fault::Malformed,
            "drop" => Fault::Drop,
            "hang" => Fault::Hang,
            _ => {
                return Err(format!(
                    "unknown fault {kind:?} (latency=MS, 500, 429, malformed, drop, hang)"
                ))
            }
        })
    }
}

#[derive(Default)]
struct FaultState {
    /// Per-request plan, consumed first; `None` serves normally.
    script: VecDeque<Option<Fault>>,
    /// Applies to every request once the script is used up.
    sticky: Option<Fault>,
    /// Independent chances per request.
    random: Vec<(Fault, f64)>,
    rng: u64,
}

impl FaultState {
    fn next(&mut self) -> Option<Fault> {
        if let Some(f) = self.script.pop_front() {
            return f;
        }
        if self.sticky.is_some() {
            return self.sticky;
        }
        for (fault, p) in &self.random {
            self.rng = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
            if x < *p {
                return Some(*fault);
            }
        }
        None
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub kind: DeviceKind,
    pub profile: Profile,
    /// 12 hex digits.
    pub mac: String,
    /// Enables digest auth when set.
    pub password: Option<String>,
    pub nonce_ttl: Duration,
    pub nonce_slots: usize,
    /// Recording period of EMData, seconds.
    pub period_s: i64,
    pub history_days: i64,
    /// Records per GetData page.
    pub page_size: usize,
    /// Power-loss gaps as (hours before start-up, minutes long).
    pub gaps: Vec<(i64, i64)>,
    /// Vary the live values over time.
    pub wave: bool,
    /// Frozen device clock (unix seconds); `None` follows the real clock.
    pub clock: Option<i64>,
    pub seed: u64,
}

impl SimConfig {
    pub fn new(kind: DeviceKind) -> SimConfig {
        SimConfig {
            kind,
            profile: Profile::Triphase,
            mac: match kind {
                DeviceKind::Em3Gen3 => "E4B063A1B2C3".into(),
                DeviceKind::Pro3Em => "AABBCCDDEEFF".into(),
                DeviceKind::Pro4Pm => "F008D1D8B8B8".into(),
                DeviceKind::PmMiniGen3 => "8CBFEA9F2A10".into(),
                DeviceKind::EmGen3 => "DCB4D9C564F4".into(),
            },
            password: None,
            nonce_ttl: Duration::from_secs(3600),
            nonce_slots: 32,
            // 300 s as the 3EM-63 Gen3 API docs say; 60 s on the Pro 3EM.
            period_s: if kind == DeviceKind::Em3Gen3 { 300 } else { 60 },
            history_days: 7,
            page_size: 6,
            gaps: vec![(30, 47)],
            wave: false,
            clock: None,
            seed: 1,
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub challenges: AtomicU64,
    pub auth_refusals: AtomicU64,
    pub throttled: AtomicU64,
    pub faults: AtomicU64,
    pub get_data_calls: AtomicU64,
}

struct State {
    cfg: SimConfig,
    device_id: String,
    history: History,
    clock: AtomicI64,
    started: Instant,
    auth: Option<Mutex<AuthState>>,
    faults: Mutex<FaultState>,
    stats: Stats,
    stop: AtomicBool,
}

impl State {
    fn now(&self) -> i64 {
        match self.clock.load(Ordering::SeqCst) {
            0 => chrono::Utc::now().timestamp(),
            t => t,
        }
    }
}

pub struct Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds (use port 0 for a free one) and serves in background threads.
    pub fn start(bind: &str, cfg: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let device_id = device::device_id(&cfg);
        let now = cfg.clock.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let history = History {
            period: cfg.period_s,
            retention: cfg.history_days * 86_400,
            gaps: cfg
                .gaps
                .iter()
                .map(|(hours_ago, minutes)| {
                    let start = now - hours_ago * 3600;
                    (start, start + minutes * 60)
                })
                .collect(),
            seed: cfg.seed,
        };
        let auth = cfg.password.as_deref().map(|pw| {
            Mutex::new(AuthState::new(
                &device_id,
                pw,
                cfg.nonce_ttl,
                cfg.nonce_slots,
            ))
        });
        let state = Arc::new(State {
            clock: AtomicI64::new(cfg.clock.unwrap_or(0)),
            faults: Mutex::new(FaultState {
                rng: cfg.seed,
                ..FaultState::default()
            }),
            cfg,
            device_id,
            history,
            started: Instant::now(),
            auth,
            stats: Stats::default(),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let thread = std::thread::spawn(move || accept_loop(listener, st));
        Ok(Simulator {
            addr,
            state,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as shellyctl's `--host` takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn device_id(&self) -> &str {
        &self.state.device_id
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.cfg
    }

    pub fn history(&self) -> &History {
        &self.state.history
    }

    pub fn now(&self) -> i64 {
        self.state.now()
    }

    /// Freezes the device clock at `ts` (unix seconds).
    pub fn set_clock(&self, ts: i64) {
        self.state.clock.store(ts, Ordering::SeqCst);
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// The status the device would answer now.
    pub fn status(&self) -> Value {
        device::status(
            &self.state.cfg,
            self.state.now(),
            self.state.started.elapsed().as_secs() as i64,
        )
    }

    /// Plans the next requests: each entry is a fault or `None` (normal).
    pub fn script_faults(&self, plan: impl IntoIterator<Item = Option<Fault>>) {
        self.lock_faults().script.extend(plan);
    }

    /// Every request after the script shows `fault` (None: back to normal).
    pub fn set_sticky_fault(&self, fault: Option<Fault>) {
        self.lock_faults().sticky = fault;
    }

    /// Each request shows `fault` with probability `p`.
    pub fn add_random_fault(&self, fault: Fault, p: f64) {
        self.lock_faults().random.push((fault, p));
    }

    pub fn clear_faults(&self) {
        let mut f = self.lock_faults();
        f.script.clear();
        f.sticky = None;
        f.random.clear();
    }

    fn lock_faults(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the server stops (for the `shelly-sim` binary).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let st = state.clone();
        std::thread::spawn(move || {
            let _ = handle_connection(stream, &st);
        });
    }
}

struct Request {
    method: String,
    /// Path and query exactly as sent (what digest's `uri` covers).
    target: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(Request {
        path: path.to_string(),
        method,
        target,
        query,
        headers,
        body,
    }))
}

/// A query component: `+` is a space, `%XX` a byte (invalid UTF-8 is
/// replaced, never a panic).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![],
            body,
        }
    }
    fn error(status: u16, code: i64, message: &str) -> Response {
        Response::json(
            status,
            json!({"code": code, "message": message}).to_string(),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

fn write_response(mut stream: &TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: Mongoose/6.18\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(r.body.as_bytes())?;
    stream.flush()
}

fn handle_connection(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let Some(req) = read_request(&stream)? else {
        return Ok(());
    };
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    let fault = state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .next();
    if let Some(f) = fault {
        state.stats.faults.fetch_add(1, Ordering::SeqCst);
        match f {
            Fault::Latency(d) => std::thread::sleep(d),
            Fault::Status500 => {
                return write_response(&stream, &Response::json(500, String::new()))
            }
            Fault::Throttle429 => {
                return write_response(&stream, &Response::json(429, String::new()))
            }
            Fault::Malformed => {
                let r = Response::json(200, "{\"ble\":{},\"cloud\":{\"connec".into());
                return write_response(&stream, &r);
            }
            Fault::Drop => return Ok(()),
            Fault::Hang => {
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until && !state.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Ok(());
            }
        }
    }
    let response = route(&req, state);
    write_response(&stream, &response)
}

/// Methods that never need auth (the Authentication docs' exceptions).
fn is_public(method: &str) -> bool {
    method.eq_ignore_ascii_case("Shelly.GetDeviceInfo")
}

fn route(req: &Request, state: &State) -> Response {
    if req.path == "/shelly" {
        return Response::json(200, device::device_info(&state.cfg).to_string());
    }
    let (method, params, rpc_id) = if let Some(m) = req.path.strip_prefix("/rpc/") {
        let params: serde_json::Map<String, Value> = req
            .query
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_str(v).unwrap_or_else(|_| json!(v)),
                )
            })
            .collect();
        (m.to_string(), Value::Object(params), None)
    } else if req.path == "/rpc" && req.method == "POST" {
        let Ok(frame) = serde_json::from_slice::<Value>(&req.body) else {
            return Response::error(400, -103, "Invalid JSON-RPC frame");
        };
        let method = frame["method"].as_str().unwrap_or("").to_string();
        (
            method,
            frame.get("params").cloned().unwrap_or(json!({})),
            Some(frame["id"].clone()),
        )
    } else {
        return Response::error(404, 404, "Not Found");
    };

    if let Some(auth) = &state.auth {
        if !is_public(&method) {
            let (verdict, refusal) = auth.lock().unwrap_or_else(|p| p.into_inner()).check(
                &req.method,
                &req.target,
                req.headers.get("authorization").map(String::as_str),
            );
            if refusal.is_some_and(|r| r != auth::Refusal::NoCredentials) {
                state.stats.auth_refusals.fetch_add(1, Ordering::SeqCst);
            }
            match verdict {
                Verdict::Allow => {}
                Verdict::Challenge(c) => {
                    state.stats.challenges.fetch_add(1, Ordering::SeqCst);
                    return Response {
                        status: 401,
                        headers: vec![("WWW-Authenticate".into(), c)],
                        body: String::new(),
                    };
                }
                Verdict::Throttle => {
                    state.stats.throttled.fetch_add(1, Ordering::SeqCst);
                    return Response::json(429, String::new());
                }
            }
        }
    }

    let result = call(state, &method, &params);
    match (rpc_id, result) {
        (None, Ok(body)) => Response::json(200, body),
        (None, Err((status, code, msg))) => Response::error(status, code, &msg),
        (Some(id), Ok(body)) => Response::json(
            200,
            format!(
                "{{\"id\":{id},\"src\":\"{}\",\"result\":{body}}}",
                state.device_id
            ),
        ),
        (Some(id), Err((_, code, msg))) => Response::json(
            200,
            json!({"id": id, "src": state.device_id, "error": {"code": code, "message": msg}})
                .to_string(),
        ),
    }
}

type CallResult = Result<String, (u16, i64, String)>;

fn int_param(params: &Value, name: &str) -> Result<i64, (u16, i64, String)> {
    params
        .get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| (400, -103, format!("Missing required '{name}'")))
}

fn call(state: &State, method: &str, params: &Value) -> CallResult {
    let cfg = &state.cfg;
    let now = state.now();
    let status = || device::status(cfg, now, state.started.elapsed().as_secs() as i64);
    let component = |key: &str| -> CallResult {
        let id = int_param(params, "id")?;
        let s = status();
        match s.get(format!("{key}:{id}")) {
            Some(v) => Ok(v.to_string()),
            None => Err((400, -105, format!("Bad id={id}"))),
        }
    };
    match method {
        "Shelly.GetDeviceInfo" => Ok(device::device_info(cfg).to_string()),
        "Shelly.GetStatus" => Ok(status().to_string()),
        "Sys.GetStatus" => Ok(status()["sys"].to_string()),
        "EM.GetStatus" => component("em"),
        "EMData.GetStatus" => component("emdata"),
        "EM1.GetStatus" => component("em1"),
        "EM1Data.GetStatus" => component("em1data"),
        "Switch.GetStatus" => component("switch"),
        "EMData.GetRecords" | "EM1Data.GetRecords" | "EMData.GetData" | "EM1Data.GetData" => {
            history_call(state, method, params, now)
        }
        _ => Err((404, 404, format!("No handler for {method}"))),
    }
}

fn history_call(state: &State, method: &str, params: &Value, now: i64) -> CallResult {
    let cfg = &state.cfg;
    let id = int_param(params, "id")?;
    let em1 = method.starts_with("EM1Data");
    let has_component = match (cfg.kind, cfg.profile, em1) {
        (DeviceKind::Pro4Pm | DeviceKind::PmMiniGen3, _, _) => false,
        (DeviceKind::EmGen3, _, em1) => em1 && (0..2).contains(&id),
        (_, Profile::Triphase, false) => id == 0,
        (_, Profile::Monophase, true) => (0..3).contains(&id),
        _ => false,
    };
    if !has_component {
        return Err((400, -105, format!("Bad id={id}")));
    }
    let h = &state.history;
    if method.ends_with("GetRecords") {
        let from = params.get("ts").and_then(Value::as_i64).unwrap_or(0);
        let blocks: Vec<Value> = h
            .blocks(from, now)
            .iter()
            .map(|b| json!({"ts": b.ts, "period": h.period, "records": b.records}))
            .collect();
        return Ok(json!({ "data_blocks": blocks }).to_string());
    }
    state.stats.get_data_calls.fetch_add(1, Ordering::SeqCst);
    let from = int_param(params, "ts")?;
    let to = params.get("end_ts").and_then(Value::as_i64);
    let add_keys = params
        .get("add_keys")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut records = h.records(from, to, now, cfg.page_size + 1);
    let next = if records.len() > cfg.page_size {
        records.pop()
    } else {
        None
    };
    let channel = em1.then_some(id as usize);
    Ok(h.get_data_json(&records, channel, add_keys, next))
}

//! A blocking client for a Shelly Gen2+ device's local HTTP RPC.
//!
//! Every request has a timeout; failed attempts that may succeed later
//! (unreachable, timeout, 5xx, 429) are retried with backoff inside a
//! per-call time budget. Digest auth follows the firmware 2.0 rules:
//! the nonce is reused with an increasing `nc` (persisted between runs by
//! [`NonceCache`]), and a fresh challenge is taken only on 401.

use super::digest::{self, Challenge};
use super::nonce_cache::NonceCache;
use super::DeviceInfo;
use crate::exit::ExitKind;
use crate::secret::Secret;
use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a device call failed. The variant decides the exit code and whether
/// a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect: {0}")]
    Unreachable(String),
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    #[error("device is throttling requests (HTTP 429 Too Many Requests)")]
    Throttled,
    #[error("device answered HTTP {status}: {message} (code {code})")]
    Rpc {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("device answered HTTP {status}")]
    Http { status: u16 },
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The exchange broke HTTP (bad status line, oversized headers, TLS):
    /// a device or a middlebox that retrying will not fix.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// SHELLY_HOST is not a usable address.
    #[error("invalid device address: {0}")]
    BadAddress(String),
    #[error("the device answered with a redirect (HTTP {0}); redirects are not followed: point SHELLY_HOST at the device itself")]
    Redirected(u16),
}

impl Error {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Error::Unreachable(_) | Error::Timeout(_) | Error::Throttled => ExitKind::Temporary,
            Error::Rpc { status, .. } | Error::Http { status } if *status >= 500 => {
                ExitKind::Temporary
            }
            Error::Unauthorized(_) | Error::BadAddress(_) | Error::Redirected(_) => {
                ExitKind::Config
            }
            _ => ExitKind::Failure,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self.exit_kind(), ExitKind::Temporary) || matches!(self, Error::Malformed(_))
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one HTTP request (`SHELLY_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How many times a failed request is retried (`SHELLY_RETRIES`).
    pub retries: u32,
    /// Total time one call may take, retries included (`SHELLY_DEADLINE_MS`).
    pub deadline: Duration,
    pub password: Option<Secret>,
    /// Where digest nonces are kept between runs (None: memory only).
    pub state_dir: Option<PathBuf>,
    /// Largest answer accepted, in bytes.
    pub max_body: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(3000),
            retries: 2,
            deadline: Duration::from_millis(8000),
            password: None,
            state_dir: None,
            max_body: 64 << 20,
        }
    }
}

pub struct Client {
    host: String,
    base_url: String,
    agent: ureq::Agent,
    opts: ClientOptions,
    nonces: NonceCache,
}

/// One HTTP answer, before interpretation.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Firmware 2.0 throttles for a 2-second window after a 429.
const THROTTLE_WAIT: Duration = Duration::from_secs(2);

impl Client {
    pub fn new(host: &str, opts: ClientOptions) -> Client {
        let base_url = if host.starts_with("http://") || host.starts_with("https://") {
            host.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", host.trim_end_matches('/'))
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Devices are on the LAN: HTTP_PROXY/ALL_PROXY (which ureq reads
            // by default) would send their requests, and passwords, elsewhere.
            .proxy(None)
            // A device that redirects elsewhere is not followed: another
            // host's answer must never be stored as this device's.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .user_agent(concat!("shellyctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let nonces = NonceCache::new(opts.state_dir.as_deref(), host);
        Client {
            host: host.to_string(),
            base_url,
            agent,
            opts,
            nonces,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `GET /shelly`: identity, never behind auth.
    pub fn identify(&self) -> anyhow::Result<DeviceInfo> {
        self.get_json("/shelly")
            .with_context(|| format!("identifying device at {}", self.host))
    }

    /// `GET /rpc/<method>?k=v...`, parsed into `T`.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let path = rpc_path(method, params);
        self.get_json(&path)
            .with_context(|| format!("reading {method} from {}", self.host))
    }

    /// Like [`Client::call`], but returns the raw body for callers that
    /// parse large answers themselves.
    pub fn call_raw(&self, method: &str, params: &[(&str, String)]) -> anyhow::Result<String> {
        let path = rpc_path(method, params);
        self.get_with_retries(&path)
            .with_context(|| format!("reading {method} from {}", self.host))
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let body = self.get_with_retries(path)?;
        serde_json::from_str(&body).map_err(|e| Error::Malformed(e.to_string()))
    }

    fn get_with_retries(&self, path: &str) -> Result<String, Error> {
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let remaining = self.opts.deadline.saturating_sub(start.elapsed());
            let timeout = self
                .opts
                .timeout
                .min(remaining)
                .max(Duration::from_millis(1));
            let result = self.get_once(path, timeout).and_then(check_answer);
            let err = match result {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            let wait = match err {
                Error::Throttled => THROTTLE_WAIT,
                _ => BACKOFF_BASE * 2u32.saturating_pow(attempt),
            };
            let out_of_budget =
                start.elapsed() + wait + Duration::from_millis(50) >= self.opts.deadline;
            if !err.retryable() || attempt >= self.opts.retries || out_of_budget {
                return Err(err);
            }
            attempt += 1;
            crate::log::warn(
                "device_retry",
                None,
                json!({"host": self.host, "path": path_without_query(path), "attempt": attempt,
                       "error": err.to_string(), "wait_ms": wait.as_millis() as u64}),
            );
            std::thread::sleep(wait);
        }
    }

    /// One request, including the digest handshake when it is needed.
    fn get_once(&self, path: &str, timeout: Duration) -> Result<Answer, Error> {
        let Some(password) = &self.opts.password else {
            let answer = self.send(path, None, timeout)?;
            if answer.status == 401 {
                return Err(Error::Unauthorized(
                    "the device requires a password; set SHELLY_PASSWORD or SHELLY_PASSWORD_FILE"
                        .into(),
                ));
            }
            return Ok(answer);
        };
        let password = password.expose();
        // Reuse the cached nonce when there is one: no extra round trip and
        // no new nonce slot taken on the device.
        let mut used_cached = false;
        let mut answer = match self.nonces.next() {
            Some((ch, nc)) => {
                used_cached = true;
                let auth = ch.authorization(password, "GET", path, nc, &digest::cnonce());
                self.send(path, Some(&auth), timeout)?
            }
            None => self.send(path, None, timeout)?,
        };
        if answer.status != 401 {
            return Ok(answer);
        }
        // Unknown, expired (stale=true) or evicted nonce, or none sent yet:
        // answer the fresh challenge once. A 401 to that means a wrong password.
        let challenge = self.take_challenge(&answer)?;
        let nc = self.nonces.start(challenge.clone());
        let auth = challenge.authorization(password, "GET", path, nc, &digest::cnonce());
        answer = self.send(path, Some(&auth), timeout)?;
        if answer.status == 401 {
            self.nonces.clear();
            let why = if used_cached && challenge.stale {
                "the device rejected a fresh nonce right after a stale one"
            } else {
                "the device rejected the password (check SHELLY_PASSWORD)"
            };
            return Err(Error::Unauthorized(why.into()));
        }
        Ok(answer)
    }

    fn take_challenge(&self, answer: &Answer) -> Result<Challenge, Error> {
        let header = answer.challenge.as_deref().unwrap_or("");
        let ch = digest::parse_challenge(header).ok_or_else(|| {
            Error::Unauthorized(
                "the device asked for authentication without a digest challenge".into(),
            )
        })?;
        if !ch.is_sha256() {
            return Err(Error::Unauthorized(format!(
                "unsupported digest algorithm {:?} (expected SHA-256)",
                ch.algorithm
            )));
        }
        Ok(ch)
    }

    fn send(&self, path: &str, auth: Option<&str>, timeout: Duration) -> Result<Answer, Error> {
        let url = format!("{}{}", self.base_url, path);
        let mut req = self.agent.get(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let req = req.config().timeout_global(Some(timeout)).build();
        let mut resp = req.call().map_err(|e| transport_error(e, timeout))?;
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.opts.max_body)
            .read_to_string()
            .map_err(|e| transport_error(e, timeout))?;
        Ok(Answer {
            status,
            challenge,
            body,
        })
    }
}

/// Only what can pass by itself (no route, refused, reset, timed out) is
/// `Unreachable`/`Timeout` (exit 75); a broken exchange is a failure and a
/// bad address a configuration error.
fn transport_error(e: ureq::Error, timeout: Duration) -> Error {
    match e {
        ureq::Error::Timeout(_) => Error::Timeout(timeout),
        ureq::Error::BodyStalled => Error::Timeout(timeout),
        ureq::Error::BodyExceedsLimit(n) => {
            Error::Malformed(format!("answer larger than the limit of {n} bytes"))
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Error::Timeout(timeout),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Error::Protocol(io.to_string())
        }
        ureq::Error::Io(io) => Error::Unreachable(io.to_string()),
        ureq::Error::HostNotFound => Error::Unreachable("host not found".into()),
        ureq::Error::ConnectionFailed => Error::Unreachable("connection failed".into()),
        ureq::Error::BadUri(_)
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::TlsRequired
        | ureq::Error::InvalidProxyUrl => Error::BadAddress(e.to_string()),
        other => Error::Protocol(other.to_string()),
    }
}

/// Turns a non-success answer into a typed error; returns the body otherwise.
fn check_answer(a: Answer) -> Result<String, Error> {
    match a.status {
        200..=299 => match rpc_error(&a.body) {
            Some((code, message)) => Err(Error::Rpc {
                status: a.status,
                code,
                message,
            }),
            None => Ok(a.body),
        },
        429 => Err(Error::Throttled),
        status @ 300..=399 => Err(Error::Redirected(status)),
        status => match rpc_error(&a.body) {
            Some((code, message)) => Err(Error::Rpc {
                status,
                code,
                message,
            }),
            None => Err(Error::Http { status }),
        },
    }
}

/// Finds `{code,message}` or `{"error":{code,message}}` in a body. Both
/// fields must be present, so a normal result is never taken for an error.
pub fn rpc_error(body: &str) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let obj = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let code = obj.get("code")?.as_i64()?;
    let message = obj.get("message")?.as_str()?.to_string();
    if v.get("error").is_none() {
        // A bare {code,message} is an error only if that is all it holds.
        let keys = v
            .as_object()?
            .keys()
            .filter(|k| !matches!(k.as_str(), "code" | "message" | "id" | "src" | "dst"));
        if keys.count() > 0 {
            return None;
        }
    }
    Some((code, message))
}

fn rpc_path(method: &str, params: &[(&str, String)]) -> String {
    let mut p = format!("/rpc/{method}");
    for (i, (k, v)) in params.iter().enumerate() {
        p.push(if i == 0 { '?' } else { '&' });
        p.push_str(k);
        p.push('=');
        p.push_str(&encode_query_value(v));
    }
    p
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_query_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string()
}

fn path_without_query(p: &str) -> &str {
    p.split('?').next().unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_accepts_both_shapes_and_ignores_results() {
        assert_eq!(
            rpc_error(r#"{"code":-105,"message":"Bad id=7"}"#),
            Some((-105, "Bad id=7".into()))
        );
        let fixture = include_str!(
            "../../tests/fixtures/shelly/rpc-error-invalid-argument-docs-example.json"
        );
        assert_eq!(
            rpc_error(fixture),
            Some((-103, "Missing required 'id'".into()))
        );
        assert_eq!(rpc_error(r#"{"code":1,"message":"x","other":true}"#), None);
        assert_eq!(rpc_error(r#"{"a_voltage":229.0}"#), None);
        assert_eq!(rpc_error("not json"), None);
    }

    #[test]
    fn answers_map_to_errors_by_status() {
        let a = |status, body: &str| Answer {
            status,
            challenge: None,
            body: body.into(),
        };
        assert_eq!(check_answer(a(200, "{}")).unwrap(), "{}");
        assert!(matches!(check_answer(a(429, "")), Err(Error::Throttled)));
        assert!(matches!(
            check_answer(a(500, "oops")),
            Err(Error::Http { status: 500 })
        ));
        let e =
            check_answer(a(400, r#"{"code":-103,"message":"Missing required 'id'"}"#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device answered HTTP 400: Missing required 'id' (code -103)"
        );
        assert_eq!(e.exit_kind(), ExitKind::Failure);
        assert_eq!(Error::Http { status: 503 }.exit_kind(), ExitKind::Temporary);
        assert_eq!(
            Error::Unauthorized("x".into()).exit_kind(),
            ExitKind::Config
        );
    }

    #[test]
    fn rpc_paths_encode_values() {
        assert_eq!(
            rpc_path(
                "EMData.GetData",
                &[("id", "0".into()), ("ts", "1739876580".into())]
            ),
            "/rpc/EMData.GetData?id=0&ts=1739876580"
        );
        assert_eq!(
            rpc_path("X.Y", &[("name", "\"a b\"".into())]),
            "/rpc/X.Y?name=%22a%20b%22"
        );
    }

    #[test]
    fn only_passing_transport_failures_are_temporary() {
        let t = Duration::from_secs(1);
        let kind = |e: ureq::Error| transport_error(e, t).exit_kind();
        let io = |k| ureq::Error::Io(std::io::Error::from(k));
        assert_eq!(
            kind(io(std::io::ErrorKind::ConnectionRefused)),
            ExitKind::Temporary
        );
        assert_eq!(kind(io(std::io::ErrorKind::TimedOut)), ExitKind::Temporary);
        assert_eq!(kind(ureq::Error::HostNotFound), ExitKind::Temporary);
        assert_eq!(kind(ureq::Error::ConnectionFailed), ExitKind::Temporary);
        assert_eq!(kind(io(std::io::ErrorKind::InvalidData)), ExitKind::Failure);
        assert_eq!(
            kind(ureq::Error::LargeResponseHeader(1, 2)),
            ExitKind::Failure
        );
        assert_eq!(kind(ureq::Error::Tls("bad certificate")), ExitKind::Failure);
        assert_eq!(kind(ureq::Error::BadUri("x".into())), ExitKind::Config);
        assert!(!transport_error(ureq::Error::Tls("x"), t).retryable());
    }

    #[test]
    fn timeouts_read_as_durations() {
        assert_eq!(
            Error::Timeout(Duration::from_secs(3)).to_string(),
            "timed out after 3s"
        );
    }
}

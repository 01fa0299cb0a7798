//! PostgreSQL adapter: connecting, migrations, and the rows each job writes.

pub mod alerts;
pub mod ami;
pub mod devices;
pub mod energy;
pub mod health;
pub mod hours;
pub mod intervals;
pub mod jobs;
pub mod listen;
pub mod migrate;
pub mod minutes;
pub mod numeric;
pub mod partitions;
pub mod readings;
pub mod retention;
pub mod scope;
pub mod slots;
pub mod tariffs;

use crate::exit::{ConfigError, ExitKind};
use anyhow::Context;
use std::time::Duration;

pub use postgres::Client;

/// Splits libpq's `sslrootcert=PATH` off a URL (the driver does not know it).
fn split_root_cert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut cert = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(v) => {
                cert = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, cert)
}

/// TLS for `sslmode=require`: the CA from `sslrootcert=` or
/// `PGSSLROOTCERT`, else the system's roots; the server name is checked.
fn tls(root_cert: Option<String>) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert.or_else(|| {
        std::env::var("PGSSLROOTCERT")
            .ok()
            .filter(|v| !v.is_empty())
    }) {
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| ConfigError(format!("reading the database CA file {path}: {e}")))?;
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| ConfigError(format!("database CA file {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError(format!("database CA file {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(
                    ConfigError(format!("database CA file {path} holds no certificate")).into(),
                );
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Longest a statement may run unless the URL's `options` set
/// `statement_timeout` (jobs that may legitimately run longer, `migrate`
/// and `retention --vacuum`, lift it for their statements).
pub const STATEMENT_TIMEOUT: &str = "5min";

/// Session defaults that keep a timer job from hanging forever on a dead
/// server or a half-open connection: a statement timeout and TCP
/// keepalives (a silent peer is given up after about a minute). Settings
/// the URL makes itself are kept.
fn guard_session(config: &mut postgres::Config) {
    let options = config.get_options().unwrap_or("").to_string();
    if !options.contains("statement_timeout") {
        let set = format!("-c statement_timeout={STATEMENT_TIMEOUT}");
        config.options(format!("{options} {set}").trim());
    }
    config.keepalives(true);
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        // The driver's default: two hours, far longer than any job.
        config.keepalives_idle(Duration::from_secs(30));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        // Unacknowledged writes (keepalives do not cover them).
        config.tcp_user_timeout(Duration::from_secs(60));
    }
}

/// The database did not answer within the deadline (exit 75: it passes by
/// itself, or the next run spools and says so again).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets this process's database deadline (`DATABASE_TIMEOUT`).
pub fn set_timeout(d: Duration) {
    let _ = TIMEOUT.set(d);
}

/// This process's database deadline (5 s unless set).
pub fn timeout() -> Duration {
    TIMEOUT.get().copied().unwrap_or(Duration::from_secs(5))
}

/// Runs `on_expire` and ends the process with exit 75 unless the guard it
/// returns is dropped within `deadline`: for work on a database that may
/// stop answering with its connection still up (the driver has no read
/// deadline). `what` names the work in the log line.
#[must_use = "the deadline holds while the guard lives"]
pub fn deadline(
    what: &str,
    deadline: Duration,
    on_expire: impl FnOnce() + Send + 'static,
) -> DeadlineGuard {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let what = what.to_string();
    let _ = std::thread::Builder::new()
        .name("db-deadline".into())
        .spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                crate::log::error(
                    "database_deadline",
                    None,
                    serde_json::json!({"what": what, "deadline_s": deadline.as_secs_f64(),
                                       "error": "the database did not answer in time", "exit": 75}),
                );
                on_expire();
                std::process::exit(i32::from(ExitKind::Temporary.code()));
            }
        });
    DeadlineGuard(Some(tx))
}

/// Disarms its deadline when dropped.
pub struct DeadlineGuard(Option<std::sync::mpsc::Sender<()>>);

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Checks that a database URL can be parsed (a configuration error before
/// any side effect, for a service that starts without its database).
pub fn check_url(url: &str) -> Result<(), ConfigError> {
    let (url, _) = split_root_cert(url);
    url.parse::<postgres::Config>()
        .map(|_| ())
        .map_err(|e| ConfigError(format!("invalid database URL: {e}")))
}

/// Connects with a connect timeout (5 s unless the URL sets one), a
/// statement timeout and TCP keepalives. With `sslmode=require` the
/// connection uses TLS with certificate and host name checks. Errors never
/// repeat the URL, which may hold a password.
pub fn connect(url: &str) -> anyhow::Result<Client> {
    let (url, root_cert) = split_root_cert(url);
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| ConfigError(format!("invalid database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout());
    }
    if config.get_application_name().is_none() {
        config.application_name("shellyctl");
    }
    guard_session(&mut config);
    // The driver's connect timeout covers the TCP connect only; a server
    // that accepts and then says nothing would hold the job forever.
    let tls = (config.get_ssl_mode() == postgres::config::SslMode::Require)
        .then(|| tls(root_cert))
        .transpose()?;
    let limit = timeout();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("db-connect".into())
        .spawn(move || {
            let r = match tls {
                Some(t) => config.connect(t).context("connecting to PostgreSQL (TLS)"),
                None => config
                    .connect(postgres::NoTls)
                    .context("connecting to PostgreSQL"),
            };
            let _ = tx.send(r);
        })
        .context("starting the database connection")?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(anyhow::Error::new(Unavailable(format!(
            "connecting to PostgreSQL: no answer within {} (DATABASE_TIMEOUT)",
            humantime::format_duration(limit)
        )))),
    }
}

/// A database error as one line: the server's own message and SQLSTATE
/// when it sent one (the driver's Display says only "db error").
pub fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

/// What to tell the user about a database error, beyond its message.
pub fn hint(e: &postgres::Error) -> Option<&'static str> {
    match e.code().map(|s| s.code()) {
        // undefined table / column: the schema is missing or older than
        // this binary.
        Some("42P01" | "42703") => {
            Some("the database schema is missing or out of date: run `shellyctl migrate`")
        }
        // undefined function: one of the schema's own (partition upkeep).
        Some("42883")
            if e.as_db_error()
                .is_some_and(|d| d.message().contains("shellyctl_")) =>
        {
            Some("the database schema is missing or out of date: run `shellyctl migrate`")
        }
        _ => None,
    }
}

/// Database errors: the server's SQLSTATE says whether retrying can help;
/// without one, the kind of client-side failure does. Only an unreachable,
/// closed or timed-out server is temporary: TLS and authentication
/// failures, a missing schema and protocol errors need a human.
pub fn exit_kind(e: &postgres::Error) -> ExitKind {
    match e.code() {
        None => client_side_kind(e),
        Some(state) => {
            let code = state.code();
            if code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // admin shutdown, cannot connect now
                || code == "57014" // query canceled (statement timeout)
                || code == "40001" // serialization failure
                || code == "40P01"
            // deadlock
            {
                ExitKind::Temporary
            } else if code.starts_with("28") // invalid authorization
                || code == "3D000" // database does not exist
                || code == "42501" // insufficient privilege
                || hint(e).is_some()
            {
                ExitKind::Config
            } else {
                ExitKind::Failure
            }
        }
    }
}

/// The driver names its error kinds only in their messages (the kind
/// itself is private); the cause follows as the error's source.
fn client_side_kind(e: &postgres::Error) -> ExitKind {
    match e.to_string().as_str() {
        "error connecting to server"
        | "error communicating with the server"
        | "connection closed"
        | "timeout waiting for server" => ExitKind::Temporary,
        "error performing TLS handshake" => {
            // A connection cut during the handshake may pass; a refused
            // certificate, a server without TLS or a bad name will not.
            let io_kind = std::error::Error::source(e)
                .and_then(|c| c.downcast_ref::<std::io::Error>())
                .map(|io| io.kind());
            match io_kind {
                Some(
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::TimedOut,
                ) => ExitKind::Temporary,
                _ => ExitKind::Config,
            }
        }
        "authentication error" | "invalid configuration" | "invalid connection string" => {
            ExitKind::Config
        }
        _ => ExitKind::Failure, // unexpected message, parse errors, conversions
    }
}

/// Unix seconds as a UTC timestamp for query parameters.
pub fn utc(t: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// The advisory lock key for a name ("intervals/<device>", ...).
pub fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("shellyctl/{name}").as_bytes());
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Takes a session-level advisory lock if it is free.
pub fn try_lock(client: &mut Client, name: &str) -> Result<bool, postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])?
        .get(0))
}

/// Waits up to `wait` for a session-level advisory lock.
pub fn lock_within(
    client: &mut Client,
    name: &str,
    wait: Duration,
) -> Result<bool, postgres::Error> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if try_lock(client, name)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn unlock(client: &mut Client, name: &str) -> Result<(), postgres::Error> {
    client.execute("SELECT pg_advisory_unlock($1)", &[&lock_key(name)])?;
    Ok(())
}

/// The largest energy sum a report accepts from the database, in Wh (a
/// petawatt-hour: no meter comes near it, and sums of such values cannot
/// overflow a Decimal).
const MAX_STORED_WH: i64 = 1_000_000_000_000_000;

/// A NUMERIC energy value of a report row as a Decimal. A value no meter
/// can produce (stored before the edge checks, or by hand) is an error
/// that says where it is and how to find it, never a panic or a wrong sum.
pub fn stored_energy(
    row: &postgres::Row,
    idx: usize,
    where_: impl FnOnce() -> String,
) -> anyhow::Result<rust_decimal::Decimal> {
    // NULL is a zero sum; a value that does not convert is too large.
    plausible_energy(
        row.try_get::<_, Option<rust_decimal::Decimal>>(idx)
            .ok()
            .map(Option::unwrap_or_default),
        where_,
    )
}

/// A stored energy value (`None`: one too large to convert) within
/// `MAX_STORED_WH`, or the error that says where and how to find it.
pub fn plausible_energy(
    v: Option<rust_decimal::Decimal>,
    where_: impl FnOnce() -> String,
) -> anyhow::Result<rust_decimal::Decimal> {
    match v {
        Some(v) if v.abs() <= rust_decimal::Decimal::from(MAX_STORED_WH) => Ok(v),
        _ => anyhow::bail!(
            "an implausible energy value is stored for {}: beyond {MAX_STORED_WH} Wh; find it with \
             `SELECT * FROM energy_intervals WHERE abs(energy_wh) > 1e7 OR abs(returned_energy_wh) > 1e7` \
             (after deleting it, `shellyctl slots rebuild` for that day)",
            where_()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn sessions_get_a_statement_timeout_and_keepalives() {
        let mut c: postgres::Config = "postgres://u@h/db".parse().unwrap();
        super::guard_session(&mut c);
        assert_eq!(c.get_options(), Some("-c statement_timeout=5min"));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(c.get_keepalives_retries(), Some(3));

        // What the URL says wins.
        let mut c: postgres::Config =
            "postgres://u@h/db?options=-c%20statement_timeout%3D0%20-c%20work_mem%3D64MB&keepalives_idle=300"
                .parse()
                .unwrap();
        super::guard_session(&mut c);
        assert_eq!(
            c.get_options(),
            Some("-c statement_timeout=0 -c work_mem=64MB")
        );
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(300));
        let mut c: postgres::Config = "postgres://u@h/db?options=-c%20work_mem%3D64MB"
            .parse()
            .unwrap();
        super::guard_session(&mut c);
        assert_eq!(
            c.get_options(),
            Some("-c work_mem=64MB -c statement_timeout=5min")
        );
    }

    #[test]
    fn sslrootcert_is_taken_off_the_url() {
        let (u, c) = super::split_root_cert(
            "postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem&connect_timeout=3",
        );
        assert_eq!(u, "postgres://h/db?sslmode=require&connect_timeout=3");
        assert_eq!(c.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            super::split_root_cert("postgres://h/db").0,
            "postgres://h/db"
        );
    }
}

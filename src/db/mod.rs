//! PostgreSQL adapter: connecting, migrations, and the rows each job writes.

pub mod alerts;
pub mod energy;
pub mod intervals;
pub mod jobs;
pub mod migrate;
pub mod readings;
pub mod tariffs;

use crate::exit::{ConfigError, ExitKind};
use anyhow::Context;
use std::time::Duration;

pub use postgres::Client;

/// Connects with a connect timeout (5 s unless the URL sets one). Errors
/// never repeat the URL, which may hold a password.
pub fn connect(url: &str) -> anyhow::Result<Client> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| ConfigError(format!("invalid database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("shellyctl");
    }
    config
        .connect(postgres::NoTls)
        .context("connecting to PostgreSQL")
}

/// Database errors: the server's SQLSTATE says whether retrying can help.
pub fn exit_kind(e: &postgres::Error) -> ExitKind {
    match e.code() {
        None => ExitKind::Temporary, // connection refused, closed, timed out
        Some(state) => {
            let code = state.code();
            if code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // admin shutdown, cannot connect now
                || code == "40001" // serialization failure
                || code == "40P01"
            // deadlock
            {
                ExitKind::Temporary
            } else if code.starts_with("28") || code == "3D000" {
                // invalid authorization, database does not exist
                ExitKind::Config
            } else {
                ExitKind::Failure
            }
        }
    }
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

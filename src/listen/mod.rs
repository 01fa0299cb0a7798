//! `shellyctl listen`: a WebSocket endpoint for devices that dial out
//! (`Ws.SetConfig {enable, server}`) and push NotifyFullStatus /
//! NotifyStatus frames.
//!
//! Four parts: the [`server`] (accept, limits, handshake, token; a thread
//! per connection), a pure [`session`] per connection (frames → merged
//! status → minute rows and meter readings), the [`registry`] (one
//! connection per device), and the [`writer`] (group commits with a
//! deadline; the spool when the database is away).

pub mod frames;
pub mod health;
pub mod registry;
pub mod server;
pub mod session;
pub mod writer;

use crate::secret::Secret;
use rust_decimal::Decimal;
use std::time::Duration;

pub use server::serve;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: String,
    pub token: Secret,
    /// Device ids allowed to connect (empty: any with the token).
    pub allow: Vec<String>,
    /// Devices connected at once (after their handshake).
    pub max_connections: usize,
    /// Sockets still in their handshake; the oldest gives way to a newer one.
    pub max_pending: usize,
    /// A socket that has not completed its handshake by then is closed.
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub ping_every: Duration,
    pub threshold_w: Decimal,
    /// Channel ids of switch and pm1 components to log (None: all).
    pub channels: Option<Vec<i32>>,
    /// At most one power_readings row per device this often (meters).
    pub meter_every_s: i64,
    pub max_fill_minutes: i64,
    pub database_url: String,
    /// Where writes go while the database is unreachable.
    pub spool_dir: Option<std::path::PathBuf>,
    /// `GET /healthz` fails when no device has been connected this long.
    pub health_max_idle: Duration,
    /// Longest wait for more writes before a batch is committed.
    pub batch_window: Duration,
    /// Most writes in one batch.
    pub batch_max: usize,
    /// Longest a database call may take before the database counts as down.
    pub db_deadline: Duration,
    /// This listen's name among several (default: host:port).
    pub instance: Option<String>,
}

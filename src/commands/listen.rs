//! `shellyctl listen`: the long-running WebSocket endpoint for devices
//! that dial out. Stops cleanly on SIGTERM/SIGINT.

use crate::exit::{ConfigError, ExitKind};
use crate::listen::{serve, Config};
use crate::settings::GlobalArgs;
use clap::Args;
use rust_decimal::Decimal;
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address to listen on. Devices connect to ws://ADDR/PATH/TOKEN; put a
    /// TLS reverse proxy in front for wss:// (see README).
    #[arg(long, env = "LISTEN_BIND", default_value = "0.0.0.0:8765")]
    pub bind: String,
    /// URL path of the endpoint.
    #[arg(long, env = "LISTEN_PATH", default_value = "/ws")]
    pub path: String,
    /// Device ids allowed to connect (comma-separated; default: any with the token).
    #[arg(
        long = "allow-device",
        env = "LISTEN_ALLOW_DEVICES",
        value_delimiter = ','
    )]
    pub allow: Vec<String>,
    /// Channel ids of switch:N and pm1:N components to log (comma-separated;
    /// default: all metered ones).
    #[arg(long, env = "LISTEN_CHANNELS", value_delimiter = ',')]
    pub channels: Vec<i32>,
    /// Log a switch channel's minute only while apower is above this (W).
    #[arg(long, env = "POWER_THRESHOLD_W", default_value = "5")]
    pub threshold_w: String,
    #[arg(long, env = "LISTEN_MAX_CONNECTIONS", default_value_t = 100)]
    pub max_connections: usize,
    /// Sockets still in their WebSocket handshake (not counted against
    /// LISTEN_MAX_CONNECTIONS); when full, the oldest is closed.
    #[arg(long, env = "LISTEN_MAX_PENDING", default_value_t = 16)]
    pub max_pending: usize,
    /// Close a socket that has not completed its handshake by then.
    #[arg(long, env = "LISTEN_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Largest accepted frame or message, in bytes.
    #[arg(long, env = "LISTEN_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,
    /// Close a connection silent for this long (devices push every minute).
    #[arg(long, env = "LISTEN_IDLE_TIMEOUT", default_value = "3m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Ping a connection quiet for this long.
    #[arg(long, env = "LISTEN_PING_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_every: Duration,
    /// At most one power_readings row per meter this often, in seconds.
    #[arg(long, env = "LISTEN_METER_EVERY_SECONDS", default_value_t = 10)]
    pub meter_every: i64,
    /// Where writes go while the database is unreachable (replayed when it
    /// is back). Default: $STATE_DIRECTORY/spool.
    #[arg(long, env = "SHELLYCTL_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Fill at most this many minutes with held values after a silence.
    #[arg(long, env = "LISTEN_MAX_FILL_MINUTES", default_value_t = 60)]
    pub max_fill_minutes: i64,
    /// GET /healthz on the listen port answers 503 when no device has been
    /// connected for longer than this (and whenever the database is down).
    #[arg(long, env = "LISTEN_HEALTH_MAX_IDLE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub health_max_idle: Duration,
    /// Writes are committed in batches: at most this long after the first
    /// one waiting (the most a SIGKILL or a power cut can lose), 5ms to 1s.
    #[arg(long, env = "LISTEN_BATCH_WINDOW", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub batch_window: Duration,
    /// Most writes (frames' outputs) in one batch.
    #[arg(long, env = "LISTEN_BATCH_MAX", default_value_t = 20_000)]
    pub batch_max: usize,
    /// A database call (connect or batch) that takes longer counts as the
    /// database being down: the batch is spooled and the database tried
    /// again every 2 s. 1s to 60s.
    #[arg(long, env = "LISTEN_DB_DEADLINE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_deadline: Duration,
    /// This listen's name when several serve one database (behind a
    /// proxy); a restarted listen closes only its own sessions left open.
    /// Default: host name and port.
    #[arg(long, env = "LISTEN_INSTANCE")]
    pub instance: Option<String>,
}

/// This process's soft limit of open files (from /proc: no syscall the
/// unit's filter forbids).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn run(global: &GlobalArgs, args: &ListenArgs) -> anyhow::Result<ExitKind> {
    let token = crate::secret::from_env("LISTEN_TOKEN", "listen-token")?.ok_or_else(|| {
        ConfigError("LISTEN_TOKEN is not set: devices must present a shared token (set LISTEN_TOKEN or LISTEN_TOKEN_FILE)".into())
    })?;
    if token.expose().len() < 16 {
        return Err(ConfigError("LISTEN_TOKEN must be at least 16 characters".into()).into());
    }
    let threshold_w: Decimal = args.threshold_w.trim().parse().map_err(|_| {
        ConfigError(format!(
            "POWER_THRESHOLD_W must be a number, not {:?}",
            args.threshold_w
        ))
    })?;
    if !(Duration::from_millis(5)..=Duration::from_secs(1)).contains(&args.batch_window) {
        return Err(ConfigError(format!(
            "LISTEN_BATCH_WINDOW must be between 5ms and 1s, not {}",
            humantime::format_duration(args.batch_window)
        ))
        .into());
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&args.db_deadline) {
        return Err(ConfigError(format!(
            "LISTEN_DB_DEADLINE must be between 1s and 60s, not {}",
            humantime::format_duration(args.db_deadline)
        ))
        .into());
    }
    if let Some(i) = &args.instance {
        if i.is_empty() || i.len() > 200 || i.chars().any(char::is_control) {
            return Err(ConfigError(
                "LISTEN_INSTANCE must be 1 to 200 printable characters".into(),
            )
            .into());
        }
    }
    if !args.path.starts_with('/') {
        return Err(ConfigError(format!("--path must start with /, got {:?}", args.path)).into());
    }
    let cfg = Config {
        path: args.path.trim_end_matches('/').to_string(),
        token,
        allow: args
            .allow
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        max_connections: args.max_connections.max(1),
        max_pending: args.max_pending.max(1),
        handshake_timeout: args.handshake_timeout,
        max_frame_bytes: args.max_frame_bytes.max(1024),
        idle_timeout: args.idle_timeout,
        ping_every: args.ping_every,
        threshold_w,
        channels: (!args.channels.is_empty()).then(|| args.channels.clone()),
        meter_every_s: args.meter_every.max(0),
        max_fill_minutes: args.max_fill_minutes.max(0),
        database_url: global.database_url()?,
        spool_dir: crate::spool::dir(args.spool_dir.as_deref()),
        health_max_idle: args.health_max_idle,
        batch_window: args.batch_window,
        batch_max: args.batch_max.clamp(1, 1_000_000),
        db_deadline: args.db_deadline,
        instance: args.instance.clone(),
    };
    // A URL that cannot work is a configuration error now; a database that
    // is down is not: listen starts, accepts devices and spools until it
    // is back (sessions an earlier run left open are closed then).
    crate::db::check_url(&cfg.database_url)?;
    if let Some(limit) = open_files_limit() {
        // A socket per device, plus the database, spool and log.
        let need = cfg.max_connections as u64 + cfg.max_pending as u64 + 64;
        if limit < need {
            crate::log::warn(
                "listen_open_files_limit",
                None,
                json!({"limit": limit, "max_connections": cfg.max_connections,
                       "hint": format!("raise the open-files limit to at least {need} (LimitNOFILE= in the unit, ulimit -n by hand), or lower LISTEN_MAX_CONNECTIONS: devices beyond it are refused")}),
            );
        }
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, shutdown.clone())?;
    }
    serve(&args.bind, cfg, shutdown, |addr| {
        crate::log::info("listening", None, json!({"addr": addr.to_string()}));
        // The address for whoever started it (tests, scripts); a closed
        // stdout is no reason to stop serving.
        let _ = crate::output::write_stdout(format!("{addr}\n").as_bytes());
    })?;
    crate::log::info("listen_stopped", None, json!({}));
    Ok(ExitKind::Success)
}

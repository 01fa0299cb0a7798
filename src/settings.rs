//! Settings shared by several commands: global options and the option
//! groups for reaching devices, resolved into validated values (a client's
//! options, a usable state directory) before any work starts. Depends on
//! no command.

use crate::exit::ConfigError;
use crate::log::LogFormat;
use crate::output::Format;
use crate::shelly::ClientOptions;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Settings file(s) in systemd's EnvironmentFile= syntax (the file the
    /// timers read), loaded before anything else; repeat for a device
    /// group's file after the shared one (later files win). Without it:
    /// the file named by SHELLYCTL_ENV_FILE (empty: none), else
    /// /etc/shellyctl/shellyctl.env when it exists and is readable, with
    /// the secrets in the credentials/ directory beside it. So a hand run
    /// sees the settings its timer sees. A variable already set in the
    /// environment, and a flag, win over the file.
    #[arg(long = "env-file", global = true, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// PostgreSQL URL, e.g. postgres://shellyctl@localhost/shellyctl. Prefer the
    /// environment variable (or DATABASE_URL_FILE): arguments are visible in `ps`.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Output format of the data printed on stdout. Unless set here or by
    /// SHELLYCTL_FORMAT, a scheduled job (snapshot, ingest-intervals,
    /// backfill, evaluate-alerts, notify, retention) whose stdout is not a
    /// terminal (a systemd journal, cron, a pipe) prints one `summary` line
    /// instead of a table.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "SHELLYCTL_FORMAT"
    )]
    pub format: Format,

    /// Write Prometheus metrics of this run to this file (or, for a
    /// directory, to shellyctl_<job>.prom in it), for node_exporter's
    /// textfile collector. Written atomically; counters continue across runs.
    #[arg(long, global = true, env = "SHELLYCTL_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,

    /// Format of the log lines on stderr (level via SHELLYCTL_LOG=debug|info|warn|error).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "json",
        env = "SHELLYCTL_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Longest wait for the database to answer a connection (and, for
    /// `snapshot`, to store a device's readings) before the run counts it as
    /// unavailable: it spools what it has and exits 75. A frozen server
    /// (TCP up, nothing answered) is given up after this, not after the
    /// kernel's keepalives. 1s to 5m.
    #[arg(long, global = true, env = "DATABASE_TIMEOUT", default_value = "5s", value_parser = parse_db_timeout)]
    pub db_timeout: std::time::Duration,

    /// Treat this unix time as now (tests; every command that depends on
    /// the clock reads it from here).
    #[arg(long, global = true, hide = true)]
    pub now: Option<i64>,
}

fn parse_db_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(300)).contains(&d) {
        return Err(format!("must be between 1s and 5m, not {s}"));
    }
    Ok(d)
}

impl GlobalArgs {
    /// Now, in unix seconds: `--now` when given, else the clock.
    pub fn now(&self) -> i64 {
        self.now.unwrap_or_else(|| chrono::Utc::now().timestamp())
    }

    /// The database URL from `--database-url`, `DATABASE_URL` or the file
    /// named by `DATABASE_URL_FILE`; its absence is a configuration error.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        if let Some(u) = self.database_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(u.to_string());
        }
        match crate::secret::from_env("DATABASE_URL", "database-url")? {
            Some(s) => Ok(s.expose().to_string()),
            None => Err(ConfigError(
                "no database configured: pass --database-url or set DATABASE_URL (or DATABASE_URL_FILE)"
                    .into(),
            )),
        }
    }
}

/// Which devices to talk to, and how.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device address (host, host:port or http://...). Repeat the option or
    /// give a comma-separated list for several devices.
    #[arg(
        long = "host",
        env = "SHELLY_HOST",
        value_delimiter = ',',
        required = true
    )]
    pub hosts: Vec<String>,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// How to reach devices. The password is never an argument: it comes from
/// SHELLY_PASSWORD, SHELLY_PASSWORD_FILE or the systemd credential
/// `shelly-password`.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Timeout of each HTTP request to a device, in milliseconds.
    #[arg(long, env = "SHELLY_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Retries of a failed request (unreachable, timeout, HTTP 5xx, 429).
    #[arg(long, env = "SHELLY_RETRIES", default_value_t = 2)]
    pub retries: u32,

    /// Time budget of one device call including retries, in milliseconds.
    #[arg(long, env = "SHELLY_DEADLINE_MS", default_value_t = 8000, value_parser = clap::value_parser!(u64).range(1..))]
    pub deadline_ms: u64,

    /// Directory for state kept between runs (digest nonces). Default:
    /// $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/shellyctl, else
    /// ~/.local/state/shellyctl.
    #[arg(long, env = "SHELLYCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl ConnArgs {
    pub fn client_options(&self) -> Result<ClientOptions, ConfigError> {
        let password = crate::secret::from_env("SHELLY_PASSWORD", "shelly-password")?;
        let state_dir = self.state_dir.clone().or_else(default_state_dir);
        // With a password, the state directory keeps the digest nonces: a
        // directory that cannot be written would make every run ask for a
        // fresh challenge until the device throttles (429) and readings are
        // lost. An explicit one is a configuration error; the default one a
        // warning that names it.
        if let (Some(_), Some(dir)) = (&password, &state_dir) {
            if let Err(e) = check_writable(dir) {
                let what = format!(
                    "the state directory {} is not usable ({e}); digest nonces cannot be kept between runs",
                    dir.display()
                );
                if self.state_dir.is_some() {
                    return Err(ConfigError(format!("{what}: fix its permissions or choose another with --state-dir / SHELLYCTL_STATE_DIR")));
                }
                crate::log::warn(
                    "state_dir_unusable",
                    None,
                    serde_json::json!({"path": dir.display().to_string(), "error": e.to_string(),
                                       "detail": "set SHELLYCTL_STATE_DIR (or StateDirectory= under systemd)"}),
                );
            }
        }
        Ok(ClientOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            deadline: Duration::from_millis(self.deadline_ms.max(self.timeout_ms)),
            password,
            state_dir,
            ..ClientOptions::default()
        })
    }
}

impl DeviceArgs {
    pub fn client_options(&self) -> Result<ClientOptions, ConfigError> {
        self.conn.client_options()
    }

    pub fn hosts(&self) -> Vec<String> {
        clean_hosts(&self.hosts)
    }
}

/// Device addresses as given (`SHELLY_HOST=a, b,,c`): trimmed, empty ones
/// and repeats dropped.
pub fn clean_hosts(hosts: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.dedup();
    hosts
}

/// Creates `dir` if needed and proves a file can be written in it.
fn check_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

pub fn default_state_dir() -> Option<PathBuf> {
    let env_dir = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env_dir("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return Some(PathBuf::from(first));
    }
    if let Some(d) = env_dir("XDG_STATE_HOME") {
        return Some(d.join("shellyctl"));
    }
    env_dir("HOME").map(|h| h.join(".local/state/shellyctl"))
}

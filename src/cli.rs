//! Command-line options (clap derive), resolved into validated settings
//! before any work starts.

use crate::exit::{self, ConfigError};
use crate::log::LogFormat;
use crate::output::Format;
use crate::shelly::ClientOptions;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "shellyctl",
    version,
    about = "Collect power and interval energy from Shelly meters into PostgreSQL",
    long_about = "Collect power and interval energy from Shelly meters (3EM-63T Gen3, Pro 3EM) and \
                  switches (Pro 4PM, Plus 1PM, ...) into PostgreSQL. Each subcommand is a short \
                  job meant for a systemd timer or cron; all state lives in the database.",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
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

    /// Treat this unix time as now (tests; every command that depends on
    /// the clock reads it from here).
    #[arg(long, global = true, hide = true)]
    pub now: Option<i64>,
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the SQL migrations embedded in this binary (safe to re-run).
    Migrate(MigrateArgs),
    /// Read live power from each device (Shelly.GetStatus) into the database.
    Snapshot(SnapshotArgs),
    /// Pull the meters' stored interval energy (EMData/EM1Data) from each
    /// device's cursor into energy_intervals; idempotent and restartable.
    IngestIntervals(crate::commands::ingest::IngestArgs),
    /// Re-request past local days from the devices to fill gaps.
    Backfill(crate::commands::backfill::BackfillArgs),
    /// Evaluate the high-usage rules on recent readings; record and deliver
    /// episodes (ALERT_* settings).
    EvaluateAlerts(crate::commands::alerts::AlertArgs),
    /// Deliver pending alert notifications to HomeKit via Homebridge
    /// (webhook, MQTT or UI API); `--test` sends one pulse.
    Notify(crate::commands::notify::NotifyArgs),
    /// Serve a WebSocket endpoint for devices that dial out (long-running);
    /// logs every minute a switch or pm1 channel was active into power_logs,
    /// active periods and connection sessions, and meters into
    /// power_readings; GET /healthz and GET / on the same port.
    Listen(crate::commands::listen::ListenArgs),
    /// Manage tariffs: import, list, show, dynamic prices, examples.
    Tariff(crate::commands::tariff::TariffArgs),
    /// Devices and their roles (grid connection, sub-meter, PV).
    Device(crate::commands::device::DeviceArgs),
    /// Reports: costs per tariff zone, energy per day/hour, gaps, activity
    /// of pushed channels.
    Report(crate::commands::report::ReportArgs),
    /// Keep raw power_readings for N days, one-minute aggregates for longer.
    Retention(crate::commands::retention::RetentionArgs),
    /// Check data freshness, job runs and pushed devices' connections;
    /// exits 1 when something is stale.
    Health(crate::commands::health::HealthArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Run a simulated Shelly device, to try shellyctl without hardware.
    Simulate(crate::commands::simulate::SimulateArgs),
}

impl Cli {
    /// Parses the arguments and settles the output format: a scheduled job
    /// left at the default format logs one summary line when its stdout is
    /// not a terminal, so a timer's journal gets a line per run, not a table.
    pub fn try_parse_resolved(stdout_is_terminal: bool) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let format_given = !matches!(
            format_source(&matches),
            None | Some(clap::parser::ValueSource::DefaultValue)
        );
        if !format_given && !stdout_is_terminal && cli.command.job_name().is_some() {
            cli.global.format = Format::Summary;
        }
        Ok(cli)
    }
}

/// Where `--format` came from; a global option is recorded on the deepest
/// subcommand that was used.
fn format_source(m: &clap::ArgMatches) -> Option<clap::parser::ValueSource> {
    match m.subcommand() {
        Some((_, sub)) => format_source(sub).or_else(|| m.value_source("format")),
        None => m.value_source("format"),
    }
}

impl Command {
    /// The job name for job tracking and metrics (scheduled commands only).
    pub fn job_name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Snapshot(_) => "snapshot",
            Command::IngestIntervals(_) => "ingest-intervals",
            Command::Backfill(_) => "backfill",
            Command::EvaluateAlerts(_) => "evaluate-alerts",
            Command::Notify(a) if !a.test => "notify",
            Command::Retention(_) => "retention",
            _ => return None,
        })
    }

    /// Jobs that record their runs per device themselves.
    pub fn records_per_device(&self) -> bool {
        matches!(
            self,
            Command::Snapshot(_) | Command::IngestIntervals(_) | Command::Backfill(_)
        )
    }
}

#[derive(Args, Debug)]
pub struct MigrateArgs {}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub device: DeviceArgs,

    /// Read the devices and print what would be written, without a database.
    #[arg(long)]
    pub dry_run: bool,

    /// Take this many snapshots, one every --every (for cron, whose finest
    /// step is a minute: `--repeat 6 --every 10s`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub repeat: u32,

    /// Where readings go when the database is unreachable (replayed by the
    /// next run that reaches it). Default: $STATE_DIRECTORY/spool, else the
    /// state directory's spool/.
    #[arg(long, env = "SHELLYCTL_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Spacing of repeated snapshots.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub every: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hosts_split_on_commas_and_repeat() {
        let cli = Cli::try_parse_from([
            "shellyctl",
            "snapshot",
            "--host",
            "10.0.0.5,10.0.0.6",
            "--host",
            "10.0.0.7",
        ])
        .unwrap();
        let Command::Snapshot(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.device.hosts(), vec!["10.0.0.5", "10.0.0.6", "10.0.0.7"]);
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("75  temporary failure"));
        assert!(help.contains("78  configuration"));
    }
}

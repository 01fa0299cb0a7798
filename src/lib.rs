//! shellyctl: collect power and interval energy from Shelly devices into
//! PostgreSQL. The binary is a thin wrapper around [`main_entry`].

pub mod activity;
pub mod alert_rule;
pub mod ami;
pub mod billing;
pub mod cli;
pub mod commands;
pub mod csvrows;
pub mod db;
pub mod decimal;
pub mod device;
pub mod envfile;
pub mod exit;
pub mod failure;
pub mod gaps;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod minute_log;
pub mod notify;
pub mod output;
pub mod pgtext;
pub mod secret;
pub mod settings;
pub mod shelly;
pub mod spool;
pub mod sync;
pub mod tariff;
pub mod timerange;

use std::io::Write as _;
use std::process::ExitCode;

/// Parses arguments, runs the subcommand and maps the outcome to an exit
/// code. Errors end as one `error: ...` line on stderr.
pub fn main_entry() -> ExitCode {
    use std::io::IsTerminal;
    // The settings file first: clap takes option defaults from the
    // environment it fills.
    let settings = match load_settings_file() {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            return exit::ExitKind::Config.into();
        }
    };
    let cli = match cli::Cli::try_parse_resolved(std::io::stdout().is_terminal()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    log::init(cli.global.log_format);
    settings.log();
    envfile::record(settings.summary());
    db::set_timeout(cli.global.db_timeout);
    let started = std::time::Instant::now();
    let result = cli::dispatch(&cli);
    let (kind, error) = match &result {
        Ok(kind) => (*kind, None),
        // Whoever read stdout stopped (`| head`): their choice, not a
        // failure; the one place this is checked, as ripgrep does.
        Err(e) if output::is_broken_pipe(e) => (exit::ExitKind::Success, None),
        Err(e) => (failure::classify(e), Some(failure::describe(e))),
    };
    if let Some(e) = &error {
        let _ = writeln!(std::io::stderr(), "error: {e}");
    }
    if let Some(job) = cli.command.job_name() {
        after_job(&cli, job, kind, error.as_deref(), started.elapsed());
    }
    kind.into()
}

/// Records a scheduled job's run (for `health`) and writes its metrics.
fn after_job(
    cli: &cli::Cli,
    job: &str,
    kind: exit::ExitKind,
    error: Option<&str>,
    took: std::time::Duration,
) {
    if !cli.command.records_per_device() {
        if let Ok(url) = cli.global.database_url() {
            if let Ok(mut c) = db::connect(&url) {
                let error = error.map(str::to_string).or_else(|| {
                    (kind != exit::ExitKind::Success).then(|| format!("exit code {}", kind.code()))
                });
                db::jobs::record(&mut c, job, "", error.as_deref());
            }
        }
    }
    if let Some(path) = &cli.global.metrics_file {
        if let Err(e) = metrics::write(
            path,
            job,
            kind == exit::ExitKind::Success,
            kind.code(),
            took.as_secs_f64(),
        ) {
            log::warn(
                "metrics_not_written",
                None,
                serde_json::json!({"path": path.display().to_string(), "error": e.to_string()}),
            );
        }
    }
}

/// What reading the settings file did, logged once logging is set up.
enum SettingsFile {
    Loaded(envfile::Loaded),
    /// The default file exists but this user cannot read it.
    DefaultUnreadable(envfile::Unreadable),
    None,
}

impl SettingsFile {
    fn summary(&self) -> envfile::Summary {
        match self {
            SettingsFile::Loaded(l) => envfile::Summary {
                loaded: l.clone(),
                default_unreadable: None,
            },
            SettingsFile::DefaultUnreadable(e) => envfile::Summary {
                default_unreadable: Some(e.to_string()),
                ..Default::default()
            },
            SettingsFile::None => envfile::Summary::default(),
        }
    }

    fn log(&self) {
        match self {
            SettingsFile::Loaded(l) => {
                for (file, line, why) in &l.skipped {
                    log::warn(
                        "settings_line_ignored",
                        None,
                        serde_json::json!({"file": file.display().to_string(), "line": line, "why": why}),
                    );
                }
                if let Some(dir) = &l.credentials_unreadable {
                    log::warn(
                        "credentials_not_read",
                        None,
                        serde_json::json!({"directory": dir.display().to_string(),
                            "why": "this user cannot read it: secrets there are not set (run as root, as the timers do)"}),
                    );
                }
                log::debug(
                    "settings_file_read",
                    None,
                    serde_json::json!({
                        "files": l.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                        "set": l.set, "kept_from_environment": l.kept_from_environment,
                        "credentials_directory": l.credentials_directory.as_ref().map(|d| d.display().to_string()),
                    }),
                );
            }
            // Said to a person at a terminal; a unit (whose EnvironmentFile=
            // lines are its settings) or a script is not told every run.
            SettingsFile::DefaultUnreadable(e) => {
                use std::io::IsTerminal;
                let fields = serde_json::json!({"error": e.to_string()});
                if std::io::stderr().is_terminal() {
                    log::warn("settings_file_not_read", None, fields)
                } else {
                    log::debug("settings_file_not_read", None, fields)
                }
            }
            SettingsFile::None => {}
        }
    }
}

/// Reads the settings file(s) into the environment (`envfile`): the ones
/// named by `--env-file` or `SHELLYCTL_ENV_FILE` must be readable (exit 78
/// naming the file); the default one is read when it can be.
fn load_settings_file() -> Result<SettingsFile, envfile::Unreadable> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let source = envfile::source(
        envfile::flags_in(&args),
        std::env::var_os("SHELLYCTL_ENV_FILE"),
        std::path::Path::new(envfile::DEFAULT_PATH),
    );
    match envfile::load(&source.paths()) {
        Ok(l) if l.files.is_empty() => Ok(SettingsFile::None),
        Ok(l) => Ok(SettingsFile::Loaded(l)),
        Err(e) if matches!(source, envfile::Source::Default(_)) => {
            Ok(SettingsFile::DefaultUnreadable(e))
        }
        Err(e) => Err(e),
    }
}

//! shellyctl: collect power and interval energy from Shelly devices into
//! PostgreSQL. The binary is a thin wrapper around [`main_entry`].

pub mod activity;
pub mod alert_rule;
pub mod cli;
pub mod commands;
pub mod db;
pub mod decimal;
pub mod device;
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

use std::process::ExitCode;

/// Parses arguments, runs the subcommand and maps the outcome to an exit
/// code. Errors end as one `error: ...` line on stderr.
pub fn main_entry() -> ExitCode {
    use std::io::IsTerminal;
    let cli = match cli::Cli::try_parse_resolved(std::io::stdout().is_terminal()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    log::init(cli.global.log_format);
    db::set_timeout(cli.global.db_timeout);
    let started = std::time::Instant::now();
    let result = cli::dispatch(&cli);
    let (kind, error) = match &result {
        Ok(kind) => (*kind, None),
        Err(e) => (failure::classify(e), Some(failure::describe(e))),
    };
    if let Some(e) = &error {
        eprintln!("error: {e}");
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

//! The command line: the subcommands (clap derive) and their dispatch.
//! Option groups shared by several commands live in `settings`, so the
//! commands never import this module.

use crate::exit::{self, ExitKind};
use crate::output::Format;
use clap::{Args, Parser, Subcommand};

pub use crate::settings::GlobalArgs;

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the SQL migrations embedded in this binary (safe to re-run).
    Migrate(MigrateArgs),
    /// Read live power from each device (Shelly.GetStatus) into the database.
    Snapshot(crate::commands::snapshot::SnapshotArgs),
    /// Pull the meters' stored interval energy (EMData/EM1Data) from each
    /// device's cursor into energy_intervals; idempotent and restartable.
    IngestIntervals(crate::commands::ingest::IngestArgs),
    /// Re-request past local days from the devices to fill gaps.
    Backfill(crate::commands::backfill::BackfillArgs),
    /// Evaluate the high-usage rules on recent readings; record and deliver
    /// episodes (ALERT_* settings).
    EvaluateAlerts(Box<crate::commands::alerts::AlertArgs>),
    /// Deliver pending alert notifications to HomeKit via Homebridge
    /// (webhook, MQTT or UI API); `--test` sends one pulse.
    Notify(Box<crate::commands::notify::NotifyArgs>),
    /// Serve a WebSocket endpoint for devices that dial out (long-running);
    /// logs every minute a switch or pm1 channel was active into power_logs,
    /// active periods and connection sessions, and meters into
    /// power_readings; GET /healthz and GET / on the same port.
    Listen(crate::commands::listen::ListenArgs),
    /// Manage tariffs: import, list, show, dynamic prices, examples.
    Tariff(crate::commands::tariff::TariffArgs),
    /// The distribution operator's hourly meter data: import the portal's
    /// exports (Tauron eLicznik CSV, or a plain CSV).
    Ami(crate::commands::ami::AmiArgs),
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
    /// The 15-minute energy slots and their hourly day rows that long
    /// reports read: rebuild a range from the interval records, or check
    /// that they equal the records.
    Slots(crate::commands::slots::SlotsArgs),
    /// The one-minute aggregates of live readings (written with each
    /// reading): rebuild a range from the raw readings (after another tool
    /// wrote some), or check that they equal the raw readings.
    Minutes(crate::commands::slots::SlotsArgs),
    /// The first-run check after editing the settings: reads the settings
    /// the units get and checks each configured thing once (database,
    /// schema, devices, notification backend, tariff, timers), writing
    /// nothing; each line ✔ or ✘ with the fix. Exit 0 only when every
    /// configured check passes.
    Doctor(Box<crate::commands::doctor::DoctorArgs>),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
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

/// Whether the command can print CSV (the reports that offer it).
fn offers_csv(command: &Command) -> bool {
    use crate::commands::report::ReportCommand;
    matches!(
        command,
        Command::Report(r) if matches!(
            r.command,
            ReportCommand::Costs(_) | ReportCommand::Energy(_) | ReportCommand::Reconcile(_)
        )
    )
}

/// Runs the subcommand. Settings every command shares are checked first,
/// so a wrong one never comes after a stored row or a sent pulse.
pub fn dispatch(cli: &Cli) -> anyhow::Result<ExitKind> {
    use crate::commands::*;
    if cli.global.format == Format::Csv && !offers_csv(&cli.command) {
        return Err(crate::exit::UsageError(
            "--format csv is offered by report costs, report energy and report reconcile only; use table or json"
                .into(),
        )
        .into());
    }
    match &cli.command {
        Command::Migrate(_) => migrate::run(&cli.global),
        Command::Snapshot(args) => snapshot::run(&cli.global, args),
        Command::IngestIntervals(args) => ingest::run(&cli.global, args),
        Command::Backfill(args) => backfill::run(&cli.global, args),
        Command::Report(args) => report::run(&cli.global, args),
        Command::EvaluateAlerts(args) => alerts::run(&cli.global, args),
        Command::Notify(args) => notify::run(&cli.global, args),
        Command::Tariff(args) => tariff::run(&cli.global, args),
        Command::Device(args) => device::run(&cli.global, args),
        Command::Ami(args) => ami::run(&cli.global, args),
        Command::Listen(args) => listen::run(&cli.global, args),
        Command::Retention(args) => retention::run(&cli.global, args),
        Command::Health(args) => health::run(&cli.global, args),
        Command::Doctor(args) => doctor::run(&cli.global, args),
        Command::Slots(args) => slots::run(&cli.global, args),
        Command::Minutes(args) => slots::run_minutes(&cli.global, args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "shellyctl", &mut text);
            crate::output::write_stdout(&text)?;
            Ok(ExitKind::Success)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut text)?;
            crate::output::write_stdout(&text)?;
            Ok(ExitKind::Success)
        }
    }
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

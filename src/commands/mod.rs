//! One module per subcommand; each has one entry function that orchestrates.

pub mod activity;
pub mod alerts;
pub mod backfill;
pub mod costs;
pub mod device;
pub mod energy;
pub mod health;
pub mod ingest;
pub mod listen;
pub mod migrate;
pub mod notify;
pub mod report;
pub mod retention;
pub mod simulate;
pub mod snapshot;
pub mod tariff;

use crate::cli::{Cli, Command};
use crate::exit::ExitKind;

pub fn dispatch(cli: &Cli) -> anyhow::Result<ExitKind> {
    match &cli.command {
        Command::Migrate(_) => migrate::run(&cli.global),
        Command::Snapshot(args) => snapshot::run(&cli.global, args),
        Command::Simulate(args) => simulate::run(args),
        Command::IngestIntervals(args) => ingest::run(&cli.global, args),
        Command::Backfill(args) => backfill::run(&cli.global, args),
        Command::Report(args) => report::run(&cli.global, args),
        Command::EvaluateAlerts(args) => alerts::run(&cli.global, args),
        Command::Notify(args) => notify::run(&cli.global, args),
        Command::Tariff(args) => tariff::run(&cli.global, args),
        Command::Device(args) => device::run(&cli.global, args),
        Command::Listen(args) => listen::run(&cli.global, args),
        Command::Retention(args) => retention::run(&cli.global, args),
        Command::Health(args) => health::run(&cli.global, args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "shellyctl", &mut std::io::stdout());
            Ok(ExitKind::Success)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitKind::Success)
        }
    }
}

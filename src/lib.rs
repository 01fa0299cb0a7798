//! shellyctl: collect power and interval energy from Shelly devices into
//! PostgreSQL. The binary is a thin wrapper around [`main_entry`].

pub mod alert_rule;
pub mod cli;
pub mod commands;
pub mod db;
pub mod decimal;
pub mod exit;
pub mod gaps;
pub mod listen;
pub mod log;
pub mod minute_log;
pub mod notify;
pub mod output;
pub mod secret;
pub mod shelly;
pub mod simulator;
pub mod tariff;
pub mod timerange;

use clap::Parser;
use std::process::ExitCode;

/// Parses arguments, runs the subcommand and maps the outcome to an exit
/// code. Errors end as one `error: ...` line on stderr.
pub fn main_entry() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    log::init(cli.global.log_format);
    match commands::dispatch(&cli) {
        Ok(kind) => kind.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::classify(&e).into()
        }
    }
}

//! `shellyctl ami import`: the distribution operator's hourly meter data
//! (the portal's exports, `crate::ami`) into `ami_readings`, idempotent: the
//! same file twice changes nothing, a corrected file replaces the hours it
//! covers and says how many changed. Every file is read and checked before
//! anything is written; then all of them go in one transaction.

use crate::ami::{self, Format};
use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AmiArgs {
    #[command(subcommand)]
    pub command: AmiCommand,
}

#[derive(Subcommand, Debug)]
pub enum AmiCommand {
    /// Import hourly data exported from the DSO's portal (Tauron eLicznik
    /// CSV, or start,import_kwh,export_kwh[,balanced_import_kwh,balanced_export_kwh]).
    Import {
        /// The export files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The point of delivery (PPE / meter number) the files are of.
        #[arg(long)]
        pod: String,
        /// The files' format (recognised from the header by default).
        #[arg(long = "file-format", value_enum, default_value = "auto")]
        file_format: Format,
        /// The zone of the local hours in the file (Tauron's labels).
        #[arg(long, default_value = "Europe/Warsaw")]
        tz: String,
    },
}

#[derive(Serialize, Default)]
struct ImportReport {
    pod: String,
    files: usize,
    hours: usize,
    inserted: u64,
    changed: u64,
    unchanged: u64,
    first_hour: Option<chrono::DateTime<chrono::Utc>>,
    last_hour: Option<chrono::DateTime<chrono::Utc>>,
    /// Each file's text encoding (UTF-8, UTF-16LE/BE, windows-1250).
    encodings: Vec<&'static str>,
}

impl Report for ImportReport {
    fn table(&self) -> String {
        format!(
            "{}: {} hours from {} file(s): {} new, {} changed, {} unchanged ({} – {})\n",
            output::printable(&self.pod),
            self.hours,
            self.files,
            self.inserted,
            self.changed,
            self.unchanged,
            self.first_hour.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.last_hour.map(|t| t.to_rfc3339()).unwrap_or_default(),
        )
    }
}

pub fn run(global: &GlobalArgs, args: &AmiArgs) -> anyhow::Result<ExitKind> {
    let AmiCommand::Import {
        files,
        pod,
        file_format,
        tz,
    } = &args.command;
    if !ami::valid_pod(pod) {
        return Err(ConfigError(format!(
            "--pod {:?}: 1 to 64 letters, digits, '.', '-' or '_'",
            output::printable(pod)
        ))
        .into());
    }
    let zone: chrono_tz::Tz = tz
        .parse()
        .map_err(|_| ConfigError(format!("--tz {tz:?} is not an IANA time zone")))?;
    let url = global.database_url()?;
    // Every file read and checked before anything is written.
    let mut parsed = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        let (text, encoding) =
            ami::decode(&bytes).map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        let hours = ami::parse(&text, *file_format, zone, Some(pod))
            .map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        let sha = crate::shelly::digest::sha256_hex(&text);
        parsed.push((hours, sha, encoding));
    }
    let mut c = db::connect(&url)?;
    let mut tx = c.transaction()?;
    let mut report = ImportReport {
        pod: pod.clone(),
        files: files.len(),
        encodings: parsed.iter().map(|p| p.2).collect(),
        ..Default::default()
    };
    for (hours, sha, _) in &parsed {
        let (inserted, changed) = db::ami::upsert(&mut tx, pod, hours, sha)?;
        report.hours += hours.len();
        report.inserted += inserted;
        report.changed += changed;
        report.unchanged += hours.len() as u64 - inserted - changed;
        for h in hours {
            let t = db::utc(h.start);
            report.first_hour = Some(report.first_hour.map_or(t, |f| f.min(t)));
            report.last_hour = Some(report.last_hour.map_or(t, |l| l.max(t)));
        }
    }
    tx.commit()?;
    crate::log::info(
        "ami_imported",
        None,
        serde_json::json!({"pod": pod, "hours": report.hours, "inserted": report.inserted, "changed": report.changed}),
    );
    output::print(global.format, &report)?;
    Ok(ExitKind::Success)
}

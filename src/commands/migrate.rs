//! `shellyctl migrate`

use crate::db;
use crate::exit::ExitKind;
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use serde::Serialize;
use tabled::Tabled;

#[derive(Serialize)]
struct MigrateReport {
    applied: Vec<db::migrate::Migration>,
    already_applied: usize,
    /// Monthly partitions made ahead of time (this month and the next few).
    partitions_created: i32,
}

#[derive(Tabled)]
struct Row {
    version: i32,
    name: &'static str,
    checksum: String,
}

impl Report for MigrateReport {
    fn table(&self) -> String {
        if self.applied.is_empty() {
            return format!(
                "schema is up to date ({} migrations already applied)\n",
                self.already_applied
            );
        }
        let rows = self.applied.iter().map(|m| Row {
            version: m.version,
            name: m.name,
            checksum: m.checksum[..12].to_string(),
        });
        format!(
            "{}applied {} migration(s); {} were already applied\n",
            output::table(rows),
            self.applied.len(),
            self.already_applied
        )
    }
}

pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitKind> {
    let mut client = db::connect(&global.database_url()?)?;
    // A migration rewriting a large table, or waiting for a concurrent
    // migrate's lock, may take longer than the jobs' statement timeout.
    client.batch_execute("SET statement_timeout = 0")?;
    let outcome = db::migrate::run(&mut client)?;
    let partitions_created =
        db::minutes::ensure_ahead_and_aggregate(&mut client, db::utc(global.now()))?;
    output::print(
        global.format,
        &MigrateReport {
            applied: outcome.applied,
            already_applied: outcome.already_applied,
            partitions_created,
        },
    )?;
    Ok(ExitKind::Success)
}

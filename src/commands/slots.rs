//! `shellyctl slots rebuild|check`: the 15-minute energy slots that long
//! reports read, recomputed from or compared with the interval records.
//! Ingest keeps them in step by itself; these are for records edited by
//! hand, restored from a dump, or written by another tool.

use crate::db::{self, slots};
use crate::exit::ExitKind;
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::timerange::{DayRange, DeviceFilter};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct SlotsArgs {
    #[command(subcommand)]
    pub command: SlotsCommand,
}

#[derive(Subcommand, Debug)]
pub enum SlotsCommand {
    /// Recompute the slots of a range (default: everything) from the
    /// records, in one transaction.
    Rebuild(Scope),
    /// Compare the stored slots with the records; exits 1 on any
    /// difference and lists the first ones.
    Check {
        #[command(flatten)]
        scope: Scope,
        /// Differences to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

#[derive(Args, Debug)]
pub struct Scope {
    /// Local days to cover; without --day/--from every slot.
    #[command(flatten)]
    pub days: DayRange,
    #[command(flatten)]
    pub devices: DeviceFilter,
}

impl Scope {
    fn resolve(&self) -> anyhow::Result<slots::Scope> {
        let (from, to) = if self.days.day.is_some() || self.days.from.is_some() {
            let (_, f, t) = self.days.resolve()?;
            (Some(db::utc(f)), Some(db::utc(t)))
        } else {
            (None, None)
        };
        Ok(slots::Scope {
            from,
            to,
            devices: self.devices.devices.clone(),
        })
    }
}

#[derive(Serialize)]
struct RebuildReport {
    #[serde(flatten)]
    rebuilt: slots::Rebuilt,
}

impl Report for RebuildReport {
    fn table(&self) -> String {
        format!(
            "rebuilt energy slots: {} removed, {} written from the records\n",
            self.rebuilt.slots_deleted, self.rebuilt.slots_written
        )
    }
}

#[derive(Serialize)]
struct CheckReport {
    #[serde(flatten)]
    checked: slots::Checked,
}

impl Report for CheckReport {
    fn table(&self) -> String {
        let c = &self.checked;
        if c.mismatches == 0 {
            return format!("{} energy slots equal their records\n", c.slots_compared);
        }
        let show = |v: &Option<(rust_decimal::Decimal, rust_decimal::Decimal, i64)>| match v {
            Some((i, e, s)) => format!("import {i} Wh, export {e} Wh, {s} s covered"),
            None => "none".into(),
        };
        let mut out = format!(
            "{} of {} energy slots differ from their records (run `shellyctl slots rebuild` for the range):\n",
            c.mismatches, c.slots_compared
        );
        for m in &c.examples {
            out.push_str(&format!(
                "  {} {} {}: stored {}; records {}\n",
                crate::output::printable(&m.device_id),
                m.slot_start.to_rfc3339(),
                crate::output::printable(&m.channel),
                show(&m.stored),
                show(&m.expected)
            ));
        }
        out
    }
}

pub fn run(global: &GlobalArgs, args: &SlotsArgs) -> anyhow::Result<ExitKind> {
    let scope = match &args.command {
        SlotsCommand::Rebuild(s) | SlotsCommand::Check { scope: s, .. } => s.resolve()?,
    };
    let mut c = db::connect(&global.database_url()?)?;
    c.batch_execute("SET statement_timeout = 0")?;
    match &args.command {
        SlotsCommand::Rebuild(_) => {
            let rebuilt = slots::rebuild(&mut c, &scope)?;
            output::print(global.format, &RebuildReport { rebuilt })?;
            Ok(ExitKind::Success)
        }
        SlotsCommand::Check { limit, .. } => {
            let checked = slots::check(&mut c, &scope, (*limit).max(0))?;
            let bad = checked.mismatches > 0;
            output::print(global.format, &CheckReport { checked })?;
            Ok(if bad {
                ExitKind::Failure
            } else {
                ExitKind::Success
            })
        }
    }
}

//! `shellyctl slots rebuild|check`: the 15-minute energy slots that long
//! reports read, recomputed from or compared with the interval records,
//! and the hourly day rows (`energy_hours`) with the slots.
//! `shellyctl minutes rebuild|check`: the same for the one-minute
//! aggregates of live readings. Writers keep both in step by themselves;
//! these are for rows edited by hand, restored from a dump, or written by
//! another tool.

use crate::db::{self, minutes, slots};
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
    /// Recompute a range (default: everything) from the records or raw
    /// readings, in one transaction. Minutes whose raw readings retention
    /// has dropped keep their aggregates.
    Rebuild(Scope),
    /// Compare what is stored with the records or raw readings; exits 1 on
    /// any difference and lists the first ones.
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
    /// Local days to cover; without --day/--from everything.
    #[command(flatten)]
    pub days: DayRange,
    #[command(flatten)]
    pub devices: DeviceFilter,
}

impl Scope {
    fn resolve(&self) -> anyhow::Result<crate::db::scope::Scope> {
        let (from, to) = if self.days.day.is_some() || self.days.from.is_some() {
            let (_, f, t) = self.days.resolve()?;
            (Some(db::utc(f)), Some(db::utc(t)))
        } else {
            (None, None)
        };
        Ok(crate::db::scope::Scope {
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
        let mut s = format!(
            "rebuilt energy slots: {} removed, {} written from the records ({} day rows of hourly sums)\n",
            self.rebuilt.slots_deleted, self.rebuilt.slots_written, self.rebuilt.hour_rows_written
        );
        if self.rebuilt.foreign_writes_cleared > 0 {
            s.push_str(&format!(
                "cleared {} note(s) of other writers' statements: reports read the slots again\n",
                self.rebuilt.foreign_writes_cleared
            ));
        }
        s
    }
}

#[derive(Serialize)]
struct CheckReport {
    #[serde(flatten)]
    checked: slots::Checked,
    /// Statements of other writers not yet followed by a whole rebuild.
    foreign_writes: i64,
}

impl Report for CheckReport {
    fn table(&self) -> String {
        let c = &self.checked;
        let foreign = if self.foreign_writes > 0 {
            format!(
                "{} statement(s) of other writers changed energy_intervals since the last whole \
                 rebuild: reports refuse until `shellyctl slots rebuild`\n",
                self.foreign_writes
            )
        } else {
            String::new()
        };
        let mut hours = if c.hour_mismatches == 0 {
            format!(
                "{} day rows of hourly sums equal their slots\n",
                c.hour_rows_compared
            )
        } else {
            format!(
                "{} of {} day rows of hourly sums (energy_hours) differ from their slots \
                 (run `shellyctl slots rebuild` for the range):\n",
                c.hour_mismatches, c.hour_rows_compared
            )
        };
        for m in &c.hour_examples {
            hours.push_str(&format!(
                "  {} {} {}: {}\n",
                crate::output::printable(&m.device_id),
                m.day,
                crate::output::printable(&m.channel),
                match (m.stored, m.expected) {
                    (true, true) => "stored sums differ",
                    (true, false) => "stored, but the day has no slots",
                    _ => "missing",
                }
            ));
        }
        if c.mismatches == 0 {
            return format!(
                "{} energy slots equal their records\n{hours}{foreign}",
                c.slots_compared
            );
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
        out.push_str(&hours);
        out.push_str(&foreign);
        out
    }
}

pub fn run(global: &GlobalArgs, args: &SlotsArgs) -> anyhow::Result<ExitKind> {
    run_with(
        global,
        args,
        |c, s| {
            Ok(RebuildReport {
                rebuilt: slots::rebuild(c, s)?,
            })
        },
        |c, s, limit| {
            let checked = slots::check(c, s, limit)?;
            let foreign_writes = slots::foreign_writes(c)?.map_or(0, |(n, _)| n);
            Ok((
                checked.mismatches == 0 && checked.hour_mismatches == 0,
                CheckReport {
                    checked,
                    foreign_writes,
                },
            ))
        },
    )
}

/// Resolves the scope (before connecting), then rebuilds or checks.
fn run_with<R: Report, C: Report>(
    global: &GlobalArgs,
    args: &SlotsArgs,
    rebuild: impl FnOnce(&mut postgres::Client, &crate::db::scope::Scope) -> anyhow::Result<R>,
    check: impl FnOnce(
        &mut postgres::Client,
        &crate::db::scope::Scope,
        i64,
    ) -> Result<(bool, C), postgres::Error>,
) -> anyhow::Result<ExitKind> {
    let scope = match &args.command {
        SlotsCommand::Rebuild(s) | SlotsCommand::Check { scope: s, .. } => s.resolve()?,
    };
    let mut c = db::connect(&global.database_url()?)?;
    c.batch_execute("SET statement_timeout = 0")?;
    match &args.command {
        SlotsCommand::Rebuild(_) => {
            output::print(global.format, &rebuild(&mut c, &scope)?)?;
            Ok(ExitKind::Success)
        }
        SlotsCommand::Check { limit, .. } => {
            let (ok, report) = check(&mut c, &scope, (*limit).max(0))?;
            output::print(global.format, &report)?;
            Ok(if ok {
                ExitKind::Success
            } else {
                ExitKind::Failure
            })
        }
    }
}

#[derive(Serialize)]
struct MinutesRebuildReport {
    #[serde(flatten)]
    rebuilt: minutes::Rebuilt,
}

impl Report for MinutesRebuildReport {
    fn table(&self) -> String {
        format!(
            "rebuilt one-minute aggregates: {} written from the raw readings, {} kept (they count readings retention has dropped)\n",
            self.rebuilt.minutes_written, self.rebuilt.minutes_kept
        )
    }
}

#[derive(Serialize)]
struct MinutesCheckReport {
    #[serde(flatten)]
    checked: minutes::Checked,
}

impl Report for MinutesCheckReport {
    fn table(&self) -> String {
        let c = &self.checked;
        if c.mismatches == 0 {
            return format!(
                "{} minutes of raw readings equal their aggregates\n",
                c.minutes_compared
            );
        }
        let mut out = format!(
            "{} of {} minutes differ from their raw readings (run `shellyctl minutes rebuild` for the range):\n",
            c.mismatches, c.minutes_compared
        );
        for m in &c.examples {
            out.push_str(&format!(
                "  {} {}: aggregate {}; {} raw readings\n",
                crate::output::printable(&m.device_id),
                m.minute.to_rfc3339(),
                m.stored_readings
                    .map(|n| format!("of {n} readings (values differ or count)"))
                    .unwrap_or_else(|| "missing".into()),
                m.raw_readings
            ));
        }
        out
    }
}

pub fn run_minutes(global: &GlobalArgs, args: &SlotsArgs) -> anyhow::Result<ExitKind> {
    run_with(
        global,
        args,
        |c, s| {
            Ok(MinutesRebuildReport {
                rebuilt: minutes::rebuild(c, s)?,
            })
        },
        |c, s, limit| {
            let checked = minutes::check(c, s, limit)?;
            Ok((checked.mismatches == 0, MinutesCheckReport { checked }))
        },
    )
}

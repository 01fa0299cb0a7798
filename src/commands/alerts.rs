//! `shellyctl evaluate-alerts`: evaluate the high-usage rules for every
//! device with recent readings, record episodes, then deliver them.

use crate::alert_rule::{
    evaluate, next_memory, parse_schedule, Column, Decision, RuleConfig, State,
};
use crate::db::{self, alerts};
use crate::exit::{ConfigError, ExitKind};
use crate::notify::delivery::{deliver_pending, DeliveryReport, NotifyOptions};
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use crate::timerange::Zone;
use clap::Args;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use tabled::Tabled;

/// Settings come from the environment (one EnvironmentFile for all jobs);
/// a flag of the same meaning overrides. Invalid values are configuration
/// errors (exit 78), not usage errors.
#[derive(Args, Debug)]
pub struct AlertArgs {
    /// Total power threshold in watts (required).
    #[arg(long, env = "ALERT_POWER_W")]
    pub power_w: Option<String>,
    /// How long power must stay above the threshold, in seconds.
    #[arg(long, env = "ALERT_SUSTAIN_SECONDS", default_value = "120")]
    pub sustain_seconds: String,
    /// No new notification within this many seconds of the last one.
    #[arg(long, env = "ALERT_COOLDOWN_SECONDS", default_value = "900")]
    pub cooldown_seconds: String,
    /// Re-arm only below this power (default: 90% of the threshold in force).
    #[arg(long, env = "ALERT_CLEAR_POWER_W")]
    pub clear_power_w: Option<String>,
    /// ... for at least this many seconds.
    #[arg(long, env = "ALERT_CLEAR_SECONDS", default_value = "60")]
    pub clear_seconds: String,
    /// Longest gap between readings still counted as continuous, in seconds.
    #[arg(long, env = "ALERT_MAX_GAP_SECONDS", default_value = "30")]
    pub max_gap_seconds: String,
    /// Time-of-day thresholds, e.g. "22:00-06:00=3000;12:00-14:00=6000".
    #[arg(long, env = "ALERT_SCHEDULE")]
    pub schedule: Option<String>,
    /// Time zone of the schedule (IANA name). Default: TZ, else the system zone.
    #[arg(long, env = "ALERT_TZ")]
    pub tz: Option<String>,
    /// Per-phase current limit in amperes (e.g. the fuse rating, 25).
    #[arg(long, env = "ALERT_PHASE_CURRENT_A")]
    pub phase_current_a: Option<String>,
    /// Which power the ALERT_POWER_W rule watches: `total` (the device
    /// total, default) or one channel: `em1:0`..`em1:2` (independent
    /// circuits of an EM Gen3, Pro EM or a 3EM in the monophase profile,
    /// which have no device total) or the phases `a`, `b`, `c`.
    #[arg(long, env = "ALERT_CHANNEL", default_value = "total")]
    pub channel: String,
    #[command(flatten)]
    pub filter: crate::timerange::DeviceFilter,
    /// Record events but leave delivery to `shellyctl notify`.
    #[arg(long)]
    pub no_deliver: bool,
    #[command(flatten)]
    pub notify: NotifyOptions,
}

/// One watched series of `power_readings`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Suffix of the rule key: `total_power`, `phase_a_current`, ...
    pub name: &'static str,
    pub column: Column,
    pub unit: &'static str,
    pub config: RuleConfig,
}

fn number(name: &str, v: &str) -> Result<Decimal, ConfigError> {
    v.trim()
        .parse::<Decimal>()
        .ok()
        .filter(|d| *d > Decimal::ZERO)
        .ok_or_else(|| ConfigError(format!("{name} must be a positive number, not {v:?}")))
}

fn seconds(name: &str, v: &str, min: i64) -> Result<i64, ConfigError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= min)
        .ok_or_else(|| {
            ConfigError(format!(
                "{name} must be a whole number of seconds ≥ {min}, not {v:?}"
            ))
        })
}

/// An optional setting; an empty value (`ALERT_X=`) counts as unset.
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl AlertArgs {
    pub fn rules(&self) -> Result<Vec<Rule>, ConfigError> {
        let level = number(
            "ALERT_POWER_W",
            set(&self.power_w).ok_or_else(|| {
                ConfigError("ALERT_POWER_W is not set (the power threshold in watts)".into())
            })?,
        )?;
        let clear_ratio = match set(&self.clear_power_w) {
            Some(c) => {
                let clear = number("ALERT_CLEAR_POWER_W", c)?;
                if clear >= level {
                    return Err(ConfigError(format!(
                        "ALERT_CLEAR_POWER_W ({clear}) must be below ALERT_POWER_W ({level})"
                    )));
                }
                clear / level
            }
            None => Decimal::new(9, 1),
        };
        let schedule = match set(&self.schedule) {
            Some(s) => {
                parse_schedule(s).map_err(|e| ConfigError(format!("ALERT_SCHEDULE: {e}")))?
            }
            None => vec![],
        };
        let zone =
            Zone::resolve(set(&self.tz)).map_err(|e| ConfigError(format!("ALERT_TZ: {}", e.0)))?;
        let base = RuleConfig {
            level,
            clear_ratio,
            schedule,
            zone,
            sustain_s: seconds("ALERT_SUSTAIN_SECONDS", &self.sustain_seconds, 0)?,
            max_gap_s: seconds("ALERT_MAX_GAP_SECONDS", &self.max_gap_seconds, 1)?,
            clear_hold_s: seconds("ALERT_CLEAR_SECONDS", &self.clear_seconds, 0)?,
            cooldown_s: seconds("ALERT_COOLDOWN_SECONDS", &self.cooldown_seconds, 0)?,
        };
        let (name, column) = match self.channel.trim() {
            "total" | "" => ("total_power", Column::TotalPowerW),
            "em1:0" | "a" | "A" => ("channel_a_power", Column::PhaseAPowerW),
            "em1:1" | "b" | "B" => ("channel_b_power", Column::PhaseBPowerW),
            "em1:2" | "c" | "C" => ("channel_c_power", Column::PhaseCPowerW),
            other => {
                return Err(ConfigError(format!(
                    "ALERT_CHANNEL must be total, em1:0, em1:1, em1:2, a, b or c, not {other:?}"
                )))
            }
        };
        let mut rules = vec![Rule {
            name,
            column,
            unit: "W",
            config: base.clone(),
        }];
        if let Some(a) = set(&self.phase_current_a) {
            let limit = number("ALERT_PHASE_CURRENT_A", a)?;
            let phase = RuleConfig {
                level: limit,
                clear_ratio: Decimal::new(9, 1),
                schedule: vec![],
                ..base
            };
            for (name, column) in [
                ("phase_a_current", Column::PhaseACurrentA),
                ("phase_b_current", Column::PhaseBCurrentA),
                ("phase_c_current", Column::PhaseCCurrentA),
            ] {
                rules.push(Rule {
                    name,
                    column,
                    unit: "A",
                    config: phase.clone(),
                });
            }
        }
        Ok(rules)
    }
}

#[derive(Debug, Serialize)]
struct RuleResult {
    rule_key: String,
    device_id: String,
    state: State,
    decision: Decision,
    event_id: Option<i64>,
}

#[derive(Serialize)]
struct AlertsReport {
    now: i64,
    rules: Vec<RuleResult>,
    delivery: Option<DeliveryReport>,
}

#[derive(Tabled)]
struct Row {
    rule: String,
    state: String,
    action: String,
    value: String,
    threshold: String,
    event: String,
}

impl Report for AlertsReport {
    fn table(&self) -> String {
        let rows = self.rules.iter().map(|r| {
            let (action, value, threshold) = match &r.decision {
                Decision::Fire(e) => ("fired", e.value.to_string(), e.threshold.to_string()),
                Decision::Suppress(e) => (
                    "suppressed (cooldown)",
                    e.value.to_string(),
                    e.threshold.to_string(),
                ),
                Decision::Clear { value, .. } => ("cleared", value.to_string(), String::new()),
                Decision::Nothing => ("-", String::new(), String::new()),
            };
            Row {
                rule: r.rule_key.clone(),
                state: format!("{:?}", r.state).to_lowercase(),
                action: action.into(),
                value,
                threshold,
                event: r.event_id.map(|i| i.to_string()).unwrap_or_default(),
            }
        });
        let mut t = output::table(rows);
        if let Some(d) = &self.delivery {
            t.push_str(&d.table());
        }
        t
    }
}

/// Evaluates one rule for one device in its own transaction, holding the
/// rule's state row lock so concurrent runs decide one after the other.
fn evaluate_rule(
    db: &mut db::Client,
    device_id: &str,
    rule: &Rule,
    now: i64,
) -> anyhow::Result<RuleResult> {
    let rule_key = format!("{device_id}/{}", rule.name);
    let cfg = &rule.config;
    let mut tx = db.transaction()?;
    let mem = alerts::lock_state(&mut tx, &rule_key, device_id)?;
    let lookback = cfg.lookback_s();
    let samples = alerts::samples(&mut tx, device_id, rule.column, now - lookback, now)?;
    let decision = evaluate(cfg, &mem, &samples, now);
    let next = next_memory(&mem, &decision, now);
    let mut event_id = None;
    match &decision {
        Decision::Fire(e) | Decision::Suppress(e) => {
            let details = json!({"rule": rule.name, "unit": rule.unit, "episode": e,
                                 "suppressed": matches!(decision, Decision::Suppress(_)),
                                 "sustain_s": cfg.sustain_s, "cooldown_s": cfg.cooldown_s});
            if matches!(decision, Decision::Fire(_)) {
                event_id = Some(alerts::insert_event(
                    &mut tx, &rule_key, device_id, e, &details, now,
                )?);
            }
            alerts::save_state(
                &mut tx,
                &rule_key,
                &next,
                Some(e.window_start),
                None,
                event_id,
                &details,
            )?;
        }
        Decision::Clear { at, value } => {
            alerts::save_state(
                &mut tx,
                &rule_key,
                &next,
                None,
                Some(*at),
                None,
                &json!({"cleared_at": at, "value": value}),
            )?;
        }
        Decision::Nothing => {}
    }
    tx.commit()?;
    let level = match &decision {
        Decision::Fire(_) => Some(crate::log::Level::Warn),
        Decision::Suppress(_) | Decision::Clear { .. } => Some(crate::log::Level::Info),
        Decision::Nothing => None,
    };
    if let Some(level) = level {
        crate::log::emit(
            level,
            "alert_decision",
            Some(device_id),
            json!({"rule": rule_key, "decision": decision, "event_id": event_id}),
        );
    }
    Ok(RuleResult {
        rule_key,
        device_id: device_id.to_string(),
        state: next.state,
        decision,
        event_id,
    })
}

pub fn run(global: &GlobalArgs, args: &AlertArgs) -> anyhow::Result<ExitKind> {
    let rules = args.rules()?;
    let delivery = if args.no_deliver {
        None
    } else {
        args.notify.resolve()?
    };
    if delivery.is_none() && !args.no_deliver {
        crate::log::warn(
            "no_notification_backend",
            None,
            json!({"detail": "events are recorded but not delivered; set TRIGGER_HTTP_URL, MQTT_URL or HOMEBRIDGE_API_URL"}),
        );
    }
    let mut db = db::connect(&global.database_url()?)?;
    let now = global.now();
    // The evaluation is a few short queries per device and rule: a database
    // that stops answering ends the run with exit 75 after this long (the
    // next run, 30 s later, evaluates again), not at the unit's timeout.
    let evaluating = db::deadline("evaluating the alert rules", db::timeout() * 6, || {});
    let lookback = rules
        .iter()
        .map(|r| r.config.lookback_s())
        .max()
        .unwrap_or(0);
    let devices: Vec<String> = if args.filter.devices.is_empty() {
        crate::db::alerts::devices_to_evaluate(&mut db, now - lookback, now)?
    } else {
        args.filter.devices.clone()
    };
    let mut results = Vec::new();
    for device in &devices {
        for rule in &rules {
            results.push(evaluate_rule(&mut db, device, rule, now)?);
        }
    }
    drop(evaluating);
    let delivery_report = match &delivery {
        Some(d) => Some(deliver_pending(&mut db, d, now)?),
        None => None,
    };
    let exit = delivery_report
        .as_ref()
        .map(|d| d.exit_kind())
        .unwrap_or(ExitKind::Success);
    output::print(
        global.format,
        &AlertsReport {
            now,
            rules: results,
            delivery: delivery_report,
        },
    )?;
    Ok(exit)
}

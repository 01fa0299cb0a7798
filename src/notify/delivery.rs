//! Delivering alert events: the settings (hold, max age, timeout, the
//! backend) and the engine that delivers pending events at least once, with
//! backoff, giving up after a maximum age. Used by `notify` and
//! `evaluate-alerts`.

use super::{backend_from, pulse, Backend, BackendConfig, BackendSettings};
use crate::db::{self, alerts};
use crate::exit::{ConfigError, ExitKind};
use crate::output::{self, Report};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use tabled::Tabled;

#[derive(Args, Debug, Clone)]
pub struct NotifyOptions {
    /// How long the sensor stays ON in a pulse (e.g. 15s).
    #[arg(long, env = "NOTIFY_HOLD", default_value = "15s")]
    pub hold: String,
    /// Undelivered events older than this are given up (logged as failures).
    #[arg(long, env = "NOTIFY_MAX_AGE", default_value = "1h")]
    pub max_age: String,
    /// Timeout of each request to the notification backend, in milliseconds.
    #[arg(long, env = "NOTIFY_TIMEOUT_MS", default_value = "5000")]
    pub notify_timeout_ms: String,
    /// No pulse is started that could not end within this long after the
    /// run started (keep it below the unit's TimeoutStartSec: the next run
    /// delivers the rest).
    #[arg(long, env = "NOTIFY_MAX_RUN_TIME", default_value = "4m")]
    pub max_run_time: String,
    #[command(flatten)]
    pub backend: BackendSettings,
}

/// Resolved delivery settings.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub backend: BackendConfig,
    pub hold: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
    pub max_run_time: Duration,
}

fn duration(name: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v)
        .map_err(|e| ConfigError(format!("{name}={v:?}: {e} (e.g. 15s, 2m, 1h)")))
}

impl NotifyOptions {
    /// `None` when no backend is configured.
    pub fn resolve(&self) -> Result<Option<Delivery>, ConfigError> {
        let hold = duration("NOTIFY_HOLD", &self.hold)?;
        let max_age = duration("NOTIFY_MAX_AGE", &self.max_age)?;
        let timeout = self
            .notify_timeout_ms
            .parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                ConfigError(format!(
                    "NOTIFY_TIMEOUT_MS must be a positive number of milliseconds, not {:?}",
                    self.notify_timeout_ms
                ))
            })?;
        let max_run_time = duration("NOTIFY_MAX_RUN_TIME", &self.max_run_time)?;
        Ok(backend_from(&self.backend)?.map(|backend| Delivery {
            backend,
            hold,
            max_age,
            timeout,
            max_run_time,
        }))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct DeliveryReport {
    pub backend: Option<&'static str>,
    pub delivered: Vec<i64>,
    pub failed: Vec<DeliveryFailure>,
    pub given_up: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryFailure {
    pub event_id: i64,
    pub error: String,
    pub retry_at: i64,
}

impl DeliveryReport {
    pub fn exit_kind(&self) -> ExitKind {
        if self.failed.is_empty() {
            ExitKind::Success
        } else {
            ExitKind::Temporary
        }
    }
}

/// Retry delay after `attempts` failed tries: 30 s doubling, at most 30 min.
pub fn backoff(attempts: i32) -> i64 {
    (30i64 << attempts.clamp(0, 6)).min(1800)
}

/// The longest one pulse can take: connecting, ON, the hold, OFF (each
/// request within the timeout).
fn pulse_time(d: &Delivery) -> Duration {
    d.hold + d.timeout * 4
}

/// Delivers the due events: every event pending for the sensor is told by
/// one pulse and marked together (a HomeKit sensor cannot tell 20 pulses
/// from one, and 20 pulses of 15 s used up the job's time). The events are
/// leased and committed before the pulse, so no transaction is held across
/// the network; a run killed mid-pulse leaves them due again when the lease
/// ends. Stops at the first failure (the backend is likely down; the next
/// run retries after the backoff), and starts no pulse it could not end
/// within `max_run_time` of `started`.
pub fn deliver_pending(
    db: &mut db::Client,
    delivery: &Delivery,
    now: i64,
) -> anyhow::Result<DeliveryReport> {
    let started = std::time::Instant::now();
    let mut report = DeliveryReport {
        backend: Some(delivery.backend.name()),
        ..Default::default()
    };
    // Each database step has a deadline (a frozen database ends the run
    // with exit 75, not at the unit's timeout); the network and the hold
    // are outside them.
    let step = || db::timeout() * 6;
    let given_up = {
        let _deadline = db::deadline("giving up stale notifications", step(), || {});
        alerts::give_up_stale(db, now, delivery.max_age.as_secs() as i64)?
    };
    for (id, rule_key, attempts) in given_up {
        crate::log::error(
            "notification_given_up",
            None,
            json!({"event_id": id, "rule": rule_key, "attempts": attempts,
                   "max_age": humantime::format_duration(delivery.max_age).to_string()}),
        );
        report.given_up.push(id);
    }
    let mut backend: Option<Box<dyn Backend>> = None;
    let lease = pulse_time(delivery).as_secs() as i64 + 60;
    loop {
        if started.elapsed() + pulse_time(delivery) > delivery.max_run_time {
            crate::log::warn(
                "notification_deferred",
                None,
                json!({"reason": "no time left in this run for another pulse", "max_run_time": humantime::format_duration(delivery.max_run_time).to_string()}),
            );
            break;
        }
        // Events that came in during a pulse are told by the next one.
        let at = now + started.elapsed().as_secs() as i64;
        let events = {
            let _deadline = db::deadline("claiming due notifications", step(), || {});
            alerts::claim_due(db, at, lease)?
        };
        if events.is_empty() {
            break;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let result = (|| -> anyhow::Result<_> {
            if backend.is_none() {
                backend = Some(delivery.backend.connect(delivery.timeout)?);
            }
            pulse(backend.as_deref_mut().expect("connected"), delivery.hold)
        })();
        match result {
            Ok(outcome) => {
                let _deadline = db::deadline("marking notifications delivered", step(), || {});
                alerts::mark_delivered(
                    db,
                    &ids,
                    &json!({"backend": delivery.backend.name(), "pulse": outcome, "events_in_pulse": ids.len()}),
                )?;
                for ev in &events {
                    crate::log::info(
                        "notification_delivered",
                        ev.device_id.as_deref(),
                        json!({"event_id": ev.id, "rule": ev.rule_key, "backend": delivery.backend.name(),
                               "events_in_pulse": ids.len(),
                               "reset_first": outcome.reset_first, "off_confirmed": outcome.off_confirmed}),
                    );
                }
                report.delivered.extend(&ids);
            }
            Err(e) => {
                let attempts = events.iter().map(|e| e.attempts).max().unwrap_or(0);
                let retry_at = at + backoff(attempts);
                let error = format!("{e:#}");
                let _deadline = db::deadline("marking notifications failed", step(), || {});
                alerts::mark_failed(db, &ids, &error, retry_at)?;
                for ev in &events {
                    crate::log::error(
                        "notification_failed",
                        ev.device_id.as_deref(),
                        json!({"event_id": ev.id, "rule": ev.rule_key, "backend": delivery.backend.name(),
                               "attempt": ev.attempts + 1, "retry_in_s": retry_at - at, "error": error}),
                    );
                    report.failed.push(DeliveryFailure {
                        event_id: ev.id,
                        error: error.clone(),
                        retry_at,
                    });
                }
                break;
            }
        }
    }
    Ok(report)
}

#[derive(Tabled)]
struct Row {
    backend: String,
    delivered: String,
    failed: String,
    #[tabled(rename = "given up")]
    given_up: String,
}

fn ids(v: &[i64]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report for DeliveryReport {
    fn table(&self) -> String {
        let mut t = output::table([Row {
            backend: self.backend.unwrap_or("none").into(),
            delivered: ids(&self.delivered),
            failed: ids(&self.failed.iter().map(|f| f.event_id).collect::<Vec<_>>()),
            given_up: ids(&self.given_up),
        }]);
        for f in &self.failed {
            t.push_str(&format!("event {}: {}\n", f.event_id, f.error));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(
            (backoff(0), backoff(1), backoff(2), backoff(5), backoff(50)),
            (30, 60, 120, 960, 1800)
        );
    }
}

//! `shellyctl notify`: deliver pending alert events (the engine is
//! `notify::delivery`); `--test` sends one pulse.

use crate::db;
use crate::exit::{ConfigError, ExitKind};
use crate::notify::delivery::{deliver_pending, Delivery, NotifyOptions};
use crate::notify::pulse;
use crate::output::{self, Report};
use crate::settings::GlobalArgs;
use clap::Args;
use serde::Serialize;
use serde_json::json;

#[derive(Args, Debug)]
pub struct NotifyArgs {
    /// Send one test pulse through the configured backend and report.
    #[arg(long)]
    pub test: bool,
    #[command(flatten)]
    pub options: NotifyOptions,
}

#[derive(Serialize)]
struct TestReport {
    backend: &'static str,
    ok: bool,
    pulse: crate::notify::PulseOutcome,
}

impl Report for TestReport {
    fn table(&self) -> String {
        format!(
            "test pulse via {}: delivered (reset first: {}, OFF confirmed: {})\n",
            self.backend, self.pulse.reset_first, self.pulse.off_confirmed
        )
    }
}

fn require(delivery: Option<Delivery>) -> Result<Delivery, ConfigError> {
    delivery.ok_or_else(|| {
        ConfigError("no notification backend configured: set TRIGGER_HTTP_URL, MQTT_URL + MQTT_TOPIC, or HOMEBRIDGE_API_URL".into())
    })
}

pub fn run(global: &GlobalArgs, args: &NotifyArgs) -> anyhow::Result<ExitKind> {
    let delivery = require(args.options.resolve()?)?;
    if args.test {
        let mut backend = delivery.backend.connect(delivery.timeout)?;
        let outcome = pulse(backend.as_mut(), delivery.hold)?;
        crate::log::info(
            "notification_test_delivered",
            None,
            json!({"backend": delivery.backend.name()}),
        );
        output::print(
            global.format,
            &TestReport {
                backend: delivery.backend.name(),
                ok: true,
                pulse: outcome,
            },
        )?;
        return Ok(ExitKind::Success);
    }
    let mut db = db::connect(&global.database_url()?)?;
    let now = global.now();
    let report = deliver_pending(&mut db, &delivery, now)?;
    output::print(global.format, &report)?;
    Ok(report.exit_kind())
}

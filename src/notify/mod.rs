//! Making HomeKit notify: flip a virtual sensor exposed by Homebridge ON,
//! hold, and OFF again (a pulse), through an HTTP webhook, MQTT or the
//! Homebridge UI API. See README "Notifications".

pub mod delivery;
pub mod homebridge;
pub mod mqtt;
pub mod webhook;

use crate::exit::ConfigError;
use crate::secret::{self, Secret};
use std::path::PathBuf;
use std::time::Duration;

/// Which backend, and how to reach it (from the environment).
#[derive(Debug, Clone)]
pub enum BackendConfig {
    Webhook(webhook::Config),
    Mqtt(mqtt::Config),
    Homebridge(homebridge::Config),
}

impl BackendConfig {
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Webhook(_) => "webhook",
            BackendConfig::Mqtt(_) => "mqtt",
            BackendConfig::Homebridge(_) => "homebridge",
        }
    }

    pub fn connect(&self, timeout: Duration) -> anyhow::Result<Box<dyn Backend>> {
        Ok(match self {
            BackendConfig::Webhook(c) => Box::new(webhook::Webhook::new(c.clone(), timeout)),
            BackendConfig::Mqtt(c) => Box::new(mqtt::Mqtt::connect(c, timeout)?),
            BackendConfig::Homebridge(c) => {
                Box::new(homebridge::Homebridge::connect(c.clone(), timeout)?)
            }
        })
    }
}

/// A way to set the virtual sensor.
pub trait Backend {
    /// The sensor's current state, when the backend can tell.
    fn state(&mut self) -> anyhow::Result<Option<bool>>;
    /// Sets the sensor; returns once the backend confirmed it.
    fn set(&mut self, on: bool) -> anyhow::Result<()>;
    /// Whether `set(false)` does anything (a webhook may have no OFF URL and
    /// rely on the plugin's auto-release).
    fn can_set_off(&self) -> bool {
        true
    }
}

/// The notification backends' settings that are no secret, as options
/// and environment variables (listed in `--help`). Secrets are never
/// options: TRIGGER_HTTP_PASSWORD, MQTT_PASSWORD, HOMEBRIDGE_API_TOKEN and
/// HOMEBRIDGE_PASSWORD come from the variable, `<VAR>_FILE` or the systemd
/// credential of the same name in lower case with dashes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackendSettings {
    /// Webhook backend: the URL that turns the sensor ON (homebridge
    /// http-webhooks: `...?accessoryId=X&state=true`).
    #[arg(long, env = "TRIGGER_HTTP_URL")]
    pub trigger_http_url: Option<String>,
    /// Webhook backend: the URL that turns it OFF (when the ON URL has no
    /// `state=true` to flip).
    #[arg(long, env = "TRIGGER_HTTP_OFF_URL")]
    pub trigger_http_off_url: Option<String>,
    /// Webhook backend: basic-auth user (password: TRIGGER_HTTP_PASSWORD).
    #[arg(long, env = "TRIGGER_HTTP_USER")]
    pub trigger_http_user: Option<String>,
    /// MQTT backend: broker URL, mqtt://host:1883 (mqtts:// with the
    /// mqtt-tls build); no credentials in it.
    #[arg(long, env = "MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// MQTT backend: the topic the sensor listens on.
    #[arg(long, env = "MQTT_TOPIC")]
    pub mqtt_topic: Option<String>,
    /// MQTT backend: user (password: MQTT_PASSWORD).
    #[arg(long, env = "MQTT_USER")]
    pub mqtt_user: Option<String>,
    /// MQTT backend: payload for ON (default true).
    #[arg(long, env = "MQTT_ON_PAYLOAD")]
    pub mqtt_on_payload: Option<String>,
    /// MQTT backend: payload for OFF (default false).
    #[arg(long, env = "MQTT_OFF_PAYLOAD")]
    pub mqtt_off_payload: Option<String>,
    /// MQTT backend: CA certificate file for mqtts://.
    #[arg(long, env = "MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<String>,
    /// MQTT backend: client id (default shellyctl-<pid>).
    #[arg(long, env = "MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Homebridge UI API backend: its URL, e.g. http://homebridge.lan:8581
    /// (token: HOMEBRIDGE_API_TOKEN, or HOMEBRIDGE_USER + HOMEBRIDGE_PASSWORD).
    #[arg(long, env = "HOMEBRIDGE_API_URL")]
    pub homebridge_api_url: Option<String>,
    /// Homebridge UI API backend: login user.
    #[arg(long, env = "HOMEBRIDGE_USER")]
    pub homebridge_user: Option<String>,
    /// Homebridge UI API backend: the accessory's uniqueId or service name.
    #[arg(long, env = "HOMEBRIDGE_ACCESSORY_ID")]
    pub homebridge_accessory_id: Option<String>,
    /// Homebridge UI API backend: the characteristic to set (default On).
    #[arg(long, env = "HOMEBRIDGE_CHARACTERISTIC")]
    pub homebridge_characteristic: Option<String>,
    /// The backend to use when several are configured: webhook, mqtt or
    /// homebridge.
    #[arg(long, env = "NOTIFY_BACKEND")]
    pub notify_backend: Option<String>,
}

/// A setting as given: trimmed, and empty counts as unset (`VAR=`).
fn set(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

fn secret_env(name: &str, credential: &str) -> Result<Option<Secret>, ConfigError> {
    secret::from_env(name, credential)
}

/// Reads the backend configuration. `NOTIFY_BACKEND` picks one when several
/// are configured; `None` when none is.
pub fn backend_from(s: &BackendSettings) -> Result<Option<BackendConfig>, ConfigError> {
    let mut found = Vec::new();
    if let Some(url) = set(&s.trigger_http_url) {
        found.push(BackendConfig::Webhook(webhook::Config::from_settings(
            url, s,
        )?));
    }
    if let Some(url) = set(&s.mqtt_url) {
        found.push(BackendConfig::Mqtt(mqtt::Config::from_settings(&url, s)?));
    } else if set(&s.mqtt_topic).is_some() {
        return Err(ConfigError("MQTT_TOPIC is set but MQTT_URL is not".into()));
    }
    if let Some(url) = set(&s.homebridge_api_url) {
        found.push(BackendConfig::Homebridge(
            homebridge::Config::from_settings(url, s)?,
        ));
    }
    match set(&s.notify_backend) {
        Some(name) => {
            if !["webhook", "mqtt", "homebridge"].contains(&name.as_str()) {
                return Err(ConfigError(format!(
                    "NOTIFY_BACKEND must be webhook, mqtt or homebridge, not {name:?}"
                )));
            }
            found
                .into_iter()
                .find(|b| b.name() == name)
                .map(Some)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "NOTIFY_BACKEND={name} but that backend is not configured"
                    ))
                })
        }
        None if found.len() > 1 => Err(ConfigError(format!(
            "several notification backends are configured ({}); choose one with NOTIFY_BACKEND",
            found
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(found.pop()),
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq)]
pub struct PulseOutcome {
    /// The sensor was found ON (or its state was unknown) and set OFF first,
    /// so that HomeKit sees a fresh OFF→ON edge.
    pub reset_first: bool,
    /// The closing OFF was confirmed (false when it failed or was left to
    /// the plugin's auto-release).
    pub off_confirmed: bool,
}

/// One notification: ON, hold, OFF. The ON is what HomeKit notifies on, so
/// the pulse succeeds once ON is confirmed; a failed OFF is logged (the
/// next pulse resets the sensor first).
pub fn pulse(backend: &mut dyn Backend, hold: Duration) -> anyhow::Result<PulseOutcome> {
    let mut out = PulseOutcome::default();
    let state = backend.state().unwrap_or(None);
    if backend.can_set_off() && state != Some(false) {
        backend.set(false)?;
        out.reset_first = true;
        if state == Some(true) {
            crate::log::warn("sensor_stuck_on_reset", None, serde_json::json!({}));
        }
    }
    backend.set(true)?;
    std::thread::sleep(hold);
    if backend.can_set_off() {
        match backend.set(false) {
            Ok(()) => out.off_confirmed = true,
            Err(e) => crate::log::warn(
                "sensor_off_failed",
                None,
                serde_json::json!({"error": format!("{e:#}")}),
            ),
        }
    }
    Ok(out)
}

/// A shared ureq agent for the HTTP backends.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("shellyctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `user:password` as a Basic auth header value.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The part of a URL that is safe to log: scheme, host and port.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

pub fn file_setting(v: &Option<String>) -> Option<PathBuf> {
    set(v).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        state: Option<bool>,
        calls: Vec<bool>,
        fail_off_after_on: bool,
    }

    impl Backend for Fake {
        fn state(&mut self) -> anyhow::Result<Option<bool>> {
            Ok(self.state)
        }
        fn set(&mut self, on: bool) -> anyhow::Result<()> {
            if !on && self.fail_off_after_on && self.calls.contains(&true) {
                anyhow::bail!("down");
            }
            self.calls.push(on);
            Ok(())
        }
    }

    #[test]
    fn a_pulse_is_on_then_off_and_resets_a_stuck_sensor_first() {
        let mut f = Fake {
            state: Some(false),
            calls: vec![],
            fail_off_after_on: false,
        };
        let o = pulse(&mut f, Duration::ZERO).unwrap();
        assert_eq!(f.calls, [true, false]);
        assert_eq!(
            o,
            PulseOutcome {
                reset_first: false,
                off_confirmed: true
            }
        );

        let mut stuck = Fake {
            state: Some(true),
            calls: vec![],
            fail_off_after_on: false,
        };
        assert!(pulse(&mut stuck, Duration::ZERO).unwrap().reset_first);
        assert_eq!(stuck.calls, [false, true, false]);

        let mut unknown = Fake {
            state: None,
            calls: vec![],
            fail_off_after_on: false,
        };
        pulse(&mut unknown, Duration::ZERO).unwrap();
        assert_eq!(
            unknown.calls,
            [false, true, false],
            "unknown state: reset to be sure of the edge"
        );
    }

    #[test]
    fn a_failed_off_after_a_confirmed_on_still_counts_as_delivered() {
        let mut f = Fake {
            state: Some(false),
            calls: vec![],
            fail_off_after_on: true,
        };
        let o = pulse(&mut f, Duration::ZERO).unwrap();
        assert!(!o.off_confirmed);
        assert_eq!(f.calls, [true]);
    }

    #[test]
    fn basic_auth_and_redaction() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            redact_url("http://u:secret@hb:51828/?accessoryId=x&state=true"),
            "http://hb:51828"
        );
        assert_eq!(
            redact_url("mqtts://broker.lan:8883"),
            "mqtts://broker.lan:8883"
        );
    }
}

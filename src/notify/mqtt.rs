//! MQTT backend (e.g. homebridge-mqttthing): publish the ON / OFF payloads
//! to `MQTT_TOPIC` with QoS 1, never retained (a retained ON would fire
//! again on every reconnect), waiting for each PUBACK.

use super::{secret_env, Backend};
use crate::exit::ConfigError;
use crate::secret::Secret;
use anyhow::{anyhow, bail, Context};
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS, Transport};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Config {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub on_payload: String,
    pub off_payload: String,
    pub credentials: Option<(String, Secret)>,
    pub ca_file: Option<PathBuf>,
    pub client_id: String,
}

impl Config {
    pub fn from_settings(url: &str, s: &super::BackendSettings) -> Result<Config, ConfigError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            if !cfg!(feature = "mqtt-tls") {
                return Err(ConfigError(NO_TLS.into()));
            }
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(ConfigError(
                "MQTT_URL must start with mqtt:// or mqtts://".into(),
            ));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(ConfigError(
                "MQTT_URL must not contain credentials; set MQTT_USER and MQTT_PASSWORD (or MQTT_PASSWORD_FILE)".into(),
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| ConfigError(format!("MQTT_URL has an invalid port {p:?}")))?,
            ),
            None => (authority.to_string(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(ConfigError("MQTT_URL has no host".into()));
        }
        let topic = super::set(&s.mqtt_topic)
            .ok_or_else(|| ConfigError("MQTT_URL is set but MQTT_TOPIC is not".into()))?;
        let credentials = match (
            super::set(&s.mqtt_user),
            secret_env("MQTT_PASSWORD", "mqtt-password")?,
        ) {
            (Some(u), p) => Some((u, p.unwrap_or_else(|| Secret::new("")))),
            (None, Some(_)) => {
                return Err(ConfigError(
                    "MQTT_PASSWORD is set but MQTT_USER is not".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(Config {
            tls,
            host,
            port,
            topic,
            // homebridge-mqttthing's default boolean payloads.
            on_payload: super::set(&s.mqtt_on_payload).unwrap_or_else(|| "true".into()),
            off_payload: super::set(&s.mqtt_off_payload).unwrap_or_else(|| "false".into()),
            credentials,
            ca_file: super::file_setting(&s.mqtt_ca_file),
            client_id: super::set(&s.mqtt_client_id)
                .unwrap_or_else(|| format!("shellyctl-{}", std::process::id())),
        })
    }
}

pub struct Mqtt {
    client: Client,
    conn: Connection,
    topic: String,
    on: String,
    off: String,
    timeout: Duration,
}

#[cfg(feature = "mqtt-tls")]
fn tls_transport(cfg: &Config) -> anyhow::Result<Transport> {
    Ok(match &cfg.ca_file {
        Some(path) => Transport::tls(
            std::fs::read(path)
                .with_context(|| format!("reading MQTT_CA_FILE {}", path.display()))?,
            None,
            None,
        ),
        None => Transport::tls_with_default_config(),
    })
}

const NO_TLS: &str = "MQTT_URL is mqtts:// but this shellyctl was built without MQTT TLS; build it \
     with `cargo build --release --features mqtt-tls`, or use the broker's plain listener on a trusted network";

#[cfg(not(feature = "mqtt-tls"))]
fn tls_transport(_: &Config) -> anyhow::Result<Transport> {
    Err(ConfigError(NO_TLS.into()).into())
}

impl Mqtt {
    pub fn connect(cfg: &Config, timeout: Duration) -> anyhow::Result<Mqtt> {
        let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        if let Some((u, p)) = &cfg.credentials {
            opts.set_credentials(u, p.expose());
        }
        if cfg.tls {
            opts.set_transport(tls_transport(cfg)?);
        }
        let (client, conn) = Client::new(opts, 10);
        let mut m = Mqtt {
            client,
            conn,
            topic: cfg.topic.clone(),
            on: cfg.on_payload.clone(),
            off: cfg.off_payload.clone(),
            timeout,
        };
        m.wait_for(|p| matches!(p, Packet::ConnAck(_)))
            .with_context(|| format!("connecting to the MQTT broker {}:{}", cfg.host, cfg.port))?;
        Ok(m)
    }

    /// Drives the connection until a packet matching `want` arrives.
    fn wait_for(&mut self, want: impl Fn(&Packet) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no answer from the broker within {}",
                    humantime::format_duration(self.timeout)
                );
            }
            match self.conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                    if ack.code != rumqttc::ConnectReturnCode::Success =>
                {
                    bail!("the broker refused the connection: {:?}", ack.code)
                }
                Ok(Ok(Event::Incoming(p))) if want(&p) => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(anyhow!(e)),
                Err(rumqttc::RecvTimeoutError::Timeout) => continue,
                Err(rumqttc::RecvTimeoutError::Disconnected) => {
                    bail!("the connection to the broker closed")
                }
            }
        }
    }
}

impl Backend for Mqtt {
    fn state(&mut self) -> anyhow::Result<Option<bool>> {
        Ok(None) // a motion-sensor topic has no readable state
    }

    fn set(&mut self, on: bool) -> anyhow::Result<()> {
        let payload = if on {
            self.on.clone()
        } else {
            self.off.clone()
        };
        self.client
            .publish(&self.topic, QoS::AtLeastOnce, false, payload.into_bytes())
            .context("queueing an MQTT publish")?;
        self.wait_for(|p| matches!(p, Packet::PubAck(_)))
            .with_context(|| format!("publishing to {}", self.topic))
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        let _ = self.conn.recv_timeout(Duration::from_millis(200));
    }
}

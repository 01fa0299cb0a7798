//! Homebridge Config UI X REST API backend: log in (or use a token), find
//! the accessory, `PUT /api/accessories/{uniqueId}`. MotionDetected is
//! read-only there, so the target is a writable proxy, e.g. a
//! homebridge-dummy Switch with a mirrored MotionSensor (characteristic `On`).

use super::{http_agent, redact_url, secret_env, Backend};
use crate::exit::ConfigError;
use crate::secret::Secret;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub api_url: String,
    pub token: Option<Secret>,
    pub login: Option<(String, Secret)>,
    /// A uniqueId (64 hex digits) or a service name to look up.
    pub accessory: String,
    pub characteristic: String,
}

impl Config {
    pub fn from_settings(
        api_url: String,
        s: &super::BackendSettings,
    ) -> Result<Config, ConfigError> {
        let token = secret_env("HOMEBRIDGE_API_TOKEN", "homebridge-api-token")?;
        let login = match (
            super::set(&s.homebridge_user),
            secret_env("HOMEBRIDGE_PASSWORD", "homebridge-password")?,
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "set both HOMEBRIDGE_USER and HOMEBRIDGE_PASSWORD".into(),
                ))
            }
        };
        if token.is_none() && login.is_none() {
            return Err(ConfigError("HOMEBRIDGE_API_URL needs HOMEBRIDGE_API_TOKEN or HOMEBRIDGE_USER + HOMEBRIDGE_PASSWORD".into()));
        }
        let accessory = super::set(&s.homebridge_accessory_id).ok_or_else(|| {
            ConfigError("HOMEBRIDGE_API_URL is set but HOMEBRIDGE_ACCESSORY_ID is not".into())
        })?;
        Ok(Config {
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            login,
            accessory,
            characteristic: super::set(&s.homebridge_characteristic).unwrap_or_else(|| "On".into()),
        })
    }
}

pub struct Homebridge {
    cfg: Config,
    agent: ureq::Agent,
    token: String,
    unique_id: String,
}

fn is_unique_id(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl Homebridge {
    pub fn connect(cfg: Config, timeout: Duration) -> anyhow::Result<Homebridge> {
        let agent = http_agent(timeout);
        let mut hb = Homebridge {
            token: String::new(),
            unique_id: String::new(),
            cfg,
            agent,
        };
        hb.token = match &hb.cfg.token {
            Some(t) => t.expose().to_string(),
            None => hb.login()?,
        };
        hb.unique_id = if is_unique_id(&hb.cfg.accessory) {
            hb.cfg.accessory.clone()
        } else {
            hb.find_accessory()?
        };
        Ok(hb)
    }

    fn login(&self) -> anyhow::Result<String> {
        let Some((user, password)) = &self.cfg.login else {
            bail!("the Homebridge API token was refused and no HOMEBRIDGE_USER/HOMEBRIDGE_PASSWORD is set");
        };
        let url = format!("{}/api/auth/login", self.cfg.api_url);
        let mut resp = self
            .agent
            .post(&url)
            .send_json(json!({"username": user, "password": password.expose()}))
            .with_context(|| format!("logging in to Homebridge at {}", redact_url(&url)))?;
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            bail!(
                "Homebridge login failed: HTTP {status} {}",
                body.get("message").and_then(Value::as_str).unwrap_or("")
            );
        }
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("Homebridge login answer has no access_token")
    }

    /// Sends a request with the token, logging in again once on 401.
    fn request(&mut self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            let url = format!("{}{}", self.cfg.api_url, path);
            let auth = format!("Bearer {}", self.token);
            let result = match (method, &body) {
                ("PUT", Some(b)) => self
                    .agent
                    .put(&url)
                    .header("Authorization", &auth)
                    .send_json(b),
                _ => self.agent.get(&url).header("Authorization", &auth).call(),
            };
            let mut resp =
                result.with_context(|| format!("calling Homebridge at {}", redact_url(&url)))?;
            let status = resp.status().as_u16();
            let json: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
            match status {
                200..=299 => return Ok(json),
                401 if attempt == 0 && self.cfg.login.is_some() => self.token = self.login()?,
                _ => bail!(
                    "Homebridge {method} {path} answered HTTP {status}: {}",
                    json.get("message")
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                ),
            }
        }
        unreachable!("the loop returns or fails")
    }

    fn find_accessory(&mut self) -> anyhow::Result<String> {
        let list = self.request("GET", "/api/accessories", None)?;
        let services = list.as_array().cloned().unwrap_or_default();
        if services.is_empty() {
            bail!("Homebridge UI lists no accessories: is Homebridge running in insecure mode (-I) and visible to the UI over mDNS?");
        }
        let name = &self.cfg.accessory;
        let c = &self.cfg.characteristic;
        services
            .iter()
            .find(|s| {
                s["serviceName"] == name.as_str()
                    && s["serviceCharacteristics"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|x| x["type"] == c.as_str() && x["canWrite"] == true)
                    })
            })
            .and_then(|s| s["uniqueId"].as_str().map(str::to_string))
            .with_context(|| {
                format!(
                    "no Homebridge accessory named {name:?} with a writable {c:?} characteristic"
                )
            })
    }
}

impl Backend for Homebridge {
    fn state(&mut self) -> anyhow::Result<Option<bool>> {
        let path = format!("/api/accessories/{}", self.unique_id);
        let s = self.request("GET", &path, None)?;
        Ok(match &s["values"][&self.cfg.characteristic] {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(n.as_i64() != Some(0)),
            _ => None,
        })
    }

    fn set(&mut self, on: bool) -> anyhow::Result<()> {
        let path = format!("/api/accessories/{}", self.unique_id);
        let body = json!({"characteristicType": self.cfg.characteristic, "value": on});
        self.request("PUT", &path, Some(body)).map(|_| ())
    }
}

//! HTTP webhook backend, e.g. homebridge-http-webhooks:
//! `GET http://hb:51828/?accessoryId=power_alarm&state=true`.
//!
//! `TRIGGER_HTTP_URL` is the ON URL. When it carries `state=true` (the
//! http-webhooks form), OFF is the same URL with `state=false`, and the
//! sensor's state is read from the URL without `state`. Otherwise OFF is
//! `TRIGGER_HTTP_OFF_URL` (optional: without it, the plugin's auto-release
//! ends the pulse).

use super::{basic_auth, http_agent, redact_url, secret_env, Backend};
use crate::exit::ConfigError;
use crate::secret::Secret;
use anyhow::{bail, Context};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub on_url: String,
    pub off_url: Option<String>,
    pub state_url: Option<String>,
    pub auth: Option<(String, Secret)>,
}

impl Config {
    pub fn from_settings(
        on_url: String,
        s: &super::BackendSettings,
    ) -> Result<Config, ConfigError> {
        if !(on_url.starts_with("http://") || on_url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "TRIGGER_HTTP_URL must be an http:// or https:// URL, got {}",
                redact_url(&on_url)
            )));
        }
        let (off_url, state_url) = if on_url.contains("state=true") {
            let off = on_url.replace("state=true", "state=false");
            let state = on_url
                .replace("&state=true", "")
                .replace("state=true&", "")
                .replace("?state=true", "?");
            (Some(off), Some(state))
        } else {
            (super::set(&s.trigger_http_off_url), None)
        };
        let auth = match (
            super::set(&s.trigger_http_user),
            secret_env("TRIGGER_HTTP_PASSWORD", "trigger-http-password")?,
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(u), None) => Some((u, Secret::new(""))),
            (None, Some(_)) => {
                return Err(ConfigError(
                    "TRIGGER_HTTP_PASSWORD is set but TRIGGER_HTTP_USER is not".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(Config {
            on_url,
            off_url,
            state_url,
            auth,
        })
    }
}

pub struct Webhook {
    cfg: Config,
    agent: ureq::Agent,
}

impl Webhook {
    pub fn new(cfg: Config, timeout: Duration) -> Webhook {
        Webhook {
            cfg,
            agent: http_agent(timeout),
        }
    }

    /// GET a URL; 2xx required, and a JSON body with `success` must say true.
    fn get(&self, url: &str) -> anyhow::Result<String> {
        let mut req = self.agent.get(url);
        if let Some((u, p)) = &self.cfg.auth {
            req = req.header("Authorization", basic_auth(u, p.expose()));
        }
        let mut resp = req
            .call()
            .with_context(|| format!("calling the webhook at {}", redact_url(url)))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            bail!(
                "the webhook at {} answered HTTP {status}: {}",
                redact_url(url),
                body.chars().take(200).collect::<String>().trim()
            );
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            if v.get("success")
                .is_some_and(|s| s != &serde_json::Value::Bool(true))
            {
                bail!(
                    "the webhook at {} answered {}",
                    redact_url(url),
                    body.trim()
                );
            }
        }
        Ok(body)
    }
}

impl Backend for Webhook {
    fn state(&mut self) -> anyhow::Result<Option<bool>> {
        let Some(url) = self.cfg.state_url.clone() else {
            return Ok(None);
        };
        let body = self.get(&url)?;
        Ok(serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("state").and_then(|s| s.as_bool())))
    }

    fn set(&mut self, on: bool) -> anyhow::Result<()> {
        let url = if on {
            Some(self.cfg.on_url.clone())
        } else {
            self.cfg.off_url.clone()
        };
        match url {
            Some(u) => self.get(&u).map(|_| ()),
            None => Ok(()),
        }
    }

    fn can_set_off(&self) -> bool {
        self.cfg.off_url.is_some()
    }
}

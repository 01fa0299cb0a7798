//! Structured logs on stderr: JSON lines (ts, level, event, device_id, ...)
//! by default, or a short human form with `--log-format text`.
//! stdout is reserved for data.

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

struct Settings {
    format: LogFormat,
    min_level: Level,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the log format once per process; the level comes from
/// `SHELLYCTL_LOG` (debug|info|warn|error, default info).
pub fn init(format: LogFormat) {
    let min_level = std::env::var("SHELLYCTL_LOG")
        .ok()
        .and_then(|s| Level::parse(&s))
        .unwrap_or(Level::Info);
    let _ = SETTINGS.set(Settings { format, min_level });
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        format: LogFormat::Json,
        min_level: Level::Info,
    })
}

pub fn format() -> LogFormat {
    settings().format
}

/// Writes one log line. `fields` must be a JSON object (or null).
pub fn emit(level: Level, event: &str, device_id: Option<&str>, fields: Value) {
    let s = settings();
    if level < s.min_level {
        return;
    }
    let line = render(s.format, level, event, device_id, fields);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
}

fn render(
    format: LogFormat,
    level: Level,
    event: &str,
    device_id: Option<&str>,
    fields: Value,
) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let extra = match fields {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("detail".into(), other);
            m
        }
    };
    match format {
        LogFormat::Json => {
            let mut m = Map::new();
            m.insert("ts".into(), Value::String(ts));
            m.insert("level".into(), Value::String(level.as_str().into()));
            m.insert("event".into(), Value::String(event.into()));
            if let Some(d) = device_id {
                m.insert("device_id".into(), Value::String(d.into()));
            }
            m.extend(extra);
            format!("{}\n", Value::Object(m))
        }
        LogFormat::Text => {
            let mut line = format!("{ts} {:<5} {event}", level.as_str());
            if let Some(d) = device_id {
                line.push_str(&format!(" device_id={d}"));
            }
            for (k, v) in extra {
                match v {
                    Value::String(s) => line.push_str(&format!(" {k}={s:?}")),
                    other => line.push_str(&format!(" {k}={other}")),
                }
            }
            line.push('\n');
            line
        }
    }
}

pub fn debug(event: &str, device_id: Option<&str>, fields: Value) {
    emit(Level::Debug, event, device_id, fields)
}
pub fn info(event: &str, device_id: Option<&str>, fields: Value) {
    emit(Level::Info, event, device_id, fields)
}
pub fn warn(event: &str, device_id: Option<&str>, fields: Value) {
    emit(Level::Warn, event, device_id, fields)
}
pub fn error(event: &str, device_id: Option<&str>, fields: Value) {
    emit(Level::Error, event, device_id, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_carry_the_contract_fields() {
        let line = render(
            LogFormat::Json,
            Level::Warn,
            "device_retry",
            Some("shelly3em63g3-aabb"),
            json!({"attempt": 2}),
        );
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["event"], "device_retry");
        assert_eq!(v["device_id"], "shelly3em63g3-aabb");
        assert_eq!(v["attempt"], 2);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn text_lines_are_one_line() {
        let line = render(
            LogFormat::Text,
            Level::Info,
            "migrated",
            None,
            json!({"file": "0001_init.sql", "n": 1}),
        );
        assert!(line.contains("info  migrated file=\"0001_init.sql\" n=1"));
        assert_eq!(line.matches('\n').count(), 1);
    }
}

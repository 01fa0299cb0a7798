//! Outbound-WebSocket frames from devices (pure logic): telling
//! notifications from responses, and merging partial status updates over
//! the last full status.

use crate::minute_log::{ChannelKey, Component, Values};
use crate::shelly::status::parse_status;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `NotifyStatus`, `NotifyFullStatus`, `NotifyEvent`, ... (no `id`).
    Notify {
        method: String,
        src: Option<String>,
        ts: Option<f64>,
        params: Map<String, Value>,
    },
    /// An answer to one of our requests.
    Response {
        id: i64,
        src: Option<String>,
        result: Option<Value>,
        error: Option<Value>,
    },
}

/// Parses a text frame; a frame that is neither a notification nor a
/// response is an error with the reason.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let src = obj.get("src").and_then(Value::as_str).map(str::to_string);
    if let Some(method) = obj.get("method").and_then(Value::as_str) {
        let params = match obj.get("params") {
            Some(Value::Object(p)) => p.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err("params is not an object".into()),
        };
        let ts = params.get("ts").and_then(Value::as_f64);
        return Ok(Frame::Notify {
            method: method.to_string(),
            src,
            ts,
            params,
        });
    }
    if let Some(id) = obj.get("id").and_then(Value::as_i64) {
        return Ok(Frame::Response {
            id,
            src,
            result: obj.get("result").cloned(),
            error: obj.get("error").cloned(),
        });
    }
    Err("neither a notification (method) nor a response (id)".into())
}

/// The component map of a status notification: the flat form
/// (`params.switch:0`) or the nested one (`params.device_status.switch:0`),
/// without `ts`.
pub fn status_components(params: &Map<String, Value>) -> Map<String, Value> {
    let mut out = match params.get("device_status") {
        Some(Value::Object(nested)) => nested.clone(),
        _ => params.clone(),
    };
    out.remove("ts");
    out
}

/// Deep-merges `update` into `status`: objects merge key by key, `null`
/// removes a key, anything else replaces.
pub fn merge(status: &mut Map<String, Value>, update: &Map<String, Value>) {
    for (k, v) in update {
        match (status.get_mut(k), v) {
            (_, Value::Null) => {
                status.remove(k);
            }
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
            _ => {
                status.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The values a partial `switch:N` object carries (absent stays None).
pub fn switch_values(component: &Value) -> Values {
    let dec = |v: Option<&Value>| v.and_then(Value::as_f64).and_then(crate::decimal::from_f64);
    Values {
        apower_w: dec(component.get("apower")),
        voltage_v: dec(component.get("voltage")),
        current_a: dec(component.get("current")),
        energy_total_wh: dec(component.get("aenergy").and_then(|a| a.get("total"))),
    }
}

/// Fields that make a `switch:N` or `pm1:N` a metered channel.
const METERING: [&str; 4] = ["apower", "voltage", "current", "aenergy"];

/// Whether a component object measures anything (a Mini 1 Gen4 relay or
/// the relay of an EM Gen3 does not).
pub fn is_metered(component: &Value) -> bool {
    component.as_object().is_some_and(|o| {
        METERING
            .iter()
            .any(|f| o.get(*f).is_some_and(|v| !v.is_null()))
    })
}

/// The channel a status key names: `switch:N` or `pm1:N`.
pub fn channel_key(key: &str) -> Option<ChannelKey> {
    let (kind, id) = key.split_once(':')?;
    Some((Component::parse(kind)?, id.parse().ok()?))
}

/// Switch and pm1 channels in a component map: (channel, component
/// object), sorted.
pub fn channels(components: &Map<String, Value>) -> Vec<(ChannelKey, &Value)> {
    let mut out: Vec<(ChannelKey, &Value)> = components
        .iter()
        .filter_map(|(k, v)| Some((channel_key(k)?, v)))
        .filter(|(_, v)| v.is_object())
        .collect();
    out.sort_by_key(|(c, _)| *c);
    out
}

/// Whether the merged status has a meter worth a `power_readings` row.
pub fn has_meter(status: &Map<String, Value>) -> bool {
    status.keys().any(|k| k == "em:0" || k.starts_with("em1:"))
}

/// The meter reading of a merged status, if any.
pub fn meter(status: &Map<String, Value>) -> Option<crate::shelly::status::DeviceStatus> {
    let mut only_meter = status.clone();
    only_meter.retain(|k, _| k == "em:0" || k.starts_with("em1:") || k == "sys");
    parse_status(&Value::Object(only_meter))
        .ok()
        .filter(|s| s.meter.is_some())
}

/// The highest channel id of a switch, pm1, em or em1 component (devices
/// have at most a few; the same bound as polled statuses):
/// `switch:-1` or `switch:2147483647` is refused.
pub use crate::shelly::status::MAX_CHANNEL;
/// Top-level keys a device's merged status may hold (a Pro 4PM has ~20).
pub const MAX_KEYS: usize = 64;
/// Values (at any depth) a device's merged status may hold.
pub const MAX_VALUES: usize = 4096;

/// Components whose id is a channel and whose values are measurements.
const MEASURED: [&str; 4] = ["switch", "pm1", "em", "em1"];

/// Refuses components a device could not honestly send: a channel id
/// outside 0..=MAX_CHANNEL, a measurement outside its physical range.
pub fn check_components(components: &Map<String, Value>) -> Result<(), String> {
    for (key, v) in components {
        let Some((kind, id)) = key.split_once(':') else {
            continue;
        };
        if !MEASURED.contains(&kind) {
            continue;
        }
        if !id
            .parse::<i32>()
            .is_ok_and(|n| (0..=MAX_CHANNEL).contains(&n))
        {
            return Err(format!("{}: channel outside 0..={MAX_CHANNEL}", shown(key)));
        }
        if let Value::Object(fields) = v {
            for (field, x) in fields {
                check_measure(key, field, x)?;
            }
        }
    }
    Ok(())
}

fn check_measure(key: &str, field: &str, x: &Value) -> Result<(), String> {
    use crate::device::Quantity;
    let (q, x) = match (field, x) {
        ("aenergy" | "ret_aenergy", Value::Object(e)) => (Quantity::Counter, e.get("total")),
        ("temperature", Value::Object(t)) => (Quantity::Temperature, t.get("tC")),
        (f, x) if f.ends_with("act_power") || f.ends_with("aprt_power") || f == "apower" => {
            (Quantity::Power, Some(x))
        }
        (f, x) if f.ends_with("voltage") => (Quantity::Voltage, Some(x)),
        (f, x) if f.ends_with("current") => (Quantity::Current, Some(x)),
        (f, x) if f.ends_with("freq") => (Quantity::Frequency, Some(x)),
        (f, x) if f.ends_with("pf") => (Quantity::PowerFactor, Some(x)),
        _ => return Ok(()),
    };
    let Some(n) = x.and_then(Value::as_f64) else {
        return Ok(());
    };
    let out = |e: String| format!("{}.{}: {e}", shown(key), shown(field));
    let d = crate::decimal::from_f64(n)
        .ok_or_else(|| out(format!("{} {n} is out of range", q.name())))?;
    crate::device::check(q, d)
        .map(|_| ())
        .map_err(|e| out(e.to_string()))
}

/// A device-chosen key, short and escaped, for a log line.
fn shown(key: &str) -> String {
    let k: String = key.chars().take(40).collect();
    format!("{k:?}")
}

/// Whether a merged status stays within MAX_KEYS and MAX_VALUES.
pub fn check_size(status: &Map<String, Value>) -> Result<(), String> {
    fn values(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(values).sum::<usize>(),
            Value::Array(a) => 1 + a.iter().map(values).sum::<usize>(),
            _ => 1,
        }
    }
    if status.len() > MAX_KEYS {
        return Err(format!(
            "the status would hold more than {MAX_KEYS} components"
        ));
    }
    if status.values().map(values).sum::<usize>() > MAX_VALUES {
        return Err(format!(
            "the status would hold more than {MAX_VALUES} values"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_docs_notifystatus_example_parses() {
        let f = parse_frame(include_str!(
            "../../tests/fixtures/shelly/notifystatus-switch-docs-example.json"
        ))
        .unwrap();
        let Frame::Notify {
            method,
            src,
            ts,
            params,
        } = f
        else {
            panic!()
        };
        assert_eq!(
            (method.as_str(), src.as_deref(), ts),
            (
                "NotifyStatus",
                Some("shellypro4pm-f008d1d8b8b8"),
                Some(1631186545.04)
            )
        );
        assert_eq!(status_components(&params)["switch:0"]["output"], true);
        assert!(!status_components(&params).contains_key("ts"));
    }

    #[test]
    fn responses_and_garbage() {
        let r = parse_frame(r#"{"id":7,"src":"dev","result":{"id":"dev"}}"#).unwrap();
        assert!(matches!(r, Frame::Response { id: 7, .. }));
        let e = parse_frame(include_str!(
            "../../tests/fixtures/shelly/ws-rpc-401-auth-challenge.json"
        ))
        .unwrap();
        assert!(matches!(
            e,
            Frame::Response {
                id: 18,
                error: Some(_),
                ..
            }
        ));
        assert!(parse_frame("{not json")
            .unwrap_err()
            .starts_with("not JSON"));
        assert_eq!(parse_frame("[1]").unwrap_err(), "not a JSON object");
        assert!(parse_frame(r#"{"foo":1}"#).unwrap_err().contains("neither"));
        assert_eq!(
            parse_frame(r#"{"method":"X","params":3}"#).unwrap_err(),
            "params is not an object"
        );
    }

    #[test]
    fn partial_updates_merge_over_the_full_status_and_null_removes() {
        let mut status = json!({"switch:0": {"id":0,"output":true,"apower":120.5,"voltage":230.1,"aenergy":{"total":10.0,"minute_ts":60}}, "ble": {}})
            .as_object().unwrap().clone();
        let upd = json!({"switch:0": {"voltage": 231.0, "aenergy": {"total": 10.5}}, "ble": null});
        merge(&mut status, upd.as_object().unwrap());
        assert_eq!(status["switch:0"]["apower"], 120.5);
        assert_eq!(status["switch:0"]["voltage"], 231.0);
        assert_eq!(status["switch:0"]["aenergy"]["total"], 10.5);
        assert_eq!(status["switch:0"]["aenergy"]["minute_ts"], 60);
        assert!(!status.contains_key("ble"));
    }

    #[test]
    fn channels_and_magnitudes_a_device_cannot_have_are_refused() {
        let c = |v: Value| check_components(v.as_object().unwrap());
        assert!(c(
            json!({"switch:0": {"apower": 120.5, "voltage": 230.1, "aenergy": {"total": 10530.4}},
                          "em1:2": {"act_power": -1899.8, "pf": -0.9, "freq": 50.0},
                          "em:0": {"a_act_power": 900.0, "n_current": 0.1},
                          "input:100": {}, "sys": {"unixtime": 1}})
        )
        .is_ok());
        for bad in [
            json!({"switch:-1": {}}),
            json!({"switch:2147483647": {}}),
            json!({"switch:16": {}}),
            json!({"pm1:x": {}}),
            json!({"switch:0": {"apower": 1e300}}),
            json!({"em1:0": {"act_power": 5e28}}),
            json!({"em:0": {"total_act_power": -2e7}}),
            json!({"switch:0": {"aenergy": {"total": 1e13}}}),
            json!({"switch:0": {"temperature": {"tC": 5000.0}}}),
            json!({"em:0": {"c_voltage": 1e6}}),
        ] {
            assert!(c(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn merged_status_size_is_bounded() {
        let mut many = Map::new();
        for i in 0..=MAX_KEYS {
            many.insert(format!("k{i}"), json!(1));
        }
        assert!(check_size(&many).is_err());
        many.remove("k0");
        assert!(check_size(&many).is_ok());
        let deep = json!({"sys": {"x": (0..MAX_VALUES).collect::<Vec<_>>()}});
        assert!(check_size(deep.as_object().unwrap()).is_err());
    }

    #[test]
    fn switch_and_pm1_channels_are_told_apart_and_unmetered_relays_known() {
        let c = json!({"switch:0": {"id": 0, "output": true}, "pm1:0": {"apower": 3.0},
                       "switch:1": {"voltage": 230.0}, "em1:0": {"act_power": 1.0}, "input:0": {}});
        let found: Vec<ChannelKey> = channels(c.as_object().unwrap())
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            found,
            [
                (Component::Switch, 0),
                (Component::Switch, 1),
                (Component::Pm1, 0)
            ]
        );
        assert!(!is_metered(&c["switch:0"]));
        assert!(is_metered(&c["switch:1"]) && is_metered(&c["pm1:0"]));
    }

    #[test]
    fn nested_device_status_is_accepted() {
        let params = json!({"ts": 100.0, "device_status": {"switch:1": {"apower": 5.5}}});
        let c = status_components(params.as_object().unwrap());
        assert_eq!(channels(&c).len(), 1);
        assert_eq!(
            switch_values(channels(&c)[0].1).apower_w,
            Some("5.5".parse().unwrap())
        );
    }
}

//! Outbound-WebSocket frames from devices (pure logic): telling
//! notifications from responses, and merging partial status updates over
//! the last full status.

use crate::minute_log::Values;
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

/// Switch channels in a component map: (channel, component object).
pub fn switches(components: &Map<String, Value>) -> Vec<(i32, &Value)> {
    let mut out: Vec<(i32, &Value)> = components
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("switch:")?.parse().ok()?, v)))
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
    fn nested_device_status_is_accepted() {
        let params = json!({"ts": 100.0, "device_status": {"switch:1": {"apower": 5.5}}});
        let c = status_components(params.as_object().unwrap());
        assert_eq!(switches(&c).len(), 1);
        assert_eq!(
            switch_values(switches(&c)[0].1).apower_w,
            Some("5.5".parse().unwrap())
        );
    }
}

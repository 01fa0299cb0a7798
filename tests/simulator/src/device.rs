//! Payloads of the simulated devices, shaped like the real ones in
//! `tests/fixtures/shelly/` (copied verbatim from `shared/fixtures`).

use super::{DeviceKind, Profile, SimConfig};
use serde_json::{json, Map, Value};

/// The real Pro 3EM `Shelly.GetStatus` the live values come from.
pub const PRO3EM_STATUS: &str =
    include_str!("../../fixtures/shelly/pro3em-shelly-getstatus-triphase.json");

pub fn device_id(cfg: &SimConfig) -> String {
    let mac = cfg.mac.to_ascii_lowercase();
    match cfg.kind {
        DeviceKind::Em3Gen3 => format!("shelly3em63g3-{mac}"),
        DeviceKind::Pro3Em => format!("shellypro3em-{mac}"),
        DeviceKind::Pro4Pm => format!("shellypro4pm-{mac}"),
        DeviceKind::PmMiniGen3 => format!("shellypmminig3-{mac}"),
        DeviceKind::EmGen3 => format!("shellyemg3-{mac}"),
    }
}

pub fn device_info(cfg: &SimConfig) -> Value {
    let auth = cfg.password.is_some();
    let id = device_id(cfg);
    let (model, gen, app, fw_id, ver) = match cfg.kind {
        // The 3EM-63 Gen3's `app` string is not documented anywhere we could
        // find; this value is a stand-in. shellyctl identifies it by `model`.
        DeviceKind::Em3Gen3 => (
            "S3EM-003CXCEU63",
            3,
            "S3EM63G3",
            "20250924-095400/1.7.1-g8a5c1e4",
            "1.7.1",
        ),
        DeviceKind::Pro3Em => (
            "SPEM-003CEBEU",
            2,
            "Pro3EM",
            "20231219-134001/1.1.0-g34b5d4f",
            "1.1.0",
        ),
        DeviceKind::Pro4Pm => (
            "SPSW-004PE16EU",
            2,
            "Pro4PM",
            "20230912-082358/1.0.3-g6176478",
            "1.0.3",
        ),
        DeviceKind::PmMiniGen3 => (
            "S3PM-001PCEU16",
            3,
            "MiniPMG3",
            "20250924-095400/1.7.1-g8a5c1e4",
            "1.7.1",
        ),
        DeviceKind::EmGen3 => (
            "S3EM-002CXCEU",
            3,
            "EMG3",
            "20250924-095400/1.7.1-g8a5c1e4",
            "1.7.1",
        ),
    };
    let mut v = json!({
        "name": null,
        "id": id,
        "mac": cfg.mac.to_ascii_uppercase(),
        "slot": 0,
        "model": model,
        "gen": gen,
        "fw_id": fw_id,
        "ver": ver,
        "app": app,
        "auth_en": auth,
        "auth_domain": if auth { Value::String(device_id(cfg)) } else { Value::Null },
    });
    if matches!(cfg.kind, DeviceKind::Em3Gen3 | DeviceKind::Pro3Em) {
        v["profile"] = json!(cfg.profile.as_str());
    }
    v
}

/// A multiplier for the live values: 1 unless `wave` is on.
fn wave_factor(cfg: &SimConfig, now: i64) -> f64 {
    if !cfg.wave {
        return 1.0;
    }
    let x = (now % 600) as f64 / 600.0 * std::f64::consts::TAU;
    1.0 + 0.6 * x.sin()
}

/// `em1:N` and `em1data:N` (N = 0..) from the fixture's phases `phases`
/// (EM Gen3's two circuits, or the 3EM's monophase profile).
fn em1_channels(out: &mut Map<String, Value>, fixture: &Value, phases: &[&str], f: f64) {
    let (em, ed) = (&fixture["em:0"], &fixture["emdata:0"]);
    for (i, p) in phases.iter().enumerate() {
        out.insert(
            format!("em1:{i}"),
            json!({
                "id": i,
                "current": em[format!("{p}_current")],
                "voltage": em[format!("{p}_voltage")],
                "act_power": scaled(&em[format!("{p}_act_power")], f),
                "aprt_power": scaled(&em[format!("{p}_aprt_power")], f),
                "pf": em[format!("{p}_pf")],
                "freq": em[format!("{p}_freq")],
                "calibration": "factory"
            }),
        );
        out.insert(
            format!("em1data:{i}"),
            json!({
                "id": i,
                "total_act_energy": ed[format!("{p}_total_act_energy")],
                "total_act_ret_energy": ed[format!("{p}_total_act_ret_energy")],
            }),
        );
    }
}

fn scaled(v: &Value, f: f64) -> Value {
    match v.as_f64() {
        Some(x) if f != 1.0 => json!(((x * f) * 10.0).round() / 10.0),
        _ => v.clone(),
    }
}

fn sys(cfg: &SimConfig, now: i64, uptime: i64) -> Value {
    let fixture: Value = serde_json::from_str(PRO3EM_STATUS).expect("fixture");
    let mut sys = fixture["sys"].clone();
    let time = chrono::DateTime::from_timestamp(now, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default();
    sys["mac"] = json!(cfg.mac.to_ascii_uppercase());
    sys["time"] = json!(time);
    sys["unixtime"] = json!(now);
    sys["uptime"] = json!(uptime);
    if matches!(
        cfg.kind,
        DeviceKind::Em3Gen3 | DeviceKind::PmMiniGen3 | DeviceKind::EmGen3
    ) {
        // Gen3 firmware adds these (see the reference's 2PM Gen3 capture).
        sys["last_sync_ts"] = json!(now - now % 3600);
        sys["utc_offset"] = json!(0);
        sys["ram_min_free"] = json!(98304);
    }
    sys
}

/// `Shelly.GetStatus` at time `now`.
pub fn status(cfg: &SimConfig, now: i64, uptime: i64) -> Value {
    let fixture: Value = serde_json::from_str(PRO3EM_STATUS).expect("fixture");
    let f = wave_factor(cfg, now);
    let mut out = Map::new();
    out.insert("ble".into(), json!({}));
    out.insert("cloud".into(), json!({"connected": false}));
    match cfg.kind {
        DeviceKind::Pro4Pm => {
            out.insert("eth".into(), json!({"ip": "192.168.1.106"}));
            for i in 0..4 {
                out.insert(format!("input:{i}"), json!({"id": i, "state": false}));
                out.insert(format!("switch:{i}"), switch_status(i, now, f));
            }
        }
        DeviceKind::PmMiniGen3 => {
            out.insert("pm1:0".into(), pm1_status(now, f));
        }
        DeviceKind::EmGen3 => {
            // Two independent circuits (the fixture's phases A and B) and
            // the relay, which measures nothing.
            em1_channels(&mut out, &fixture, &["a", "b"], f);
            out.insert(
                "switch:0".into(),
                json!({"id": 0, "source": "init", "output": false}),
            );
        }
        kind => {
            if kind == DeviceKind::Pro3Em {
                out.insert("eth".into(), fixture["eth"].clone());
            }
            let em = &fixture["em:0"];
            match cfg.profile {
                Profile::Triphase => {
                    let mut em = em.clone();
                    for k in [
                        "a_act_power",
                        "b_act_power",
                        "c_act_power",
                        "total_act_power",
                        "a_aprt_power",
                        "b_aprt_power",
                        "c_aprt_power",
                        "total_aprt_power",
                    ] {
                        em[k] = scaled(&em[k], f);
                    }
                    out.insert("em:0".into(), em);
                    out.insert("emdata:0".into(), fixture["emdata:0"].clone());
                }
                Profile::Monophase => em1_channels(&mut out, &fixture, &["a", "b", "c"], f),
            }
            out.insert("temperature:0".into(), fixture["temperature:0"].clone());
        }
    }
    out.insert("modbus".into(), json!({}));
    out.insert("mqtt".into(), json!({"connected": false}));
    out.insert("sys".into(), sys(cfg, now, uptime));
    out.insert(
        "wifi".into(),
        json!({"sta_ip": "192.168.1.60", "status": "got ip", "ssid": "home", "rssi": -58}),
    );
    out.insert("ws".into(), json!({"connected": false}));
    Value::Object(out)
}

/// Live values of the Pro 4PM's channel `i`: a fridge, an idle socket,
/// a kettle and a standby load.
pub const SWITCH_CHANNELS: [(bool, f64, f64, f64, f64); 4] = [
    // (output, apower W, current A, pf, aenergy.total Wh)
    (true, 120.5, 0.602, 0.87, 10530.422),
    (false, 0.0, 0.0, 0.0, 12.5),
    (true, 1830.2, 7.961, 1.0, 98231.004),
    (true, 7.3, 0.061, 0.52, 1402.75),
];

/// Live values of the PM Mini Gen3's `pm1:0`: a pump.
pub const PM1_CHANNEL: (f64, f64, f64, f64) = (118.0, 0.52, 0.95, 2210.5);

fn pm1_status(now: i64, f: f64) -> Value {
    let (apower, current, pf, total) = PM1_CHANNEL;
    let minute_ts = now - now % 60;
    json!({
        "id": 0,
        "voltage": 229.8,
        "current": current,
        "apower": scaled(&json!(apower), f),
        "freq": 50.0,
        "pf": pf,
        "aenergy": {"total": total, "by_minute": [0.0, apower * 1000.0 / 60.0, apower * 1000.0 / 60.0], "minute_ts": minute_ts},
        "ret_aenergy": {"total": 0.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": minute_ts}
    })
}

fn switch_status(i: usize, now: i64, f: f64) -> Value {
    let (output, apower, current, pf, total) = SWITCH_CHANNELS[i];
    let minute_ts = now - now % 60;
    json!({
        "id": i,
        "source": "init",
        "output": output,
        "apower": scaled(&json!(apower), f),
        "voltage": 230.4,
        "freq": 50.0,
        "current": current,
        "pf": pf,
        "aenergy": {"total": total, "by_minute": [0.0, apower * 1000.0 / 60.0, apower * 1000.0 / 60.0], "minute_ts": minute_ts},
        "ret_aenergy": {"total": 0.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": minute_ts},
        "temperature": {"tC": 41.3, "tF": 106.3}
    })
}

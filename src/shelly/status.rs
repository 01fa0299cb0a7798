//! `Shelly.GetStatus` → typed readings. Unknown components and keys are
//! ignored; missing or `null` values stay `None` (never 0).

use crate::decimal::from_f64;
use crate::device::Quantity::{self, *};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PhaseReading {
    pub power_w: Option<Decimal>,
    pub voltage_v: Option<Decimal>,
    pub current_a: Option<Decimal>,
    pub apparent_power_va: Option<Decimal>,
    pub pf: Option<Decimal>,
    pub freq_hz: Option<Decimal>,
}

impl PhaseReading {
    fn is_empty(&self) -> bool {
        *self == PhaseReading::default()
    }
}

/// One meter's live values: `em:0` (triphase) or `em1:0..2` (the 3EM's
/// monophase profile, the EM Gen3 and Pro EM: channels 0/1/2 stored in the
/// phase A/B/C columns). `em1` channels measure independent circuits (often
/// grid and PV), so they have no device total: each is reported on its own.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MeterReading {
    /// `em:0` or `em1`.
    pub component: String,
    pub total_power_w: Option<Decimal>,
    pub total_apparent_power_va: Option<Decimal>,
    pub total_current_a: Option<Decimal>,
    pub neutral_current_a: Option<Decimal>,
    pub phases: [PhaseReading; 3],
}

fn switch_component() -> String {
    "switch".into()
}

/// A metered channel: `switch:N` with a power meter, or `pm1:N` (PM Mini
/// Gen3, Plug PM Gen3: a meter without an output).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SwitchReading {
    /// `switch` or `pm1`.
    #[serde(default = "switch_component")]
    pub component: String,
    pub channel: i32,
    pub output: Option<bool>,
    pub apower_w: Option<Decimal>,
    pub voltage_v: Option<Decimal>,
    pub current_a: Option<Decimal>,
    pub pf: Option<Decimal>,
    pub freq_hz: Option<Decimal>,
    pub energy_total_wh: Option<Decimal>,
    pub returned_energy_total_wh: Option<Decimal>,
    pub temperature_c: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DeviceStatus {
    /// `sys.unixtime`; `None` before the device has synced its clock.
    pub device_unixtime: Option<i64>,
    pub meter: Option<MeterReading>,
    pub switches: Vec<SwitchReading>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatusError {
    #[error("status is not a JSON object")]
    NotAnObject,
    #[error("{component}: {detail}")]
    BadComponent { component: String, detail: String },
    #[error("status has no meter (em:0, em1:N, pm1:N) or switch (switch:N) component with values")]
    NothingToRecord,
}

#[derive(Deserialize, Default)]
struct EmRaw {
    a_act_power: Option<f64>,
    b_act_power: Option<f64>,
    c_act_power: Option<f64>,
    a_voltage: Option<f64>,
    b_voltage: Option<f64>,
    c_voltage: Option<f64>,
    a_current: Option<f64>,
    b_current: Option<f64>,
    c_current: Option<f64>,
    a_aprt_power: Option<f64>,
    b_aprt_power: Option<f64>,
    c_aprt_power: Option<f64>,
    a_pf: Option<f64>,
    b_pf: Option<f64>,
    c_pf: Option<f64>,
    a_freq: Option<f64>,
    b_freq: Option<f64>,
    c_freq: Option<f64>,
    n_current: Option<f64>,
    total_current: Option<f64>,
    total_act_power: Option<f64>,
    total_aprt_power: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Em1Raw {
    act_power: Option<f64>,
    voltage: Option<f64>,
    current: Option<f64>,
    aprt_power: Option<f64>,
    pf: Option<f64>,
    freq: Option<f64>,
}

#[derive(Deserialize, Default)]
struct EnergyRaw {
    total: Option<f64>,
}

#[derive(Deserialize, Default)]
struct TemperatureRaw {
    #[serde(rename = "tC")]
    t_c: Option<f64>,
}

/// `switch:N` and `pm1:N` (which has no `output`).
#[derive(Deserialize, Default)]
struct SwitchRaw {
    output: Option<bool>,
    apower: Option<f64>,
    voltage: Option<f64>,
    current: Option<f64>,
    pf: Option<f64>,
    freq: Option<f64>,
    aenergy: Option<EnergyRaw>,
    ret_aenergy: Option<EnergyRaw>,
    temperature: Option<TemperatureRaw>,
}

type Result<T> = std::result::Result<T, StatusError>;

fn component<T: for<'de> Deserialize<'de> + Default>(key: &str, v: &Value) -> Result<Option<T>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) if m.is_empty() => Ok(None),
        other => T::deserialize(other)
            .map(Some)
            .map_err(|e| StatusError::BadComponent {
                component: key.to_string(),
                detail: e.to_string(),
            }),
    }
}

/// A device value as an exact decimal within its physical range.
fn dec(key: &str, q: Quantity, v: Option<f64>) -> Result<Option<Decimal>> {
    v.map(|x| {
        from_f64(x)
            .ok_or_else(|| format!("value {x} is out of range"))
            .and_then(|d| crate::device::check(q, d).map_err(|e| e.to_string()))
            .map_err(|detail| StatusError::BadComponent {
                component: key.to_string(),
                detail,
            })
    })
    .transpose()
}

/// Switch and PM channels: devices have at most a handful.
pub const MAX_CHANNEL: i32 = 15;

/// Parses a `Shelly.GetStatus` result.
pub fn parse_status(v: &Value) -> Result<DeviceStatus> {
    let obj = v.as_object().ok_or(StatusError::NotAnObject)?;
    let device_unixtime = obj
        .get("sys")
        .and_then(|s| s.get("unixtime"))
        .and_then(Value::as_i64);
    let meter = match obj.get("em:0") {
        Some(em) => parse_em("em:0", em)?,
        None => parse_em1(obj)?,
    };
    let switches = parse_switches(obj)?;
    // A device whose only components are switches without a meter (Shelly
    // 1 Mini Gen4, the relay of an EM Gen3) has nothing to record, and that
    // is no failure; a meter that reads empty (after a reboot) is.
    let metering_keys = obj
        .keys()
        .any(|k| k == "em:0" || k.starts_with("em1:") || k.starts_with("pm1:"));
    let any_switch = obj.keys().any(|k| k.starts_with("switch:"));
    if meter.is_none() && switches.is_empty() && (metering_keys || !any_switch) {
        return Err(StatusError::NothingToRecord);
    }
    Ok(DeviceStatus {
        device_unixtime,
        meter,
        switches,
    })
}

fn parse_em(key: &str, v: &Value) -> Result<Option<MeterReading>> {
    let Some(r) = component::<EmRaw>(key, v)? else {
        return Ok(None);
    };
    let phase = |p: f64s| -> Result<PhaseReading> {
        Ok(PhaseReading {
            power_w: dec(key, Power, p.0)?,
            voltage_v: dec(key, Voltage, p.1)?,
            current_a: dec(key, Current, p.2)?,
            apparent_power_va: dec(key, Power, p.3)?,
            pf: dec(key, PowerFactor, p.4)?,
            freq_hz: dec(key, Frequency, p.5)?,
        })
    };
    let phases = [
        phase((
            r.a_act_power,
            r.a_voltage,
            r.a_current,
            r.a_aprt_power,
            r.a_pf,
            r.a_freq,
        ))?,
        phase((
            r.b_act_power,
            r.b_voltage,
            r.b_current,
            r.b_aprt_power,
            r.b_pf,
            r.b_freq,
        ))?,
        phase((
            r.c_act_power,
            r.c_voltage,
            r.c_current,
            r.c_aprt_power,
            r.c_pf,
            r.c_freq,
        ))?,
    ];
    Ok(Some(MeterReading {
        component: key.to_string(),
        total_power_w: dec(key, Power, r.total_act_power)?,
        total_apparent_power_va: dec(key, Power, r.total_aprt_power)?,
        total_current_a: dec(key, Current, r.total_current)?,
        neutral_current_a: dec(key, Current, r.n_current)?,
        phases,
    }))
}

#[allow(non_camel_case_types)]
type f64s = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn parse_em1(obj: &Map<String, Value>) -> Result<Option<MeterReading>> {
    let mut phases: [PhaseReading; 3] = Default::default();
    let mut present = [false; 3];
    for (i, phase) in phases.iter_mut().enumerate() {
        let key = format!("em1:{i}");
        let Some(v) = obj.get(&key) else { continue };
        present[i] = true;
        if let Some(r) = component::<Em1Raw>(&key, v)? {
            *phase = PhaseReading {
                power_w: dec(&key, Power, r.act_power)?,
                voltage_v: dec(&key, Voltage, r.voltage)?,
                current_a: dec(&key, Current, r.current)?,
                apparent_power_va: dec(&key, Power, r.aprt_power)?,
                pf: dec(&key, PowerFactor, r.pf)?,
                freq_hz: dec(&key, Frequency, r.freq)?,
            };
        }
    }
    if !present.iter().any(|p| *p) || phases.iter().all(PhaseReading::is_empty) {
        return Ok(None);
    }
    // Independent circuits: no device total (their sum would add a PV
    // feed to a load, or a sub-circuit to its own supply).
    Ok(Some(MeterReading {
        component: "em1".into(),
        total_power_w: None,
        total_apparent_power_va: None,
        total_current_a: None,
        neutral_current_a: None,
        phases,
    }))
}

/// Metered `switch:N` and `pm1:N` channels; a switch without any meter
/// value is not a reading (never a row of NULL power).
fn parse_switches(obj: &Map<String, Value>) -> Result<Vec<SwitchReading>> {
    let mut out = Vec::new();
    for (key, v) in obj {
        let Some((kind, n)) = key
            .strip_prefix("switch:")
            .map(|n| ("switch", n))
            .or_else(|| key.strip_prefix("pm1:").map(|n| ("pm1", n)))
        else {
            continue;
        };
        let Some(channel) = n
            .parse::<i32>()
            .ok()
            .filter(|c| (0..=MAX_CHANNEL).contains(c))
        else {
            continue;
        };
        let Some(r) = component::<SwitchRaw>(key, v)? else {
            continue;
        };
        let reading = SwitchReading {
            component: kind.into(),
            channel,
            output: r.output,
            apower_w: dec(key, Power, r.apower)?,
            voltage_v: dec(key, Voltage, r.voltage)?,
            current_a: dec(key, Current, r.current)?,
            pf: dec(key, PowerFactor, r.pf)?,
            freq_hz: dec(key, Frequency, r.freq)?,
            energy_total_wh: dec(key, Counter, r.aenergy.and_then(|e| e.total))?,
            returned_energy_total_wh: dec(key, Counter, r.ret_aenergy.and_then(|e| e.total))?,
            temperature_c: dec(key, Temperature, r.temperature.and_then(|t| t.t_c))?,
        };
        let metered = [
            reading.apower_w,
            reading.voltage_v,
            reading.current_a,
            reading.energy_total_wh,
            reading.returned_energy_total_wh,
        ]
        .iter()
        .any(Option::is_some);
        if metered {
            out.push(reading);
        }
    }
    out.sort_by(|a, b| (&a.component, a.channel).cmp(&(&b.component, b.channel)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn d(s: &str) -> Option<Decimal> {
        Some(Decimal::from_str(s).unwrap())
    }

    fn fixture() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/shelly/pro3em-shelly-getstatus-triphase.json"
        ))
        .unwrap()
    }

    #[test]
    fn pro3em_triphase_fixture_parses_exactly() {
        let s = parse_status(&fixture()).unwrap();
        assert_eq!(s.device_unixtime, Some(1707326927));
        let m = s.meter.unwrap();
        assert_eq!(m.component, "em:0");
        assert_eq!(m.total_power_w, d("558.965"));
        assert_eq!(m.total_apparent_power_va, d("882.413"));
        assert_eq!(m.total_current_a, d("3.856"));
        assert_eq!(
            m.neutral_current_a, None,
            "n_current is null in the fixture"
        );
        assert_eq!(m.phases[0].power_w, d("375.5"));
        assert_eq!(m.phases[1].voltage_v, d("229.0"));
        assert_eq!(m.phases[2].current_a, d("0.428"));
        assert_eq!(m.phases[2].pf, d("0.53"));
        assert_eq!(m.phases[0].freq_hz, d("50"));
        assert!(s.switches.is_empty());
    }

    #[test]
    fn unknown_keys_are_ignored_and_missing_values_stay_none() {
        let mut v = fixture();
        let em = v["em:0"].as_object_mut().unwrap();
        em.remove("b_voltage");
        em.insert("c_current".into(), Value::Null);
        em.insert("a_flags".into(), json!(["overcurrent"]));
        v["matter"] = json!({"num_fabrics": 1});
        let m = parse_status(&v).unwrap().meter.unwrap();
        assert_eq!(m.phases[1].voltage_v, None);
        assert_eq!(m.phases[2].current_a, None);
        assert_eq!(m.phases[0].power_w, d("375.5"));
    }

    #[test]
    fn negative_power_is_export_and_kept_signed() {
        let mut v = fixture();
        v["em:0"]["a_act_power"] = json!(-1899.8);
        let m = parse_status(&v).unwrap().meter.unwrap();
        assert_eq!(m.phases[0].power_w, d("-1899.8"));
    }

    #[test]
    fn wrong_types_are_errors_naming_the_component() {
        let mut v = fixture();
        v["em:0"]["a_voltage"] = json!("229 V");
        let e = parse_status(&v).unwrap_err();
        assert!(e.to_string().starts_with("em:0: invalid type"), "{e}");
        assert_eq!(
            parse_status(&json!([1, 2])).unwrap_err(),
            StatusError::NotAnObject
        );
    }

    #[test]
    fn empty_or_null_meter_after_reboot_records_nothing() {
        let mut v = fixture();
        v["em:0"] = json!({});
        assert_eq!(parse_status(&v).unwrap_err(), StatusError::NothingToRecord);
        v["em:0"] = Value::Null;
        assert_eq!(parse_status(&v).unwrap_err(), StatusError::NothingToRecord);
    }

    #[test]
    fn em1_channels_are_independent_circuits_without_a_device_total() {
        let v = json!({
            "em1:0": {"id":0,"voltage":230.1,"current":1.5,"act_power":300.25,"aprt_power":345.0,"pf":0.87,"freq":50.0,"calibration":"factory"},
            "em1:1": {"id":1,"voltage":229.9,"current":0.5,"act_power":-100.5,"aprt_power":115.0,"pf":0.87,"freq":50.0,"calibration":"factory"},
            "em1:2": {"id":2,"voltage":231.0,"current":2.0,"act_power":400.0,"aprt_power":460.0,"pf":0.87,"freq":50.0,"calibration":"factory"},
            "em1data:0": {"id":0,"total_act_energy":1.0,"total_act_ret_energy":0.0},
            "sys": {"unixtime": null}
        });
        let s = parse_status(&v).unwrap();
        assert_eq!(s.device_unixtime, None);
        let m = s.meter.unwrap();
        assert_eq!(m.component, "em1");
        assert_eq!(m.total_power_w, None, "grid + PV is no total");
        assert_eq!(m.total_current_a, None);
        assert_eq!(m.phases[0].power_w, d("300.25"));
        assert_eq!(m.phases[1].power_w, d("-100.5"));
        assert_eq!(m.phases[2].voltage_v, d("231.0"));
    }

    #[test]
    fn pm1_channels_are_metered_channels_and_unmetered_switches_are_no_readings() {
        // PM Mini Gen3: pm1:0 only. Mini 1 Gen4: an unmetered switch only.
        // EM Gen3: em1:0, em1:1 and the relay switch:0 without a meter.
        let pm = json!({
            "pm1:0": {"id":0,"voltage":231.2,"current":0.52,"apower":118.0,"freq":50.0,
                      "aenergy":{"total":1234.5,"by_minute":[0,0,0],"minute_ts":1700000000},
                      "ret_aenergy":{"total":0.0}},
            "sys": {"unixtime": 1700000000}
        });
        let s = parse_status(&pm).unwrap();
        assert_eq!(s.switches.len(), 1);
        assert_eq!(
            (s.switches[0].component.as_str(), s.switches[0].channel),
            ("pm1", 0)
        );
        assert_eq!(s.switches[0].apower_w, d("118"));
        assert_eq!(s.switches[0].output, None);

        let mini = json!({"switch:0": {"id":0,"source":"button","output":true,"temperature":{"tC":40.0,"tF":104.0}},
                          "input:0": {"id":0,"state":false}});
        let s = parse_status(&mini).unwrap();
        assert!(
            s.switches.is_empty() && s.meter.is_none(),
            "nothing to record, no failure"
        );

        let em = json!({
            "em1:0": {"id":0,"voltage":230.0,"current":5.0,"act_power":1150.0},
            "em1:1": {"id":1,"voltage":230.0,"current":3.0,"act_power":-690.0},
            "switch:0": {"id":0,"output":false,"source":"init"}
        });
        let s = parse_status(&em).unwrap();
        assert!(s.switches.is_empty(), "the relay is not a reading");
        let m = s.meter.unwrap();
        assert_eq!(
            (m.phases[0].power_w, m.phases[1].power_w),
            (d("1150"), d("-690"))
        );
        assert_eq!(m.total_power_w, None);
    }

    #[test]
    fn monophase_total_is_none_when_a_channel_lacks_the_value() {
        let v = json!({
            "em1:0": {"id":0,"act_power":300.0},
            "em1:1": {"id":1,"act_power":null},
            "em1:2": {"id":2,"act_power":1.0}
        });
        let m = parse_status(&v).unwrap().meter.unwrap();
        assert_eq!(m.total_power_w, None);
        assert_eq!(m.phases[0].power_w, d("300"));
    }

    #[test]
    fn switches_parse_with_energy_counter_and_sorted_channels() {
        let v = json!({
            "switch:1": {"id":1,"source":"init","output":false,"apower":0.0,"voltage":230.4,"current":0.0,"pf":0.0,"freq":50.0,
                          "aenergy":{"total":12.5,"by_minute":[0.0,0.0,0.0],"minute_ts":1700000000},"temperature":{"tC":40.1,"tF":104.2}},
            "switch:0": {"id":0,"output":true,"apower":120.5,"voltage":230.4,"current":0.52,
                          "aenergy":{"total":10530.422,"by_minute":[1.0,2.0,3.0],"minute_ts":1700000000},
                          "ret_aenergy":{"total":3.25}},
            "input:0": {"id":0,"state":false}
        });
        let s = parse_status(&v).unwrap();
        assert!(s.meter.is_none());
        assert_eq!(s.switches.len(), 2);
        let s0 = &s.switches[0];
        assert_eq!((s0.channel, s0.output), (0, Some(true)));
        assert_eq!(s0.energy_total_wh, d("10530.422"));
        assert_eq!(s0.returned_energy_total_wh, d("3.25"));
        assert_eq!(s0.pf, None);
        assert_eq!(s0.temperature_c, None);
        assert_eq!(s.switches[1].temperature_c, d("40.1"));
        assert_eq!(s.switches[1].apower_w, d("0"));
    }
}

//! `EMData.GetData` / `EM1Data.GetData` pages → interval rows.
//!
//! A page holds `keys` and one or more data blocks (several after a power
//! loss), each with its own `ts` and `period`; record *i* of a block starts
//! at `ts + i*period`. Values are mapped by key name, never by position.
//!
//! Values are kept as the device's own number text (borrowed from the
//! body): it goes verbatim into NUMERIC columns, so energy is exact by
//! construction and no float is ever formatted back to text.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PageError {
    #[error("not a GetData page: {0}")]
    Json(String),
    #[error("the page has no `keys` (request it with add_keys=true)")]
    NoKeys,
    #[error("block {block}: period {period} is not a positive number of seconds")]
    BadPeriod { block: usize, period: i64 },
    #[error("block {block}, record {record}: {got} values for {expected} keys")]
    RowLength {
        block: usize,
        record: usize,
        got: usize,
        expected: usize,
    },
    #[error("next_record_ts {next} does not advance past the page's last record {last}")]
    NextNotAdvancing { next: i64, last: i64 },
    #[error("block {block}, record {record}, key {key}: {value} is not a number")]
    NotANumber {
        block: usize,
        record: usize,
        key: String,
        value: String,
    },
    #[error("{0} keys in one page (at most {MAX_KEYS})")]
    TooManyKeys(usize),
    #[error("key {0} is not a plain key name (A-Z a-z 0-9 _, at most 64)")]
    BadKey(String),
}

/// At most this many keys in a page (a 3EM sends 51).
pub const MAX_KEYS: usize = 256;
/// The longest recording period accepted (a day).
pub const MAX_PERIOD_S: i64 = 86_400;

/// A record (or the page's `next_record_ts`) refused at the edge: kept out
/// of the database and the cursor, reported with the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub ts: i64,
    pub reason: String,
}

/// What a value of a key measures, by the key's name.
fn quantity(key: &str) -> crate::device::Quantity {
    use crate::device::Quantity;
    if key.contains("energy") {
        Quantity::IntervalEnergy
    } else if key.contains("power") {
        Quantity::Power
    } else if key.contains("voltage") {
        Quantity::Voltage
    } else if key.contains("current") {
        Quantity::Current
    } else if key.contains("freq") {
        Quantity::Frequency
    } else if key.contains("pf") {
        Quantity::PowerFactor
    } else {
        Quantity::Counter
    }
}

fn period_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        N(i64),
        S(String),
    }
    match P::deserialize(d)? {
        P::N(n) => Ok(n),
        // The docs type `period` as a string; real devices send a number.
        P::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(borrow)]
    data: Vec<RawBlock<'a>>,
    #[serde(default)]
    next_record_ts: Option<i64>,
}

#[derive(Deserialize)]
struct RawBlock<'a> {
    ts: i64,
    #[serde(deserialize_with = "period_number_or_string")]
    period: i64,
    #[serde(borrow)]
    values: Vec<Vec<&'a RawValue>>,
}

/// One stored record: its time span and its values in `keys` order, as
/// JSON number text (`None` for `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub ts: i64,
    pub period: i64,
    pub values: Vec<Option<&'a str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<'a> {
    pub keys: Vec<String>,
    pub blocks: usize,
    /// The plausible records (time window, physical ranges).
    pub records: Vec<Record<'a>>,
    /// `None` also when the device's value was implausible (then refused).
    pub next_record_ts: Option<i64>,
    /// Records and times refused, in page order.
    pub refused: Vec<Refusal>,
}

/// A JSON value's text as a number: `Ok(None)` for null, `Err` for
/// anything that is not a number (strings, objects, booleans).
fn number_text(v: &RawValue) -> Result<Option<&str>, ()> {
    let t = v.get();
    match t.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Some(t)),
        _ if t == "null" => Ok(None),
        _ => Err(()),
    }
}

/// Parses and validates a page. `known_keys` is used when the page was
/// requested without keys. `now` bounds the device's clock: a record whose
/// start or end lies outside the plausible window (see `device::check_time`)
/// or that carries a value outside its physical range is refused (listed in
/// `refused`, not returned), and so is an implausible `next_record_ts`.
/// A page that is not a GetData page at all is an error.
pub fn parse_page<'a>(
    body: &'a str,
    known_keys: Option<&[String]>,
    now: i64,
) -> Result<Page<'a>, PageError> {
    use crate::device::{check_text, check_time};
    let raw: RawPage<'a> =
        serde_json::from_str(body).map_err(|e| PageError::Json(e.to_string()))?;
    let keys = match (raw.keys, known_keys) {
        (Some(k), _) => k,
        (None, Some(k)) => k.to_vec(),
        (None, None) => return Err(PageError::NoKeys),
    };
    if keys.len() > MAX_KEYS {
        return Err(PageError::TooManyKeys(keys.len()));
    }
    if let Some(k) = keys.iter().find(|k| {
        k.is_empty() || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }) {
        return Err(PageError::BadKey(format!(
            "{:?}",
            k.chars().take(64).collect::<String>()
        )));
    }
    let quantities: Vec<_> = keys.iter().map(|k| quantity(k)).collect();
    let mut records = Vec::with_capacity(raw.data.iter().map(|b| b.values.len()).sum());
    for (bi, block) in raw.data.iter().enumerate() {
        if block.period <= 0 || block.period > MAX_PERIOD_S {
            return Err(PageError::BadPeriod {
                block: bi,
                period: block.period,
            });
        }
        for (ri, row) in block.values.iter().enumerate() {
            if row.len() != keys.len() {
                return Err(PageError::RowLength {
                    block: bi,
                    record: ri,
                    got: row.len(),
                    expected: keys.len(),
                });
            }
        }
    }
    let mut refused = Vec::new();
    for (bi, block) in raw.data.iter().enumerate() {
        for (ri, row) in block.values.iter().enumerate() {
            let mut values = Vec::with_capacity(row.len());
            for (ki, v) in row.iter().enumerate() {
                values.push(number_text(v).map_err(|_| PageError::NotANumber {
                    block: bi,
                    record: ri,
                    key: keys[ki].clone(),
                    value: v.get().chars().take(40).collect(),
                })?);
            }
            // Checked: a hostile block.ts near i64::MAX must not wrap.
            let ts = (ri as i64)
                .checked_mul(block.period)
                .and_then(|o| block.ts.checked_add(o));
            let end = ts.and_then(|t| t.checked_add(block.period));
            let (Some(ts), Some(end)) = (ts, end) else {
                refused.push(Refusal {
                    ts: block.ts,
                    reason: format!("block {bi}, record {ri}: time overflows"),
                });
                continue;
            };
            if let Err(e) = check_time(ts, now).and_then(|_| check_time(end, now)) {
                refused.push(Refusal {
                    ts,
                    reason: format!("record at ts={ts}: {e}"),
                });
                continue;
            }
            let bad = values
                .iter()
                .zip(&quantities)
                .zip(&keys)
                .find_map(|((v, q), k)| {
                    v.and_then(|t| check_text(*q, t).err().map(|e| format!("{k}: {e}")))
                });
            if let Some(why) = bad {
                refused.push(Refusal {
                    ts,
                    reason: format!("record at ts={ts}: {why}"),
                });
                continue;
            }
            records.push(Record {
                ts,
                period: block.period,
                values,
            });
        }
    }
    if let (Some(next), Some(last)) = (raw.next_record_ts, records.last()) {
        if next <= last.ts {
            return Err(PageError::NextNotAdvancing {
                next,
                last: last.ts,
            });
        }
    }
    let next_record_ts = match raw.next_record_ts.map(|n| check_time(n, now)) {
        Some(Err(e)) => {
            refused.push(Refusal {
                ts: raw.next_record_ts.unwrap_or_default(),
                reason: format!("next_record_ts: {e}"),
            });
            None
        }
        Some(Ok(n)) => Some(n),
        None => None,
    };
    Ok(Page {
        keys,
        blocks: raw.data.len(),
        records,
        next_record_ts,
        refused,
    })
}

/// One stored block of records (`EMData.GetRecords` / `EM1Data.GetRecords`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct RecordBlock {
    pub ts: i64,
    pub period: i64,
    pub records: i64,
}

/// The blocks of records a device holds for one interval database
/// (`namespace` is `EMData` or `EM1Data`).
pub fn get_records(
    client: &super::Client,
    namespace: &str,
    id: i64,
) -> anyhow::Result<Vec<RecordBlock>> {
    #[derive(Deserialize)]
    struct Blocks {
        data_blocks: Vec<RecordBlock>,
    }
    let b: Blocks = client.call(
        &format!("{namespace}.GetRecords"),
        &[("id", id.to_string())],
    )?;
    Ok(b.data_blocks)
}

/// One per-channel quantity of an interval record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The device's key, after the phase prefix (`a_`, `b_`, `c_`) in
    /// EMData; the whole key in EM1Data.
    pub suffix: &'static str,
    /// The `energy_intervals` column it is stored in.
    pub column: &'static str,
    pub unit: &'static str,
    /// Whether EM1Data (one channel per database) has it too.
    pub em1: bool,
}

const fn field(suffix: &'static str, column: &'static str, unit: &'static str, em1: bool) -> Field {
    Field {
        suffix,
        column,
        unit,
        em1,
    }
}

/// The one description of an interval record, in the order a real Pro
/// 3EM sends a phase's keys. It drives the parser's layout, the COPY
/// column list, and the simulator's GetData pages.
pub const FIELDS: [Field; 16] = [
    field("total_act_energy", "energy_wh", "Wh", true),
    field("fund_act_energy", "fund_energy_wh", "Wh", false),
    field("total_act_ret_energy", "returned_energy_wh", "Wh", true),
    field(
        "fund_act_ret_energy",
        "fund_returned_energy_wh",
        "Wh",
        false,
    ),
    field("lag_react_energy", "lag_reactive_varh", "varh", true),
    field("lead_react_energy", "lead_reactive_varh", "varh", true),
    field("max_act_power", "max_power_w", "W", true),
    field("min_act_power", "min_power_w", "W", true),
    field("max_aprt_power", "max_apparent_power_va", "VA", true),
    field("min_aprt_power", "min_apparent_power_va", "VA", true),
    field("max_voltage", "max_voltage_v", "V", true),
    field("min_voltage", "min_voltage_v", "V", true),
    field("avg_voltage", "avg_voltage_v", "V", true),
    field("max_current", "max_current_a", "A", true),
    field("min_current", "min_current_a", "A", true),
    field("avg_current", "avg_current_a", "A", true),
];

/// The neutral's keys in EMData (currents only), stored in the `N` row.
pub const NEUTRAL_SUFFIXES: [&str; 3] = ["max_current", "min_current", "avg_current"];

/// The per-channel value columns of `energy_intervals`, in `FIELDS` order
/// (`avg_power_w` is derived by the database).
pub fn columns() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|f| f.column)
}

/// EMData's keys: three phases of `FIELDS`, then the neutral currents.
pub fn triphase_keys() -> Vec<String> {
    let mut keys: Vec<String> = ["a_", "b_", "c_"]
        .iter()
        .flat_map(|p| FIELDS.iter().map(move |f| format!("{p}{}", f.suffix)))
        .collect();
    keys.extend(NEUTRAL_SUFFIXES.iter().map(|s| format!("n_{s}")));
    keys
}

/// EM1Data's keys (one channel).
pub fn em1_keys() -> Vec<String> {
    FIELDS
        .iter()
        .filter(|f| f.em1)
        .map(|f| f.suffix.to_string())
        .collect()
}

/// How a page's keys land in rows: one layout per channel row.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub channels: Vec<ChannelLayout>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelLayout {
    /// `A`, `B`, `C` or `N` (neutral: currents only).
    pub channel: String,
    /// Key index for each of the 16 device columns, if the device sends it.
    pub columns: [Option<usize>; 16],
    /// Keys of this channel kept in `meta` (no column of their own).
    pub meta: Vec<(String, usize)>,
}

/// Plans the rows for EMData (`phase_prefixed`: keys like `a_total_act_energy`,
/// plus `n_*` neutral currents) or EM1Data (unprefixed keys, one channel).
pub fn layout(keys: &[String], em1_channel: Option<&str>) -> Layout {
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let plan = |prefix: &str, channel: &str| -> ChannelLayout {
        let mut columns = [None; 16];
        for (c, f) in FIELDS.iter().enumerate() {
            columns[c] = index.get(format!("{prefix}{}", f.suffix).as_str()).copied();
        }
        let used: Vec<usize> = columns.iter().flatten().copied().collect();
        let meta = keys
            .iter()
            .enumerate()
            .filter(|(i, k)| k.starts_with(prefix) && !used.contains(i))
            .map(|(i, k)| (k[prefix.len()..].to_string(), i))
            .collect();
        ChannelLayout {
            channel: channel.to_string(),
            columns,
            meta,
        }
    };
    let mut channels = Vec::new();
    match em1_channel {
        Some(ch) => channels.push(plan("", ch)),
        None => {
            for (prefix, ch) in [("a_", "A"), ("b_", "B"), ("c_", "C"), ("n_", "N")] {
                let p = plan(prefix, ch);
                if p.columns.iter().any(Option::is_some) || !p.meta.is_empty() {
                    channels.push(p);
                }
            }
            // Keys that belong to no phase (none today) go with phase A.
            let prefixed = |k: &str| ["a_", "b_", "c_", "n_"].iter().any(|p| k.starts_with(p));
            if let Some(a) = channels.iter_mut().find(|c| c.channel == "A") {
                for (i, k) in keys.iter().enumerate() {
                    if !prefixed(k) {
                        a.meta.push((k.clone(), i));
                    }
                }
            }
        }
    }
    Layout { channels }
}

/// A device's interval database: `emdata:N` or `em1data:N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub key: String,
    /// RPC namespace: `EMData` or `EM1Data`.
    pub namespace: &'static str,
    pub id: i64,
}

impl Component {
    /// The channel an `em1data:N` record becomes: its phase in the
    /// monophase profile (em1:0..2 = A/B/C), like live readings.
    pub fn em1_channel(&self) -> Option<&'static str> {
        (self.namespace == "EM1Data").then(|| {
            ["A", "B", "C"]
                .get(self.id as usize)
                .copied()
                .unwrap_or("?")
        })
    }
}

impl Component {
    /// `emdata:N` or `em1data:N`; None for any other key.
    pub fn from_key(key: &str) -> Option<Component> {
        let (name, id) = key.split_once(':')?;
        // Devices have one emdata and up to three em1data (stored as phases
        // A/B/C); a status key with another id is not a component we trust.
        let id: i64 = id.parse().ok()?;
        let namespace = match name {
            "emdata" if (0..=15).contains(&id) => "EMData",
            "em1data" if (0..=2).contains(&id) => "EM1Data",
            _ => return None,
        };
        Some(Component {
            key: key.to_string(),
            namespace,
            id,
        })
    }
}

/// The interval databases a status advertises, in a stable order.
pub fn components_of(status: &serde_json::Value) -> Vec<Component> {
    let mut out: Vec<Component> = status
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| Component::from_key(k))
        .collect();
    out.sort_by(|a, b| (a.namespace, a.id).cmp(&(b.namespace, b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../../tests/fixtures/shelly/pro3em-emdata-getdata-page.json");
    /// A "now" after the fixture's records (2025-02-18).
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_real_pro3em_page_parses_with_timestamps_per_record() {
        let p = parse_page(PAGE, None, NOW).unwrap();
        assert_eq!(p.keys.len(), 51);
        assert_eq!(p.blocks, 1);
        assert_eq!(p.records.len(), 6);
        assert_eq!(p.records[0].ts, 1739876580);
        assert_eq!(p.records[5].ts, 1739876580 + 5 * 60);
        assert_eq!(p.records[0].period, 60);
        assert_eq!(p.next_record_ts, Some(1739876940));
        assert_eq!(p.records[0].values[0], Some("60.7312"));
    }

    #[test]
    fn the_layout_maps_keys_by_name_not_position() {
        let p = parse_page(PAGE, None, NOW).unwrap();
        let l = layout(&p.keys, None);
        let names: Vec<&str> = l.channels.iter().map(|c| c.channel.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "N"]);
        let a = &l.channels[0];
        let col = |name: &str| FIELDS.iter().position(|f| f.column == name).unwrap();
        let val = |name: &str| p.records[0].values[a.columns[col(name)].unwrap()];
        assert_eq!(val("energy_wh"), Some("60.7312"));
        assert_eq!(val("returned_energy_wh"), Some("0"));
        assert_eq!(val("max_power_w"), Some("4379.4"));
        assert_eq!(val("min_power_w"), Some("3099.6"));
        assert_eq!(val("avg_voltage_v"), Some("226.503"));
        assert_eq!(val("lead_reactive_varh"), Some("0"));
        assert!(a.meta.is_empty());
        let n = &l.channels[3];
        assert_eq!(
            p.records[0].values[n.columns[col("avg_current_a")].unwrap()],
            Some("0.027")
        );
        assert_eq!(n.columns[0], None, "the neutral has no energy");

        // Reversed key order gives the same values.
        let mut keys = p.keys.clone();
        keys.reverse();
        let rev = layout(&keys, None);
        assert_eq!(rev.channels[0].columns[0], Some(50));
    }

    #[test]
    fn the_one_layout_matches_the_real_pro3em_keys() {
        // The fixture's 51 keys are exactly FIELDS × phases + the neutral,
        // in the same order: the table, the parser and the simulator agree.
        let p = parse_page(PAGE, None, NOW).unwrap();
        assert_eq!(p.keys, triphase_keys());
        assert_eq!(em1_keys().len(), 14);
        assert_eq!(columns().count(), 16);
    }

    #[test]
    fn unknown_keys_are_kept_as_meta() {
        let keys: Vec<String> = ["total_act_energy", "total_act_ret_energy", "thd_voltage"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let l = layout(&keys, Some("B"));
        assert_eq!(l.channels[0].channel, "B");
        assert_eq!(l.channels[0].columns[0], Some(0));
        assert_eq!(l.channels[0].meta, vec![("thd_voltage".to_string(), 2)]);
    }

    #[test]
    fn several_blocks_each_keep_their_own_ts_and_period() {
        let body = r#"{"keys":["total_act_energy"],"data":[
            {"ts":1700001000,"period":60,"values":[[1.5],[2.5]]},
            {"ts":1700005000,"period":"300","values":[[3.25]]}]}"#;
        let p = parse_page(body, None, NOW).unwrap();
        let spans: Vec<(i64, i64)> = p.records.iter().map(|r| (r.ts, r.period)).collect();
        assert_eq!(
            spans,
            [(1700001000, 60), (1700001060, 60), (1700005000, 300)]
        );
        assert_eq!(p.blocks, 2);
        assert_eq!(p.next_record_ts, None);
    }

    #[test]
    fn malformed_pages_are_rejected_whole() {
        let short = r#"{"keys":["a","b"],"data":[{"ts":1,"period":60,"values":[[1,2],[3]]}]}"#;
        assert_eq!(
            parse_page(short, None, NOW).unwrap_err(),
            PageError::RowLength {
                block: 0,
                record: 1,
                got: 1,
                expected: 2
            }
        );
        let zero = r#"{"keys":["a"],"data":[{"ts":1,"period":0,"values":[[1]]}]}"#;
        assert!(matches!(
            parse_page(zero, None, NOW),
            Err(PageError::BadPeriod { .. })
        ));
        let stuck = r#"{"keys":["a"],"data":[{"ts":1700000100,"period":60,"values":[[1]]}],"next_record_ts":1700000100}"#;
        assert!(matches!(
            parse_page(stuck, None, NOW),
            Err(PageError::NextNotAdvancing { .. })
        ));
        assert!(matches!(
            parse_page("{\"keys\":[", None, NOW),
            Err(PageError::Json(_))
        ));
        let nokeys = r#"{"data":[]}"#;
        assert_eq!(
            parse_page(nokeys, None, NOW).unwrap_err(),
            PageError::NoKeys
        );
        let known = vec!["a".to_string()];
        assert_eq!(
            parse_page(nokeys, Some(&known), NOW).unwrap().records.len(),
            0
        );
    }

    #[test]
    fn implausible_times_and_values_are_refused_record_by_record() {
        // Block 1: 1970 (no time yet); block 2: one plausible record, one
        // with 1e400 Wh; block 3: in 2100; next_record_ts in 2100 too.
        let body = r#"{"keys":["a_total_act_energy","a_avg_voltage"],"data":[
            {"ts":0,"period":60,"values":[[1,230]]},
            {"ts":1700000000,"period":60,"values":[[1.5,230.1],[1e400,230]]},
            {"ts":4102444800,"period":60,"values":[[2,230]]}],
            "next_record_ts":4102444860}"#;
        let p = parse_page(body, None, NOW).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].ts, 1700000000);
        assert_eq!(p.next_record_ts, None, "never a cursor in 2100");
        let why: Vec<&str> = p.refused.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("1970-01-01T00:00:00Z"), "{}", why[0]);
        assert!(
            why[1].contains("a_total_act_energy: interval energy 1e400 is outside"),
            "{}",
            why[1]
        );
        assert!(why[2].contains("2100-01-01"), "{}", why[2]);
        assert!(why[3].starts_with("next_record_ts:"), "{}", why[3]);
        // A block time near i64::MAX never wraps around.
        let wrap = format!(
            r#"{{"keys":["a"],"data":[{{"ts":{},"period":86400,"values":[[1],[1]]}}]}}"#,
            i64::MAX - 10
        );
        let p = parse_page(&wrap, None, NOW).unwrap();
        assert!(p.records.is_empty());
        assert_eq!(p.refused.len(), 2);
        // Keys are plain names, and not too many.
        let bad = r#"{"keys":["a b\u001b[2J"],"data":[]}"#;
        let e = parse_page(bad, None, NOW);
        assert!(matches!(e, Err(PageError::BadKey(_))), "{e:?}");
        let many = format!(
            r#"{{"keys":[{}],"data":[]}}"#,
            (0..300)
                .map(|i| format!("\"k{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            parse_page(&many, None, NOW).unwrap_err(),
            PageError::TooManyKeys(300)
        );
    }

    #[test]
    fn null_values_stay_none() {
        let body = r#"{"keys":["total_act_energy","avg_voltage"],"data":[{"ts":1700000000,"period":60,"values":[[null,230.1]]}]}"#;
        let p = parse_page(body, None, NOW).unwrap();
        assert_eq!(p.records[0].values, vec![None, Some("230.1")]);
    }

    #[test]
    fn non_numbers_are_rejected_with_the_key() {
        let body = r#"{"keys":["total_act_energy","avg_voltage"],"data":[{"ts":1,"period":60,"values":[[1.5,"230 V"]]}]}"#;
        let e = parse_page(body, None, NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            "block 0, record 0, key avg_voltage: \"230 V\" is not a number"
        );
    }

    #[test]
    fn components_come_from_the_status_keys() {
        let st = serde_json::json!({"em:0": {}, "emdata:0": {}, "sys": {}});
        let c = components_of(&st);
        assert_eq!(
            c,
            vec![Component {
                key: "emdata:0".into(),
                namespace: "EMData",
                id: 0
            }]
        );
        let st =
            serde_json::json!({"em1data:2": {}, "em1data:0": {}, "em1data:1": {}, "em1:0": {}});
        let keys: Vec<String> = components_of(&st).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["em1data:0", "em1data:1", "em1data:2"]);
        assert!(components_of(&serde_json::json!({"switch:0": {}})).is_empty());
        // No fourth EM1Data channel: its records would have no phase.
        assert!(components_of(&serde_json::json!({"em1data:3": {}, "emdata:99": {}})).is_empty());
    }

    #[test]
    fn em1data_channels_are_phases() {
        let c = Component {
            key: "em1data:1".into(),
            namespace: "EM1Data",
            id: 1,
        };
        assert_eq!(c.em1_channel(), Some("B"));
        let c = Component {
            key: "emdata:0".into(),
            namespace: "EMData",
            id: 0,
        };
        assert_eq!(c.em1_channel(), None);
    }
}

//! Threshold-gated minute logging of pushed switch channels (pure logic).
//!
//! Each channel's values change when frames arrive (at the device's
//! timestamps). A row for minute M holds the values current at M, i.e. set
//! by the latest frame at or before M, and is written only while `apower`
//! is above the threshold. Minutes between frames are filled with the
//! values current at each of them (never the newest values), and every
//! minute is written at most once.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A channel's last known values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    pub apower_w: Option<Decimal>,
    pub voltage_v: Option<Decimal>,
    pub current_a: Option<Decimal>,
    pub energy_total_wh: Option<Decimal>,
}

impl Values {
    /// Applies a partial update: fields absent from it keep their value.
    pub fn merge(&mut self, u: &Values) {
        if u.apower_w.is_some() {
            self.apower_w = u.apower_w;
        }
        if u.voltage_v.is_some() {
            self.voltage_v = u.voltage_v;
        }
        if u.current_a.is_some() {
            self.current_a = u.current_a;
        }
        if u.energy_total_wh.is_some() {
            self.energy_total_wh = u.energy_total_wh;
        }
    }
}

/// What is remembered per device and channel (persisted, so a restart
/// continues where it stopped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The last minute (unix seconds, multiple of 60) already decided.
    pub last_minute: Option<i64>,
    /// Values as of `values_ts`.
    pub values: Values,
    pub values_ts: Option<i64>,
}

/// One `power_logs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub minute: i64,
    pub values: Values,
}

pub struct Settings {
    pub threshold_w: Decimal,
    /// The longest stretch of minutes filled with old values after a gap
    /// (a device or shellyctl that was away longer is not made up).
    pub max_fill_minutes: i64,
}

fn active(v: &Values, threshold: Decimal) -> bool {
    v.apower_w.is_some_and(|p| p > threshold)
}

/// The most minutes ever filled after a gap, whatever the settings say.
pub const MAX_FILL_MINUTES: i64 = 7 * 24 * 60;

fn minute_of(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(60))
}

/// Feeds one update at device time `ts`; returns the rows it completes.
///
/// `ts` should already be a plausible device time; the arithmetic is
/// checked anyway, so no `ts` or stored state can overflow it or make it
/// loop more than `max_fill_minutes` + 1 times.
pub fn update(state: &mut ChannelState, ts: i64, u: &Values, s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    // Frames from the past (late or replayed) cannot rewrite decided minutes.
    if state.values_ts.is_some_and(|vt| ts < vt) {
        return rows;
    }
    // Minutes strictly before `ts` that are not decided yet take the values
    // current until now.
    if let Some(vt) = state.values_ts {
        let first = match state.last_minute {
            Some(m) => m.checked_add(60),
            None if vt.rem_euclid(60) == 0 => Some(vt),
            None => minute_of(vt).checked_add(60),
        };
        let fill = s.max_fill_minutes.clamp(0, MAX_FILL_MINUTES);
        let earliest = minute_of(ts).saturating_sub(fill * 60);
        let mut next = first.map(|f| f.max(earliest));
        for _ in 0..=fill {
            let Some(m) = next.filter(|m| *m < ts) else {
                break;
            };
            if active(&state.values, s.threshold_w) {
                rows.push(Row {
                    minute: m,
                    values: state.values.clone(),
                });
            }
            state.last_minute = Some(m);
            next = m.checked_add(60);
        }
    }
    state.values.merge(u);
    state.values_ts = Some(ts);
    // A frame exactly on the minute carries that minute's values.
    if ts.rem_euclid(60) == 0 && state.last_minute.is_none_or(|m| m < ts) {
        if active(&state.values, s.threshold_w) {
            rows.push(Row {
                minute: ts,
                values: state.values.clone(),
            });
        }
        state.last_minute = Some(ts);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(w: i64) -> Values {
        Values {
            apower_w: Some(Decimal::from(w)),
            voltage_v: Some(Decimal::from(230)),
            current_a: None,
            energy_total_wh: Some(Decimal::from(w * 10)),
        }
    }

    fn s() -> Settings {
        Settings {
            threshold_w: Decimal::from(5),
            max_fill_minutes: 60,
        }
    }

    fn minutes(rows: &[Row]) -> Vec<(i64, i64)> {
        rows.iter()
            .map(|r| (r.minute, r.values.apower_w.unwrap().try_into().unwrap()))
            .collect()
    }

    #[test]
    fn one_row_per_minute_only_while_above_the_threshold() {
        let mut st = ChannelState::default();
        let mut rows = Vec::new();
        rows.extend(update(&mut st, 6000, &p(100), &s())); // on the minute
        rows.extend(update(&mut st, 6010, &p(120), &s()));
        rows.extend(update(&mut st, 6030, &p(2), &s())); // below threshold
        rows.extend(update(&mut st, 6060, &p(2), &s()));
        rows.extend(update(&mut st, 6090, &p(50), &s()));
        rows.extend(update(&mut st, 6125, &p(60), &s()));
        assert_eq!(minutes(&rows), vec![(6000, 100), (6120, 50)]);
    }

    #[test]
    fn missing_minutes_are_filled_with_the_values_current_then() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s());
        rows.extend(update(&mut st, 6130, &p(200), &s())); // 6060 and 6120 pass without frames
        rows.extend(update(&mut st, 6250, &p(300), &s()));
        assert_eq!(
            minutes(&rows),
            vec![
                (6000, 100),
                (6060, 100),
                (6120, 100),
                (6180, 200),
                (6240, 200)
            ]
        );
    }

    #[test]
    fn partial_updates_keep_the_other_fields() {
        let mut st = ChannelState::default();
        update(&mut st, 6000, &p(100), &s());
        let only_voltage = Values {
            voltage_v: Some(Decimal::from(231)),
            ..Values::default()
        };
        let rows = update(&mut st, 6060, &only_voltage, &s());
        assert_eq!(rows[0].values.apower_w, Some(Decimal::from(100)));
        assert_eq!(rows[0].values.voltage_v, Some(Decimal::from(231)));
    }

    #[test]
    fn replayed_or_late_frames_never_duplicate_minutes() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s());
        rows.extend(update(&mut st, 6060, &p(100), &s()));
        rows.extend(update(&mut st, 6000, &p(999), &s())); // late
        rows.extend(update(&mut st, 6060, &p(100), &s())); // replay
        assert_eq!(minutes(&rows), vec![(6000, 100), (6060, 100)]);
    }

    #[test]
    fn a_restored_state_continues_without_gaps_or_duplicates() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s());
        rows.extend(update(&mut st, 6070, &p(110), &s()));
        // Persist, restart, the device sends its full status at 6200.
        let mut restored: ChannelState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        rows.extend(update(&mut restored, 6200, &p(120), &s()));
        assert_eq!(
            minutes(&rows),
            vec![(6000, 100), (6060, 100), (6120, 110), (6180, 110)]
        );
    }

    #[test]
    fn no_time_overflows_or_spins() {
        let big = Settings {
            threshold_w: Decimal::from(5),
            max_fill_minutes: i64::MAX,
        };
        for (start, then) in [
            (6000, i64::MAX),
            (i64::MIN, i64::MAX),
            (i64::MAX - 5, i64::MAX),
            (i64::MIN, i64::MIN + 61),
        ] {
            let mut st = ChannelState::default();
            update(&mut st, start, &p(100), &big);
            let rows = update(&mut st, then, &p(100), &big);
            assert!(
                rows.len() as i64 <= MAX_FILL_MINUTES + 1,
                "{start} → {then}"
            );
        }
        let mut st = ChannelState {
            last_minute: Some(i64::MAX - 10),
            values: p(100),
            values_ts: Some(i64::MAX - 20),
        };
        assert!(update(&mut st, i64::MAX, &p(100), &s()).is_empty());
    }

    #[test]
    fn long_absences_are_not_made_up() {
        let mut st = ChannelState::default();
        update(&mut st, 6000, &p(100), &s());
        let rows = update(&mut st, 6000 + 5 * 3600 + 30, &p(100), &s());
        assert_eq!(
            rows.len(),
            61,
            "only the last hour before the frame is filled"
        );
    }
}

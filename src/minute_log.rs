//! Threshold-gated minute logging of pushed meter channels (pure logic).
//!
//! Each channel's values change when frames arrive (at the device's
//! timestamps). A minute M is logged when the channel was above the
//! threshold at any moment within [M, M+60): a frame above the threshold
//! in M, or a value above it carried into M from before. The row holds the
//! values of the first such moment (for a minute without a frame of its
//! own, the values current at M). Minutes between frames are filled with
//! the values current at each of them (never newer ones), and every minute
//! is decided at most once: as soon as it is known active, or when time
//! has passed it.
//!
//! Runs of logged minutes are active periods: one starts with its first
//! row and ends at the first minute after it that is decided without one.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The kind of component a logged channel is: `switch:N` (a metered
/// output) or `pm1:N` (a power meter without an output).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    #[default]
    Switch,
    Pm1,
}

// The name stored in `power_logs.component` (and the status key prefix).
crate::text_enum!(Component {
    Switch => "switch",
    Pm1 => "pm1",
});

/// A logged channel of a device: its component kind and id.
pub type ChannelKey = (Component, i32);

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
    /// The first minute of the active period still running, if any.
    #[serde(default)]
    pub active_since: Option<i64>,
}

/// One `power_logs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub minute: i64,
    pub values: Values,
}

/// An active period: its first logged minute and, once known, the first
/// minute after it without a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub started: i64,
    pub ended: Option<i64>,
}

/// What one update decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decided {
    pub rows: Vec<Row>,
    /// Periods started or ended by these minutes.
    pub periods: Vec<Period>,
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

impl ChannelState {
    /// Decides minute `m` with `values` as the first active moment in it
    /// (`None`: the channel was not active in it).
    fn decide(&mut self, m: i64, values: Option<&Values>, out: &mut Decided) {
        match (values, self.active_since) {
            (Some(v), since) => {
                if since.is_none() {
                    self.active_since = Some(m);
                    out.periods.push(Period {
                        started: m,
                        ended: None,
                    });
                }
                out.rows.push(Row {
                    minute: m,
                    values: v.clone(),
                });
            }
            (None, Some(started)) => {
                self.active_since = None;
                out.periods.push(Period {
                    started,
                    ended: Some(m),
                });
            }
            (None, None) => {}
        }
        self.last_minute = Some(m);
    }

    /// Whether minute `m` comes after the last decided one.
    fn undecided(&self, m: i64) -> bool {
        self.last_minute
            .is_none_or(|l| l.checked_add(60).is_some_and(|n| n <= m))
    }
}

/// Feeds one update at device time `ts`; returns the rows (and period
/// starts and ends) it decides.
///
/// `ts` should already be a plausible device time; the arithmetic is
/// checked anyway, so no `ts` or stored state can overflow it or make it
/// loop more than `max_fill_minutes` + 1 times.
pub fn update(state: &mut ChannelState, ts: i64, u: &Values, s: &Settings) -> Decided {
    let mut out = Decided::default();
    // Frames from the past (late or replayed) cannot rewrite decided minutes.
    if state.values_ts.is_some_and(|vt| ts < vt) {
        return out;
    }
    let m = minute_of(ts);
    if let Some(vt) = state.values_ts {
        // Minutes strictly before `m` not decided yet: the values held
        // since `vt` were current through them. (In the minute of `vt`
        // itself they were not active, or it would be decided already.)
        let first = match state.last_minute {
            Some(l) => l.checked_add(60).map(|f| f.max(minute_of(vt))),
            None => Some(minute_of(vt)),
        };
        let fill = s.max_fill_minutes.clamp(0, MAX_FILL_MINUTES);
        let earliest = m.saturating_sub(fill * 60);
        let held = active(&state.values, s.threshold_w).then(|| state.values.clone());
        if let Some(f) = first.filter(|f| *f < earliest) {
            // Too long ago to make up: the period ends where the fill stops.
            let skipped = earliest.saturating_sub(60);
            state.decide(f, None, &mut out);
            state.last_minute = Some(skipped.max(f));
        }
        let mut next = first.map(|f| f.max(earliest));
        for _ in 0..fill {
            let Some(k) = next.filter(|k| *k < m) else {
                break;
            };
            state.decide(k, held.as_ref(), &mut out);
            next = k.checked_add(60);
        }
        // A value carried into `m` from before counts from M itself.
        if ts > m && vt < m && state.undecided(m) {
            if let Some(v) = &held {
                state.decide(m, Some(v), &mut out);
            }
        }
    }
    state.values.merge(u);
    state.values_ts = Some(ts);
    if state.undecided(m) {
        if active(&state.values, s.threshold_w) {
            let v = state.values.clone();
            state.decide(m, Some(&v), &mut out);
        } else if let Some(started) = state.active_since.take() {
            // Below the threshold at a moment of `m`, which is not logged
            // yet: the period ends here (should `m` turn active later, a
            // new one starts with it).
            out.periods.push(Period {
                started,
                ended: Some(m),
            });
        }
    }
    out
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
        rows.extend(update(&mut st, 6000, &p(100), &s()).rows); // on the minute
        rows.extend(update(&mut st, 6010, &p(120), &s()).rows);
        rows.extend(update(&mut st, 6030, &p(2), &s()).rows); // below threshold
        rows.extend(update(&mut st, 6060, &p(2), &s()).rows);
        rows.extend(update(&mut st, 6090, &p(50), &s()).rows);
        rows.extend(update(&mut st, 6125, &p(60), &s()).rows);
        // 6060 was active from 6090 on; 6120 carried 50 W into its start.
        assert_eq!(minutes(&rows), vec![(6000, 100), (6060, 50), (6120, 50)]);
    }

    #[test]
    fn missing_minutes_are_filled_with_the_values_current_then() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s()).rows;
        rows.extend(update(&mut st, 6130, &p(200), &s()).rows); // 6060 and 6120 pass without frames
        rows.extend(update(&mut st, 6250, &p(300), &s()).rows);
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
        let rows = update(&mut st, 6060, &only_voltage, &s()).rows;
        assert_eq!(rows[0].values.apower_w, Some(Decimal::from(100)));
        assert_eq!(rows[0].values.voltage_v, Some(Decimal::from(231)));
    }

    #[test]
    fn replayed_or_late_frames_never_duplicate_minutes() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s()).rows;
        rows.extend(update(&mut st, 6060, &p(100), &s()).rows);
        rows.extend(update(&mut st, 6000, &p(999), &s()).rows); // late
        rows.extend(update(&mut st, 6060, &p(100), &s()).rows); // replay
        assert_eq!(minutes(&rows), vec![(6000, 100), (6060, 100)]);
    }

    #[test]
    fn a_restored_state_continues_without_gaps_or_duplicates() {
        let mut st = ChannelState::default();
        let mut rows = update(&mut st, 6000, &p(100), &s()).rows;
        rows.extend(update(&mut st, 6070, &p(110), &s()).rows);
        // Persist, restart, the device sends its full status at 6200.
        let mut restored: ChannelState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        rows.extend(update(&mut restored, 6200, &p(120), &s()).rows);
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
            let rows = update(&mut st, then, &p(100), &big).rows;
            assert!(
                rows.len() as i64 <= MAX_FILL_MINUTES + 1,
                "{start} → {then}"
            );
        }
        let mut st = ChannelState {
            last_minute: Some(i64::MAX - 10),
            values: p(100),
            values_ts: Some(i64::MAX - 20),
            active_since: None,
        };
        assert!(update(&mut st, i64::MAX, &p(100), &s()).rows.is_empty());
    }

    #[test]
    fn long_absences_are_not_made_up() {
        let mut st = ChannelState::default();
        update(&mut st, 6000, &p(100), &s());
        let rows = update(&mut st, 6000 + 5 * 3600 + 30, &p(100), &s()).rows;
        assert_eq!(
            rows.len(),
            61,
            "only the last hour before the frame is filled"
        );
    }

    /// Feeds (ts, apower) pairs; returns the rows and the periods.
    fn run(frames: &[(i64, i64)]) -> (Vec<(i64, i64)>, Vec<Period>, ChannelState) {
        let mut st = ChannelState::default();
        let mut out = Decided::default();
        for (ts, w) in frames {
            let d = update(&mut st, *ts, &p(*w), &s());
            out.rows.extend(d.rows);
            out.periods.extend(d.periods);
        }
        (minutes(&out.rows), out.periods, st)
    }

    fn period(started: i64, ended: Option<i64>) -> Period {
        Period { started, ended }
    }

    #[test]
    fn a_burst_inside_one_minute_gives_exactly_one_row() {
        let (rows, periods, _) = run(&[(6000, 0), (6010, 118), (6030, 119), (6050, 0), (6060, 0)]);
        assert_eq!(rows, [(6000, 118)], "the values of its first active moment");
        assert_eq!(periods, [period(6000, None), period(6000, Some(6060))]);
    }

    #[test]
    fn a_period_starting_mid_minute_logs_that_minute_too() {
        // 65 s from 6012: active in 6000 and 6060, not in 6120.
        let (rows, periods, _) = run(&[(6000, 0), (6012, 118), (6060, 120), (6077, 0), (6120, 0)]);
        assert_eq!(rows, [(6000, 118), (6060, 120)]);
        assert_eq!(periods.last(), Some(&period(6000, Some(6120))));
    }

    #[test]
    fn a_burst_ending_before_the_next_minutes_first_frame_is_not_carried() {
        let (rows, _, st) = run(&[(6000, 0), (6040, 118), (6058, 0), (6075, 0), (6130, 0)]);
        assert_eq!(rows, [(6000, 118)]);
        assert_eq!(st.active_since, None);
        // Without frames on the minute: the value carried into 6060 decides.
        let (rows, _, _) = run(&[(6000, 0), (6040, 118), (6075, 0)]);
        assert_eq!(rows, [(6000, 118), (6060, 118)]);
    }

    #[test]
    fn the_first_frame_of_a_channel_logs_its_own_minute() {
        let (rows, _, _) = run(&[(6012, 118), (6061, 118)]);
        assert_eq!(rows, [(6000, 118), (6060, 118)]);
    }

    #[test]
    fn a_minute_already_logged_is_not_logged_again_within_it() {
        let (rows, _, _) = run(&[(6010, 118), (6020, 0), (6030, 200), (6050, 0)]);
        assert_eq!(rows, [(6000, 118)]);
    }

    #[test]
    fn periods_end_at_the_first_minute_without_a_row_even_after_a_long_absence() {
        let (_, periods, st) = run(&[(6000, 100), (6060, 100), (6000 + 5 * 3600, 0)]);
        assert_eq!(periods[1], period(6000, Some(6120)));
        // The last hour is filled with the 100 W held: a new period.
        assert_eq!(periods[2], period(6000 + 4 * 3600, None));
        assert_eq!(periods[3], period(6000 + 4 * 3600, Some(6000 + 5 * 3600)));
        assert_eq!(st.active_since, None);
    }
}

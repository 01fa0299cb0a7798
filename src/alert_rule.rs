//! High-usage alert rules: pure logic, no I/O.
//!
//! A rule watches one series (total power, or one phase's current) and
//! keeps a small state machine: `Armed` → (sustained above the threshold)
//! → `Firing` → (below the clear level long enough) → `Armed`.
//!
//! "Sustained" means a trailing run of readings that are all above the
//! threshold in force at their own time, with no gap between consecutive
//! readings longer than `max_gap`, spanning at least `sustain`, and ending
//! no more than `max_gap` before now. A missing reading is never counted as
//! above; a gap longer than `max_gap` breaks the run (nothing is assumed
//! about power we did not see), a shorter one is bridged.

use crate::timerange::Zone;
use chrono::{NaiveTime, Timelike};
use rust_decimal::Decimal;
use serde::Serialize;

/// A time-of-day threshold, e.g. `22:00-06:00=3000` (may wrap midnight).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEntry {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub level: Decimal,
}

impl ScheduleEntry {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// Parses `HH:MM-HH:MM=LEVEL[;HH:MM-HH:MM=LEVEL...]` (`,` also separates).
pub fn parse_schedule(s: &str) -> Result<Vec<ScheduleEntry>, String> {
    let mut out = Vec::new();
    for part in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        let err = || {
            format!("invalid schedule entry {part:?}: expected HH:MM-HH:MM=WATTS, e.g. 22:00-06:00=3000")
        };
        let (span, level) = part.split_once('=').ok_or_else(err)?;
        let (a, b) = span.split_once('-').ok_or_else(err)?;
        let t = |x: &str| NaiveTime::parse_from_str(x.trim(), "%H:%M").map_err(|_| err());
        let (start, end) = (t(a)?, t(b)?);
        if start == end {
            return Err(format!(
                "schedule entry {part:?} is empty (start equals end)"
            ));
        }
        let level: Decimal = level.trim().parse().map_err(|_| err())?;
        if level <= Decimal::ZERO {
            return Err(format!(
                "schedule entry {part:?}: the level must be positive"
            ));
        }
        out.push(ScheduleEntry { start, end, level });
    }
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            // Two spans overlap if either one's start lies inside the other.
            if a.contains(b.start) || b.contains(a.start) {
                return Err(format!(
                    "schedule entries {}-{} and {}-{} overlap",
                    a.start.format("%H:%M"),
                    a.end.format("%H:%M"),
                    b.start.format("%H:%M"),
                    b.end.format("%H:%M")
                ));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Threshold outside any schedule entry.
    pub level: Decimal,
    /// Clear level as a fraction of the threshold in force (hysteresis).
    pub clear_ratio: Decimal,
    pub schedule: Vec<ScheduleEntry>,
    pub zone: Zone,
    pub sustain_s: i64,
    pub max_gap_s: i64,
    /// How long readings must stay below the clear level to re-arm.
    pub clear_hold_s: i64,
    pub cooldown_s: i64,
}

/// The threshold and clear level in force at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Levels {
    pub threshold: Decimal,
    pub clear: Decimal,
}

impl RuleConfig {
    /// Seconds of readings `evaluate` needs to decide (the longest window
    /// it looks at, plus the gaps allowed at its edges).
    pub fn lookback_s(&self) -> i64 {
        self.sustain_s.max(self.clear_hold_s) + 2 * self.max_gap_s
    }

    pub fn levels_at(&self, ts: i64) -> Levels {
        let threshold = if self.schedule.is_empty() {
            self.level
        } else {
            let local = local_time(self.zone, ts);
            self.schedule
                .iter()
                .find(|e| e.contains(local))
                .map(|e| e.level)
                .unwrap_or(self.level)
        };
        Levels {
            threshold,
            clear: (threshold * self.clear_ratio).round_dp(3),
        }
    }
}

fn local_time(zone: Zone, ts: i64) -> NaiveTime {
    let utc = chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default();
    let t = match zone {
        Zone::System => utc.with_timezone(&chrono::Local).time(),
        Zone::Named(tz) => utc.with_timezone(&tz).time(),
    };
    t.with_nanosecond(0).unwrap_or(t)
}

/// The `power_readings` columns a rule can watch. Only these names are
/// ever formatted into SQL (`db::alerts::samples`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    TotalPowerW,
    PhaseAPowerW,
    PhaseBPowerW,
    PhaseCPowerW,
    PhaseACurrentA,
    PhaseBCurrentA,
    PhaseCCurrentA,
}

impl Column {
    /// The column's name in `power_readings`.
    pub const fn name(self) -> &'static str {
        match self {
            Column::TotalPowerW => "total_power_w",
            Column::PhaseAPowerW => "phase_a_power_w",
            Column::PhaseBPowerW => "phase_b_power_w",
            Column::PhaseCPowerW => "phase_c_power_w",
            Column::PhaseACurrentA => "phase_a_current_a",
            Column::PhaseBCurrentA => "phase_b_current_a",
            Column::PhaseCCurrentA => "phase_c_current_a",
        }
    }
}

/// One reading of the watched series; `None` when the device gave no value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Armed,
    Firing,
}

/// What a rule remembers between runs (the `alert_state` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub state: State,
    pub last_fired_at: Option<i64>,
}

/// The readings that made an episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    pub window_start: i64,
    pub window_end: i64,
    /// The lowest value in the window: the level that was sustained.
    pub value: Decimal,
    pub max: Decimal,
    pub latest: Decimal,
    pub threshold: Decimal,
    pub clear: Decimal,
    pub readings: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// A new episode: record an event and notify.
    Fire(Episode),
    /// Sustained, but inside the cooldown after the last episode: the
    /// episode is taken (no re-fire until it clears) without notifying.
    Suppress(Episode),
    /// Back below the clear level for long enough: re-armed.
    Clear { at: i64, value: Decimal },
    /// Nothing changes.
    Nothing,
}

/// The trailing run of present samples satisfying `pred`, with no gap over
/// `max_gap` and ending within `max_gap` of `now`: its first and last index.
fn trailing_run(
    samples: &[Sample],
    now: i64,
    max_gap: i64,
    pred: impl Fn(&Sample, Decimal) -> bool,
) -> Option<(usize, usize)> {
    let present: Vec<usize> = (0..samples.len())
        .filter(|i| samples[*i].value.is_some())
        .collect();
    let &last = present.last()?;
    if now - samples[last].ts > max_gap || !pred(&samples[last], samples[last].value?) {
        return None;
    }
    let mut first = last;
    for w in present.windows(2).rev() {
        let (a, b) = (w[0], w[1]);
        if samples[b].ts - samples[a].ts > max_gap || !pred(&samples[a], samples[a].value?) {
            break;
        }
        first = a;
    }
    Some((first, last))
}

/// Decides what the rule does now, given its memory and the recent
/// samples (sorted by time; at least `sustain + max_gap` of history).
pub fn evaluate(cfg: &RuleConfig, mem: &Memory, samples: &[Sample], now: i64) -> Decision {
    match mem.state {
        State::Armed => {
            let above = |s: &Sample, v: Decimal| v > cfg.levels_at(s.ts).threshold;
            let Some((first, last)) = trailing_run(samples, now, cfg.max_gap_s, above) else {
                return Decision::Nothing;
            };
            let (start, end) = (samples[first].ts, samples[last].ts);
            if end - start < cfg.sustain_s {
                return Decision::Nothing;
            }
            // Only the sustain window itself describes the episode.
            let window: Vec<Decimal> = samples[first..=last]
                .iter()
                .filter(|s| s.ts >= end - cfg.sustain_s)
                .filter_map(|s| s.value)
                .collect();
            let window_start = samples[first..=last]
                .iter()
                .filter(|s| s.value.is_some())
                .map(|s| s.ts)
                .filter(|t| *t >= end - cfg.sustain_s)
                .min()
                .unwrap_or(start);
            let levels = cfg.levels_at(end);
            let episode = Episode {
                window_start,
                window_end: end,
                value: window.iter().copied().min().unwrap_or_default(),
                max: window.iter().copied().max().unwrap_or_default(),
                latest: window.last().copied().unwrap_or_default(),
                threshold: levels.threshold,
                clear: levels.clear,
                readings: window.len(),
            };
            match mem.last_fired_at {
                Some(t) if now - t < cfg.cooldown_s => Decision::Suppress(episode),
                _ => Decision::Fire(episode),
            }
        }
        State::Firing => {
            let below = |s: &Sample, v: Decimal| v < cfg.levels_at(s.ts).clear;
            let Some((first, last)) = trailing_run(samples, now, cfg.max_gap_s, below) else {
                return Decision::Nothing;
            };
            if samples[last].ts - samples[first].ts < cfg.clear_hold_s {
                return Decision::Nothing;
            }
            Decision::Clear {
                at: samples[last].ts,
                value: samples[last].value.unwrap_or_default(),
            }
        }
    }
}

/// Applies a decision to the memory.
pub fn next_memory(mem: &Memory, d: &Decision, now: i64) -> Memory {
    match d {
        Decision::Fire(_) => Memory {
            state: State::Firing,
            last_fired_at: Some(now),
        },
        Decision::Suppress(_) => Memory {
            state: State::Firing,
            last_fired_at: mem.last_fired_at,
        },
        Decision::Clear { .. } => Memory {
            state: State::Armed,
            last_fired_at: mem.last_fired_at,
        },
        Decision::Nothing => *mem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(x: i64) -> Decimal {
        Decimal::from(x)
    }

    fn cfg() -> RuleConfig {
        RuleConfig {
            level: dec(4500),
            clear_ratio: Decimal::new(9, 1),
            schedule: vec![],
            zone: Zone::Named(chrono_tz::UTC),
            sustain_s: 120,
            max_gap_s: 30,
            clear_hold_s: 60,
            cooldown_s: 900,
        }
    }

    /// Runs the rule every `step` seconds over a series sampled every 10 s,
    /// as the timers would, and returns the decisions that were not Nothing.
    fn simulate(
        cfg: &RuleConfig,
        series: &[(i64, Option<i64>)],
        step: i64,
    ) -> Vec<(i64, Decision)> {
        let mut mem = Memory {
            state: State::Armed,
            last_fired_at: None,
        };
        let mut out = Vec::new();
        let end = series.last().map(|s| s.0).unwrap_or(0);
        let mut now = series.first().map(|s| s.0).unwrap_or(0);
        while now <= end {
            let window: Vec<Sample> = series
                .iter()
                .filter(|(t, _)| *t <= now && *t > now - 600)
                .map(|(t, v)| Sample {
                    ts: *t,
                    value: v.map(dec),
                })
                .collect();
            let d = evaluate(cfg, &mem, &window, now);
            mem = next_memory(&mem, &d, now);
            if d != Decision::Nothing {
                out.push((now, d));
            }
            now += step;
        }
        out
    }

    fn fires(events: &[(i64, Decision)]) -> Vec<i64> {
        events
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Fire(_)))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Readings every 10 s from `start` with the value `f(i)`.
    fn series(start: i64, n: i64, f: impl Fn(i64) -> Option<i64>) -> Vec<(i64, Option<i64>)> {
        (0..n).map(|i| (start + i * 10, f(i))).collect()
    }

    #[test]
    fn sustained_power_fires_once_after_the_sustain_time() {
        let s = series(1000, 60, |_| Some(5000));
        let ev = simulate(&cfg(), &s, 10);
        assert_eq!(fires(&ev), vec![1120], "fires when 120 s are covered");
        let Decision::Fire(e) = &ev[0].1 else {
            panic!()
        };
        assert_eq!((e.window_start, e.window_end, e.readings), (1000, 1120, 13));
        assert_eq!(
            (e.value, e.threshold, e.clear),
            (dec(5000), dec(4500), dec(4050))
        );
    }

    #[test]
    fn flapping_around_the_threshold_is_exactly_one_episode() {
        // 3 minutes above, then 30 minutes alternating 4400/4600: never below
        // the clear level (4050), so the rule never re-arms.
        let s = series(0, 200, |i| {
            Some(if i < 18 || i % 2 == 0 { 4600 } else { 4400 })
        });
        let ev = simulate(&cfg(), &s, 10);
        assert_eq!(fires(&ev).len(), 1);
        assert!(ev.iter().all(|(_, d)| !matches!(d, Decision::Clear { .. })));
    }

    #[test]
    fn flapping_without_a_sustained_run_never_fires() {
        let s = series(0, 200, |i| Some(if i % 2 == 0 { 4600 } else { 4400 }));
        assert!(fires(&simulate(&cfg(), &s, 10)).is_empty());
    }

    #[test]
    fn a_dip_inside_the_hysteresis_band_or_shorter_than_the_clear_hold_does_not_re_arm() {
        let mut c = cfg();
        c.cooldown_s = 0;
        // above 3 min, dip to 4200 (above clear) for 2 min, above again 3 min
        let s1 = series(0, 48, |i| {
            Some(if (18..30).contains(&i) { 4200 } else { 5000 })
        });
        assert_eq!(fires(&simulate(&c, &s1, 10)).len(), 1);
        // dip below clear (3000) for only 40 s (< 60 s clear hold)
        let s2 = series(0, 48, |i| {
            Some(if (18..23).contains(&i) { 3000 } else { 5000 })
        });
        assert_eq!(fires(&simulate(&c, &s2, 10)).len(), 1);
        // dip below clear for 90 s re-arms: a second episode
        let s3 = series(0, 60, |i| {
            Some(if (18..28).contains(&i) { 3000 } else { 5000 })
        });
        let ev = simulate(&c, &s3, 10);
        assert_eq!(fires(&ev).len(), 2, "{ev:?}");
        assert!(ev.iter().any(|(_, d)| matches!(d, Decision::Clear { .. })));
    }

    #[test]
    fn a_missing_reading_is_not_above_and_a_long_gap_breaks_the_run() {
        // Values missing (null) for 100 s in the middle: the run restarts.
        let s = series(0, 40, |i| {
            if (8..18).contains(&i) {
                None
            } else {
                Some(5000)
            }
        });
        let ev = simulate(&cfg(), &s, 10);
        assert_eq!(
            fires(&ev),
            vec![180 + 120],
            "sustained again only 120 s after the gap"
        );
        // A single missing reading (20 s between readings) is bridged.
        let s = series(0, 30, |i| if i == 5 { None } else { Some(5000) });
        assert_eq!(fires(&simulate(&cfg(), &s, 10)), vec![120]);
        // No readings at all for a while: a stale series never fires.
        let stale = [(0, Some(5000)), (10, Some(5000))];
        assert_eq!(
            evaluate(
                &cfg(),
                &Memory {
                    state: State::Armed,
                    last_fired_at: None
                },
                &stale
                    .iter()
                    .map(|(t, v)| Sample {
                        ts: *t,
                        value: v.map(dec)
                    })
                    .collect::<Vec<_>>(),
                500
            ),
            Decision::Nothing
        );
    }

    #[test]
    fn missing_data_while_firing_neither_clears_nor_refires() {
        let mem = Memory {
            state: State::Firing,
            last_fired_at: Some(0),
        };
        assert_eq!(evaluate(&cfg(), &mem, &[], 1000), Decision::Nothing);
        let nulls = [Sample {
            ts: 990,
            value: None,
        }];
        assert_eq!(evaluate(&cfg(), &mem, &nulls, 1000), Decision::Nothing);
    }

    #[test]
    fn cooldown_suppresses_a_new_episode_inside_the_window() {
        let mut c = cfg();
        c.cooldown_s = 900;
        // Episode 1 at 120 s; re-armed by a 2-minute dip; sustained again at
        // 420 s and 870 s, inside the cooldown: suppressed (each waits for a
        // clear); after the next dip, past the 900 s cooldown: fires.
        let s = series(0, 150, |i| {
            Some(match i {
                18..30 => 3000,
                60..75 => 3000,
                110..122 => 3000,
                _ => 5000,
            })
        });
        let ev = simulate(&c, &s, 10);
        assert_eq!(fires(&ev), vec![120, 1340], "{ev:?}");
        let suppressed: Vec<i64> = ev
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Suppress(_)))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(suppressed, vec![420, 870]);
        let f = fires(&ev);
        assert!(f[1] - f[0] >= 900);
    }

    fn warsaw(schedule: &str) -> RuleConfig {
        let mut c = cfg();
        c.schedule = parse_schedule(schedule).unwrap();
        c.zone = Zone::resolve(Some("Europe/Warsaw")).unwrap();
        c
    }

    #[test]
    fn time_of_day_thresholds_follow_local_time_across_a_dst_change() {
        let c = warsaw("22:00-06:00=3000");
        // 2026-10-25 is 25 hours long in Warsaw; 06:00 CET = 05:00 UTC.
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        assert_eq!(c.levels_at(at("2026-10-25T04:59:59Z")).threshold, dec(3000));
        assert_eq!(c.levels_at(at("2026-10-25T05:00:00Z")).threshold, dec(4500));
        // The day before, in summer time, 06:00 CEST = 04:00 UTC.
        assert_eq!(c.levels_at(at("2026-10-24T03:59:59Z")).threshold, dec(3000));
        assert_eq!(c.levels_at(at("2026-10-24T04:00:00Z")).threshold, dec(4500));
        // 22:00 CET = 21:00 UTC after the change.
        assert_eq!(c.levels_at(at("2026-10-25T20:59:59Z")).threshold, dec(4500));
        assert_eq!(c.levels_at(at("2026-10-25T21:00:00Z")).threshold, dec(3000));
        assert_eq!(c.levels_at(at("2026-10-25T21:00:00Z")).clear, dec(2700));
        // On the spring-forward day 06:00 CEST = 04:00 UTC.
        assert_eq!(c.levels_at(at("2026-03-29T03:59:00Z")).threshold, dec(3000));
        assert_eq!(c.levels_at(at("2026-03-29T04:00:00Z")).threshold, dec(4500));
    }

    #[test]
    fn a_night_threshold_fires_at_the_boundary_and_not_before() {
        // 3500 W from 21:50 to 22:10 local time (UTC+1 in January):
        // below the day threshold, above the night one from 22:00.
        let c = warsaw("22:00-06:00=3000");
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-15T20:50:00Z")
            .unwrap()
            .timestamp();
        let s = series(start, 120, |_| Some(3500));
        assert_eq!(fires(&simulate(&c, &s, 10)), vec![start + 600 + 120]);
    }

    #[test]
    fn schedules_are_validated() {
        assert_eq!(
            parse_schedule("22:00-06:00=3000; 12:00-13:00=6000")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_schedule("22:00-06:00")
            .unwrap_err()
            .contains("expected HH:MM-HH:MM=WATTS"));
        assert!(parse_schedule("25:00-06:00=1").is_err());
        assert!(parse_schedule("22:00-06:00=-5")
            .unwrap_err()
            .contains("positive"));
        assert!(parse_schedule("22:00-06:00=3000;05:00-07:00=4000")
            .unwrap_err()
            .contains("overlap"));
        assert!(parse_schedule("10:00-10:00=1")
            .unwrap_err()
            .contains("empty"));
    }
}

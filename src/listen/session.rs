//! What one connection knows about its device, as a pure state machine:
//! text frames in, writes out (the merged status, the minute-log state of
//! each switch channel, the spacing of meter readings). No sockets, no
//! database: the server feeds it and hands its outputs to the writer.

use super::frames::{self, channels, merge, parse_frame, status_components, switch_values, Frame};
use crate::device::{self, DeviceId};
use crate::minute_log::{self, ChannelKey, ChannelState, Period, Row, Values};
use crate::shelly::status::DeviceStatus;
use crate::shelly::DeviceInfo;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Malformed frames tolerated before the connection is closed.
const MAX_MALFORMED: u32 = 20;

/// The parts of the configuration a session decides with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Device ids allowed (empty: any).
    pub allow: Vec<String>,
    pub threshold_w: Decimal,
    /// Channel ids (of switch and pm1 components) to log (None: all).
    pub channels: Option<Vec<i32>>,
    pub meter_every_s: i64,
    pub max_fill_minutes: i64,
}

impl Settings {
    pub fn of(cfg: &super::Config) -> Settings {
        Settings {
            allow: cfg.allow.clone(),
            threshold_w: cfg.threshold_w,
            channels: cfg.channels.clone(),
            meter_every_s: cfg.meter_every_s,
            max_fill_minutes: cfg.max_fill_minutes,
        }
    }
}

/// Something to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// What the device says it is (`Shelly.GetDeviceInfo`).
    Device(DeviceInfo),
    /// Completed minutes, the active periods they start or end, and the
    /// channel states after them (stored together).
    Logs {
        device_id: DeviceId,
        rows: Vec<(ChannelKey, Row)>,
        periods: Vec<(ChannelKey, Period)>,
        states: Vec<(ChannelKey, ChannelState)>,
    },
    /// A meter reading at device time `at`.
    Reading {
        device_id: DeviceId,
        at: DateTime<Utc>,
        status: Box<DeviceStatus>,
    },
}

/// Why a connection must end.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Policy: not allowed (close 1008).
    Refused(String),
    /// Protocol: too many malformed frames (close 1002).
    TooManyMalformed,
}

#[derive(Debug, Default)]
pub struct Session {
    device_id: Option<DeviceId>,
    status: Map<String, Value>,
    channels: HashMap<ChannelKey, ChannelState>,
    last_meter_ts: Option<f64>,
    malformed: u32,
    /// Frames refused so far.
    refused: u64,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    pub fn device_id(&self) -> Option<&str> {
        self.device_id.as_deref()
    }

    /// Parses a text frame. A malformed frame is logged and counted
    /// (`Ok(None)`) until there are too many.
    pub fn parse(&mut self, text: &str, peer: &str) -> Result<Option<Frame>, Stop> {
        match parse_frame(text) {
            Ok(f) => Ok(Some(f)),
            Err(why) => {
                self.malformed += 1;
                crate::log::warn(
                    "frame_malformed",
                    self.device_id(),
                    json!({"peer": peer, "reason": why, "count": self.malformed}),
                );
                if self.malformed >= MAX_MALFORMED {
                    Err(Stop::TooManyMalformed)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Checks the ids a frame claims (its `src`; the `id` of an answer to
    /// `Shelly.GetDeviceInfo`): each must be a valid device id and the
    /// connection's first one; a connection cannot change devices, or it
    /// could write another device's rows past the allow-list. Returns the
    /// id the frame introduces when the session has none yet (its state
    /// must be loaded before the frame is applied).
    pub fn newcomer(
        &self,
        frame: &Frame,
        s: &Settings,
        peer: &str,
    ) -> Result<Option<DeviceId>, Stop> {
        let mut claimed: Option<DeviceId> = None;
        for c in claims(frame) {
            let id = DeviceId::parse(c).map_err(|e| {
                self.reject(peer, &format!("invalid device id: {e}"));
                Stop::Refused("invalid device id".into())
            })?;
            let first = self.device_id.as_ref().or(claimed.as_ref());
            if first.is_some_and(|f| *f != id) {
                self.reject(
                    peer,
                    &format!(
                        "device id mismatch: the connection is {}, the frame claims {id}",
                        first.expect("some")
                    ),
                );
                return Err(Stop::Refused("device id mismatch".into()));
            }
            claimed = Some(id);
        }
        let Some(id) = claimed.filter(|_| self.device_id.is_none()) else {
            return Ok(None);
        };
        if !s.allow.is_empty() && !s.allow.iter().any(|a| a == id.as_str()) {
            crate::log::warn(
                "listen_rejected",
                Some(&id),
                json!({"peer": peer, "reason": "device not in the allow-list"}),
            );
            return Err(Stop::Refused("device not allowed".into()));
        }
        Ok(Some(id))
    }

    fn reject(&self, peer: &str, why: &str) {
        crate::log::warn(
            "listen_rejected",
            self.device_id(),
            json!({"peer": peer, "reason": why}),
        );
    }

    /// The device is `id`; its channels continue from `states` (as
    /// stored), except a state dated outside the plausible window at our
    /// time `now` (left by an older version that trusted the device clock),
    /// which would freeze its channel until then.
    pub fn identify(&mut self, id: DeviceId, states: HashMap<ChannelKey, ChannelState>, now: i64) {
        let plausible = |t: Option<i64>| t.is_none_or(|t| device::check_time(t, now).is_ok());
        self.channels = states
            .into_iter()
            .filter(|(ch, st)| {
                let ok = plausible(st.values_ts) && plausible(st.last_minute);
                if !ok {
                    crate::log::warn(
                        "channel_state_dropped",
                        Some(&id),
                        json!({"channel": format!("{}:{}", ch.0.as_str(), ch.1), "reason": "stored state is dated outside the plausible window"}),
                    );
                }
                ok
            })
            .collect();
        self.device_id = Some(id);
    }

    /// Applies a frame received at our time `now` (unix seconds).
    pub fn on_frame(&mut self, frame: Frame, now: f64, s: &Settings) -> Result<Vec<Output>, Stop> {
        let mut out = Vec::new();
        let status = match frame {
            Frame::Response {
                id: 1,
                result: Some(r),
                ..
            } => {
                match serde_json::from_value::<DeviceInfo>(r) {
                    // The id was checked against the connection's (newcomer).
                    Ok(info)
                        if self
                            .device_id
                            .as_ref()
                            .is_some_and(|d| *d == info.id.as_str()) =>
                    {
                        out.push(Output::Device(info))
                    }
                    Ok(_) => {}
                    Err(e) => crate::log::warn(
                        "frame_malformed",
                        self.device_id(),
                        json!({"reason": format!("device info: {e}")}),
                    ),
                }
                None
            }
            Frame::Response {
                id: 2,
                result: Some(Value::Object(status)),
                ..
            } => {
                let ts = status.get("sys").and_then(|x| x.get("unixtime")).cloned();
                Some((ts, status, true))
            }
            Frame::Response { .. } => None,
            Frame::Notify { method, params, .. } => {
                let full = method == "NotifyFullStatus";
                (full || method == "NotifyStatus")
                    .then(|| (params.get("ts").cloned(), status_components(&params), full))
            }
        };
        if let Some((ts, components, full)) = status {
            match frame_time(ts.as_ref(), now) {
                Ok(at) => self.apply(at, components, full, s, &mut out),
                Err(why) => self.refuse(&why),
            }
        }
        Ok(out)
    }

    /// One line naming the device and why its frame changed nothing.
    /// (The first few, then every hundredth: a device sending nothing
    /// but refused frames cannot flood the log.)
    fn refuse(&mut self, why: &str) {
        self.refused += 1;
        if self.refused <= 10 || self.refused.is_multiple_of(100) {
            crate::log::warn(
                "frame_refused",
                self.device_id(),
                json!({"reason": why, "count": self.refused}),
            );
        }
    }

    /// Applies a (partial or full) status at device time `ts`: minute logs
    /// for switch channels, a reading for meters.
    fn apply(
        &mut self,
        at: DateTime<Utc>,
        components: Map<String, Value>,
        full: bool,
        s: &Settings,
        out: &mut Vec<Output>,
    ) {
        let Some(device_id) = self.device_id.clone() else {
            return;
        };
        // Everything is checked before anything changes.
        let status = if full {
            components.clone()
        } else {
            let mut merged = self.status.clone();
            merge(&mut merged, &components);
            merged
        };
        if let Err(why) = frames::check_components(&components).and(frames::check_size(&status)) {
            self.refuse(&why);
            return;
        }
        self.status = status;
        let settings = minute_log::Settings {
            threshold_w: s.threshold_w,
            max_fill_minutes: s.max_fill_minutes,
        };
        let wanted = |ch: i32| s.channels.as_ref().is_none_or(|c| c.contains(&ch));
        let second = at.timestamp();
        let ts = at.timestamp_millis() as f64 / 1000.0;
        let mut rows = Vec::new();
        let mut periods = Vec::new();
        let mut touched = Vec::new();
        let mut take = |key: ChannelKey, d: minute_log::Decided| {
            rows.extend(d.rows.into_iter().map(|r| (key, r)));
            periods.extend(d.periods.into_iter().map(|p| (key, p)));
            touched.push(key);
        };
        // Channels in this frame get their new values; every other known
        // channel advances in time with its current ones. A channel that
        // measures nothing (an unmetered relay) is not logged at all.
        let mut updated: Vec<ChannelKey> = Vec::new();
        for (key, comp) in channels(&components) {
            let metered = self
                .status
                .get(&format!("{}:{}", key.0.as_str(), key.1))
                .is_some_and(frames::is_metered);
            if !wanted(key.1) || !metered {
                continue;
            }
            let st = self.channels.entry(key).or_default();
            take(
                key,
                minute_log::update(st, second, &switch_values(comp), &settings),
            );
            updated.push(key);
        }
        for (key, st) in self.channels.iter_mut() {
            if !updated.contains(key) && st.values_ts.is_some() {
                take(
                    *key,
                    minute_log::update(st, second, &Values::default(), &settings),
                );
            }
        }
        let states: Vec<_> = touched
            .iter()
            .filter_map(|ch| Some((*ch, self.channels.get(ch)?.clone())))
            .collect();
        if !rows.is_empty() || !periods.is_empty() || !states.is_empty() {
            out.push(Output::Logs {
                device_id: device_id.clone(),
                rows,
                periods,
                states,
            });
        }
        if frames::has_meter(&self.status)
            && self
                .last_meter_ts
                .is_none_or(|t| ts - t >= s.meter_every_s as f64)
        {
            if let Some(mut status) = frames::meter(&self.status) {
                // `sys.unixtime` goes into device_ts: the same window applies.
                let now = Utc::now().timestamp();
                status.device_unixtime = status
                    .device_unixtime
                    .filter(|t| device::check_time(*t, now).is_ok());
                self.last_meter_ts = Some(ts);
                out.push(Output::Reading {
                    device_id,
                    at,
                    status: Box::new(status),
                });
            }
        }
    }
}

/// The time of a status frame: the device's `ts` (or `sys.unixtime` in an
/// answer to `Shelly.GetStatus`) if it is in the plausible window, our
/// clock `now` if the device sent none (or `null`: not synced yet). A
/// device time ahead of ours (inside the window) is taken as ours: else
/// one frame from a clock running ahead would make the honest frames after
/// it "from the past", and they would change nothing.
fn frame_time(ts: Option<&Value>, now: f64) -> Result<DateTime<Utc>, String> {
    let now_s = now.floor() as i64;
    let secs = match ts {
        None | Some(Value::Null) => now,
        Some(v) => {
            let t = v
                .as_f64()
                .ok_or_else(|| format!("device time {v} is not a number"))?;
            device::check_time_f64(t, now_s).map_err(|e| e.to_string())?;
            t.min(now)
        }
    };
    // In the window, so milliseconds fit an i64 and a DateTime.
    DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
        .ok_or_else(|| format!("device time {secs} is out of range"))
}

/// The device ids a frame claims: its `src`, and the `id` in an answer to
/// `Shelly.GetDeviceInfo`.
fn claims(frame: &Frame) -> Vec<&str> {
    let (src, info) = match frame {
        Frame::Notify { src, .. } => (src, None),
        Frame::Response {
            id: 1,
            src,
            result: Some(r),
            ..
        } => (src, r.get("id")),
        Frame::Response { src, .. } => (src, None),
    };
    let info = info.map(|v| v.as_str().unwrap_or("(not a string)"));
    src.as_deref().into_iter().chain(info).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minute_log::Component;

    pub(super) fn settings() -> Settings {
        Settings {
            allow: vec![],
            threshold_w: Decimal::from(5),
            channels: None,
            meter_every_s: 10,
            max_fill_minutes: 60,
        }
    }

    /// A session identified as `dev` (no stored state).
    pub(super) fn session() -> Session {
        let mut s = Session::new();
        s.identify(DeviceId::parse("dev").unwrap(), HashMap::new(), NOW);
        s
    }

    /// Feeds a frame (JSON) at our time `NOW`.
    pub(super) fn feed(s: &mut Session, frame: Value) -> Result<Vec<Output>, Stop> {
        let f = s.parse(&frame.to_string(), "peer").unwrap().unwrap();
        s.on_frame(f, NOW as f64, &settings())
    }

    fn rows(out: &[Output]) -> Vec<(i32, i64)> {
        out.iter()
            .flat_map(|o| match o {
                Output::Logs { rows, .. } => rows.iter().map(|(c, r)| (c.1, r.minute)).collect(),
                _ => vec![],
            })
            .collect()
    }

    const T0: i64 = 1_790_000_040;
    const SW0: ChannelKey = (Component::Switch, 0);
    /// Our clock in these tests.
    const NOW: i64 = T0 + 3600;

    fn notify(ts: f64, params: Value) -> Value {
        let mut p = params;
        p["ts"] = json!(ts);
        json!({"src": "dev", "method": "NotifyStatus", "params": p})
    }

    #[test]
    fn switch_frames_become_minute_rows_and_states() {
        let mut s = session();
        let a = feed(
            &mut s,
            notify(T0 as f64, json!({"switch:0": {"apower": 100.0}})),
        )
        .unwrap();
        assert_eq!(rows(&a), [(0, T0)]);
        let b = feed(&mut s, notify((T0 + 130) as f64, json!({"sys": {}}))).unwrap();
        assert_eq!(rows(&b), [(0, T0 + 60), (0, T0 + 120)]);
        let Output::Logs { states, .. } = &b[0] else {
            panic!()
        };
        assert_eq!(states[0].1.values_ts, Some(T0 + 130));
    }

    /// What a refused frame must leave unchanged.
    type Snapshot = (Map<String, Value>, HashMap<ChannelKey, ChannelState>);

    /// A session whose switch:0 is at 100 W, and its state to compare with.
    fn session_at_100_w() -> (Session, Snapshot) {
        let mut s = session();
        feed(
            &mut s,
            notify(T0 as f64, json!({"switch:0": {"apower": 100.0}})),
        )
        .unwrap();
        let before = (s.status.clone(), s.channels.clone());
        (s, before)
    }

    #[test]
    fn frames_dated_outside_the_plausible_window_change_nothing() {
        let (mut s, before) = session_at_100_w();
        for ts in [
            json!(1e19),
            json!(-1e19),
            json!(4_102_444_800.0),
            json!(0.0),
            json!("soon"),
        ] {
            let f = json!({"src": "dev", "method": "NotifyStatus",
                           "params": {"ts": ts, "switch:0": {"apower": 500.0}, "em:0": {"total_act_power": 1.0}}});
            assert_eq!(feed(&mut s, f).unwrap(), [], "{ts}");
            let full = json!({"src": "dev", "method": "NotifyFullStatus",
                              "params": {"ts": ts, "switch:0": {"apower": 500.0}}});
            assert_eq!(feed(&mut s, full).unwrap(), [], "{ts}");
            let answer = json!({"id": 2, "src": "dev",
                                "result": {"sys": {"unixtime": ts}, "switch:0": {"apower": 500.0}}});
            assert_eq!(feed(&mut s, answer).unwrap(), [], "{ts}");
            assert_eq!((s.status.clone(), s.channels.clone()), before, "{ts}");
        }
        // A normal frame afterwards continues from where the channel was.
        let out = feed(
            &mut s,
            notify((T0 + 60) as f64, json!({"switch:0": {"apower": 90.0}})),
        )
        .unwrap();
        assert_eq!(rows(&out), [(0, T0 + 60)]);
    }

    #[test]
    fn frames_without_a_device_time_take_ours() {
        let mut s = session();
        let f = json!({"src": "dev", "method": "NotifyStatus", "params": {"switch:0": {"apower": 100.0}}});
        let out = feed(&mut s, f).unwrap();
        let Output::Logs { states, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(states[0].1.values_ts, Some(NOW));
    }

    #[test]
    fn a_stored_state_dated_in_the_future_is_not_restored() {
        let mut s = Session::new();
        let future = ChannelState {
            last_minute: Some(4_102_444_800),
            values: Values::default(),
            values_ts: Some(4_102_444_800),
            active_since: None,
        };
        let fine = ChannelState {
            last_minute: Some(T0),
            values: Values::default(),
            values_ts: Some(T0),
            active_since: None,
        };
        s.identify(
            DeviceId::parse("dev").unwrap(),
            HashMap::from([(SW0, future), ((Component::Switch, 1), fine.clone())]),
            NOW,
        );
        assert_eq!(s.channels, HashMap::from([((Component::Switch, 1), fine)]));
    }

    #[test]
    fn a_device_outside_the_allow_list_is_refused() {
        let s = Session::new();
        let f = parse_frame(&notify(1.0, json!({})).to_string()).unwrap();
        let mut set = settings();
        set.allow = vec!["other".into()];
        assert!(matches!(s.newcomer(&f, &set, "p"), Err(Stop::Refused(_))));
        set.allow = vec!["dev".into()];
        assert_eq!(
            s.newcomer(&f, &set, "p"),
            Ok(Some(DeviceId::parse("dev").unwrap()))
        );
    }

    #[test]
    fn device_ids_are_validated_and_a_connection_cannot_change_devices() {
        let frame = |v: Value| parse_frame(&v.to_string()).unwrap();
        let fresh = Session::new();
        for bad in ["evil\u{0}id", "a\tb\n", "", "x\u{1b}[2J"] {
            let f = frame(json!({"src": bad, "method": "NotifyStatus", "params": {}}));
            assert!(
                matches!(fresh.newcomer(&f, &settings(), "p"), Err(Stop::Refused(_))),
                "{bad:?}"
            );
        }
        let s = session();
        let other = frame(json!({"src": "other", "method": "NotifyStatus", "params": {}}));
        assert_eq!(
            s.newcomer(&other, &settings(), "p"),
            Err(Stop::Refused("device id mismatch".into()))
        );
        let info = |id: &str| frame(json!({"id": 1, "src": "dev", "result": {"id": id, "gen": 2}}));
        assert_eq!(s.newcomer(&info("dev"), &settings(), "p"), Ok(None));
        assert_eq!(
            s.newcomer(&info("victim"), &settings(), "p"),
            Err(Stop::Refused("device id mismatch".into()))
        );
        // Before any src: the answer's own id is the connection's.
        let bare = frame(json!({"id": 1, "result": {"id": "dev", "gen": 2}}));
        assert_eq!(
            fresh.newcomer(&bare, &settings(), "p"),
            Ok(Some(DeviceId::parse("dev").unwrap()))
        );
    }

    #[test]
    fn refused_channels_magnitudes_and_growth_change_nothing() {
        let (mut s, before) = session_at_100_w();
        let mut wide = serde_json::Map::new();
        for n in 0..1903 {
            wide.insert(format!("switch:{n}"), json!({"apower": 100.0}));
        }
        for bad in [
            json!({"switch:-1": {"apower": 100.0}}),
            json!({"switch:2147483647": {"apower": 100.0}}),
            Value::Object(wide),
            json!({"switch:0": {"apower": 1e300}}),
            json!({"em1:0": {"act_power": 5e28}, "em1:1": {"act_power": 5e28}}),
        ] {
            assert_eq!(feed(&mut s, notify((T0 + 600) as f64, bad)).unwrap(), []);
            assert_eq!((s.status.clone(), s.channels.clone()), before);
        }
        // 1,500 frames each adding a key: the status stops growing.
        for i in 0..1500 {
            let _ = feed(
                &mut s,
                notify((T0 + 1) as f64, json!({ format!("x{i}"): {"v": i} })),
            );
        }
        assert!(s.status.len() <= frames::MAX_KEYS);
    }

    #[test]
    fn pm1_channels_are_keyed_apart_and_unmetered_relays_are_not_logged() {
        let mut s = session();
        let out = feed(
            &mut s,
            notify(
                T0 as f64,
                json!({"pm1:0": {"id": 0, "apower": 118.0}, "switch:0": {"id": 0, "output": true}}),
            ),
        )
        .unwrap();
        let Output::Logs { rows, states, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, (Component::Pm1, 0));
        assert_eq!(states.len(), 1, "no state for the relay");
        assert!(!s.channels.contains_key(&SW0));
    }

    #[test]
    fn a_frame_ahead_of_our_clock_is_taken_at_our_time_and_honest_frames_after_it_count() {
        let mut s = session();
        // NOW is T0 + 3600; the device says NOW + 290 once (inside the
        // 300 s window), then honest times NOW + 10, NOW + 70, ...
        let ahead = feed(
            &mut s,
            notify((NOW + 290) as f64, json!({"switch:0": {"apower": 100.0}})),
        )
        .unwrap();
        let Output::Logs { states, .. } = &ahead[0] else {
            panic!()
        };
        assert_eq!(states[0].1.values_ts, Some(NOW), "taken at our time");
        let mut later = Vec::new();
        for k in 1..=6 {
            let f = json!({"src": "dev", "method": "NotifyStatus",
                           "params": {"ts": (NOW + 60 * k) as f64, "switch:0": {"apower": 200.0 + k as f64}}});
            let f = s.parse(&f.to_string(), "peer").unwrap().unwrap();
            // Our clock moves with the device's honest one.
            later.extend(s.on_frame(f, (NOW + 60 * k) as f64, &settings()).unwrap());
        }
        let minute = NOW - NOW.rem_euclid(60);
        let got: Vec<(i64, i64)> = later
            .iter()
            .flat_map(|o| match o {
                Output::Logs { rows, .. } => rows
                    .iter()
                    .map(|(_, r)| (r.minute, r.values.apower_w.unwrap().try_into().unwrap()))
                    .collect(),
                _ => vec![],
            })
            .collect();
        let want: Vec<(i64, i64)> = (1..=6).map(|k| (minute + 60 * k, 200 + k)).collect();
        assert_eq!(got, want, "none of the six honest frames is dropped");
    }

    #[test]
    fn an_integer_ts_is_a_device_time() {
        let mut s = session();
        let f = json!({"src": "dev", "method": "NotifyStatus",
                       "params": {"ts": T0 + 60, "switch:0": {"apower": 100.0}}});
        assert_eq!(rows(&feed(&mut s, f).unwrap()), [(0, T0 + 60)]);
    }

    #[test]
    fn too_many_malformed_frames_end_the_session() {
        let mut s = session();
        for _ in 0..MAX_MALFORMED - 1 {
            assert_eq!(s.parse("{", "p"), Ok(None));
        }
        assert_eq!(s.parse("{", "p"), Err(Stop::TooManyMalformed));
    }

    #[test]
    fn meter_readings_are_spaced() {
        let mut s = session();
        let em = |ts: i64, p: f64| {
            notify(
                ts as f64,
                json!({"em:0": {"a_act_power": p, "total_act_power": p}}),
            )
        };
        let n = |o: Vec<Output>| {
            o.iter()
                .filter(|o| matches!(o, Output::Reading { .. }))
                .count()
        };
        assert_eq!(n(feed(&mut s, em(T0, 1.0)).unwrap()), 1);
        assert_eq!(n(feed(&mut s, em(T0 + 5, 2.0)).unwrap()), 0);
        assert_eq!(n(feed(&mut s, em(T0 + 12, 3.0)).unwrap()), 1);
    }
}

#![no_main]
// Outbound-WebSocket frames: parse, take the components, merge them, and
// run the minute logger over their switch values.
use libfuzzer_sys::fuzz_target;
use shellyctl::listen::frames::{merge, parse_frame, status_components, switch_values, switches, Frame};
use shellyctl::minute_log::{update, ChannelState, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(Frame::Notify { ts, params, .. }) = parse_frame(text) else { return };
    let comps = status_components(&params);
    let mut status = serde_json::Map::new();
    merge(&mut status, &comps);
    merge(&mut status, &comps);
    let _ = shellyctl::listen::frames::meter(&status);
    let settings = Settings { threshold_w: 5.into(), max_fill_minutes: 60 };
    let t = ts.unwrap_or(0.0).clamp(-1e12, 1e12) as i64;
    for (_, c) in switches(&comps) {
        let mut st = ChannelState::default();
        let _ = update(&mut st, t, &switch_values(c), &settings);
        let _ = update(&mut st, t.saturating_add(3600), &switch_values(c), &settings);
    }
});

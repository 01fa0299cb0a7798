#![no_main]
// Outbound-WebSocket sessions: the input is a sequence of text frames (one
// per line), fed to one session as a device would send them — ids, times
// (never clamped: 1e19, 0, 2100 must be refused by the session itself),
// magnitudes and keys as they come, state carried from frame to frame.
// Whatever arrives: no panic, no output dated outside the plausible
// window, no channel outside 0..=15, and a bounded number of rows.
use libfuzzer_sys::fuzz_target;
use shellyctl::listen::session::{Output, Session, Settings};

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // Refused frames are logged; at fuzzing speed only errors are of use.
    QUIET.call_once(|| {
        std::env::set_var("SHELLYCTL_LOG", "error");
        shellyctl::log::init(shellyctl::log::LogFormat::Json);
    });
    let Ok(text) = std::str::from_utf8(data) else { return };
    let settings = Settings {
        allow: vec![],
        threshold_w: 5.into(),
        channels: None,
        meter_every_s: 10,
        max_fill_minutes: 60,
    };
    let mut s = Session::new();
    for (i, line) in text.lines().take(64).enumerate() {
        let Ok(Some(frame)) = s.parse(line, "fuzz") else { continue };
        match s.newcomer(&frame, &settings, "fuzz") {
            Ok(Some(id)) => s.identify(id, Default::default(), NOW),
            Ok(None) => {}
            Err(_) => return,
        }
        let Ok(out) = s.on_frame(frame, (NOW + i as i64) as f64, &settings) else { return };
        for o in out {
            match o {
                Output::Logs { rows, .. } => {
                    assert!(rows.len() <= 16 * 61, "{} rows from one frame", rows.len());
                    for ((_, ch), r) in rows {
                        assert!((0..=15).contains(&ch));
                        let m = r.minute;
                        assert!(shellyctl::device::check_time(m, NOW + 64).is_ok(), "row at {m}");
                    }
                }
                Output::Reading { at, .. } => {
                    let t = at.timestamp();
                    assert!(shellyctl::device::check_time(t, NOW + 64).is_ok(), "reading at {t}");
                }
                _ => {}
            }
        }
    }
});

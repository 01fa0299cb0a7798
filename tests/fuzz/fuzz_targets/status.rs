#![no_main]
// Shelly.GetStatus and /shelly parsing: any bytes from a device must give
// a status (values within physical ranges) or an error, never a panic; a
// device id that parses is always a plain one (no control characters, no
// COPY or CSV separators).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(s) = shellyctl::shelly::status::parse_status(&v) {
            for sw in &s.switches {
                assert!((0..=15).contains(&sw.channel));
            }
        }
    }
    if let Ok(info) = serde_json::from_slice::<shellyctl::shelly::DeviceInfo>(data) {
        assert!(info.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shellyctl::device::DeviceId::parse(text);
        let _ = shellyctl::shelly::client::rpc_error(text);
        let _ = shellyctl::shelly::digest::parse_challenge(text);
    }
});

#![no_main]
// Shelly.GetStatus parsing: any bytes from a device must give a status or
// an error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = shellyctl::shelly::status::parse_status(&v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shellyctl::shelly::client::rpc_error(text);
        let _ = shellyctl::shelly::digest::parse_challenge(text);
    }
});

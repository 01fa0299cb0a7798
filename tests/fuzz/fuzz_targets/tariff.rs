#![no_main]
// Tariff files: validate, then expand a week of zone periods.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = shellyctl::tariff::Tariff::parse(text) {
        let from = t.valid_from_utc();
        let _ = t.periods(from, from + 7 * 86_400);
        let _ = shellyctl::tariff::parse_prices(text, t.tz);
    }
});

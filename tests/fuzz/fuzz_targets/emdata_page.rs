#![no_main]
// EMData.GetData pages: parse, plan the rows by keys, build the COPY text.
use libfuzzer_sys::fuzz_target;
use shellyctl::shelly::emdata::{layout, parse_page};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(page) = parse_page(text, None) {
        for ch in [None, Some("A")] {
            let l = layout(&page.keys, ch);
            let _ = shellyctl::db::intervals::copy_rows("dev", "emdata:0", &l, &page.records);
        }
    }
});

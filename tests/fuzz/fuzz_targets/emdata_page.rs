#![no_main]
// EMData.GetData pages: parse (device times and values unclamped: the
// parser must refuse what is implausible), plan the rows by keys, build the
// COPY text. The first line of the input is the device id: whatever it
// holds, every COPY row must keep exactly its 22 fields.
use libfuzzer_sys::fuzz_target;
use shellyctl::shelly::emdata::{layout, parse_page};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (id, page) = text.split_once('\n').unwrap_or(("dev", text));
    if let Ok(page) = parse_page(page, None, 1_800_000_000) {
        for ch in [None, Some("A")] {
            let l = layout(&page.keys, ch);
            let (copy, rows) = shellyctl::db::intervals::copy_rows(id, "emdata:0", &l, &page.records);
            assert_eq!(copy.lines().count() as u64, rows);
            assert!(copy.lines().all(|line| line.matches('\t').count() == 21));
        }
    }
});

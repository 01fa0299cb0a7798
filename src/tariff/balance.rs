//! From measured energy to billed energy: the tariff's balancing rule
//! (pure).
//!
//! The input is, per meter, the energy of spans of time summed over the
//! phases; for `per_record` the database has already netted the phases
//! within each record (that needs the records themselves). For `hourly`
//! each local clock hour of each meter is netted here: what the phases took
//! minus what they fed in; a positive remainder is billed import, a
//! negative one billed export, and the rest is self-consumption.

use super::cost::Span;
use super::{Balancing, Tariff};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Energy of one meter over [start, end), summed over its phases.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSpan {
    pub meter: usize,
    pub start: i64,
    pub end: i64,
    pub import_wh: Decimal,
    pub export_wh: Decimal,
}

/// Billed spans (meters merged, sorted by start) under `tariff`'s rule.
pub fn billed(tariff: &Tariff, spans: &[MeterSpan]) -> Vec<Span> {
    match tariff.file.balancing {
        Balancing::None | Balancing::PerRecord => merge(spans.iter().map(|s| Span {
            start: s.start,
            end: s.end,
            import_wh: s.import_wh,
            export_wh: s.export_wh,
        })),
        Balancing::Hourly => hourly(tariff, spans),
    }
}

/// Sums the spans per (start, end), in start order. Runs of equal keys
/// (the meters of one hour, as `hourly` yields them) are summed before
/// they meet the map.
fn merge(spans: impl Iterator<Item = Span>) -> Vec<Span> {
    let mut by: BTreeMap<(i64, i64), Span> = BTreeMap::new();
    let mut add = |s: Span| {
        let e = by.entry((s.start, s.end)).or_insert(Span {
            import_wh: Decimal::ZERO,
            export_wh: Decimal::ZERO,
            ..s
        });
        e.import_wh += s.import_wh;
        e.export_wh += s.export_wh;
    };
    let mut run: Option<Span> = None;
    for s in spans {
        match &mut run {
            Some(r) if (r.start, r.end) == (s.start, s.end) => {
                r.import_wh += s.import_wh;
                r.export_wh += s.export_wh;
            }
            _ => {
                if let Some(r) = run.replace(s) {
                    add(r);
                }
            }
        }
    }
    if let Some(r) = run {
        add(r);
    }
    by.into_values().collect()
}

/// Per meter and local clock hour: import minus export of all phases.
/// A span that crosses an hour boundary is shared pro rata by time.
fn hourly(tariff: &Tariff, spans: &[MeterSpan]) -> Vec<Span> {
    // Every (hour, meter) share, then summed per key after one sort: a
    // year of 50 meters is close to a million shares, which a map would
    // insert one by one. Spans come sorted by start, so the hour of the
    // previous start is asked of the zone only once per start.
    let mut shares: Vec<((i64, usize), Decimal)> = Vec::with_capacity(spans.len());
    let mut last = (i64::MIN, 0);
    let mut hour_start = |at: i64| {
        if at != last.0 {
            last = (at, tariff.hour_start(at));
        }
        last.1
    };
    for s in spans {
        if s.end <= s.start {
            continue;
        }
        let mut at = s.start;
        while at < s.end {
            let hour = hour_start(at);
            let next = (hour + 3600).min(s.end);
            let part = s.import_wh - s.export_wh;
            let part = if at == s.start && next == s.end {
                part
            } else {
                part * Decimal::from(next - at) / Decimal::from(s.end - s.start)
            };
            shares.push(((hour, s.meter), part));
            at = next;
        }
    }
    shares.sort_by_key(|(k, _)| *k);
    let mut net: Vec<((i64, usize), Decimal)> = Vec::with_capacity(shares.len());
    for (k, part) in shares {
        match net.last_mut() {
            Some((lk, n)) if *lk == k => *n += part,
            _ => net.push((k, part)),
        }
    }
    merge(net.into_iter().map(|((hour, _), n)| {
        let (import_wh, export_wh) = remainder(n);
        Span {
            start: hour,
            end: hour + 3600,
            import_wh,
            export_wh,
        }
    }))
}

/// An hour's net (import minus export) as billed import and export: a
/// positive remainder is import, a negative one export, never both.
pub fn remainder(net: Decimal) -> (Decimal, Decimal) {
    (net.max(Decimal::ZERO), (-net).max(Decimal::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::EXAMPLES;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn span(meter: usize, start: i64, import: &str, export: &str) -> MeterSpan {
        MeterSpan {
            meter,
            start,
            end: start + 900,
            import_wh: d(import),
            export_wh: d(export),
        }
    }

    #[test]
    fn an_hour_is_netted_per_meter_and_the_remainder_billed() {
        let mut t = Tariff::parse(EXAMPLES[0].1).unwrap();
        t.file.balancing = Balancing::Hourly;
        // 2026-06-03 10:00 UTC = 12:00 CEST: an hour boundary in Warsaw.
        let h = 1_780_480_800;
        assert_eq!(t.hour_start(h + 1799), h);
        let spans = [
            // meter 0: 1000 in, 300 out in the first hour → import 700
            span(0, h, "600", "0"),
            span(0, h + 900, "400", "300"),
            // meter 1 exports more than it takes → export 50; never netted with meter 0
            span(1, h, "0", "80"),
            span(1, h + 1800, "30", "0"),
            // meter 0, next hour: 200 out → export 200
            span(0, h + 3600, "0", "200"),
        ];
        let b = billed(&t, &spans);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].start, b[0].end), (h, h + 3600));
        assert_eq!((b[0].import_wh, b[0].export_wh), (d("700"), d("50")));
        assert_eq!((b[1].import_wh, b[1].export_wh), (d("0"), d("200")));
    }

    #[test]
    fn a_span_across_an_hour_is_shared_by_time_and_none_keeps_everything() {
        let mut t = Tariff::parse(EXAMPLES[0].1).unwrap();
        t.file.balancing = Balancing::Hourly;
        let h = 1_780_480_800;
        let s = MeterSpan {
            meter: 0,
            start: h + 3000,
            end: h + 4200,
            import_wh: d("120"),
            export_wh: d("0"),
        };
        let b = billed(&t, std::slice::from_ref(&s));
        assert_eq!((b[0].import_wh, b[1].import_wh), (d("60"), d("60")));
        t.file.balancing = Balancing::None;
        let b = billed(&t, &[s.clone(), MeterSpan { meter: 1, ..s }]);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].import_wh, d("240"));
    }
}

//! The DSO's hourly readings as billed energy: the same balancing stage
//! (`tariff::balance`) as the Shelly's records, except that an hour the DSO
//! balanced itself (the export's "po zbilansowaniu" values) is billed as
//! the DSO balanced it, under a tariff that balances hourly.

use crate::ami::Hour;
use crate::tariff::balance::{self, MeterSpan};
use crate::tariff::cost::Span;
use crate::tariff::{Balancing, Tariff};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Billed spans of the DSO's hours, and how they were balanced.
#[derive(Debug, Default, PartialEq)]
pub struct Billed {
    pub spans: Vec<Span>,
    pub how: How,
}

/// How many of the DSO's hours were billed which way.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct How {
    /// Hours billed with the DSO's own hourly-balanced values.
    pub dso_balanced: usize,
    /// Hours balanced here per hour (the file had no balanced values).
    pub netted_here: usize,
    /// Hours billed as measured (a tariff that does not balance hourly).
    pub as_measured: usize,
}

fn wh(kwh: Decimal) -> Decimal {
    kwh * Decimal::from(1000)
}

/// Billed spans of `hours` in [from, to) under `versions` (each balancing
/// the hours in its window, `super::version_windows`).
pub fn billed(versions: &[Tariff], hours: &BTreeMap<i64, Hour>, from: i64, to: i64) -> Billed {
    let mut out = Billed::default();
    for (v, (lo, hi)) in versions
        .iter()
        .zip(super::version_windows(versions, from, to))
    {
        let mut rest = Vec::new();
        for h in hours.range(lo..hi).map(|(_, h)| h) {
            match (
                v.file.balancing,
                h.balanced_import_kwh,
                h.balanced_export_kwh,
            ) {
                (Balancing::Hourly, Some(bi), Some(be)) => {
                    out.how.dso_balanced += 1;
                    out.spans.push(Span {
                        start: h.start,
                        end: h.start + 3600,
                        import_wh: wh(bi),
                        export_wh: wh(be),
                    });
                }
                (b, _, _) => {
                    if b == Balancing::Hourly {
                        out.how.netted_here += 1;
                    } else {
                        out.how.as_measured += 1;
                    }
                    rest.push(MeterSpan {
                        meter: 0,
                        start: h.start,
                        end: h.start + 3600,
                        import_wh: wh(h.import_kwh),
                        export_wh: wh(h.export_kwh),
                    });
                }
            }
        }
        out.spans.extend(balance::billed(v, &rest));
    }
    out.spans.sort_by_key(|s| (s.start, s.end));
    out
}

/// The hours of [from, to) the DSO's data lack (unix starts).
pub fn missing(hours: &BTreeMap<i64, Hour>, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = from - from.rem_euclid(3600);
    while t < to {
        if !hours.contains_key(&t) {
            out.push(t);
        }
        t += 3600;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::EXAMPLES;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn hour(start: i64, i: &str, e: &str, b: Option<(&str, &str)>) -> (i64, Hour) {
        (
            start,
            Hour {
                start,
                import_kwh: d(i),
                export_kwh: d(e),
                balanced_import_kwh: b.map(|b| d(b.0)),
                balanced_export_kwh: b.map(|b| d(b.1)),
            },
        )
    }

    #[test]
    fn the_dso_balance_is_taken_where_given_and_made_here_where_not() {
        let mut t = Tariff::parse(EXAMPLES[0].1).unwrap();
        t.file.balancing = Balancing::Hourly;
        // 2026-06-03 10:00 UTC, a Warsaw hour boundary.
        let h = 1_780_480_800;
        let hours: BTreeMap<i64, Hour> = [
            // The DSO's own balance (it nets its phases its own way): taken as given.
            hour(h, "1.2", "0.5", Some(("0.75", "0"))),
            // No balanced values: 0.3 − 1.1 = −0.8 → export 0.8.
            hour(h + 3600, "0.3", "1.1", None),
            // Outside the range.
            hour(h + 7200, "9", "0", None),
        ]
        .into_iter()
        .collect();
        let b = billed(std::slice::from_ref(&t), &hours, h, h + 7200);
        assert_eq!(
            (b.how.dso_balanced, b.how.netted_here, b.how.as_measured),
            (1, 1, 0)
        );
        assert_eq!(b.spans.len(), 2);
        assert_eq!(
            (b.spans[0].import_wh, b.spans[0].export_wh),
            (d("750"), d("0"))
        );
        assert_eq!(
            (b.spans[1].import_wh, b.spans[1].export_wh),
            (d("0"), d("800"))
        );

        // A tariff without balancing bills both directions as measured.
        t.file.balancing = Balancing::None;
        let b = billed(std::slice::from_ref(&t), &hours, h, h + 7200);
        assert_eq!(
            (b.how.dso_balanced, b.how.netted_here, b.how.as_measured),
            (0, 0, 2)
        );
        assert_eq!(
            (b.spans[0].import_wh, b.spans[0].export_wh),
            (d("1200"), d("500"))
        );
        assert_eq!(missing(&hours, h, h + 4 * 3600), vec![h + 3 * 3600]);
    }
}

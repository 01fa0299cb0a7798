//! Gap finding: which spans of a range have no interval records in the
//! database, and which parts of them the device still holds. Pure logic.

use serde::Serialize;

/// A half-open span [start, end) in unix seconds.
pub type Span = (i64, i64);

/// The spans of [from, to) not covered by `intervals` (sorted by start;
/// overlaps allowed).
pub fn missing(intervals: &[Span], from: i64, to: i64) -> Vec<Span> {
    let mut out = Vec::new();
    let mut at = from;
    for &(s, e) in intervals {
        if e <= at {
            continue;
        }
        if s >= to {
            break;
        }
        if s > at {
            out.push((at, s.min(to)));
        }
        at = at.max(e);
        if at >= to {
            break;
        }
    }
    if at < to {
        out.push((at, to));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// The device still stores records here: a backfill fills it.
    Recoverable,
    /// The device has no records here (power loss, or older than its
    /// retention): the data is gone.
    Lost,
    /// The device could not be asked.
    Unknown,
}

/// Splits a missing span by the device's stored spans (`device`, sorted).
pub fn classify(gap: Span, device: &[Span]) -> Vec<(Span, Availability)> {
    let mut out = Vec::new();
    let mut at = gap.0;
    for &(s, e) in device {
        if e <= at || s >= gap.1 {
            continue;
        }
        if s > at {
            out.push(((at, s), Availability::Lost));
        }
        let end = e.min(gap.1);
        out.push(((s.max(at), end), Availability::Recoverable));
        at = end;
    }
    if at < gap.1 {
        out.push(((at, gap.1), Availability::Lost));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Availability::*;

    #[test]
    fn missing_finds_leading_inner_and_trailing_holes() {
        let iv = [(10, 20), (20, 30), (40, 50), (45, 60)];
        assert_eq!(missing(&iv, 0, 100), vec![(0, 10), (30, 40), (60, 100)]);
        assert_eq!(missing(&iv, 10, 60), vec![(30, 40)]);
        assert_eq!(missing(&iv, 12, 25), vec![]);
        assert_eq!(missing(&[], 5, 7), vec![(5, 7)]);
    }

    #[test]
    fn classify_splits_a_gap_by_what_the_device_holds() {
        let device = [(0, 100), (200, 300)];
        assert_eq!(
            classify((50, 250), &device),
            vec![
                ((50, 100), Recoverable),
                ((100, 200), Lost),
                ((200, 250), Recoverable)
            ]
        );
        assert_eq!(classify((120, 180), &device), vec![((120, 180), Lost)]);
        assert_eq!(classify((10, 20), &device), vec![((10, 20), Recoverable)]);
        assert_eq!(
            classify((290, 320), &device),
            vec![((290, 300), Recoverable), ((300, 320), Lost)]
        );
    }
}

//! A pushed channel's day as a timeline (pure logic): active periods
//! (minutes logged above the threshold), idle periods (connected, below
//! it) and periods without a connection to `listen`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    Idle,
    Disconnected,
}

/// A connection of the device: [start, end), and why it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub start: i64,
    pub end: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub kind: Kind,
    pub start: i64,
    pub end: i64,
    /// For a disconnected period: why the connection before it ended
    /// (None: no connection before it was ever recorded).
    pub reason: Option<String>,
}

/// Cuts [from, to) into active, idle and disconnected segments. Active
/// wins over the connection state (a minute logged from held values while
/// the device was briefly away is on record as active); adjacent segments
/// of the same kind and reason are merged.
pub fn timeline(
    from: i64,
    to: i64,
    connections: &[Connection],
    active: &[(i64, i64)],
) -> Vec<Segment> {
    let mut cuts = vec![from, to];
    for c in connections {
        cuts.extend([c.start, c.end]);
    }
    for (s, e) in active {
        cuts.extend([*s, *e]);
    }
    cuts.retain(|t| (from..=to).contains(t));
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<Segment> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let is_active = active.iter().any(|(s, e)| *s <= a && b <= *e);
        let connected = connections.iter().any(|c| c.start <= a && b <= c.end);
        let (kind, reason) = if is_active {
            (Kind::Active, None)
        } else if connected {
            (Kind::Idle, None)
        } else {
            let before = connections
                .iter()
                .filter(|c| c.end <= a)
                .max_by_key(|c| c.end)
                .and_then(|c| c.reason.clone());
            (Kind::Disconnected, before)
        };
        match out.last_mut() {
            Some(l) if l.kind == kind && l.reason == reason && l.end == a => l.end = b,
            _ => out.push(Segment {
                kind,
                start: a,
                end: b,
                reason,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: Kind, start: i64, end: i64, reason: Option<&str>) -> Segment {
        Segment {
            kind,
            start,
            end,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn a_day_of_activity_idleness_and_silence() {
        let conns = [
            Connection {
                start: 100,
                end: 400,
                reason: Some("idle timeout".into()),
            },
            Connection {
                start: 500,
                end: 1000,
                reason: None,
            },
        ];
        let t = timeline(0, 1000, &conns, &[(160, 220), (220, 280), (600, 660)]);
        assert_eq!(
            t,
            [
                seg(Kind::Disconnected, 0, 100, None),
                seg(Kind::Idle, 100, 160, None),
                seg(Kind::Active, 160, 280, None),
                seg(Kind::Idle, 280, 400, None),
                seg(Kind::Disconnected, 400, 500, Some("idle timeout")),
                seg(Kind::Idle, 500, 600, None),
                seg(Kind::Active, 600, 660, None),
                seg(Kind::Idle, 660, 1000, None),
            ]
        );
    }

    #[test]
    fn periods_outside_the_window_are_cut_to_it() {
        let conns = [Connection {
            start: -50,
            end: 2000,
            reason: None,
        }];
        let t = timeline(0, 100, &conns, &[(-60, 60)]);
        assert_eq!(
            t,
            [
                seg(Kind::Active, 0, 60, None),
                seg(Kind::Idle, 60, 100, None)
            ]
        );
        assert_eq!(
            timeline(0, 100, &[], &[]),
            [seg(Kind::Disconnected, 0, 100, None)]
        );
    }
}

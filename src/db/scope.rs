//! A range of time and a selection of devices, as the derived tables
//! (energy slots, one-minute aggregates) are rebuilt or checked over. Its
//! own module: slots, minutes, partitions and retention all take one, and
//! none of them needs another for it.

use chrono::{DateTime, Utc};

/// A time range and device selection: `None` is unbounded / every device.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub devices: Vec<String>,
}

impl Scope {
    /// [from, to) for every device (`None` is unbounded).
    pub fn between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Scope {
        Scope {
            from,
            to,
            devices: Vec::new(),
        }
    }

    /// Rounds the range out to whole multiples of `step` seconds.
    pub fn aligned_to(&self, step: i64) -> Scope {
        let floor = |t: DateTime<Utc>| {
            let s = t.timestamp();
            DateTime::from_timestamp(s - s.rem_euclid(step), 0).unwrap_or(t)
        };
        let ceil = |t: DateTime<Utc>| {
            let s = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
            DateTime::from_timestamp(s + (step - s.rem_euclid(step)) % step, 0).unwrap_or(t)
        };
        Scope {
            from: self.from.map(floor),
            to: self.to.map(ceil),
            devices: self.devices.clone(),
        }
    }
}

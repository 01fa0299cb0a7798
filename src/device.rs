//! Values a device (or a WebSocket peer) sends that we keep or act on,
//! validated at the edge: the device id, its clock, physical magnitudes.
//! Nothing a device sends reaches state, SQL text, a loop bound or
//! arithmetic before it has passed through here.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A device id as Shelly devices report it (`shellypro3em-aabbccddeeff`):
/// 1 to 64 characters of `A-Z a-z 0-9 - _ . :`. No control characters, no
/// separators of COPY text or CSV, no terminal escapes.
///
/// Bound to SQL as its text; read back through `parse` (a hand-written
/// `FromSql`: a derived transparent one would skip the validation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, postgres_types::ToSql)]
#[serde(transparent)]
#[postgres(transparent)]
pub struct DeviceId(String);

pub const MAX_ID_LEN: usize = 64;

/// A text a device or a file gave (a name, a model, a firmware string)
/// made storable: U+0000, which PostgreSQL's text cannot hold, is dropped.
/// (Printing escapes the rest: `output::printable`.)
pub fn storable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', ""))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("the device id is empty")]
    Empty,
    #[error("the device id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("the device id {0} contains a character outside A-Z a-z 0-9 - _ . :")]
    BadChar(String),
}

impl DeviceId {
    pub fn parse(s: &str) -> Result<DeviceId, InvalidId> {
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            // Shown escaped: the id itself may carry terminal escapes.
            return Err(InvalidId::BadChar(format!("{:?}", truncate(s, MAX_ID_LEN))));
        }
        Ok(DeviceId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for DeviceId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for DeviceId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DeviceId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'a> postgres_types::FromSql<'a> for DeviceId {
    fn from_sql(
        ty: &postgres_types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let s = <&str as postgres_types::FromSql>::from_sql(ty, raw)?;
        Ok(DeviceId::parse(s)?)
    }
    fn accepts(ty: &postgres_types::Type) -> bool {
        <&str as postgres_types::FromSql>::accepts(ty)
    }
}

/// The plausible window for a device's clock: not before 2000-01-01, not
/// after now plus a small skew. A device without time sync sends 1970; an
/// RTC glitch jumps years ahead; neither may reach state or cursors.
pub const EARLIEST_TS: i64 = 946_684_800;
/// How far ahead of our clock a device's clock may run.
pub const MAX_AHEAD_S: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "device time {shown} is outside the plausible window (2000-01-01 to now + {MAX_AHEAD_S} s)"
)]
pub struct ImplausibleTime {
    pub shown: String,
}

/// A device timestamp (unix seconds) checked against the plausible window.
pub fn check_time(ts: i64, now: i64) -> Result<i64, ImplausibleTime> {
    if ts < EARLIEST_TS || ts > now.saturating_add(MAX_AHEAD_S) {
        return Err(ImplausibleTime { shown: show_ts(ts) });
    }
    Ok(ts)
}

/// A timestamp from JSON (seconds, maybe fractional) checked the same way;
/// NaN, infinities and values beyond i64 are refused, never clamped.
pub fn check_time_f64(ts: f64, now: i64) -> Result<i64, ImplausibleTime> {
    if !ts.is_finite() || ts < i64::MIN as f64 || ts > i64::MAX as f64 {
        return Err(ImplausibleTime {
            shown: format!("{ts}"),
        });
    }
    check_time(ts.floor() as i64, now)
}

fn show_ts(ts: i64) -> String {
    match chrono::DateTime::from_timestamp(ts, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{ts} (unix seconds)"),
    }
}

/// Physical ranges of what a meter can measure; a value outside is a
/// broken or hostile device, refused before it is stored or summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Active, apparent or reactive power (W, VA, var), signed.
    Power,
    /// Energy of one interval record (Wh, varh).
    IntervalEnergy,
    /// A lifetime energy counter (Wh).
    Counter,
    Voltage,
    /// Current (A), signed for some meters.
    Current,
    Frequency,
    PowerFactor,
    /// Temperature (°C).
    Temperature,
}

impl Quantity {
    /// Inclusive bounds: generous for any household or small commercial
    /// meter (a 3 × 63 A supply is about 44 kW), tight enough that sums of
    /// a year of records can never overflow a Decimal.
    pub fn bounds(self) -> (Decimal, Decimal) {
        let n = |x: i64| Decimal::from(x);
        match self {
            Quantity::Power => (n(-10_000_000), n(10_000_000)),
            Quantity::IntervalEnergy => (n(-10_000_000), n(10_000_000)),
            Quantity::Counter => (n(-1_000_000_000_000), n(1_000_000_000_000)),
            Quantity::Voltage => (n(-2_000), n(2_000)),
            Quantity::Current => (n(-100_000), n(100_000)),
            Quantity::Frequency => (n(0), n(1_000)),
            Quantity::PowerFactor => (n(-2), n(2)),
            Quantity::Temperature => (n(-100), n(300)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantity::Power => "power",
            Quantity::IntervalEnergy => "interval energy",
            Quantity::Counter => "energy counter",
            Quantity::Voltage => "voltage",
            Quantity::Current => "current",
            Quantity::Frequency => "frequency",
            Quantity::PowerFactor => "power factor",
            Quantity::Temperature => "temperature",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{quantity} {value} is outside the physical range {min}..{max}")]
pub struct OutOfRange {
    pub quantity: &'static str,
    pub value: String,
    pub min: Decimal,
    pub max: Decimal,
}

/// `v` if it lies within the quantity's physical range.
pub fn check(q: Quantity, v: Decimal) -> Result<Decimal, OutOfRange> {
    let (min, max) = q.bounds();
    if v < min || v > max {
        return Err(OutOfRange {
            quantity: q.name(),
            value: v.to_string(),
            min,
            max,
        });
    }
    Ok(v)
}

/// Device decimal text (`"60.7312"`, maybe `1e400`) into a Decimal within
/// the quantity's range; the text is refused, never stored, otherwise.
pub fn check_text(q: Quantity, text: &str) -> Result<Decimal, OutOfRange> {
    let out = || {
        let (min, max) = q.bounds();
        OutOfRange {
            quantity: q.name(),
            value: truncate(text, 40).to_string(),
            min,
            max,
        }
    };
    let d = text
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| out())?;
    check(q, d).map_err(|_| out())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_refused_unless_plain() {
        assert_eq!(
            DeviceId::parse("shelly3em63g3-e4b063a1b2c3")
                .unwrap()
                .as_str(),
            "shelly3em63g3-e4b063a1b2c3"
        );
        assert_eq!(DeviceId::parse(""), Err(InvalidId::Empty));
        assert_eq!(DeviceId::parse(&"a".repeat(65)), Err(InvalidId::TooLong));
        for bad in [
            "meter\t1",
            "a\nb",
            "x\u{1b}[31m",
            "nul\0",
            "ü",
            "a b",
            "a,b",
            "a\\b",
        ] {
            assert!(
                matches!(DeviceId::parse(bad), Err(InvalidId::BadChar(_))),
                "{bad:?}"
            );
        }
        let e = DeviceId::parse("x\u{1b}[2J").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
        assert!(serde_json::from_str::<DeviceId>("\"a\\tb\"").is_err());
    }

    #[test]
    fn device_times_outside_the_window_are_refused() {
        let now = 1_800_000_000;
        assert_eq!(check_time(now, now), Ok(now));
        assert_eq!(check_time(now + 300, now), Ok(now + 300));
        assert!(check_time(now + 301, now).is_err());
        assert!(check_time(0, now).is_err());
        assert!(check_time(4_102_444_800, now).is_err(), "2100");
        // No overflow at the edges of i64.
        assert!(check_time(i64::MIN, i64::MAX).is_err());
        for x in [1e19, -1e19, f64::NAN, f64::INFINITY, 0.0] {
            assert!(check_time_f64(x, now).is_err(), "{x}");
        }
        assert_eq!(check_time_f64(1_799_999_999.9, now), Ok(1_799_999_999));
        assert!(check_time(0, now)
            .unwrap_err()
            .to_string()
            .contains("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn magnitudes_outside_physical_ranges_are_refused() {
        assert!(check_text(Quantity::IntervalEnergy, "1e400").is_err());
        assert!(check_text(Quantity::IntervalEnergy, "99999999999").is_err());
        assert_eq!(
            check_text(Quantity::IntervalEnergy, "60.7312").unwrap(),
            "60.7312".parse::<Decimal>().unwrap()
        );
        assert!(check_text(Quantity::Voltage, "NaN").is_err());
        assert!(check(Quantity::Power, Decimal::from(-44_000)).is_ok());
        let e = check_text(Quantity::Power, &"9".repeat(500))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
    }
}

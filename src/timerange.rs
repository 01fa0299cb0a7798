//! Local days → UTC ranges, in a named IANA zone or the system zone,
//! correct across DST changes (a local day may be 23 or 25 hours long).

use crate::exit::ConfigError;
use chrono::{Days, NaiveDate, NaiveTime, TimeZone};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// The system time zone (TZ, else /etc/localtime).
    System,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `--tz` value, else `TZ` when it names a zone, else the system zone.
    pub fn resolve(arg: Option<&str>) -> Result<Zone, ConfigError> {
        match arg {
            Some(name) => name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                ConfigError(format!(
                    "unknown time zone {name:?} (use an IANA name such as Europe/Warsaw)"
                ))
            }),
            None => Ok(std::env::var("TZ")
                .ok()
                .and_then(|t| t.trim_start_matches(':').parse::<chrono_tz::Tz>().ok())
                .or_else(|| {
                    iana_time_zone::get_timezone()
                        .ok()
                        .and_then(|n| n.parse().ok())
                })
                .map(Zone::Named)
                .unwrap_or(Zone::System)),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Zone::System => "system".into(),
            Zone::Named(tz) => tz.name().into(),
        }
    }

    /// An IANA name for SQL (`AT TIME ZONE`); UTC when the system zone has
    /// no known name.
    pub fn sql_name(&self) -> String {
        match self {
            Zone::System => "UTC".into(),
            Zone::Named(tz) => tz.name().into(),
        }
    }

    /// Today's date in this zone.
    pub fn today(&self) -> NaiveDate {
        let now = chrono::Utc::now();
        match self {
            Zone::System => now.with_timezone(&chrono::Local).date_naive(),
            Zone::Named(tz) => now.with_timezone(tz).date_naive(),
        }
    }

    /// `ts` as local wall-clock time with its UTC offset.
    pub fn format(&self, ts: i64) -> String {
        let Some(t) = chrono::DateTime::from_timestamp(ts, 0) else {
            return ts.to_string();
        };
        match self {
            Zone::System => t
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M%:z")
                .to_string(),
            Zone::Named(tz) => t.with_timezone(tz).format("%Y-%m-%d %H:%M%:z").to_string(),
        }
    }

    /// Unix time of the first instant of `date` in this zone. When midnight
    /// does not exist (a DST jump at 00:00), the day starts at the first
    /// valid instant after it.
    pub fn day_start(&self, date: NaiveDate) -> i64 {
        let naive = date.and_time(NaiveTime::MIN);
        fn first<T: TimeZone>(tz: &T, naive: chrono::NaiveDateTime) -> i64 {
            let mut t = naive;
            for _ in 0..(4 * 60) {
                if let Some(dt) = tz.from_local_datetime(&t).earliest() {
                    return dt.timestamp();
                }
                t += chrono::Duration::minutes(1);
            }
            naive.and_utc().timestamp()
        }
        match self {
            Zone::System => first(&chrono::Local, naive),
            Zone::Named(tz) => first(tz, naive),
        }
    }

    /// [start, end) of the local days `from..=to` as unix seconds.
    pub fn days(&self, from: NaiveDate, to: NaiveDate) -> (i64, i64) {
        let next = to.checked_add_days(Days::new(1)).unwrap_or(to);
        (self.day_start(from), self.day_start(next))
    }
}

pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("expected a date like 2026-03-29, got {s:?}"))
}

/// A month, `YYYY-MM`, as its first day.
pub fn parse_month(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map_err(|_| format!("expected a month like 2026-03, got {s:?}"))
}

/// `--day D` or `--from D1 [--to D2]` in `--tz`: inclusive local days,
/// shared by every command that works on days (report gaps, backfill).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DayRange {
    /// A local day (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date, conflicts_with_all = ["from", "to"])]
    pub day: Option<NaiveDate>,
    /// First local day of a range (inclusive).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Last local day of a range (inclusive; default: --from).
    #[arg(long, value_parser = parse_date, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Time zone of the days (IANA name, e.g. Europe/Warsaw). Default: TZ,
    /// else the system zone.
    #[arg(long)]
    pub tz: Option<String>,
}

impl DayRange {
    /// The zone, and the range as UTC seconds [from, to).
    pub fn resolve(&self) -> anyhow::Result<(Zone, i64, i64)> {
        let zone = Zone::resolve(self.tz.as_deref())?;
        let (from, to) = resolve_days(self.day, self.from, self.to, zone)?;
        Ok((zone, from, to))
    }
}

/// `--device ID` (repeatable): the devices a report or job is limited to.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only this device id (repeatable). Default: every device the command
    /// finds data for.
    #[arg(long = "device")]
    pub devices: Vec<String>,
}

/// Resolves `--day` or `--from`/`--to` (inclusive local days) to a range.
pub fn resolve_days(
    day: Option<NaiveDate>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    zone: Zone,
) -> Result<(i64, i64), crate::exit::UsageError> {
    use crate::exit::UsageError;
    let (f, t) = match (day, from, to) {
        (Some(d), None, None) => (d, d),
        (None, Some(f), Some(t)) => (f, t),
        (None, Some(f), None) => (f, f),
        _ => return Err(UsageError("give --day D, or --from D1 [--to D2]".into())),
    };
    if t < f {
        return Err(UsageError(format!("--to {t} is before --from {f}")));
    }
    Ok(zone.days(f, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long_in_warsaw() {
        let z = Zone::resolve(Some("Europe/Warsaw")).unwrap();
        let (s, e) = z.days(d("2026-03-29"), d("2026-03-29"));
        assert_eq!(e - s, 23 * 3600);
        assert_eq!(s, 1774738800, "2026-03-28T23:00:00Z");
        let (s, e) = z.days(d("2026-10-25"), d("2026-10-25"));
        assert_eq!(e - s, 25 * 3600);
        let (s, e) = z.days(d("2026-06-01"), d("2026-06-02"));
        assert_eq!(e - s, 48 * 3600);
    }

    #[test]
    fn a_missing_midnight_starts_the_day_at_the_first_valid_minute() {
        // America/Havana jumps from 00:00 to 01:00 on 2026-03-08.
        let z = Zone::resolve(Some("America/Havana")).unwrap();
        let s = z.day_start(d("2026-03-08"));
        let local = chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .with_timezone(&chrono_tz::America::Havana);
        assert_eq!(local.format("%H:%M").to_string(), "01:00");
    }

    #[test]
    fn day_arguments_are_validated() {
        let z = Zone::Named(chrono_tz::UTC);
        assert_eq!(
            resolve_days(Some(d("2026-01-02")), None, None, z).unwrap(),
            (1767312000, 1767398400)
        );
        assert!(resolve_days(None, Some(d("2026-01-03")), Some(d("2026-01-02")), z).is_err());
        assert!(resolve_days(Some(d("2026-01-02")), Some(d("2026-01-02")), None, z).is_err());
        assert!(Zone::resolve(Some("Mars/Olympus")).is_err());
        assert!(parse_date("2026-13-01").is_err());
    }
}

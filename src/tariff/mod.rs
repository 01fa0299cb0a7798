//! Tariffs: the file format, its validation, and the expansion of a
//! tariff's schedule into concrete priced periods (pure logic).
//!
//! Zones are chosen by local wall-clock time in the tariff's time zone, by
//! day type (weekday, saturday, sunday, holiday) and optionally by month, so
//! 23- and 25-hour days come out right by construction.

pub mod balance;
pub mod components;
pub mod cost;
pub mod holidays;

pub use components::{
    Balancing, CapacityFee, Charge, Export, ExportKind, Fee, PriceOverride, Settlement,
    SubscriptionFee,
};

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone, Weekday};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeSet;

/// A decimal read from the JSON's own text (a number or a string), never
/// through a float.
pub(crate) fn exact<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(d)?;
    let t = raw.get().trim().trim_matches('"');
    t.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a decimal number")))
}

pub(crate) fn exact_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let raw: Option<Box<RawValue>> = Deserialize::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => {
            let t = r.get().trim().trim_matches('"');
            t.parse::<Decimal>()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a decimal number")))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Prices per zone, zones by schedule.
    Fixed,
    /// Energy prices per hour or quarter-hour from `tariff prices import`.
    Dynamic,
}

fn fixed() -> Kind {
    Kind::Fixed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayType {
    Weekday,
    Saturday,
    Sunday,
    Holiday,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holidays {
    /// Built-in rules for a country code (PL).
    #[serde(default)]
    pub country: Option<String>,
    /// Extra holiday dates.
    #[serde(default)]
    pub dates: Vec<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonePrice {
    pub name: String,
    /// Net energy price per kWh (absent for dynamic tariffs).
    #[serde(default, deserialize_with = "exact_opt")]
    pub energy_price: Option<Decimal>,
    /// Net distribution price per kWh.
    #[serde(default, deserialize_with = "exact_opt")]
    pub distribution_price: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRule {
    /// Months 1..12 this rule applies to (default: all).
    #[serde(default)]
    pub months: Option<Vec<u32>>,
    pub day_types: Vec<DayType>,
    pub ranges: Vec<TimeRange>,
}

/// A tariff file (`tariff import FILE.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "fixed")]
    pub kind: Kind,
    pub currency: String,
    pub time_zone: String,
    /// First local day the tariff applies (inclusive).
    pub valid_from: NaiveDate,
    /// First local day it no longer applies (exclusive); open-ended if absent.
    #[serde(default)]
    pub valid_to: Option<NaiveDate>,
    #[serde(deserialize_with = "exact")]
    pub vat_percent: Decimal,
    #[serde(default)]
    pub fixed_monthly_fees: Vec<Fee>,
    #[serde(default)]
    pub holidays: Option<Holidays>,
    pub zones: Vec<ZonePrice>,
    #[serde(default)]
    pub schedule: Vec<ScheduleRule>,
    /// Net credit per exported kWh (older files; `export` with rule
    /// fixed_price says the same).
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub export_price: Option<Decimal>,
    /// How phases are netted before billing (default none).
    #[serde(default)]
    pub balancing: Balancing,
    /// How exported energy is valued (default: not at all, or
    /// `export_price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    /// Per-kWh charges independent of the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_kwh_charges: Vec<Charge>,
    /// Zone prices replaced for a period (e.g. a price freeze).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub price_overrides: Vec<PriceOverride>,
    /// Monthly fees by annual-consumption tier (opłata mocowa).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_fees: Vec<CapacityFee>,
    /// The annual consumption that chooses the capacity-fee tier, when it
    /// is declared rather than measured from the 12 months before.
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub declared_annual_kwh: Option<Decimal>,
    /// The seller's settlement period (default: every month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
    /// Monthly fees whose amount depends on the settlement period's length
    /// (opłata abonamentowa).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_fees: Vec<SubscriptionFee>,
}

/// Minutes since local midnight; `24:00` is 1440.
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) || s.len() != 5 {
        return None;
    }
    Some(h * 60 + m)
}

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

const DAY_TYPES: [DayType; 4] = [
    DayType::Weekday,
    DayType::Saturday,
    DayType::Sunday,
    DayType::Holiday,
];

/// A validated tariff, ready to expand.
#[derive(Debug, Clone, PartialEq)]
pub struct Tariff {
    pub file: TariffFile,
    pub tz: chrono_tz::Tz,
    /// Per (month 1..12, day type): sorted (start minute, end minute, zone index).
    table: Vec<Vec<(u32, u32, usize)>>,
}

impl Tariff {
    /// Parses and validates a tariff file; every error names what is wrong.
    pub fn parse(text: &str) -> Result<Tariff, String> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid tariff file: {e}"))?;
        check_untrusted(&raw, "")?;
        // From the text again: a number's own digits (0.6210), not a float's.
        let file: TariffFile =
            serde_json::from_str(text).map_err(|e| format!("invalid tariff file: {e}"))?;
        Tariff::validate(file)
    }

    pub fn validate(file: TariffFile) -> Result<Tariff, String> {
        let f = &file;
        if f.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if !(f.currency.len() == 3 && f.currency.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(format!(
                "currency must be a 3-letter ISO code such as PLN, not {:?}",
                f.currency
            ));
        }
        let tz: chrono_tz::Tz = f.time_zone.parse().map_err(|_| {
            format!(
                "unknown time_zone {:?} (use an IANA name such as Europe/Warsaw)",
                f.time_zone
            )
        })?;
        if let Some(to) = f.valid_to {
            if to <= f.valid_from {
                return Err(format!(
                    "valid_to {to} must be after valid_from {}",
                    f.valid_from
                ));
            }
        }
        if f.vat_percent < Decimal::ZERO || f.vat_percent > Decimal::from(100) {
            return Err(format!(
                "vat_percent must be between 0 and 100, not {}",
                f.vat_percent
            ));
        }
        for (i, fee) in f.fixed_monthly_fees.iter().enumerate() {
            fee.validate(&format!("fixed_monthly_fees[{i}]"), false)?;
        }
        if let Some(p) = f.export_price {
            if p < Decimal::ZERO {
                return Err(format!("export_price is negative ({p})"));
            }
            if f.export.is_some() {
                return Err(
                    "give either export_price or export, not both (export_price is {\"rule\": \"fixed_price\", \"price\": ...})"
                        .into(),
                );
            }
        }
        if let Some(e) = &f.export {
            e.validate()?;
        }
        for (i, c) in f.per_kwh_charges.iter().enumerate() {
            c.validate(&format!("per_kwh_charges[{i}]"), true)?;
        }
        for (i, c) in f.capacity_fees.iter().enumerate() {
            c.validate(&format!("capacity_fees[{i}]"))?;
            for (j, other) in f.capacity_fees.iter().enumerate().take(i) {
                // Tiered fees of different names (opłata mocowa, opłata
                // przejściowa) run side by side; one name once at a time.
                if other.name == c.name
                    && components::overlaps(
                        (c.valid_from, c.valid_to),
                        (other.valid_from, other.valid_to),
                    )
                {
                    return Err(format!(
                        "capacity_fees[{j}] and capacity_fees[{i}] are valid at the same time"
                    ));
                }
            }
        }
        if let Some(st) = &f.settlement {
            st.validate()?;
        }
        let cycle = f.settlement.as_ref().map_or(1, |s| s.months);
        for (i, fee) in f.subscription_fees.iter().enumerate() {
            fee.validate(&format!("subscription_fees[{i}]"), cycle)?;
        }
        if let Some(a) = f.declared_annual_kwh {
            if a < Decimal::ZERO {
                return Err(format!("declared_annual_kwh is negative ({a})"));
            }
        }
        if let Some(h) = &f.holidays {
            if let Some(c) = &h.country {
                if !holidays::COUNTRIES.contains(&c.as_str()) {
                    return Err(format!("holidays.country {c:?} has no built-in rules (known: {}); list the dates instead", holidays::COUNTRIES.join(", ")));
                }
            }
        }
        if f.zones.is_empty() {
            return Err("zones must list at least one zone".into());
        }
        let mut names = BTreeSet::new();
        for (i, z) in f.zones.iter().enumerate() {
            if !names.insert(z.name.as_str()) {
                return Err(format!("zones[{i}]: zone {:?} is defined twice", z.name));
            }
            for (field, v) in [
                ("energy_price", z.energy_price),
                ("distribution_price", z.distribution_price),
            ] {
                if let Some(v) = v {
                    if v < Decimal::ZERO {
                        return Err(format!(
                            "zones[{i}] ({}): {field} is negative ({v})",
                            z.name
                        ));
                    }
                }
            }
            match (f.kind, z.energy_price) {
                (Kind::Fixed, None) => return Err(format!("zones[{i}] ({}): energy_price is required", z.name)),
                (Kind::Dynamic, Some(_)) => {
                    return Err(format!("zones[{i}] ({}): a dynamic tariff takes energy prices from `tariff prices import`, not energy_price", z.name))
                }
                _ => {}
            }
        }
        let zone_index = |name: &str| f.zones.iter().position(|z| z.name == name);
        for (i, o) in f.price_overrides.iter().enumerate() {
            let what = format!("price_overrides[{i}] ({})", o.name);
            components::check_dates(&what, Some(o.valid_from), Some(o.valid_to))?;
            if o.energy_price.is_none() && o.distribution_price.is_none() {
                return Err(format!(
                    "{what}: give energy_price, distribution_price or both"
                ));
            }
            for (field, v) in [
                ("energy_price", o.energy_price),
                ("distribution_price", o.distribution_price),
            ] {
                if let Some(v) = v.filter(|v| *v < Decimal::ZERO) {
                    return Err(format!("{what}: {field} is negative ({v})"));
                }
            }
            if f.kind == Kind::Dynamic && o.energy_price.is_some() {
                return Err(format!("{what}: a dynamic tariff's energy prices come from `tariff prices import`; override distribution_price only"));
            }
            for z in o.zones.iter().flatten() {
                if zone_index(z).is_none() {
                    return Err(format!("{what}: unknown zone {z:?}"));
                }
            }
            for (j, p) in f.price_overrides.iter().enumerate().take(i) {
                let shared_zone = match (&o.zones, &p.zones) {
                    (Some(a), Some(b)) => a.iter().any(|z| b.contains(z)),
                    _ => true,
                };
                if shared_zone
                    && components::overlaps(
                        (Some(o.valid_from), Some(o.valid_to)),
                        (Some(p.valid_from), Some(p.valid_to)),
                    )
                {
                    return Err(format!(
                        "price_overrides[{j}] and price_overrides[{i}] overlap for the same zone"
                    ));
                }
            }
        }

        let mut table: Vec<Vec<(u32, u32, usize)>> = vec![Vec::new(); 12 * 4];
        let mut owner: Vec<Option<usize>> = vec![None; 12 * 4];
        if f.kind == Kind::Dynamic {
            if f.zones.len() != 1 || !f.schedule.is_empty() {
                return Err("a dynamic tariff has exactly one zone and no schedule".into());
            }
            for slot in table.iter_mut() {
                slot.push((0, 1440, 0));
            }
        } else if f.schedule.is_empty() {
            if f.zones.len() != 1 {
                return Err("schedule is required when there is more than one zone".into());
            }
            for slot in table.iter_mut() {
                slot.push((0, 1440, 0));
            }
        } else {
            for (ri, rule) in f.schedule.iter().enumerate() {
                let months = rule.months.clone().unwrap_or_else(|| (1..=12).collect());
                if months.is_empty() || months.iter().any(|m| !(1..=12).contains(m)) {
                    return Err(format!(
                        "schedule[{ri}]: months must be 1..12, got {months:?}"
                    ));
                }
                if rule.day_types.is_empty() {
                    return Err(format!("schedule[{ri}]: day_types must not be empty"));
                }
                let mut ranges = Vec::new();
                for (ti, r) in rule.ranges.iter().enumerate() {
                    let (Some(a), Some(b)) = (minutes(&r.from), minutes(&r.to)) else {
                        return Err(format!("schedule[{ri}].ranges[{ti}]: times must be HH:MM (00:00 to 24:00), got {}-{}", r.from, r.to));
                    };
                    if a >= b {
                        return Err(format!("schedule[{ri}].ranges[{ti}]: {}-{} ends before it starts (split ranges that cross midnight)", r.from, r.to));
                    }
                    let z = zone_index(&r.zone).ok_or_else(|| {
                        format!("schedule[{ri}].ranges[{ti}]: unknown zone {:?}", r.zone)
                    })?;
                    ranges.push((a, b, z));
                }
                ranges.sort();
                let mut at = 0;
                for &(a, b, _) in &ranges {
                    if a < at {
                        return Err(format!(
                            "schedule[{ri}]: hours {}-{} overlap an earlier range",
                            hhmm(a),
                            hhmm(at.min(b))
                        ));
                    }
                    if a > at {
                        return Err(format!(
                            "schedule[{ri}]: hours {}-{} are missing",
                            hhmm(at),
                            hhmm(a)
                        ));
                    }
                    at = b;
                }
                if at < 1440 {
                    return Err(format!(
                        "schedule[{ri}]: hours {}-24:00 are missing",
                        hhmm(at)
                    ));
                }
                for m in &months {
                    for dt in &rule.day_types {
                        let slot = (*m as usize - 1) * 4 + *dt as usize;
                        if let Some(prev) = owner[slot] {
                            let day = format!("{dt:?}").to_lowercase();
                            return Err(format!(
                                "schedule[{prev}] and schedule[{ri}] both cover month {m}, {day}"
                            ));
                        }
                        owner[slot] = Some(ri);
                        table[slot] = ranges.clone();
                    }
                }
            }
            for m in 1..=12u32 {
                for dt in DAY_TYPES {
                    let slot = (m as usize - 1) * 4 + dt as usize;
                    if owner[slot].is_none() {
                        if dt == DayType::Holiday {
                            // Holidays follow Sunday's zones unless given.
                            table[slot] =
                                table[(m as usize - 1) * 4 + DayType::Sunday as usize].clone();
                        } else {
                            return Err(format!(
                                "no schedule covers month {m}, {}",
                                format!("{dt:?}").to_lowercase()
                            ));
                        }
                    }
                }
            }
        }
        if f.balancing == Balancing::Hourly
            && table
                .iter()
                .flatten()
                .any(|(a, b, _)| a % 60 != 0 || b % 60 != 0)
        {
            return Err("balancing hourly needs zone boundaries on whole hours (the balance of an hour is billed in one zone)".into());
        }
        Ok(Tariff { file, tz, table })
    }

    /// How export is valued, with `export_price` read as a fixed price.
    /// The seller's settlement period (every month when not given).
    pub fn settlement(&self) -> Settlement {
        self.file.settlement.clone().unwrap_or(Settlement {
            months: 1,
            starts: None,
        })
    }

    pub fn export_rule(&self) -> Export {
        match (&self.file.export, self.file.export_price) {
            (Some(e), _) => e.clone(),
            (None, Some(p)) => Export {
                rule: ExportKind::FixedPrice,
                price: Some(p),
                ..Export::default()
            },
            (None, None) => Export::default(),
        }
    }

    /// UTC instant at which a local day starts.
    pub fn day_start(&self, date: NaiveDate) -> i64 {
        self.instant(date, 0)
    }

    /// Start (UTC) of the local clock hour that contains `ts`.
    pub fn hour_start(&self, ts: i64) -> i64 {
        use chrono::Offset;
        let utc = chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default();
        let offset = self
            .tz
            .offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc() as i64;
        ts - (ts + offset).rem_euclid(3600)
    }

    /// First day of the local month that contains `ts`.
    pub fn month_of(&self, ts: i64) -> NaiveDate {
        let d = self.local_date(ts);
        NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("first of month")
    }

    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        let Some(h) = &self.file.holidays else {
            return false;
        };
        h.dates.contains(&date)
            || h.country
                .as_deref()
                .is_some_and(|c| holidays::holidays(c, date.year()).contains(&date))
    }

    pub fn day_type(&self, date: NaiveDate) -> DayType {
        if self.is_holiday(date) {
            return DayType::Holiday;
        }
        match date.weekday() {
            Weekday::Sat => DayType::Saturday,
            Weekday::Sun => DayType::Sunday,
            _ => DayType::Weekday,
        }
    }

    /// UTC instant of a local wall-clock minute of a date: the earliest one
    /// when it occurs twice, the next valid one when it does not exist.
    fn instant(&self, date: NaiveDate, minute: u32) -> i64 {
        let (date, minute) = if minute == 1440 {
            (date.checked_add_days(Days::new(1)).unwrap_or(date), 0)
        } else {
            (date, minute)
        };
        let mut t = date
            .and_time(NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).expect("valid time"));
        for _ in 0..240 {
            if let Some(dt) = self.tz.from_local_datetime(&t).earliest() {
                return dt.timestamp();
            }
            t += chrono::Duration::minutes(1);
        }
        t.and_utc().timestamp()
    }

    /// Start of the tariff's validity (UTC).
    pub fn valid_from_utc(&self) -> i64 {
        self.instant(self.file.valid_from, 0)
    }

    pub fn valid_to_utc(&self) -> Option<i64> {
        self.file.valid_to.map(|d| self.instant(d, 0))
    }

    /// The local date of a UTC instant in the tariff's zone.
    pub fn local_date(&self, ts: i64) -> NaiveDate {
        chrono::DateTime::from_timestamp(ts, 0)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .date_naive()
    }

    /// Zoned periods covering [from, to) (UTC seconds), clipped to the
    /// tariff's validity, in time order.
    pub fn periods(&self, from: i64, to: i64) -> Vec<Period> {
        let from = from.max(self.valid_from_utc());
        let to = self.valid_to_utc().map_or(to, |v| to.min(v));
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        let mut day = self.local_date(from);
        let last = self.local_date(to - 1);
        while day <= last {
            let slot = (day.month() as usize - 1) * 4 + self.day_type(day) as usize;
            for &(a, b, z) in &self.table[slot] {
                let (s, e) = (self.instant(day, a).max(from), self.instant(day, b).min(to));
                if s < e {
                    match out.last_mut() {
                        Some(Period { end, zone, .. }) if *end == s && *zone == z => *end = e,
                        _ => out.push(Period {
                            start: s,
                            end: e,
                            zone: z,
                        }),
                    }
                }
            }
            day = day.checked_add_days(Days::new(1)).expect("date in range");
        }
        out
    }

    /// Whether all zone boundaries fall on quarter hours (then 15-minute
    /// buckets never straddle a boundary).
    pub fn quarter_hour_boundaries(&self) -> bool {
        self.table
            .iter()
            .flatten()
            .all(|(a, b, _)| a % 15 == 0 && b % 15 == 0)
    }
}

/// Parses dynamic prices from CSV: a header with `start` and `price` (and
/// optionally `end`); `,` or `;` separated (with `;`, a decimal comma is
/// accepted). `start` is RFC 3339 (`2026-03-01T00:00:00+01:00`) or local
/// time in `tz` (`2026-03-01 00:00`). Without `end`, every row lasts the
/// file's step (15 or 60 minutes). Negative prices are real on exchanges
/// and accepted.
/// The most a price (per kWh) or a fee (per month) may be, in the tariff's
/// currency: far above any real one, far below what could overflow a sum.
pub const MAX_PRICE: i64 = 100_000;
/// The most any other number of a tariff file may be (kWh limits, shares).
pub const MAX_NUMBER: i64 = 1_000_000_000;
/// The longest name in a tariff file (a fee's, a zone's).
pub const MAX_NAME: usize = 200;
/// The longest description or note.
pub const MAX_PROSE: usize = 4000;

/// Checks what a tariff file gives before it is read into a tariff: every
/// number within range (prices and fees within [`MAX_PRICE`], the rest
/// within [`MAX_NUMBER`]: 79228162514264337593543950335 PLN/kWh was
/// imported and made every report panic), the tariff's name like a device
/// id (it is a key, printed in tables and logs), and every other text
/// without control characters or U+0000 and at most [`MAX_NAME`]
/// characters. Errors name the field (`zones[0].energy_price`).
fn check_untrusted(v: &serde_json::Value, path: &str) -> Result<(), String> {
    use serde_json::Value;
    let key = path.rsplit(['.', '[']).next().unwrap_or("");
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                check_untrusted(x, &p)?;
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_untrusted(x, &format!("{path}[{i}]"))?;
            }
        }
        Value::String(s) if path == "name" => {
            // The same alphabet as a device id; the message names the tariff.
            crate::device::DeviceId::parse(s).map_err(|_| {
                format!(
                    "name: a tariff's name is 1 to 64 characters of A-Z a-z 0-9 - _ . :, not {:?}",
                    crate::output::printable(s)
                )
            })?;
        }
        Value::String(s) => {
            // Prose (a description, a note) may be long and hold line breaks.
            let prose = matches!(key, "description" | "note" | "notes" | "source" | "comment");
            let (max, allowed): (usize, &[char]) = if prose {
                (MAX_PROSE, &['\n', '\t'])
            } else {
                (MAX_NAME, &[])
            };
            if let Ok(d) = s.trim().parse::<Decimal>() {
                check_number(path, key, d)?;
            } else if s.chars().count() > max {
                return Err(format!("{path}: longer than {max} characters"));
            } else if s.chars().any(|c| c.is_control() && !allowed.contains(&c)) {
                return Err(format!(
                    "{path}: {} holds a control character",
                    crate::output::printable(s)
                ));
            }
        }
        Value::Number(n) => {
            let d = n
                .to_string()
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_err(|_| format!("{path}: {n} is out of range"))?;
            check_number(path, key, d)?;
        }
        Value::Bool(_) | Value::Null => {}
    }
    Ok(())
}

fn check_number(path: &str, key: &str, d: Decimal) -> Result<(), String> {
    let money = key.ends_with("price") || matches!(key, "net" | "gross" | "price");
    let max = Decimal::from(if money { MAX_PRICE } else { MAX_NUMBER });
    if d.abs() > max {
        return Err(format!(
            "{path}: {d} is out of range (at most {max}{})",
            if money { " a kWh or a month" } else { "" }
        ));
    }
    Ok(())
}

pub fn parse_prices(text: &str, tz: chrono_tz::Tz) -> Result<Vec<cost::Price>, String> {
    let header = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("the price file is empty")?;
    // `;` files (spreadsheets with decimal commas) or `,` files; a quoted
    // field may hold the other separator.
    let sep = if header.contains(';') { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let cols: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the header: {e}"))?
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(ci_start), Some(ci_price)) = (col("start"), col("price")) else {
        return Err(format!(
            "the header must name the columns start and price, got {header:?}"
        ));
    };
    let ci_end = col("end");
    let parse_time = |s: &str, line: usize| -> Result<i64, String> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(t.timestamp());
        }
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
            .map_err(|_| {
                format!("line {line}: {s:?} is not a time (use RFC 3339 or YYYY-MM-DD HH:MM)")
            })?;
        match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => Ok(t.timestamp()),
            chrono::LocalResult::Ambiguous(..) => Err(format!(
                "line {line}: {s} occurs twice (DST ends); write it in RFC 3339 with its offset"
            )),
            chrono::LocalResult::None => Err(format!(
                "line {line}: {s} does not exist in {tz} (DST starts)"
            )),
        }
    };
    let mut rows: Vec<(usize, i64, Option<i64>, Decimal)> = Vec::new();
    for row in crate::csvrows::rows(&mut reader, &cols) {
        let row = row?;
        let line = row.line;
        let get = |c: usize| row.get(c);
        let start = parse_time(get(ci_start)?, line)?;
        let end = match ci_end {
            Some(c) => Some(parse_time(get(c)?, line)?),
            None => None,
        };
        let raw = get(ci_price)?;
        let raw = if sep == b';' {
            raw.replace(',', ".")
        } else {
            raw.to_string()
        };
        let price: Decimal = raw
            .parse()
            .map_err(|_| format!("line {line}: price {raw:?} is not a number"))?;
        // Negative prices are real (an hour of surplus); huge ones are not.
        if price.abs() > Decimal::from(MAX_PRICE) {
            return Err(format!(
                "line {line}: price {price} is out of range (at most {MAX_PRICE} a kWh either way)"
            ));
        }
        rows.push((line, start, end, price));
    }
    if rows.is_empty() {
        return Err("the price file has no rows".into());
    }
    if let Some(w) = rows.windows(2).find(|w| w[1].1 <= w[0].1) {
        return Err(format!(
            "line {}: rows must be in time order without repeats",
            w[1].0
        ));
    }
    let step = rows
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .min()
        .unwrap_or(3600);
    if ci_end.is_none() && rows.len() > 1 && step != 900 && step != 3600 {
        return Err(format!(
            "rows must be 15 or 60 minutes apart (found a step of {step} s); or give an end column"
        ));
    }
    let fmt = |ts: i64| {
        chrono::DateTime::from_timestamp(ts, 0)
            .unwrap_or_default()
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, (line, start, end, price)) in rows.iter().enumerate() {
        if i > 0 && *start <= rows[i - 1].1 {
            return Err(format!(
                "line {line}: rows must be in time order without repeats"
            ));
        }
        let end = end.unwrap_or(start + step);
        if end <= *start {
            return Err(format!("line {line}: end is not after start"));
        }
        if let Some(prev) = out.last() {
            let prev: &cost::Price = prev;
            if *start < prev.end {
                return Err(format!("line {line}: overlaps the previous row"));
            }
            if *start > prev.end {
                return Err(format!(
                    "line {line}: no price from {} to {} (the rows must be contiguous; a missing hour is never a zero price)",
                    fmt(prev.end),
                    fmt(*start)
                ));
            }
        }
        out.push(cost::Price {
            start: *start,
            end,
            price: *price,
        });
    }
    Ok(out)
}

/// A stretch of time in one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
    pub zone: usize,
}

/// Example tariffs shipped with shellyctl (`tariff example NAME`).
pub const EXAMPLES: [(&str, &str); 13] = [
    ("g11", include_str!("examples/g11.json")),
    ("g12", include_str!("examples/g12.json")),
    ("g12w", include_str!("examples/g12w.json")),
    ("dynamic", include_str!("examples/dynamic.json")),
    ("g11-prosumer", include_str!("examples/g11-prosumer.json")),
    // The DSOs' 2026 tariffs with the default sellers' energy prices,
    // every number sourced in the README ("The DSOs' 2026 tariffs").
    (
        "tauron-g11-2026",
        include_str!("examples/tauron-g11-2026.json"),
    ),
    (
        "tauron-g12-2026",
        include_str!("examples/tauron-g12-2026.json"),
    ),
    ("pge-g11-2026", include_str!("examples/pge-g11-2026.json")),
    ("pge-g12-2026", include_str!("examples/pge-g12-2026.json")),
    (
        "energa-g11-2026",
        include_str!("examples/energa-g11-2026.json"),
    ),
    (
        "energa-g12-2026",
        include_str!("examples/energa-g12-2026.json"),
    ),
    ("enea-g11-2026", include_str!("examples/enea-g11-2026.json")),
    ("enea-g12-2026", include_str!("examples/enea-g12-2026.json")),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn g12w() -> Tariff {
        Tariff::parse(EXAMPLES[2].1).unwrap()
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn market_prices_may_be_negative_but_not_absurd() {
        let tz = chrono_tz::UTC;
        let ok = parse_prices(
            "start,price\n2026-06-01 10:00,-0.35\n2026-06-01 11:00,0.42\n",
            tz,
        )
        .unwrap();
        assert_eq!(ok[0].price, Decimal::new(-35, 2));
        for huge in ["79228162514264337593543950335", "-100001", "1e30"] {
            let e =
                parse_prices(&format!("start,price\n2026-06-01 10:00,{huge}\n"), tz).unwrap_err();
            assert!(e.starts_with("line 2:"), "{huge}: {e}");
        }
    }

    #[test]
    fn hostile_numbers_and_names_are_refused_naming_the_field() {
        let base: serde_json::Value = serde_json::from_str(EXAMPLES[0].1).unwrap();
        let refuse = |edit: &dyn Fn(&mut serde_json::Value), want: &str| {
            let mut v = base.clone();
            edit(&mut v);
            let e = Tariff::parse(&v.to_string()).map(|_| ()).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        refuse(
            &|v| v["zones"][0]["energy_price"] = serde_json::json!("79228162514264337593543950335"),
            "zones[0].energy_price: 79228162514264337593543950335 is out of range",
        );
        refuse(
            &|v| v["zones"][0]["energy_price"] = serde_json::json!(1e300),
            "zones[0].energy_price",
        );
        refuse(
            &|v| v["name"] = serde_json::json!("G11\u{1b}[2J"),
            "name: a tariff's name",
        );
        refuse(
            &|v| v["name"] = serde_json::json!("G11\nforged"),
            "name: a tariff's name",
        );
        refuse(
            &|v| v["name"] = serde_json::json!("x".repeat(1 << 20)),
            "name: a tariff's name",
        );
        refuse(
            &|v| v["fixed_monthly_fees"][0]["name"] = serde_json::json!("fee\u{0}"),
            "fixed_monthly_fees[0].name",
        );
        refuse(
            &|v| v["description"] = serde_json::json!("y".repeat(4001)),
            "description: longer than 4000",
        );
        // A real file still goes in.
        Tariff::parse(&base.to_string()).unwrap();
    }

    #[test]
    fn price_csv_in_local_time_with_semicolons_and_decimal_commas() {
        let csv = "start;price\n2026-03-01 00:00;0,4512\n2026-03-01 01:00;-0,0100\n2026-03-01 02:00;0,50\n";
        let p = parse_prices(csv, chrono_tz::Europe::Warsaw).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].start, at("2026-02-28T23:00:00Z"));
        assert_eq!(p[0].end - p[0].start, 3600);
        assert_eq!(p[1].price.to_string(), "-0.0100");
        let quarter = "start,price\n2026-03-01T00:00:00+01:00,0.1\n2026-03-01T00:15:00+01:00,0.2\n";
        assert_eq!(
            parse_prices(quarter, chrono_tz::UTC).unwrap()[1].end - at("2026-02-28T23:15:00Z"),
            900
        );
        assert_eq!(parse_prices("start,price\n2026-10-25 02:30,1\n", chrono_tz::Europe::Warsaw).unwrap_err(),
            "line 2: 2026-10-25 02:30 occurs twice (DST ends); write it in RFC 3339 with its offset");
        assert!(parse_prices("when,price\n", chrono_tz::UTC)
            .unwrap_err()
            .contains("start and price"));
        assert_eq!(
            parse_prices("start,price\n2026-01-01 00:00,abc\n", chrono_tz::UTC).unwrap_err(),
            "line 2: price \"abc\" is not a number"
        );
    }

    #[test]
    fn every_shipped_example_is_valid() {
        for (name, text) in EXAMPLES {
            Tariff::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn g12w_weekends_and_holidays_are_off_peak_all_day() {
        let t = g12w();
        let zone = |ts: &str| {
            let p = t.periods(at(ts), at(ts) + 60);
            t.file.zones[p[0].zone].name.clone()
        };
        assert_eq!(zone("2026-06-03T08:00:00Z"), "peak", "Wednesday 10:00 CEST");
        assert_eq!(
            zone("2026-06-03T11:30:00Z"),
            "offpeak",
            "Wednesday 13:30 CEST"
        );
        assert_eq!(zone("2026-06-06T08:00:00Z"), "offpeak", "Saturday");
        assert_eq!(
            zone("2026-06-04T08:00:00Z"),
            "offpeak",
            "Corpus Christi (Thursday)"
        );
    }

    #[test]
    fn periods_follow_wall_clock_time_on_dst_days() {
        let t = g12w();
        // 2026-10-25 (Sunday, 25 h) and 2026-10-26 (Monday).
        let p = t.periods(at("2026-10-24T22:00:00Z"), at("2026-10-26T23:00:00Z"));
        let total: i64 = p.iter().map(|x| x.end - x.start).sum();
        assert_eq!(total, 49 * 3600);
        // Monday 06:00 CET = 05:00 UTC starts the first peak.
        let first_peak = p
            .iter()
            .find(|x| t.file.zones[x.zone].name == "peak")
            .unwrap();
        assert_eq!(first_peak.start, at("2026-10-26T05:00:00Z"));
        // Periods are contiguous.
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
    }

    fn base() -> serde_json::Value {
        serde_json::from_str(EXAMPLES[1].1).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        Tariff::parse(&v.to_string()).unwrap_err()
    }

    #[test]
    fn invalid_files_produce_precise_errors() {
        let mut v = base();
        v["colour"] = "blue".into();
        assert!(err(v).starts_with("invalid tariff file: unknown field `colour`"));

        let mut v = base();
        v["zones"][0]["energy_price"] = "-0.10".into();
        assert_eq!(err(v), "zones[0] (peak): energy_price is negative (-0.10)");

        let mut v = base();
        v["schedule"][0]["ranges"][0]["to"] = "07:00".into();
        assert_eq!(
            err(v),
            "schedule[0]: hours 06:00-07:00 overlap an earlier range"
        );

        let mut v = base();
        v["schedule"][0]["ranges"][1]["to"] = "12:00".into();
        assert_eq!(err(v), "schedule[0]: hours 12:00-13:00 are missing");

        let mut v = base();
        v["schedule"][0]["ranges"].as_array_mut().unwrap().pop();
        assert_eq!(err(v), "schedule[0]: hours 22:00-24:00 are missing");

        let mut v = base();
        v["schedule"][0]["ranges"][0]["zone"] = "night".into();
        assert_eq!(err(v), "schedule[0].ranges[0]: unknown zone \"night\"");

        let mut v = base();
        v["schedule"][0]["day_types"] = serde_json::json!(["weekday", "saturday"]);
        assert_eq!(err(v), "no schedule covers month 1, sunday");

        let mut v = base();
        v["time_zone"] = "Europe/Atlantis".into();
        assert!(err(v).starts_with("unknown time_zone \"Europe/Atlantis\""));

        let mut v = base();
        v["vat_percent"] = "abc".into();
        assert!(err(v).contains("\"abc\" is not a decimal number"));

        let mut v = base();
        v["valid_to"] = "2025-01-01".into();
        assert!(err(v).starts_with("valid_to 2025-01-01 must be after valid_from"));
    }

    #[test]
    fn invalid_billing_components_produce_precise_errors() {
        let mut v = base();
        v["balancing"] = "daily".into();
        assert!(err(v).contains("unknown variant `daily`"));

        let mut v = base();
        v["export_price"] = "0.25".into();
        v["export"] = serde_json::json!({"rule": "fixed_price", "price": "0.2"});
        assert!(err(v).starts_with("give either export_price or export, not both"));

        let mut v = base();
        v.as_object_mut().unwrap().remove("export_price");
        v["export"] = serde_json::json!({"rule": "net_billing", "coefficient": "0.8"});
        assert_eq!(
            err(v),
            "export.coefficient does not apply to rule net_billing"
        );

        let mut v = base();
        v["per_kwh_charges"] = serde_json::json!([{"name": "OZE", "net": "-0.01"}]);
        assert_eq!(err(v), "per_kwh_charges[0] (OZE) is negative (-0.01)");

        let mut v = base();
        v["fixed_monthly_fees"][0]["valid_from"] = "2026-03-01".into();
        v["fixed_monthly_fees"][0]["valid_to"] = "2026-02-01".into();
        assert_eq!(
            err(v),
            "fixed_monthly_fees[0]: valid_to 2026-02-01 must be after valid_from 2026-03-01"
        );

        let mut v = base();
        v["capacity_fees"] = serde_json::json!([{"name": "mocowa", "tiers": [{"net": "1"}, {"up_to_kwh": "500", "net": "2"}]}]);
        assert_eq!(
            err(v),
            "capacity_fees[0].tiers[0]: up_to_kwh is required except on the last tier"
        );

        let mut v = base();
        let cap = serde_json::json!({"name": "mocowa", "tiers": [{"net": "1"}]});
        v["capacity_fees"] = serde_json::json!([cap, cap]);
        assert_eq!(
            err(v),
            "capacity_fees[0] and capacity_fees[1] are valid at the same time"
        );
        // Tiered fees of different names run side by side (opłata mocowa
        // and opłata przejściowa).
        let mut transition = cap.clone();
        transition["name"] = serde_json::json!("opłata przejściowa");
        let mut v = base();
        v["capacity_fees"] = serde_json::json!([cap, transition]);
        assert!(Tariff::parse(&v.to_string()).is_ok());

        let mut v = base();
        v["price_overrides"] = serde_json::json!([{"name": "freeze", "valid_from": "2025-01-01", "valid_to": "2026-01-01", "zones": ["night"], "energy_price": "0.5"}]);
        assert_eq!(
            err(v),
            "price_overrides[0] (freeze): unknown zone \"night\""
        );

        let mut v = base();
        let o = serde_json::json!({"name": "freeze", "valid_from": "2025-01-01", "valid_to": "2026-01-01", "energy_price": "0.5"});
        v["price_overrides"] = serde_json::json!([o, o]);
        assert_eq!(
            err(v),
            "price_overrides[0] and price_overrides[1] overlap for the same zone"
        );

        let mut v = base();
        v["balancing"] = "hourly".into();
        v["schedule"][0]["ranges"][1]["to"] = "13:30".into();
        v["schedule"][0]["ranges"][2]["from"] = "13:30".into();
        assert!(err(v).starts_with("balancing hourly needs zone boundaries on whole hours"));
    }

    #[test]
    fn a_quoted_price_field_may_hold_the_separator() {
        // A spreadsheet export: `;`-separated, a quoted comment with `;`.
        let csv = "start;price;note\n2026-03-01 00:00;0,45;\"cheap; night\"\n2026-03-01 01:00;0,50;\"a, b\"\n";
        let p = parse_prices(csv, chrono_tz::Europe::Warsaw).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].price.to_string(), "0.50");
        let csv = "\"start\",\"price\"\n\"2026-03-01T00:00:00+01:00\",\"0.1\"\n";
        assert_eq!(
            parse_prices(csv, chrono_tz::UTC).unwrap()[0]
                .price
                .to_string(),
            "0.1"
        );
    }

    #[test]
    fn price_rows_must_be_contiguous() {
        let csv = "start,price\n2026-03-01 00:00,1\n2026-03-01 02:00,1\n2026-03-01 03:00,1\n";
        assert_eq!(
            parse_prices(csv, chrono_tz::Europe::Warsaw).unwrap_err(),
            "line 3: no price from 2026-03-01 01:00 to 2026-03-01 02:00 (the rows must be contiguous; a missing hour is never a zero price)"
        );
    }

    #[test]
    fn two_rules_for_the_same_day_are_rejected() {
        let mut v = base();
        let rule = v["schedule"][0].clone();
        v["schedule"].as_array_mut().unwrap().push(rule);
        assert_eq!(
            err(v),
            "schedule[0] and schedule[1] both cover month 1, weekday"
        );
    }

    #[test]
    fn prices_are_read_exactly_from_numbers_or_strings() {
        let text = base().to_string().replace("\"0.6210\"", "0.6210");
        let t = Tariff::parse(&text).unwrap();
        assert_eq!(t.file.zones[0].energy_price.unwrap().to_string(), "0.6210");
    }
}

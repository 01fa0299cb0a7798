//! The parts of a tariff beyond zone prices: how phases are balanced, how
//! export is valued, per-kWh charges, dated fees and price overrides, and
//! the capacity fee by annual-consumption tier. Data and validation only;
//! `cost` applies them.

use super::{exact, exact_opt};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How the energy of the phases (and of the moments within an hour) is
/// netted before it is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// Import and export of each phase are billed as measured.
    #[default]
    None,
    /// Within each interval record, the phases are netted (a "saldierender"
    /// meter, as closely as interval records allow).
    PerRecord,
    /// Per clock hour, everything taken on all phases minus everything fed
    /// in on all phases (Polish prosumers, ustawa o OZE).
    Hourly,
}

impl Balancing {
    pub fn as_str(self) -> &'static str {
        match self {
            Balancing::None => "none",
            Balancing::PerRecord => "per_record",
            Balancing::Hourly => "hourly",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    /// Export is reported, not paid for.
    #[default]
    None,
    /// A fixed net price per exported kWh, credited on the bill.
    FixedPrice,
    /// Net-billing: each hour's export at that hour's market price (the
    /// `export` price series), times `multiplier`, into a deposit that pays
    /// the energy component of bills for `deposit_months`.
    NetBilling,
    /// Net-metering ("opusty"): each exported kWh offsets `coefficient` kWh
    /// of imported energy in the same zone, free of energy and per-kWh
    /// distribution charges.
    NetMetering,
}

/// What a hour with a negative mean export price is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativePrice {
    /// A negative hourly mean counts as 0 (the hourly mean of the
    /// quarter-hours per art. 4b ust. 11 ustawy o OZE; the zero rule and
    /// its order as the README's sources read them): the clamp applies
    /// after averaging the quarter-hours.
    #[default]
    Zero,
    /// The negative value is used as it is.
    AsIs,
}

/// How exported energy is valued. One flat object: `rule` says which of
/// the other fields apply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub rule: ExportKind,
    /// fixed_price: net price per kWh.
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub price: Option<Decimal>,
    /// net_billing: factor applied to the market value (default 1.23).
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub multiplier: Option<Decimal>,
    /// net_billing: treatment of a negative hourly mean (default zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_hourly_price: Option<NegativePrice>,
    /// net_billing: months a deposit stays usable (default 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit_months: Option<u32>,
    /// net_billing: when a month's deposit expires unused, this share (%)
    /// of the market value of that month's export is refunded, at most
    /// what is left; the rest is lost. Default 30: the cap for prosumers
    /// settled at the hourly price since the OZE act's amendment of
    /// 27.11.2024 (Dz.U. 2024 poz. 1847), the regime the default
    /// multiplier 1.23 belongs to; 20 for the monthly RCEm (see the README).
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub refund_percent: Option<Decimal>,
    /// net_metering: kWh of import offset per exported kWh (0.8 or 0.7).
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub coefficient: Option<Decimal>,
}

impl Export {
    pub fn multiplier(&self) -> Decimal {
        self.multiplier.unwrap_or(Decimal::new(123, 2))
    }
    pub fn deposit_months(&self) -> u32 {
        self.deposit_months.unwrap_or(12)
    }
    pub fn refund_percent(&self) -> Decimal {
        self.refund_percent.unwrap_or(Decimal::from(30))
    }
    pub fn negative(&self) -> NegativePrice {
        self.negative_hourly_price.unwrap_or_default()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let rule = match self.rule {
            ExportKind::None => "none",
            ExportKind::FixedPrice => "fixed_price",
            ExportKind::NetBilling => "net_billing",
            ExportKind::NetMetering => "net_metering",
        };
        let given: [(&str, bool, bool); 6] = [
            (
                "refund_percent",
                self.refund_percent.is_some(),
                self.rule == ExportKind::NetBilling,
            ),
            (
                "price",
                self.price.is_some(),
                self.rule == ExportKind::FixedPrice,
            ),
            (
                "multiplier",
                self.multiplier.is_some(),
                self.rule == ExportKind::NetBilling,
            ),
            (
                "negative_hourly_price",
                self.negative_hourly_price.is_some(),
                self.rule == ExportKind::NetBilling,
            ),
            (
                "deposit_months",
                self.deposit_months.is_some(),
                self.rule == ExportKind::NetBilling,
            ),
            (
                "coefficient",
                self.coefficient.is_some(),
                self.rule == ExportKind::NetMetering,
            ),
        ];
        for (field, present, allowed) in given {
            if present && !allowed {
                return Err(format!("export.{field} does not apply to rule {rule}"));
            }
        }
        match self.rule {
            ExportKind::FixedPrice => match self.price {
                None => return Err("export.price is required for rule fixed_price".into()),
                Some(p) if p < Decimal::ZERO => {
                    return Err(format!("export.price is negative ({p})"))
                }
                _ => {}
            },
            ExportKind::NetBilling => {
                if self.multiplier() <= Decimal::ZERO {
                    return Err(format!("export.multiplier must be positive, not {}", self.multiplier()));
                }
                if self.refund_percent() < Decimal::ZERO || self.refund_percent() > Decimal::from(100) {
                    return Err(format!(
                        "export.refund_percent must be 0..100, not {}",
                        self.refund_percent()
                    ));
                }
                if !(1..=120).contains(&self.deposit_months()) {
                    return Err(format!(
                        "export.deposit_months must be 1..120, not {}",
                        self.deposit_months()
                    ));
                }
            }
            ExportKind::NetMetering => match self.coefficient {
                None => return Err("export.coefficient is required for rule net_metering (0.8 up to 10 kW, 0.7 above)".into()),
                Some(c) if c <= Decimal::ZERO || c > Decimal::ONE => {
                    return Err(format!("export.coefficient must be above 0 and at most 1, not {c}"))
                }
                _ => {}
            },
            ExportKind::None => {}
        }
        Ok(())
    }
}

/// Local-day validity of a component: [valid_from, valid_to), open ends
/// allowed.
pub fn check_dates(
    what: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<(), String> {
    match (from, to) {
        (Some(f), Some(t)) if t <= f => {
            Err(format!("{what}: valid_to {t} must be after valid_from {f}"))
        }
        _ => Ok(()),
    }
}

fn check_vat(what: &str, v: Option<Decimal>) -> Result<(), String> {
    match v {
        Some(v) if v < Decimal::ZERO || v > Decimal::from(100) => Err(format!(
            "{what}: vat_percent must be between 0 and 100, not {v}"
        )),
        _ => Ok(()),
    }
}

/// Which part of the bill a per-kWh charge belongs to. The net-billing
/// deposit pays the energy part only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Energy,
    #[default]
    Distribution,
}

/// A priced component with its own validity and VAT: a fee per calendar
/// month (pro rata for partial months), or a charge per billed kWh that
/// does not depend on the zone (quality, OZE and cogeneration fees; excise
/// when not inside the energy price).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// Net amount per calendar month (a fee) or per kWh (a charge).
    #[serde(deserialize_with = "exact")]
    pub net: Decimal,
    /// Charges only: `distribution` (default) or `energy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    /// VAT of this component when it differs from the tariff's.
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub vat_percent: Option<Decimal>,
}

/// A fee per calendar month.
pub type Fee = Component;
/// A charge per billed kWh.
pub type Charge = Component;

impl Component {
    pub fn part(&self) -> Part {
        self.part.unwrap_or_default()
    }

    pub(super) fn validate(&self, what: &str, per_kwh: bool) -> Result<(), String> {
        if self.net < Decimal::ZERO {
            return Err(format!("{what} ({}) is negative ({})", self.name, self.net));
        }
        if !per_kwh && self.part.is_some() {
            return Err(format!(
                "{what} ({}): part applies to per_kwh_charges only",
                self.name
            ));
        }
        check_dates(what, self.valid_from, self.valid_to)?;
        check_vat(what, self.vat_percent)
    }
}

/// Prices that replace the zones' for a period (a price freeze, a
/// correction): applied whenever a report covers the period, so a change
/// shows at once in past months.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub name: String,
    pub valid_from: NaiveDate,
    pub valid_to: NaiveDate,
    /// The zones it applies to (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub energy_price: Option<Decimal>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub distribution_price: Option<Decimal>,
}

/// One tier: applies while the annual consumption is at most `up_to_kwh`
/// (the last tier has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub up_to_kwh: Option<Decimal>,
    /// Net amount per calendar month.
    #[serde(deserialize_with = "exact")]
    pub net: Decimal,
}

/// The capacity fee (opłata mocowa): a monthly amount by the household's
/// annual consumption, tiers dated like any component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityFee {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    pub tiers: Vec<Tier>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub vat_percent: Option<Decimal>,
}

impl CapacityFee {
    pub(super) fn validate(&self, what: &str) -> Result<(), String> {
        check_dates(what, self.valid_from, self.valid_to)?;
        check_vat(what, self.vat_percent)?;
        if self.tiers.is_empty() {
            return Err(format!("{what}: tiers must not be empty"));
        }
        let mut below = Decimal::MIN;
        for (i, t) in self.tiers.iter().enumerate() {
            let last = i + 1 == self.tiers.len();
            if t.net < Decimal::ZERO {
                return Err(format!("{what}.tiers[{i}]: net is negative ({})", t.net));
            }
            match (t.up_to_kwh, last) {
                (None, false) => {
                    return Err(format!("{what}.tiers[{i}]: up_to_kwh is required except on the last tier"))
                }
                (Some(_), true) => {
                    return Err(format!("{what}.tiers[{i}]: the last tier has no up_to_kwh (it covers everything above)"))
                }
                (Some(u), false) => {
                    if u <= below {
                        return Err(format!("{what}.tiers[{i}]: up_to_kwh {u} must be above the previous tier's"));
                    }
                    below = u;
                }
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// The tier for an annual consumption: its index, amount and a label
    /// such as "1200–2800 kWh".
    pub fn tier(&self, annual_kwh: Decimal) -> (usize, Decimal, String) {
        let i = self
            .tiers
            .iter()
            .position(|t| t.up_to_kwh.is_none_or(|u| annual_kwh <= u))
            .unwrap_or(self.tiers.len() - 1);
        let lower = if i == 0 {
            None
        } else {
            self.tiers[i - 1].up_to_kwh
        };
        let label = match (lower, self.tiers[i].up_to_kwh) {
            (None, Some(u)) => format!("≤ {u} kWh"),
            (Some(l), Some(u)) => format!("{l}–{u} kWh"),
            (Some(l), None) => format!("> {l} kWh"),
            (None, None) => "any consumption".into(),
        };
        (i, self.tiers[i].net, label)
    }
}

/// Whether two optional-ended date ranges overlap.
pub fn overlaps(
    a: (Option<NaiveDate>, Option<NaiveDate>),
    b: (Option<NaiveDate>, Option<NaiveDate>),
) -> bool {
    let starts_before_end = |s: Option<NaiveDate>, e: Option<NaiveDate>| match (s, e) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    };
    starts_before_end(a.0, b.1) && starts_before_end(b.0, a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn fee_2026() -> CapacityFee {
        serde_json::from_str(
            r#"{"name": "opłata mocowa", "tiers": [
                {"up_to_kwh": "500", "net": "4.29"}, {"up_to_kwh": "1200", "net": "10.31"},
                {"up_to_kwh": "2800", "net": "17.18"}, {"net": "24.05"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn capacity_tiers_include_their_upper_bound() {
        let f = fee_2026();
        assert_eq!(f.tier(d("1200")).1, d("10.31"));
        assert_eq!(f.tier(d("1200.001")).1, d("17.18"));
        assert_eq!(f.tier(d("0")).2, "≤ 500 kWh");
        assert_eq!(f.tier(d("1200.001")).2, "1200–2800 kWh");
        assert_eq!(f.tier(d("99999")).2, "> 2800 kWh");
    }

    #[test]
    fn export_fields_must_belong_to_the_rule() {
        let e: Export =
            serde_json::from_str(r#"{"rule": "net_metering", "price": "0.2"}"#).unwrap();
        assert_eq!(
            e.validate().unwrap_err(),
            "export.price does not apply to rule net_metering"
        );
        let e: Export =
            serde_json::from_str(r#"{"rule": "net_metering", "coefficient": "1.5"}"#).unwrap();
        assert_eq!(
            e.validate().unwrap_err(),
            "export.coefficient must be above 0 and at most 1, not 1.5"
        );
        let e: Export = serde_json::from_str(r#"{"rule": "net_billing"}"#).unwrap();
        assert_eq!((e.multiplier(), e.deposit_months()), (d("1.23"), 12));
    }

    #[test]
    fn date_ranges_overlap_with_open_ends() {
        let day = |s: &str| Some(s.parse::<NaiveDate>().unwrap());
        assert!(overlaps((None, None), (day("2026-01-01"), None)));
        assert!(!overlaps(
            (None, day("2026-01-01")),
            (day("2026-01-01"), None)
        ));
        assert!(overlaps(
            (day("2025-06-01"), day("2026-01-02")),
            (day("2026-01-01"), None)
        ));
    }
}

/// The seller's settlement period: every `months` months, the periods
/// aligned on `starts` (the 1st of a month; default 1 January).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settlement {
    pub months: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<NaiveDate>,
}

impl Settlement {
    pub(super) fn validate(&self) -> Result<(), String> {
        if ![1, 2, 3, 4, 6, 12].contains(&self.months) {
            return Err(format!(
                "settlement.months must be 1, 2, 3, 4, 6 or 12, not {}",
                self.months
            ));
        }
        if let Some(d) = self.starts {
            if d.day() != 1 {
                return Err(format!(
                    "settlement.starts must be the 1st of a month, not {d}"
                ));
            }
        }
        Ok(())
    }

    /// The first month of the settlement period that holds `month`.
    pub fn period_start(&self, month: NaiveDate) -> NaiveDate {
        let anchor = self
            .starts
            .unwrap_or(NaiveDate::from_ymd_opt(2000, 1, 1).expect("date"));
        let index = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
        let off = (index(month) - index(anchor)).rem_euclid(self.months as i32);
        let first = index(month) - off;
        NaiveDate::from_ymd_opt(first.div_euclid(12), first.rem_euclid(12) as u32 + 1, 1)
            .expect("date")
    }
}

/// A monthly net that depends on the settlement period's length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleNet {
    /// Length of the settlement period in months.
    pub months: u32,
    #[serde(deserialize_with = "exact")]
    pub net: Decimal,
}

/// A fee per calendar month whose amount depends on how often the meter is
/// read and settled (opłata abonamentowa).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionFee {
    pub name: String,
    pub by_settlement: Vec<CycleNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    #[serde(
        default,
        deserialize_with = "exact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub vat_percent: Option<Decimal>,
}

impl SubscriptionFee {
    /// The monthly net for a settlement period of `months`.
    pub fn net_for(&self, months: u32) -> Option<Decimal> {
        self.by_settlement
            .iter()
            .find(|c| c.months == months)
            .map(|c| c.net)
    }

    pub(super) fn validate(&self, what: &str, months: u32) -> Result<(), String> {
        let what = format!("{what} ({})", self.name);
        for (i, c) in self.by_settlement.iter().enumerate() {
            if c.net < Decimal::ZERO {
                return Err(format!(
                    "{what}: by_settlement[{i}].net is negative ({})",
                    c.net
                ));
            }
            if self.by_settlement[..i].iter().any(|o| o.months == c.months) {
                return Err(format!("{what}: {} months is listed twice", c.months));
            }
        }
        if self.net_for(months).is_none() {
            return Err(format!(
                "{what} has no net for a settlement period of {months} month(s) (settlement.months); add {{\"months\": {months}, \"net\": ...}} to by_settlement"
            ));
        }
        check_dates(&what, self.valid_from, self.valid_to)?;
        check_vat(&what, self.vat_percent)
    }
}

#[cfg(test)]
mod settlement_tests {
    use super::*;

    fn m(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").unwrap()
    }

    #[test]
    fn periods_are_cut_from_their_anchor_month_across_years() {
        let two = Settlement {
            months: 2,
            starts: None,
        };
        assert_eq!(two.period_start(m("2026-10")), m("2026-09"));
        assert_eq!(two.period_start(m("2026-09")), m("2026-09"));
        assert_eq!(two.period_start(m("2027-01")), m("2027-01"));
        // Every 6 months from February: Feb–Jul, Aug–Jan.
        let six = Settlement {
            months: 6,
            starts: Some(m("2025-02")),
        };
        assert_eq!(six.period_start(m("2027-01")), m("2026-08"));
        assert_eq!(six.period_start(m("2026-07")), m("2026-02"));
        assert_eq!(six.period_start(m("2024-09")), m("2024-08"));
        assert!(Settlement {
            months: 5,
            starts: None
        }
        .validate()
        .is_err());
        let mid = Settlement {
            months: 1,
            starts: NaiveDate::from_ymd_opt(2026, 1, 15),
        };
        assert!(mid.validate().is_err());
    }
}

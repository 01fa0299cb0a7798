//! Net-metering (system opustów) across settlement periods: each period's
//! export × coefficient is a credit of import kWh in its zone, dated at the
//! period's settlement reading; at each reading, credits dated no earlier
//! than 365 days before it offset the period's import of their zone, the
//! oldest first (ustawa o OZE art. 4 ust. 5: "rozliczeniu podlega energia
//! elektryczna wprowadzona do sieci nie wcześniej niż na 365 dni przed
//! dniem dokonania odczytu rozliczeniowego"; the date of a period's export
//! is the date of its settlement reading). What is left is carried to the
//! next period; what is older expires. Pure, exact decimal arithmetic.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// Import Wh that export of `zone` can still offset, from the period whose
/// settlement reading was on `dated`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credit {
    pub zone: String,
    pub dated: NaiveDate,
    pub wh: Decimal,
}

impl Credit {
    /// The last reading date at which it still counts.
    pub fn last_usable(&self) -> NaiveDate {
        self.dated + chrono::Days::new(365)
    }
}

/// One zone of one settlement period: its billed import and export.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodZone {
    /// The period's settlement reading (its last local day).
    pub reading: NaiveDate,
    pub zone: String,
    pub import_wh: Decimal,
    pub export_wh: Decimal,
}

#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// Import Wh offset per (reading, zone).
    pub offsets: BTreeMap<(NaiveDate, String), Decimal>,
    /// Of them, offset by the credits carried in (from periods before
    /// these).
    pub from_carry_wh: Decimal,
    /// Credits left after the last period that still count at a later
    /// reading.
    pub carry_out: Vec<Credit>,
    /// Credits that reached 365 days unused, including those whose last
    /// usable reading was the last period's.
    pub expired: Vec<Credit>,
}

/// Settles `periods` (any order; taken by reading date) after `carry_in`.
pub fn settle(carry_in: &[Credit], periods: &[PeriodZone], coefficient: Decimal) -> Settled {
    let mut out = Settled::default();
    // Each credit with whether it was carried in.
    let mut credits: Vec<(Credit, bool)> = carry_in.iter().cloned().map(|c| (c, true)).collect();
    let mut readings: Vec<NaiveDate> = periods.iter().map(|p| p.reading).collect();
    readings.sort();
    readings.dedup();
    let last = readings.last().copied();
    for reading in readings {
        // Older than 365 days at this reading: expired.
        let (live, dead): (Vec<_>, Vec<_>) = credits
            .into_iter()
            .partition(|(c, _)| c.last_usable() >= reading);
        out.expired.extend(
            dead.into_iter()
                .map(|(c, _)| c)
                .filter(|c| c.wh > Decimal::ZERO),
        );
        credits = live;
        let here: Vec<&PeriodZone> = periods.iter().filter(|p| p.reading == reading).collect();
        for p in &here {
            if p.export_wh > Decimal::ZERO {
                credits.push((
                    Credit {
                        zone: p.zone.clone(),
                        dated: reading,
                        wh: p.export_wh * coefficient,
                    },
                    false,
                ));
            }
        }
        credits.sort_by_key(|(c, _)| c.dated);
        for p in &here {
            let mut need = p.import_wh.max(Decimal::ZERO);
            let mut offset = Decimal::ZERO;
            for (c, carried) in credits.iter_mut().filter(|(c, _)| c.zone == p.zone) {
                if need.is_zero() {
                    break;
                }
                let take = c.wh.min(need);
                c.wh -= take;
                need -= take;
                offset += take;
                if *carried {
                    out.from_carry_wh += take;
                }
            }
            *out.offsets.entry((reading, p.zone.clone())).or_default() += offset;
        }
        credits.retain(|(c, _)| c.wh > Decimal::ZERO);
    }
    // A credit whose last usable reading was the last one cannot count at
    // any later reading: it expired with this period, it is not carried.
    let (carried, dead): (Vec<_>, Vec<_>) = credits
        .into_iter()
        .map(|(c, _)| c)
        .partition(|c| last.is_none_or(|l| c.last_usable() > l));
    out.expired.extend(dead);
    out.carry_out = carried;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }
    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn pz(reading: &str, zone: &str, import: &str, export: &str) -> PeriodZone {
        PeriodZone {
            reading: day(reading),
            zone: zone.into(),
            import_wh: d(import),
            export_wh: d(export),
        }
    }

    #[test]
    fn a_surplus_is_carried_for_365_days_oldest_first_and_then_expires() {
        // Coefficient 0.8, monthly periods, one zone.
        // June 2026: import 100, export 500 → credit 400, 100 offset, 300 carried.
        // July: import 200, export 0 → 200 from June's credit, 100 left.
        // 2027-06-30: June 2026's credit (dated 2026-06-30) is still usable
        //   at this reading (365 days later); import 150 → 100 offset.
        // 2027-07-31: nothing left; import 50 → 0 offset.
        let s = settle(
            &[],
            &[
                pz("2026-06-30", "all", "100", "500"),
                pz("2026-07-31", "all", "200", "0"),
                pz("2027-06-30", "all", "150", "0"),
                pz("2027-07-31", "all", "50", "0"),
            ],
            d("0.8"),
        );
        let o = |r: &str| s.offsets[&(day(r), "all".to_string())];
        assert_eq!(
            [
                o("2026-06-30"),
                o("2026-07-31"),
                o("2027-06-30"),
                o("2027-07-31")
            ],
            [d("100"), d("200"), d("100"), d("0")]
        );
        // Nothing was carried in: June's credit used later is the
        // report's own.
        assert_eq!(s.from_carry_wh, d("0"));
        assert!(s.carry_out.is_empty() && s.expired.is_empty());
    }

    #[test]
    fn credits_expire_after_365_days_and_never_cross_zones() {
        // A credit of 300 in "night" from the reading of 2026-01-31, carried
        // in. 2026-06-30: day import 500 (night credit does not offset day);
        // night import 100 → 100 offset. At 2027-02-28 (393 days later) the
        // remaining 200 has expired: night import 80 → 0 offset.
        let carry = [Credit {
            zone: "night".into(),
            dated: day("2026-01-31"),
            wh: d("300"),
        }];
        let s = settle(
            &carry,
            &[
                pz("2026-06-30", "day", "500", "0"),
                pz("2026-06-30", "night", "100", "0"),
                pz("2027-02-28", "night", "80", "0"),
            ],
            d("0.7"),
        );
        assert_eq!(s.offsets[&(day("2026-06-30"), "day".to_string())], d("0"));
        assert_eq!(
            s.offsets[&(day("2026-06-30"), "night".to_string())],
            d("100")
        );
        assert_eq!(s.offsets[&(day("2027-02-28"), "night".to_string())], d("0"));
        assert_eq!(s.expired.len(), 1);
        assert_eq!(
            (s.expired[0].wh, s.expired[0].last_usable()),
            (d("200"), day("2027-01-31"))
        );
        assert!(s.carry_out.is_empty());
        // Of the offsets, only the 100 of June came from the carried-in credit.
        assert_eq!(s.from_carry_wh, d("100"));
        // Ending at the credit's last usable reading, unused: it expires
        // with this period and is not carried (no later reading can use it).
        let s = settle(&carry, &[pz("2027-01-31", "day", "10", "0")], d("0.7"));
        assert!(s.carry_out.is_empty());
        assert_eq!(
            s.expired.iter().map(|c| c.wh).collect::<Vec<_>>(),
            [d("300")]
        );
        // The same, ending before the expiry: carried out with its date.
        let s = settle(&carry, &[pz("2026-06-30", "night", "100", "10")], d("0.7"));
        // 10 × 0.7 = 7 credited this period; the older 300 is used first.
        let left: Vec<(NaiveDate, Decimal)> = s.carry_out.iter().map(|c| (c.dated, c.wh)).collect();
        assert_eq!(
            left,
            [(day("2026-01-31"), d("200")), (day("2026-06-30"), d("7.0"))]
        );
    }
}

//! Public holidays by country (Poland), computed per year.

use chrono::{Datelike, Days, NaiveDate};

/// Easter Sunday (Anonymous Gregorian algorithm).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("valid Easter date")
}

/// Countries with built-in holiday rules.
pub const COUNTRIES: [&str; 1] = ["PL"];

/// Public holidays (days free from work) of `country` in `year`.
pub fn holidays(country: &str, year: i32) -> Vec<NaiveDate> {
    match country {
        "PL" => poland(year),
        _ => vec![],
    }
}

fn poland(year: i32) -> Vec<NaiveDate> {
    let d = |m, day| NaiveDate::from_ymd_opt(year, m, day).expect("valid date");
    let e = easter(year);
    let mut out = vec![
        d(1, 1),                                          // Nowy Rok
        d(1, 6),                                          // Trzech Króli
        e,                                                // Wielkanoc
        e.checked_add_days(Days::new(1)).expect("date"),  // Poniedziałek Wielkanocny
        d(5, 1),                                          // Święto Pracy
        d(5, 3),                                          // Święto Konstytucji 3 Maja
        e.checked_add_days(Days::new(49)).expect("date"), // Zielone Świątki
        e.checked_add_days(Days::new(60)).expect("date"), // Boże Ciało
        d(8, 15),                                         // Wniebowzięcie NMP
        d(11, 1),                                         // Wszystkich Świętych
        d(11, 11),                                        // Narodowe Święto Niepodległości
        d(12, 25),
        d(12, 26),
    ];
    if year >= 2025 {
        out.push(d(12, 24)); // Wigilia, a public holiday since 2025
    }
    out.sort();
    out.retain(|x| x.year() == year);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn easter_dates_match_the_calendar() {
        assert_eq!(easter(2024), d("2024-03-31"));
        assert_eq!(easter(2025), d("2025-04-20"));
        assert_eq!(easter(2026), d("2026-04-05"));
        assert_eq!(easter(2027), d("2027-03-28"));
        assert_eq!(easter(2038), d("2038-04-25"));
    }

    #[test]
    fn polish_movable_holidays_follow_easter() {
        let h = holidays("PL", 2026);
        assert!(h.contains(&d("2026-04-06")), "Easter Monday");
        assert!(h.contains(&d("2026-06-04")), "Corpus Christi");
        assert!(h.contains(&d("2026-05-24")), "Pentecost");
        assert!(h.contains(&d("2026-12-24")));
        assert!(!holidays("PL", 2024).contains(&d("2024-12-24")));
        assert_eq!(h.len(), 14);
    }
}

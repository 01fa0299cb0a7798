//! Exact decimals from device JSON.
//!
//! Devices send decimal text such as `60.7312`; serde_json hands us the
//! nearest f64. Rust prints an f64 as the shortest text that reads back to
//! the same f64, which for device values (≤ 15 significant digits) is the
//! text the device sent. Parsing that text gives the exact decimal.

use rust_decimal::Decimal;
use std::str::FromStr;

/// The decimal the device meant by `x`; `None` if it does not fit.
pub fn from_f64(x: f64) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    Decimal::from_str(&x.to_string())
        .ok()
        .map(|d| d.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_texts_round_trip_exactly() {
        for text in [
            "60.7312",
            "0.1",
            "2589773.39",
            "-1899.8",
            "0.028",
            "229",
            "1026.61",
        ] {
            let x: f64 = text.parse().unwrap();
            assert_eq!(
                from_f64(x).unwrap(),
                Decimal::from_str(text).unwrap().normalize()
            );
        }
    }

    #[test]
    fn sums_of_converted_values_do_not_drift() {
        let x: f64 = "0.1".parse().unwrap();
        let total: Decimal = (0..1000).map(|_| from_f64(x).unwrap()).sum();
        assert_eq!(total, Decimal::from(100));
    }

    #[test]
    fn huge_values_are_rejected_not_mangled() {
        assert!(from_f64(1e300).is_none());
        assert!(from_f64(f64::NAN).is_none());
    }
}

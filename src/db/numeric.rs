//! NUMERIC values decoded straight into `Decimal`.
//!
//! rust_decimal's own decoder divides once per base-10000 digit group,
//! which made decoding most of a year report's time (a year of 50 meters'
//! hourly sums is millions of values). [`Numeric`] reads the groups into an
//! integer instead; whatever it cannot represent exactly (a scale beyond
//! 28, a magnitude beyond 96 bits, NaN or infinity) goes to rust_decimal's
//! decoder, which rounds or refuses as before. Either way the value and its
//! scale are the ones rust_decimal gives.

use postgres_types::{accepts, FromSql, Type};
use rust_decimal::Decimal;

/// A NUMERIC read from the database (use `Vec<Numeric>` for NUMERIC[]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric(pub Decimal);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if let Some(why) = refused(raw) {
            return Err(why.into());
        }
        match exact(raw) {
            Some(d) => Ok(Numeric(d)),
            None => Decimal::from_sql(ty, raw).map(Numeric),
        }
    }

    accepts!(NUMERIC);
}

/// Forms refused before rust_decimal sees them: its decoder panics on a
/// magnitude of 10^32 or more sent with its trailing zero groups dropped,
/// and reads a digit group above 9999 as a wrong value.
fn refused(raw: &[u8]) -> Option<&'static str> {
    let word = |i: usize| raw.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (Some(groups), Some(weight)) = (word(0), word(2)) else {
        return Some("NUMERIC value shorter than its header");
    };
    if weight as i16 > 7 {
        return Some("NUMERIC value of 10^32 or more, beyond a 96-bit decimal");
    }
    if (0..usize::from(groups)).any(|i| word(8 + 2 * i).is_some_and(|g| g >= 10_000)) {
        return Some("NUMERIC digit group above 9999");
    }
    None
}

/// The value of NUMERIC's binary form (digit count, weight, sign, display
/// scale, then base-10000 digits, most significant first) when it fits a
/// `Decimal` exactly at its display scale.
fn exact(raw: &[u8]) -> Option<Decimal> {
    let word =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*raw.get(i)?, *raw.get(i + 1)?])) };
    let groups = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let scale = u32::from(word(6)?);
    if raw.len() != 8 + 2 * groups || scale > 28 || !(sign == 0 || sign == 0x4000) {
        return None;
    }
    let mut m: i128 = 0;
    for i in 0..groups {
        let g = word(8 + 2 * i)?;
        m = m.checked_mul(10_000)?.checked_add(i128::from(g))?;
    }
    // value = m * 10000^(weight - groups + 1) = mantissa / 10^scale
    let shift = 4 * (weight - groups as i32 + 1) + scale as i32;
    let mantissa = if shift >= 0 {
        m.checked_mul(10i128.checked_pow(shift as u32)?)?
    } else {
        let p = 10i128.checked_pow(shift.unsigned_abs())?;
        if m % p != 0 {
            return None;
        }
        m / p
    };
    if mantissa >= 1 << 96 {
        return None;
    }
    let mantissa = if sign == 0x4000 { -mantissa } else { mantissa };
    Some(Decimal::from_i128_with_scale(mantissa, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_types::ToSql;
    use std::str::FromStr;

    fn library(raw: &[u8]) -> Option<Decimal> {
        Decimal::from_sql(&Type::NUMERIC, raw).ok()
    }

    /// rust_decimal's answer, or `Err` where its decoder panics.
    fn library_or_panic(raw: &[u8]) -> Result<Option<Decimal>, ()> {
        let raw = raw.to_vec();
        std::panic::catch_unwind(move || library(&raw)).map_err(|_| ())
    }

    fn ours(raw: &[u8]) -> Option<Decimal> {
        Numeric::from_sql(&Type::NUMERIC, raw).ok().map(|n| n.0)
    }

    /// NUMERIC's binary form from its parts.
    fn encode(weight: i16, negative: bool, scale: u16, groups: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((groups.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(if negative { 0x4000u16 } else { 0 }.to_be_bytes());
        v.extend(scale.to_be_bytes());
        for g in groups {
            v.extend(g.to_be_bytes());
        }
        v
    }

    #[test]
    fn values_and_scales_equal_the_library() {
        for text in [
            "0",
            "1",
            "-1",
            "0.001",
            "12.345",
            "-12.345",
            "2589773.39",
            "9999.9999",
            "10000",
            "123456789012345678901234567.8",
            "0.0000000000000000000000000001",
            "-79228162514264337593543950335",
            "79228162514264337593543950335",
            "1.500",
            "0.142857142857142857142857",
            "100000000",
            "0.10",
        ] {
            let d = Decimal::from_str(text).unwrap();
            let mut buf = bytes::BytesMut::new();
            d.to_sql(&Type::NUMERIC, &mut buf).unwrap();
            let (a, b) = (ours(&buf).unwrap(), library(&buf).unwrap());
            assert_eq!((a, a.scale()), (b, b.scale()), "{text}");
            assert!(exact(&buf).is_some(), "{text} decoded fast");
        }
    }

    #[test]
    fn the_servers_own_forms_equal_the_library() {
        for raw in [
            // 12.3450 as the server sends it: groups 12 | 3450, scale 4
            encode(0, false, 4, &[12, 3450]),
            // 20000 with trailing zero groups dropped: weight 1, one group
            encode(1, false, 0, &[2]),
            // 0.00012 (weight -2), scale 5
            encode(-2, true, 5, &[1200]),
            // zero with a display scale
            encode(0, false, 3, &[]),
            // a scale of 30: the library rounds, so do we (by handing over)
            encode(-8, false, 30, &[1234]),
            // 10^28: at the edge of Decimal
            encode(7, false, 0, &[1]),
            // 7.9 * 10^28 = 7 9000 0000 ... : beyond 2^96, refused by both
            encode(7, false, 0, &[7, 9000, 0, 0, 0, 0, 0, 0]),
        ] {
            let (a, b) = (ours(&raw), library(&raw));
            assert_eq!(a, b, "{raw:?}");
            assert_eq!(a.map(|d| d.scale()), b.map(|d| d.scale()), "{raw:?}");
        }
    }

    #[test]
    fn forms_the_library_panics_on_or_misreads_are_errors() {
        // 10^32 as the server sends it (weight 8, one group): rust_decimal panics
        let big = encode(8, false, 0, &[1]);
        assert!(library_or_panic(&big).is_err());
        assert!(ours(&big).is_none());
        // a digit group of 12000 is no NUMERIC at all
        assert!(ours(&encode(0, false, 0, &[12_000])).is_none());
        // a header cut short
        assert!(ours(&[0, 1, 0]).is_none());
    }

    #[test]
    fn nan_and_infinity_are_refused_as_before() {
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(ours(&nan).is_none());
        assert!(library(&nan).is_none());
    }
}

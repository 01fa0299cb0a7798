//! The billing pipeline, stage by stage (issue: one pipeline for every
//! report): selecting the meters comes first ([`meters`]); the DSO's own
//! hours are a second source of energy beside the Shelly's records
//! ([`ami`], with the point of delivery from [`pod`]).

pub mod ami;
pub mod meters;
pub mod net_metering;
pub mod pod;

use crate::tariff::Tariff;

/// Per tariff version (sorted by start), the part [lo, hi) of [from, to)
/// whose energy it balances and prices: the first version from `from`, each
/// later one from its own start.
pub fn version_windows(versions: &[Tariff], from: i64, to: i64) -> Vec<(i64, i64)> {
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                if i == 0 {
                    from
                } else {
                    v.valid_from_utc().max(from)
                },
                match versions.get(i + 1) {
                    Some(n) => n.valid_from_utc().min(to),
                    None => to,
                },
            )
        })
        .collect()
}

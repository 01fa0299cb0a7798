//! The billing pipeline, one stage per module, shared by every report:
//! [`meters`] selects the billed meters (roles, unknown meters found from
//! the records) → [`load`] fetches their energy (or, with [`pod`] and
//! [`ami`], the DSO's hours) → `tariff::balance` nets it (one netting for
//! the bill and for the capacity basis, [`basis`]) → `tariff::cost` prices
//! it into invoice lines and settles the net-billing deposit, with
//! [`net_metering`] carrying surplus across settlement periods → [`price`]
//! puts one tariff's bill, coverage and rules together; the commands only
//! parse arguments and render (table, JSON, CSV).

pub mod ami;
pub mod basis;
pub mod load;
pub mod meters;
pub mod net_metering;
pub mod pod;
pub mod price;

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

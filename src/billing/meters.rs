//! Which meters a report counts: one policy for `report costs` and
//! `report energy` (and every report after them), the first stage of the
//! billing pipeline. Meters are the `devices` rows and every device id the
//! records hold (never silently left out); roles choose among them.

use crate::db::devices::{self, Role};
use crate::db::{self, energy};
use crate::exit::ConfigError;

/// What is billed: meters and, per meter, its channels (as
/// `device/channel` pairs for the queries).
pub struct Billed {
    pub devices: Vec<String>,
    pub pairs: Vec<String>,
    pub notes: Vec<String>,
}

/// Which meters are billed: `--device`, else the grid meters (and meters
/// with a grid channel), else the only meter with data. Several meters with
/// data and none marked is an error: adding a sub-meter or a PV meter to
/// the grid meter would be wrong. A meter whose channels have roles is
/// billed for its grid channels only (an EM Gen3 measuring grid and PV).
pub fn select(
    client: &mut db::Client,
    explicit: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Billed> {
    let all = devices::list(client)?;
    let channel_roles = devices::channel_roles(client)?;
    // The billed meters with their channels (all phases, or only the grid
    // channels of a meter whose channels have roles), and a note per such
    // meter after `notes`.
    let select = |devices: Vec<String>, mut notes: Vec<String>| -> Billed {
        let mut pairs = Vec::new();
        for d in &devices {
            let own: Vec<&(String, String, Role)> =
                channel_roles.iter().filter(|(id, _, _)| id == d).collect();
            if own.is_empty() {
                pairs.extend(["A", "B", "C"].map(|c| format!("{d}/{c}")));
                continue;
            }
            pairs.extend(
                own.iter()
                    .filter(|(_, _, role)| *role == Role::Grid)
                    .map(|(_, ch, _)| format!("{d}/{ch}")),
            );
            let roles: Vec<String> = own
                .iter()
                .map(|(_, ch, role)| format!("{ch}={}", role.as_str()))
                .collect();
            notes.push(format!(
                "{d}: only its grid channel(s) are billed ({})",
                roles.join(", ")
            ));
        }
        Billed {
            devices,
            pairs,
            notes,
        }
    };
    if !explicit.is_empty() {
        return Ok(select(explicit.to_vec(), vec![]));
    }
    let mut with_data = energy::devices_with_data(client, from, to)?;
    if with_data.is_empty() {
        // A month without records still has fees (and a capacity tier from
        // the year before): look for the meter in the year before.
        with_data = energy::devices_with_data(client, from - 366 * 86_400, to)?;
    }
    let role = |id: &str| match all.iter().find(|d| d.device_id == id) {
        Some(d) => d.role.map_or("no role", Role::as_str),
        // Records of a meter no job identified (written by another tool, or
        // restored without the devices table).
        None => "no devices row",
    };
    let mut grid: Vec<String> = all
        .iter()
        .filter(|d| d.role == Some(Role::Grid))
        .map(|d| d.device_id.clone())
        .collect();
    for (d, _, r) in &channel_roles {
        if *r == Role::Grid && !grid.contains(d) {
            grid.push(d.clone());
        }
    }
    if !grid.is_empty() {
        let others: Vec<String> = with_data
            .iter()
            .filter(|d| !grid.contains(d))
            .map(|d| format!("{d} ({})", role(d)))
            .collect();
        let mut notes = vec![format!("billed: the grid meter(s) {}", grid.join(", "))];
        if !others.is_empty() {
            notes.push(format!("not billed: {}", others.join(", ")));
        }
        return Ok(select(grid, notes));
    }
    match with_data.as_slice() {
        [] => Ok(select(vec![], vec![])),
        [one] => Ok(select(
            vec![one.clone()],
            vec![format!(
                "{one} is billed as the only meter with data; mark the grid meter with `shellyctl device set-role {one} grid`"
            )],
        )),
        many => Err(ConfigError(format!(
            "{} meters have interval data in the period ({}) and none is marked as the grid connection; \
             mark it with `shellyctl device set-role ID grid` (and sub-meters or PV as submeter/pv), or choose with --device",
            many.len(),
            many.iter()
                .map(|d| format!("{d}: {}", role(d)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

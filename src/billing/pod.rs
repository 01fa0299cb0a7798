//! Which point of delivery (the DSO's meter) stands for the billed meters:
//! one rule for `report reconcile` and `report costs`.

use crate::db;
use crate::exit::ConfigError;

/// `explicit` (`--pod`), else the one linked to the billed meters with
/// `device set-role ID grid --pod POD`, else the only one imported; `None`
/// when no DSO data are imported or several are and none is linked.
pub fn find(
    c: &mut db::Client,
    explicit: Option<&str>,
    devices: &[String],
) -> anyhow::Result<Result<String, Vec<String>>> {
    if let Some(p) = explicit {
        return Ok(Ok(p.to_string()));
    }
    let linked = db::devices::pods_of(c, devices)?;
    if let [one] = linked.as_slice() {
        return Ok(Ok(one.clone()));
    }
    let pods = db::ami::pods(c)?;
    Ok(match pods.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(pods),
    })
}

/// As [`find`], but a missing or ambiguous point of delivery is a
/// configuration error that says what to do.
pub fn resolve(
    c: &mut db::Client,
    explicit: Option<&str>,
    devices: &[String],
) -> anyhow::Result<String> {
    match find(c, explicit, devices)? {
        Ok(p) => Ok(p),
        Err(pods) if pods.is_empty() => Err(ConfigError(
            "no DSO data imported: shellyctl ami import --pod POD FILE".into(),
        )
        .into()),
        Err(pods) => Err(ConfigError(format!(
            "several points of delivery imported ({}): choose one with --pod, or link one to the grid meter with `shellyctl device set-role ID grid --pod POD`",
            pods.join(", ")
        ))
        .into()),
    }
}

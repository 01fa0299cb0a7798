//! The `devices` table beyond what the jobs upsert: what each meter is.

use anyhow::bail;
use postgres::GenericClient;

/// What a meter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The grid connection: billed by `report costs`.
    Grid,
    /// A circuit behind the grid meter (never billed on its own).
    Submeter,
    /// A PV inverter's output.
    Pv,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Grid => "grid",
            Role::Submeter => "submeter",
            Role::Pv => "pv",
        }
    }
}

/// Sets a device's role; the device must be known.
pub fn set_role(client: &mut impl GenericClient, device: &str, role: Role) -> anyhow::Result<()> {
    let n = client.execute(
        "UPDATE devices SET role = $2 WHERE device_id = $1",
        &[&device, &role.as_str()],
    )?;
    if n == 0 {
        bail!(crate::exit::ConfigError(format!(
            "no device {device:?} in the database (see `shellyctl device list`)"
        )));
    }
    Ok(())
}

/// A device row as `device list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub device_id: String,
    pub model: Option<String>,
    pub host: Option<String>,
    pub role: Option<String>,
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every device, by id.
pub fn list(client: &mut impl GenericClient) -> Result<Vec<DeviceRow>, postgres::Error> {
    Ok(client
        .query(
            "SELECT device_id, model, host, role, last_seen FROM devices ORDER BY device_id",
            &[],
        )?
        .iter()
        .map(|r| DeviceRow {
            device_id: r.get(0),
            model: r.get(1),
            host: r.get(2),
            role: r.get(3),
            last_seen: r.get(4),
        })
        .collect())
}

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
    /// A load circuit (channels only).
    Load,
}

crate::text_enum!(Role {
    Grid => "grid",
    Submeter => "submeter",
    Pv => "pv",
    Load => "load",
});

/// Sets a device's role; the device must be known.
pub fn set_role(client: &mut impl GenericClient, device: &str, role: Role) -> anyhow::Result<()> {
    if role == Role::Load {
        bail!(crate::exit::UsageError(
            "load is a role for a channel (--channel em1:N); a meter is grid, submeter or pv"
                .into()
        ));
    }
    let n = client.execute(
        "UPDATE devices SET role = $2 WHERE device_id = $1",
        &[&device, &role],
    )?;
    if n == 0 {
        bail!(crate::exit::ConfigError(format!(
            "no device {device:?} in the database (see `shellyctl device list`)"
        )));
    }
    Ok(())
}

/// Links a meter to the point of delivery it measures (sql/0022).
pub fn set_pod(client: &mut impl GenericClient, device: &str, pod: &str) -> anyhow::Result<()> {
    client.execute(
        "UPDATE devices SET pod = $2 WHERE device_id = $1",
        &[&device, &pod],
    )?;
    Ok(())
}

/// The points of delivery linked to grid meters among `devices`.
pub fn pods_of(client: &mut impl GenericClient, devices: &[String]) -> anyhow::Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT DISTINCT pod FROM devices WHERE device_id = ANY($1) AND pod IS NOT NULL ORDER BY 1",
            &[&devices],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The phase letter an `em1:N` channel (or its interval database
/// `em1data:N`) is stored under; `A`/`B`/`C` are taken as they are.
pub fn channel_letter(channel: &str) -> Option<&'static str> {
    match channel {
        "em1:0" | "em1data:0" | "A" | "a" => Some("A"),
        "em1:1" | "em1data:1" | "B" | "b" => Some("B"),
        "em1:2" | "em1data:2" | "C" | "c" => Some("C"),
        _ => None,
    }
}

/// Sets what one channel of a multi-channel meter measures.
pub fn set_channel_role(
    client: &mut impl GenericClient,
    device: &str,
    channel: &str,
    role: Role,
) -> anyhow::Result<()> {
    let Some(letter) = channel_letter(channel) else {
        bail!(crate::exit::UsageError(format!(
            "unknown channel {channel:?}: give em1:0, em1:1 or em1:2 (or A, B, C)"
        )));
    };
    if client
        .query_opt("SELECT 1 FROM devices WHERE device_id = $1", &[&device])?
        .is_none()
    {
        bail!(crate::exit::ConfigError(format!(
            "no device {device:?} in the database (see `shellyctl device list`)"
        )));
    }
    client.execute(
        "INSERT INTO device_channels (device_id, channel, role) VALUES ($1, $2, $3)
         ON CONFLICT (device_id, channel) DO UPDATE SET role = EXCLUDED.role",
        &[&device, &letter, &role],
    )?;
    Ok(())
}

/// Channel roles: (device, channel letter, role).
pub fn channel_roles(
    client: &mut impl GenericClient,
) -> Result<Vec<(String, String, Role)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT device_id, channel, role FROM device_channels ORDER BY 1, 2",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A device row as `device list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub device_id: String,
    pub model: Option<String>,
    pub host: Option<String>,
    pub role: Option<Role>,
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// Channel roles, e.g. "A=grid, B=pv".
    pub channels: Option<String>,
}

/// Every device, by id.
pub fn list(client: &mut impl GenericClient) -> Result<Vec<DeviceRow>, postgres::Error> {
    Ok(client
        .query(
            "SELECT d.device_id, d.model, d.host, d.role, d.last_seen,
                    (SELECT string_agg(c.channel || '=' || c.role, ', ' ORDER BY c.channel)
                       FROM device_channels c WHERE c.device_id = d.device_id)
               FROM devices d ORDER BY d.device_id",
            &[],
        )?
        .iter()
        .map(|r| DeviceRow {
            device_id: r.get(0),
            model: r.get(1),
            host: r.get(2),
            role: r.get(3),
            last_seen: r.get(4),
            channels: r.get(5),
        })
        .collect())
}

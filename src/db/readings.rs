//! Writes live readings: the device row, its meter reading and its switch
//! channels, all in one transaction (a device's snapshot lands whole or not
//! at all). Inserts are idempotent on their keys, so a replay is harmless.

use crate::shelly::status::DeviceStatus;
use crate::shelly::DeviceInfo;
use chrono::{DateTime, Utc};
use postgres::Client;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Poll,
    Push,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Poll => "poll",
            Source::Push => "push",
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Written {
    pub power_readings: u64,
    pub switch_readings: u64,
}

/// A device's text, storable (no U+0000: a name with one failed every run).
fn text(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(|s| crate::device::storable(s).into_owned())
}

pub fn upsert_device(
    tx: &mut impl postgres::GenericClient,
    host: Option<&str>,
    info: &DeviceInfo,
    seen: DateTime<Utc>,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO devices (device_id, host, model, gen, app, fw_id, fw_version, profile, mac, name,
                              auth_enabled, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (device_id) DO UPDATE SET
             host = COALESCE(EXCLUDED.host, devices.host),
             model = COALESCE(EXCLUDED.model, devices.model),
             gen = COALESCE(NULLIF(EXCLUDED.gen, 0), devices.gen),
             app = COALESCE(EXCLUDED.app, devices.app),
             fw_id = COALESCE(EXCLUDED.fw_id, devices.fw_id),
             fw_version = COALESCE(EXCLUDED.fw_version, devices.fw_version),
             profile = COALESCE(EXCLUDED.profile, devices.profile),
             mac = COALESCE(EXCLUDED.mac, devices.mac),
             name = COALESCE(EXCLUDED.name, devices.name),
             auth_enabled = COALESCE(EXCLUDED.auth_enabled, devices.auth_enabled),
             last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen)",
        &[
            &info.id,
            &host,
            &text(&info.model),
            &info.gen,
            &text(&info.app),
            &text(&info.fw_id),
            &text(&info.ver),
            &text(&info.profile),
            &text(&info.mac),
            &text(&info.name),
            &info.auth_en,
            &seen,
        ],
    )?;
    Ok(())
}

/// Writes one device's snapshot in a single transaction. No partition is
/// made here: `migrate` and `retention` make the months ahead, and a row of
/// a month that has none (a clock far off, a spool from long ago) lands in
/// the default partition, which the next `retention` gives its month (a
/// short-lived job asking the catalog on every run cost 3 of its 19 ms).
pub fn write_snapshot(
    client: &mut Client,
    ts: DateTime<Utc>,
    host: Option<&str>,
    info: &DeviceInfo,
    status: &DeviceStatus,
    source: Source,
) -> Result<Written, postgres::Error> {
    let mut tx = client.transaction()?;
    upsert_device(&mut tx, host, info, ts)?;
    let reading = Reading {
        ts,
        device_id: &info.id,
        status,
        source,
    };
    let written = Written {
        power_readings: insert_meter(&mut tx, reading)?,
        switch_readings: insert_switches(&mut tx, reading)?,
    };
    tx.commit()?;
    Ok(written)
}

/// Makes sure a devices row exists (pushed data may arrive before the
/// device has told us what it is).
pub fn ensure_device(
    tx: &mut impl postgres::GenericClient,
    device_id: &str,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&device_id],
    )?;
    Ok(())
}

fn device_ts(status: &DeviceStatus) -> Option<DateTime<Utc>> {
    status
        .device_unixtime
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
}

/// One device status read (polled) or received (pushed) at `ts`.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub ts: DateTime<Utc>,
    pub device_id: &'a str,
    pub status: &'a DeviceStatus,
    pub source: Source,
}

/// Writes a status's meter reading, if it has one; returns rows written.
pub fn insert_meter(
    tx: &mut impl postgres::GenericClient,
    r: Reading,
) -> Result<u64, postgres::Error> {
    let (ts, device_id, status, source) = (r.ts, r.device_id, r.status, r.source);
    let Some(m) = &status.meter else { return Ok(0) };
    let [a, b, c] = &m.phases;
    // The row and its minute's aggregate in one statement (db::minutes):
    // the count is 1 when the row is new, 0 when it was there already.
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH ins AS (
        INSERT INTO power_readings (ts, device_id, source, meter, total_power_w,
             phase_a_power_w, phase_b_power_w, phase_c_power_w,
             phase_a_voltage_v, phase_b_voltage_v, phase_c_voltage_v,
             phase_a_current_a, phase_b_current_a, phase_c_current_a,
             total_apparent_power_va, phase_a_apparent_power_va, phase_b_apparent_power_va,
             phase_c_apparent_power_va, phase_a_pf, phase_b_pf, phase_c_pf,
             phase_a_freq_hz, phase_b_freq_hz, phase_c_freq_hz,
             total_current_a, neutral_current_a, device_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)
         ON CONFLICT (device_id, ts) DO NOTHING
         RETURNING *)
         {}",
            super::minutes::insert_sql("ins")
        )
    });
    tx.execute(
        sql.as_str(),
        &[
            &ts,
            &device_id,
            &source.as_str(),
            &m.component,
            &m.total_power_w,
            &a.power_w,
            &b.power_w,
            &c.power_w,
            &a.voltage_v,
            &b.voltage_v,
            &c.voltage_v,
            &a.current_a,
            &b.current_a,
            &c.current_a,
            &m.total_apparent_power_va,
            &a.apparent_power_va,
            &b.apparent_power_va,
            &c.apparent_power_va,
            &a.pf,
            &b.pf,
            &c.pf,
            &a.freq_hz,
            &b.freq_hz,
            &c.freq_hz,
            &m.total_current_a,
            &m.neutral_current_a,
            &device_ts(status),
        ],
    )
}

/// Writes a status's switch channels; returns rows written.
pub fn insert_switches(
    tx: &mut impl postgres::GenericClient,
    r: Reading,
) -> Result<u64, postgres::Error> {
    let (ts, device_id, status, source) = (r.ts, r.device_id, r.status, r.source);
    if status.switches.is_empty() {
        return Ok(0);
    }
    let stmt = tx.prepare(
        "INSERT INTO switch_readings (ts, device_id, channel, source, output, apower_w, voltage_v,
             current_a, pf, freq_hz, energy_total_wh, returned_energy_total_wh, temperature_c, device_ts,
             component)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (device_id, component, channel, ts) DO NOTHING",
    )?;
    let mut n = 0;
    for s in &status.switches {
        n += tx.execute(
            &stmt,
            &[
                &ts,
                &device_id,
                &s.channel,
                &source.as_str(),
                &s.output,
                &s.apower_w,
                &s.voltage_v,
                &s.current_a,
                &s.pf,
                &s.freq_hz,
                &s.energy_total_wh,
                &s.returned_energy_total_wh,
                &s.temperature_c,
                &device_ts(status),
                &s.component,
            ],
        )?;
    }
    Ok(n)
}

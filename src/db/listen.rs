//! What `listen` stores besides readings: minute-log rows and channel
//! states, active periods, and connection sessions.

use crate::minute_log::{ChannelKey, ChannelState, Component, Period, Values};
use chrono::{DateTime, Utc};
use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

fn at(t: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default()
}

/// Makes the months of `power_logs` for `minutes` (unix seconds), before
/// the writer's transaction (see `db::partitions`).
pub fn ensure_partitions(
    c: &mut postgres::Client,
    minutes: impl Iterator<Item = i64> + Clone,
) -> Result<(), postgres::Error> {
    if let (Some(lo), Some(hi)) = (minutes.clone().min(), minutes.max()) {
        super::partitions::ensure(c, "power_logs", at(lo), at(hi))?;
    }
    Ok(())
}

/// Writes one `power_logs` row (idempotent on device, channel, minute).
pub fn insert_power_log(
    tx: &mut impl GenericClient,
    device_id: &str,
    (component, channel): ChannelKey,
    minute: i64,
    v: &Values,
) -> Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO power_logs (\"timestamp\", device_id, component, channel, apower_w, voltage_v, current_a, energy_total_wh)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &[&at(minute), &device_id, &component, &channel, &v.apower_w, &v.voltage_v, &v.current_a, &v.energy_total_wh],
    )
}

/// A batch of minute rows (channel, minute, values) of one device, with the
/// active periods they start or end and the channel states after them, in
/// one transaction (the months' partitions made first); returns the rows
/// written. `listen`'s writer and the spool replay both store this way.
pub fn write_logs(
    c: &mut postgres::Client,
    device_id: &str,
    rows: &[(ChannelKey, i64, &Values)],
    periods: &[(ChannelKey, Period)],
    states: &[(ChannelKey, ChannelState)],
) -> Result<u64, postgres::Error> {
    ensure_partitions(c, rows.iter().map(|(_, minute, _)| *minute))?;
    let mut tx = c.transaction()?;
    crate::db::readings::ensure_device(&mut tx, device_id)?;
    let mut written = 0;
    for (key, minute, values) in rows {
        written += insert_power_log(&mut tx, device_id, *key, *minute, values)?;
    }
    for (key, p) in periods {
        upsert_period(&mut tx, device_id, *key, p)?;
    }
    save_states(&mut tx, device_id, states)?;
    tx.commit()?;
    Ok(written)
}

/// Records a session's start or end with its devices row, in one transaction.
pub fn write_session(c: &mut postgres::Client, s: &Session) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    crate::db::readings::ensure_device(&mut tx, &s.device_id)?;
    upsert_session(&mut tx, s)?;
    tx.commit()
}

/// Records the start or the end of an active period (idempotent: an end
/// arriving without its start records the whole period).
pub fn upsert_period(
    tx: &mut impl GenericClient,
    device_id: &str,
    (component, channel): ChannelKey,
    p: &Period,
) -> Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO activity (device_id, component, channel, started_at, ended_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id, component, channel, started_at)
         DO UPDATE SET ended_at = COALESCE(EXCLUDED.ended_at, activity.ended_at)",
        &[
            &device_id,
            &component,
            &channel,
            &at(p.started),
            &p.ended.map(at),
        ],
    )
}

/// Saves minute-log channel states (in the transaction of their rows).
pub fn save_states(
    tx: &mut impl GenericClient,
    device_id: &str,
    states: &[(ChannelKey, ChannelState)],
) -> Result<(), postgres::Error> {
    for ((component, ch), st) in states {
        let state = serde_json::to_value(st).unwrap_or_default();
        tx.execute(
            "INSERT INTO power_log_state (device_id, component, channel, state, updated_at) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (device_id, component, channel) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            &[&device_id, &component, ch, &state],
        )?;
    }
    Ok(())
}

/// The stored channel states of a device (an unreadable one is skipped:
/// its channel starts afresh).
pub fn load_states(
    c: &mut impl GenericClient,
    device_id: &str,
) -> Result<HashMap<ChannelKey, ChannelState>, postgres::Error> {
    Ok(c.query(
        "SELECT component, channel, state FROM power_log_state WHERE device_id = $1",
        &[&device_id],
    )?
    .iter()
    .filter_map(|r| {
        let comp: Component = r.try_get(0).ok()?;
        let st = serde_json::from_value(r.get::<_, serde_json::Value>(2)).ok()?;
        Some(((comp, r.get::<_, i32>(1)), st))
    })
    .collect())
}

/// A connection of a device to `listen`: opened when the device is
/// identified, closed when the connection ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub device_id: crate::device::DeviceId,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub peer: Option<String>,
}

/// Records a session's start or end (idempotent, in any order).
pub fn upsert_session(tx: &mut impl GenericClient, s: &Session) -> Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO listen_sessions (device_id, connected_at, disconnected_at, reason, peer)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id, connected_at) DO UPDATE SET
             disconnected_at = COALESCE(EXCLUDED.disconnected_at, listen_sessions.disconnected_at),
             reason = COALESCE(EXCLUDED.reason, listen_sessions.reason),
             peer = COALESCE(listen_sessions.peer, EXCLUDED.peer)",
        &[
            &s.device_id,
            &s.connected_at,
            &s.disconnected_at,
            &s.reason,
            &s.peer,
        ],
    )
}

/// Closes the sessions a listen that stopped without closing them (a
/// crash, a kill) left open before `before`: at the last thing known from
/// the device in them, with reason 'listen restarted'. Returns how many.
pub fn close_abandoned_sessions(
    c: &mut impl GenericClient,
    before: DateTime<Utc>,
) -> Result<u64, postgres::Error> {
    c.execute(
        "UPDATE listen_sessions s SET reason = 'listen restarted',
                disconnected_at = GREATEST(s.connected_at,
                    (SELECT max(updated_at) FROM power_log_state p
                      WHERE p.device_id = s.device_id AND p.updated_at < $1),
                    (SELECT max(ts) FROM power_readings r
                      WHERE r.device_id = s.device_id AND r.ts >= s.connected_at AND r.ts < $1))
          WHERE s.disconnected_at IS NULL AND s.connected_at < $1",
        &[&before],
    )
}

/// The pushed channels: those with minute-log state of a device that has
/// connected to `listen`, and those with activity: (device, component,
/// channel).
pub fn pushed_channels(
    client: &mut impl GenericClient,
) -> Result<Vec<(String, String, i32)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT device_id, component, channel FROM power_log_state
              WHERE device_id IN (SELECT device_id FROM listen_sessions)
             UNION
             SELECT device_id, component, channel FROM activity
             ORDER BY 1, 2, 3",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A device's connections overlapping [from, to) (open ones end at `to`).
pub fn sessions_between(
    client: &mut impl GenericClient,
    device_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<crate::activity::Connection>, postgres::Error> {
    Ok(client
        .query(
            "SELECT EXTRACT(EPOCH FROM connected_at)::bigint,
                    EXTRACT(EPOCH FROM COALESCE(disconnected_at, to_timestamp($3)))::bigint, reason
               FROM listen_sessions
              WHERE device_id = $1 AND connected_at < to_timestamp($3)
                AND (disconnected_at IS NULL OR disconnected_at > to_timestamp($2) - interval '7 days')
              ORDER BY 1",
            &[&device_id, &(from as f64), &(to as f64)],
        )?
        .iter()
        .map(|r| crate::activity::Connection {
            start: r.get(0),
            end: r.get(1),
            reason: r.get(2),
        })
        .collect())
}

/// A channel's active periods overlapping [from, to), each ending at most
/// at `to`; a period still running lasts as far as its logged minutes go.
pub fn active_periods(
    client: &mut impl GenericClient,
    (device_id, component, channel): (&str, &str, i32),
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT EXTRACT(EPOCH FROM a.started_at)::bigint,
                    EXTRACT(EPOCH FROM COALESCE(a.ended_at,
                        (SELECT max(l.\"timestamp\") + interval '1 minute' FROM power_logs l
                          WHERE l.device_id = a.device_id AND l.component = a.component
                            AND l.channel = a.channel AND l.\"timestamp\" >= a.started_at),
                        a.started_at + interval '1 minute'))::bigint
               FROM activity a
              WHERE a.device_id = $1 AND a.component = $2 AND a.channel = $3
                AND a.started_at < to_timestamp($5)
                AND (a.ended_at IS NULL OR a.ended_at > to_timestamp($4))
              ORDER BY 1",
            &[
                &device_id,
                &component,
                &channel,
                &(from as f64),
                &(to as f64),
            ],
        )?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).min(to)))
        .collect())
}

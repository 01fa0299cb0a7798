//! Alert state (row-locked per rule) and events with their delivery status.

use crate::alert_rule::{Column, Episode, Memory, State};
use postgres::{GenericClient, Transaction};
use rust_decimal::Decimal;
use serde_json::Value;

use super::utc as ts;

/// Locks the rule's state row for this transaction, creating it if needed.
/// A concurrent run blocks here until this one commits, then sees its state.
pub fn lock_state(
    tx: &mut Transaction,
    rule_key: &str,
    device_id: &str,
) -> Result<Memory, postgres::Error> {
    tx.execute(
        "INSERT INTO alert_state (rule_key, device_id) VALUES ($1, $2) ON CONFLICT (rule_key) DO NOTHING",
        &[&rule_key, &device_id],
    )?;
    let row = tx.query_one(
        "SELECT state, EXTRACT(EPOCH FROM last_fired_at)::bigint FROM alert_state WHERE rule_key = $1 FOR UPDATE",
        &[&rule_key],
    )?;
    let state: String = row.get(0);
    Ok(Memory {
        state: if state == "firing" {
            State::Firing
        } else {
            State::Armed
        },
        last_fired_at: row.get(1),
    })
}

pub fn save_state(
    tx: &mut Transaction,
    rule_key: &str,
    mem: &Memory,
    episode_started_at: Option<i64>,
    cleared_at: Option<i64>,
    event_id: Option<i64>,
    details: &Value,
) -> Result<(), postgres::Error> {
    let state = match mem.state {
        State::Armed => "armed",
        State::Firing => "firing",
    };
    tx.execute(
        "UPDATE alert_state SET state = $2,
                last_fired_at = $3,
                episode_started_at = CASE WHEN $2 = 'armed' THEN NULL ELSE COALESCE($4, episode_started_at) END,
                last_cleared_at = COALESCE($5, last_cleared_at),
                last_event_id = COALESCE($6, last_event_id),
                details = $7, updated_at = now()
          WHERE rule_key = $1",
        &[
            &rule_key,
            &state,
            &mem.last_fired_at.map(ts),
            &episode_started_at.map(ts),
            &cleared_at.map(ts),
            &event_id,
            details,
        ],
    )?;
    Ok(())
}

pub fn insert_event(
    tx: &mut Transaction,
    rule_key: &str,
    device_id: &str,
    e: &Episode,
    details: &Value,
    created_at: i64,
) -> Result<i64, postgres::Error> {
    let row = tx.query_one(
        "INSERT INTO alert_events (created_at, rule_key, device_id, kind, value_w, threshold_w,
                                   window_start, window_end, details, delivery_status, next_attempt_at)
         VALUES ($1, $2, $3, 'fired', $4, $5, $6, $7, $8, 'pending', $1)
         RETURNING id",
        &[
            &ts(created_at),
            &rule_key,
            &device_id,
            &e.value,
            &e.threshold,
            &ts(e.window_start),
            &ts(e.window_end),
            details,
        ],
    )?;
    Ok(row.get(0))
}

/// Samples of one `power_readings` column for a device in (from, to].
pub fn samples(
    client: &mut impl GenericClient,
    device_id: &str,
    column: Column,
    from: i64,
    to: i64,
) -> Result<Vec<crate::alert_rule::Sample>, postgres::Error> {
    let rows = client.query(
        &format!(
            "SELECT EXTRACT(EPOCH FROM ts)::bigint, {} FROM power_readings
              WHERE device_id = $1 AND ts > $2 AND ts <= $3
              ORDER BY ts",
            column.name()
        ),
        &[&device_id, &ts(from), &ts(to)],
    )?;
    Ok(rows
        .iter()
        .map(|r| crate::alert_rule::Sample {
            ts: r.get(0),
            value: r.get::<_, Option<Decimal>>(1),
        })
        .collect())
}

#[derive(Debug)]
pub struct PendingEvent {
    pub id: i64,
    pub rule_key: String,
    pub device_id: Option<String>,
    pub attempts: i32,
}

/// Marks events older than `max_age_s` that were never delivered as given
/// up; returns them for logging.
pub fn give_up_stale(
    client: &mut impl GenericClient,
    now: i64,
    max_age_s: i64,
) -> Result<Vec<(i64, String, i32)>, postgres::Error> {
    let rows = client.query(
        "UPDATE alert_events SET delivery_status = 'given_up',
                last_error = COALESCE(last_error, 'not delivered') || ' (given up after ' || $2::bigint || ' s)'
          WHERE delivery_status IN ('pending', 'failed')
            AND created_at < $1::timestamptz - make_interval(secs => $2::bigint)
          RETURNING id, rule_key, attempts",
        &[&ts(now), &max_age_s],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Every due event nobody else is delivering, oldest first, leased to
/// this run: their next attempt moves `lease_s` ahead, so a concurrent run
/// skips them, and a run killed mid-pulse leaves them due again once the
/// lease ends (at least once). Committed before any network call: no
/// transaction is held across a pulse.
pub fn claim_due(
    client: &mut postgres::Client,
    now: i64,
    lease_s: i64,
) -> Result<Vec<PendingEvent>, postgres::Error> {
    let mut tx = client.transaction()?;
    let rows = tx.query(
        "SELECT id, rule_key, device_id, attempts FROM alert_events
          WHERE delivery_status IN ('pending', 'failed') AND COALESCE(next_attempt_at, created_at) <= $1
          ORDER BY id FOR UPDATE SKIP LOCKED",
        &[&ts(now)],
    )?;
    let events: Vec<PendingEvent> = rows
        .iter()
        .map(|r| PendingEvent {
            id: r.get(0),
            rule_key: r.get(1),
            device_id: r.get(2),
            attempts: r.get(3),
        })
        .collect();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    if !ids.is_empty() {
        tx.execute(
            "UPDATE alert_events SET next_attempt_at = $2 WHERE id = ANY($1)",
            &[&ids, &ts(now + lease_s)],
        )?;
    }
    tx.commit()?;
    Ok(events)
}

/// Marks events delivered, together (one pulse told them all).
pub fn mark_delivered(
    client: &mut impl GenericClient,
    ids: &[i64],
    details: &Value,
) -> Result<(), postgres::Error> {
    client.execute(
        "UPDATE alert_events SET delivery_status = 'delivered', attempts = attempts + 1, delivered_at = now(),
                last_error = NULL, details = details || jsonb_build_object('delivery', $2::jsonb)
          WHERE id = ANY($1)",
        &[&ids, details],
    )?;
    Ok(())
}

/// Marks events failed, together, due again at `retry_at`.
pub fn mark_failed(
    client: &mut impl GenericClient,
    ids: &[i64],
    error: &str,
    retry_at: i64,
) -> Result<(), postgres::Error> {
    client.execute(
        "UPDATE alert_events SET delivery_status = 'failed', attempts = attempts + 1, last_error = $2,
                next_attempt_at = $3
          WHERE id = ANY($1)",
        &[&ids, &error, &ts(retry_at)],
    )?;
    Ok(())
}

/// Devices with readings in (from, to], and devices whose alert is still
/// firing (it must be able to clear even without new readings).
pub fn devices_to_evaluate(
    client: &mut impl postgres::GenericClient,
    from: i64,
    to: i64,
) -> Result<Vec<String>, postgres::Error> {
    Ok(client
        .query(
            "SELECT DISTINCT device_id FROM power_readings WHERE ts > $1 AND ts <= $2
             UNION SELECT device_id FROM alert_state WHERE state = 'firing' AND device_id IS NOT NULL ORDER BY 1",
            &[&ts(from), &ts(to)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

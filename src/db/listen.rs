//! What `listen` stores besides readings: minute-log rows and channel
//! states, active periods, and connection sessions.

use crate::device::DeviceId;
use crate::minute_log::{ChannelKey, ChannelState, Component, Period, Row, Values};
use crate::shelly::status::DeviceStatus;
use crate::shelly::DeviceInfo;
use chrono::{DateTime, Utc};
use postgres::{GenericClient, Statement};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::utc as at;

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
/// one transaction (a month without a partition goes to the default one);
/// returns the rows written. `listen`'s writer and the spool replay both store this way.
pub fn write_logs(
    c: &mut postgres::Client,
    device_id: &str,
    rows: &[(ChannelKey, i64, &Values)],
    periods: &[(ChannelKey, Period)],
    states: &[(ChannelKey, ChannelState)],
) -> Result<u64, postgres::Error> {
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

/// A stored channel state is replaced only by one at least as new (its
/// `values_ts`): a spool replayed after newer writes, or a write that went
/// through after its deadline and was spooled too, never moves a channel
/// back in time. A stored state dated beyond the plausible window (left by
/// an older version that trusted device clocks) is replaced by any.
const STATE_CONFLICT: &str = "ON CONFLICT (device_id, component, channel) DO UPDATE
    SET state = EXCLUDED.state, updated_at = now()
    WHERE power_log_state.state->>'values_ts' IS NULL
       OR (EXCLUDED.state->>'values_ts')::bigint >= (power_log_state.state->>'values_ts')::bigint
       OR (power_log_state.state->>'values_ts')::bigint > extract(epoch FROM now())::bigint + 300";

/// Saves minute-log channel states (in the transaction of their rows).
pub fn save_states(
    tx: &mut impl GenericClient,
    device_id: &str,
    states: &[(ChannelKey, ChannelState)],
) -> Result<(), postgres::Error> {
    for ((component, ch), st) in states {
        let state = serde_json::to_value(st).unwrap_or_default();
        tx.execute(
            &format!(
                "INSERT INTO power_log_state (device_id, component, channel, state, updated_at) VALUES ($1, $2, $3, $4, now())
                 {STATE_CONFLICT}"
            ),
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

/// Records a session's start or end (idempotent, in any order). The first
/// end recorded stays: a session a newer connection's claim ended (as
/// `replaced by a newer connection`) keeps that end when its own socket's
/// close arrives later, so one device's sessions never overlap.
pub fn upsert_session(tx: &mut impl GenericClient, s: &Session) -> Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO listen_sessions (device_id, connected_at, disconnected_at, reason, peer)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id, connected_at) DO UPDATE SET
             disconnected_at = COALESCE(listen_sessions.disconnected_at, EXCLUDED.disconnected_at),
             reason = COALESCE(listen_sessions.reason, EXCLUDED.reason),
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
/// the device in them, with reason 'listen restarted'. Only this
/// `instance`'s (and those of devices no listen has claimed): another
/// listen's open sessions are live. Returns how many.
pub fn close_abandoned_sessions(
    c: &mut impl GenericClient,
    before: DateTime<Utc>,
    instance: &str,
) -> Result<u64, postgres::Error> {
    c.execute(
        "UPDATE listen_sessions s SET reason = 'listen restarted',
                disconnected_at = GREATEST(s.connected_at,
                    (SELECT max(updated_at) FROM power_log_state p
                      WHERE p.device_id = s.device_id AND p.updated_at < $1),
                    (SELECT max(ts) FROM power_readings r
                      WHERE r.device_id = s.device_id AND r.ts >= s.connected_at AND r.ts < $1))
          WHERE s.disconnected_at IS NULL AND s.connected_at < $1
            AND NOT EXISTS (SELECT 1 FROM listen_owners o
                             WHERE o.device_id = s.device_id AND o.instance <> $2)",
        &[&before, &instance],
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
                    EXTRACT(EPOCH FROM COALESCE(disconnected_at, $3::timestamptz))::bigint, reason
               FROM listen_sessions
              WHERE device_id = $1 AND connected_at < $3::timestamptz
                AND (disconnected_at IS NULL OR disconnected_at > $2::timestamptz - interval '7 days')
              ORDER BY 1",
            &[&device_id, &at(from), &at(to)],
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
                AND a.started_at < $5::timestamptz
                AND (a.ended_at IS NULL OR a.ended_at > $4::timestamptz)
              ORDER BY 1",
            &[&device_id, &component, &channel, &at(from), &at(to)],
        )?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).min(to)))
        .collect())
}

/// What `listen`'s writer stores in one transaction: many devices' minute
/// rows, periods, channel states, sessions, device infos and meter
/// readings. Items of a device that another connection has claimed since
/// are left out (see sql/0018).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Device {
        info: DeviceInfo,
        peer: String,
    },
    Logs {
        device_id: DeviceId,
        rows: Vec<(ChannelKey, Row)>,
        periods: Vec<(ChannelKey, Period)>,
        states: Vec<(ChannelKey, ChannelState)>,
    },
    Session(Session),
    Reading {
        device_id: DeviceId,
        at: DateTime<Utc>,
        status: Box<DeviceStatus>,
    },
}

impl Item {
    /// The device whose minutes or readings it holds (fenced by its claim).
    pub fn fenced_device(&self) -> Option<&DeviceId> {
        match self {
            Item::Logs { device_id, .. } | Item::Reading { device_id, .. } => Some(device_id),
            Item::Device { .. } | Item::Session(_) => None,
        }
    }

    /// Any device it names.
    pub fn device(&self) -> &DeviceId {
        match self {
            Item::Logs { device_id, .. } | Item::Reading { device_id, .. } => device_id,
            Item::Device { info, .. } => &info.id,
            Item::Session(s) => &s.device_id,
        }
    }
}

/// A claim of a device by a new connection: the epoch goes up, and when
/// `load` the device's stored channel states come back with it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub device_id: DeviceId,
    pub load: bool,
}

/// What a committed batch tells the writer.
#[derive(Debug, Default)]
pub struct Committed {
    /// Minute rows new to the table.
    pub rows: u64,
    /// Each claim's epoch and (when asked) the device's stored states.
    pub claimed: Vec<(DeviceId, i64, HashMap<ChannelKey, ChannelState>)>,
    /// Devices held with an epoch that is no longer the stored one: claimed
    /// by another connection (maybe of another listen). Nothing of theirs
    /// was written.
    pub revoked: Vec<DeviceId>,
}

/// The statements of a batch, prepared once per connection.
pub struct Statements {
    lock_shared: Statement,
    epochs: Statement,
    lock: Statement,
    supersede: Statement,
    claim: Statement,
    load: Statement,
    devices: Statement,
    logs: Statement,
    periods: Statement,
    states: Statement,
    session: Statement,
}

/// Advisory lock class of device claims (two-int keys never meet the
/// bigint keys of `db::lock_key`).
const CLAIM_LOCK_CLASS: i32 = 0x5348_4c4f; // "SHLO"

impl Statements {
    pub fn prepare(c: &mut postgres::Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            lock_shared: c.prepare(&format!(
                "SELECT count(pg_advisory_xact_lock_shared({CLAIM_LOCK_CLASS}, hashtext(d)))
                   FROM (SELECT d FROM unnest($1::text[]) AS d ORDER BY d) l"
            ))?,
            epochs: c.prepare(
                "SELECT device_id, epoch FROM listen_owners WHERE device_id = ANY($1::text[])",
            )?,
            lock: c.prepare(&format!(
                "SELECT count(pg_advisory_xact_lock({CLAIM_LOCK_CLASS}, hashtext(d)))
                   FROM (SELECT d FROM unnest($1::text[]) AS d ORDER BY d) l"
            ))?,
            supersede: c.prepare(
                "UPDATE listen_sessions SET disconnected_at = GREATEST(connected_at, now()),
                        reason = 'replaced by a newer connection'
                  WHERE device_id = ANY($1::text[]) AND disconnected_at IS NULL",
            )?,
            claim: c.prepare(
                "INSERT INTO listen_owners (device_id, epoch, instance)
                 SELECT DISTINCT d, 1::bigint, $2 FROM unnest($1::text[]) AS d
                 ON CONFLICT (device_id) DO UPDATE
                     SET epoch = listen_owners.epoch + 1, instance = EXCLUDED.instance, claimed_at = now()
                 RETURNING device_id, epoch",
            )?,
            load: c.prepare(
                "SELECT device_id, component, channel, state FROM power_log_state
                  WHERE device_id = ANY($1::text[])",
            )?,
            devices: c.prepare(
                "INSERT INTO devices (device_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            )?,
            logs: c.prepare(
                "INSERT INTO power_logs (\"timestamp\", device_id, component, channel, apower_w, voltage_v, current_a, energy_total_wh)
                 SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int4[],
                                      $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[])
                 ON CONFLICT DO NOTHING",
            )?,
            periods: c.prepare(
                "INSERT INTO activity (device_id, component, channel, started_at, ended_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::timestamptz[], $5::timestamptz[])
                 ON CONFLICT (device_id, component, channel, started_at)
                 DO UPDATE SET ended_at = COALESCE(EXCLUDED.ended_at, activity.ended_at)",
            )?,
            states: c.prepare(&format!(
                "INSERT INTO power_log_state (device_id, component, channel, state, updated_at)
                 SELECT d, c, ch, s, now() FROM unnest($1::text[], $2::text[], $3::int4[], $4::jsonb[]) AS u(d, c, ch, s)
                 {STATE_CONFLICT}"
            ))?,
            session: c.prepare(
                "INSERT INTO listen_sessions (device_id, connected_at, disconnected_at, reason, peer)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (device_id, connected_at) DO UPDATE SET
                     disconnected_at = COALESCE(listen_sessions.disconnected_at, EXCLUDED.disconnected_at),
                     reason = COALESCE(listen_sessions.reason, EXCLUDED.reason),
                     peer = COALESCE(listen_sessions.peer, EXCLUDED.peer)",
            )?,
        })
    }
}

/// Writes a batch in one transaction: checks the epochs of `held` (device,
/// epoch) under shared claim locks, writes every item of a device not
/// revoked, then makes the `claims` (after the rows, so a claim loads the
/// states just written). Periods and states of one channel are merged
/// (the last state of a channel wins; an end completes its start).
pub fn write_batch(
    c: &mut postgres::Client,
    st: &Statements,
    instance: &str,
    items: &[Item],
    held: &[(DeviceId, i64)],
    claims: &[Claim],
) -> Result<Committed, postgres::Error> {
    let mut tx = c.transaction()?;
    let mut out = Committed::default();
    // Fencing: a device claimed since by another connection is not ours.
    let mut revoked = BTreeSet::new();
    if !held.is_empty() {
        let ids: Vec<&str> = held.iter().map(|(d, _)| d.as_str()).collect();
        tx.query_one(&st.lock_shared, &[&ids])?;
        let stored: HashMap<String, i64> = tx
            .query(&st.epochs, &[&ids])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (d, e) in held {
            if stored.get(d.as_str()) != Some(e) {
                revoked.insert(d.clone());
            }
        }
    }
    let ours = |i: &Item| i.fenced_device().is_none_or(|d| !revoked.contains(d));
    let devices: BTreeSet<&str> = items
        .iter()
        .filter(|i| ours(i))
        .map(|i| i.device().as_str())
        .collect();
    let devices: Vec<&str> = devices.into_iter().collect();
    tx.execute(&st.devices, &[&devices])?;
    // Columns of the minute rows.
    let (mut ts, mut dev, mut comp, mut ch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut p, mut v, mut a, mut e): (Vec<Option<Decimal>>, Vec<_>, Vec<_>, Vec<_>) =
        Default::default();
    let mut periods: BTreeMap<(&str, ChannelKey, i64), Option<i64>> = BTreeMap::new();
    let mut states: BTreeMap<(&str, ChannelKey), &ChannelState> = BTreeMap::new();
    for item in items.iter().filter(|i| ours(i)) {
        match item {
            Item::Device { info, peer } => {
                super::readings::upsert_device(&mut tx, Some(peer), info, Utc::now())?;
            }
            Item::Logs {
                device_id,
                rows,
                periods: ps,
                states: ss,
            } => {
                for (key, r) in rows {
                    ts.push(at(r.minute));
                    dev.push(device_id.as_str());
                    comp.push(key.0.as_str());
                    ch.push(key.1);
                    p.push(r.values.apower_w);
                    v.push(r.values.voltage_v);
                    a.push(r.values.current_a);
                    e.push(r.values.energy_total_wh);
                }
                for (key, period) in ps {
                    let end = periods
                        .entry((device_id.as_str(), *key, period.started))
                        .or_default();
                    *end = period.ended.or(*end);
                }
                for (key, s) in ss {
                    states.insert((device_id.as_str(), *key), s);
                }
            }
            Item::Session(s) => {
                tx.execute(
                    &st.session,
                    &[
                        &s.device_id,
                        &s.connected_at,
                        &s.disconnected_at,
                        &s.reason,
                        &s.peer,
                    ],
                )?;
            }
            Item::Reading {
                device_id,
                at,
                status,
            } => {
                super::readings::insert_meter(
                    &mut tx,
                    super::readings::Reading {
                        ts: *at,
                        device_id,
                        status,
                        source: super::readings::Source::Push,
                    },
                )?;
            }
        }
    }
    if !ts.is_empty() {
        out.rows = tx.execute(&st.logs, &[&ts, &dev, &comp, &ch, &p, &v, &a, &e])?;
    }
    if !periods.is_empty() {
        let (mut d, mut c, mut n, mut s, mut f) = (vec![], vec![], vec![], vec![], vec![]);
        for ((dv, key, started), ended) in &periods {
            d.push(*dv);
            c.push(key.0.as_str());
            n.push(key.1);
            s.push(at(*started));
            f.push(ended.map(at));
        }
        tx.execute(&st.periods, &[&d, &c, &n, &s, &f])?;
    }
    if !states.is_empty() {
        let (mut d, mut c, mut n, mut j) = (vec![], vec![], vec![], vec![]);
        for ((dv, key), s) in &states {
            d.push(*dv);
            c.push(key.0.as_str());
            n.push(key.1);
            j.push(serde_json::to_value(s).unwrap_or_default());
        }
        tx.execute(&st.states, &[&d, &c, &n, &j])?;
    }
    if !claims.is_empty() {
        // Set-wise: thousands of devices connecting at once are a few
        // statements, not four each.
        let ids: Vec<&str> = claims.iter().map(|c| c.device_id.as_str()).collect();
        tx.query_one(&st.lock, &[&ids])?;
        let epochs: HashMap<String, i64> = tx
            .query(&st.claim, &[&ids, &instance])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // A connection's claim: the sessions before it are over (its own
        // is opened after it), wherever they were. (A claim the writer
        // makes for a connection it already has keeps its session.)
        let loading: Vec<&str> = claims
            .iter()
            .filter(|c| c.load)
            .map(|c| c.device_id.as_str())
            .collect();
        let mut states: HashMap<String, HashMap<ChannelKey, ChannelState>> = HashMap::new();
        if !loading.is_empty() {
            tx.execute(&st.supersede, &[&loading])?;
            for r in tx.query(&st.load, &[&loading])? {
                let Ok(comp) = r.try_get::<_, Component>(1) else {
                    continue;
                };
                let Ok(state) = serde_json::from_value(r.get::<_, serde_json::Value>(3)) else {
                    continue;
                };
                states
                    .entry(r.get(0))
                    .or_default()
                    .insert((comp, r.get::<_, i32>(2)), state);
            }
        }
        for cl in claims {
            let Some(epoch) = epochs.get(cl.device_id.as_str()) else {
                continue;
            };
            let s = states.remove(cl.device_id.as_str()).unwrap_or_default();
            out.claimed.push((cl.device_id.clone(), *epoch, s));
        }
    }
    tx.commit()?;
    out.revoked = revoked.into_iter().collect();
    Ok(out)
}

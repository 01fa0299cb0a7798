//! What `GET /healthz` on the listen port tells: the devices connected,
//! the last successful write per device, and whether the service can
//! write. Shared by the connections (connected, disconnected) and the
//! writer (database up or down, rows written).

use crate::device::DeviceId;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Connection number → device and since when.
    connected: HashMap<u64, (DeviceId, DateTime<Utc>)>,
    last_write: BTreeMap<DeviceId, DateTime<Utc>>,
    database_ok: bool,
    /// When a device was last seen connected (service start before any).
    last_connected: Option<Instant>,
    /// Since when the batch being written waits for the database.
    writing_since: Option<Instant>,
    /// Items in the last batch.
    last_batch: usize,
    /// Why the spool cannot be written (writes are held, devices wait).
    spool_error: Option<String>,
}

pub struct Health {
    started: Instant,
    /// A batch waiting longer than this for the database is late.
    pub late_after: Duration,
    /// Longest time without any device connected before /healthz fails.
    max_idle: Duration,
    state: Mutex<State>,
}

impl Health {
    pub fn new(max_idle: Duration) -> Health {
        Health {
            started: Instant::now(),
            late_after: Duration::from_secs(10),
            max_idle,
            state: Mutex::new(State {
                database_ok: true,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(&self, conn: u64, id: DeviceId, at: DateTime<Utc>) {
        let mut s = self.state();
        s.connected.insert(conn, (id, at));
        s.last_connected = Some(Instant::now());
    }

    pub fn disconnected(&self, conn: u64) {
        let mut s = self.state();
        if s.connected.remove(&conn).is_some() {
            s.last_connected = Some(Instant::now());
        }
    }

    pub fn wrote(&self, id: &DeviceId) {
        self.state().last_write.insert(id.clone(), Utc::now());
    }

    pub fn database(&self, ok: bool) {
        self.state().database_ok = ok;
    }

    /// A batch went to the database at `since` (None: it came back).
    pub fn writing(&self, since: Option<Instant>) {
        self.state().writing_since = since;
    }

    pub fn queued(&self, items: usize) {
        self.state().last_batch = items;
    }

    /// Whether the spool can be written (None) or why not; true when that
    /// changed.
    pub fn spool(&self, error: Option<String>) -> bool {
        let mut s = self.state();
        let changed = s.spool_error.is_some() != error.is_some();
        s.spool_error = error;
        changed
    }

    /// The HTTP status and the JSON body of `/healthz`.
    pub fn report(&self) -> (u16, Value) {
        let s = self.state();
        let mut problems = Vec::new();
        if let Some(e) = &s.spool_error {
            problems.push(format!("{e}: writes are held in memory and devices wait"));
        } else if !s.database_ok {
            problems.push("database unavailable: writes are spooled".to_string());
        }
        let late = s.writing_since.map(|t| t.elapsed());
        if late.is_some_and(|l| l > self.late_after) {
            problems.push(format!(
                "writes are late: a batch has waited {} s for the database",
                late.unwrap_or_default().as_secs()
            ));
        }
        let idle = if s.connected.is_empty() {
            Some(s.last_connected.unwrap_or(self.started).elapsed())
        } else {
            None
        };
        if idle.is_some_and(|i| i > self.max_idle) {
            problems.push(format!(
                "no device connected for more than {}",
                humantime::format_duration(self.max_idle)
            ));
        }
        let mut devices: BTreeMap<&DeviceId, Value> = BTreeMap::new();
        for (id, since) in s.connected.values() {
            devices.insert(
                id,
                json!({"device_id": id, "connected": true, "connected_since": since, "last_write": s.last_write.get(id)}),
            );
        }
        for (id, at) in &s.last_write {
            devices.entry(id).or_insert_with(
                || json!({"device_id": id, "connected": false, "connected_since": null, "last_write": at}),
            );
        }
        let ok = problems.is_empty();
        let body = json!({
            "status": if ok { "ok" } else { "unavailable" },
            "database": if s.database_ok { "ok" } else { "unavailable" },
            "writer": {
                "writing_for_ms": late.map(|l| l.as_millis() as u64),
                "last_batch_items": s.last_batch,
                "spool": s.spool_error.as_deref().unwrap_or("ok"),
            },
            "connected": s.connected.len(),
            "idle_s": idle.map(|i| i.as_secs()),
            "max_idle_s": self.max_idle.as_secs(),
            "devices": devices.into_values().collect::<Vec<_>>(),
            "problems": problems,
        });
        (if ok { 200 } else { 503 }, body)
    }

    /// The one line of `GET /`.
    pub fn line(&self) -> (u16, String) {
        let (code, body) = self.report();
        let line = if code == 200 {
            format!(
                "shellyctl listen: ok, {} device(s) connected",
                body["connected"]
            )
        } else {
            let problems: Vec<&str> = body["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("shellyctl listen: unavailable: {}", problems.join("; "))
        };
        (code, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_with_a_device_connected_and_the_database_up() {
        let h = Health::new(Duration::from_secs(900));
        let id = DeviceId::parse("dev").unwrap();
        h.connected(1, id.clone(), Utc::now());
        h.wrote(&id);
        let (code, body) = h.report();
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["devices"][0]["device_id"], "dev");
        assert!(body["devices"][0]["last_write"].is_string());
        h.database(false);
        assert_eq!(h.report().0, 503);
        assert!(h.line().1.contains("database unavailable"));
    }

    #[test]
    fn no_device_for_longer_than_the_limit_is_unhealthy() {
        let h = Health::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(h.report().0, 503);
        h.connected(1, DeviceId::parse("dev").unwrap(), Utc::now());
        assert_eq!(h.report().0, 200);
        h.disconnected(1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(h.report().0, 503);
    }
}

//! Which connection is each device's, in this process: a device that
//! connects again (a reconnect racing the old socket's timeout, or a
//! second device claiming the same id) replaces its earlier connection,
//! which is told why and closes. Never two writers of one device's
//! minutes: the writer also refuses the old connection's writes (and
//! another listen's, through the claims in the database).

use crate::device::DeviceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Set when a connection must close, with the reason.
pub type Kick = Arc<Mutex<Option<String>>>;

#[derive(Default)]
pub struct Registry {
    devices: Mutex<HashMap<DeviceId, (u64, Kick)>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, (u64, Kick)>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connection `conn` is device `id`'s now; the one before it (if any)
    /// is told to close. Returns the new connection's kick, and the number
    /// of the connection it replaced.
    pub fn take(&self, id: &DeviceId, conn: u64) -> (Kick, Option<u64>) {
        let kick: Kick = Arc::default();
        let old = self.map().insert(id.clone(), (conn, kick.clone()));
        let replaced = old.map(|(n, k)| {
            *k.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("replaced by a newer connection of the same device".into());
            n
        });
        (kick, replaced)
    }

    /// Connection `conn` ended (a newer one keeps its place).
    pub fn release(&self, id: &DeviceId, conn: u64) {
        let mut m = self.map();
        if m.get(id).is_some_and(|(n, _)| *n == conn) {
            m.remove(id);
        }
    }

    /// Tells connection `conn` of device `id` to close, with `why`.
    pub fn revoke(&self, id: &DeviceId, conn: u64, why: &str) {
        let mut m = self.map();
        if let Some((n, k)) = m.get(id) {
            if *n == conn {
                *k.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
                m.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_replaces_the_first() {
        let r = Registry::default();
        let id = DeviceId::parse("dev").unwrap();
        let (first, none) = r.take(&id, 1);
        assert_eq!(none, None);
        let (second, replaced) = r.take(&id, 2);
        assert_eq!(replaced, Some(1));
        assert!(first
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .contains("replaced"));
        // The first one ending does not free the second's place.
        r.release(&id, 1);
        r.revoke(&id, 2, "elsewhere");
        assert_eq!(second.lock().unwrap().as_deref(), Some("elsewhere"));
    }
}

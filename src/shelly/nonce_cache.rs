//! Keeps a device's digest nonce between runs.
//!
//! Firmware 2.0 devices hold 32 nonce slots for an hour each and answer 429
//! when a client keeps asking for fresh challenges. A `snapshot` every 10 s
//! that challenged on every run would exhaust them in minutes, so the nonce
//! and its request counter (`nc`) live in a small file, updated under a file
//! lock so overlapping runs never reuse an `nc`.

use super::digest::Challenge;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Devices accept a nonce for one hour; stop using it a little earlier.
const MAX_AGE_SECS: u64 = 55 * 60;
/// Devices allow 30,000 requests per nonce.
const MAX_NC: u32 = 29_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    challenge: Challenge,
    nc: u32,
    obtained_at: u64,
}

pub struct NonceCache {
    path: Option<PathBuf>,
    memory: Mutex<Option<Entry>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl NonceCache {
    /// A cache for one device host, persisted under `dir` when given.
    pub fn new(dir: Option<&Path>, host: &str) -> NonceCache {
        let path = dir.map(|d| {
            let safe: String = host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            d.join(format!("nonce-{safe}.json"))
        });
        NonceCache {
            path,
            memory: Mutex::new(None),
        }
    }

    /// Takes the next `nc` for the cached nonce, if there is a usable one.
    pub fn next(&self) -> Option<(Challenge, u32)> {
        self.update(|entry| {
            let e = entry.as_mut()?;
            if now_secs().saturating_sub(e.obtained_at) > MAX_AGE_SECS || e.nc >= MAX_NC {
                *entry = None;
                return None;
            }
            e.nc += 1;
            Some((e.challenge.clone(), e.nc))
        })
    }

    /// Stores a fresh challenge and takes `nc = 1` for it.
    pub fn start(&self, challenge: Challenge) -> u32 {
        self.update(|entry| {
            *entry = Some(Entry {
                challenge,
                nc: 1,
                obtained_at: now_secs(),
            });
            1
        })
    }

    /// Forgets the nonce (after the device rejected it).
    pub fn clear(&self) {
        self.update(|entry| *entry = None)
    }

    fn update<T>(&self, f: impl FnOnce(&mut Option<Entry>) -> T) -> T {
        let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.path {
            match open_locked(path) {
                Ok((mut file, mut entry)) => {
                    let result = f(&mut entry);
                    if let Err(e) = write_back(&mut file, &entry) {
                        log_unavailable(path, &e);
                    }
                    return result;
                }
                // An unusable state directory costs an extra challenge per
                // run, nothing more; fall back to memory.
                Err(e) => log_unavailable(path, &e),
            }
        }
        f(&mut mem)
    }
}

/// Said once per process (it would repeat on every request): the run
/// works, but each run now costs a fresh challenge.
fn log_unavailable(path: &Path, e: &std::io::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    crate::log::warn(
        "nonce_cache_unavailable",
        None,
        serde_json::json!({"path": path.display().to_string(), "error": e.to_string()}),
    );
}

/// Opens and locks the cache file (released when the file is dropped).
fn open_locked(path: &Path) -> std::io::Result<(File, Option<Entry>)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.lock()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((file, serde_json::from_str(&text).ok()))
}

fn write_back(file: &mut File, entry: &Option<Entry>) -> std::io::Result<()> {
    let text = match entry {
        Some(e) => serde_json::to_string(e).unwrap_or_default(),
        None => String::new(),
    };
    file.seek(SeekFrom::Start(0))?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shelly::digest::parse_challenge;

    fn challenge(nonce: &str) -> Challenge {
        parse_challenge(&format!(
            r#"Digest qop="auth", realm="r", nonce="{nonce}", algorithm=SHA-256"#
        ))
        .unwrap()
    }

    #[test]
    fn nc_increases_per_nonce_and_survives_a_new_process() {
        let dir = std::env::temp_dir().join(format!("shellyctl-nonce-{}", std::process::id()));
        let a = NonceCache::new(Some(&dir), "10.0.0.5:80");
        assert!(a.next().is_none());
        assert_eq!(a.start(challenge("n1==")), 1);
        assert_eq!(a.next().unwrap().1, 2);
        // A second process (a new cache over the same file) continues the count.
        let b = NonceCache::new(Some(&dir), "10.0.0.5:80");
        let (c, nc) = b.next().unwrap();
        assert_eq!((c.nonce.as_str(), nc), ("n1==", 3));
        // A new nonce restarts at 1.
        assert_eq!(b.start(challenge("n2")), 1);
        b.clear();
        assert!(a.next().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn works_in_memory_without_a_directory() {
        let c = NonceCache::new(None, "h");
        c.start(challenge("x"));
        assert_eq!(c.next().unwrap().1, 2);
    }
}

//! The device side of digest auth, with the firmware 2.0 rules: opaque
//! Base64 nonces valid for an hour, `nc` counted per nonce (first use 1),
//! `stale=true` for expired nonces, 32 nonce slots and a 2-second 429
//! throttle when they run out.
//!
//! The verification is written from RFC 7616 on its own, sharing no code
//! with the client's (`shellyctl::shelly::digest`), so a regression in the
//! client fails the tests instead of being mirrored here.

/// The user Gen2+ devices accept.
const USER: &str = "admin";

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 7616 §3.4.1 with qop=auth: H(H(user:realm:password):nonce:nc:cnonce:auth:H(method:uri)).
fn expected_response(
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = sha256_hex(&format!("{method}:{uri}"));
    sha256_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// The `key=value, key="quoted, value"` list of an Authorization header.
fn header_params(h: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = h.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            },
            None => match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            },
        };
        out.insert(key, value.trim().to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct AuthState {
    realm: String,
    ha1: String,
    ttl: Duration,
    slots: usize,
    nonces: HashMap<String, Slot>,
    throttle_until: Option<Instant>,
    counter: u64,
}

struct Slot {
    issued: Instant,
    last_nc: u32,
}

/// What the server does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 401 with this `WWW-Authenticate` value.
    Challenge(String),
    /// 429: no free nonce slot.
    Throttle,
}

/// Why a request was refused, for the simulator's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCredentials,
    UnknownNonce,
    StaleNonce,
    BadNc,
    BadResponse,
}

impl AuthState {
    pub fn new(realm: &str, password: &str, ttl: Duration, slots: usize) -> AuthState {
        AuthState {
            realm: realm.to_string(),
            ha1: sha256_hex(&format!("{USER}:{realm}:{password}")),
            ttl,
            slots,
            nonces: HashMap::new(),
            throttle_until: None,
            counter: 0,
        }
    }

    /// Checks the `Authorization` header of a request.
    pub fn check(
        &mut self,
        method: &str,
        uri: &str,
        header: Option<&str>,
    ) -> (Verdict, Option<Refusal>) {
        let now = Instant::now();
        let Some(h) = header.and_then(|h| h.strip_prefix("Digest ")) else {
            return (self.challenge(false, now), Some(Refusal::NoCredentials));
        };
        let p = header_params(h);
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let nonce = get("nonce").to_string();
        let Some(slot) = self.nonces.get_mut(&nonce) else {
            return (self.challenge(false, now), Some(Refusal::UnknownNonce));
        };
        if now.duration_since(slot.issued) > self.ttl {
            self.nonces.remove(&nonce);
            return (self.challenge(true, now), Some(Refusal::StaleNonce));
        }
        let nc = u32::from_str_radix(get("nc"), 16).unwrap_or(0);
        let nc_ok = if slot.last_nc == 0 {
            nc == 1
        } else {
            nc > slot.last_nc
        };
        if !nc_ok {
            return (self.challenge(false, now), Some(Refusal::BadNc));
        }
        let expected = expected_response(
            &self.ha1,
            &nonce,
            get("nc"),
            get("cnonce"),
            method,
            get("uri"),
        );
        let ok = get("username") == USER
            && get("qop") == "auth"
            && get("realm") == self.realm
            && get("uri") == uri
            && get("response") == expected;
        if !ok {
            return (self.challenge(false, now), Some(Refusal::BadResponse));
        }
        slot.last_nc = nc;
        (Verdict::Allow, None)
    }

    fn challenge(&mut self, stale: bool, now: Instant) -> Verdict {
        if self.throttle_until.is_some_and(|t| now < t) {
            return Verdict::Throttle;
        }
        let ttl = self.ttl;
        self.nonces
            .retain(|_, s| now.duration_since(s.issued) <= ttl);
        if self.nonces.len() >= self.slots {
            self.throttle_until = Some(now + Duration::from_secs(2));
            return Verdict::Throttle;
        }
        self.counter += 1;
        let nonce = base64_nonce(self.counter);
        self.nonces.insert(
            nonce.clone(),
            Slot {
                issued: now,
                last_nc: 0,
            },
        );
        let mut v = format!(
            "Digest qop=\"auth\", realm=\"{}\", nonce=\"{nonce}\", algorithm=SHA-256",
            self.realm
        );
        if stale {
            v.push_str(", stale=true");
        }
        Verdict::Challenge(v)
    }

    pub fn active_nonces(&self) -> usize {
        self.nonces.len()
    }
}

/// A 16-byte nonce in Base64, ending in `==` like firmware 2.0's.
fn base64_nonce(counter: u64) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    bytes[..8].copy_from_slice(&t.to_le_bytes());
    bytes[8..].copy_from_slice(&(counter ^ 0xA5A5_5A5A_0F0F_F0F0).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellyctl::shelly::digest::parse_challenge;

    fn answer(challenge: &str, pw: &str, nc: u32, uri: &str) -> String {
        parse_challenge(challenge)
            .unwrap()
            .authorization(pw, "GET", uri, nc, "c0ffee")
    }

    #[test]
    fn the_rfc_7616_sha256_example_verifies() {
        // RFC 7616 §3.9.1, SHA-256: Mufasa / "Circle of Life".
        let ha1 = sha256_hex("Mufasa:http-auth@example.org:Circle of Life");
        assert_eq!(
            expected_response(
                &ha1,
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                "00000001",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                "GET",
                "/dir/index.html",
            ),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let p = header_params(
            r#"username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="a, b""#,
        );
        assert_eq!(
            (p["qop"].as_str(), p["nc"].as_str(), p["cnonce"].as_str()),
            ("auth", "00000001", "a, b")
        );
    }

    #[test]
    fn nonce_reuse_with_increasing_nc_is_accepted() {
        let mut a = AuthState::new("dev-1", "pw", Duration::from_secs(3600), 32);
        let (Verdict::Challenge(ch), _) = a.check("GET", "/rpc/X", None) else {
            panic!()
        };
        assert!(ch.contains("==\""), "Base64 nonce: {ch}");
        for nc in 1..=3 {
            let h = answer(&ch, "pw", nc, "/rpc/X");
            assert_eq!(a.check("GET", "/rpc/X", Some(&h)).0, Verdict::Allow);
        }
        // Replaying an old nc is refused.
        let h = answer(&ch, "pw", 2, "/rpc/X");
        assert_eq!(a.check("GET", "/rpc/X", Some(&h)).1, Some(Refusal::BadNc));
        assert_eq!(a.active_nonces(), 2);
    }

    #[test]
    fn first_use_must_be_nc_1_and_password_must_match() {
        let mut a = AuthState::new("dev-1", "pw", Duration::from_secs(3600), 32);
        let (Verdict::Challenge(ch), _) = a.check("GET", "/x", None) else {
            panic!()
        };
        let (_, r) = a.check("GET", "/x", Some(&answer(&ch, "pw", 5, "/x")));
        assert_eq!(r, Some(Refusal::BadNc));
        let (Verdict::Challenge(ch), _) = a.check("GET", "/x", None) else {
            panic!()
        };
        let (_, r) = a.check("GET", "/x", Some(&answer(&ch, "wrong", 1, "/x")));
        assert_eq!(r, Some(Refusal::BadResponse));
    }

    #[test]
    fn expired_nonce_is_stale_and_slots_run_out_into_429() {
        let mut a = AuthState::new("dev-1", "pw", Duration::from_millis(30), 2);
        let (Verdict::Challenge(ch), _) = a.check("GET", "/x", None) else {
            panic!()
        };
        std::thread::sleep(Duration::from_millis(60));
        let (v, r) = a.check("GET", "/x", Some(&answer(&ch, "pw", 1, "/x")));
        assert_eq!(r, Some(Refusal::StaleNonce));
        assert!(matches!(v, Verdict::Challenge(ref c) if c.contains("stale=true")));
        let _ = a.check("GET", "/x", None);
        assert_eq!(a.check("GET", "/x", None).0, Verdict::Throttle);
        assert_eq!(
            a.check("GET", "/x", None).0,
            Verdict::Throttle,
            "throttled for 2 s"
        );
    }
}

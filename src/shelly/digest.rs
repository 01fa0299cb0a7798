//! HTTP Digest authentication (RFC 7616, SHA-256) as Shelly Gen2+ devices
//! speak it: user `admin`, realm = device id. Pure functions, shared by the
//! client and the simulator.

use sha2::{Digest, Sha256};

pub const USER: &str = "admin";

pub fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `ha1 = sha256("admin:<realm>:<password>")`.
pub fn ha1(realm: &str, password: &str) -> String {
    sha256_hex(&format!("{USER}:{realm}:{password}"))
}

/// The `response` value for qop=auth.
pub fn response(ha1: &str, nonce: &str, nc: u32, cnonce: &str, method: &str, uri: &str) -> String {
    let ha2 = sha256_hex(&format!("{method}:{uri}"));
    sha256_hex(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"))
}

/// A `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub qop: Option<String>,
    pub opaque: Option<String>,
    #[serde(default)]
    pub stale: bool,
}

/// Splits `key=value, key="quoted, value"` pairs. Values are split on the
/// *first* `=` only: firmware 2.0 nonces are Base64 and may end in `==`.
pub fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(stripped) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = stripped.char_indices();
            let mut end = stripped.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => v.push(c),
                }
            }
            value = v;
            rest = &stripped[end.min(stripped.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
    }
    out
}

/// Parses a `WWW-Authenticate` header value; `None` if it is not a usable
/// Digest challenge.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let h = header.trim();
    // Compare bytes: the header comes from the device and may hold any
    // UTF-8, so slicing the string at 7 could split a character.
    if h.len() < 7 || !h.as_bytes()[..7].eq_ignore_ascii_case(b"digest ") {
        return None;
    }
    let mut realm = None;
    let mut nonce = None;
    let mut algorithm = "MD5".to_string();
    let mut qop = None;
    let mut opaque = None;
    let mut stale = false;
    for (k, v) in parse_params(&h[7..]) {
        match k.as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "algorithm" => algorithm = v,
            "qop" => qop = Some(v),
            "opaque" => opaque = Some(v),
            "stale" => stale = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        algorithm,
        qop,
        opaque,
        stale,
    })
}

impl Challenge {
    pub fn supports_qop_auth(&self) -> bool {
        self.qop
            .as_deref()
            .map(|q| q.split(',').any(|x| x.trim() == "auth"))
            .unwrap_or(false)
    }

    pub fn is_sha256(&self) -> bool {
        self.algorithm.eq_ignore_ascii_case("SHA-256")
    }

    /// Header value answering this challenge with the given `nc`.
    pub fn authorization(
        &self,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let h1 = ha1(&self.realm, password);
        let resp = response(&h1, &self.nonce, nc, cnonce, method, uri);
        let mut v = format!(
            "Digest username=\"{USER}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             cnonce=\"{cnonce}\", nc={nc:08x}, qop=auth, response=\"{resp}\", algorithm=SHA-256",
            self.realm, self.nonce
        );
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v
    }
}

/// A fresh client nonce: 16 hex digits from the OS random source.
pub fn cnonce() -> String {
    use std::io::Read;
    let mut buf = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        buf = (t ^ (std::process::id() as u64) << 32).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firmware_2_base64_nonce_with_padding() {
        let h = r#"Digest qop="auth", realm="shelly3em63g3-aabbccddeeff", nonce="vohqagAAAABCbB3P+x/y==", algorithm=SHA-256, stale=true"#;
        let c = parse_challenge(h).unwrap();
        assert_eq!(c.nonce, "vohqagAAAABCbB3P+x/y==");
        assert_eq!(c.realm, "shelly3em63g3-aabbccddeeff");
        assert!(c.stale && c.is_sha256() && c.supports_qop_auth());
    }

    #[test]
    fn parses_old_numeric_nonce_and_unquoted_values() {
        let c = parse_challenge(
            r#"Digest qop="auth", realm="shellyplus1-7c87ce7213ec", nonce="642dabce", algorithm=SHA-256"#,
        )
        .unwrap();
        assert_eq!(c.nonce, "642dabce");
        assert!(!c.stale);
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
        assert!(parse_challenge("Digest realm=\"x\"").is_none(), "no nonce");
    }

    #[test]
    fn any_header_is_parsed_or_refused_without_panicking() {
        // Found by the `status` fuzz target: byte 7 inside a character.
        assert!(parse_challenge("[d\u{2} d\u{2}\u{79c}").is_none());
        assert!(parse_challenge("Digesté realm=\"r\"").is_none());
        assert!(parse_challenge("Digest realm=\"é\", nonce=\"ü==\"").is_some());
    }

    #[test]
    fn quoted_values_may_hold_commas_and_escapes() {
        let p = parse_params(r#"realm="a,b", opaque="x\"y", nc=00000001"#);
        assert_eq!(p[0], ("realm".into(), "a,b".into()));
        assert_eq!(p[1], ("opaque".into(), "x\"y".into()));
        assert_eq!(p[2], ("nc".into(), "00000001".into()));
    }

    #[test]
    fn response_matches_rfc7616_construction() {
        // Computed independently: python3 -c 'import hashlib;h=lambda s:hashlib.sha256(s.encode()).hexdigest();
        // print(h(h("admin:shellypro3em-aabbccddeeff:secret")+":abc==:00000002:0a1b:auth:"+h("GET:/rpc/Shelly.GetStatus")))'
        let h1 = ha1("shellypro3em-aabbccddeeff", "secret");
        let r = response(&h1, "abc==", 2, "0a1b", "GET", "/rpc/Shelly.GetStatus");
        assert_eq!(r, expected_response());
    }

    fn expected_response() -> String {
        let h = sha256_hex;
        let ha1 = h("admin:shellypro3em-aabbccddeeff:secret");
        let ha2 = h("GET:/rpc/Shelly.GetStatus");
        h(&format!("{ha1}:abc==:00000002:0a1b:auth:{ha2}"))
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn authorization_header_carries_nc_in_hex() {
        let c = parse_challenge(r#"Digest qop="auth", realm="r", nonce="n==", algorithm=SHA-256"#)
            .unwrap();
        let a = c.authorization("pw", "GET", "/shelly", 26, "cafe");
        assert!(a.contains("nc=0000001a"), "{a}");
        assert!(a.contains("nonce=\"n==\""));
        assert!(!a.contains("pw\""), "password must never be in the header");
    }
}

//! Adapter for Shelly Gen2+ devices: HTTP RPC client, digest auth, and the
//! parsing of device payloads into domain values.

pub mod client;
pub mod digest;
pub mod emdata;
pub mod nonce_cache;
pub mod status;

pub use client::{Client, ClientOptions, Error};

use serde::{Deserialize, Serialize};

/// `GET /shelly` (= `Shelly.GetDeviceInfo`), the fields we use.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DeviceInfo {
    /// Validated at parse time: a device answering with an id outside the
    /// allowed charset or length is refused, never stored or printed raw.
    pub id: crate::device::DeviceId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub gen: i32,
    #[serde(default)]
    pub fw_id: Option<String>,
    #[serde(default)]
    pub ver: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub auth_en: Option<bool>,
    #[serde(default)]
    pub profile: Option<String>,
}

impl DeviceInfo {
    /// Only the id (a device known by its frames, not its answers).
    pub fn bare(id: crate::device::DeviceId) -> DeviceInfo {
        DeviceInfo {
            id,
            name: None,
            mac: None,
            model: None,
            gen: 0,
            fw_id: None,
            ver: None,
            app: None,
            auth_en: None,
            profile: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pro3em_device_info_fixture() {
        let s = include_str!("../../tests/fixtures/shelly/pro3em-shelly-getdeviceinfo.json");
        let d: DeviceInfo = serde_json::from_str(s).unwrap();
        assert_eq!(d.id, "shellypro3em-aabbccddeeff");
        assert_eq!(d.model.as_deref(), Some("SPEM-003CEBEU"));
        assert_eq!(d.gen, 2);
        assert_eq!(d.profile.as_deref(), Some("triphase"));
        assert_eq!(d.auth_en, Some(false));
        assert_eq!(d.ver.as_deref(), Some("1.1.0"));
    }

    #[test]
    fn gen1_devices_are_rejected_for_lack_of_gen() {
        let gen1 = r#"{"type":"SHEM-3","mac":"AABBCC","auth":false,"fw":"1.11"}"#;
        assert!(serde_json::from_str::<DeviceInfo>(gen1).is_err());
    }
}

//! Every real device payload in tests/fixtures/shelly parses, and the
//! copies there are byte-identical to the shared originals.

use shellyctl::shelly::{client::rpc_error, digest, emdata, status, DeviceInfo};
use std::path::Path;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/shelly")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn fixture_copies_match_the_shared_originals() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shelly");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/shelly");
    let mut names: Vec<_> = std::fs::read_dir(&ours)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    if !shared.exists() {
        return; // a checkout without the shared folder: the copies stand alone
    }
    for entry in std::fs::read_dir(&shared).unwrap() {
        let name = entry.unwrap().file_name();
        let a = std::fs::read(shared.join(&name)).unwrap();
        let b = std::fs::read(ours.join(&name)).unwrap_or_default();
        assert_eq!(a, b, "{name:?} differs from the shared original");
    }
}

#[test]
fn every_fixture_parses() {
    let info: DeviceInfo =
        serde_json::from_str(&fixture("pro3em-shelly-getdeviceinfo.json")).unwrap();
    assert_eq!(info.id, "shellypro3em-aabbccddeeff");

    let st: serde_json::Value =
        serde_json::from_str(&fixture("pro3em-shelly-getstatus-triphase.json")).unwrap();
    let parsed = status::parse_status(&st).unwrap();
    assert_eq!(
        parsed.meter.unwrap().phases[0].power_w.unwrap().to_string(),
        "375.5"
    );

    let page_text = fixture("pro3em-emdata-getdata-page.json");
    let page = emdata::parse_page(&page_text, None, 1_800_000_000).unwrap();
    assert_eq!(
        (page.records.len(), page.next_record_ts),
        (6, Some(1739876940))
    );

    assert_eq!(
        rpc_error(&fixture("rpc-error-invalid-argument-docs-example.json")),
        Some((-103, "Missing required 'id'".to_string()))
    );

    let notify: serde_json::Value =
        serde_json::from_str(&fixture("notifystatus-switch-docs-example.json")).unwrap();
    assert_eq!(notify["method"], "NotifyStatus");
    assert_eq!(notify["params"]["switch:0"]["output"], true);

    // The WS 401 challenge carries its digest parameters as a JSON string.
    let ws: serde_json::Value =
        serde_json::from_str(&fixture("ws-rpc-401-auth-challenge.json")).unwrap();
    assert_eq!(ws["error"]["code"], 401);
    let challenge: serde_json::Value =
        serde_json::from_str(ws["error"]["message"].as_str().unwrap()).unwrap();
    assert_eq!(challenge["realm"], "shellyplus2pm-485519992590");
    assert_eq!(challenge["algorithm"], "SHA-256");
    assert_eq!(
        challenge["nonce"], 1725185413,
        "older firmware: numeric nonce"
    );
    assert_eq!(digest::ha1("r", "p").len(), 64);
}

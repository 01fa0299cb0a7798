//! Every unit in systemd/ passes `systemd-analyze verify`, and every service
//! rates "OK" or better (exposure ≤ 4.0) in `systemd-analyze security --offline`.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "service" || x == "timer")
        })
        .collect();
    v.sort();
    v
}

/// Copies the units with ExecStart pointing at the built binary (verify
/// checks that the command exists).
fn staged() -> (common::TempDir, Vec<PathBuf>) {
    let dir = common::TempDir::new("units");
    let bin = env!("CARGO_BIN_EXE_shellyctl");
    let out = units()
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(u)
                .unwrap()
                .replace("/usr/local/bin/shellyctl", bin);
            let dest = dir.0.join(u.file_name().unwrap());
            std::fs::write(&dest, text).unwrap();
            dest
        })
        .collect();
    (dir, out)
}

fn analyze() -> Command {
    let c = Command::new("systemd-analyze");
    assert!(
        common::output_of(Command::new("systemd-analyze").arg("--version")).is_ok(),
        "systemd-analyze is needed for these tests (apt-get install systemd)"
    );
    c
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let (_dir, units) = staged();
    assert!(units
        .iter()
        .any(|u| u.ends_with("shellyctl-listen.service")));
    let out = common::output_of(analyze().arg("verify").args(&units)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn every_service_is_rated_ok_or_better_offline() {
    let (_dir, units) = staged();
    for u in units
        .iter()
        .filter(|u| u.extension().is_some_and(|x| x == "service"))
    {
        let out = common::output_of(analyze().args(["security", "--offline=yes"]).arg(u)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{text}"));
        let level: f64 = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap();
        assert!(level <= 4.0, "{}: {line}", u.display());
        assert!(line.contains("OK") || line.contains("SAFE"), "{line}");
    }
}

#[test]
fn timers_have_the_documented_cadence() {
    let read = |n: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(n),
        )
        .unwrap()
    };
    let snap = read("shellyctl-snapshot@.timer");
    assert!(snap.contains("OnCalendar=*:*:0/10") && snap.contains("AccuracySec=1s"));
    assert!(read("shellyctl-ingest@.timer").contains("OnCalendar=*:0/5"));
    let backfill = read("shellyctl-backfill@.timer");
    assert!(backfill.contains("Persistent=true"));
    assert!(read("shellyctl-backfill@.service").contains("backfill --yesterday"));
    assert!(read("shellyctl-evaluate-alerts.timer").contains("OnCalendar=*:*:0/30"));
    assert!(read("shellyctl-retention.timer").contains("Persistent=true"));
    for u in units()
        .iter()
        .filter(|u| u.extension().is_some_and(|x| x == "service"))
    {
        let t = std::fs::read_to_string(u).unwrap();
        for must in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "RestrictAddressFamilies=",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=\n",
            "StateDirectory=shellyctl",
            "DynamicUser=yes",
        ] {
            assert!(
                t.contains(&must.replace("\\n", "\n")),
                "{}: {must}",
                u.display()
            );
        }
    }
}

/// systemd fails a unit at step CREDENTIALS when a `LoadCredential=` file is
/// missing, unless a `SetCredential=` of the same name gives a fallback (a
/// lone newline: shellyctl trims it to "not set")
/// (proven live by scripts/e2e-systemd, which deletes one).
#[test]
fn every_loaded_credential_has_an_empty_fallback() {
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        for id in text
            .lines()
            .filter_map(|l| l.strip_prefix("LoadCredential="))
        {
            let id = id.split(':').next().unwrap();
            assert!(
                text.lines().any(|l| l == format!("SetCredential={id}:\\n")),
                "{}: LoadCredential={id} has no SetCredential={id}:\\n fallback",
                unit.display()
            );
        }
    }
}

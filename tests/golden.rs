//! Golden output: what users see of `report costs`, `report energy`,
//! `health` and `ingest-intervals` (table, CSV, JSON) is checked against the
//! committed files in tests/snapshots/, so any change to it is a visible
//! diff (`cargo insta review`, or INSTA_UPDATE=always, to accept one).
//! Inputs are fixed: frozen device clocks, `--now`, data written directly;
//! the simulator's port is the one value replaced.

mod common;
use common::*;
use serde_json::json;

const LATER: &str = "1798761600"; // 2027-01-01

use common::put_intervals as put;

/// A prosumer's day under the shipped G11 example (hourly balancing,
/// per-kWh charges, capacity fee) and a fixed export price.
fn prosumer_day() -> TestDb {
    let db = TestDb::migrated();
    let mut t: serde_json::Value =
        serde_json::from_str(&shellyctl(&["tariff", "example", "g11"], &[]).stdout).unwrap();
    t["export"] = json!({"rule": "fixed_price", "price": "0.20"});
    t["declared_annual_kwh"] = "2400".into();
    assert_eq!(import_tariff(&db, &t, &[]).code, 0);
    put(
        &db,
        "shelly3em63g3-e4b063a1b2c3",
        "A",
        "2026-06-02T22:00:00Z",
        96,
        "300",
        "0",
    );
    put(
        &db,
        "shelly3em63g3-e4b063a1b2c3",
        "B",
        "2026-06-02T22:00:00Z",
        96,
        "120",
        "0",
    );
    // Phase C (the PV inverter's) exports 10:00-16:00 local and is
    // recorded, at 0, the rest of the day: a meter records every phase.
    for (start, quarters, exp) in [
        ("2026-06-02T22:00:00Z", 40, "0"),
        ("2026-06-03T08:00:00Z", 24, "900"),
        ("2026-06-03T14:00:00Z", 32, "0"),
    ] {
        put(
            &db,
            "shelly3em63g3-e4b063a1b2c3",
            "C",
            start,
            quarters,
            "0",
            exp,
        );
    }
    db
}

fn run(db: &TestDb, args: &[&str]) -> String {
    let out = shellyctl(args, &[("DATABASE_URL", &db.url)]);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.stdout
}

#[test]
fn report_costs_as_users_see_it() {
    let db = prosumer_day();
    for format in ["table", "csv", "json"] {
        let out = run(
            &db,
            &[
                "report",
                "costs",
                "--from",
                "2026-06-03",
                "--now",
                LATER,
                "--format",
                format,
            ],
        );
        insta::assert_snapshot!(format!("report_costs_{format}"), out);
    }
}

#[test]
fn report_energy_as_users_see_it() {
    let db = prosumer_day();
    for format in ["table", "csv", "json"] {
        let out = run(
            &db,
            &[
                "report",
                "energy",
                "--day",
                "2026-06-03",
                "--tz",
                "Europe/Warsaw",
                "--format",
                format,
            ],
        );
        insta::assert_snapshot!(format!("report_energy_{format}"), out);
    }
}

#[test]
fn health_as_users_see_it() {
    let db = TestDb::migrated();
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO devices (device_id, model, host) VALUES ('shelly3em63g3-e4b063a1b2c3', 'S3EM-003CXCEU63', '192.0.2.10');
         INSERT INTO power_readings (ts, device_id, total_power_w) VALUES ('2026-09-21 20:25:00+00', 'shelly3em63g3-e4b063a1b2c3', 512.5);
         INSERT INTO ingest_cursors (device_id, component, next_ts, period_s) VALUES ('shelly3em63g3-e4b063a1b2c3', 'emdata:0', '2026-09-21 19:00:00+00', 300);",
    )
    .unwrap();
    let now = "1790022400"; // 2026-09-21T20:26:40Z
    for format in ["table", "json"] {
        let out = shellyctl(
            &["health", "--now", now, "--format", format],
            &[("DATABASE_URL", &db.url)],
        );
        assert_eq!(
            out.code, 1,
            "the cursor is 86 minutes behind: {}",
            out.stderr
        );
        insta::assert_snapshot!(format!("health_{format}"), out.stdout);
    }
}

#[test]
fn ingest_intervals_as_users_see_it() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(1_790_022_400);
    cfg.history_days = 1;
    let sim = sim_with(cfg);
    let host = sim.host();
    for format in ["table", "json"] {
        let out = shellyctl(
            &["ingest-intervals", "--host", &host, "--format", format],
            &[("DATABASE_URL", &db.url)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        // The first run ingests the day, the second finds nothing new.
        insta::assert_snapshot!(
            format!("ingest_intervals_{format}"),
            out.stdout.replace(&host, "127.0.0.1:PORT")
        );
    }
}

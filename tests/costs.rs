//! report costs with hand-computed expectations (see each test's comment)
//! over energy_intervals written directly (slots rebuilt after each
//! write, as `shellyctl slots rebuild` does): 15-minute records, phase A
//! 250 Wh each (1 kWh per hour), B and C none unless stated.

mod common;
use common::*;

const LATER: &str = "1798761600"; // 2027-01-01: every test month is in the past

fn example(name: &str) -> serde_json::Value {
    let out = shellyctl(&["tariff", "example", name], &[]);
    assert_eq!(out.code, 0);
    serde_json::from_str(&out.stdout).unwrap()
}

/// A shipped example as these tests were written for it: no balancing, no
/// per-kWh charges, the capacity fee as a flat monthly fee (10.46), G11's
/// export at a fixed 0.25. The new components have their own tests in
/// tests/billing.rs.
fn legacy(name: &str) -> serde_json::Value {
    let mut v = example(name);
    v["balancing"] = "none".into();
    v.as_object_mut().unwrap().remove("per_kwh_charges");
    v.as_object_mut().unwrap().remove("capacity_fees");
    if name != "dynamic" {
        v["fixed_monthly_fees"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "opłata mocowa", "net": "10.46"}));
    }
    if name == "g11" {
        v["export_price"] = "0.2500".into();
    }
    v
}

use common::import_tariff as import;

/// 15-minute records from `from` to `to` (UTC, RFC 3339), excluding [skip).
fn fill(db: &TestDb, from: &str, to: &str, export_wh: &str, skip: Option<(&str, &str)>) {
    let mut c = db.client();
    c.execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1') ON CONFLICT DO NOTHING",
        &[],
    )
    .unwrap();
    let (s0, s1) = skip.unwrap_or(("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"));
    c.execute(
        &format!(
            "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
             SELECT 'meter-1', ch, t, t + interval '15 minutes',
                    CASE ch WHEN 'A' THEN 250 ELSE 0 END, CASE ch WHEN 'C' THEN {export_wh} ELSE 0 END, 'emdata:0'
               FROM generate_series('{from}'::timestamptz, '{to}'::timestamptz - interval '15 minutes', interval '15 minutes') t,
                    unnest(ARRAY['A', 'B', 'C']) ch
              WHERE NOT (t >= '{s0}'::timestamptz AND t < '{s1}'::timestamptz)"
        ),
        &[],
    )
    .unwrap();
    rebuild_slots(db);
}

fn costs(db: &TestDb, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["report", "costs", "--format", "json", "--now", LATER];
    a.extend_from_slice(args);
    let out = shellyctl(&a, &[("DATABASE_URL", &db.url)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

fn zone<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["zone"] == name)
        .unwrap_or_else(|| panic!("no zone {name}: {r}"))
}

#[test]
fn g12_over_a_month_with_the_spring_dst_change() {
    // March 2026 in Warsaw: 31 days, the 29th has 23 hours (02:00-03:00,
    // off-peak, does not exist). Peak 06-13 + 15-22 = 14 h a day → 434 h;
    // off-peak 31 × 10 − 1 = 309 h. At 1 kWh/h:
    //   peak    434 × 0.6210 = 269.514 → 269.51   434 × 0.4480 = 194.432 → 194.43
    //   offpeak 309 × 0.3790 = 117.111 → 117.11   309 × 0.1130 =  34.917 →  34.92
    //   fees 9.99 + 13.50 + 10.46 = 33.95
    //   net 649.92, VAT 23% 149.4816 → 149.48, gross 799.40
    let db = TestDb::migrated();
    assert_eq!(import(&db, &legacy("g12"), &[]).code, 0);
    fill(
        &db,
        "2026-02-28T23:00:00Z",
        "2026-03-31T22:00:00Z",
        "0",
        None,
    );
    let r = costs(&db, &["--month", "2026-03"]);
    assert_eq!(zone(&r, "peak")["kwh"], "434");
    assert_eq!(zone(&r, "offpeak")["kwh"], "309");
    assert_eq!(
        (
            zone(&r, "peak")["energy_net"].as_str(),
            zone(&r, "peak")["distribution_net"].as_str()
        ),
        (Some("269.51"), Some("194.43"))
    );
    assert_eq!(
        (
            zone(&r, "offpeak")["energy_net"].as_str(),
            zone(&r, "offpeak")["distribution_net"].as_str()
        ),
        (Some("117.11"), Some("34.92"))
    );
    assert_eq!(
        (r["net"].as_str(), r["vat"].as_str(), r["gross"].as_str()),
        (Some("649.92"), Some("149.48"), Some("799.40"))
    );
    assert_eq!(r["total"], "799.40");
    assert_eq!(r["complete"], true);
    assert_eq!(r["coverage"][0]["ratio"], "1");
}

#[test]
fn g12w_over_a_month_with_public_holidays_and_the_autumn_dst_change() {
    // 2026-10-20 .. 2026-11-18 (30 local days, 721 h: Oct 25 has 25 h).
    // Weekend days: Oct 24, 25, 31, Nov 1, 7, 8, 14, 15; Nov 11 (Wednesday)
    // is a public holiday → 21 working days × 14 peak hours = 294 h;
    // off-peak 721 − 294 = 427 h.
    //   peak    294 × 0.6590 = 193.746 → 193.75   294 × 0.4720 = 138.768 → 138.77
    //   offpeak 427 × 0.4010 = 171.227 → 171.23   427 × 0.1190 =  50.813 →  50.81
    //   fees × (12/31 + 18/30): 9.86, 13.33, 10.33
    //   net 588.08, VAT 135.2584 → 135.26, gross 723.34
    let db = TestDb::migrated();
    assert_eq!(import(&db, &legacy("g12w"), &[]).code, 0);
    fill(
        &db,
        "2026-10-19T22:00:00Z",
        "2026-11-18T23:00:00Z",
        "0",
        None,
    );
    let r = costs(&db, &["--from", "2026-10-20", "--to", "2026-11-18"]);
    assert_eq!(zone(&r, "peak")["kwh"], "294");
    assert_eq!(zone(&r, "offpeak")["kwh"], "427");
    let fees: Vec<&str> = r["fixed_fees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["net"].as_str().unwrap())
        .collect();
    assert_eq!(fees, ["9.86", "13.33", "10.33"]);
    assert_eq!(
        (r["net"].as_str(), r["vat"].as_str(), r["gross"].as_str()),
        (Some("588.08"), Some("135.26"), Some("723.34"))
    );
}

#[test]
fn g11_with_exported_energy_credits_it_after_vat() {
    // November 2026: 720 h. Import 720 kWh; export 50 Wh per 15 min = 144 kWh.
    //   720 × 0.5050 = 363.60; 720 × 0.3620 = 260.64; fees 31.65 → net 655.89
    //   VAT 150.8547 → 150.85; gross 806.74; export 144 × 0.25 = 36.00; total 770.74
    let db = TestDb::migrated();
    assert_eq!(import(&db, &legacy("g11"), &[]).code, 0);
    fill(
        &db,
        "2026-10-31T23:00:00Z",
        "2026-11-30T23:00:00Z",
        "50",
        None,
    );
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(zone(&r, "all")["kwh"], "720");
    assert_eq!(
        (r["net"].as_str(), r["vat"].as_str(), r["gross"].as_str()),
        (Some("655.89"), Some("150.85"), Some("806.74"))
    );
    assert_eq!(
        (r["export"]["kwh"].as_str(), r["export"]["credit"].as_str()),
        (Some("144"), Some("36.00"))
    );
    assert_eq!(r["total"], "770.74");

    // CSV carries the same numbers.
    let out = shellyctl(
        &[
            "report", "costs", "--month", "2026-11", "--format", "csv", "--now", LATER,
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert!(
        out.stdout.lines().any(|l| l == "total,,,,,,770.74,PLN"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_tariff_change_mid_month_splits_at_the_change() {
    // G11 until 2026-11-16, then energy at 0.6000 from the 16th.
    //   v1: 360 kWh × 0.5050 = 181.80, × 0.3620 = 130.32, fees × 0.5 = 5.00 + 5.60 + 5.23
    //       net 327.95, VAT 75.4285 → 75.43
    //   v2: 360 × 0.6000 = 216.00, 130.32, fees 15.83, net 362.15, VAT 83.2945 → 83.29
    //   net 690.10, VAT 158.72, gross 848.82
    let db = TestDb::migrated();
    let mut v1 = legacy("g11");
    v1["valid_to"] = "2026-11-16".into();
    v1["export_price"] = serde_json::Value::Null;
    let mut v2 = v1.clone();
    v2["valid_from"] = "2026-11-16".into();
    v2["valid_to"] = serde_json::Value::Null;
    v2["zones"][0]["energy_price"] = "0.6000".into();
    assert_eq!(import(&db, &v1, &[]).code, 0);
    assert_eq!(import(&db, &v2, &[]).code, 0);
    fill(
        &db,
        "2026-10-31T23:00:00Z",
        "2026-11-30T23:00:00Z",
        "0",
        None,
    );
    let r = costs(&db, &["--month", "2026-11"]);
    let lines: Vec<(&str, &str, &str)> = r["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["valid_from"].as_str().unwrap(),
                z["kwh"].as_str().unwrap(),
                z["energy_net"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("2026-01-01", "360", "181.80"),
            ("2026-11-16", "360", "216.00")
        ]
    );
    assert_eq!(
        (r["net"].as_str(), r["vat"].as_str(), r["gross"].as_str()),
        (Some("690.10"), Some("158.72"), Some("848.82"))
    );

    // A price correction of the running version applies retroactively.
    v2["zones"][0]["energy_price"] = "0.5500".into();
    assert_eq!(import(&db, &v2, &["--replace"]).code, 0);
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(r["zones"][1]["energy_net"], "198.00");
}

#[test]
fn a_dynamic_price_month() {
    // November 2026, hourly prices 0.40 + 0.01 × local hour; 1 kWh/h.
    //   energy 30 × Σ(0.40 + 0.01k, k=0..23) = 30 × 12.36 = 370.80
    //   distribution 720 × 0.3620 = 260.64; fees 19.99 + 11.20 = 31.19
    //   net 662.63, VAT 152.4049 → 152.40, gross 815.03
    let db = TestDb::migrated();
    assert_eq!(import(&db, &legacy("dynamic"), &[]).code, 0);
    fill(
        &db,
        "2026-10-31T23:00:00Z",
        "2026-11-30T23:00:00Z",
        "0",
        None,
    );
    let mut csv = String::from("start;price\n");
    for day in 1..=30 {
        for h in 0..24 {
            csv.push_str(&format!("2026-11-{day:02} {h:02}:00;0,{}\n", 40 + h));
        }
    }
    let dir = TempDir::new("prices");
    let f = dir.0.join("p.csv");
    std::fs::write(&f, &csv).unwrap();
    let out = shellyctl(
        &[
            "tariff",
            "prices",
            "import",
            f.to_str().unwrap(),
            "--tariff",
            "DYNAMIC",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["inserted"], 720);
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(zone(&r, "dynamic")["energy_net"], "370.80");
    assert_eq!(
        (r["net"].as_str(), r["vat"].as_str(), r["gross"].as_str()),
        (Some("662.63"), Some("152.40"), Some("815.03"))
    );

    // Missing prices are an error that names the gap, not a silent zero.
    let r = shellyctl(
        &["report", "costs", "--month", "2026-12", "--now", LATER],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(r.code, 78);
    assert!(
        r.stderr
            .contains("has no dynamic price from 2026-12-01 00:00"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_month_with_missing_intervals_reports_its_coverage() {
    // November 2026 without the 10th: 696 of 720 h.
    let db = TestDb::migrated();
    assert_eq!(import(&db, &legacy("g11"), &[]).code, 0);
    fill(
        &db,
        "2026-10-31T23:00:00Z",
        "2026-11-30T23:00:00Z",
        "0",
        Some(("2026-11-09T23:00:00Z", "2026-11-10T23:00:00Z")),
    );
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(zone(&r, "all")["kwh"], "696");
    assert_eq!(r["complete"], false);
    assert_eq!(r["coverage"][0]["ratio"], "0.9667");
    assert_eq!(r["coverage"][0]["covered_s"], 696 * 3600);
    let table = shellyctl(
        &["report", "costs", "--month", "2026-11", "--now", LATER],
        &[("DATABASE_URL", &db.url)],
    );
    assert!(
        table
            .stdout
            .contains("has interval data for 96.67% of the period (24.00 h missing)"),
        "{}",
        table.stdout
    );
}

#[test]
fn invalid_tariff_files_and_overlaps_are_precise_errors() {
    let db = TestDb::migrated();
    let mut bad = legacy("g12");
    bad["zones"][1]["distribution_price"] = "-0.01".into();
    let out = import(&db, &bad, &[]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .ends_with("zones[1] (offpeak): distribution_price is negative (-0.01)\n"),
        "{}",
        out.stderr
    );

    let mut gap = legacy("g12");
    gap["schedule"][0]["ranges"][2]["from"] = "13:30".into();
    let out = import(&db, &gap, &[]);
    assert!(
        out.stderr
            .ends_with("schedule[0]: hours 13:00-13:30 are missing\n"),
        "{}",
        out.stderr
    );

    assert_eq!(import(&db, &legacy("g12"), &[]).code, 0);
    let mut later = legacy("g12");
    later["valid_from"] = "2026-06-01".into();
    let out = import(&db, &later, &[]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains("tariff G12 already has a version valid from 2026-01-01 to (open) that overlaps 2026-06-01 to (open)"), "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM tariffs"), 1);

    let out = shellyctl(
        &["tariff", "show", "G12", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.json()[0]["zones"][0]["energy_price"], "0.6210");
}

#[test]
fn report_energy_has_25_and_23_hourly_rows_on_dst_days_and_draws_the_day() {
    let db = TestDb::migrated();
    fill(
        &db,
        "2026-10-24T22:00:00Z",
        "2026-10-25T23:00:00Z",
        "25",
        None,
    );
    fill(
        &db,
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        "0",
        None,
    );
    let dir = TempDir::new("plot");
    let svg = dir.0.join("day.svg");
    let out = shellyctl(
        &[
            "report",
            "energy",
            "--day",
            "2026-10-25",
            "--tz",
            "Europe/Warsaw",
            "--format",
            "json",
            "--plot",
            svg.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = out.json();
    let periods = j["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 25);
    assert_eq!(
        (periods[2]["start"].as_str(), periods[3]["start"].as_str()),
        (
            Some("2026-10-25 02:00+02:00"),
            Some("2026-10-25 02:00+01:00")
        )
    );
    assert_eq!(periods[0]["import_kwh"]["a"], "1");
    assert_eq!(periods[0]["export_kwh"]["c"], "0.1");
    assert_eq!(
        (
            j["import_total_kwh"].as_str(),
            j["export_total_kwh"].as_str()
        ),
        (Some("25"), Some("2.5"))
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    for ch in ["A", "B", "C"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("class=\"phase-{ch}\"")))
            .unwrap();
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            points.split(' ').count(),
            100,
            "phase {ch}: one point per 15-minute record"
        );
    }

    let spring = shellyctl(
        &[
            "report",
            "energy",
            "--day",
            "2026-03-29",
            "--tz",
            "Europe/Warsaw",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(spring.json()["periods"].as_array().unwrap().len(), 23);
    let month = shellyctl(
        &[
            "report",
            "energy",
            "--month",
            "2026-10",
            "--tz",
            "Europe/Warsaw",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    let days = month.json()["periods"].as_array().unwrap().clone();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["import_total_kwh"], "25");
}

#[test]
fn slots_check_finds_hand_edits_and_rebuild_follows_every_insert_delete_and_update_and_splits_straddlers_by_time(
) {
    let db = TestDb::migrated();
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id) VALUES ('meter-1')", &[])
        .unwrap();
    // Misaligned 5-minute records (starting at :03, :08, ...): every third
    // one crosses a 15-minute slot boundary.
    c.execute(
        "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         SELECT 'meter-1', ch, t, t + interval '5 minutes', 10.0007, 0.0003, 'emdata:0'
           FROM generate_series(timestamptz '2026-06-03 00:03:00+00', timestamptz '2026-06-03 23:53:00+00', interval '5 minutes') t,
                unnest(ARRAY['A', 'B', 'C']) ch",
        &[],
    )
    .unwrap();
    // Written by hand, not by ingest: the slots know nothing of them yet.
    let slots = |args: &[&str]| {
        let mut a = vec!["slots"];
        a.extend_from_slice(args);
        shellyctl(&a, &[("DATABASE_URL", &db.url)])
    };
    let c0 = slots(&[
        "check",
        "--day",
        "2026-06-03",
        "--tz",
        "UTC",
        "--format",
        "json",
    ]);
    assert_eq!(c0.code, 1, "{}", c0.stdout);
    // 96 slots × 3 phases, none stored.
    assert_eq!(c0.json()["mismatches"], 288);
    assert_eq!(slots(&["rebuild"]).code, 0);
    assert_eq!(slots(&["check"]).code, 0);
    let check = |c: &mut postgres::Client| {
        let raw: (rust_decimal::Decimal, rust_decimal::Decimal, i64) = {
            let r = c.query_one("SELECT sum(energy_wh), sum(returned_energy_wh), EXTRACT(EPOCH FROM sum(end_ts - start_ts) FILTER (WHERE channel = 'A'))::bigint FROM energy_intervals", &[]).unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        let slots: (rust_decimal::Decimal, rust_decimal::Decimal, i64) = {
            let r = c.query_one("SELECT sum(import_wh), sum(export_wh), EXTRACT(EPOCH FROM sum(covered) FILTER (WHERE channel = 'A'))::bigint FROM energy_slots", &[]).unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(raw, slots);
    };
    check(&mut c);
    // A straddling record (00:13-00:18) gives 2/5 to the 00:00 slot and 3/5 to 00:15.
    let first: rust_decimal::Decimal = c
        .query_one("SELECT import_wh FROM energy_slots WHERE channel = 'A' AND slot_start = '2026-06-03 00:00+00'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        first,
        "24.00168".parse().unwrap(),
        "2 whole records + 2/5 of 10.0007"
    );
    c.execute("DELETE FROM energy_intervals WHERE start_ts >= '2026-06-03 06:00+00' AND start_ts < '2026-06-03 07:00+00'", &[]).unwrap();
    // 06:00-07:00 UTC: 4 slots × 3 phases, plus the 07:00 slot whose first
    // record (06:58-07:03) started inside the deleted hour.
    assert_eq!(
        slots(&["check", "--format", "json"]).json()["mismatches"],
        15
    );
    // A range rebuild (a Warsaw day reaching back to 22:00 UTC) repairs it.
    assert_eq!(
        slots(&["rebuild", "--day", "2026-06-03", "--tz", "Europe/Warsaw"]).code,
        0
    );
    check(&mut c);
    c.execute("UPDATE energy_intervals SET energy_wh = energy_wh + 1 WHERE start_ts < '2026-06-03 01:00+00'", &[]).unwrap();
    assert_eq!(slots(&["check"]).code, 1);
    assert_eq!(
        slots(&[
            "rebuild",
            "--day",
            "2026-06-03",
            "--tz",
            "UTC",
            "--device",
            "meter-1"
        ])
        .code,
        0
    );
    check(&mut c);
    assert_eq!(slots(&["check"]).code, 0);

    // A 10-minute record across 13:00 local (peak → off-peak) is split 1:1.
    c.execute("TRUNCATE energy_intervals", &[]).unwrap();
    assert_eq!(slots(&["rebuild"]).code, 0);
    assert_eq!(db.count("SELECT count(*) FROM energy_slots"), 0);
    c.execute(
        "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         VALUES ('meter-1', 'A', '2026-06-03 10:55+00', '2026-06-03 11:05+00', 600, 0, 'emdata:0')",
        &[],
    )
    .unwrap();
    rebuild_slots(&db);
    assert_eq!(import(&db, &legacy("g12"), &[]).code, 0);
    let r = costs(&db, &["--from", "2026-06-03"]);
    // 0.3 kWh each: peak 0.1863 → 0.19 + 0.1344 → 0.13; off-peak 0.1137 → 0.11 + 0.0339 → 0.03
    assert_eq!(
        (
            zone(&r, "peak")["kwh"].as_str(),
            zone(&r, "offpeak")["kwh"].as_str()
        ),
        (Some("0.3"), Some("0.3"))
    );
    assert_eq!(
        (
            zone(&r, "peak")["net"].as_str(),
            zone(&r, "offpeak")["net"].as_str()
        ),
        (Some("0.32"), Some("0.14"))
    );
}

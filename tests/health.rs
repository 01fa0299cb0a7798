//! `health` tells the truth: configured devices that never delivered,
//! devices that recovered, cursors in the future, and a job row for every
//! scheduled job.

mod common;
use common::*;

fn health(db: &TestDb, now: i64, extra: &[(&str, &str)]) -> Run {
    let mut env = vec![("DATABASE_URL", db.url.as_str())];
    env.extend_from_slice(extra);
    shellyctl(
        &["health", "--format", "json", "--now", &now.to_string()],
        &env,
    )
}

fn checks<'a>(r: &'a serde_json::Value, check: &str) -> Vec<&'a serde_json::Value> {
    r["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {r}"))
        .iter()
        .filter(|c| c["check"] == check)
        .collect()
}

fn find<'a>(r: &'a serde_json::Value, check: &str, subject: &str) -> &'a serde_json::Value {
    checks(r, check)
        .into_iter()
        .find(|c| c["subject"] == subject)
        .unwrap_or_else(|| panic!("no {check} {subject:?}: {r}"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn a_configured_host_on_an_empty_database_is_unhealthy() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let host = sim.host();

    // A fresh install whose timers never ran.
    let out = health(&db, now(), &[("SHELLY_HOST", &host)]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let j = out.json();
    assert_eq!(j["ok"], false);
    let c = find(&j, "device", &host);
    assert_eq!(c["ok"], false);
    assert!(c["last"].is_null(), "{c}");
    assert!(c["detail"].as_str().unwrap().contains("never"), "{c}");

    // Once a snapshot delivered a reading, the host is its device.
    let env = [("DATABASE_URL", db.url.as_str()), ("SHELLY_HOST", &host)];
    assert_eq!(shellyctl(&["snapshot"], &env).code, 0);
    let out = health(&db, now(), &[("SHELLY_HOST", &host)]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let j = out.json();
    assert!(checks(&j, "device")
        .iter()
        .all(|c| c["subject"] != host.as_str()));
    assert_eq!(find(&j, "device", sim.device_id())["ok"], true);
}

#[test]
fn a_device_row_without_any_reading_or_interval_is_unhealthy() {
    let db = TestDb::migrated();
    db.client()
        .execute(
            "INSERT INTO devices (device_id, host) VALUES ('shellypro3em-000000000001', '192.0.2.7')",
            &[],
        )
        .unwrap();
    let out = health(&db, now(), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let c = find(&out.json(), "device", "shellypro3em-000000000001").clone();
    assert_eq!(c["ok"], false);
    assert_eq!(c["detail"], "never delivered a reading or an interval");

    // One interval record is enough: the device has delivered.
    db.client()
        .execute(
            "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, source)
             VALUES ('shellypro3em-000000000001', 'A', now() - interval '2 minutes',
                     now() - interval '1 minute', 1.5, 'emdata:0')",
            &[],
        )
        .unwrap();
    let out = health(&db, now(), &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        find(&out.json(), "device", "shellypro3em-000000000001")["ok"],
        true
    );
}

#[test]
fn a_device_that_failed_its_first_run_and_recovered_is_healthy_again() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLY_RETRIES", "0"),
    ];
    sim.set_sticky_fault(Some(Fault::Status500));
    assert_eq!(shellyctl(&["snapshot"], &env).code, 75);
    let down = health(&db, now(), &[]);
    assert_eq!(down.code, 1);
    assert_eq!(
        find(&down.json(), "job", &format!("snapshot {host}"))["ok"],
        false
    );

    sim.clear_faults();
    assert_eq!(shellyctl(&["snapshot"], &env).code, 0);
    let up = health(&db, now(), &[("SHELLY_HOST", &host)]);
    assert_eq!(up.code, 0, "{}", up.stdout);
    let j = up.json();
    let jobs: Vec<&str> = checks(&j, "job")
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, [format!("snapshot {}", sim.device_id())]);

    // A host row left by an older version is superseded by the later success.
    db.client()
        .execute(
            "INSERT INTO job_runs (job, device_id, last_run, last_failure, last_error, runs, failures)
             VALUES ('snapshot', $1, now() - interval '1 minute', now() - interval '1 minute', 'HTTP 500', 1, 1)",
            &[&host],
        )
        .unwrap();
    let up = health(&db, now(), &[]);
    assert_eq!(up.code, 0, "{}", up.stdout);
}

#[test]
fn an_interval_cursor_in_the_future_is_an_error() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    // The device's clock runs two hours ahead.
    let t = now();
    cfg.clock = Some(t + 2 * 3600);
    cfg.history_days = 1;
    let sim = sim_with(cfg);
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", &sim.host()),
    ];
    // Ingest refuses the records ahead of now (exit 1) and keeps the
    // cursor within the plausible window; a cursor in the future can still
    // come from an older version or a hand edit, and health must say so.
    let out = shellyctl(&["ingest-intervals"], &env);
    assert_eq!(out.code, 1, "{}", out.stderr);
    db.client()
        .execute(
            "UPDATE ingest_cursors SET next_ts = to_timestamp($1)",
            &[&((t + 2 * 3600) as f64)],
        )
        .unwrap();

    let out = health(&db, t, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let j = out.json();
    let c = find(&j, "intervals", &format!("{} emdata:0", sim.device_id()));
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["age_s"].as_i64().unwrap() < -3600, "{c}");
    assert!(c["detail"].as_str().unwrap().contains("future"), "{c}");

    // A cursor a few seconds ahead is clock jitter, not an error.
    db.client()
        .execute(
            "UPDATE ingest_cursors SET next_ts = to_timestamp($1::bigint + 30)",
            &[&t],
        )
        .unwrap();
    let j = health(&db, t, &[]).json();
    assert_eq!(
        find(&j, "intervals", &format!("{} emdata:0", sim.device_id()))["ok"],
        true
    );
}

#[test]
fn health_lists_ingest_intervals_and_backfill_runs_per_device() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.history_days = 2;
    let sim = sim_with(cfg);
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    assert_eq!(shellyctl(&["ingest-intervals"], &env).code, 0);
    let out = shellyctl(&["backfill", "--yesterday", "--tz", "UTC"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = health(&db, now(), &[]);
    let j = out.json();
    for job in ["ingest-intervals", "backfill"] {
        let c = find(&j, "job", &format!("{job} {}", sim.device_id()));
        assert_eq!(c["ok"], true, "{c}");
        assert!(c["detail"].is_null(), "{c}");
    }
    assert_eq!(out.code, 0, "{}", out.stdout);

    // A device that cannot be reached shows as a failing row of each job.
    let dead = format!("127.0.0.1:{}", dead_port());
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", dead.as_str()),
        ("SHELLY_RETRIES", "0"),
    ];
    assert_eq!(shellyctl(&["ingest-intervals"], &env).code, 75);
    assert_eq!(
        shellyctl(&["backfill", "--yesterday", "--tz", "UTC"], &env).code,
        75
    );
    let j = health(&db, now(), &[]).json();
    for job in ["ingest-intervals", "backfill"] {
        let c = find(&j, "job", &format!("{job} {dead}"));
        assert_eq!(c["ok"], false, "{c}");
        assert!(c["detail"].as_str().unwrap().starts_with("failing:"), "{c}");
    }
}

/// Each device's newest row, wherever it is kept: health reads the day's
/// months straight from their partitions when each is attached, and the
/// table itself otherwise, so a detached month or rows in the default
/// partition neither hide nor invent a reading.
#[test]
fn the_newest_row_is_found_in_whichever_partition_holds_it() {
    let db = TestDb::migrated();
    let mut c = db.client();
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp();
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES
           ('shellypro3em-00000000000a'), ('shellypro3em-00000000000b'),
           ('shellypro3em-00000000000c'), ('shellypro3em-00000000000d'),
           ('shellypro3em-00000000000e');
         SELECT shellyctl_ensure_partitions('power_readings', '2025-06-01', '2026-12-31');
         INSERT INTO power_readings (ts, device_id, total_power_w) VALUES
           ('2026-11-30T23:50:00Z', 'shellypro3em-00000000000a', 1),  -- a day's look, November
           ('2026-12-01T00:01:00Z', 'shellypro3em-00000000000b', 1),  -- a day's look, December
           ('2026-11-20T08:00:00Z', 'shellypro3em-00000000000c', 1),  -- five weeks' look
           ('2025-06-02T00:00:00Z', 'shellypro3em-00000000000d', 1),  -- all of the past
           ('2026-11-30T22:00:00Z', 'shellypro3em-00000000000e', 1),
           ('2026-12-01T02:00:00Z', 'shellypro3em-00000000000e', 1);  -- after now: no clock wrote it",
    )
    .unwrap();
    let last = |now: i64, device: &str| {
        let out = health(&db, now, &[]);
        let j = out.json();
        let c = find(&j, "device", device);
        c["last"]
            .as_str()
            .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    };
    // December 1, 00:02: the day's look spans November and December.
    let now = t("2026-12-01T00:02:00Z");
    assert_eq!(
        last(now, "shellypro3em-00000000000a"),
        Some(t("2026-11-30T23:50:00Z"))
    );
    assert_eq!(
        last(now, "shellypro3em-00000000000b"),
        Some(t("2026-12-01T00:01:00Z"))
    );
    assert_eq!(
        last(now, "shellypro3em-00000000000c"),
        Some(t("2026-11-20T08:00:00Z"))
    );
    assert_eq!(
        last(now, "shellypro3em-00000000000d"),
        Some(t("2025-06-02T00:00:00Z"))
    );
    assert_eq!(
        last(now, "shellypro3em-00000000000e"),
        Some(t("2026-11-30T22:00:00Z"))
    );

    // November detached (its rows are no longer readings) and a newer row
    // for `a` in the default partition, where a month without a partition
    // puts it: the day's look reads the table, never the detached month.
    c.batch_execute(
        "ALTER TABLE power_readings DETACH PARTITION power_readings_p202611;
         INSERT INTO power_readings (ts, device_id, total_power_w) VALUES
           ('2026-11-30T23:55:00Z', 'shellypro3em-00000000000a', 1);
         INSERT INTO power_readings_p202611 (ts, device_id, total_power_w) VALUES
           ('2026-11-30T23:59:00Z', 'shellypro3em-00000000000c', 1);",
    )
    .unwrap();
    let in_default: i64 = c
        .query_one("SELECT count(*) FROM power_readings_default", &[])
        .unwrap()
        .get(0);
    assert_eq!(in_default, 1);
    assert_eq!(
        last(now, "shellypro3em-00000000000a"),
        Some(t("2026-11-30T23:55:00Z"))
    );
    assert_eq!(last(now, "shellypro3em-00000000000c"), None);
    assert_eq!(
        last(now, "shellypro3em-00000000000b"),
        Some(t("2026-12-01T00:01:00Z"))
    );

    // A partition a user attached for the end of November (named like a
    // month, but not one of ours) is read too: the day's look would
    // otherwise find `d`'s older row in the default partition.
    c.batch_execute(
        "CREATE TABLE power_readings_user_p202611 (LIKE power_readings INCLUDING CONSTRAINTS INCLUDING DEFAULTS);
         ALTER TABLE power_readings ATTACH PARTITION power_readings_user_p202611
               FOR VALUES FROM ('2026-11-30T23:56:00Z') TO ('2026-12-01T00:00:00Z');
         INSERT INTO power_readings (ts, device_id, total_power_w) VALUES
           ('2026-11-30T23:50:00Z', 'shellypro3em-00000000000d', 1),  -- the default partition
           ('2026-11-30T23:58:00Z', 'shellypro3em-00000000000d', 1);  -- the user's",
    )
    .unwrap();
    assert_eq!(
        last(now, "shellypro3em-00000000000d"),
        Some(t("2026-11-30T23:58:00Z"))
    );
    assert_eq!(
        last(now, "shellypro3em-00000000000a"),
        Some(t("2026-11-30T23:55:00Z"))
    );
}

#[test]
fn a_database_that_never_saw_a_device_with_none_configured_is_unhealthy() {
    let db = TestDb::migrated();
    let env = [("DATABASE_URL", db.url.as_str())];
    let run = shellyctl(&["health", "--format", "json"], &env);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let checks = report["checks"].as_array().unwrap();
    let collection: Vec<_> = checks
        .iter()
        .filter(|c| c["check"] == "collection")
        .collect();
    assert_eq!(collection.len(), 1, "{report}");
    assert_eq!(collection[0]["ok"], false);
    assert!(collection[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("nothing is being collected: no device is configured (SHELLY_HOST)"));
    let table = shellyctl(&["health"], &env);
    assert_eq!(table.code, 1);
    assert!(
        table.stdout.contains("nothing is being collected"),
        "{}",
        table.stdout
    );

    // Once a device was seen, that check is gone: the others judge it (one
    // that never delivered anything is still unhealthy).
    db.client()
        .execute("INSERT INTO devices (device_id) VALUES ('meter-1')", &[])
        .unwrap();
    let run = shellyctl(&["health", "--format", "json"], &env);
    assert!(
        !run.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "collection"),
        "{}",
        run.stdout
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
}

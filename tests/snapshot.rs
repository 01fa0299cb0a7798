mod common;
use common::*;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn snapshot(db: &TestDb, hosts: &[&str], extra: &[(&str, &str)]) -> Run {
    let joined = hosts.join(",");
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", joined.as_str()),
    ];
    env.extend_from_slice(extra);
    shellyctl(&["snapshot", "--format", "json"], &env)
}

#[test]
fn a_3em63_gen3_triphase_snapshot_stores_exact_values() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["devices"][0]["device_id"], "shelly3em63g3-e4b063a1b2c3");
    assert_eq!(j["devices"][0]["written"]["power_readings"], 1);

    let row = db
        .client()
        .query_one(
            "SELECT device_id, total_power_w, phase_a_power_w, phase_b_power_w, phase_c_power_w,
                phase_a_voltage_v, phase_c_voltage_v, phase_b_current_a, neutral_current_a,
                total_current_a, phase_c_pf, meter, source, device_ts IS NOT NULL
           FROM power_readings",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), sim.device_id());
    assert_eq!(row.get::<_, Decimal>(1), dec("558.965"));
    assert_eq!(row.get::<_, Decimal>(2), dec("375.5"));
    assert_eq!(row.get::<_, Decimal>(3), dec("170.8"));
    assert_eq!(row.get::<_, Decimal>(4), dec("12.7"));
    assert_eq!(row.get::<_, Decimal>(5), dec("229"));
    assert_eq!(row.get::<_, Decimal>(6), dec("229.2"));
    assert_eq!(row.get::<_, Decimal>(7), dec("1.037"));
    assert_eq!(
        row.get::<_, Option<Decimal>>(8),
        None,
        "n_current null stays NULL"
    );
    assert_eq!(row.get::<_, Decimal>(9), dec("3.856"));
    assert_eq!(row.get::<_, Decimal>(10), dec("0.53"));
    assert_eq!(row.get::<_, String>(11), "em:0");
    assert_eq!(row.get::<_, String>(12), "poll");
    assert!(row.get::<_, bool>(13));

    let dev = db.client().query_one(
        "SELECT model, gen, profile, fw_version, auth_enabled, host, last_seen IS NOT NULL FROM devices", &[]).unwrap();
    assert_eq!(dev.get::<_, String>(0), "S3EM-003CXCEU63");
    assert_eq!(dev.get::<_, i32>(1), 3);
    assert_eq!(dev.get::<_, String>(2), "triphase");
    assert_eq!(dev.get::<_, String>(3), "1.7.1");
    assert!(!dev.get::<_, bool>(4));
    assert_eq!(dev.get::<_, String>(5), sim.host());
    assert!(dev.get::<_, bool>(6));
}

#[test]
fn monophase_channels_are_stored_as_phases_a_b_c() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.profile = Profile::Monophase;
    let sim = sim_with(cfg);
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = db
        .client()
        .query_one(
            "SELECT meter, total_power_w, phase_a_power_w, phase_b_power_w, phase_c_power_w,
                phase_a_current_a, total_current_a, neutral_current_a FROM power_readings",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "em1");
    // Independent circuits: no device total, each channel on its own.
    assert_eq!(row.get::<_, Option<Decimal>>(1), None);
    assert_eq!(row.get::<_, Decimal>(2), dec("375.5"));
    assert_eq!(row.get::<_, Decimal>(3), dec("170.8"));
    assert_eq!(row.get::<_, Decimal>(4), dec("12.7"));
    assert_eq!(row.get::<_, Decimal>(5), dec("2.392"));
    assert_eq!(row.get::<_, Option<Decimal>>(6), None);
    assert_eq!(row.get::<_, Option<Decimal>>(7), None);
    let profile: String = db
        .client()
        .query_one("SELECT profile FROM devices", &[])
        .unwrap()
        .get(0);
    assert_eq!(profile, "monophase");
}

#[test]
fn a_pro4pm_snapshot_stores_one_row_per_switch_channel() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Pro4Pm);
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["devices"][0]["written"]["switch_readings"], 4);
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    let rows = db.client().query(
        "SELECT channel, output, apower_w, current_a, pf, energy_total_wh, voltage_v, temperature_c,
                returned_energy_total_wh
           FROM switch_readings ORDER BY channel", &[]).unwrap();
    assert_eq!(rows.len(), 4);
    let expect = [
        (0, true, "120.5", "0.602", "0.87", "10530.422"),
        (1, false, "0", "0", "0", "12.5"),
        (2, true, "1830.2", "7.961", "1", "98231.004"),
        (3, true, "7.3", "0.061", "0.52", "1402.75"),
    ];
    for (row, (ch, on, p, i, pf, e)) in rows.iter().zip(expect) {
        assert_eq!(row.get::<_, i32>(0), ch);
        assert_eq!(row.get::<_, bool>(1), on);
        assert_eq!(row.get::<_, Decimal>(2), dec(p));
        assert_eq!(row.get::<_, Decimal>(3), dec(i));
        assert_eq!(row.get::<_, Decimal>(4), dec(pf));
        assert_eq!(row.get::<_, Decimal>(5), dec(e));
        assert_eq!(row.get::<_, Decimal>(6), dec("230.4"));
        assert_eq!(row.get::<_, Decimal>(7), dec("41.3"));
        assert_eq!(row.get::<_, Decimal>(8), dec("0"));
    }
}

#[test]
fn the_pro3em_simulator_serves_the_real_fixture_values() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Pro3Em);
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "fixtures/shelly/pro3em-shelly-getstatus-triphase.json"
    ))
    .unwrap();
    assert_eq!(sim.status()["em:0"], fixture["em:0"]);
    assert_eq!(sim.status()["emdata:0"], fixture["emdata:0"]);
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (model, gen): (String, i32) = {
        let r = db
            .client()
            .query_one("SELECT model, gen FROM devices", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((model.as_str(), gen), ("SPEM-003CEBEU", 2));
    let total: Decimal = db
        .client()
        .query_one("SELECT total_power_w FROM power_readings", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, dec("558.965"));
}

#[test]
fn one_dead_device_does_not_stop_the_others_and_the_exit_code_says_so() {
    let db = TestDb::migrated();
    let a = sim(DeviceKind::Em3Gen3);
    let b = sim(DeviceKind::Pro4Pm);
    let dead = format!("127.0.0.1:{}", dead_port());
    let started = Instant::now();
    let out = snapshot(
        &db,
        &[&a.host(), &dead, &b.host()],
        &[("SHELLY_RETRIES", "0")],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
    let j = out.json();
    assert_eq!(j["devices"][0]["ok"], true);
    assert_eq!(j["devices"][1]["ok"], false);
    assert_eq!(j["devices"][2]["ok"], true);
    assert!(j["devices"][1]["error"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 1);
    assert_eq!(db.count("SELECT count(*) FROM switch_readings"), 4);
    let failed = out.log_events("device_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["host"], dead.as_str());
}

#[test]
fn dry_run_reads_devices_without_a_database() {
    let sim = sim(DeviceKind::Em3Gen3);
    let out = shellyctl(
        &[
            "snapshot",
            "--dry-run",
            "--format",
            "json",
            "--host",
            &sim.host(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json()["devices"][0];
    assert_eq!(d["status"]["meter"]["total_power_w"], "558.965");
    assert_eq!(d["status"]["meter"]["phases"][0]["power_w"], "375.5");
    assert!(d["status"]["meter"]["neutral_current_a"].is_null());
    assert!(d.get("written").is_none());
}

#[test]
fn table_output_shows_the_powers() {
    let sim = sim(DeviceKind::Em3Gen3);
    let out = shellyctl(
        &[
            "snapshot",
            "--dry-run",
            "--format",
            "table",
            "--host",
            &sim.host(),
        ],
        &[],
    );
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("558.965") && out.stdout.contains("375.5"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_job_whose_stdout_is_not_a_terminal_prints_one_summary_line() {
    let sim = sim(DeviceKind::Em3Gen3);
    let dead = format!("127.0.0.1:{}", dead_port());
    let out = shellyctl(
        &[
            "snapshot",
            "--dry-run",
            "--host",
            &sim.host(),
            "--host",
            &dead,
        ],
        &[("SHELLY_TIMEOUT_MS", "500")],
    );
    assert_eq!(
        out.stdout, "devices=2 devices_failed=1 dry_run=true\n",
        "{}",
        out.stderr
    );
}

#[test]
fn an_asked_for_format_wins_over_the_summary_of_a_job() {
    let sim = sim(DeviceKind::Em3Gen3);
    let args = ["snapshot", "--dry-run", "--host", &sim.host()];
    let from_env = shellyctl(&args, &[("SHELLYCTL_FORMAT", "table")]);
    assert!(from_env.stdout.contains("558.965"), "{}", from_env.stdout);
    let from_flag = shellyctl(&[&args[..], &["--format", "json"]].concat(), &[]);
    assert_eq!(from_flag.json()["devices"][0]["ok"], true);
}

#[test]
fn missing_host_is_a_usage_error() {
    let out = shellyctl(&["snapshot"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--host"), "{}", out.stderr);
}

fn auth_sim(password: &str) -> Simulator {
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.password = Some(password.into());
    sim_with(cfg)
}

#[test]
fn digest_auth_succeeds_and_reuses_the_nonce_across_runs() {
    let db = TestDb::migrated();
    let sim = auth_sim("correct horse");
    let state = TempDir::new("state");
    for _ in 0..5 {
        let out = snapshot(
            &db,
            &[&sim.host()],
            &[
                ("SHELLY_PASSWORD", "correct horse"),
                ("SHELLYCTL_STATE_DIR", state.path()),
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 5);
    let auth_enabled: bool = db
        .client()
        .query_one("SELECT auth_enabled FROM devices", &[])
        .unwrap()
        .get(0);
    assert!(auth_enabled);
    // One challenge for the first run; the other four reused its nonce with nc 2..5.
    assert_eq!(sim.stats().challenges.load(Ordering::SeqCst), 1);
    assert_eq!(sim.stats().auth_refusals.load(Ordering::SeqCst), 0);
    // 5 × (/shelly + GetStatus) + the one 401.
    assert_eq!(sim.stats().requests.load(Ordering::SeqCst), 11);
}

#[test]
fn a_stale_nonce_is_rechallenged_transparently() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.password = Some("pw".into());
    cfg.nonce_ttl = Duration::from_millis(400);
    let sim = sim_with(cfg);
    let state = TempDir::new("stale");
    let env = [
        ("SHELLY_PASSWORD", "pw"),
        ("SHELLYCTL_STATE_DIR", state.path()),
    ];
    assert_eq!(snapshot(&db, &[&sim.host()], &env).code, 0);
    std::thread::sleep(Duration::from_millis(700));
    let out = snapshot(&db, &[&sim.host()], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sim.stats().challenges.load(Ordering::SeqCst), 2);
    assert_eq!(
        sim.stats().auth_refusals.load(Ordering::SeqCst),
        1,
        "the stale nonce"
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 2);
}

#[test]
fn a_wrong_password_is_an_auth_error_that_never_shows_the_password() {
    let db = TestDb::migrated();
    let sim = auth_sim("right-one");
    let out = snapshot(&db, &[&sim.host()], &[("SHELLY_PASSWORD", "Wr0ngPassw0rd")]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let failed = out.log_events("device_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["error"],
        format!("reading Shelly.GetStatus from {}: authentication failed: the device rejected the password (check SHELLY_PASSWORD)", sim.host())
    );
    assert!(!out.stderr.contains("Wr0ngPassw0rd") && !out.stdout.contains("Wr0ngPassw0rd"));
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
}

#[test]
fn the_password_can_come_from_a_file() {
    let db = TestDb::migrated();
    let sim = auth_sim("from-file");
    let dir = TempDir::new("pwfile");
    let f = dir.0.join("pw");
    std::fs::write(&f, "from-file\n").unwrap();
    let out = snapshot(
        &db,
        &[&sim.host()],
        &[("SHELLY_PASSWORD_FILE", f.to_str().unwrap())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_device_with_auth_and_no_password_configured_is_a_configuration_error() {
    let db = TestDb::migrated();
    let sim = auth_sim("x");
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("the device requires a password; set SHELLY_PASSWORD"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_a_nonce_cache_a_firmware_2_device_runs_out_of_nonce_slots() {
    // Why the nonce cache exists: every fresh challenge takes a slot for an
    // hour. With 2 slots, the third cache-less run is throttled (429).
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.password = Some("pw".into());
    cfg.nonce_slots = 2;
    let sim = sim_with(cfg);
    let no_cache = [("SHELLY_PASSWORD", "pw"), ("SHELLY_RETRIES", "0")];
    assert_eq!(snapshot(&db, &[&sim.host()], &no_cache).code, 0);
    assert_eq!(snapshot(&db, &[&sim.host()], &no_cache).code, 0);
    let out = snapshot(&db, &[&sim.host()], &no_cache);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 429"), "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 2);
}

fn assert_fails_cleanly(fault: Fault, code: i32, message: &str, extra: &[(&str, &str)]) {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    sim.set_sticky_fault(Some(fault));
    let mut env = vec![("SHELLY_TIMEOUT_MS", "300"), ("SHELLY_RETRIES", "1")];
    env.extend_from_slice(extra);
    let started = Instant::now();
    let out = snapshot(&db, &[&sim.host()], &env);
    assert_eq!(out.code, code, "{fault:?}: {}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{fault:?} took {:?}",
        started.elapsed()
    );
    let failed = out.log_events("device_failed");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.contains(message), "{fault:?}: {err}");
    assert!(!err.contains('\n'));
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    assert_eq!(db.count("SELECT count(*) FROM devices"), 0);
}

#[test]
fn a_timeout_is_a_temporary_failure() {
    assert_fails_cleanly(Fault::Hang, 75, "timed out after 300ms", &[]);
}

#[test]
fn http_500_is_a_temporary_failure() {
    assert_fails_cleanly(Fault::Status500, 75, "device answered HTTP 500", &[]);
}

#[test]
fn http_429_is_a_temporary_failure() {
    assert_fails_cleanly(Fault::Throttle429, 75, "throttling requests (HTTP 429", &[]);
}

#[test]
fn malformed_json_is_a_failure() {
    assert_fails_cleanly(
        Fault::Malformed,
        1,
        "malformed answer: EOF while parsing",
        &[],
    );
}

#[test]
fn a_dropped_connection_is_a_temporary_failure() {
    assert_fails_cleanly(Fault::Drop, 75, "cannot connect", &[]);
}

#[test]
fn a_malformed_status_writes_nothing() {
    // /shelly answers normally; Shelly.GetStatus is cut short.
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    sim.script_faults([None]);
    sim.set_sticky_fault(Some(Fault::Malformed));
    let out = snapshot(&db, &[&sim.host()], &[("SHELLY_RETRIES", "0")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("reading Shelly.GetStatus from"),
        "{}",
        out.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    assert_eq!(db.count("SELECT count(*) FROM devices"), 0);
}

#[test]
fn a_transient_error_is_retried_and_the_reading_stored() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    sim.script_faults([Some(Fault::Status500), None, Some(Fault::Drop)]);
    let out = snapshot(&db, &[&sim.host()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.log_events("device_retry").len(), 2);
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 1);
}

#[test]
fn a_down_database_is_a_temporary_failure() {
    let sim = sim(DeviceKind::Em3Gen3);
    let url = format!("postgres://postgres@127.0.0.1:{}/x", dead_port());
    let out = shellyctl(
        &["snapshot", "--host", &sim.host()],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(out.code, 75);
    assert!(
        out.stderr.contains("error: connecting to PostgreSQL"),
        "{}",
        out.stderr
    );
}

#[test]
fn each_reading_is_added_to_its_minute_aggregate_as_it_is_written() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    for _ in 0..4 {
        let out = snapshot(&db, &[&sim.host()], &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 4);
    // Every reading is counted once, in its minute (db::minutes).
    assert_eq!(
        db.count("SELECT sum(readings)::bigint FROM power_readings_1m"),
        4
    );
    // min, sum, count and max of every column equal the raw rows'.
    let check = shellyctl(
        &["minutes", "check", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert_eq!(check.json()["mismatches"], 0);
    // A reading written again (a replay) is not counted twice.
    let mut c = db.client();
    let again = c
        .execute(
            &format!(
                "WITH ins AS (INSERT INTO power_readings SELECT * FROM power_readings LIMIT 1
                              ON CONFLICT (device_id, ts) DO NOTHING RETURNING *) {}",
                shellyctl::db::minutes::insert_sql("ins")
            ),
            &[],
        )
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(
        db.count("SELECT sum(readings)::bigint FROM power_readings_1m"),
        4
    );
}

//! Spool when the database is down, and per-device locks.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn readings_taken_while_the_database_is_down_are_spooled_then_replayed_once() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Pro4Pm);
    let spool = TempDir::new("spool");
    let down = format!("postgres://postgres@127.0.0.1:{}/x", dead_port());
    let host = sim.host();
    let run = |url: &str| {
        shellyctl(
            &["snapshot", "--format", "json"],
            &[
                ("DATABASE_URL", url),
                ("SHELLY_HOST", &host),
                ("SHELLYCTL_SPOOL_DIR", spool.path()),
            ],
        )
    };

    for _ in 0..3 {
        let out = run(&down);
        assert_eq!(out.code, 75, "{}", out.stderr);
        assert_eq!(out.log_events("readings_spooled").len(), 1);
    }
    let files: Vec<_> = std::fs::read_dir(&spool.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3);
    let copy = std::fs::read_to_string(&files[0]).unwrap();

    // The database is back: the three spooled snapshots and this one arrive.
    let out = run(&db.url);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.log_events("spool_replayed")[0]["readings"], 3);
    assert_eq!(db.count("SELECT count(*) FROM switch_readings"), 4 * 4);
    assert_eq!(
        db.count("SELECT count(DISTINCT ts) FROM switch_readings"),
        4
    );
    assert_eq!(std::fs::read_dir(&spool.0).unwrap().count(), 0);

    // A file replayed a second time (e.g. a crash before it was removed) adds nothing.
    std::fs::write(spool.0.join("0000000001-000000000-1.jsonl"), &copy).unwrap();
    assert_eq!(run(&db.url).code, 0);
    assert_eq!(db.count("SELECT count(*) FROM switch_readings"), 5 * 4);
    assert_eq!(
        db.count("SELECT count(DISTINCT ts) FROM switch_readings"),
        5,
        "only the new snapshot added rows"
    );
}

#[test]
fn a_corrupt_spool_file_is_quarantined_not_fatal() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let spool = TempDir::new("spool-bad");
    std::fs::write(
        spool.0.join("0000000001-000000000-1.jsonl"),
        "{\"ts\": \"not a reading\"\n",
    )
    .unwrap();
    let out = shellyctl(
        &["snapshot"],
        &[
            ("DATABASE_URL", &db.url),
            ("SHELLY_HOST", &sim.host()),
            ("SHELLYCTL_SPOOL_DIR", spool.path()),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The unreadable entry alone, with why, beside the others' fate.
    let q = out.log_events("spool_entry_quarantined");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["line"], 1);
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not a spool entry:"),
        "{}",
        q[0]
    );
    let q = spool.0.join("quarantine");
    assert!(q.join("0000000001-000000000-1.line1.jsonl").exists());
    let reason = std::fs::read_to_string(q.join("0000000001-000000000-1.line1.reason")).unwrap();
    assert!(reason.starts_with("not a spool entry:"), "{reason}");
    assert!(!spool.0.join("0000000001-000000000-1.jsonl").exists());
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 1);
}

#[test]
fn without_a_spool_directory_a_down_database_is_still_a_clear_temporary_failure() {
    let sim = sim(DeviceKind::Em3Gen3);
    let down = format!("postgres://postgres@127.0.0.1:{}/x", dead_port());
    let out = shellyctl(
        &["snapshot"],
        &[("DATABASE_URL", &down), ("SHELLY_HOST", &sim.host())],
    );
    assert_eq!(out.code, 75);
    assert!(
        out.stderr.contains("error: connecting to PostgreSQL"),
        "{}",
        out.stderr
    );
}

fn hold_lock(db: &TestDb, name: &str) -> postgres::Client {
    let mut c = db.client();
    c.execute(
        "SELECT pg_advisory_lock($1)",
        &[&shellyctl::db::lock_key(name)],
    )
    .unwrap();
    c
}

#[test]
fn an_ingest_that_finds_the_device_busy_exits_0_and_a_backfill_waits() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(1_790_000_040);
    cfg.history_days = 1;
    let sim = sim_with(cfg);
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    let holder = hold_lock(&db, &format!("intervals/{}", sim.device_id()));
    let out = shellyctl(&["ingest-intervals", "--format", "json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["devices"][0]["skipped"], true);
    assert_eq!(out.log_events("device_busy").len(), 1);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 0);

    // A backfill waits for the lock (released after a second here).
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(holder);
    });
    let start = Instant::now();
    let out = shellyctl(
        &[
            "backfill",
            "--day",
            "2026-09-21",
            "--tz",
            "UTC",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(
        out.json()["devices"][0]["components"][0]["records_inserted"]
            .as_u64()
            .unwrap()
            > 0
    );
    release.join().unwrap();

    // A backfill that cannot get the lock in time skips with a log line.
    let _again = hold_lock(&db, &format!("intervals/{}", sim.device_id()));
    let out = shellyctl(
        &[
            "backfill",
            "--day",
            "2026-09-21",
            "--tz",
            "UTC",
            "--lock-wait",
            "300ms",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(out.code, 0);
    assert_eq!(out.json()["devices"][0]["skipped"], true);
}

#[test]
fn a_snapshot_leaves_a_device_another_run_is_storing() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let _holder = hold_lock(&db, &format!("snapshot/{}", sim.device_id()));
    let out = shellyctl(
        &["snapshot"],
        &[("DATABASE_URL", &db.url), ("SHELLY_HOST", &sim.host())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.log_events("device_busy").len(), 1);
    assert!(
        out.log_events("device_failed").is_empty(),
        "a skip is not a failure"
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
}

#[test]
fn secrets_never_appear_in_logs_output_or_arguments() {
    // Every secret comes from the environment, a file or a credential:
    // no option takes one, so none can show in `ps`.
    for cmd in [
        "snapshot",
        "ingest-intervals",
        "backfill",
        "evaluate-alerts",
        "notify",
        "listen",
        "report",
        "tariff",
        "health",
        "retention",
        "migrate",
    ] {
        let help = shellyctl(&[cmd, "--help"], &[]).stdout.to_lowercase();
        for word in ["--password", "--token", "--secret"] {
            assert!(!help.contains(word), "{cmd} has an option {word}");
        }
    }
    // A run at debug level against a device with auth logs nothing secret.
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.password = Some("Pa55-w0rd-XYZ".into());
    let sim = sim_with(cfg);
    let state = TempDir::new("secret-state");
    let pw_url = db.url.replacen("postgres@", "postgres:Db-Secret-123@", 1);
    let env = [
        ("DATABASE_URL", pw_url.as_str()),
        ("SHELLY_HOST", &sim.host()),
        ("SHELLY_PASSWORD", "Pa55-w0rd-XYZ"),
        ("SHELLYCTL_LOG", "debug"),
        ("SHELLYCTL_STATE_DIR", state.path()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, *v)).collect();
    for args in [
        vec!["snapshot", "--format", "json"],
        vec!["ingest-intervals"],
        vec!["snapshot", "--log-format", "text"],
    ] {
        let out = shellyctl(&args, &env);
        for secret in ["Pa55-w0rd-XYZ", "Db-Secret-123"] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{args:?} printed a secret"
            );
        }
    }
    // The nonce cache holds no password either.
    for e in std::fs::read_dir(&state.0).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        assert!(!text.contains("Pa55-w0rd-XYZ"));
    }
}

#[test]
fn a_database_connection_killed_while_waiting_for_a_slow_device_spools_the_reading() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    sim.set_sticky_fault(Some(Fault::Latency(Duration::from_millis(1500))));
    let spool = TempDir::new("spool-lost");
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLYCTL_SPOOL_DIR", spool.path()),
    ];
    // Only a connection opened after the spawn is the snapshot's: the
    // migration's backend may still be closing (killing it instead let the
    // snapshot store its reading on a loaded machine).
    let mut admin = db.client();
    let t0: std::time::SystemTime = admin
        .query_one("SELECT clock_timestamp()", &[])
        .unwrap()
        .get(0);
    let child = spawn(&["snapshot", "--timeout-ms", "5000"], &env);
    // Wait until the snapshot is connected, then cut its connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    let killed = loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND backend_start >= $1",
                &[&t0],
            )
            .unwrap()
            .get(0);
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(killed > 0, "the snapshot never connected");
    let out = child.wait_with_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("database_lost"), "{stderr}");
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    assert_eq!(std::fs::read_dir(&spool.0).unwrap().count(), 1);

    // The next run replays it: nothing was lost.
    sim.set_sticky_fault(None);
    let again = shellyctl(&["snapshot"], &env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 2);
}

#[test]
fn a_frozen_database_before_or_during_a_snapshot_spools_the_reading_and_exits_75_in_time() {
    use common::proxy::{upstream_of, Mode, Proxy};
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let spool = TempDir::new("spool-frozen");
    let host = sim.host();
    let proxy = Proxy::start(&upstream_of(&db.url), Mode::Freeze);
    let via = proxy.url(&db.url);
    let env = [
        ("DATABASE_URL", via.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLYCTL_SPOOL_DIR", spool.path()),
        ("DATABASE_TIMEOUT", "2s"),
    ];
    // Frozen before the run: the connection is given up after 2 s (TCP is
    // up, the server never answers), the reading spooled.
    let start = Instant::now();
    let out = shellyctl(&["snapshot"], &env);
    let took = start.elapsed();
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(out.stderr.contains("no answer within 2s"), "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&spool.0).unwrap().count(), 1);

    // Frozen while the run waits for a slow device: the store misses its
    // deadline; this run's readings (the spooled one replayed at the start
    // included) are in the spool, exit 75.
    proxy.set(Mode::Forward);
    sim.set_sticky_fault(Some(Fault::Latency(Duration::from_millis(1500))));
    let child = spawn(&["snapshot", "--timeout-ms", "5000"], &env);
    std::thread::sleep(Duration::from_millis(800));
    proxy.set(Mode::Freeze);
    let start = Instant::now();
    let out = child.wait_with_output();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(stderr.contains("database_deadline"), "{stderr}");
    // The database is back: the next run replays everything, once.
    drop(proxy);
    sim.set_sticky_fault(None);
    let again = shellyctl(
        &["snapshot"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", host.as_str()),
            ("SHELLYCTL_SPOOL_DIR", spool.path()),
        ],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        db.count("SELECT count(DISTINCT ts) FROM power_readings"),
        3,
        "three runs, three readings"
    );
    assert_eq!(
        std::fs::read_dir(&spool.0)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count(),
        0
    );
    // A row of scripts/adversarial's table.
    println!("attack\tdatabase frozen before and during a snapshot\tspooled, exit 75 within the deadline, replayed once");
}

#[test]
fn a_database_frozen_during_ingest_intervals_ends_the_run_with_75_and_loses_nothing() {
    use common::proxy::{upstream_of, Mode, Proxy};
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(1_790_000_000);
    cfg.history_days = 2;
    cfg.page_size = 50;
    let sim = sim_with(cfg);
    let host = sim.host();
    let proxy = Proxy::start(&upstream_of(&db.url), Mode::Forward);
    let via = proxy.url(&db.url);
    let env = [
        ("DATABASE_URL", via.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("DATABASE_TIMEOUT", "1s"),
    ];
    // Each page takes the device 400 ms; the database freezes after the
    // first pages are stored.
    sim.set_sticky_fault(Some(Fault::Latency(Duration::from_millis(400))));
    let child = spawn(&["ingest-intervals", "--timeout-ms", "5000"], &env);
    // Freeze once some pages are committed (however busy the machine is).
    let waiting = Instant::now();
    while db.count("SELECT count(*) FROM energy_intervals") == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "no page stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.set(Mode::Freeze);
    let frozen = Instant::now();
    let out = child.wait_with_output();
    let took = frozen.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    // The page deadline is 6 x DATABASE_TIMEOUT = 6 s (plus a page's fetch).
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(stderr.contains("database_deadline"), "{stderr}");
    assert!(stderr.contains("storing a page of intervals"), "{stderr}");
    // The frozen connection goes with the proxy (its transaction rolled
    // back); the next run continues from the last committed page.
    drop(proxy);
    let stored = db.count("SELECT count(*) FROM energy_intervals");
    assert!(stored > 0, "some pages were committed before the freeze");
    sim.set_sticky_fault(None);
    let again = shellyctl(
        &["ingest-intervals"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", host.as_str()),
        ],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    let records = sim.history().records(0, None, sim.now(), usize::MAX).len() as i64;
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'A'"),
        records,
        "every record once"
    );
    let check = shellyctl(
        &["slots", "check", "--format", "json"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert_eq!(check.json()["mismatches"], 0, "{}", check.stdout);
    println!("attack\tdatabase frozen during ingest-intervals\texit 75 within the page deadline, cursor at the last committed page, re-run exact");
}

#[test]
fn retention_waiting_without_end_on_the_database_exits_75_at_its_step_deadline() {
    // A lock held without end (or a frozen server) on a table retention
    // must write: the step gives up after RETENTION_STEP_DEADLINE with
    // exit 75 and a database_deadline line, instead of waiting for the
    // unit's two-hour timeout.
    let db = TestDb::migrated();
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE power_readings_1m IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let start = Instant::now();
    let out = shellyctl(
        &["retention"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("RETENTION_STEP_DEADLINE", "2s"),
        ],
    );
    let took = start.elapsed();
    tx.rollback().unwrap();
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(out.stderr.contains("database_deadline"), "{}", out.stderr);
    assert!(out.stderr.contains("retention: "), "{}", out.stderr);
    // With the lock gone, the next run does its work.
    let again = shellyctl(&["retention"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

//! Monthly partitions: converting a populated database in place (also
//! after an interrupted `migrate`), partitions made ahead of time and on
//! demand, retention dropping whole months with exact aggregates, and the
//! 15-minute slots equal to the records across partition boundaries.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// 2026-10-01T06:00:00Z: the simulator's history crosses September/October.
const OCT_1: i64 = 1_790_834_400;

/// A database as an older shellyctl (schema version 9) left it.
fn at_version_9(db: &TestDb) {
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .unwrap();
    for m in shellyctl::db::migrate::embedded()
        .unwrap()
        .into_iter()
        .filter(|m| m.version <= 9)
    {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(m.sql).unwrap();
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum],
        )
        .unwrap();
        tx.commit().unwrap();
    }
}

/// Counts and exact sums of every partitioned table.
fn fingerprint(db: &TestDb) -> Vec<String> {
    let mut c = db.client();
    [
        "SELECT count(*)::text || ' ' || coalesce(sum(total_power_w), 0)::text FROM power_readings",
        "SELECT count(*)::text || ' ' || coalesce(sum(apower_w), 0)::text FROM switch_readings",
        "SELECT count(*)::text || ' ' || coalesce(sum(apower_w), 0)::text FROM power_logs",
        "SELECT count(*)::text || ' ' || coalesce(sum(energy_wh), 0)::text || ' ' || coalesce(sum(returned_energy_wh), 0)::text
                || ' ' || coalesce(sum(avg_power_w), 0)::text FROM energy_intervals",
        "SELECT count(*)::text || ' ' || coalesce(sum(import_wh), 0)::text || ' ' || coalesce(sum(export_wh), 0)::text
                || ' ' || coalesce(sum(covered), '0')::text FROM energy_slots",
    ]
    .iter()
    .map(|q| c.query_one(*q, &[]).unwrap().get(0))
    .collect()
}

fn partitioned(db: &TestDb, table: &str) -> bool {
    db.count(&format!(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = '{table}'::regclass"
    )) == 1
}

fn exists(db: &TestDb, relation: &str) -> bool {
    db.count(&format!(
        "SELECT count(*) FROM pg_class WHERE relname = '{relation}'"
    )) == 1
}

fn run(db: &TestDb, args: &[&str]) -> Run {
    shellyctl(args, &[("DATABASE_URL", &db.url)])
}

#[test]
fn a_populated_database_is_converted_in_place_and_an_interrupted_migrate_resumes() {
    let db = TestDb::empty();
    at_version_9(&db);
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1'), ('plug-1');
         -- Two months of readings every 5 minutes, and rows an old version
         -- stored with broken device clocks (1970, 2100).
         INSERT INTO power_readings (ts, device_id, total_power_w)
              SELECT t, 'meter-1', (extract(epoch FROM t)::bigint % 997) / 10.0
                FROM generate_series(timestamptz '2026-09-01', timestamptz '2026-10-31 23:55', interval '5 minutes') t;
         INSERT INTO power_readings (ts, device_id, total_power_w)
              VALUES ('1970-01-01', 'plug-1', 1.5), ('2100-01-01', 'plug-1', 2.5);
         -- A minute the old retention aggregated (it kept the average only).
         INSERT INTO power_readings_1m (device_id, minute, readings, total_power_w_min, total_power_w_avg, total_power_w_max)
              VALUES ('meter-1', '2026-08-31 23:59+00', 6, 10, 12.5, 15);
         INSERT INTO switch_readings (ts, device_id, channel, apower_w)
              SELECT t, 'plug-1', 0, 118.25 FROM generate_series(timestamptz '2026-10-01', timestamptz '2026-10-02', interval '1 minute') t;
         INSERT INTO power_logs (\"timestamp\", device_id, channel, apower_w)
              SELECT t, 'plug-1', 0, 118.25 FROM generate_series(timestamptz '2026-10-01', timestamptz '2026-10-01 12:00', interval '1 minute') t;
         -- 5-minute records crossing the September/October boundary; the old
         -- triggers fill energy_slots.
         INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
              SELECT 'meter-1', ch, t, t + interval '5 minutes', 41.6667, 0.0125, 'emdata:0'
                FROM generate_series(timestamptz '2026-09-29 00:03', timestamptz '2026-10-02', interval '5 minutes') t,
                     unnest(ARRAY['A', 'B', 'C']) ch;",
    )
    .unwrap();
    let before = fingerprint(&db);
    // 3 days × 96 slots × 3 phases, and the last record reaches into October 2.
    assert!(before[4].starts_with("867 "), "{before:?}");

    // Hold energy_intervals so `migrate` converts three tables, then waits.
    let mut blocker = db.client();
    let mut hold = blocker.transaction().unwrap();
    hold.batch_execute("LOCK TABLE energy_intervals IN ACCESS SHARE MODE")
        .unwrap();
    let mut child = ChildGuard::spawn(&mut command(&["migrate"], &[("DATABASE_URL", &db.url)]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = db.count(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'shellyctl' AND wait_event_type = 'Lock'",
        );
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "migrate never reached energy_intervals"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Interrupted: the process dies, its session goes with it.
    child.kill().unwrap();
    child.wait().unwrap();
    db.client()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'shellyctl'",
            &[],
        )
        .unwrap();
    hold.commit().unwrap();

    assert_eq!(
        db.count("SELECT max(version)::bigint FROM schema_migrations"),
        13,
        "the tools and three tables were done, one transaction each"
    );
    assert!(partitioned(&db, "power_readings") && partitioned(&db, "power_logs"));
    assert!(!partitioned(&db, "energy_intervals") && !partitioned(&db, "energy_slots"));
    assert_eq!(fingerprint(&db), before, "nothing lost or doubled half-way");

    let again = run(&db, &["migrate"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for (t, _) in shellyctl::db::partitions::TABLES {
        assert!(partitioned(&db, t), "{t} is partitioned");
    }
    assert_eq!(fingerprint(&db), before, "every row kept, sums equal");
    // The old heaps stay where they are, as one partition each; the rows
    // dated 2100 have their own month; nothing sits in a default partition.
    for t in [
        "power_readings",
        "switch_readings",
        "power_logs",
        "energy_intervals",
        "energy_slots",
    ] {
        assert!(exists(&db, &format!("{t}_history")), "{t}_history");
        assert_eq!(db.count(&format!("SELECT count(*) FROM {t}_default")), 0);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings_p210001 WHERE device_id = 'plug-1'"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings_history WHERE ts < '2000-01-01'"),
        1
    );
    // The slots the triggers kept are still exactly the records.
    let check = run(&db, &["slots", "check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    // The old aggregate keeps its average as sum and count (12.5 × 6 = 75),
    // and every raw reading kept got its minute's aggregate (0016).
    assert_eq!(
        db.count(
            "SELECT count(*) FROM power_readings_1m WHERE minute = '2026-08-31 23:59+00'
                AND total_power_w_sum = 75 AND total_power_w_n = 6 AND total_power_w_avg = 12.5
                AND total_power_w_min = 10 AND total_power_w_max = 15 AND phase_a_power_w_n = 0"
        ),
        1
    );
    let check = run(&db, &["minutes", "check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert_eq!(
        db.count("SELECT sum(readings)::bigint FROM power_readings_1m"),
        db.count("SELECT count(*) FROM power_readings") + 6
    );
    // Writing goes on: a row in the current month lands in its partition.
    c.execute(
        "INSERT INTO power_readings (ts, device_id, total_power_w) VALUES (now(), 'meter-1', 1)",
        &[],
    )
    .unwrap();
    assert_eq!(run(&db, &["migrate"]).code, 0, "re-running is a no-op");
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations"),
        shellyctl::db::migrate::embedded().unwrap().len() as i64
    );
}

fn partitions_of(db: &TestDb, table: &str) -> Vec<String> {
    db.client()
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn partitions_are_made_ahead_of_time_and_for_rows_written_by_other_tools() {
    let db = TestDb::migrated();
    // 2027-06-15: migrate (run after an upgrade, say) makes June to September.
    let out = run(&db, &["migrate", "--now", "1813017600", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["partitions_created"],
        5 * 4,
        "5 tables × 4 months"
    );
    for (t, _) in shellyctl::db::partitions::TABLES {
        let parts = partitions_of(&db, t);
        for m in ["202706", "202707", "202708", "202709"] {
            assert!(parts.contains(&format!("{t}_p{m}")), "{t}: {parts:?}");
        }
        assert!(!parts.contains(&format!("{t}_p202710")), "{t}: {parts:?}");
    }
    // Another tool inserts a month that has no partition: the row waits in
    // the default partition, and the next maintenance gives it its month.
    db.client()
        .batch_execute(
            "INSERT INTO devices (device_id) VALUES ('meter-1');
             INSERT INTO power_readings (ts, device_id, total_power_w) VALUES ('2025-03-10 12:00+00', 'meter-1', 7)",
        )
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM power_readings_default"), 1);
    // 2027-10-25: retention makes October to January 2028 and adopts March 2025.
    let out = run(
        &db,
        &[
            "retention",
            "--now",
            "1824422400",
            "--raw-days",
            "1000",
            "--aggregate-days",
            "1000",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["partitions_created"], 5 * 4 + 1);
    assert_eq!(db.count("SELECT count(*) FROM power_readings_default"), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings_p202503 WHERE total_power_w = 7"),
        1
    );
    assert!(partitions_of(&db, "energy_slots").contains(&"energy_slots_p202801".to_string()));
}

#[test]
fn retention_drops_whole_months_and_keeps_aggregates_equal_to_the_raw_rows() {
    let db = TestDb::migrated();
    let mut c = db.client();
    // June 1 to August 15, a reading every 20 s with varying values.
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1');
         INSERT INTO power_readings (ts, device_id, total_power_w, phase_a_power_w)
              SELECT t, 'meter-1', (extract(epoch FROM t)::bigint % 1009) / 4.0, (extract(epoch FROM t)::bigint % 31)
                FROM generate_series(timestamptz '2026-06-01', timestamptz '2026-08-15', interval '20 seconds') t;",
    )
    .unwrap();
    assert_eq!(run(&db, &["migrate"]).code, 0, "adopts the months");
    let parts = partitions_of(&db, "power_readings");
    for m in ["202606", "202607", "202608"] {
        assert!(parts.contains(&format!("power_readings_p{m}")), "{parts:?}");
    }
    // Another tool writes three readings straight into June's partition:
    // they have no aggregates (shellyctl's writers add them in the same
    // statement), and `minutes check` says so.
    c.batch_execute(
        "INSERT INTO power_readings (ts, device_id, total_power_w, phase_a_power_w)
         VALUES ('2026-06-10 10:00:05+00', 'meter-1', 1000, 1), ('2026-06-10 10:01:05+00', 'meter-1', 2000, 2),
                ('2026-06-20 23:59:59+00', 'meter-1', 3000, NULL)",
    )
    .unwrap();
    let check = run(&db, &["minutes", "check", "--format", "json"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert_eq!(check.json()["mismatches"], 3);
    // June 1 00:00 to August 15 00:00, every minute.
    assert_eq!(check.json()["minutes_compared"], 75 * 1440 + 1);

    // --now 2026-08-31T00:00:00Z with 25 days: the cutoff is August 6, so
    // June and July go whole; August stays whole (a month goes once all of
    // it is past the limit).
    let cutoff = "2026-08-06 00:00+00";
    c.batch_execute(&format!(
        "CREATE TABLE expected_1m AS
             SELECT device_id, date_trunc('minute', ts, 'UTC') AS minute, count(*)::integer AS readings,
                    min(total_power_w) AS mn, avg(total_power_w) AS av, max(total_power_w) AS mx,
                    min(phase_a_power_w) AS amn, avg(phase_a_power_w) AS aav, max(phase_a_power_w) AS amx
               FROM power_readings WHERE ts < '{cutoff}' GROUP BY 1, 2"
    ))
    .unwrap();
    let june = db.count("SELECT count(*) FROM power_readings_p202606");
    let july = db.count("SELECT count(*) FROM power_readings_p202607");
    assert_eq!(
        june,
        30 * 4320 + 3,
        "30 days × 4,320 readings, and the other tool's 3"
    );
    let kept = db.count(&format!(
        "SELECT count(*) FROM power_readings WHERE ts >= '{cutoff}'"
    ));
    let retention = |extra: &[&str]| {
        let mut args = vec![
            "retention",
            "--now",
            "1788134400",
            "--raw-days",
            "25",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = run(&db, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    };

    // --verify counts each month against its aggregates: June differs (the
    // other tool's rows) and is aggregated again before it goes.
    let r = retention(&["--verify"]);
    let dropped: Vec<(&str, i64, bool, u64)> = r["partitions_dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["partition"].as_str().unwrap(),
                d["rows"].as_i64().unwrap(),
                d["rows_counted"].as_bool().unwrap(),
                d["minutes_rebuilt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        dropped,
        [
            // June rebuilt whole: 30 days × 1,440 minutes.
            ("power_readings_p202606", june, true, 30 * 1440),
            ("power_readings_p202607", july, true, 0)
        ]
    );
    assert!(!exists(&db, "power_readings_p202606") && !exists(&db, "power_readings_p202607"));
    assert_eq!(r["raw_rows_deleted"], 0, "August stays whole");
    assert_eq!(r["raw_kept_from"], "2026-08-01T00:00:00Z");
    assert_eq!(r["raw_cutoff"], "2026-08-06T00:00:00Z");

    // --exact-cutoff deletes August 1-5 row by row: 5 × 4,320.
    let r = retention(&["--exact-cutoff"]);
    assert_eq!(r["partitions_dropped"].as_array().unwrap().len(), 0);
    assert_eq!(r["raw_rows_deleted"], 5 * 4320);
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings"),
        kept,
        "everything from the cutoff on is still raw"
    );
    // The aggregates are exactly the raw rows', minute by minute.
    let diff = |a: &str, b: &str| db.count(&format!("SELECT count(*) FROM ({a} EXCEPT {b}) x"));
    let agg = "SELECT device_id, minute, readings, total_power_w_min, total_power_w_avg, total_power_w_max,
                      phase_a_power_w_min, phase_a_power_w_avg, phase_a_power_w_max FROM power_readings_1m";
    let want = "SELECT * FROM expected_1m";
    let agg_before_cutoff = format!("{agg} WHERE minute < '{cutoff}'");
    assert_eq!(db.count("SELECT count(*) FROM expected_1m"), 66 * 1440);
    assert_eq!(
        (
            diff(&agg_before_cutoff, want),
            diff(want, &agg_before_cutoff)
        ),
        (0, 0)
    );
    // The minutes still raw equal their aggregates too.
    let check = run(&db, &["minutes", "check", "--format", "json"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
}

#[test]
fn retention_notices_a_month_another_tool_wrote_without_aggregates() {
    let db = TestDb::migrated();
    let mut c = db.client();
    // A bulk import straight into March's partition (it exists first, so
    // nothing waits in the default partition): no aggregates at all.
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1');
         SELECT shellyctl_ensure_partitions('power_readings', '2026-03-01', '2026-03-31');
         INSERT INTO power_readings (ts, device_id, total_power_w)
              SELECT t, 'meter-1', extract(epoch FROM t)::bigint % 613
                FROM generate_series(timestamptz '2026-03-01', timestamptz '2026-03-31 23:59:30', interval '30 seconds') t;",
    )
    .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM power_readings_1m"), 0);
    // 2026-05-15 with 30 days: March is wholly past the limit. The sample
    // finds readings without aggregates, so March is aggregated first.
    let out = run(
        &db,
        &[
            "retention",
            "--now",
            "1778803200",
            "--raw-days",
            "30",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json()["partitions_dropped"][0];
    assert_eq!(d["partition"], "power_readings_p202603");
    assert_eq!(d["rows_counted"], false);
    assert_eq!(d["minutes_rebuilt"], 31 * 1440);
    assert!(!exists(&db, "power_readings_p202603"));
    // Two readings a minute, every minute of March; sum and average exact:
    // the minute starting at t has t % 613 and (t + 30) % 613.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM power_readings_1m
              WHERE readings = 2 AND total_power_w_n = 2
                AND total_power_w_sum = extract(epoch FROM minute)::bigint % 613 + (extract(epoch FROM minute)::bigint + 30) % 613"
        ),
        31 * 1440
    );
}

fn ingest(db: &TestDb, sim: &Simulator) -> Run {
    shellyctl(
        &["ingest-intervals", "--format", "json"],
        &[("DATABASE_URL", &db.url), ("SHELLY_HOST", &sim.host())],
    )
}

fn sums_equal(db: &TestDb) {
    let (imp, exp): (bool, bool) = {
        let r = db
            .client()
            .query_one(
                "SELECT i.a = s.a, i.b = s.b
                   FROM (SELECT sum(energy_wh) a, sum(returned_energy_wh) b FROM energy_intervals) i,
                        (SELECT sum(import_wh) a, sum(export_wh) b FROM energy_slots) s",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(
        imp && exp,
        "slots sum to the records (import {imp}, export {exp})"
    );
}

#[test]
fn slots_equal_the_records_across_partition_boundaries_after_ingest_deletes_and_backfill() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(OCT_1);
    cfg.history_days = 3;
    let sim = sim_with(cfg);
    let out = ingest(&db, &sim);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A fresh database has this month's partitions and the next ones; the
    // device's September and October were made by the page writer.
    for t in ["energy_intervals", "energy_slots"] {
        let parts = partitions_of(&db, t);
        assert!(
            parts.contains(&format!("{t}_p202609")) && parts.contains(&format!("{t}_p202610")),
            "{parts:?}"
        );
        assert_eq!(db.count(&format!("SELECT count(*) FROM {t}_default")), 0);
    }
    assert!(db.count("SELECT count(*) FROM energy_intervals_p202609") > 0);
    assert!(db.count("SELECT count(*) FROM energy_intervals_p202610") > 0);
    assert_eq!(run(&db, &["slots", "check"]).code, 0);
    sums_equal(&db);
    let records = db.count("SELECT count(*) FROM energy_intervals");

    // A hole across midnight UTC of September 30 / October 1.
    let deleted = db
        .client()
        .execute(
            "DELETE FROM energy_intervals WHERE start_ts >= '2026-09-30 22:00+00' AND start_ts < '2026-10-01 02:00+00'",
            &[],
        )
        .unwrap();
    assert!(deleted > 0);
    let stale = run(&db, &["slots", "check", "--format", "json"]);
    assert_eq!(stale.code, 1);
    // 4 hours × 4 slots × A, B, C (the N rows carry no energy but have slots).
    assert!(
        stale.json()["mismatches"].as_u64().unwrap() >= 48,
        "{}",
        stale.stdout
    );
    let rebuilt = run(
        &db,
        &[
            "slots",
            "rebuild",
            "--from",
            "2026-09-30",
            "--to",
            "2026-10-01",
            "--tz",
            "UTC",
        ],
    );
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
    assert_eq!(run(&db, &["slots", "check"]).code, 0);
    sums_equal(&db);

    // The backfill writes the records and their slots back.
    let back = shellyctl(
        &[
            "backfill",
            "--from",
            "2026-09-30",
            "--to",
            "2026-10-01",
            "--tz",
            "UTC",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url), ("SHELLY_HOST", &sim.host())],
    );
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), records);
    let check = run(&db, &["slots", "check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    sums_equal(&db);
}

#[test]
fn concurrent_ingests_that_need_new_months_all_succeed() {
    // Six meters whose history (Sep 28 to Oct 1) needs months this fresh
    // database does not have, ingested at once: the partitions are made
    // outside the page transactions, so no two ingests deadlock on the
    // parents of energy_intervals and energy_slots.
    let db = TestDb::migrated();
    let sims: Vec<Simulator> = (0..6)
        .map(|i| {
            let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
            cfg.clock = Some(OCT_1);
            cfg.history_days = 3;
            cfg.page_size = 50;
            cfg.mac = format!("B0A7320000{i:02X}");
            sim_with(cfg)
        })
        .collect();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = sims
            .iter()
            .map(|sim| s.spawn(|| ingest(&db, sim)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(
        db.count("SELECT count(DISTINCT device_id) FROM energy_intervals"),
        6
    );
    assert_eq!(run(&db, &["slots", "check"]).code, 0);
    sums_equal(&db);
}

/// Writes readings the way shellyctl's writers do: the raw rows and their
/// minutes' aggregates in one statement (`db::minutes::insert_sql`).
/// `readings`: (device, unix seconds with millis).
fn write_readings(db: &TestDb, readings: &[(&str, f64)]) {
    let mut c = db.client();
    for (d, _) in readings {
        c.execute(
            "INSERT INTO devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[d],
        )
        .unwrap();
    }
    let devices: Vec<&str> = readings.iter().map(|(d, _)| *d).collect();
    let ts: Vec<f64> = readings.iter().map(|(_, t)| *t).collect();
    c.execute(
        &format!(
            "WITH ins AS (INSERT INTO power_readings (ts, device_id, total_power_w)
                          SELECT to_timestamp(t), d, 100 FROM unnest($1::text[], $2::float8[]) AS u(d, t)
                          ON CONFLICT (device_id, ts) DO NOTHING RETURNING *)
             {}",
            shellyctl::db::minutes::insert_sql("ins")
        ),
        &[&devices, &ts],
    )
    .unwrap();
}

fn readings_counted(db: &TestDb, device: &str) -> i64 {
    db.count(&format!(
        "SELECT COALESCE(sum(readings), 0)::bigint FROM power_readings_1m WHERE device_id = '{device}'"
    ))
}

#[test]
fn late_readings_in_a_dropped_month_and_rebuilds_never_take_readings_out_of_a_minute() {
    let db = TestDb::migrated();
    let mut c = db.client();
    c.batch_execute(
        "SELECT shellyctl_ensure_partitions('power_readings', '2026-03-01', '2026-03-31')",
    )
    .unwrap();
    // 2026-03-10 10:00 UTC: 100 readings of meter-1, 50 of meter-2.
    let minute = 1_773_136_800.0;
    let many = |d: &'static str, n: usize, from: f64| -> Vec<(&'static str, f64)> {
        (0..n)
            .map(|i| (d, minute + from + i as f64 * 0.25))
            .collect()
    };
    write_readings(&db, &many("meter-1", 100, 0.0));
    write_readings(&db, &many("meter-2", 50, 0.0));
    // 2026-05-15 with 30 days: March goes (exactly checked, nothing to add).
    let retention = |db: &TestDb| {
        let out = run(
            db,
            &[
                "retention",
                "--now",
                "1778803200",
                "--raw-days",
                "30",
                "--format",
                "json",
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        out
    };
    let out = retention(&db);
    assert_eq!(out.json()["partitions_dropped"][0]["minutes_rebuilt"], 0);
    assert_eq!(
        (
            readings_counted(&db, "meter-1"),
            readings_counted(&db, "meter-2")
        ),
        (100, 50)
    );
    // Three late readings of that minute (a clock a month behind) land in
    // the default partition, with their aggregate: 103.
    write_readings(&db, &many("meter-1", 3, 40.0));
    assert_eq!(readings_counted(&db, "meter-1"), 103);
    // A rebuild by hand over the range keeps both minutes: 3 raw rows do
    // not replace an aggregate of 103.
    let out = run(
        &db,
        &[
            "minutes",
            "rebuild",
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-01",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["minutes_written"], 0);
    assert_eq!(out.json()["minutes_kept"], 1);
    // The next retention adopts the default partition (March again), checks
    // it exactly and drops it: nothing is taken out of either minute.
    retention(&db);
    assert_eq!(
        (
            readings_counted(&db, "meter-1"),
            readings_counted(&db, "meter-2")
        ),
        (103, 50)
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    // A row of scripts/adversarial's table.
    println!("attack\tlate readings in a dropped month, rebuilds, retention again\taggregates keep every reading (103 and 50)");
}

#[test]
fn the_readings_counted_in_the_aggregates_never_decrease_and_equal_every_reading_ever_stored() {
    // A property over a random sequence (seeded from the clock, printed on
    // failure): readings (some late, into months retention has dropped),
    // retention runs as time goes on, and rebuilds of random ranges. After
    // every step the sum of `readings` in power_readings_1m equals the
    // number of distinct readings ever stored, and never goes down.
    let db = TestDb::migrated();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // 2026-01-01 .. 2026-05-01; "now" moves from April 1 to June 30.
    let (start, span) = (1_767_225_600i64, 120 * 86_400i64);
    let mut now = 1_775_001_600i64;
    let mut stored = 0i64;
    let mut used = std::collections::HashSet::new();
    let mut last = 0;
    for step in 0..30 {
        match next(4) {
            0 | 1 => {
                // A burst of readings around a random minute (a device whose
                // clock lags writes into old months, too).
                let device = ["meter-1", "meter-2", "meter-3"][next(3) as usize];
                let at = start + next(span as u64) as i64;
                let mut batch = Vec::new();
                for k in 0..(1 + next(40)) {
                    let t = at + k as i64 * 7;
                    if used.insert((device, t)) {
                        batch.push((device, t as f64));
                    }
                }
                stored += batch.len() as i64;
                write_readings(&db, &batch);
            }
            2 => {
                now += next(20 * 86_400) as i64;
                let out = run(
                    &db,
                    &[
                        "retention",
                        "--now",
                        &now.to_string(),
                        "--raw-days",
                        "20",
                        "--format",
                        "json",
                    ],
                );
                assert_eq!(out.code, 0, "seed {seed}, step {step}: {}", out.stderr);
            }
            _ => {
                let from = start + next(span as u64) as i64;
                let to = from + 86_400 + next(40 * 86_400) as i64;
                let fmt = |t: i64| {
                    chrono::DateTime::from_timestamp(t, 0)
                        .unwrap()
                        .format("%Y-%m-%d")
                        .to_string()
                };
                let out = run(
                    &db,
                    &["minutes", "rebuild", "--from", &fmt(from), "--to", &fmt(to)],
                );
                assert_eq!(out.code, 0, "seed {seed}, step {step}: {}", out.stderr);
            }
        }
        let counted = db.count("SELECT COALESCE(sum(readings), 0)::bigint FROM power_readings_1m");
        assert!(
            counted >= last,
            "seed {seed}, step {step}: went down from {last} to {counted}"
        );
        assert_eq!(counted, stored, "seed {seed}, step {step}");
        last = counted;
    }
}

#[test]
fn retention_drop_empty_removes_the_empty_past_months_of_every_table_and_nothing_else() {
    let db = TestDb::migrated();
    let mut c = db.client();
    // A wrong clock once made 2019's months in every table; one of them
    // got a row.
    for (table, _) in shellyctl::db::partitions::TABLES {
        c.execute(
            "SELECT shellyctl_ensure_partitions($1, '2019-01-01', '2019-12-31')",
            &[&table],
        )
        .unwrap();
    }
    write_readings(&db, &[("meter-1", 1_552_608_000.0)]); // 2019-03-15
    let count =
        |db: &TestDb| db.count("SELECT count(*) FROM pg_class WHERE relname ~ '_p2019[0-9]{2}$'");
    assert_eq!(count(&db), 5 * 12);
    let out = run(
        &db,
        &[
            "retention",
            "--drop-empty",
            "--raw-days",
            "10000",
            "--aggregate-days",
            "10000",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["empty_partitions_dropped"]
            .as_array()
            .unwrap()
            .len(),
        5 * 12 - 1
    );
    assert_eq!(count(&db), 1);
    assert!(exists(&db, "power_readings_p201903"));
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 1);
    // This month and the months made ahead stay, empty or not.
    let this_month = chrono::Utc::now().format("%Y%m").to_string();
    assert!(exists(&db, &format!("energy_slots_p{this_month}")));
}

#[test]
fn two_retention_runs_at_once_both_succeed_and_keep_every_reading_in_the_aggregates() {
    let db = TestDb::migrated();
    let mut c = db.client();
    c.batch_execute(
        "SELECT shellyctl_ensure_partitions('power_readings', '2026-01-01', '2026-04-30')",
    )
    .unwrap();
    // A reading every 30 s from January to April, for two meters; some
    // late ones land in the default partition after the first drops.
    let mut batch = Vec::new();
    for d in ["meter-1", "meter-2"] {
        let mut t = 1_767_225_600.0; // 2026-01-01
        while t < 1_777_593_600.0 {
            // 2026-05-01
            batch.push((d, t));
            t += 1800.0;
        }
    }
    write_readings(&db, &batch);
    let total = batch.len() as i64;
    let retention = |db: &TestDb| {
        let url = db.url.clone();
        std::thread::spawn(move || {
            shellyctl(
                &[
                    "retention",
                    "--now",
                    "1780272000",
                    "--raw-days",
                    "30",
                    "--drop-empty",
                ],
                &[("DATABASE_URL", url.as_str())],
            )
        })
    };
    let (a, b) = (retention(&db), retention(&db));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(
        db.count("SELECT COALESCE(sum(readings), 0)::bigint FROM power_readings_1m"),
        total
    );
    // Everything before May 2 (2026-06-01 minus 30 days) is dropped.
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings WHERE ts < '2026-05-01'"),
        0
    );
    // And again with late readings waiting in the default partition.
    write_readings(
        &db,
        &[
            ("meter-1", 1_772_323_200.0 + 7.0),
            ("meter-2", 1_772_323_200.0 + 9.0),
        ],
    );
    let (a, b) = (retention(&db), retention(&db));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(
        db.count("SELECT COALESCE(sum(readings), 0)::bigint FROM power_readings_1m"),
        total + 2
    );
}

#[test]
fn slots_rebuild_racing_ingest_intervals_leaves_slots_equal_to_the_records() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(OCT_1);
    cfg.history_days = 20;
    let sim = sim_with(cfg);
    // Rebuilds of the whole range again and again while the ingest writes
    // page after page (small pages: many transactions to interleave with).
    let url = db.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let rebuilds = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            let out = shellyctl(
                &[
                    "slots",
                    "rebuild",
                    "--from",
                    "2026-09-01",
                    "--to",
                    "2026-10-02",
                ],
                &[("DATABASE_URL", url.as_str())],
            );
            assert_eq!(out.code, 0, "{}", out.stderr);
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        n
    });
    let out = shellyctl(
        &["ingest-intervals", "--format", "json"],
        &[("DATABASE_URL", &db.url), ("SHELLY_HOST", &sim.host())],
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = rebuilds.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(n >= 1);
    assert!(db.count("SELECT count(*) FROM energy_intervals") > 0);
    let check = run(&db, &["slots", "check", "--format", "json"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    sums_equal(&db);
}

//! Interval ingestion, backfill and gap reports against the simulator's
//! history, with a frozen device clock so every expectation is exact.

mod common;
use common::*;
use rust_decimal::Decimal;
use std::time::Duration;

/// 2026-09-21T20:26:40Z; the device clock is frozen here.
const T: i64 = 1_790_000_000;

fn meter(kind: DeviceKind, days: i64) -> Simulator {
    let mut cfg = SimConfig::new(kind);
    cfg.clock = Some(T);
    cfg.history_days = days;
    sim_with(cfg)
}

fn ingest(db: &TestDb, sim: &Simulator, extra: &[(&str, &str)]) -> Run {
    let host = sim.host();
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    env.extend_from_slice(extra);
    shellyctl(&["ingest-intervals", "--format", "json"], &env)
}

fn all_records(sim: &Simulator) -> Vec<i64> {
    sim.history().records(0, None, sim.now(), usize::MAX)
}

/// Exact import energy of phase `p` over the records, as the device holds it.
fn expected_energy(sim: &Simulator, records: &[i64], p: usize) -> Decimal {
    records
        .iter()
        .map(|ts| Decimal::new(sim.history().phase(*ts, p).act_energy, 4))
        .sum()
}

fn expected_returned(sim: &Simulator, records: &[i64], p: usize) -> Decimal {
    records
        .iter()
        .map(|ts| Decimal::new(sim.history().phase(*ts, p).ret_energy, 4))
        .sum()
}

fn sum_energy(db: &TestDb, channel: &str, column: &str) -> Decimal {
    db.client()
        .query_one(
            &format!("SELECT COALESCE(sum({column}), 0) FROM energy_intervals WHERE channel = $1"),
            &[&channel],
        )
        .unwrap()
        .get(0)
}

fn cursor(db: &TestDb, component: &str) -> Option<i64> {
    db.client()
        .query_opt(
            "SELECT EXTRACT(EPOCH FROM next_ts)::bigint FROM ingest_cursors WHERE component = $1",
            &[&component],
        )
        .unwrap()
        .map(|r| r.get(0))
}

/// The database holds exactly the device's records: every record once per
/// phase, nothing else, energies equal to the last 0.0001 Wh.
fn assert_db_equals_device(db: &TestDb, sim: &Simulator) {
    assert_db_holds(db, sim, &all_records(sim));
}

/// The database holds exactly `records` (timestamps) of the device.
fn assert_db_holds(db: &TestDb, sim: &Simulator, records: &[i64]) {
    let period = sim.history().period;
    for (p, ch) in ["A", "B", "C"].iter().enumerate() {
        let rows: Vec<(i64, i64)> = db
            .client()
            .query(
                "SELECT EXTRACT(EPOCH FROM start_ts)::bigint, EXTRACT(EPOCH FROM end_ts)::bigint
                   FROM energy_intervals WHERE channel = $1 ORDER BY start_ts",
                &[ch],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(i64, i64)> = records.iter().map(|t| (*t, t + period)).collect();
        assert_eq!(rows.len(), expected.len(), "channel {ch}: row count");
        assert_eq!(rows, expected, "channel {ch}: exactly the device's records");
        assert_eq!(
            sum_energy(db, ch, "energy_wh"),
            expected_energy(sim, records, p),
            "channel {ch} energy"
        );
        assert_eq!(
            sum_energy(db, ch, "returned_energy_wh"),
            expected_returned(sim, records, p),
            "channel {ch} returned energy"
        );
    }
}

#[test]
fn a_first_ingest_starts_at_the_oldest_record_and_pages_to_the_last() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 7);
    let records = all_records(&sim);
    let h = sim.history();
    assert_eq!(h.period, 300);
    assert_eq!(
        records.len(),
        7 * 288 - 10,
        "7 days of 5-minute records minus the power-loss gap"
    );

    let out = ingest(&db, &sim, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = &out.json()["devices"][0]["components"][0];
    assert_eq!(c["component"], "emdata:0");
    assert_eq!(c["records_inserted"], records.len());
    assert_eq!(c["records_already_present"], 0);
    assert_eq!(c["pages"], records.len().div_ceil(6));
    assert_eq!(c["period_s"], 300);
    assert!(c["cursor_before"].is_null());
    assert_eq!(
        sim.stats()
            .get_data_calls
            .load(std::sync::atomic::Ordering::SeqCst) as usize,
        records.len().div_ceil(6)
    );

    assert_eq!(
        records[0],
        h.first(T),
        "started at the oldest record GetRecords lists"
    );
    assert_eq!(cursor(&db, "emdata:0"), Some(h.end(T)));
    assert_db_equals_device(&db, &sim);

    // Neutral currents are kept in their own rows; no energy there.
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'N'"),
        records.len() as i64
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM energy_intervals WHERE channel = 'N' AND energy_wh IS NOT NULL"
        ),
        0
    );
    // Every value the device gave has a column: min/max power, voltage, reactive energy.
    let r = h.phase(records[0], 0);
    let row = db.client().query_one(
        "SELECT min_power_w, max_power_w, avg_voltage_v, max_current_a, lag_reactive_varh, fund_energy_wh, avg_power_w
           FROM energy_intervals WHERE channel = 'A' ORDER BY start_ts LIMIT 1", &[]).unwrap();
    assert_eq!(row.get::<_, Decimal>(0), Decimal::new(r.min_act_power, 1));
    assert_eq!(row.get::<_, Decimal>(1), Decimal::new(r.max_act_power, 1));
    assert_eq!(row.get::<_, Decimal>(2), Decimal::new(r.avg_voltage, 1));
    assert_eq!(row.get::<_, Decimal>(3), Decimal::new(r.max_current, 3));
    assert_eq!(row.get::<_, Decimal>(4), Decimal::new(r.lag_react, 4));
    assert_eq!(row.get::<_, Decimal>(5), Decimal::new(r.fund_act_energy, 4));
    // avg power = (import - export) Wh * 3600 / 300 s, exactly.
    let expected_avg =
        (Decimal::new(r.act_energy, 4) - Decimal::new(r.ret_energy, 4)) * Decimal::from(12);
    assert_eq!(row.get::<_, Decimal>(6), expected_avg);
}

#[test]
fn records_on_both_sides_of_a_power_loss_keep_their_own_timestamps() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 2);
    let blocks = sim.history().blocks(0, T);
    assert_eq!(blocks.len(), 2, "the power-loss gap splits the history");
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    let gap_start = blocks[0].ts + blocks[0].records * 300;
    let inside: i64 = db.client().query_one(
        "SELECT count(*) FROM energy_intervals WHERE start_ts >= to_timestamp($1) AND start_ts < to_timestamp($2)",
        &[&(gap_start as f64), &(blocks[1].ts as f64)]).unwrap().get(0);
    assert_eq!(inside, 0);
    let after: i64 = db.client().query_one(
        "SELECT count(*) FROM energy_intervals WHERE channel = 'A' AND start_ts = to_timestamp($1)",
        &[&(blocks[1].ts as f64)]).unwrap().get(0);
    assert_eq!(after, 1);
    assert_db_equals_device(&db, &sim);
}

#[test]
fn a_pro3em_with_60_second_records_is_ingested_exactly() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Pro3Em, 1);
    assert_eq!(sim.history().period, 60);
    let out = ingest(&db, &sim, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["devices"][0]["components"][0]["period_s"], 60);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals WHERE end_ts - start_ts <> interval '60 seconds'"), 0);
    assert_db_equals_device(&db, &sim);
}

#[test]
fn monophase_em1data_channels_become_phase_rows() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(T);
    cfg.history_days = 1;
    cfg.profile = Profile::Monophase;
    let sim = sim_with(cfg);
    let out = ingest(&db, &sim, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let comps: Vec<String> = out.json()["devices"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(comps, ["em1data:0", "em1data:1", "em1data:2"]);
    let sources: Vec<(String, String)> = db
        .client()
        .query(
            "SELECT DISTINCT channel, source FROM energy_intervals ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        sources,
        [
            ("A".into(), "em1data:0".into()),
            ("B".into(), "em1data:1".into()),
            ("C".into(), "em1data:2".into())
        ]
    );
    for c in 0..3 {
        assert_eq!(
            cursor(&db, &format!("em1data:{c}")),
            Some(sim.history().end(T))
        );
    }
    assert_db_equals_device(&db, &sim);
}

#[test]
fn a_re_run_inserts_nothing_and_a_later_run_only_the_new_records() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 1);
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    let rows = db.count("SELECT count(*) FROM energy_intervals");
    let first_seen = all_records(&sim);

    let again = ingest(&db, &sim, &[]);
    assert_eq!(again.code, 0);
    let c = &again.json()["devices"][0]["components"][0];
    assert_eq!(
        (c["records_inserted"].as_u64(), c["pages"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), rows);

    sim.set_clock(T + 3 * 300);
    let later = ingest(&db, &sim, &[]);
    assert_eq!(
        later.json()["devices"][0]["components"][0]["records_inserted"],
        3
    );
    assert_eq!(cursor(&db, "emdata:0"), Some(sim.history().end(T + 900)));
    // The device's window moved on by 3 records; the database keeps the old ones.
    let mut held = first_seen;
    held.extend(all_records(&sim).into_iter().filter(|t| *t >= T - T % 300));
    assert_eq!(held.len(), 288 + 3);
    assert_db_holds(&db, &sim, &held);
}

#[test]
fn a_run_killed_mid_ingest_and_re_run_gives_exactly_the_devices_records() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 2);
    sim.add_random_fault(Fault::Latency(Duration::from_millis(8)), 1.0);
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    let total = all_records(&sim).len() as i64;
    for delay_ms in [150, 320, 540] {
        let mut child = spawn(&["ingest-intervals"], &env);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let a = db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'A'");
        assert!(a < total, "killed before the end ({a} of {total})");
        // Rows and cursor moved together: the cursor is right after the last stored record.
        let last_end: Option<i64> = db
            .client()
            .query_one(
                "SELECT EXTRACT(EPOCH FROM max(end_ts))::bigint FROM energy_intervals",
                &[],
            )
            .unwrap()
            .get(0);
        if let Some(end) = last_end {
            let c = cursor(&db, "emdata:0").unwrap();
            assert!(
                c >= end && c == sim.history().next_record(end, T).unwrap_or(end),
                "cursor {c} vs last end {end}"
            );
        }
    }
    sim.clear_faults();
    // A killed run's server process holds the device's lock until it
    // notices its client is gone, and a run that finds the lock held skips
    // the device (exit 0, nothing stored): the re-run waits for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.count(
        "SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory'
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    ) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a killed run still holds its lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ingest(&db, &sim, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_db_equals_device(&db, &sim);
}

#[test]
fn a_device_that_goes_away_mid_run_leaves_the_cursor_at_the_last_committed_page() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 2);
    // /shelly, Shelly.GetStatus, GetRecords, then 5 pages; then the device is gone.
    sim.script_faults(std::iter::repeat_n(None, 8));
    sim.set_sticky_fault(Some(Fault::Drop));
    let out = ingest(&db, &sim, &[("SHELLY_RETRIES", "1")]);
    assert_eq!(out.code, 75, "{}", out.stderr);
    let d = &out.json()["devices"][0];
    assert_eq!(d["ok"], false);
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("reading EMData.GetData from"),
        "{}",
        d["error"]
    );
    assert_eq!(d["components"][0]["pages"], 5);
    let records = all_records(&sim);
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'A'"),
        30
    );
    assert_eq!(cursor(&db, "emdata:0"), Some(records[30]));

    sim.clear_faults();
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    assert_db_equals_device(&db, &sim);
}

#[test]
fn a_malformed_page_is_a_clear_error_and_nothing_from_it_is_stored() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 1);
    sim.script_faults(std::iter::repeat_n(None, 5).chain([Some(Fault::Malformed)]));
    let out = ingest(&db, &sim, &[("SHELLY_RETRIES", "0")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let records = all_records(&sim);
    let err = out.log_events("device_failed")[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!(
            "reading EMData.GetData page at ts={} from {}: malformed answer: not a GetData page: EOF while parsing a string at line 1 column 26",
            records[12],
            sim.host()
        )
    );
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'A'"),
        12
    );
    assert_eq!(cursor(&db, "emdata:0"), Some(records[12]));
}

fn backfill(db: &TestDb, sim: &Simulator, args: &[&str]) -> Run {
    let host = sim.host();
    let mut a = vec!["backfill", "--format", "json", "--tz", "UTC"];
    a.extend_from_slice(args);
    shellyctl(
        &a,
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", host.as_str()),
        ],
    )
}

fn day_of(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

#[test]
fn backfill_of_a_complete_day_inserts_nothing_and_fills_a_hole_exactly() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 3);
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    let day = day_of(T - 86_400);
    let day_start = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let in_day = sim
        .history()
        .records(day_start, Some(day_start + 86_399), T, usize::MAX)
        .len();

    let out = backfill(&db, &sim, &["--day", &day]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = &out.json()["devices"][0]["components"][0];
    assert_eq!(c["records_inserted"], 0);
    assert_eq!(c["records_already_present"], in_day);
    assert_eq!(
        cursor(&db, "emdata:0"),
        Some(sim.history().end(T)),
        "cursor unchanged"
    );

    // Punch a 2-hour hole and backfill it.
    let hole = (day_start + 6 * 3600, day_start + 8 * 3600);
    let deleted = db.client().execute(
        "DELETE FROM energy_intervals WHERE start_ts >= to_timestamp($1) AND start_ts < to_timestamp($2)",
        &[&(hole.0 as f64), &(hole.1 as f64)]).unwrap();
    assert_eq!(deleted, 24 * 4, "24 records × A, B, C, N");
    let out = backfill(&db, &sim, &["--day", &day]);
    let c = &out.json()["devices"][0]["components"][0];
    assert_eq!(c["records_inserted"], 24);
    assert_eq!(c["records_already_present"], in_day - 24);
    assert_eq!(
        cursor(&db, "emdata:0"),
        Some(sim.history().end(T)),
        "the cursor never moves backwards"
    );
    assert_db_equals_device(&db, &sim);
}

#[test]
fn backfill_moves_a_cursor_inside_its_range_forward_only_as_far_as_it_filled() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 3);
    // An interrupted first ingest: cursor early in the oldest day.
    sim.script_faults(std::iter::repeat_n(None, 5));
    sim.set_sticky_fault(Some(Fault::Drop));
    assert_eq!(ingest(&db, &sim, &[("SHELLY_RETRIES", "0")]).code, 75);
    sim.clear_faults();
    let c0 = cursor(&db, "emdata:0").unwrap();
    let day = day_of(c0);
    let next_day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .unwrap()
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    assert_eq!(backfill(&db, &sim, &["--day", &day]).code, 0);
    assert_eq!(
        cursor(&db, "emdata:0"),
        Some(next_day),
        "moved to the end of the filled day"
    );
    // A backfill of a later day leaves the hole before it alone.
    let later = day_of(T);
    assert_eq!(backfill(&db, &sim, &["--day", &later]).code, 0);
    assert_eq!(cursor(&db, "emdata:0"), Some(next_day));
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    assert_db_equals_device(&db, &sim);
}

#[test]
fn report_gaps_lists_an_injected_hole_exactly_and_the_power_loss_as_lost() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 3);
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    let blocks = sim.history().blocks(0, T);
    let loss = (blocks[0].ts + blocks[0].records * 300, blocks[1].ts);
    let day = day_of(loss.0);
    let day_start = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let hole = (day_start + 3600, day_start + 3600 + 35 * 60);
    assert!(hole.1 < loss.0);
    db.client().execute(
        "DELETE FROM energy_intervals WHERE start_ts >= to_timestamp($1) AND start_ts < to_timestamp($2)",
        &[&(hole.0 as f64), &(hole.1 as f64)]).unwrap();

    let now = T.to_string();
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    let out = shellyctl(
        &[
            "report", "gaps", "--day", &day, "--tz", "UTC", "--format", "json", "--now", &now,
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let gaps = out.json()["gaps"].as_array().unwrap().clone();
    let got: Vec<(i64, i64, i64, String)> = gaps
        .iter()
        .map(|g| {
            let t = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(g[k].as_str().unwrap())
                    .unwrap()
                    .timestamp()
            };
            (
                t("start"),
                t("end"),
                g["records"].as_i64().unwrap(),
                g["availability"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (hole.0, hole.1, 7, "recoverable".to_string()),
            (loss.0, loss.1, (loss.1 - loss.0) / 300, "lost".to_string()),
        ]
    );

    let offline = shellyctl(
        &[
            "report",
            "gaps",
            "--day",
            &day,
            "--tz",
            "UTC",
            "--format",
            "json",
            "--offline",
            "--now",
            &now,
        ],
        &env,
    );
    assert!(offline.json()["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["availability"] == "unknown"));

    // A backfill closes the recoverable hole; the lost span stays.
    assert_eq!(backfill(&db, &sim, &["--day", &day]).code, 0);
    let after = shellyctl(
        &[
            "report", "gaps", "--day", &day, "--tz", "UTC", "--format", "json", "--now", &now,
        ],
        &env,
    );
    assert_eq!(after.json()["gaps"].as_array().unwrap().len(), 1);
    assert_eq!(after.json()["gaps"][0]["availability"], "lost");
}

#[test]
fn an_unreachable_device_is_a_temporary_failure_with_the_cursor_unchanged() {
    let db = TestDb::migrated();
    let sim = meter(DeviceKind::Em3Gen3, 1);
    assert_eq!(ingest(&db, &sim, &[]).code, 0);
    let before = cursor(&db, "emdata:0");
    sim.set_clock(T + 3600);
    sim.set_sticky_fault(Some(Fault::Drop));
    let out = ingest(&db, &sim, &[("SHELLY_RETRIES", "0")]);
    assert_eq!(out.code, 75);
    assert_eq!(cursor(&db, "emdata:0"), before);
}

/// Every slot row, exactly as stored.
fn slot_rows(db: &TestDb) -> Vec<(String, i64, String, Decimal, Decimal, i64)> {
    db.client()
        .query(
            "SELECT device_id, EXTRACT(EPOCH FROM slot_start)::bigint, channel, import_wh, export_wh,
                    EXTRACT(EPOCH FROM covered)::bigint
               FROM energy_slots ORDER BY 1, 2, 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

fn page_paths(run: &Run) -> Vec<String> {
    run.log_events("interval_page_stored")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// New pages go in by a direct COPY with slot sums made in Rust; replays,
/// backfills and records crossing a slot take the merge path with the
/// sums made in SQL. Both give the slots a rebuild from the records gives,
/// row for row.
#[test]
fn new_pages_are_copied_directly_and_their_slots_equal_a_rebuild() {
    for (period, expect) in [(300, "direct"), (1200, "merge")] {
        let db = TestDb::migrated();
        let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
        cfg.clock = Some(T);
        cfg.history_days = 3;
        cfg.period_s = period;
        cfg.page_size = 100;
        let sim = sim_with(cfg);
        let run = ingest(&db, &sim, &[("SHELLYCTL_LOG", "debug")]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let paths = page_paths(&run);
        assert!(paths.len() >= 2, "several pages: {paths:?}");
        assert!(
            paths.iter().all(|p| p == expect),
            "period {period}: {paths:?}"
        );
        assert_db_equals_device(&db, &sim);
        let ingested = slot_rows(&db);
        assert!(!ingested.is_empty());
        // The hourly day rows were written with the pages: 4 UTC days
        // (3 days of history reach into a fourth), 3 phases.
        let hours = hour_rows(&db);
        assert!(hours.len() >= 9, "{}", hours.len());
        let rebuilt = shellyctl(&["slots", "rebuild"], &[("DATABASE_URL", &db.url)]);
        assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
        assert_eq!(
            slot_rows(&db),
            ingested,
            "period {period}: slots equal a rebuild"
        );
        assert_eq!(
            hour_rows(&db),
            hours,
            "period {period}: hours equal a rebuild"
        );

        // The same day again (backfill): every record present, merge path,
        // nothing added twice.
        let day = day_of(T - 86_400);
        let again = backfill(&db, &sim, &["--day", &day]);
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(
            slot_rows(&db),
            ingested,
            "period {period}: a replay adds nothing"
        );
        assert_eq!(hour_rows(&db), hours, "period {period}: nor to the hours");
        // shellyctl's own writes keep the slots: none is noted as foreign.
        assert_eq!(
            db.count("SELECT count(*) FROM energy_intervals_foreign_writes"),
            0
        );
    }
}

/// A slot row inside a new page's range that exists anyway (another tool
/// wrote slots; here an empty one) makes the direct COPY of the slots fail
/// with a unique violation: that page takes the merge path instead, adds to
/// the row, and every slot still equals a rebuild.
#[test]
fn a_slot_that_exists_inside_a_new_page_sends_it_down_the_merge_path() {
    let db = TestDb::migrated();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(T);
    cfg.history_days = 2;
    cfg.page_size = 100;
    let sim = sim_with(cfg);
    let first = all_records(&sim)[0];
    // The third slot of the first page (records 6..8 of 100), channel A.
    let slot = first.div_euclid(900) * 900 + 1800;
    for sql in [
        "SELECT shellyctl_ensure_partitions('energy_slots', to_timestamp($1), to_timestamp($1))",
        "INSERT INTO energy_slots (device_id, slot_start, channel, import_wh, export_wh, covered)
         VALUES ('shelly3em63g3-e4b063a1b2c3', to_timestamp($1), 'A', 0, 0, '0')",
    ] {
        db.client().execute(sql, &[&(slot as f64)]).unwrap();
    }
    let run = ingest(&db, &sim, &[("SHELLYCTL_LOG", "debug")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let paths = page_paths(&run);
    assert_eq!(paths[0], "merge", "{paths:?}");
    assert!(paths[1..].iter().all(|p| p == "direct"), "{paths:?}");
    assert_db_equals_device(&db, &sim);
    let ingested = slot_rows(&db);
    let hours = hour_rows(&db);
    let rebuilt = shellyctl(&["slots", "rebuild"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
    assert_eq!(slot_rows(&db), ingested);
    assert_eq!(hour_rows(&db), hours);
}

//! The schema contract (README "Schema contract"): a row inserted by a
//! user's own SQL with only a table's contract columns is accepted, so
//! every column added since has a default or is nullable.

mod common;
use common::*;

const DEVICE: &str = "shelly3em63g3-e4b063a1b2c3";

/// A migrated database with one device row, inserted with only the
/// contract columns (the tables below refer to it).
fn db_with_device() -> TestDb {
    let db = TestDb::migrated();
    db.client()
        .execute(
            "INSERT INTO devices (device_id, host, model, gen, fw_id, fw_version, profile,
                                  auth_enabled, first_seen, last_seen)
             VALUES ($1, '192.168.1.50', 'S3EM-003CXCEU63', 3, '20250101-000000/1.5.0-g0',
                     '1.5.0', 'triphase', false, now(), now())",
            &[&DEVICE],
        )
        .expect("devices: insert with the contract columns");
    db
}

/// Inserts with only the given columns and checks the row is there.
fn accepts(db: &TestDb, table: &str, sql: &str) {
    let before = db.count(&format!("SELECT count(*) FROM {table}"));
    db.client()
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{table}: {sql}: {e:?}"));
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM {table}")),
        before + 1,
        "{table}"
    );
}

#[test]
fn devices_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    assert_eq!(db.count("SELECT count(*) FROM devices"), 1);
    accepts(
        &db,
        "devices",
        "INSERT INTO devices (device_id) VALUES ('shellypro3em-000000000002')",
    );
}

#[test]
fn power_readings_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "power_readings",
        &format!(
            "INSERT INTO power_readings (ts, device_id, total_power_w,
                 phase_a_power_w, phase_b_power_w, phase_c_power_w,
                 phase_a_voltage_v, phase_b_voltage_v, phase_c_voltage_v,
                 phase_a_current_a, phase_b_current_a, phase_c_current_a)
             VALUES (now(), '{DEVICE}', 1500.5, 500.1, 500.2, 500.2,
                     230.1, 230.2, 230.3, 2.17, 2.17, 2.17)"
        ),
    );
}

#[test]
fn switch_readings_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "switch_readings",
        &format!(
            "INSERT INTO switch_readings (ts, device_id, channel, output, apower_w, voltage_v,
                 current_a, pf, freq_hz, energy_total_wh, returned_energy_total_wh, temperature_c)
             VALUES (now(), '{DEVICE}', 0, true, 120.5, 230.1, 0.52, 0.99, 50.0,
                     12345.678, 0, 41.2)"
        ),
    );
}

#[test]
fn energy_intervals_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "energy_intervals",
        &format!(
            "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh)
             VALUES ('{DEVICE}', 'A', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 8.25)"
        ),
    );
    // The derived average power and the defaults are filled in.
    let (avg, meta): (rust_decimal::Decimal, serde_json::Value) = {
        let r = db
            .client()
            .query_one("SELECT avg_power_w, meta FROM energy_intervals", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(avg.to_string(), "495");
    assert_eq!(meta, serde_json::json!({}));
}

#[test]
fn ingest_cursors_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "ingest_cursors",
        &format!(
            "INSERT INTO ingest_cursors (device_id, component, next_ts, period_s)
             VALUES ('{DEVICE}', 'emdata:0', now(), 60)"
        ),
    );
}

#[test]
fn tariffs_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "tariffs",
        r#"INSERT INTO tariffs (name, currency, valid_from, valid_to, rules)
           VALUES ('g11', 'PLN', '2026-01-01T00:00:00Z', NULL, '{"zones": []}')"#,
    );
}

#[test]
fn alert_events_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "alert_events",
        &format!(
            "INSERT INTO alert_events (rule_key, device_id, kind, value_w, threshold_w,
                                       window_start, window_end)
             VALUES ('{DEVICE}/total_power', '{DEVICE}', 'fired', 5200, 4000,
                     now() - interval '2 minutes', now())"
        ),
    );
}

#[test]
fn alert_state_accepts_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "alert_state",
        &format!(
            "INSERT INTO alert_state (rule_key, device_id, state)
             VALUES ('{DEVICE}/total_power', '{DEVICE}', 'armed')"
        ),
    );
}

#[test]
fn power_logs_accept_a_row_with_only_the_contract_columns() {
    let db = db_with_device();
    accepts(
        &db,
        "power_logs",
        &format!(
            r#"INSERT INTO power_logs ("timestamp", device_id, channel, apower_w, voltage_v,
                                       current_a, energy_total_wh)
               VALUES ('2026-01-01T00:01:00Z', '{DEVICE}', 0, 120.5, 230.1, 0.52, 12345.678)"#
        ),
    );
}

/// Columns that a contract INSERT must give: the others (added since, or
/// bookkeeping) must be nullable or have a default.
const REQUIRED: &[(&str, &[&str])] = &[
    ("devices", &["device_id"]),
    ("power_readings", &["ts", "device_id"]),
    ("switch_readings", &["ts", "device_id", "channel"]),
    (
        "energy_intervals",
        &["device_id", "channel", "start_ts", "end_ts"],
    ),
    ("ingest_cursors", &["device_id", "component", "next_ts"]),
    ("tariffs", &["name", "currency", "valid_from", "rules"]),
    ("alert_events", &["rule_key"]),
    ("alert_state", &["rule_key"]),
    ("power_logs", &["timestamp", "device_id", "channel"]),
];

#[test]
fn no_column_outside_the_contract_is_required() {
    let db = TestDb::migrated();
    for (table, required) in REQUIRED {
        let mut must: Vec<String> = db
            .client()
            .query(
                "SELECT column_name::text FROM information_schema.columns
                  WHERE table_schema = 'public' AND table_name = $1
                    AND is_nullable = 'NO' AND column_default IS NULL
                    AND is_generated = 'NEVER' AND is_identity = 'NO'
                  ORDER BY ordinal_position",
                &[table],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        must.sort();
        let mut want: Vec<String> = required.iter().map(|c| c.to_string()).collect();
        want.sort();
        assert_eq!(must, want, "{table}: NOT NULL columns without a default");
    }
}

//! A hostile (or just broken) HTTP device on loopback: every value it
//! controls — its id, its clock, `next_record_ts`, magnitudes, key counts,
//! redirects — is refused at the edge with one line naming the device and a
//! meaningful exit code, and nothing already stored is lost. Each test
//! prints `attack<TAB>outcome` for `scripts/adversarial`.

mod common;
use common::http::{Request, Server};
use common::*;
use serde_json::{json, Value};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn attack(name: &str, outcome: &str) {
    println!("attack\t{name}\t{outcome}");
}

const KEYS: [&str; 2] = ["a_total_act_energy", "a_avg_voltage"];

/// A 3EM-like device: `/shelly` with `id`, a status with `emdata:0`,
/// GetRecords from `oldest`, and GetData answered by `page(ts)`.
fn device(
    id: &'static str,
    oldest: i64,
    page: impl Fn(i64) -> String + Send + Sync + 'static,
) -> Server {
    Server::start(move |r: &Request| {
        let path = r.target.split('?').next().unwrap_or("");
        let body = match path {
            "/shelly" => {
                json!({"id": id, "gen": 3, "model": "S3EM-003CXCEU63", "app": "S3EM", "ver": "1.4.4", "auth_en": false, "profile": "triphase"})
            }
            "/rpc/Shelly.GetStatus" => json!({
                "em:0": {"id": 0, "a_act_power": 100.0, "b_act_power": 0.0, "c_act_power": 0.0, "total_act_power": 100.0},
                "emdata:0": {"id": 0},
                "sys": {"unixtime": now()}}),
            "/rpc/EMData.GetRecords" => {
                json!({"data_blocks": [{"ts": oldest, "period": 60, "records": 100}]})
            }
            "/rpc/EMData.GetData" => {
                let ts = r.query("ts").and_then(|t| t.parse().ok()).unwrap_or(0);
                return (200, page(ts));
            }
            _ => return (404, "{}".into()),
        };
        (200, body.to_string())
    })
}

/// A GetData page as the device's text.
fn page(blocks: Value, next: Option<i64>) -> String {
    json!({"keys": KEYS, "data": blocks, "next_record_ts": next}).to_string()
}

fn ingest(db: &TestDb, host: &str, extra: &[&str]) -> Run {
    let mut args = vec!["ingest-intervals", "--host", host, "--format", "json"];
    args.extend_from_slice(extra);
    shellyctl(&args, &[("DATABASE_URL", &db.url)])
}

fn cursor(db: &TestDb) -> Option<i64> {
    let mut c = db.client();
    c.query_opt(
        "SELECT EXTRACT(EPOCH FROM next_ts)::bigint FROM ingest_cursors",
        &[],
    )
    .unwrap()
    .map(|r| r.get(0))
}

#[test]
fn a_device_id_with_a_tab_and_a_newline_is_refused_before_anything_is_stored() {
    let db = TestDb::migrated();
    let dev = device("meter-1\t99999\nforged", now() - 600, |_| {
        page(json!([]), None)
    });
    let host = format!("127.0.0.1:{}", dev.port);
    for job in ["snapshot", "ingest-intervals"] {
        let out = shellyctl(
            &[job, "--host", &host, "--retries", "0"],
            &[("DATABASE_URL", &db.url)],
        );
        assert_eq!(out.code, 1, "{job}: {}", out.stderr);
        assert!(
            out.stderr.contains("contains a character outside"),
            "{job}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains('\t'), "the id is never printed raw");
    }
    assert_eq!(db.count("SELECT count(*) FROM devices"), 0);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 0);
    attack(
        "device id with TAB/LF (COPY injection)",
        "refused, exit 1, nothing stored",
    );
}

#[test]
fn records_and_next_record_ts_in_2100_never_reach_the_cursor() {
    // Two plausible records an hour ago, one in 2100, next_record_ts in 2100.
    let db = TestDb::migrated();
    let t0 = (now() - 3600) / 60 * 60;
    let dev = device("shelly3em63g3-aabbccddeeff", t0, move |ts| {
        if ts == t0 {
            page(
                json!([
                    {"ts": t0, "period": 60, "values": [[10.5, 230.1], [11.5, 230.2]]},
                    {"ts": 4_102_444_800i64, "period": 60, "values": [[99999, 230]]}
                ]),
                Some(4_102_444_860),
            )
        } else {
            page(json!([]), None)
        }
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = ingest(&db, &host, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("sent 2 implausible record(s), refused and not stored"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("2100-01-01"), "{}", out.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE channel = 'A'"),
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE start_ts > now()"),
        0
    );
    assert_eq!(
        cursor(&db),
        Some(t0 + 120),
        "after the last plausible record"
    );
    // The next run continues from there and is clean.
    let again = ingest(&db, &host, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(cursor(&db), Some(t0 + 120));
    attack(
        "EMData records and next_record_ts in 2100",
        "refused, exit 1, cursor stays at now",
    );
}

#[test]
fn history_from_1970_is_never_asked_for_and_never_stored() {
    let db = TestDb::migrated();
    let t0 = (now() - 600) / 60 * 60;
    let dev = device("shelly3em63g3-aabbccddeeff", 0, move |ts| {
        if ts < 946_684_800 {
            page(
                json!([{"ts": 0, "period": 60, "values": [[1, 230]]}]),
                Some(60),
            )
        } else {
            page(
                json!([{"ts": t0, "period": 60, "values": [[1, 230]]}]),
                None,
            )
        }
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = ingest(&db, &host, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = dev
        .requests()
        .into_iter()
        .find(|r| r.target.starts_with("/rpc/EMData.GetData"))
        .unwrap();
    // Not even 2000: a first run reads back at most INGEST_MAX_HISTORY
    // (400 days), with a warning naming the device.
    let asked: i64 = first.query("ts").unwrap().parse().unwrap();
    assert!(
        (now() - 400 * 86_400 - 60..=now() - 400 * 86_400 + 60).contains(&asked),
        "{asked}"
    );
    assert!(out.stderr.contains("history_capped"), "{}", out.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM energy_intervals WHERE start_ts < '2000-01-01'"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 1);
    attack(
        "GetRecords history from ts 0",
        "asked from 2000-01-01 on; no 1970 rows",
    );
}

#[test]
fn a_value_of_1e400_is_refused_and_reports_keep_working() {
    let db = TestDb::migrated();
    let t0 = (now() - 3600) / 60 * 60;
    let dev = device("shelly3em63g3-aabbccddeeff", t0, move |ts| {
        if ts == t0 {
            // The device's own text: 1e400 fits no float and no Decimal.
            format!(
                r#"{{"keys":["a_total_act_energy","a_avg_voltage"],"data":[{{"ts":{t0},"period":60,"values":[[1e400,230],[2.5,230]]}}],"next_record_ts":null}}"#
            )
        } else {
            page(json!([]), None)
        }
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = ingest(&db, &host, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("interval energy"), "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 1);
    let day = chrono::DateTime::from_timestamp(t0, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let energy = shellyctl(
        &[
            "report", "energy", "--day", &day, "--tz", "UTC", "--format", "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(energy.code, 0, "{}", energy.stderr);
    attack(
        "EMData value 1e300/1e400 Wh",
        "record refused, exit 1, reports fine",
    );
}

#[test]
fn an_implausible_value_already_stored_is_an_error_not_a_panic() {
    let db = TestDb::migrated();
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id) VALUES ('meter-1')", &[])
        .unwrap();
    c.execute(
        "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         VALUES ('meter-1', 'A', '2026-06-03 10:00+00', '2026-06-03 10:15+00', 1e400, 0, 'emdata:0')",
        &[],
    )
    .unwrap();
    rebuild_slots(&db);
    let t = shellyctl(&["tariff", "example", "g11"], &[]);
    let dir = TempDir::new("t");
    std::fs::write(dir.0.join("g11.json"), &t.stdout).unwrap();
    let path = dir.0.join("g11.json");
    assert_eq!(
        shellyctl(
            &["tariff", "import", path.to_str().unwrap()],
            &[("DATABASE_URL", &db.url)]
        )
        .code,
        0
    );
    for args in [
        vec!["report", "energy", "--day", "2026-06-03", "--tz", "UTC"],
        vec!["report", "costs", "--from", "2026-06-03"],
    ] {
        let out = shellyctl(&args, &[("DATABASE_URL", &db.url)]);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("an implausible energy value is stored for"),
            "{}",
            out.stderr
        );
    }
    attack(
        "1e400 Wh already in energy_intervals",
        "reports exit 1 with one line, no panic",
    );
}

#[test]
fn a_device_that_never_stops_paging_is_cut_at_the_page_limit() {
    let db = TestDb::migrated();
    let t0 = (now() - 86_400) / 60 * 60;
    let dev = device("shelly3em63g3-aabbccddeeff", t0, |ts| {
        page(
            json!([{"ts": ts, "period": 60, "values": [[1, 230]]}]),
            Some(ts + 60),
        )
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = ingest(&db, &host, &["--max-pages", "5"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ingest_paused"), "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 5);
    assert_eq!(cursor(&db), Some(t0 + 300));
    let gets = dev
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/rpc/EMData.GetData"))
        .count();
    assert!(gets <= 6, "{gets} pages asked for");
    attack(
        "GetData pages that always advance",
        "stopped at --max-pages, next run continues",
    );
}

#[test]
fn a_redirect_to_another_host_is_not_followed() {
    let db = TestDb::migrated();
    let other = sim(DeviceKind::Em3Gen3);
    let target = format!("http://{}/shelly", other.host());
    let dev = Server::start(move |_| (302, target.clone()));
    let host = format!("127.0.0.1:{}", dev.port);
    let out = shellyctl(
        &["snapshot", "--host", &host, "--retries", "0"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("redirects are not followed"),
        "{}",
        out.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    attack(
        "HTTP redirect to another device",
        "not followed, exit 78, nothing stored",
    );
}

#[test]
fn status_values_beyond_physics_and_absurd_channels_are_refused() {
    let db = TestDb::migrated();
    let dev = Server::start(|r: &Request| {
        let body = match r.target.split('?').next().unwrap_or("") {
            "/shelly" => {
                json!({"id": "shellyplus1pm-aabbccddeeff", "gen": 2, "model": "SNSW-001P16EU"})
            }
            "/rpc/Shelly.GetStatus" => json!({
                "em1:0": {"id": 0, "act_power": 7.0e28, "voltage": 230.0},
                "em1:1": {"id": 1, "act_power": 7.0e28, "voltage": 230.0},
                "switch:2147483647": {"id": 2147483647, "apower": 5.0},
                "sys": {"unixtime": now()}}),
            _ => return (404, "{}".into()),
        };
        (200, body.to_string())
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = shellyctl(
        &["snapshot", "--host", &host, "--retries", "0"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("outside the physical range"),
        "{}",
        out.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    assert_eq!(db.count("SELECT count(*) FROM switch_readings"), 0);
    attack(
        "em1 power 7e28 W (Decimal overflow on sum)",
        "refused, exit 1, no panic",
    );
}

#[test]
fn a_device_name_with_nul_and_terminal_escapes_is_stored_without_the_nul_and_printed_escaped() {
    let db = TestDb::migrated();
    let dev = Server::start(move |r: &Request| {
        let body = match r.target.split('?').next().unwrap_or("") {
            "/shelly" => json!({"id": "meter-nul", "name": "pump\u{0}\u{1b}[2J", "gen": 3,
                                "model": "S3EM-003CXCEU63\u{0}", "app": "S3EM", "ver": "1.4.4", "auth_en": false}),
            "/rpc/Shelly.GetStatus" => json!({
                "em:0": {"id": 0, "a_act_power": 100.0, "b_act_power": 0.0, "c_act_power": 0.0, "total_act_power": 100.0},
                "sys": {"unixtime": now()}}),
            _ => return (404, "{}".into()),
        };
        (200, body.to_string())
    });
    let host = format!("127.0.0.1:{}", dev.port);
    for _ in 0..2 {
        let out = shellyctl(
            &["snapshot", "--host", &host, "--retries", "0"],
            &[("DATABASE_URL", &db.url)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            !out.stdout.contains('\u{1b}'),
            "printed escaped: {}",
            out.stdout
        );
    }
    let mut c = db.client();
    let (name, model): (String, String) = {
        let r = c
            .query_one(
                "SELECT name, model FROM devices WHERE device_id = 'meter-nul'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (name.as_str(), model.as_str()),
        ("pump\u{1b}[2J", "S3EM-003CXCEU63")
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 2);
    attack(
        "device name with U+0000 and ANSI escapes",
        "stored without the NUL, printed escaped, readings kept",
    );
}

#[test]
fn a_tariff_file_with_an_absurd_price_or_a_hostile_name_is_refused_naming_the_file_and_field() {
    let db = TestDb::migrated();
    let example = shellyctl(&["tariff", "example", "g11"], &[]);
    assert_eq!(example.code, 0, "{}", example.stderr);
    let base: Value = serde_json::from_str(&example.stdout).unwrap();
    for (edit, field) in [
        (
            json!({"zones": [{"name": "all", "energy_price": "79228162514264337593543950335"}]}),
            "zones[0].energy_price",
        ),
        (json!({"name": "G11\u{1b}[2J"}), "name"),
        (json!({"name": "G11\u{0}"}), "name"),
    ] {
        let mut t = base.clone();
        for (k, v) in edit.as_object().unwrap() {
            if k == "zones" {
                t["zones"][0]["energy_price"] = v[0]["energy_price"].clone();
            } else {
                t[k] = v.clone();
            }
        }
        let out = import_tariff(&db, &t, &[]);
        assert_ne!(out.code, 0, "{field}: imported");
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
        assert!(
            out.stderr.contains("t.json"),
            "names the file: {}",
            out.stderr
        );
        assert!(!out.stderr.contains('\u{1b}'), "printed escaped");
    }
    assert_eq!(db.count("SELECT count(*) FROM tariffs"), 0);
    attack(
        "tariff with a 7.9e28 price, ANSI or NUL in its name",
        "refused at import naming the file and the field",
    );
}

#[test]
fn a_device_whose_records_go_back_decades_makes_a_few_months_of_partitions_not_hundreds() {
    let db = TestDb::migrated();
    let before =
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'energy_intervals'::regclass");
    // One record a month from 2000 to now in every page, whatever was asked.
    let t_now = now();
    let dev = device("shelly3em63g3-decades0000", 946_684_800, move |_| {
        let blocks: Vec<Value> = (0..)
            .map(|m: i64| 946_684_800 + m * 2_629_746 / 60 * 60)
            .take_while(|t| *t < t_now - 3600)
            .map(|t| json!({"ts": t, "period": 60, "values": [[1, 230]]}))
            .collect();
        page(json!(blocks), None)
    });
    let host = format!("127.0.0.1:{}", dev.port);
    let out = ingest(&db, &host, &[]);
    // The plausible records are stored; the run fails (1) naming the device
    // and what it sent, so a human looks at its clock.
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("shelly3em63g3-decades0000 (emdata:0) sent ")
            && out.stderr.contains(" implausible record(s)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("history_capped"), "{}", out.stderr);
    assert!(
        out.stderr.contains("is before the page asked for"),
        "{}",
        out.stderr
    );
    let after =
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'energy_intervals'::regclass");
    // The months of the last 400 days that hold a record (14 at most).
    assert!(after - before <= 14, "{before} -> {after} partitions");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM energy_intervals WHERE start_ts < to_timestamp({})",
            t_now - 401 * 86_400
        )),
        0
    );
    attack(
        "records one a month since 2000 in every page",
        "history capped at 400 days (warned), older records refused, a few partitions",
    );
}

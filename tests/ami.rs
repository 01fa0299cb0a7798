//! `shellyctl ami import`: the DSO's hourly data into ami_readings, exact
//! across DST, idempotent, corrected files replacing their hours, a bad
//! file refused whole.

mod common;
use common::*;
use std::path::Path;

/// A Tauron eLicznik export of 2026-10-25 (the fall-back day: 25 hours,
/// its repeated hour written twice as "3:00"), taken and fed in and the
/// DSO's balanced values; hour i (0-based) takes 0.1·i kWh, feeds in 0.
fn fall_back_day(changed_hour: Option<(usize, &str)>) -> String {
    let labels: Vec<u32> = [1, 2, 3, 3].into_iter().chain(4..=24).collect();
    let mut s = String::from("Data; Wartość kWh;Rodzaj\n");
    for kind in [
        "pobór",
        "oddanie",
        "pobrana po zbilansowaniu",
        "oddana po zbilansowaniu",
    ] {
        for (i, h) in labels.iter().enumerate() {
            let v = match (kind, changed_hour) {
                ("pobór", Some((c, v))) if c == i => v.to_string(),
                ("pobór" | "pobrana po zbilansowaniu", _) => format!("{},{}", i / 10, i % 10),
                _ => "0".into(),
            };
            s.push_str(&format!("2026-10-25 {h}:00;{v};{kind}\n"));
        }
    }
    s
}

fn import(db: &TestDb, files: &[&Path], extra: &[&str]) -> Run {
    let mut args = vec![
        "ami",
        "import",
        "--pod",
        "PL0037123456789",
        "--format",
        "json",
    ];
    let names: Vec<String> = files
        .iter()
        .map(|f| f.to_str().unwrap().to_string())
        .collect();
    args.extend(names.iter().map(String::as_str));
    args.extend_from_slice(extra);
    shellyctl(&args, &[("DATABASE_URL", &db.url)])
}

#[test]
fn a_dso_export_is_imported_exactly_once_and_a_correction_replaces_its_hours() {
    let db = TestDb::migrated();
    let dir = TempDir::new("ami");
    let file = Path::new(dir.path()).join("tauron.csv");
    std::fs::write(&file, fall_back_day(None)).unwrap();

    let run = import(&db, &[&file], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(
        (r["hours"].as_u64(), r["inserted"].as_u64()),
        (Some(25), Some(25))
    );
    // The repeated local hour is two UTC hours, each with its own value:
    // 02:00 CEST = 00:00 UTC (hour 2: 0.2 kWh), 02:00 CET = 01:00 UTC (0.3).
    let rows: Vec<(String, String, Option<String>)> = db
        .client()
        .query(
            "SELECT to_char(hour_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), import_kwh::text,
                    balanced_import_kwh::text
               FROM ami_readings WHERE pod = 'PL0037123456789' ORDER BY hour_start",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[0].0, "2026-10-24 22:00");
    assert_eq!(
        rows[2],
        ("2026-10-25 00:00".into(), "0.2".into(), Some("0.2".into()))
    );
    assert_eq!(
        rows[3],
        ("2026-10-25 01:00".into(), "0.3".into(), Some("0.3".into()))
    );
    assert_eq!(rows[24].0, "2026-10-25 22:00");

    // The same file again changes nothing.
    let again = import(&db, &[&file], &[]).json();
    assert_eq!(
        (
            again["inserted"].as_u64(),
            again["changed"].as_u64(),
            again["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(25))
    );
    // A corrected file replaces the hours it covers and says how many.
    std::fs::write(&file, fall_back_day(Some((7, "9,999")))).unwrap();
    let fixed = import(&db, &[&file], &[]).json();
    assert_eq!(
        (fixed["changed"].as_u64(), fixed["unchanged"].as_u64()),
        (Some(1), Some(24))
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ami_readings WHERE import_kwh = 9.999"),
        1
    );
}

#[test]
fn a_bad_file_is_refused_whole_with_its_line_and_nothing_is_written() {
    let db = TestDb::migrated();
    let dir = TempDir::new("ami-bad");
    let good = Path::new(dir.path()).join("good.csv");
    std::fs::write(&good, fall_back_day(None)).unwrap();
    let bad = Path::new(dir.path()).join("bad.csv");
    std::fs::write(&bad, fall_back_day(Some((4, "1,2,3")))).unwrap();
    let run = import(&db, &[&good, &bad], &[]);
    assert_eq!(run.code, 78, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("bad.csv: line 6: \"1,2,3\" is not a number"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ami_readings"),
        0,
        "nothing half imported"
    );

    // A day with an hour missing.
    let short: String = fall_back_day(None)
        .lines()
        .filter(|l| !l.starts_with("2026-10-25 24:00;") || !l.ends_with(";pobór"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&bad, short).unwrap();
    let run = import(&db, &[&bad], &[]);
    assert_eq!(run.code, 78);
    assert!(
        run.stderr.contains("2026-10-25 has 24 hours"),
        "{}",
        run.stderr
    );

    // A point of delivery that is not one.
    let run = shellyctl(
        &[
            "ami",
            "import",
            "--pod",
            "PL 1;DROP",
            good.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 78);
    assert_eq!(db.count("SELECT count(*) FROM ami_readings"), 0);
}

#[test]
fn reconcile_shows_the_shelly_beside_the_dso_hour_by_hour_with_the_drift() {
    // 2026-06-10, UTC hours. Shelly (channel A): 1 kWh in each of 10:00,
    // 11:00, 12:00 and 13:00, but the 13:15 quarter is missing (13:00 only
    // partly covered: not compared). DSO: 1.02 kWh at 10, 11, 12, 1.00 at
    // 13 and 14, nothing fed in, balanced values as taken.
    // Both sides: 10, 11, 12 → Shelly 3.000, DSO 3.060, diff −0.060,
    // drift −0.060 / 3.060 × 100 = −1.9608 → 1.96 % low on import.
    // Missing on the Shelly side: 13:00 (partial) and 14:00; on the DSO: 0.
    let db = TestDb::migrated();
    common::put_intervals(&db, "meter-1", "A", "2026-06-10T10:00:00Z", 16, "250", "0");
    db.client()
        .execute(
            "DELETE FROM energy_intervals WHERE start_ts = '2026-06-10T13:15:00Z'",
            &[],
        )
        .unwrap();
    common::rebuild_slots(&db);
    let dir = TempDir::new("reconcile");
    let file = Path::new(dir.path()).join("dso.csv");
    std::fs::write(
        &file,
        "start,import_kwh,export_kwh,balanced_import_kwh,balanced_export_kwh\n\
         2026-06-10T10:00:00Z,1.02,0,1.02,0\n\
         2026-06-10T11:00:00Z,1.02,0,1.02,0\n\
         2026-06-10T12:00:00Z,1.02,0,1.02,0\n\
         2026-06-10T13:00:00Z,1.00,0,1.00,0\n\
         2026-06-10T14:00:00Z,1.00,0,1.00,0\n",
    )
    .unwrap();
    assert_eq!(import(&db, &[&file], &[]).code, 0);
    let run = shellyctl(
        &[
            "report",
            "reconcile",
            "--month",
            "2026-06",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    let s = &r["summary"];
    assert_eq!(s["hours_both"], 3, "{r:#}");
    assert_eq!(s["hours_missing_on_shelly"], 2);
    assert_eq!(s["hours_missing_on_dso"], 0);
    assert_eq!(s["import_diff_kwh"], "-0.06");
    assert_eq!(s["import_drift_percent"], "-1.96");
    assert_eq!(s["export_drift_percent"], serde_json::Value::Null);
    assert_eq!(s["balanced_import_diff_kwh"], "-0.06");
    assert!(
        s["verdict"]
            .as_str()
            .unwrap()
            .starts_with("Shelly reads 1.96 % low on import"),
        "{s:#}"
    );
    let hours = r["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 5);
    assert_eq!(hours[0]["hour"], "2026-06-10 12:00 CEST");
    assert_eq!(hours[0]["import_diff_kwh"], "-0.02");
    assert_eq!(
        hours[3]["shelly"],
        serde_json::Value::Null,
        "13:00 UTC is partial"
    );
    assert_eq!(r["days"][0]["day"], "2026-06-10");
    // The SVG of the daily differences: one day, a bar for import
    // (−0.060) and one for export (0), the verdict in its title.
    let svg = Path::new(dir.path()).join("reconcile.svg");
    let plot = shellyctl(
        &[
            "report",
            "reconcile",
            "--month",
            "2026-06",
            "--plot",
            svg.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(plot.code, 0, "{}", plot.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(
        text.contains("<title>2026-06-10: -0.060 kWh</title>"),
        "{text}"
    );
    assert!(text.contains("Shelly reads 1.96 % low on import"));
    // CSV: a row per hour present on either side.
    let csv = shellyctl(
        &[
            "report",
            "reconcile",
            "--month",
            "2026-06",
            "--format",
            "csv",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    assert_eq!(csv.stdout.lines().count(), 6, "{}", csv.stdout);
}

#[test]
fn a_grid_meter_linked_to_its_point_of_delivery_reconciles_without_pod() {
    // Two points of delivery imported (the house and a garage); the grid
    // meter is linked to the house's, so reconcile needs no --pod.
    let db = TestDb::migrated();
    common::put_intervals(&db, "meter-1", "A", "2026-06-10T10:00:00Z", 4, "250", "0");
    let dir = TempDir::new("pod");
    let file = Path::new(dir.path()).join("dso.csv");
    std::fs::write(
        &file,
        "start,import_kwh,export_kwh\n2026-06-10T10:00:00Z,1.00,0\n",
    )
    .unwrap();
    assert_eq!(import(&db, &[&file], &[]).code, 0);
    let garage = shellyctl(
        &[
            "ami",
            "import",
            "--pod",
            "PL0037000000001",
            file.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(garage.code, 0, "{}", garage.stderr);
    let env = [("DATABASE_URL", db.url.as_str())];
    let ambiguous = shellyctl(&["report", "reconcile", "--month", "2026-06"], &env);
    assert_eq!(ambiguous.code, 78);
    assert!(
        ambiguous.stderr.contains("choose one with --pod"),
        "{}",
        ambiguous.stderr
    );
    // --pod only with the grid role, and a valid id.
    assert_eq!(
        shellyctl(
            &[
                "device",
                "set-role",
                "meter-1",
                "pv",
                "--pod",
                "PL0037123456789"
            ],
            &env
        )
        .code,
        2
    );
    assert_eq!(
        shellyctl(
            &["device", "set-role", "meter-1", "grid", "--pod", "PL 1"],
            &env
        )
        .code,
        78
    );
    let set = shellyctl(
        &[
            "device",
            "set-role",
            "meter-1",
            "grid",
            "--pod",
            "PL0037123456789",
        ],
        &env,
    );
    assert_eq!(set.code, 0, "{}", set.stderr);
    let r = shellyctl(
        &[
            "report",
            "reconcile",
            "--month",
            "2026-06",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["pod"], "PL0037123456789");
    assert_eq!(j["summary"]["hours_both"], 1);
    assert_eq!(j["summary"]["import_drift_percent"], "0");
}

/// A one-zone tariff (energy 0.50 + distribution 0.30 net per kWh, VAT
/// 23 %, export credited at 0.20, no fees) balancing as `balancing`.
fn plain_tariff(db: &TestDb, name: &str, balancing: &str) {
    let t = serde_json::json!({
        "name": name, "kind": "fixed", "currency": "PLN", "time_zone": "Europe/Warsaw",
        "valid_from": "2025-01-01", "vat_percent": "23", "balancing": balancing,
        "export": {"rule": "fixed_price", "price": "0.20"},
        "zones": [{"name": "all", "energy_price": "0.50", "distribution_price": "0.30"}]
    });
    let run = common::import_tariff(db, &t, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn report_costs_prices_the_dsos_readings_and_shows_them_beside_the_shelly() {
    // The DSO's 24 hours of the local day 2026-06-03 (22:00Z to 22:00Z):
    // 0.1 kWh taken in each hour (balanced 0.1/0), except
    //   10:00Z: taken 1.2, fed in 1.0, the DSO's balance 0.25 / 0 (its
    //           meter nets the phases its own way: taken as given);
    //   11:00Z: taken 0.4, fed in 1.0, no balanced values → netted here:
    //           0.4 − 1.0 = −0.6 → export 0.6.
    // Measured: import 22 × 0.1 + 1.2 + 0.4 = 3.8, export 2.0.
    // Hourly:  import 2.2 + 0.25 = 2.45, export 0.6.
    //   energy 2.45 × 0.50 = 1.225 → 1.23; distribution 2.45 × 0.30 = 0.735 → 0.74
    //   net 1.97; VAT 23 % × 1.97 = 0.4531 → 0.45; gross 2.42
    //   credit 0.6 × 0.20 = 0.12; total 2.42 − 0.12 = 2.30
    // None:    import 3.8, export 2.0: energy 1.90, distribution 1.14, net 3.04,
    //   VAT 0.6992 → 0.70, gross 3.74, credit 0.40, total 3.34.
    let db = TestDb::migrated();
    plain_tariff(&db, "T-HOUR", "hourly");
    plain_tariff(&db, "T-NONE", "none");
    let mut csv =
        String::from("start,import_kwh,export_kwh,balanced_import_kwh,balanced_export_kwh\n");
    for h in 0..24 {
        let t = chrono::DateTime::from_timestamp(1_780_524_000 - 86_400 + h * 3600, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ");
        csv.push_str(&match h {
            12 => format!("{t},1.2,1.0,0.25,0\n"),
            13 => format!("{t},0.4,1.0,,\n"),
            _ => format!("{t},0.1,0,0.1,0\n"),
        });
    }
    assert!(csv.contains("2026-06-03T10:00:00Z,1.2,1.0,0.25,0"), "{csv}");
    // One more hour on 2026-06-04, to show a day the file does not cover.
    csv.push_str("2026-06-04T08:00:00Z,0.5,0,0.5,0\n");
    let dir = TempDir::new("ami-costs");
    let file = Path::new(dir.path()).join("dso.csv");
    std::fs::write(&file, csv).unwrap();
    assert_eq!(import(&db, &[&file], &[]).code, 0);

    let env = [("DATABASE_URL", db.url.as_str())];
    let costs = |args: &[&str]| {
        let mut a = vec!["report", "costs", "--format", "json", "--now", "1798761600"];
        a.extend_from_slice(args);
        shellyctl(&a, &env)
    };
    let run = costs(&[
        "--tariff",
        "T-HOUR",
        "--from",
        "2026-06-03",
        "--data",
        "ami",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["data"], "ami");
    assert_eq!(r["pod"], "PL0037123456789");
    assert_eq!(
        (&r["measured_import_kwh"], &r["measured_export_kwh"]),
        (&"3.8".into(), &"2".into())
    );
    assert_eq!(
        (&r["import_kwh"], &r["export"]["kwh"]),
        (&"2.45".into(), &"0.6".into())
    );
    let money = |r: &serde_json::Value| {
        ["net", "vat", "gross", "total"].map(|k| r[k].as_str().unwrap().to_string())
    };
    assert_eq!(money(&r), ["1.97", "0.45", "2.42", "2.30"], "{r:#}");
    assert_eq!(r["export"]["credit"], "0.12");
    assert_eq!(r["complete"], true);
    assert!(
        r["notes"][0].as_str().unwrap().contains(
            "23 hour(s) with the DSO's own hourly balance, 1 hour(s) balanced here per hour"
        ),
        "{r:#}"
    );
    let r = costs(&[
        "--tariff",
        "T-NONE",
        "--from",
        "2026-06-03",
        "--data",
        "ami",
    ])
    .json();
    assert_eq!(money(&r), ["3.04", "0.70", "3.74", "3.34"], "{r:#}");
    assert_eq!(r["export"]["credit"], "0.40");

    // A day the file covers for one hour: 23 hours named missing, incomplete.
    let r = costs(&[
        "--tariff",
        "T-HOUR",
        "--from",
        "2026-06-04",
        "--data",
        "ami",
    ])
    .json();
    assert_eq!(r["complete"], false);
    assert_eq!(r["coverage"][0]["missing_count"], 23, "{r:#}");
    assert_eq!(
        r["coverage"][0]["missing_hours"][0],
        "2026-06-04 00:00 CEST"
    );
    // A month without DSO readings is refused, naming the point of delivery.
    let none = costs(&["--tariff", "T-HOUR", "--month", "2026-07", "--data", "ami"]);
    assert_eq!(none.code, 78);
    assert!(
        none.stderr.contains("no DSO readings of PL0037123456789"),
        "{}",
        none.stderr
    );

    // Without --data: the Shelly's bill, and the DSO's beside it. The
    // Shelly saw hours 10:00Z and 11:00Z only: A 1.2 / 0.4 kWh taken, C
    // 1.0 / 1.0 fed in → hourly 0.2 import, 0.6 export: energy 0.10,
    // distribution 0.06, net 0.16, VAT 0.0368 → 0.04, gross 0.20, credit
    // 0.12, total 0.08; Shelly − DSO = 0.08 − 2.30 = −2.22.
    common::put_intervals(&db, "meter-1", "A", "2026-06-03T10:00:00Z", 4, "300", "0");
    common::put_intervals(&db, "meter-1", "C", "2026-06-03T10:00:00Z", 8, "0", "250");
    common::put_intervals(&db, "meter-1", "A", "2026-06-03T11:00:00Z", 4, "100", "0");
    common::rebuild_slots(&db);
    let r = costs(&["--tariff", "T-HOUR", "--from", "2026-06-03"]).json();
    assert_eq!(r["data"], "shelly");
    assert_eq!(r["total"], "0.08", "{r:#}");
    assert_eq!(r["dso"]["pod"], "PL0037123456789");
    assert_eq!(r["dso"]["total"], "2.30");
    assert_eq!(r["dso"]["difference"], "-2.22");
    assert_eq!(r["dso"]["complete"], true);
    let table = shellyctl(
        &[
            "report",
            "costs",
            "--tariff",
            "T-HOUR",
            "--from",
            "2026-06-03",
            "--now",
            "1798761600",
        ],
        &env,
    );
    assert!(
        table
            .stdout
            .contains("total 2.30 PLN; Shelly − DSO -2.22 PLN"),
        "{}",
        table.stdout
    );
}

#[test]
fn exports_in_windows_1250_and_the_enea_and_daily_formats_are_imported() {
    let db = TestDb::migrated();
    let dir = TempDir::new("ami-formats");
    // Tauron's fall-back day saved as windows-1250 (ś, ó single bytes).
    let text = fall_back_day(None);
    let (cp1250, _, _) = encoding_rs::WINDOWS_1250.encode(&text);
    let tauron = Path::new(dir.path()).join("tauron-1250.csv");
    std::fs::write(&tauron, &cp1250).unwrap();
    let run = import(&db, &[&tauron], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(
        (r["hours"].as_u64(), r["encodings"][0].as_str()),
        (Some(25), Some("windows-1250"))
    );

    // Enea eBOK's balancing CSV, UTF-8 with a BOM: 2026-06-10 11:59 is
    // 11:00–12:00 CEST = 09:00Z.
    let enea = Path::new(dir.path()).join("enea.csv");
    std::fs::write(
        &enea,
        "\u{feff}Data;Wolumen energii elektrycznej pobranej z sieci przed bilansowaniem godzinowym;Wolumen energii elektrycznej oddanej do sieci przed bilansowaniem godzinowym;Wolumen energii elektrycznej pobranej z sieci po bilansowaniu godzinowym;Wolumen energii elektrycznej oddanej do sieci po bilansowaniu godzinowym\n\
         \"=\"\"2026-06-10 11:59\"\"\";\"0,120\";\"1,840\";\"0,000\";\"1,720\"\n",
    )
    .unwrap();
    let run = import(&db, &[&enea], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row: (String, String) = {
        let r = db
            .client()
            .query_one(
                "SELECT import_kwh::text, balanced_export_kwh::text FROM ami_readings
                  WHERE hour_start = '2026-06-10T09:00:00Z'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(row, ("0.120".to_string(), "1.720".to_string()));

    // The daily CP/CO file with two points of delivery: --pod chooses.
    let cells = |v: &str| vec![v; 24].join(";");
    let daily = format!(
        "kOSD;X;;\nDD;11-06-2026;;\nKod_PPE;Rodzaj;X\nPL0037123456789;CP;;{};\nPL0037123456789;CO;;{};\nOTHER;CP;;{};\n",
        cells(".250,+"),
        cells("0.000,+"),
        cells("9.000,+")
    );
    let file = Path::new(dir.path()).join("daily.csv");
    std::fs::write(&file, daily).unwrap();
    let run = import(&db, &[&file], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM ami_readings WHERE hour_start >= '2026-06-10T22:00:00Z'
               AND hour_start < '2026-06-11T22:00:00Z' AND import_kwh = 0.25"
        ),
        24
    );
}

#[test]
fn the_note_counts_the_reported_hours_not_the_replayed_net_metering_history() {
    // A net-metering tariff replays the settlement period before the report
    // (2026-06-01 .. 06-03) to know what is carried in. The note must
    // count how the report's own hours were balanced: on 2026-06-03, 23
    // with the DSO's balance and 1 without; the 24 hours of 06-02 (none
    // balanced by the DSO) belong to the history.
    let db = TestDb::migrated();
    let t = serde_json::json!({
        "name": "NM", "kind": "fixed", "currency": "PLN", "time_zone": "Europe/Warsaw",
        "valid_from": "2025-01-01", "vat_percent": "23", "balancing": "hourly",
        "export": {"rule": "net_metering", "coefficient": "0.8"},
        "zones": [{"name": "all", "energy_price": "0.50", "distribution_price": "0.30"}]
    });
    assert_eq!(common::import_tariff(&db, &t, &[]).code, 0);
    let mut csv =
        String::from("start,import_kwh,export_kwh,balanced_import_kwh,balanced_export_kwh\n");
    for h in 0..48 {
        let t = chrono::DateTime::from_timestamp(1_780_524_000 - 2 * 86_400 + h * 3600, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ");
        csv.push_str(&if h < 24 || h == 37 {
            format!("{t},0.1,0,,\n")
        } else {
            format!("{t},0.1,0,0.1,0\n")
        });
    }
    let dir = TempDir::new("ami-nm");
    let file = Path::new(dir.path()).join("dso.csv");
    std::fs::write(&file, csv).unwrap();
    assert_eq!(import(&db, &[&file], &[]).code, 0);
    let run = shellyctl(
        &[
            "report",
            "costs",
            "--format",
            "json",
            "--now",
            "1798761600",
            "--from",
            "2026-06-03",
            "--data",
            "ami",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert!(
        r["notes"][0].as_str().unwrap().ends_with(
            "23 hour(s) with the DSO's own hourly balance, 1 hour(s) balanced here per hour (the file has no balanced values for them)"
        ),
        "{r:#}"
    );
}

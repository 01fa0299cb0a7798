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

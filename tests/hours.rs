//! energy_hours (sql/0023, db::hours): the day rows of hourly sums that
//! year reports read instead of the 15-minute slots. They must give what
//! the slots give, whoever wrote the slots, and `slots check` must find a
//! row that does not.

mod common;
use common::*;
use rust_decimal::Decimal;
use shellyctl::db::{energy, hours};

const WARSAW: chrono_tz::Tz = chrono_tz::Europe::Warsaw;

/// Two meters from 2026-10-20 to 2026-11-03 (the autumn DST change inside)
/// in 5-minute records starting at :02, :07, ... (every third crosses a
/// slot boundary), phases A and C, with export on C, a missing day and 25
/// minutes missing inside one hour.
fn two_meters(db: &TestDb) {
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1'), ('meter-2');
         INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         SELECT d, ch, t, t + interval '5 minutes',
                CASE ch WHEN 'A' THEN 41.237 ELSE 3.1 END + (extract(epoch FROM t)::bigint % 7),
                CASE ch WHEN 'C' THEN 0.999 * (extract(epoch FROM t)::bigint % 5) ELSE 0 END, 'emdata:0'
           FROM unnest(ARRAY['meter-1', 'meter-2']) d,
                generate_series(timestamptz '2026-10-20 00:02+00', timestamptz '2026-11-02 23:57+00', interval '5 minutes') t,
                unnest(ARRAY['A', 'C']) ch
          WHERE NOT (t >= '2026-10-27 00:00+00' AND t < '2026-10-28 00:00+00')
            AND NOT (d = 'meter-2' AND t >= '2026-10-30 13:17+00' AND t < '2026-10-30 13:42+00')",
    )
    .unwrap();
    rebuild_slots(db);
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The day rows read for a report give, hour by hour, what the slots give:
/// the billed spans, the covered seconds, the measured totals, the coverage
/// per month and the partly covered hours. Over the DST change (Warsaw's
/// offsets are whole hours, so its local hours are UTC hours) and for a
/// range that starts and ends mid-day.
#[test]
fn hourly_sums_read_from_day_rows_equal_the_slots() {
    let db = TestDb::migrated();
    two_meters(&db);
    let devices = strings(&["meter-1", "meter-2"]);
    let pairs = strings(&["meter-1/A", "meter-1/C", "meter-2/A", "meter-2/C"]);
    let mut c = db.client();
    // 2026-10-19 22:00Z (Warsaw midnight) .. 2026-11-02 19:00Z (mid-day).
    for (from, to) in [
        (1_792_447_200, 1_793_646_000),
        (1_792_800_000, 1_792_900_800),
    ] {
        assert!(hours::whole_hours(WARSAW, from, to));
        let h = hours::load(&db.url, &devices, &pairs, from, to, WARSAW).unwrap();

        let mut want = energy::hourly_spans(&mut c, &devices, &pairs, from, to).unwrap();
        want.sort_by_key(|s| (s.start, s.meter));
        assert!(!want.is_empty());
        let got: Vec<_> = h
            .spans
            .iter()
            .map(|s| (s.meter, s.start, s.end, s.import_wh, s.export_wh))
            .collect();
        let want: Vec<_> = want
            .iter()
            .map(|s| (s.meter, s.start, s.end, s.import_wh, s.export_wh))
            .collect();
        assert_eq!(got, want, "spans {from}..{to}");

        let (_, covered) = energy::spans(&db.url, &devices, &pairs, from, to, 900, false).unwrap();
        assert_eq!(h.covered, covered, "covered {from}..{to}");

        let mut measured = energy::measured(&mut c, &devices, &pairs, from, to).unwrap();
        measured.sort();
        assert_eq!(h.measured, measured, "measured {from}..{to}");

        let by_month = energy::covered_by_month(&mut c, &pairs, from, to, WARSAW).unwrap();
        assert_eq!(
            h.covered_by_month, by_month,
            "coverage by month {from}..{to}"
        );

        for d in &devices {
            let want =
                energy::partly_covered_hours(&mut c, d, &pairs, from, to, "Europe/Warsaw").unwrap();
            let got = h.partly_covered.get(d).cloned().unwrap_or_default();
            assert_eq!(got, want, "partly covered hours of {d} {from}..{to}");
        }
    }
    // Partly covered hours of meter-2 (UTC): October 20 00:00 (records
    // start at 00:02), October 27 00:00 (only the 2 minutes of the record
    // from the day before), October 28 00:00 (starts at 00:02 again), and
    // October 30 13:00, which lacks 25 minutes. meter-1 lacks the last.
    let h = hours::load(
        &db.url,
        &devices,
        &pairs,
        1_792_447_200,
        1_793_646_000,
        WARSAW,
    )
    .unwrap();
    let edges = vec![1_792_454_400, 1_793_059_200, 1_793_145_600];
    assert_eq!(h.partly_covered["meter-1"], edges);
    let mut two = edges.clone();
    two.push(1_793_365_200);
    assert_eq!(h.partly_covered["meter-2"], two);
}

/// Half-hour zones cannot be read by UTC hour: those reports read the
/// slots (and say nothing different).
#[test]
fn ranges_that_are_not_whole_utc_hours_in_the_zone_are_refused() {
    let kolkata = chrono_tz::Asia::Kolkata;
    assert!(!hours::whole_hours(kolkata, 1_792_447_200, 1_793_646_000));
    assert!(!hours::whole_hours(
        WARSAW,
        1_792_447_200 + 900,
        1_793_646_000
    ));
    assert!(!hours::whole_hours(WARSAW, 1_793_646_000, 1_793_646_000));
    assert!(hours::whole_hours(chrono_tz::UTC, 0, 3600));
}

fn slots(db: &TestDb, args: &[&str]) -> Run {
    let mut a = vec!["slots"];
    a.extend_from_slice(args);
    shellyctl(&a, &[("DATABASE_URL", &db.url)])
}

/// `slots check` compares every day row with its slots and names a row
/// edited by hand; a range rebuild writes it again.
#[test]
fn slots_check_names_a_day_row_that_differs_and_rebuild_repairs_it() {
    let db = TestDb::migrated();
    two_meters(&db);
    let before = hour_rows(&db);
    // One row per meter, channel and UTC day with slots: October 20 to
    // November 3 (the last record ends at 00:02), 15 days, October 27 only
    // by the 2 minutes of the record that started at 23:57 the day before.
    assert_eq!(before.len(), 15 * 2 * 2);
    assert_eq!(
        db.count("SELECT count(DISTINCT (device_id, channel, (slot_start AT TIME ZONE 'UTC')::date)) FROM energy_slots"),
        60
    );
    let sum = |rows: &[HourRow]| {
        rows.iter()
            .flat_map(|r| r.3.iter())
            .copied()
            .sum::<Decimal>()
    };
    let slots_sum: Decimal = db
        .client()
        .query_one("SELECT sum(import_wh) FROM energy_slots", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum(&before), slots_sum);

    let ok = slots(&db, &["check", "--format", "json"]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert_eq!(ok.json()["hour_rows_compared"], 60);
    assert_eq!(ok.json()["hour_mismatches"], 0);

    db.client()
        .execute(
            "UPDATE energy_hours SET import_wh[5] = import_wh[5] + 0.001
              WHERE device_id = 'meter-2' AND channel = 'C' AND day = '2026-10-30'",
            &[],
        )
        .unwrap();
    db.client()
        .execute(
            "DELETE FROM energy_hours WHERE device_id = 'meter-1' AND channel = 'A' AND day = '2026-11-01'",
            &[],
        )
        .unwrap();
    let bad = slots(&db, &["check", "--format", "json"]);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    let j = bad.json();
    assert_eq!(j["mismatches"], 0, "the slots themselves are right");
    assert_eq!(j["hour_mismatches"], 2);
    let ex: Vec<(String, String, String, bool, bool)> = j["hour_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["device_id"].as_str().unwrap().into(),
                m["day"].as_str().unwrap().into(),
                m["channel"].as_str().unwrap().into(),
                m["stored"].as_bool().unwrap(),
                m["expected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ex,
        vec![
            (
                "meter-1".into(),
                "2026-11-01".into(),
                "A".into(),
                false,
                true
            ),
            (
                "meter-2".into(),
                "2026-10-30".into(),
                "C".into(),
                true,
                true
            ),
        ]
    );
    let table = slots(&db, &["check"]);
    assert_eq!(table.code, 1);
    assert!(
        table
            .stdout
            .contains("meter-2 2026-10-30 C: stored sums differ"),
        "{}",
        table.stdout
    );

    // A rebuild of one Warsaw day (2026-10-29 23:00Z .. 10-30 23:00Z) covers
    // the UTC days it touches: the edited row is right again, the deleted
    // one still missing.
    let one = slots(
        &db,
        &["rebuild", "--day", "2026-10-30", "--tz", "Europe/Warsaw"],
    );
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(
        slots(&db, &["check", "--format", "json"]).json()["hour_mismatches"],
        1
    );
    assert_eq!(slots(&db, &["rebuild"]).code, 0);
    assert_eq!(slots(&db, &["check"]).code, 0);
    assert_eq!(hour_rows(&db), before);
}

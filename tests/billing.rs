//! `report costs` as the seller bills it: balancing, net-billing deposit,
//! net-metering, per-kWh charges, capacity-fee tiers, dated overrides,
//! `--compare` and meter roles. Every expectation is computed by hand in
//! the comments; records are written directly into energy_intervals.

mod common;
use common::*;
use serde_json::{json, Value};

const LATER: &str = "1798761600"; // 2027-01-01: every test month is in the past

/// A one-zone tariff (energy 0.50, distribution 0.30 net, VAT 23%, no
/// fees) with `extra` merged over it.
fn tariff(name: &str, extra: Value) -> Value {
    let mut t = json!({
        "name": name,
        "kind": "fixed",
        "currency": "PLN",
        "time_zone": "Europe/Warsaw",
        "valid_from": "2025-01-01",
        "vat_percent": "23",
        "zones": [{"name": "all", "energy_price": "0.50", "distribution_price": "0.30"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

use common::import_tariff as import;

fn imported(db: &TestDb, t: &Value) {
    let out = import(db, t, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

use common::put_intervals as put;

fn costs(db: &TestDb, args: &[&str]) -> Value {
    let out = costs_run(db, args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

fn costs_run(db: &TestDb, args: &[&str]) -> Run {
    costs_at(db, LATER, "json", args)
}

/// `report costs --format FORMAT --now NOW ARGS...`.
fn costs_at(db: &TestDb, now: &str, format: &str, args: &[&str]) -> Run {
    let mut a = vec!["report", "costs", "--format", format, "--now", now];
    a.extend_from_slice(args);
    shellyctl(&a, &[("DATABASE_URL", &db.url)])
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut at = v;
    for k in path.split('.') {
        at = match k.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[k],
        };
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v}"))
}

fn prices(db: &TestDb, tariff: &str, series: &str, csv: &str) -> Run {
    let dir = TempDir::new("prices");
    let f = dir.0.join("p.csv");
    std::fs::write(&f, csv).unwrap();
    shellyctl(
        &[
            "tariff",
            "prices",
            "import",
            f.to_str().unwrap(),
            "--tariff",
            tariff,
            "--series",
            series,
        ],
        &[("DATABASE_URL", &db.url)],
    )
}

#[test]
fn a_prosumer_day_gives_three_different_bills_under_the_three_balancing_rules() {
    // 2026-06-03, CEST. Hour 12:00-13:00 (10:00Z), per quarter: A imports
    // 300 Wh; C exports 500, 500, 0, 0. Hour 13:00-14:00 (11:00Z): A 100,
    // C 250 each quarter. Measured: import 1.6 kWh, export 2.0 kWh.
    //   none:       import 1.6, export 2.0
    //   per_record: quarters net −200, −200, +300, +300, then −150 ×4
    //               → import 0.6, export 0.4 + 0.6 = 1.0
    //   hourly:     1200 − 1000 = +200; 400 − 1000 = −600 → import 0.2, export 0.6
    // Prices 0.50 + 0.30 per kWh, VAT 23 %, export credited at 0.20:
    //   none:       0.80 + 0.48 = 1.28, VAT 0.2944 → 0.29, gross 1.57, credit 0.40, total 1.17
    //   per_record: 0.30 + 0.18 = 0.48, VAT 0.1104 → 0.11, gross 0.59, credit 0.20, total 0.39
    //   hourly:     0.10 + 0.06 = 0.16, VAT 0.0368 → 0.04, gross 0.20, credit 0.12, total 0.08
    let db = TestDb::migrated();
    let export = json!({"rule": "fixed_price", "price": "0.20"});
    for (name, b) in [
        ("T-NONE", "none"),
        ("T-REC", "per_record"),
        ("T-HOUR", "hourly"),
    ] {
        imported(
            &db,
            &tariff(name, json!({"balancing": b, "export": export})),
        );
    }
    put(&db, "meter-1", "A", "2026-06-03T10:00:00Z", 4, "300", "0");
    for (q, exp) in ["500", "500", "0", "0"].iter().enumerate() {
        let start = format!("2026-06-03T10:{:02}:00Z", q * 15);
        put(&db, "meter-1", "C", &start, 1, "0", exp);
    }
    put(&db, "meter-1", "A", "2026-06-03T11:00:00Z", 4, "100", "0");
    put(&db, "meter-1", "C", "2026-06-03T11:00:00Z", 4, "0", "250");

    let expect = [
        (
            "T-NONE",
            "none",
            "1.6",
            "2",
            "0",
            ["1.28", "0.29", "1.57", "0.40", "1.17"],
        ),
        (
            "T-REC",
            "per_record",
            "0.6",
            "1",
            "1",
            ["0.48", "0.11", "0.59", "0.20", "0.39"],
        ),
        (
            "T-HOUR",
            "hourly",
            "0.2",
            "0.6",
            "1.4",
            ["0.16", "0.04", "0.20", "0.12", "0.08"],
        ),
    ];
    for (name, balancing, imp, exp, own, money) in expect {
        let r = costs(&db, &["--tariff", name, "--from", "2026-06-03"]);
        assert_eq!(s(&r, "balancing"), balancing);
        assert_eq!(
            (s(&r, "measured_import_kwh"), s(&r, "measured_export_kwh")),
            ("1.6", "2"),
            "{name}"
        );
        assert_eq!(
            (
                s(&r, "import_kwh"),
                s(&r, "export.kwh"),
                s(&r, "self_consumed_kwh")
            ),
            (imp, exp, own),
            "{name}"
        );
        assert_eq!(
            [
                s(&r, "net"),
                s(&r, "vat"),
                s(&r, "gross"),
                s(&r, "export.credit"),
                s(&r, "total")
            ],
            money,
            "{name}"
        );
        // The measured view keeps the phases apart.
        let phases: Vec<(&str, &str, &str)> = r["measured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (s(m, "phase"), s(m, "import_kwh"), s(m, "export_kwh")))
            .collect();
        assert_eq!(phases, [("A", "1.6", "0"), ("C", "0", "2")]);
    }
    let table = shellyctl(
        &[
            "report",
            "costs",
            "--tariff",
            "T-HOUR",
            "--from",
            "2026-06-03",
            "--now",
            LATER,
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert!(
        table.stdout.contains(
            "measured: import 1.6 kWh, export 2 kWh; billed: import 0.2 kWh, export 0.6 kWh; self-consumed 1.4 kWh"
        ),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("note: balancing hourly (ustawa o OZE)"),
        "{}",
        table.stdout
    );
}

/// Quarter-hour export prices for the local day 2026-06-10: 0.25, except
/// 12:00-15:00 as given.
fn rce_june_10() -> String {
    let mut csv = String::from("start;price\n");
    for q in 0..96 {
        let (h, m) = (q / 4, q % 4 * 15);
        let p = match (h, m) {
            (12, 0) => "0,40",
            (12, 15) => "0,20",
            (12, 30) => "-0,10",
            (12, 45) => "0,30",
            (13, 0) => "-0,30",
            (13, 15) => "-0,10",
            (13, 30) => "0,20",
            (13, 45) => "0,00",
            (14, _) => "0,10",
            _ => "0,25",
        };
        csv.push_str(&format!("2026-06-10 {h:02}:{m:02};{p}\n"));
    }
    csv
}

fn net_billing(db: &TestDb) {
    imported(
        db,
        &tariff(
            "NB",
            json!({"balancing": "hourly", "export": {"rule": "net_billing"}}),
        ),
    );
    let out = prices(db, "NB", "export", &rce_june_10());
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn net_billing_values_each_hour_at_its_mean_price_clamped_after_averaging() {
    // 2026-06-10 (CEST). Export on phase C: 12:00 4 kWh, 13:00 2 kWh,
    // 14:00 1 kWh; import on A: 20:00 2 kWh.
    // Hourly means of the quarter prices:
    //   12:00 (0.40 + 0.20 − 0.10 + 0.30) / 4 = 0.20   (the negative quarter counts)
    //   13:00 (−0.30 − 0.10 + 0.20 + 0.00) / 4 = −0.05 → 0 (clamped after averaging;
    //         clamping the quarters first would give 0.05)
    //   14:00 0.10
    // Market value 4 × 0.20 + 2 × 0 + 1 × 0.10 = 0.90; deposit 0.90 × 1.23 = 1.107 → 1.11.
    // Bill: 2 kWh × 0.50 = 1.00 energy, × 0.30 = 0.60 distribution, net 1.60,
    //   VAT 0.368 → 0.37, gross 1.97. Gross energy 1.00 × 1.23 = 1.23 > 1.11:
    //   the deposit pays 1.11, nothing is left; total 1.97 − 1.11 = 0.86.
    let db = TestDb::migrated();
    net_billing(&db);
    put(&db, "meter-1", "C", "2026-06-10T10:00:00Z", 4, "0", "1000");
    put(&db, "meter-1", "C", "2026-06-10T11:00:00Z", 4, "0", "500");
    put(&db, "meter-1", "C", "2026-06-10T12:00:00Z", 4, "0", "250");
    put(&db, "meter-1", "A", "2026-06-10T18:00:00Z", 4, "500", "0");
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!(s(&r, "export.rule"), "net_billing");
    assert_eq!(s(&r, "export.kwh"), "7");
    assert_eq!(s(&r, "export.market_value"), "0.90");
    assert_eq!(s(&r, "export.credit"), "0.00");
    let d = &r["export"]["deposit"];
    assert_eq!(
        [
            s(d, "opening"),
            s(d, "earned"),
            s(d, "paid"),
            s(d, "closing")
        ],
        ["0.00", "1.11", "1.11", "0.00"]
    );
    assert_eq!(s(d, "months.0.energy_gross"), "1.23");
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross"), s(&r, "total")],
        ["1.60", "0.37", "1.97", "0.86"]
    );

    // An hour with export and no price is an error naming the hour.
    put(&db, "meter-1", "C", "2026-06-11T10:00:00Z", 1, "0", "100");
    let out = costs_run(&db, &["--month", "2026-06"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("tariff NB has no export price for the hour 2026-06-11 12:00"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_deposit_larger_than_the_energy_part_carries_over_and_distribution_is_still_paid() {
    // June: export 10 kWh at 12:00 (mean 0.20) → 2.00 × 1.23 = 2.46 deposit.
    //   Import 2 kWh at 20:00: energy 1.00, distribution 0.60, net 1.60,
    //   VAT 0.37, gross 1.97; gross energy 1.23 paid from the deposit;
    //   1.23 left; total 1.97 − 1.23 = 0.74 (distribution and its VAT paid).
    // July: import 3 kWh on the 15th: energy 1.50, distribution 0.90, net 2.40,
    //   VAT 0.552 → 0.55, gross 2.95; gross energy 1.50 × 1.23 = 1.845 → 1.85,
    //   of which the 1.23 carried over pays 1.23; total 2.95 − 1.23 = 1.72.
    // June + July: 5 kWh: energy 2.50, distribution 1.50, net 4.00, VAT 0.92,
    //   gross 4.92; deposit earned 2.46, paid 1.23 + 1.23 = 2.46; total 2.46.
    let db = TestDb::migrated();
    net_billing(&db);
    put(&db, "meter-1", "C", "2026-06-10T10:00:00Z", 4, "0", "2500");
    put(&db, "meter-1", "A", "2026-06-10T18:00:00Z", 4, "500", "0");
    put(&db, "meter-1", "A", "2026-07-15T10:00:00Z", 4, "750", "0");

    let june = costs(&db, &["--month", "2026-06"]);
    let d = &june["export"]["deposit"];
    assert_eq!(
        [s(d, "earned"), s(d, "paid"), s(d, "closing")],
        ["2.46", "1.23", "1.23"]
    );
    assert_eq!(s(&june, "zones.0.distribution_net"), "0.60");
    assert_eq!([s(&june, "gross"), s(&june, "total")], ["1.97", "0.74"]);

    let july = costs(&db, &["--month", "2026-07", "--opening-deposit", "1.23"]);
    let d = &july["export"]["deposit"];
    assert_eq!(
        [
            s(d, "opening"),
            s(d, "earned"),
            s(d, "paid"),
            s(d, "closing")
        ],
        ["1.23", "0.00", "1.23", "0.00"]
    );
    assert_eq!(s(d, "months.0.energy_gross"), "1.85");
    assert_eq!([s(&july, "gross"), s(&july, "total")], ["2.95", "1.72"]);

    let both = costs(&db, &["--from", "2026-06-01", "--to", "2026-07-31"]);
    let d = &both["export"]["deposit"];
    assert_eq!(
        [s(d, "earned"), s(d, "paid"), s(d, "closing")],
        ["2.46", "2.46", "0.00"]
    );
    let months: Vec<(&str, &str, &str)> = d["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (s(m, "month"), s(m, "paid"), s(m, "balance")))
        .collect();
    assert_eq!(
        months,
        [("2026-06", "1.23", "1.23"), ("2026-07", "1.23", "0.00")]
    );
    assert_eq!(
        [
            s(&both, "net"),
            s(&both, "vat"),
            s(&both, "gross"),
            s(&both, "total")
        ],
        ["4.00", "0.92", "4.92", "2.46"]
    );
}

#[test]
fn an_unused_deposit_is_refunded_up_to_its_cap_after_twelve_months_and_the_rest_expires() {
    // June 2026: export 10 kWh at 12:00 (hourly mean 0.20): market value
    //   2.00, deposit 2.00 × 1.23 = 2.46, nothing imported, nothing paid.
    // June 2027 the June 2026 deposit is 12 months old, unused:
    //   default refund cap 30 % × 2.00 = 0.60 refunded, 2.46 − 0.60 = 1.86
    //   lost; with "refund_percent": "20" (the monthly RCEm): 0.40 refunded,
    //   2.06 lost.
    // No import, no fees: net, VAT and gross 0.00; the refund is paid out:
    //   total 0.00 − 0.60 = −0.60 (−0.40 at 20 %).
    let db = TestDb::migrated();
    net_billing(&db);
    imported(
        &db,
        &tariff(
            "NB20",
            json!({"balancing": "hourly", "export": {"rule": "net_billing", "refund_percent": "20"}}),
        ),
    );
    let out = prices(&db, "NB20", "export", &rce_june_10());
    assert_eq!(out.code, 0, "{}", out.stderr);
    put(&db, "meter-1", "C", "2026-06-10T10:00:00Z", 4, "0", "2500");
    let later = "1814400000"; // 2027-07-03: June 2027 is in the past
    for (name, refund_percent, refunded, expired, total) in [
        ("NB", "30", "0.60", "1.86", "-0.60"),
        ("NB20", "20", "0.40", "2.06", "-0.40"),
    ] {
        let out = costs_at(
            &db,
            later,
            "json",
            &[
                "--tariff",
                name,
                "--from",
                "2026-06-01",
                "--to",
                "2027-06-30",
            ],
        );
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let r = out.json();
        assert_eq!(s(&r, "export.market_value"), "2.00", "{name}");
        let d = &r["export"]["deposit"];
        assert_eq!(
            [
                s(d, "refund_percent"),
                s(d, "earned"),
                s(d, "paid"),
                s(d, "refunded"),
                s(d, "expired"),
                s(d, "closing"),
            ],
            [refund_percent, "2.46", "0.00", refunded, expired, "0.00"],
            "{name}"
        );
        assert_eq!(s(d, "lots.0.credited_for"), "2026-06", "{name}");
        assert_eq!(s(d, "lots.0.expires"), "2027-06-01", "{name}");
        assert_eq!(s(d, "lots.0.refund_cap"), refunded, "{name}");
        assert_eq!([s(&r, "gross"), s(&r, "total")], ["0.00", total], "{name}");
    }
    // --compare prints the refund in its own column, so each total is
    // gross − credit − deposit paid − deposit refunded: 0.00 − 0.60 for NB
    // (the cheaper), 0.00 − 0.40 for NB20, 0.20 more.
    let cmp = costs_at(
        &db,
        later,
        "json",
        &[
            "--compare",
            "NB,NB20",
            "--from",
            "2026-06-01",
            "--to",
            "2027-06-30",
        ],
    );
    assert_eq!(cmp.code, 0, "{}", cmp.stderr);
    let cmp = cmp.json();
    let rows: Vec<[&str; 5]> = cmp["tariffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            [
                s(t, "tariff"),
                s(t, "deposit_paid"),
                s(t, "deposit_refunded"),
                s(t, "total"),
                s(t, "difference"),
            ]
        })
        .collect();
    assert_eq!(
        rows,
        [
            ["NB", "0.00", "0.60", "-0.60", "0.00"],
            ["NB20", "0.00", "0.40", "-0.40", "0.20"]
        ]
    );
    // The CSV has the whole statement: opening + earned − paid − refunded
    // − expired = closing (0 + 2.46 − 0 − 0.60 − 1.86 = 0).
    let csv = costs_at(
        &db,
        later,
        "csv",
        &[
            "--tariff",
            "NB",
            "--from",
            "2026-06-01",
            "--to",
            "2027-06-30",
        ],
    );
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    for (row, amount) in [
        ("deposit_opening", "0.00"),
        ("deposit_earned", "2.46"),
        ("deposit_paid", "0.00"),
        ("deposit_refunded", "0.60"),
        ("deposit_expired", "1.86"),
        ("deposit_closing", "0.00"),
    ] {
        assert!(
            csv.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{row},")) && l.contains(&format!(",{amount},"))),
            "{row} {amount}:\n{}",
            csv.stdout
        );
    }
    // Before it expires, the table says until when it pays and what comes back.
    let table = costs_at(
        &db,
        later,
        "table",
        &["--tariff", "NB", "--month", "2026-06"],
    );
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains(
            "deposit credited for 2026-06: 2.46 of 2.46 left, usable until 2027-05-31 \
             (then up to 0.60 refunded: 30 % of its export's market value)"
        ),
        "{}",
        table.stdout
    );
}

#[test]
fn net_metering_offsets_import_by_eight_tenths_of_export_charges_included() {
    // June 2026, hourly balancing, coefficient 0.8, quality fee 0.0331/kWh.
    // Import 10 kWh (20:00), export 5 kWh (12:00): offset min(10, 0.8 × 5) = 4,
    // charged 6 kWh: energy 3.00, distribution 1.80, quality 6 × 0.0331 =
    // 0.1986 → 0.20; net 5.00, VAT 1.15, gross 6.15.
    // With 10 kWh more export (15 in all): offset min(10, 12) = 10, nothing
    // charged, unused export 15 − 10 / 0.8 = 2.5 kWh.
    let db = TestDb::migrated();
    imported(
        &db,
        &tariff(
            "NM",
            json!({"balancing": "hourly",
                   "export": {"rule": "net_metering", "coefficient": "0.8"},
                   "per_kwh_charges": [{"name": "opłata jakościowa", "net": "0.0331"}]}),
        ),
    );
    put(&db, "meter-1", "A", "2026-06-10T18:00:00Z", 4, "2500", "0");
    put(&db, "meter-1", "C", "2026-06-10T10:00:00Z", 4, "0", "1250");
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!(
        [s(&r, "zones.0.kwh"), s(&r, "zones.0.offset_kwh")],
        ["10", "4"]
    );
    assert_eq!(
        [
            s(&r, "zones.0.energy_net"),
            s(&r, "zones.0.distribution_net")
        ],
        ["3.00", "1.80"]
    );
    assert_eq!(
        [s(&r, "charges.0.kwh"), s(&r, "charges.0.net")],
        ["6", "0.20"]
    );
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross"), s(&r, "total")],
        ["5.00", "1.15", "6.15", "6.15"]
    );
    assert_eq!(
        [s(&r, "export.offset_kwh"), s(&r, "export.unused_kwh")],
        ["4", "0"]
    );

    put(&db, "meter-1", "C", "2026-06-10T11:00:00Z", 4, "0", "2500");
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!(
        [
            s(&r, "export.offset_kwh"),
            s(&r, "export.unused_kwh"),
            s(&r, "total")
        ],
        ["10", "2.5", "0.00"]
    );
}

#[test]
fn the_capacity_fee_tier_switches_above_1200_kwh_of_the_twelve_months_before() {
    // One 100 kWh record on the 1st of each month, 2025-12 .. 2026-11 (local
    // midnight): the 12 months before December 2026 hold 1200 kWh → tier
    // "500–1200" (up to and including 1200): 10.31, VAT 2.3713 → 2.37,
    // gross 12.68. One more Wh (1200.001 kWh) → "1200–2800": 17.18,
    // VAT 3.9514 → 3.95, gross 21.13. A declared 3000 kWh → "> 2800": 24.05.
    let db = TestDb::migrated();
    let t = tariff(
        "CAP",
        json!({"balancing": "hourly", "capacity_fees": [{"name": "opłata mocowa", "valid_from": "2026-01-01",
            "tiers": [{"up_to_kwh": "500", "net": "4.29"}, {"up_to_kwh": "1200", "net": "10.31"},
                      {"up_to_kwh": "2800", "net": "17.18"}, {"net": "24.05"}]}]}),
    );
    imported(&db, &t);
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id) VALUES ('meter-1')", &[])
        .unwrap();
    // Every quarter hour of the 12 months is covered (a complete basis):
    // the 100 kWh in the first quarter hour of each local month, 0 after.
    c.execute(
        "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         SELECT 'meter-1', 'A', q, q + interval '15 minutes',
                CASE WHEN (q AT TIME ZONE 'Europe/Warsaw') = date_trunc('month', q AT TIME ZONE 'Europe/Warsaw')
                     THEN 100000 ELSE 0 END, 0, 'emdata:0'
           FROM generate_series(timestamptz '2025-12-01 00:00 Europe/Warsaw', timestamptz '2026-12-01 00:00 Europe/Warsaw' - interval '15 minutes',
                                interval '15 minutes') q",
        &[],
    )
    .unwrap();
    rebuild_slots(&db);
    let r = costs(&db, &["--month", "2026-12"]);
    let cap = &r["capacity_fees"][0];
    assert_eq!(
        [
            s(cap, "tier"),
            s(cap, "annual_kwh"),
            s(cap, "basis"),
            s(cap, "net")
        ],
        ["500–1200 kWh", "1200", "measured", "10.31"]
    );
    assert_eq!(cap["basis_complete"], true, "{cap:#}");
    assert_eq!(cap["basis_missing_hours"], "0");
    assert_eq!([s(&r, "vat"), s(&r, "gross")], ["2.37", "12.68"]);

    // A whole day without records (2026-03-10, local): the basis misses 24 h,
    // says so, and is not complete; the tier is still the measured one.
    c.execute(
        "DELETE FROM energy_intervals WHERE start_ts >= timestamptz '2026-03-10 00:00 Europe/Warsaw'
            AND start_ts < timestamptz '2026-03-11 00:00 Europe/Warsaw'",
        &[],
    )
    .unwrap();
    rebuild_slots(&db);
    let r = costs(&db, &["--month", "2026-12"]);
    let cap = &r["capacity_fees"][0];
    assert_eq!(cap["basis_complete"], false, "{cap:#}");
    assert_eq!(cap["basis_missing_hours"], "24");
    assert!(r["notes"].as_array().unwrap().iter().any(|n| n
        .as_str()
        .unwrap()
        .contains("the records miss 24 h of the 12 months")));
    assert_eq!(s(cap, "tier"), "500–1200 kWh");

    put(&db, "meter-1", "B", "2026-11-14T23:00:00Z", 1, "1", "0");
    let r = costs(&db, &["--month", "2026-12"]);
    let cap = &r["capacity_fees"][0];
    assert_eq!(
        [s(cap, "tier"), s(cap, "annual_kwh"), s(cap, "net")],
        ["1200–2800 kWh", "1200.001", "17.18"]
    );
    assert_eq!([s(&r, "vat"), s(&r, "gross")], ["3.95", "21.13"]);

    // November's 12 months (2025-11 .. 2026-10) hold 1100 kWh, but the data
    // start in December 2025: the basis is marked incomplete and said so
    // (November 2025: 30 days = 720 h, and the missing March day: 744 h).
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(r["capacity_fees"][0]["basis_complete"], false);
    assert_eq!(r["capacity_fees"][0]["basis_missing_hours"], "744");
    assert!(r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("set declared_annual_kwh")));

    let mut declared = t.clone();
    declared["declared_annual_kwh"] = "3000".into();
    assert_eq!(import(&db, &declared, &["--replace"]).code, 0);
    let r = costs(&db, &["--month", "2026-12"]);
    let cap = &r["capacity_fees"][0];
    assert_eq!(
        [s(cap, "tier"), s(cap, "basis"), s(cap, "net")],
        ["> 2800 kWh", "declared", "24.05"]
    );
}

#[test]
fn a_price_freeze_on_part_of_a_month_applies_and_its_correction_shows_at_once() {
    // November 2026, 1 kWh/h on phase A: 720 kWh, 360 in Nov 1-15.
    // Freeze at 0.40 from Nov 1 to Nov 16 (exclusive): energy 360 × 0.40 +
    // 360 × 0.50 = 144 + 180 = 324.00; distribution 720 × 0.30 = 216.00.
    // Fees: "abonament" 5.00 at VAT 8 %; "opłata przejściowa" 4.00 from
    // Nov 16 → 15/30 → 2.00.
    //   net 324 + 216 + 5 + 2 = 547.00
    //   VAT 23 % of 542.00 = 124.66; 8 % of 5.00 = 0.40; VAT 125.06; gross 672.06
    // Corrected to end on Nov 21: 480 × 0.40 + 240 × 0.50 = 192 + 120 = 312.00;
    //   net 535.00; VAT 23 % of 530.00 = 121.90 + 0.40 = 122.30; gross 657.30
    let db = TestDb::migrated();
    let mut t = tariff(
        "FRZ",
        json!({
            "price_overrides": [{"name": "price freeze", "valid_from": "2026-11-01", "valid_to": "2026-11-16", "energy_price": "0.40"}],
            "fixed_monthly_fees": [
                {"name": "abonament", "net": "5.00", "vat_percent": "8"},
                {"name": "opłata przejściowa", "net": "4.00", "valid_from": "2026-11-16"}
            ]
        }),
    );
    imported(&db, &t);
    put(
        &db,
        "meter-1",
        "A",
        "2026-10-31T23:00:00Z",
        2880,
        "250",
        "0",
    );
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(
        [
            s(&r, "zones.0.kwh"),
            s(&r, "zones.0.energy_net"),
            s(&r, "zones.0.distribution_net")
        ],
        ["720", "324.00", "216.00"]
    );
    let fees: Vec<(&str, &str)> = r["fixed_fees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (s(f, "months"), s(f, "net")))
        .collect();
    assert_eq!(fees, [("1", "5.00"), ("0.5", "2.00")]);
    assert_eq!(r["vat_percent"], Value::Null, "two rates");
    let vat: Vec<(&str, &str, &str)> = r["vat_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (s(l, "vat_percent"), s(l, "base"), s(l, "vat")))
        .collect();
    assert_eq!(vat, [("8", "5.00", "0.40"), ("23", "542.00", "124.66")]);
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross")],
        ["547.00", "125.06", "672.06"]
    );
    assert_eq!(
        s(&r, "overrides_applied.0"),
        "price freeze (2026-11-01 – 2026-11-16)"
    );

    t["price_overrides"][0]["valid_to"] = "2026-11-21".into();
    assert_eq!(import(&db, &t, &["--replace"]).code, 0);
    let r = costs(&db, &["--month", "2026-11"]);
    assert_eq!(s(&r, "zones.0.energy_net"), "312.00");
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross")],
        ["535.00", "122.30", "657.30"]
    );
}

#[test]
fn compare_prices_the_same_records_under_three_tariffs() {
    // 2026-06-03 (Wednesday), 1 kWh every hour, no fees, VAT 23 %:
    //   FLAT  24 × 0.80 = 19.20, VAT 4.416 → 4.42, gross 23.62
    //   TWO   16 peak h (06-22) × 0.90 + 8 × 0.50 = 14.40 + 4.00 = 18.40,
    //         VAT 4.232 → 4.23, gross 22.63
    //   THREE 24 × 0.75 = 18.00, VAT 4.14, gross 22.14  ← cheapest
    // Differences: 1.48, 0.49, 0.00.
    let db = TestDb::migrated();
    let one =
        |name: &str, p: &str| tariff(name, json!({"zones": [{"name": "all", "energy_price": p}]}));
    imported(&db, &one("FLAT", "0.80"));
    imported(&db, &one("THREE", "0.75"));
    imported(
        &db,
        &tariff(
            "TWO",
            json!({"zones": [{"name": "peak", "energy_price": "0.90"}, {"name": "offpeak", "energy_price": "0.50"}],
                   "schedule": [{"day_types": ["weekday", "saturday", "sunday"], "ranges": [
                       {"from": "00:00", "to": "06:00", "zone": "offpeak"},
                       {"from": "06:00", "to": "22:00", "zone": "peak"},
                       {"from": "22:00", "to": "24:00", "zone": "offpeak"}]}]}),
        ),
    );
    put(&db, "meter-1", "A", "2026-06-02T22:00:00Z", 96, "250", "0");
    let r = costs(
        &db,
        &["--compare", "FLAT,TWO,THREE", "--from", "2026-06-03"],
    );
    assert_eq!(r["cheapest"], "THREE");
    let lines: Vec<(&str, &str, &str)> = r["tariffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (s(l, "tariff"), s(l, "total"), s(l, "difference")))
        .collect();
    assert_eq!(
        lines,
        [
            ("FLAT", "23.62", "1.48"),
            ("TWO", "22.63", "0.49"),
            ("THREE", "22.14", "0.00")
        ]
    );
    let table = shellyctl(
        &[
            "report",
            "costs",
            "--compare",
            "FLAT,TWO,THREE",
            "--from",
            "2026-06-03",
            "--now",
            LATER,
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("cheapest THREE"), "{}", table.stdout);
    assert_eq!(
        costs_run(&db, &["--compare", "FLAT,NOPE", "--from", "2026-06-03"]).code,
        78
    );
}

#[test]
fn only_the_grid_meter_is_billed_and_unmarked_meters_are_not_silently_added() {
    // meter-1 (the grid connection) 1 kWh/h, meter-2 (a sub-meter behind it)
    // 0.5 kWh/h on 2026-06-03: billed 24 kWh × 0.80 = 19.20.
    let db = TestDb::migrated();
    imported(
        &db,
        &tariff(
            "G",
            json!({"zones": [{"name": "all", "energy_price": "0.80"}]}),
        ),
    );
    put(&db, "meter-1", "A", "2026-06-02T22:00:00Z", 96, "250", "0");
    put(&db, "meter-2", "A", "2026-06-02T22:00:00Z", 96, "125", "0");
    let out = costs_run(&db, &["--from", "2026-06-03"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr.contains(
            "2 meters have interval data in the period (meter-1: no role, meter-2: no role) and none is marked as the grid connection"
        ),
        "{}",
        out.stderr
    );
    let set = |id: &str, role: &str| {
        shellyctl(
            &["device", "set-role", id, role],
            &[("DATABASE_URL", &db.url)],
        )
    };
    assert_eq!(set("meter-1", "grid").code, 0);
    assert_eq!(set("meter-2", "submeter").code, 0);
    let missing = set("meter-9", "grid");
    assert_eq!(missing.code, 78);
    assert!(
        missing.stderr.contains("no device \"meter-9\""),
        "{}",
        missing.stderr
    );

    let r = costs(&db, &["--from", "2026-06-03"]);
    assert_eq!(r["devices"], json!(["meter-1"]));
    assert_eq!([s(&r, "import_kwh"), s(&r, "net")], ["24", "19.20"]);
    assert!(r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "not billed: meter-2 (submeter)"));
    let list = shellyctl(
        &["device", "list", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(list.json()[1]["role"], "submeter");
}

#[test]
fn price_series_are_checked_at_import() {
    let db = TestDb::migrated();
    imported(&db, &tariff("PLAIN", json!({})));
    let out = prices(
        &db,
        "PLAIN",
        "export",
        "start,price\n2026-06-10 00:00,0.1\n",
    );
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("tariff PLAIN does not value export by net-billing"),
        "{}",
        out.stderr
    );

    net_billing(&db);
    // A step change mid-file leaves holes: refused, naming the first one.
    let holes = "start,price\n2026-06-10 00:00,0.1\n2026-06-10 00:15,0.1\n2026-06-10 01:15,0.1\n";
    let out = prices(&db, "NB", "export", holes);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("line 4: no price from 2026-06-10 00:30 to 2026-06-10 01:15"),
        "{}",
        out.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tariff_prices WHERE series = 'export'"),
        96,
        "the earlier import is kept, nothing of the refused file"
    );
}

#[test]
fn a_two_channel_meter_bills_only_its_grid_channel() {
    // An EM Gen3: em1data:0 (stored as channel A) on the grid connection,
    // em1data:1 (channel B) on the PV inverter. 2026-06-03, 1 kWh/h on A,
    // 0.8 kWh/h produced on B: billed 24 kWh × 0.80 = 19.20 — the PV
    // channel is neither added to import nor netted against it.
    let db = TestDb::migrated();
    imported(
        &db,
        &tariff(
            "G",
            json!({"zones": [{"name": "all", "energy_price": "0.80"}]}),
        ),
    );
    put(
        &db,
        "shellyemg3-aabbccddeeff",
        "A",
        "2026-06-02T22:00:00Z",
        96,
        "250",
        "0",
    );
    put(
        &db,
        "shellyemg3-aabbccddeeff",
        "B",
        "2026-06-02T22:00:00Z",
        96,
        "0",
        "200",
    );
    let set = |channel: &str, role: &str| {
        shellyctl(
            &[
                "device",
                "set-role",
                "shellyemg3-aabbccddeeff",
                role,
                "--channel",
                channel,
            ],
            &[("DATABASE_URL", &db.url)],
        )
    };
    assert_eq!(set("em1:0", "grid").code, 0);
    assert_eq!(set("em1:1", "pv").code, 0);
    assert_eq!(set("em1:7", "pv").code, 2, "no such channel");
    let r = costs(&db, &["--from", "2026-06-03"]);
    assert_eq!(
        [
            s(&r, "measured_import_kwh"),
            s(&r, "measured_export_kwh"),
            s(&r, "import_kwh"),
            s(&r, "net")
        ],
        ["24", "0", "24", "19.20"]
    );
    assert!(r["notes"].as_array().unwrap().iter().any(
        |n| n == "shellyemg3-aabbccddeeff: only its grid channel(s) are billed (A=grid, B=pv)"
    ));
    let list = shellyctl(
        &["device", "list", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(list.json()[0]["channels"], "A=grid, B=pv");
    // The energy report's plot draws the billed (grid) channel only: no
    // line for the PV channel B.
    let dir = TempDir::new("plot");
    let svg = std::path::Path::new(dir.path()).join("day.svg");
    let run = shellyctl(
        &[
            "report",
            "energy",
            "--day",
            "2026-06-03",
            "--plot",
            svg.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("class=\"phase-A\""), "{text}");
    assert!(!text.contains("class=\"phase-B\""), "{text}");
}

#[test]
fn vat_is_computed_once_per_rate_over_every_versions_rounded_nets() {
    // Two versions of one tariff in June 2026 (the second from the 16th),
    // the same prices: 0.50 energy + 0.30 distribution per kWh, VAT 23 %.
    // 12.525 kWh in each half:
    //   energy 12.525 × 0.50 = 6.2625 → 6.26, distribution 12.525 × 0.30 =
    //   3.7575 → 3.76, net 10.02 per version, 20.04 in all.
    // VAT over the sum, as an invoice: 20.04 × 0.23 = 4.6092 → 4.61
    // (per version and summed it was 2.3046 → 2.30, twice: 4.60).
    // Gross 20.04 + 4.61 = 24.65.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({"valid_to": "2026-06-16"})));
    imported(&db, &tariff("T", json!({"valid_from": "2026-06-16"})));
    put(&db, "meter-1", "A", "2026-06-10T10:00:00Z", 1, "12525", "0");
    put(&db, "meter-1", "A", "2026-06-20T10:00:00Z", 1, "12525", "0");
    let r = costs(&db, &["--month", "2026-06"]);
    let zones: Vec<(&str, &str)> = r["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["energy_net"].as_str().unwrap(),
                z["distribution_net"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(zones, vec![("6.26", "3.76"), ("6.26", "3.76")], "{r:#}");
    assert_eq!(s(&r, "vat_lines.0.base"), "20.04");
    assert_eq!(s(&r, "vat_lines.0.vat"), "4.61");
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross")],
        ["20.04", "4.61", "24.65"]
    );
}

#[test]
fn the_deposit_pays_the_energy_part_the_invoice_lines_show() {
    // Net-billing, two zones (peak 06:00–24:00, offpeak 00:00–06:00, local
    // time), energy 0.50 per kWh in both. June 10 2026 (CEST): 9 Wh at
    // 12:00 (peak) and 9 Wh at 02:00 (offpeak).
    // Lines: peak energy 0.009 × 0.50 = 0.0045 → 0.00, offpeak the same →
    // 0.00. The month's energy part is the sum of those lines, 0.00, so
    // its gross is 0.00 and the deposit pays nothing (the unrounded sum
    // 0.009 rounded once was 0.01, gross 0.0123 → 0.01: a cent the printed
    // lines do not hold).
    let db = TestDb::migrated();
    imported(
        &db,
        &tariff(
            "NB2",
            json!({
                "balancing": "hourly",
                "export": {"rule": "net_billing"},
                "zones": [
                    {"name": "peak", "energy_price": "0.50", "distribution_price": "0.30"},
                    {"name": "offpeak", "energy_price": "0.50", "distribution_price": "0.10"}
                ],
                "schedule": [{"day_types": ["weekday", "saturday", "sunday", "holiday"], "ranges": [
                    {"from": "00:00", "to": "06:00", "zone": "offpeak"},
                    {"from": "06:00", "to": "24:00", "zone": "peak"}
                ]}]
            }),
        ),
    );
    put(&db, "meter-1", "A", "2026-06-10T10:00:00Z", 1, "9", "0");
    put(&db, "meter-1", "A", "2026-06-10T00:00:00Z", 1, "9", "0");
    let r = costs(&db, &["--month", "2026-06", "--opening-deposit", "5.00"]);
    let energy: Vec<&str> = r["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["energy_net"].as_str().unwrap())
        .collect();
    assert_eq!(energy, vec!["0.00", "0.00"], "{r:#}");
    let d = &r["export"]["deposit"];
    assert_eq!(s(d, "months.0.energy_gross"), "0.00", "{r:#}");
    assert_eq!([s(d, "paid"), s(d, "closing")], ["0.00", "5.00"]);
}

#[test]
fn records_of_a_meter_without_a_devices_row_are_billed_or_refused_by_name() {
    // Records written by another tool (or restored without the devices
    // table): 2 kWh on 2026-06-10 of 'restored-meter', no devices row.
    // Billed as the only meter with data: 2 × (0.50 + 0.30) = 1.60 net.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({})));
    let insert = |device: &str| {
        db.client()
            .execute(
                "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
                 VALUES ($1, 'A', '2026-06-10T10:00:00Z', '2026-06-10T10:15:00Z', 2000, 0, 'emdata:0')",
                &[&device],
            )
            .unwrap();
        common::rebuild_slots(&db);
    };
    insert("restored-meter");
    assert_eq!(db.count("SELECT count(*) FROM devices"), 0);
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!(s(&r, "import_kwh"), "2", "{r:#}");
    assert_eq!(s(&r, "net"), "1.60");
    assert!(
        r.to_string()
            .contains("restored-meter is billed as the only meter with data"),
        "{r:#}"
    );
    // A second such meter: which one is the grid connection is unknown,
    // so the report refuses, naming both.
    insert("another-meter");
    let out = costs_run(&db, &["--month", "2026-06"]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("another-meter: no devices row")
            && out.stderr.contains("restored-meter: no devices row"),
        "{}",
        out.stderr
    );
}

#[test]
fn hostile_market_prices_are_refused_whole_and_the_stored_ones_stay() {
    // Net-billing export prices from a file: a huge price, a price that is
    // not a number, a repeated hour: each refused whole, naming the line,
    // and the prices imported before are untouched; an hour of export
    // without a price is an error naming the hour (above); negative prices
    // are real and imported.
    let db = TestDb::migrated();
    net_billing(&db);
    let stored = db.count("SELECT count(*) FROM tariff_prices");
    assert!(stored > 0);
    let bad = [
        (
            "start;price\n2026-06-11 00:00;0,25\n2026-06-11 00:15;99999999999999999999\n",
            "line 3",
        ),
        (
            "start;price\n2026-06-11 00:00;0,25\n2026-06-11 00:15;NaN\n",
            "line 3",
        ),
        (
            "start;price\n2026-06-11 00:00;0,25\n2026-06-11 00:00;0,30\n",
            "line 3",
        ),
        ("start;price\n2026-06-11 00:00;1e400\n", "line 2"),
    ];
    for (csv, line) in bad {
        let out = prices(&db, "NB", "export", csv);
        assert_eq!(out.code, 78, "{csv}: {}", out.stderr);
        assert!(out.stderr.contains(line), "{csv}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
        assert_eq!(
            db.count("SELECT count(*) FROM tariff_prices"),
            stored,
            "nothing half imported"
        );
    }
    let negative = prices(&db, "NB", "export", "start;price\n2026-06-12 00:00;-0,50\n");
    assert_eq!(negative.code, 0, "{}", negative.stderr);
}

#[test]
fn records_inserted_by_sql_are_never_silently_left_out_of_a_report() {
    // The schema contract's own example: an INSERT by hand into
    // energy_intervals. The slots reports read do not follow it, so the
    // report refuses, naming what to do; a whole `slots rebuild` brings the
    // slots back and the report is right: 2 kWh × (0.50 + 0.30) = 1.60.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({})));
    db.client()
        .batch_execute(
            "INSERT INTO devices (device_id) VALUES ('meter-1');
             INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
             VALUES ('meter-1', 'A', '2026-06-10T10:00:00Z', '2026-06-10T10:15:00Z', 2000, 0, 'emdata:0');",
        )
        .unwrap();
    let out = costs_run(&db, &["--month", "2026-06"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("energy_intervals were changed by 1 statement(s) of another writer")
            && out
                .stderr
                .contains("run `shellyctl slots rebuild` (without a range)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // report energy reads the records themselves: right at once.
    let energy = shellyctl(
        &[
            "report", "energy", "--month", "2026-06", "--tz", "UTC", "--format", "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(energy.code, 0, "{}", energy.stderr);
    assert_eq!(energy.json()["import_total_kwh"], "2", "{}", energy.stdout);
    let check = shellyctl(
        &["slots", "check", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(check.json()["foreign_writes"], 1, "{}", check.stdout);

    // A rebuild of a range does not clear the note (other ranges may be
    // behind too); a whole one does.
    let part = shellyctl(
        &[
            "slots",
            "rebuild",
            "--from",
            "2026-06-01",
            "--to",
            "2026-07-01",
            "--format",
            "json",
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(part.code, 0, "{}", part.stderr);
    assert_eq!(part.json()["foreign_writes_cleared"], 0);
    assert_eq!(costs_run(&db, &["--month", "2026-06"]).code, 1);
    let whole = shellyctl(
        &["slots", "rebuild", "--format", "json"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(
        whole.json()["foreign_writes_cleared"],
        1,
        "{}",
        whole.stdout
    );
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!([s(&r, "import_kwh"), s(&r, "net")], ["2", "1.60"]);

    // A statement addressed to a partition, not the parent, is noted too
    // (PostgreSQL fires a statement trigger only for the table named): the
    // report refuses instead of billing 2 kWh the records no longer hold;
    // after a rebuild, 9 kWh × 0.80 = 7.20.
    let month: String = db
        .client()
        .query_one(
            "SELECT tableoid::regclass::text FROM energy_intervals WHERE device_id = 'meter-1'",
            &[],
        )
        .unwrap()
        .get(0);
    db.client()
        .execute(&format!("UPDATE {month} SET energy_wh = 9000"), &[])
        .unwrap();
    let out = costs_run(&db, &["--month", "2026-06"]);
    assert_eq!(out.code, 1, "{month}: {}", out.stdout);
    assert!(
        out.stderr
            .contains("changed by 1 statement(s) of another writer"),
        "{}",
        out.stderr
    );
    let whole = shellyctl(&["slots", "rebuild"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!([s(&r, "import_kwh"), s(&r, "net")], ["9", "7.20"]);

    // Negative energy, which no meter registers, is refused by the rebuild
    // with the record named, so it never reaches a report: the report
    // keeps refusing until the record is corrected.
    db.client()
        .batch_execute(
            "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
             VALUES ('meter-1', 'B', '2026-06-10T10:00:00Z', '2026-06-10T10:15:00Z', -500, 0, 'emdata:0');",
        )
        .unwrap();
    let bad = shellyctl(&["slots", "rebuild"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(
        bad.stderr.contains(
            "a record with negative energy is stored for meter-1 B at 2026-06-10 10:00:00 UTC"
        ),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
    assert_eq!(costs_run(&db, &["--month", "2026-06"]).code, 1);
    db.client()
        .batch_execute("UPDATE energy_intervals SET energy_wh = 500 WHERE channel = 'B'")
        .unwrap();
    let ok = shellyctl(&["slots", "rebuild"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // 9.5 kWh × 0.80 = 7.60.
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!([s(&r, "import_kwh"), s(&r, "net")], ["9.5", "7.60"]);
}

#[test]
fn report_energy_shares_a_record_across_midnight_by_time_as_the_bill_does() {
    // A 25-minute record 2026-06-30 21:50-22:15Z, 1000 Wh: 10 minutes on
    // June 30 (local, CEST), 15 on July 1. report energy gives June 400 Wh
    // and July's first hour 600, as report costs bills them (0.4 kWh ×
    // 0.80 = 0.32 net in June), not all 1000 to June 30.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({})));
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO devices (device_id) VALUES ('meter-1');
         INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         VALUES ('meter-1', 'A', '2026-06-30T21:50Z', '2026-06-30T22:15Z', 1000, 0, 'emdata:0');",
    )
    .unwrap();
    rebuild_slots(&db);
    let env = [("DATABASE_URL", db.url.as_str())];
    let energy = |args: &[&str]| {
        let mut a = vec![
            "report",
            "energy",
            "--tz",
            "Europe/Warsaw",
            "--format",
            "json",
        ];
        a.extend_from_slice(args);
        let out = shellyctl(&a, &env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    };
    let june = energy(&["--month", "2026-06"]);
    assert_eq!(june["import_total_kwh"], "0.4", "{june:#}");
    assert_eq!(
        june["periods"][0]["start"], "2026-06-30 00:00+02:00",
        "{june:#}"
    );
    let july1 = energy(&["--day", "2026-07-01"]);
    assert_eq!(july1["import_total_kwh"], "0.6", "{july1:#}");
    assert_eq!(july1["periods"][0]["import_total_kwh"], "0.6", "{july1:#}");
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!([s(&r, "import_kwh"), s(&r, "net")], ["0.4", "0.32"]);
}

#[test]
fn report_energy_counts_the_meters_report_costs_bills_never_pv_or_sub_meters_on_top() {
    // June 10 2026: the grid meter imports 3 kWh (A), the PV meter records
    // 5 kWh, a sub-meter (the heat pump, behind the grid meter) 2 kWh.
    // The house took 3 kWh from the grid: adding the others would say 10.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({})));
    put(
        &db,
        "grid-meter",
        "A",
        "2026-06-10T10:00:00Z",
        1,
        "3000",
        "0",
    );
    put(&db, "pv-meter", "A", "2026-06-10T10:00:00Z", 1, "5000", "0");
    put(
        &db,
        "heat-pump",
        "A",
        "2026-06-10T10:00:00Z",
        1,
        "2000",
        "0",
    );
    let env = [("DATABASE_URL", db.url.as_str())];
    for (id, role) in [
        ("grid-meter", "grid"),
        ("pv-meter", "pv"),
        ("heat-pump", "submeter"),
    ] {
        let out = shellyctl(&["device", "set-role", id, role], &env);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let energy = shellyctl(
        &[
            "report", "energy", "--month", "2026-06", "--tz", "UTC", "--format", "json",
        ],
        &env,
    );
    assert_eq!(energy.code, 0, "{}", energy.stderr);
    let e = energy.json();
    assert_eq!(e["import_total_kwh"], "3", "{e:#}");
    assert_eq!(e["devices"], json!(["grid-meter"]));
    let notes = e["notes"].to_string();
    assert!(
        notes.contains("heat-pump (submeter)") && notes.contains("pv-meter (pv)"),
        "{notes}"
    );
    // The bill counts the same 3 kWh.
    let r = costs(&db, &["--month", "2026-06"]);
    assert_eq!(s(&r, "import_kwh"), "3");
    // A sub-meter on its own is still reported when asked for by name.
    let sub = shellyctl(
        &[
            "report",
            "energy",
            "--month",
            "2026-06",
            "--tz",
            "UTC",
            "--format",
            "json",
            "--device",
            "heat-pump",
        ],
        &env,
    );
    assert_eq!(sub.json()["import_total_kwh"], "2", "{}", sub.stdout);
}

/// The one-zone tariff under each balancing rule: T-NONE, T-REC, T-HOUR.
fn import_balancing_rules(db: &TestDb) {
    for (name, rule) in [
        ("T-NONE", "none"),
        ("T-REC", "per_record"),
        ("T-HOUR", "hourly"),
    ] {
        imported(db, &tariff(name, json!({"balancing": rule})));
    }
}

#[test]
fn a_record_across_the_reports_start_is_billed_pro_rata_under_every_balancing_rule() {
    // 25-minute records on phase A (UTC): 2026-10-23 21:50-22:15 1000 Wh
    // (15 of its 25 minutes after the report's start, 2026-10-24 00:00
    // CEST = 2026-10-23 22:00Z), 2026-10-24 12:00-12:25 500 Wh, and
    // 2026-10-24 21:50-22:15 2000 Wh (10 minutes before the report's end).
    // Billed: 1000 × 15/25 + 500 + 2000 × 10/25 = 600 + 500 + 800 = 1.9 kWh
    // under none, per_record and hourly alike (one phase, no export);
    // 1.9 × 0.80 = 1.52 net, VAT 0.3496 → 0.35, gross 1.87.
    let db = TestDb::migrated();
    import_balancing_rules(&db);
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id) VALUES ('meter-1')", &[])
        .unwrap();
    c.execute(
        "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
         VALUES ('meter-1', 'A', '2026-10-23T21:50Z', '2026-10-23T22:15Z', 1000, 0, 'emdata:0'),
                ('meter-1', 'A', '2026-10-24T12:00Z', '2026-10-24T12:25Z', 500, 0, 'emdata:0'),
                ('meter-1', 'A', '2026-10-24T21:50Z', '2026-10-24T22:15Z', 2000, 0, 'emdata:0')",
        &[],
    )
    .unwrap();
    rebuild_slots(&db);
    for name in ["T-NONE", "T-REC", "T-HOUR"] {
        let r = costs(&db, &["--tariff", name, "--from", "2026-10-24"]);
        assert_eq!(
            [
                s(&r, "import_kwh"),
                s(&r, "unpriced_kwh"),
                s(&r, "net"),
                s(&r, "gross")
            ],
            ["1.9", "0", "1.52", "1.87"],
            "{name}: {r:#}"
        );
    }
    // A period that has not begun has nothing to bill: refused, not a 0.00
    // bill marked complete (now is 2027-01-01).
    let run = costs_run(&db, &["--tariff", "T-NONE", "--year", "2028"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "the period 2028-01-01 to 2028-12-31 has not begun (now is 2027-01-01 00:00 UTC)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_phase_missing_for_hours_makes_the_bill_incomplete_under_every_balancing_rule() {
    // 2026-06-10 (CEST, 22:00Z the day before to 22:00Z): phases A and B
    // recorded all day, C for 20 hours (its last 4 missing). Covered:
    // (24 + 24 + 20) h / 3 phases = 22 h 40 min = 81,600 s of 86,400; the
    // hours are not covered although A and B have records in them.
    let db = TestDb::migrated();
    import_balancing_rules(&db);
    put(&db, "meter-1", "A", "2026-06-09T22:00:00Z", 96, "10", "0");
    put(&db, "meter-1", "B", "2026-06-09T22:00:00Z", 96, "10", "0");
    put(&db, "meter-1", "C", "2026-06-09T22:00:00Z", 80, "10", "0");
    for name in ["T-NONE", "T-REC", "T-HOUR"] {
        let r = costs(&db, &["--tariff", name, "--from", "2026-06-10"]);
        let c = &r["coverage"][0];
        assert_eq!(
            (
                c["covered_s"].as_i64(),
                c["expected_s"].as_i64(),
                &r["complete"]
            ),
            (Some(81_600), Some(86_400), &json!(false)),
            "{name}: {r:#}"
        );
    }
}

#[test]
fn the_report_names_the_hours_billed_from_part_of_their_records() {
    // June 10 2026 (CEST), quarter-hour records from 10:00 to 14:00 UTC
    // (12:00–16:00 local), minus the one at 11:15 UTC: the local hour 13:00
    // is covered 45 of 60 minutes. The hours with no record at all (the rest
    // of the month) are gaps, not partly covered.
    let db = TestDb::migrated();
    imported(&db, &tariff("T", json!({})));
    put(&db, "meter-1", "A", "2026-06-10T10:00:00Z", 16, "100", "0");
    db.client()
        .execute(
            "DELETE FROM energy_intervals WHERE start_ts = '2026-06-10T11:15:00Z'",
            &[],
        )
        .unwrap();
    common::rebuild_slots(&db);
    let r = costs(&db, &["--month", "2026-06"]);
    let c = &r["coverage"][0];
    assert_eq!(
        c["partly_covered_hours"],
        json!(["2026-06-10 13:00 CEST"]),
        "{c:#}"
    );
    assert_eq!(c["partly_covered_count"], 1);
    let table = shellyctl(
        &["report", "costs", "--month", "2026-06", "--now", LATER],
        &[("DATABASE_URL", &db.url)],
    );
    assert!(
        table.stdout.contains(
            "1 hour(s) of meter-1 are billed from part of their records: 2026-06-10 13:00 CEST"
        ),
        "{}",
        table.stdout
    );
}

#[test]
fn a_settlement_period_across_a_price_and_a_vat_change_is_one_bill_against_its_forecasts() {
    // The seller settles every 2 months from January: 2026-09..2026-10 is
    // one period. From 2026-10-01 the DSO's distribution price rises from
    // 0.30 to 0.40 and VAT falls from 23 % to 8 % (a new tariff version).
    // The subscription fee is 4.56 a month when settled monthly, 2.28 when
    // every 2 months: this tariff's cycle takes 2.28.
    // September: 100 kWh × 0.50 = 50.00 energy, × 0.30 = 30.00 distribution,
    //   subscription 2.28 → at 23 %: 82.28 → VAT 18.9244 → 18.92
    // October: 50 kWh × 0.50 = 25.00, × 0.40 = 20.00, subscription 2.28
    //   → at 8 %: 47.28 → VAT 3.7824 → 3.78
    // net 82.28 + 47.28 = 129.56, VAT 22.70, gross = total 152.26.
    // Forecast invoices 70.00 + 70.00 = 140.00 → 12.26 to pay.
    let db = TestDb::migrated();
    let common = json!({
        "settlement": {"months": 2},
        "subscription_fees": [{"name": "opłata abonamentowa", "by_settlement": [
            {"months": 1, "net": "4.56"}, {"months": 2, "net": "2.28"}
        ]}]
    });
    let mut v1 = tariff("S", common.clone());
    v1["valid_to"] = json!("2026-10-01");
    let mut v2 = tariff("S", common);
    v2["valid_from"] = json!("2026-10-01");
    v2["vat_percent"] = json!("8");
    v2["zones"] = json!([{"name": "all", "energy_price": "0.50", "distribution_price": "0.40"}]);
    imported(&db, &v1);
    imported(&db, &v2);
    put(
        &db,
        "meter-1",
        "A",
        "2026-09-10T10:00:00Z",
        1,
        "100000",
        "0",
    );
    put(&db, "meter-1", "A", "2026-10-10T10:00:00Z", 1, "50000", "0");

    let r = costs(
        &db,
        &[
            "--settlement",
            "2026-10",
            "--forecast",
            "70.00",
            "--forecast",
            "70.00",
        ],
    );
    assert_eq!(s(&r, "from"), "2026-08-31T22:00:00Z", "{r:#}");
    assert_eq!(s(&r, "to"), "2026-10-31T23:00:00Z");
    let fees: Vec<(&str, &str)> = r["fixed_fees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["net"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fees,
        [
            (
                "opłata abonamentowa (2.28/month, settled every 2 months)",
                "2.28"
            ),
            (
                "opłata abonamentowa (2.28/month, settled every 2 months)",
                "2.28"
            )
        ]
    );
    let vat: Vec<(&str, &str, &str)> = r["vat_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (s(l, "vat_percent"), s(l, "base"), s(l, "vat")))
        .collect();
    assert_eq!(vat, [("8", "47.28", "3.78"), ("23", "82.28", "18.92")]);
    assert_eq!(
        [s(&r, "net"), s(&r, "vat"), s(&r, "gross"), s(&r, "total")],
        ["129.56", "22.70", "152.26", "152.26"]
    );
    let st = &r["settlement"];
    assert_eq!(s(st, "period"), "2026-09..2026-10");
    assert_eq!(
        [s(st, "forecast_total"), s(st, "balance"), s(st, "verdict")],
        ["140.00", "12.26", "to pay"]
    );
    // The same period named by its two months; anything else is not one.
    let same = costs(&db, &["--settlement", "2026-09..2026-10"]);
    assert_eq!(s(&same, "total"), "152.26");
    let wrong = costs_run(&db, &["--settlement", "2026-10..2026-11"]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains("every 2 month(s), e.g. 2026-09..2026-10"),
        "{}",
        wrong.stderr
    );
    // Forecasts above the total: the rest is returned. An amount is kept
    // with two decimals as the invoice prints it (100 + 60.5 = 160.50:
    // 152.26 − 160.50 = −8.24); a third decimal is refused.
    let back = costs(
        &db,
        &[
            "--settlement",
            "2026-09",
            "--forecast",
            "100",
            "--forecast",
            "60.5",
        ],
    );
    assert_eq!(
        [
            s(&back["settlement"], "forecast_invoices.0"),
            s(&back["settlement"], "forecast_invoices.1"),
            s(&back["settlement"], "forecast_total"),
            s(&back["settlement"], "balance"),
            s(&back["settlement"], "verdict")
        ],
        ["100.00", "60.50", "160.50", "-8.24", "to return"]
    );
    let run = costs_run(&db, &["--settlement", "2026-09", "--forecast", "60.505"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("more than two decimals"),
        "{}",
        run.stderr
    );
    // A subscription fee without the tariff's cycle is refused at import.
    let mut bad = tariff(
        "BAD",
        json!({"settlement": {"months": 6},
        "subscription_fees": [{"name": "opłata abonamentowa", "by_settlement": [{"months": 1, "net": "4.56"}]}]}),
    );
    bad["valid_from"] = json!("2026-01-01");
    let run = import(&db, &bad, &[]);
    assert_eq!(run.code, 78, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("has no net for a settlement period of 6 month(s)"),
        "{}",
        run.stderr
    );
}

#[test]
fn net_metering_surplus_is_carried_into_later_periods_and_expires_after_365_days() {
    // Net-metering 0.8, settled monthly, one zone (0.50 + 0.30, VAT 23 %).
    // 2026-06: export 10 kWh → credit 8; import 2 → offset 2; 6 carried
    //          (dated at the June reading, 2026-06-30, usable until the
    //          reading of 2027-06-30).
    // 2026-07: import 5 → 5 offset by the carried credit, nothing charged;
    //          1 kWh carried on.
    // 2027-06: import 0.5 → offset 0.5 (the reading of 2027-06-30 is the
    //          credit's last); the 0.5 left can count at no later reading:
    //          it expires with June, nothing is carried.
    // 2027-07: import 3, nothing to offset; 3 × 0.50 = 1.50 + 3 × 0.30 =
    //          0.90, net 2.40, VAT 0.552 → 0.55, gross = total 2.95.
    // June and July 2026 in one report: offset 2 + 5 = 7, all from the
    //          report's own export (nothing carried in from before it),
    //          unused 10 − 7 / 0.8 = 1.25 kWh of export, 1 kWh carried out.
    let db = TestDb::migrated();
    imported(
        &db,
        &tariff(
            "NM",
            json!({"balancing": "hourly", "export": {"rule": "net_metering", "coefficient": "0.8"}}),
        ),
    );
    put(&db, "meter-1", "C", "2026-06-10T10:00:00Z", 4, "0", "2500");
    put(&db, "meter-1", "A", "2026-06-10T18:00:00Z", 4, "500", "0");
    put(&db, "meter-1", "A", "2026-07-10T18:00:00Z", 4, "1250", "0");
    put(&db, "meter-1", "A", "2027-06-10T18:00:00Z", 4, "125", "0");
    put(&db, "meter-1", "A", "2027-07-10T18:00:00Z", 4, "750", "0");
    let month = |m: &str| {
        let run = costs_at(&db, "1830297600", "json", &["--month", m]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json()
    };
    let june = month("2026-06");
    assert_eq!(
        [s(&june, "export.offset_kwh"), s(&june, "export.unused_kwh")],
        ["2", "7.5"],
        "{june:#}"
    );
    assert_eq!(s(&june, "export.carry_out.0.kwh"), "6");

    let july = month("2026-07");
    assert_eq!(
        [
            s(&july, "zones.0.kwh"),
            s(&july, "zones.0.offset_kwh"),
            s(&july, "export.carried_in_kwh"),
            s(&july, "total")
        ],
        ["5", "5", "5", "0.00"],
        "{july:#}"
    );
    let c = &july["export"]["carry_out"][0];
    assert_eq!(
        [
            s(c, "zone"),
            s(c, "dated"),
            s(c, "kwh"),
            s(c, "last_usable")
        ],
        ["all", "2026-06-30", "1", "2027-06-30"]
    );

    let june27 = month("2027-06");
    assert_eq!(
        [
            s(&june27, "zones.0.offset_kwh"),
            s(&june27, "export.carried_in_kwh"),
            s(&june27, "export.expired_credit_kwh"),
            s(&june27, "total")
        ],
        ["0.5", "0.5", "0.5", "0.00"],
        "{june27:#}"
    );
    assert!(june27["export"].get("carry_out").is_none(), "{june27:#}");

    let july27 = month("2027-07");
    assert_eq!(
        [
            s(&july27, "zones.0.offset_kwh"),
            s(&july27, "export.expired_credit_kwh"),
            s(&july27, "net"),
            s(&july27, "vat"),
            s(&july27, "total")
        ],
        ["0", "0", "2.40", "0.55", "2.95"],
        "{july27:#}"
    );

    let run = costs_at(
        &db,
        "1830297600",
        "json",
        &["--from", "2026-06-01", "--to", "2026-07-31"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let both = run.json();
    assert_eq!(
        [
            s(&both, "export.offset_kwh"),
            s(&both, "export.carried_in_kwh"),
            s(&both, "export.unused_kwh"),
            s(&both, "export.carry_out.0.kwh"),
        ],
        ["7", "0", "1.25", "1"],
        "{both:#}"
    );
}

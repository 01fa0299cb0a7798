//! `listen` with real WebSocket connections from the simulator dialing out,
//! rows asserted in PostgreSQL. Device clocks are frozen so minutes are exact.

mod common;
use common::*;
use serde_json::json;
use shelly_sim::dialer::{notify_status, Dialer};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";
/// A minute boundary (unix seconds).
const T0: i64 = 1_790_000_040;

struct Listener {
    child: ChildGuard,
    addr: String,
}

impl Listener {
    fn start(db: &TestDb, extra: &[(&str, &str)]) -> Listener {
        let mut env = vec![("DATABASE_URL", db.url.as_str()), ("LISTEN_TOKEN", TOKEN)];
        env.extend_from_slice(extra);
        let mut child = spawn(&["listen", "--bind", "127.0.0.1:0"], &env);
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty(), "listen did not start");
        Listener {
            child,
            addr: line.trim().to_string(),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws/{TOKEN}", self.addr)
    }

    /// SIGTERM; returns (exit code, stderr).
    fn stop(self) -> (i32, String) {
        self.child.terminate();
        let out = self.child.wait_with_output();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// One row of `scripts/adversarial`'s table (printed with --nocapture).
fn attack(name: &str, outcome: &str) {
    println!("attack\t{name}\t{outcome}");
}

fn switch_device(mac: &str, clock: i64) -> SimConfig {
    let mut cfg = SimConfig::new(DeviceKind::Pro4Pm);
    cfg.mac = mac.into();
    cfg.clock = Some(clock);
    cfg
}

/// Waits until `sql` (a count) reaches `n`.
fn wait_for(db: &TestDb, sql: &str, n: i64) {
    let start = Instant::now();
    loop {
        let got = db.count(sql);
        if got == n {
            return;
        }
        if start.elapsed() > Duration::from_secs(8) {
            panic!("{sql}: {got}, expected {n}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// power_logs of a channel: (minute offset from T0, apower).
fn logs(db: &TestDb, device: &str, channel: i32) -> Vec<(i64, String)> {
    db.client()
        .query(
            "SELECT EXTRACT(EPOCH FROM \"timestamp\")::bigint, apower_w::text FROM power_logs
              WHERE device_id = $1 AND component = 'switch' AND channel = $2 ORDER BY 1",
            &[&device, &channel],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) - T0, r.get(1)))
        .collect()
}

/// The device pushes `apower` of channel `ch` at T0 + `offset` seconds.
fn push(d: &Dialer, offset: i64, ch: i32, apower: f64) {
    d.send(&notify_status(
        &d.device_id,
        (T0 + offset) as f64,
        switch(ch, json!({"apower": apower})),
    ));
}

/// Waits until the server has closed the dialer's connection.
fn wait_closed(d: &Dialer) -> String {
    let start = Instant::now();
    while d.end_reason().is_none() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.end_reason().expect("the server closed the connection")
}

fn switch(ch: i32, fields: serde_json::Value) -> serde_json::Value {
    json!({ format!("switch:{ch}"): fields })
}

#[test]
fn threshold_gated_rows_once_per_minute_with_gaps_filled_by_the_values_current_then() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5F6", T0), T0).unwrap();
    let id = d.device_id.clone();
    push(&d, 10, 0, 200.0);
    push(&d, 30, 3, 2.0);
    push(&d, 60, 0, 210.0);
    push(&d, 250, 0, 300.0);
    wait_for(&db, "SELECT count(*) FROM power_logs", 11);
    // On connect (T0) channels 0, 2, 3 are above 5 W, channel 1 (0 W) is not.
    assert_eq!(
        logs(&db, &id, 0),
        [
            (0, "120.5".into()),
            (60, "210".into()),
            (120, "210".into()),
            (180, "210".into()),
            (240, "210".into())
        ]
    );
    assert_eq!(logs(&db, &id, 1), []);
    assert_eq!(
        logs(&db, &id, 2).len(),
        5,
        "a steady channel is logged every minute too"
    );
    assert_eq!(
        logs(&db, &id, 3),
        [(0, "7.3".into())],
        "below the threshold from T0+30"
    );
    let row = db.client().query_one(
        "SELECT voltage_v::text, current_a::text, energy_total_wh::text FROM power_logs WHERE channel = 0 AND \"timestamp\" = to_timestamp($1)",
        &[&(T0 as f64)]).unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        ("230.4".into(), "0.602".into(), "10530.422".into())
    );
    let model: Option<String> = db
        .client()
        .query_one("SELECT model FROM devices WHERE device_id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(
        model.as_deref(),
        Some("SPSW-004PE16EU"),
        "learned with Shelly.GetDeviceInfo over the socket"
    );
    d.close();
    let (code, stderr) = l.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("\"event\":\"listen_stopped\""));
}

#[test]
fn partial_and_nested_frames_update_only_what_they_carry() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5F7", T0), T0).unwrap();
    let id = d.device_id.clone();
    d.send(&notify_status(
        &id,
        (T0 + 60) as f64,
        switch(0, json!({"voltage": 231.5})),
    ));
    d.send(&json!({"src": id, "dst": "ws", "method": "NotifyStatus",
                   "params": {"ts": (T0 + 90) as f64, "device_status": {"switch:0": {"apower": 99.0}}}}));
    d.send(&notify_status(
        &id,
        (T0 + 120) as f64,
        json!({"sys": {"uptime": 5}}),
    ));
    wait_for(&db, "SELECT count(*) FROM power_logs WHERE channel = 0", 3);
    let rows: Vec<(i64, String, String)> = db.client()
        .query("SELECT EXTRACT(EPOCH FROM \"timestamp\")::bigint - $1, apower_w::text, voltage_v::text FROM power_logs WHERE channel = 0 ORDER BY 1", &[&T0])
        .unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        rows,
        [
            (0, "120.5".into(), "230.4".into()),
            (60, "120.5".into(), "231.5".into()),
            (120, "99".into(), "231.5".into())
        ]
    );
}

#[test]
fn a_restart_in_the_middle_of_an_active_period_neither_duplicates_nor_loses_minutes() {
    let db = TestDb::migrated();
    let a = Listener::start(&db, &[]);
    let d = Dialer::connect(&a.url(), &switch_device("A1B2C3D4E5F8", T0), T0).unwrap();
    let id = d.device_id.clone();
    push(&d, 10, 0, 200.0);
    push(&d, 70, 0, 250.0);
    wait_for(&db, "SELECT count(*) FROM power_logs WHERE channel = 0", 2);
    d.close();
    assert_eq!(a.stop().0, 0);

    // A new shellyctl; the device reconnects at T0+200 with its full status.
    let b = Listener::start(&db, &[]);
    let d = Dialer::connect(&b.url(), &switch_device("A1B2C3D4E5F8", T0 + 200), T0 + 200).unwrap();
    push(&d, 240, 0, 130.0);
    wait_for(&db, "SELECT count(*) FROM power_logs WHERE channel = 0", 5);
    assert_eq!(
        logs(&db, &id, 0),
        [
            (0, "120.5".into()),
            (60, "200".into()),
            (120, "250".into()),
            (180, "250".into()),
            (240, "130".into())
        ]
    );
}

#[test]
fn a_malformed_frame_is_logged_the_connection_kept_and_nothing_written() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5F9", T0), T0).unwrap();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    d.send_text("{not json");
    d.send_text(r#"{"src":"x","params":{"switch:0":{"apower":999}}}"#);
    push(&d, 60, 0, 121.0);
    wait_for(&db, "SELECT count(*) FROM power_logs", 6);
    assert!(d.end_reason().is_none(), "the connection is kept");
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs WHERE apower_w = 999"),
        0
    );
    d.close();
    let (_, stderr) = l.stop();
    let malformed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("\"event\":\"frame_malformed\""))
        .collect();
    assert_eq!(malformed.len(), 2, "{stderr}");
    assert!(malformed[0].contains("not JSON"));
}

#[test]
fn a_wrong_or_missing_token_and_a_device_outside_the_allow_list_are_rejected() {
    let db = TestDb::migrated();
    let l = Listener::start(
        &db,
        &[("LISTEN_ALLOW_DEVICES", "shellypro4pm-000000000001")],
    );
    let cfg = switch_device("A1B2C3D4E5FA", T0);
    for url in [
        format!("ws://{}/ws/wrong-token-0123456789", l.addr),
        format!("ws://{}/ws", l.addr),
        format!("ws://{}/elsewhere/{TOKEN}", l.addr),
    ] {
        let e = Dialer::connect(&url, &cfg, T0).err().expect("rejected");
        assert!(e.contains("401") || e.contains("404"), "{e}");
    }
    let d = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let reason = wait_closed(&d);
    assert!(reason.contains("1008"), "{reason}");
    assert_eq!(db.count("SELECT count(*) FROM power_logs"), 0);
    drop(d);
    let (_, stderr) = l.stop();
    assert!(
        stderr.contains("wrong token")
            && stderr.contains("missing token")
            && stderr.contains("device not in the allow-list"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token is never logged");
    attack(
        "WS wrong/missing token, device outside allow-list",
        "401/404, closed 1008",
    );
}

#[test]
fn an_oversized_frame_closes_the_connection_and_writes_nothing() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[("LISTEN_MAX_FRAME_BYTES", "4096")]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5FB", T0), T0).unwrap();
    let id = d.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    let big = notify_status(
        &id,
        (T0 + 60) as f64,
        json!({"switch:0": {"apower": 555.0}, "pad": "x".repeat(10_000)}),
    );
    d.send(&big);
    let reason = wait_closed(&d);
    assert!(!reason.is_empty());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs WHERE apower_w = 555"),
        0
    );
    drop(d);
    let (_, stderr) = l.stop();
    assert!(stderr.contains("\"event\":\"frame_too_large\""), "{stderr}");
    attack("WS oversized frame", "closed 1009, nothing written");
}

#[test]
fn fifty_devices_connected_at_once() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let dialers: Vec<Dialer> = (0..50)
        .map(|i| {
            Dialer::connect(
                &l.url(),
                &switch_device(&format!("0000000000{i:02}"), T0),
                T0,
            )
            .unwrap()
        })
        .collect();
    for d in &dialers {
        d.send(&notify_status(
            &d.device_id,
            (T0 + 60) as f64,
            switch(1, json!({"apower": 40.0})),
        ));
    }
    // Per device: T0 → channels 0, 2, 3; T0+60 → channels 0, 1, 2, 3.
    wait_for(&db, "SELECT count(*) FROM power_logs", 50 * 7);
    assert_eq!(
        db.count("SELECT count(DISTINCT device_id) FROM power_logs"),
        50
    );
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE model = 'SPSW-004PE16EU'"),
        50
    );
    assert!(dialers.iter().all(|d| d.end_reason().is_none()));
}

#[test]
fn pushed_meter_status_goes_into_power_readings() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.clock = Some(T0);
    let d = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    d.send(&notify_status(
        &d.device_id,
        (T0 + 5) as f64,
        json!({"em:0": {"a_act_power": 900.0, "total_act_power": 1083.5}}),
    ));
    d.send(&notify_status(
        &d.device_id,
        (T0 + 12) as f64,
        json!({"em:0": {"a_act_power": 1900.0, "total_act_power": 2083.5}}),
    ));
    wait_for(&db, "SELECT count(*) FROM power_readings", 2);
    let rows: Vec<(String, String, String)> = db.client()
        .query("SELECT source, total_power_w::text, phase_a_power_w::text FROM power_readings ORDER BY ts", &[])
        .unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    // T0 (full status) and T0+12; T0+5 falls inside the 10 s spacing.
    assert_eq!(
        rows,
        [
            ("push".into(), "558.965".into(), "375.5".into()),
            ("push".into(), "2083.5".into(), "1900".into())
        ]
    );
}

#[test]
fn listen_refuses_to_start_without_a_token() {
    let db = TestDb::migrated();
    let out = shellyctl(
        &["listen", "--bind", "127.0.0.1:0"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 78);
    assert!(
        out.stderr.starts_with("error: LISTEN_TOKEN is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn minutes_pushed_while_the_database_is_away_are_spooled_and_arrive_once() {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-spool");
    let l = Listener::start(&db, &[("SHELLYCTL_SPOOL_DIR", spool.path())]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5FC", T0), T0).unwrap();
    let id = d.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    // The database goes away (renamed, its connections cut).
    let away = format!("{}_away", db.name);
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {} RENAME TO {away}", db.name))
        .unwrap();
    push(&d, 60, 0, 150.0);
    push(&d, 120, 0, 160.0);
    let start = Instant::now();
    // Both minutes spooled (in one file or two: queued writes go together).
    while spool_files(&spool)
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum::<usize>()
        < 2
    {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing spooled");
        std::thread::sleep(Duration::from_millis(100));
    }
    admin
        .batch_execute(&format!("ALTER DATABASE {away} RENAME TO {}", db.name))
        .unwrap();
    push(&d, 180, 0, 170.0);
    wait_for(&db, "SELECT count(*) FROM power_logs", 12);
    assert_eq!(
        logs(&db, &id, 0),
        [
            (0, "120.5".into()),
            (60, "150".into()),
            (120, "160".into()),
            (180, "170".into())
        ]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs"),
        12,
        "each minute once"
    );
    d.close();
    let (_, stderr) = l.stop();
    assert!(
        stderr.contains("readings_spooled") && stderr.contains("spool_replayed"),
        "{stderr}"
    );
}

/// `frame_refused` log lines naming `device`.
fn refused(stderr: &str, device: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("\"event\":\"frame_refused\"") && l.contains(device))
        .map(str::to_string)
        .collect()
}

#[test]
fn frames_dated_outside_the_plausible_window_change_nothing_and_listen_keeps_serving() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5FD", T0), T0).unwrap();
    let id = d.device_id.clone();
    let mut meter = SimConfig::new(DeviceKind::Em3Gen3);
    meter.clock = Some(T0);
    let m = Dialer::connect(&l.url(), &meter, T0).unwrap();
    let meter_id = m.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    wait_for(&db, "SELECT count(*) FROM power_readings", 1);
    // 1e19 overflowed the minute fill, 2100 froze the channel until then,
    // 0 wrote 1970 rows.
    for ts in [1e19, 4_102_444_800.0, 0.0] {
        d.send(&notify_status(&id, ts, switch(0, json!({"apower": 500.0}))));
        m.send(&notify_status(
            &m.device_id,
            ts,
            json!({"em:0": {"a_act_power": 900.0, "total_act_power": 1083.5}}),
        ));
    }
    push(&d, 60, 0, 121.0);
    m.send(&notify_status(
        &m.device_id,
        (T0 + 20) as f64,
        json!({"em:0": {"a_act_power": 1900.0, "total_act_power": 2083.5}}),
    ));
    wait_for(&db, "SELECT count(*) FROM power_logs", 6);
    wait_for(&db, "SELECT count(*) FROM power_readings", 2);
    assert_eq!(logs(&db, &id, 0), [(0, "120.5".into()), (60, "121".into())]);
    let outside = format!(
        "SELECT count(*) FROM (SELECT \"timestamp\" AS t FROM power_logs UNION ALL SELECT ts FROM power_readings) x
          WHERE t < to_timestamp({T0}) OR t > to_timestamp({})",
        T0 + 60
    );
    assert_eq!(db.count(&outside), 0);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM power_log_state WHERE (state->>'values_ts')::bigint > {}",
            T0 + 60
        )),
        0,
        "no state dated after the last plausible frame"
    );
    let start = Instant::now();
    d.close();
    m.close();
    let (code, stderr) = l.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "SIGTERM is prompt"
    );
    assert_eq!(refused(&stderr, &id).len(), 3, "{stderr}");
    assert_eq!(refused(&stderr, &meter_id).len(), 3, "{stderr}");
    assert!(refused(&stderr, &id)[0].contains("plausible window"));
    attack(
        "WS NotifyStatus ts 1e19 / year 2100 / 0",
        "refused, no rows or state, listen keeps serving",
    );
}

type RawWs = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// A hand-driven WebSocket peer (for frames the simulator never sends).
fn raw_peer(l: &Listener) -> RawWs {
    let (mut ws, _) = tungstenite::connect(l.url()).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    ws
}

fn send_raw(ws: &mut RawWs, v: serde_json::Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
}

/// Reads until the server closes; the close code (0 if it just hung up).
fn close_code(ws: &mut RawWs) -> u16 {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => return f.map_or(0, |f| u16::from(f.code)),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return 0,
        }
    }
    panic!("the server did not close the connection");
}

#[test]
fn a_device_claiming_another_devices_id_is_closed_and_changes_nothing() {
    let db = TestDb::migrated();
    let victim = "shellypro4pm-000000000001";
    let l = Listener::start(
        &db,
        &[("LISTEN_ALLOW_DEVICES", "shellypro4pm-00000000000e")],
    );
    let mut c = db.client();
    c.execute(
        "INSERT INTO devices (device_id, model) VALUES ($1, 'REAL')",
        &[&victim],
    )
    .unwrap();
    let mut ws = raw_peer(&l);
    send_raw(
        &mut ws,
        notify_status("shellypro4pm-00000000000e", T0 as f64, json!({})),
    );
    // Answers Shelly.GetDeviceInfo (id 1) as the victim.
    send_raw(
        &mut ws,
        json!({"id": 1, "src": "shellypro4pm-00000000000e",
               "result": {"id": victim, "gen": 2, "model": "EVIL"}}),
    );
    assert_eq!(close_code(&mut ws), 1008);
    let model: Option<String> = c
        .query_one("SELECT model FROM devices WHERE device_id = $1", &[&victim])
        .unwrap()
        .get(0);
    assert_eq!(model.as_deref(), Some("REAL"));

    // An id with a NUL, a tab or a newline never gets in.
    for bad in ["evil\u{0}id", "a\tb\nc"] {
        let mut ws = raw_peer(&l);
        send_raw(
            &mut ws,
            notify_status(bad, T0 as f64, switch(0, json!({"apower": 99.0}))),
        );
        assert_eq!(close_code(&mut ws), 1008, "{bad:?}");
    }
    assert_eq!(db.count("SELECT count(*) FROM power_logs"), 0);
    let (_, stderr) = l.stop();
    assert!(stderr.contains("device id mismatch"), "{stderr}");
    assert!(stderr.contains("invalid device id"), "{stderr}");
    assert!(!stderr.contains('\u{0}'), "ids are shown escaped");
    attack(
        "WS peer claiming another device's id; NUL/TAB ids",
        "closed 1008, nothing changed",
    );
}

#[test]
fn a_spool_file_the_database_refuses_is_quarantined_and_replay_continues() {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-quarantine");
    let reading = |name: &str| {
        json!({"kind": "reading", "ts": "2026-09-21T12:00:00Z", "host": null,
               "info": {"id": "shellyemg3-000000000001", "name": name, "gen": 3},
               "status": {"device_unixtime": null, "switches": [],
                          "meter": {"component": "em1", "total_power_w": "5", "total_apparent_power_va": null,
                                    "total_current_a": null, "neutral_current_a": null,
                                    "phases": [{"power_w": "5"}, {}, {}]}},
               "source": "push"})
    };
    let logs = |id: &str| {
        json!({"kind": "power_logs", "device_id": id,
               "rows": [{"channel": 0, "minute": T0, "values": {"apower_w": "42", "voltage_v": null,
                                                             "current_a": null, "energy_total_wh": null}}]})
    };
    let files = [
        ("1000000001-000000000-1.jsonl", reading("meter")),
        ("1000000002-000000000-1.jsonl", logs("nul\u{0}id")),
        (
            "1000000003-000000000-1.jsonl",
            logs("shellyplus1-000000000002"),
        ),
    ];
    for (name, entry) in &files {
        std::fs::write(spool.0.join(name), format!("{entry}\n")).unwrap();
    }
    // A rule the database has and the entry breaks (as after a schema change
    // or a constraint an admin added): the database, not listen, refuses it.
    db.client()
        .batch_execute(
            "ALTER TABLE power_readings ADD CONSTRAINT no_five_watts CHECK (total_power_w <> 5)",
        )
        .unwrap();
    let l = Listener::start(&db, &[("SHELLYCTL_SPOOL_DIR", spool.path())]);
    // The writer reaches the database (and replays) at the first device.
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5FE", T0), T0).unwrap();
    wait_for(
        &db,
        "SELECT count(*) FROM power_logs WHERE device_id = 'shellyplus1-000000000002'",
        1,
    );
    // Each refused entry alone, the database's message beside it.
    let mut quarantined: Vec<String> = std::fs::read_dir(spool.0.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    quarantined.sort();
    assert_eq!(
        quarantined,
        [
            "1000000001-000000000-1.line1.jsonl",
            "1000000001-000000000-1.line1.reason",
            "1000000002-000000000-1.line1.jsonl",
            "1000000002-000000000-1.line1.reason",
        ]
    );
    let reason = |f: &str| std::fs::read_to_string(spool.0.join("quarantine").join(f)).unwrap();
    // The database's own words (check violation, 23514).
    let refused = reason("1000000001-000000000-1.line1.reason");
    assert!(
        refused.contains("refused by the database: ERROR:") && refused.contains("no_five_watts"),
        "{refused}"
    );
    assert!(refused.contains("SQLSTATE 23514"), "{refused}");
    let invalid = reason("1000000002-000000000-1.line1.reason");
    assert!(
        invalid.contains("not a spool entry: the device id"),
        "{invalid}"
    );
    assert!(spool_files(&spool).is_empty(), "{:?}", spool_files(&spool));
    d.close();
    let (_, stderr) = l.stop();
    assert!(stderr.contains("refused by the database"), "{stderr}");
    attack(
        "spool entry the database refuses",
        "quarantined, replay continues",
    );
}

/// Spool files not yet replayed.
fn spool_files(spool: &TempDir) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(&spool.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect()
}

#[test]
fn impossible_channels_magnitudes_and_status_growth_are_refused() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5A1", T0), T0).unwrap();
    let id = d.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    let mut wide = serde_json::Map::new();
    for n in 0..1903 {
        wide.insert(format!("switch:{n}"), json!({"apower": 100.0}));
    }
    let frames = [
        switch(-1, json!({"apower": 100.0})),
        switch(2147483647, json!({"apower": 100.0})),
        serde_json::Value::Object(wide),
        switch(0, json!({"apower": 1e300})),
        // Each fits a Decimal, their sum does not.
        json!({"em1:0": {"act_power": 5e28}, "em1:1": {"act_power": 5e28}, "em1:2": {"act_power": 5e28}}),
    ];
    for f in &frames {
        d.send(&notify_status(&id, (T0 + 120) as f64, f.clone()));
    }
    // 1,500 frames adding new keys do not grow the status without bound.
    for i in 0..1500 {
        d.send(&notify_status(
            &id,
            (T0 + 30) as f64,
            json!({ format!("k{i}"): {"v": i} }),
        ));
    }
    push(&d, 60, 0, 121.0);
    wait_for(&db, "SELECT count(*) FROM power_logs", 6);
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs WHERE channel NOT IN (0, 1, 2, 3)"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
    assert!(d.end_reason().is_none(), "the connection is kept");
    d.close();
    let (code, stderr) = l.stop();
    assert_eq!(code, 0, "{stderr}");
    let refused = refused(&stderr, &id);
    assert!(refused.len() >= frames.len(), "{stderr}");
    assert!(refused[0].contains("channel outside"), "{}", refused[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    attack(
        "1,903 switch keys, channel -1/2^31-1, 1e300 W, key growth",
        "refused; rows and memory bounded",
    );
}

#[test]
fn slow_unauthenticated_sockets_do_not_lock_devices_out() {
    use std::io::{Read, Write};
    let db = TestDb::migrated();
    let l = Listener::start(
        &db,
        &[
            ("LISTEN_MAX_CONNECTIONS", "3"),
            ("LISTEN_HANDSHAKE_TIMEOUT", "2s"),
        ],
    );
    // 200 sockets that begin a handshake and then dribble.
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&l.addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in slow.iter_mut() {
        let _ = s.write_all(b"E");
    }
    // Real devices still get in, up to the device limit.
    let devices: Vec<Dialer> = (1..=3)
        .map(|i| {
            Dialer::connect(
                &l.url(),
                &switch_device(&format!("B1B2C3D4E5{i:02}"), T0),
                T0,
            )
            .expect("a device connects despite the slow sockets")
        })
        .collect();
    wait_for(&db, "SELECT count(DISTINCT device_id) FROM power_logs", 3);
    // The newest slow sockets are closed at the handshake deadline.
    std::thread::sleep(Duration::from_millis(2500));
    let last = slow.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(last.read(&mut buf), Ok(0) | Err(_)),
        "closed after the deadline"
    );
    assert!(devices.iter().all(|d| d.end_reason().is_none()));
    let start = Instant::now();
    drop(devices);
    let (code, stderr) = l.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(5));
    attack(
        "200 sockets handshaking one byte per 5 s",
        "deadline + pending pool; devices still connect",
    );
}

#[test]
fn with_the_database_down_sigterm_spools_every_minute_at_once_and_they_replay_with_their_state() {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-outage");
    let l = Listener::start(&db, &[("SHELLYCTL_SPOOL_DIR", spool.path())]);
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5A2", T0), T0).unwrap();
    let id = d.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    // The database goes away (renamed, its connections cut).
    let away = format!("{}_away", db.name);
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {} RENAME TO {away}", db.name))
        .unwrap();
    // 30 minutes pushed during the outage.
    for m in 1..=30 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (code, stderr) = l.stop();
    let took = start.elapsed();
    drop(d);
    admin
        .batch_execute(&format!("ALTER DATABASE {away} RENAME TO {}", db.name))
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(!spool_files(&spool).is_empty(), "{stderr}");

    // Back up: the next listen replays the minutes and their state.
    let b = Listener::start(&db, &[("SHELLYCTL_SPOOL_DIR", spool.path())]);
    let d = Dialer::connect(
        &b.url(),
        &switch_device("A1B2C3D4E5A2", T0 + 1800),
        T0 + 1800,
    )
    .unwrap();
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0"),
        31,
    );
    assert_eq!(logs(&db, &id, 0)[30], (1800, "130".into()));
    assert!(spool_files(&spool).is_empty());
    let state_ts = db.count(&format!(
        "SELECT (state->>'values_ts')::bigint FROM power_log_state WHERE device_id = '{id}' AND channel = 0"
    ));
    assert!(state_ts >= T0 + 1800, "the state came back with its rows");
    d.close();
    drop(b);
    attack(
        "database down, SIGTERM with 30 minutes queued",
        "spooled at once, exit < 5 s, replayed with state",
    );
}

/// Waits until listen has applied the frame at T0 + `offset` to switch
/// channel `ch` of `device` (its stored state is at that time).
fn settle(db: &TestDb, device: &str, ch: i32, offset: i64) {
    wait_for(
        db,
        &format!(
            "SELECT count(*) FROM power_log_state WHERE device_id = '{device}' AND component = 'switch'
                AND channel = {ch} AND (state->>'values_ts')::bigint = {}",
            T0 + offset
        ),
        1,
    );
}

/// Active periods of a channel: (start, end) as offsets from T0.
fn activity(db: &TestDb, device: &str, component: &str, ch: i32) -> Vec<(i64, Option<i64>)> {
    db.client()
        .query(
            "SELECT EXTRACT(EPOCH FROM started_at)::bigint, EXTRACT(EPOCH FROM ended_at)::bigint
               FROM activity WHERE device_id = $1 AND component = $2 AND channel = $3 ORDER BY 1",
            &[&device, &component, &ch],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) - T0,
                r.get::<_, Option<i64>>(1).map(|e| e - T0),
            )
        })
        .collect()
}

/// A burst of switch channel `ch`: (offset from T0, apower).
fn burst(d: &Dialer, ch: i32, points: &[(i64, f64)]) {
    let pts: Vec<(f64, f64)> = points.iter().map(|(o, w)| ((T0 + o) as f64, *w)).collect();
    d.burst(&format!("switch:{ch}"), &pts);
}

#[test]
fn a_40_second_burst_inside_one_minute_gives_exactly_one_row() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    // Channel 1 of the simulated Pro 4PM is at 0 W on connect.
    let d = Dialer::connect(&l.url(), &switch_device("B1B2C3D4E501", T0), T0).unwrap();
    let id = d.device_id.clone();
    burst(
        &d,
        1,
        &[(65, 118.0), (85, 119.0), (105, 0.0), (120, 0.0), (180, 0.0)],
    );
    settle(&db, &id, 1, 180);
    assert_eq!(logs(&db, &id, 1), [(60, "118".into())]);
    assert_eq!(activity(&db, &id, "switch", 1), [(60, Some(120))]);
}

#[test]
fn a_65_second_period_starting_at_12_gives_two_rows_with_the_right_values() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("B1B2C3D4E502", T0), T0).unwrap();
    let id = d.device_id.clone();
    burst(&d, 1, &[(72, 118.0), (120, 121.0), (137, 0.0), (180, 0.0)]);
    settle(&db, &id, 1, 180);
    assert_eq!(logs(&db, &id, 1), [(60, "118".into()), (120, "121".into())]);
    let volts = db.count(&format!(
        "SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 1 AND voltage_v = 230.4"
    ));
    assert_eq!(volts, 2, "the other values are those current then");
    assert_eq!(activity(&db, &id, "switch", 1), [(60, Some(180))]);
}

#[test]
fn a_burst_that_ends_before_the_first_frame_of_the_next_minute_logs_only_its_minute() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("B1B2C3D4E503", T0), T0).unwrap();
    let id = d.device_id.clone();
    // Off at :58; the next minute's first frame comes at :05.
    burst(&d, 1, &[(75, 118.0), (118, 0.0), (125, 0.0), (185, 0.0)]);
    settle(&db, &id, 1, 185);
    assert_eq!(logs(&db, &id, 1), [(60, "118".into())]);
    assert_eq!(activity(&db, &id, "switch", 1), [(60, Some(120))]);
}

#[test]
fn a_restart_of_listen_in_the_middle_of_a_minute_with_a_burst_neither_duplicates_nor_loses_it() {
    let db = TestDb::migrated();
    let a = Listener::start(&db, &[]);
    let d = Dialer::connect(&a.url(), &switch_device("B1B2C3D4E504", T0), T0).unwrap();
    let id = d.device_id.clone();
    burst(&d, 1, &[(70, 118.0)]);
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 1"),
        1,
    );
    assert_eq!(a.stop().0, 0);
    drop(d);
    // Back within the same minute (T0+95): the burst goes on and ends,
    // another one comes in the next minute.
    let b = Listener::start(&db, &[]);
    let d = Dialer::connect(&b.url(), &switch_device("B1B2C3D4E504", T0 + 95), T0 + 95).unwrap();
    burst(
        &d,
        1,
        &[
            (100, 130.0),
            (110, 0.0),
            (150, 140.0),
            (160, 0.0),
            (180, 0.0),
        ],
    );
    settle(&db, &id, 1, 180);
    assert_eq!(logs(&db, &id, 1), [(60, "118".into()), (120, "140".into())]);
    assert_eq!(activity(&db, &id, "switch", 1), [(60, Some(180))]);
    let reasons: Vec<Option<String>> = db
        .client()
        .query(
            "SELECT reason FROM listen_sessions WHERE device_id = $1 ORDER BY connected_at",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons, [Some("shutdown".to_string()), None]);
}

/// (reason, open) of each session of `device`, oldest first.
fn sessions(db: &TestDb, device: &str) -> Vec<(Option<String>, bool)> {
    db.client()
        .query(
            "SELECT reason, disconnected_at IS NULL FROM listen_sessions
              WHERE device_id = $1 ORDER BY connected_at",
            &[&device],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn sessions_are_recorded_on_connect_disconnect_and_reconnect_and_a_crash_is_closed_at_the_next_start(
) {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let cfg = switch_device("B1B2C3D4E505", T0);
    let d = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let id = d.device_id.clone();
    wait_for(
        &db,
        "SELECT count(*) FROM listen_sessions WHERE disconnected_at IS NULL",
        1,
    );
    d.close();
    wait_for(
        &db,
        "SELECT count(*) FROM listen_sessions WHERE disconnected_at IS NOT NULL",
        1,
    );
    assert_eq!(
        sessions(&db, &id),
        [(Some("closed by the device".into()), false)]
    );
    let d = Dialer::connect(&l.url(), &cfg, T0 + 60).unwrap();
    wait_for(&db, "SELECT count(*) FROM listen_sessions", 2);
    assert_eq!(
        sessions(&db, &id),
        [(Some("closed by the device".into()), false), (None, true)]
    );
    // listen dies without closing anything (SIGKILL); the next one closes it.
    drop(l);
    drop(d);
    assert_eq!(sessions(&db, &id)[1], (None, true));
    let l = Listener::start(&db, &[]);
    assert_eq!(
        sessions(&db, &id),
        [
            (Some("closed by the device".into()), false),
            (Some("listen restarted".into()), false)
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM listen_sessions WHERE disconnected_at < connected_at"),
        0
    );
    let (code, stderr) = l.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("listen_sessions_closed"), "{stderr}");
}

#[test]
fn report_activity_tells_active_idle_and_disconnected_periods_of_a_day_and_health_a_device_away_too_long(
) {
    let db = TestDb::migrated();
    let dev = "shellypmminig3-8cbfea9f2a10";
    db.client()
        .batch_execute(&format!(
            "INSERT INTO devices (device_id) VALUES ('{dev}'), ('shellyplus1pm-aabbccddeeff');
             INSERT INTO listen_sessions (device_id, connected_at, disconnected_at, reason) VALUES
               ('{dev}', '2026-03-09 22:00Z', '2026-03-10 06:00Z', 'idle timeout'),
               ('{dev}', '2026-03-10 07:30Z', '2026-03-10 12:00Z', 'shutdown'),
               ('{dev}', '2026-03-10 12:05Z', NULL, NULL),
               ('shellyplus1pm-aabbccddeeff', now() - interval '2 hours', now() - interval '20 minutes', 'idle timeout');
             INSERT INTO activity (device_id, component, channel, started_at, ended_at) VALUES
               ('{dev}', 'pm1', 0, '2026-03-10 05:00Z', '2026-03-10 05:30Z'),
               ('{dev}', 'pm1', 0, '2026-03-10 08:00Z', '2026-03-10 09:15Z'),
               ('{dev}', 'pm1', 0, '2026-03-10 23:50Z', NULL);
             INSERT INTO power_logs (\"timestamp\", device_id, component, channel, apower_w)
               SELECT t, '{dev}', 'pm1', 0, 118 FROM generate_series('2026-03-10 23:50Z'::timestamptz, '2026-03-10 23:54Z', interval '1 minute') t;"
        ))
        .unwrap();
    let now = "1773201600"; // 2026-03-11 04:00Z
    let out = shellyctl(
        &[
            "report",
            "activity",
            "--day",
            "2026-03-10",
            "--tz",
            "UTC",
            "--device",
            dev,
            "--format",
            "json",
            "--now",
            now,
        ],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    let ch = &v["channels"][0];
    assert_eq!(
        (ch["component"].as_str(), ch["channel"].as_i64()),
        (Some("pm1"), Some(0))
    );
    let periods: Vec<(String, String, String, Option<String>)> = ch["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let hm = |k: &str| p[k].as_str().unwrap()[11..16].to_string();
            (
                p["kind"].as_str().unwrap().to_string(),
                hm("start"),
                hm("end"),
                p["reason"].as_str().map(str::to_string),
            )
        })
        .collect();
    let e = |k: &str, a: &str, b: &str, r: Option<&str>| {
        (
            k.to_string(),
            a.to_string(),
            b.to_string(),
            r.map(str::to_string),
        )
    };
    assert_eq!(
        periods,
        [
            e("idle", "00:00", "05:00", None),
            e("active", "05:00", "05:30", None),
            e("idle", "05:30", "06:00", None),
            e("disconnected", "06:00", "07:30", Some("idle timeout")),
            e("idle", "07:30", "08:00", None),
            e("active", "08:00", "09:15", None),
            e("idle", "09:15", "12:00", None),
            e("disconnected", "12:00", "12:05", Some("shutdown")),
            e("idle", "12:05", "23:50", None),
            e("active", "23:50", "23:55", None),
            e("idle", "23:55", "00:00", None),
        ]
    );
    assert_eq!(ch["active_s"], (30 + 75 + 5) * 60);
    assert_eq!(ch["disconnected_s"], 95 * 60);
    let table = shellyctl(
        &[
            "report",
            "activity",
            "--day",
            "2026-03-10",
            "--tz",
            "UTC",
            "--now",
            now,
        ],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert!(
        table.stdout.contains("disconnected") && table.stdout.contains("idle timeout"),
        "{}",
        table.stdout
    );

    let health = shellyctl(
        &["health", "--format", "json"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    let checks = health.json()["checks"].as_array().unwrap().clone();
    let conn = |d: &str| {
        checks
            .iter()
            .find(|c| c["check"] == "connection" && c["subject"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("no connection check for {d}: {checks:?}"))
    };
    assert_eq!(conn(dev)["ok"], true);
    let away = conn("shellyplus1pm-aabbccddeeff");
    assert_eq!(away["ok"], false, "{away}");
    assert!(away["detail"].as_str().unwrap().contains("idle timeout"));
    assert_eq!(health.code, 1);
}

#[test]
fn pm1_channels_are_logged_apart_from_switch_channels_and_polled_into_switch_readings() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let mut cfg = SimConfig::new(DeviceKind::PmMiniGen3);
    cfg.clock = Some(T0);
    let d = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let id = d.device_id.clone();
    assert!(id.starts_with("shellypmminig3-"), "{id}");
    let pts = [(T0 + 30, 0.0), (T0 + 65, 0.0), (T0 + 130, 200.0)];
    d.burst("pm1:0", &pts.map(|(t, w)| (t as f64, w)));
    wait_for(
        &db,
        "SELECT count(*) FROM power_logs WHERE component = 'pm1'",
        2,
    );
    let rows: Vec<(i64, String, String)> = db.client()
        .query("SELECT EXTRACT(EPOCH FROM \"timestamp\")::bigint - $2, apower_w::text, energy_total_wh::text
                  FROM power_logs WHERE device_id = $1 AND component = 'pm1' AND channel = 0 ORDER BY 1", &[&id, &T0])
        .unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        rows,
        [
            (0, "118".into(), "2210.5".into()),
            (120, "200".into(), "2210.5".into())
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs WHERE component = 'switch'"),
        0
    );
    assert_eq!(activity(&db, &id, "pm1", 0), [(0, Some(60)), (120, None)]);
    let model: Option<String> = db
        .client()
        .query_one("SELECT model FROM devices WHERE device_id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(model.as_deref(), Some("S3PM-001PCEU16"));
    d.close();

    // The same device kind polled over HTTP.
    let sim = sim(DeviceKind::PmMiniGen3);
    let out = shellyctl(
        &["snapshot", "--format", "json"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", &sim.host()),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = db
        .client()
        .query_one(
            "SELECT component, channel, apower_w::text FROM switch_readings WHERE device_id = $1",
            &[&sim.device_id()],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, String>(2)
        ),
        ("pm1".into(), 0, "118".into())
    );
}

#[test]
fn integer_ts_energy_voltage_and_counts_only_frames_keep_the_previous_values_and_unmetered_relays_are_no_rows(
) {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("B1B2C3D4E506", T0), T0).unwrap();
    let id = d.device_id.clone();
    let frame = |ts: serde_json::Value, comp: serde_json::Value| json!({"src": id, "dst": "ws", "method": "NotifyStatus", "params": {"ts": ts, "switch:0": comp}});
    d.send(&frame(json!(T0 + 60), json!({"id": 0, "apower": 150})));
    d.send(&frame(json!((T0 + 120) as f64), json!({"id": 0, "aenergy": {"total": 10600.5, "by_minute": [0, 0, 0], "minute_ts": T0 + 120}})));
    d.send(&frame(json!((T0 + 180) as f64), json!({"voltage": 231.9})));
    d.send(&frame(
        json!(T0 + 240),
        json!({"id": 0, "counts": {"on_above_thr": 510, "on_time": 1912440, "switch_on": 0}}),
    ));
    settle(&db, &id, 0, 240);
    let rows: Vec<(i64, String, String, String, String)> = db.client()
        .query("SELECT EXTRACT(EPOCH FROM \"timestamp\")::bigint - $2, apower_w::text, voltage_v::text, current_a::text, energy_total_wh::text
                  FROM power_logs WHERE device_id = $1 AND channel = 0 ORDER BY 1", &[&id, &T0])
        .unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    let row = |m: i64, p: &str, v: &str, e: &str| {
        (
            m,
            p.to_string(),
            v.to_string(),
            "0.602".to_string(),
            e.to_string(),
        )
    };
    assert_eq!(
        rows,
        [
            row(0, "120.5", "230.4", "10530.422"),
            row(60, "150", "230.4", "10530.422"),
            row(120, "150", "230.4", "10600.5"),
            row(180, "150", "231.9", "10600.5"),
            row(240, "150", "231.9", "10600.5"),
        ]
    );
    d.close();

    // An EM Gen3: its relay switch:0 measures nothing.
    let mut cfg = SimConfig::new(DeviceKind::EmGen3);
    cfg.clock = Some(T0);
    let em = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let em_id = em.device_id.clone();
    assert!(em_id.starts_with("shellyemg3-"), "{em_id}");
    em.send(&notify_status(
        &em_id,
        (T0 + 60) as f64,
        json!({"switch:0": {"id": 0, "output": true, "source": "WS_in"}}),
    ));
    em.send(&notify_status(
        &em_id,
        (T0 + 75) as f64,
        json!({"em1:1": {"id": 1, "act_power": -1899.8}}),
    ));
    // On connect (T0), T0+60 and T0+75.
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_readings WHERE device_id = '{em_id}'"),
        3,
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM power_logs WHERE device_id = '{em_id}'"
        )),
        0
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM power_log_state WHERE device_id = '{em_id}'"
        )),
        0
    );
    em.close();
    let (code, stderr) = l.stop();
    assert_eq!(code, 0);
    for bad in ["frame_refused", "frame_malformed", "listen_write_failed"] {
        assert!(!stderr.contains(bad), "{bad}: {stderr}");
    }
}

/// A plain HTTP GET on the listen port: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: probe\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn healthz_answers_200_with_a_device_connected_and_503_when_the_database_is_gone() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let d = Dialer::connect(&l.url(), &switch_device("B1B2C3D4E507", T0), T0).unwrap();
    let id = d.device_id.clone();
    wait_for(&db, "SELECT count(*) FROM power_logs", 3);
    let (code, body) = http_get(&l.addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["devices"][0]["device_id"], id.as_str());
    assert_eq!(v["devices"][0]["connected"], true);
    assert!(v["devices"][0]["last_write"].is_string(), "{v}");
    assert!(
        !body.contains(TOKEN) && !body.contains("postgres"),
        "no secrets: {body}"
    );
    let (code, line) = http_get(&l.addr, "/");
    assert_eq!((code, line.lines().count()), (200, 1), "{line}");
    assert!(
        line.starts_with("shellyctl listen: ok, 1 device(s) connected"),
        "{line}"
    );
    // Any other path is still the WebSocket endpoint's business.
    assert_eq!(http_get(&l.addr, "/elsewhere").0, 0);

    let away = format!("{}_away", db.name);
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {} RENAME TO {away}", db.name))
        .unwrap();
    let start = Instant::now();
    let (code, body) = loop {
        let (code, body) = http_get(&l.addr, "/healthz");
        if code == 503 || start.elapsed() > Duration::from_secs(10) {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = http_get(&l.addr, "/").1;
    admin
        .batch_execute(&format!("ALTER DATABASE {away} RENAME TO {}", db.name))
        .unwrap();
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["database"], "unavailable");
    assert!(
        line.starts_with("shellyctl listen: unavailable: database unavailable"),
        "{line}"
    );
    d.close();
    drop(l);
}

/// Polls `/healthz` until it answers `code` (or 15 s pass): the body.
fn healthz_until(l: &Listener, code: u16) -> String {
    let start = Instant::now();
    loop {
        let (got, body) = http_get(&l.addr, "/healthz");
        if got == code {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "/healthz: {got}, expected {code}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the spool holds a file (or 15 s pass).
fn wait_spooled(spool: &TempDir) -> Duration {
    let start = Instant::now();
    while spool_files(spool).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(15), "nothing spooled");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Minutes 1..=n of channel 0 at 100 + m W (offsets from T0).
fn expected_minutes(from: i64, to: i64) -> Vec<(i64, String)> {
    (from..=to)
        .map(|m| (m * 60, format!("{}", 100 + m)))
        .collect()
}

#[test]
fn a_frozen_database_spools_within_the_deadline_answers_503_stops_in_time_and_loses_no_minute() {
    use common::proxy::{upstream_of, Mode, Proxy};
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-frozen");
    let proxy = Proxy::start(&upstream_of(&db.url), Mode::Forward);
    let via = proxy.url(&db.url);
    let env = [
        ("DATABASE_URL", via.as_str()),
        ("SHELLYCTL_SPOOL_DIR", spool.path()),
        ("LISTEN_DB_DEADLINE", "2s"),
    ];
    let l = Listener::start(&db, &env);
    let cfg = switch_device("A1B2C3D4E5B1", T0);
    let d = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let id = d.device_id.clone();
    for m in 1..=3 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0 AND \"timestamp\" >= to_timestamp({})", T0 + 60),
        3,
    );
    // The server stops answering; TCP stays up.
    proxy.set(Mode::Freeze);
    for m in 4..=10 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    // Spooled within the deadline (2 s) plus the batch window.
    let took = wait_spooled(&spool);
    assert!(took < Duration::from_secs(5), "spooled after {took:?}");
    let body = healthz_until(&l, 503);
    assert!(body.contains("database unavailable"), "{body}");
    // Frames keep being taken while it is frozen.
    for m in 11..=12 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let (code, stderr) = l.stop();
    let stop_took = start.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stop_took < Duration::from_secs(10),
        "SIGTERM took {stop_took:?}"
    );
    drop(d);
    drop(proxy);
    // Back, straight to the database: the spool is replayed.
    let b = Listener::start(&db, &[("SHELLYCTL_SPOOL_DIR", spool.path())]);
    let start = Instant::now();
    while !spool_files(&spool).is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_files(&spool).is_empty(), "{:?}", spool_files(&spool));
    let got: Vec<_> = logs(&db, &id, 0)
        .into_iter()
        .filter(|(o, _)| *o >= 60)
        .collect();
    assert_eq!(
        got,
        expected_minutes(1, 12),
        "every minute once, with its value"
    );
    drop(b);
    attack(
        "database frozen behind a TCP proxy",
        "spooled within the deadline, 503, SIGTERM in time, every minute after replay",
    );
}

#[test]
fn listen_starts_with_the_database_down_spools_and_replays_as_soon_as_it_is_back() {
    use common::proxy::{upstream_of, Mode, Proxy};
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-down-at-start");
    let proxy = Proxy::start(&upstream_of(&db.url), Mode::Refuse);
    let via = proxy.url(&db.url);
    let l = Listener::start(
        &db,
        &[
            ("DATABASE_URL", via.as_str()),
            ("SHELLYCTL_SPOOL_DIR", spool.path()),
        ],
    );
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5B2", T0), T0).unwrap();
    let id = d.device_id.clone();
    for m in 1..=5 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    wait_spooled(&spool);
    healthz_until(&l, 503);
    // The database comes back: the same listen writes and replays, with
    // no reconnect of the device.
    proxy.set(Mode::Forward);
    for m in 6..=8 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0 AND \"timestamp\" >= to_timestamp({})", T0 + 60),
        8,
    );
    let start = Instant::now();
    while !spool_files(&spool).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_files(&spool).is_empty());
    let got: Vec<_> = logs(&db, &id, 0)
        .into_iter()
        .filter(|(o, _)| *o >= 60)
        .collect();
    assert_eq!(got, expected_minutes(1, 8));
    healthz_until(&l, 200);
    d.close();
    let (code, _) = l.stop();
    assert_eq!(code, 0);
    attack(
        "listen started with the database down",
        "serves, spools, replays when it is back",
    );
}

#[test]
fn a_spool_that_cannot_be_written_holds_the_writes_answers_503_and_loses_nothing() {
    use common::proxy::{upstream_of, Mode, Proxy};
    let db = TestDb::migrated();
    let dir = TempDir::new("listen-spool-full");
    // The spool's parent is a file: every write to it fails, as on a full
    // disk (ENOTDIR instead of ENOSPC; the same path in the writer).
    let blocker = dir.0.join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let spool = blocker.join("spool");
    let proxy = Proxy::start(&upstream_of(&db.url), Mode::Forward);
    let via = proxy.url(&db.url);
    let l = Listener::start(
        &db,
        &[
            ("DATABASE_URL", via.as_str()),
            ("SHELLYCTL_SPOOL_DIR", spool.to_str().unwrap()),
        ],
    );
    let d = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5B3", T0), T0).unwrap();
    let id = d.device_id.clone();
    push(&d, 60, 0, 101.0);
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0 AND \"timestamp\" >= to_timestamp({})", T0 + 60),
        1,
    );
    proxy.set(Mode::Refuse);
    for m in 2..=6 {
        push(&d, m * 60, 0, 100.0 + m as f64);
    }
    let body = healthz_until(&l, 503);
    assert!(body.contains("the spool cannot be written"), "{body}");
    // The database is back: what was held goes in, nothing was dropped.
    proxy.set(Mode::Forward);
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0 AND \"timestamp\" >= to_timestamp({})", T0 + 60),
        6,
    );
    let got: Vec<_> = logs(&db, &id, 0)
        .into_iter()
        .filter(|(o, _)| *o >= 60)
        .collect();
    assert_eq!(got, expected_minutes(1, 6));
    healthz_until(&l, 200);
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["blocker"], "no temporary file left");
    d.close();
    let (code, stderr) = l.stop();
    assert_eq!(code, 0);
    assert!(stderr.contains("held in memory; devices wait"), "{stderr}");
    attack(
        "spool that cannot be written",
        "held in memory, 503, nothing lost when the database returns",
    );
}

#[test]
fn a_second_connection_with_the_same_device_id_replaces_the_first() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let cfg = switch_device("A1B2C3D4E5B4", T0);
    let first = Dialer::connect(&l.url(), &cfg, T0).unwrap();
    let id = first.device_id.clone();
    push(&first, 60, 0, 100.0);
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{id}' AND channel = 0 AND \"timestamp\" = to_timestamp({})", T0 + 60),
        1,
    );
    let second = Dialer::connect(&l.url(), &cfg, T0 + 120).unwrap();
    let why = wait_closed(&first);
    assert!(why.contains("replaced by a newer connection"), "{why}");
    // The old socket's frames change nothing any more; the new one's do.
    push(&first, 180, 0, 900.0);
    push(&second, 180, 0, 103.0);
    settle(&db, &id, 0, 180);
    let got: Vec<_> = logs(&db, &id, 0)
        .into_iter()
        .filter(|(o, _)| *o >= 60)
        .collect();
    // Minute 120 is the second connection's full status (channel 0 of the
    // simulated Pro 4PM at its own power), filled from the stored state.
    assert!(got.iter().all(|(_, w)| w != "900"), "{got:?}");
    assert_eq!(got.first(), Some(&(60, "100".to_string())));
    assert_eq!(got.last(), Some(&(180, "103".to_string())));
    let open = db.count(&format!(
        "SELECT count(*) FROM listen_sessions WHERE device_id = '{id}' AND disconnected_at IS NULL"
    ));
    assert_eq!(open, 1, "one session open: the new one");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM listen_sessions WHERE device_id = '{id}' AND reason LIKE 'replaced by a newer connection%'"
        )),
        1
    );
    second.close();
    let (_, stderr) = l.stop();
    assert!(stderr.contains("device_connected_twice"), "{stderr}");
    attack(
        "two connections with one device id",
        "the newer replaces the older (closed with the reason); one writer",
    );
}

#[test]
fn a_lock_wait_behind_a_long_reader_stalls_no_device_and_loses_nothing() {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-lock");
    let l = Listener::start(
        &db,
        &[
            ("SHELLYCTL_SPOOL_DIR", spool.path()),
            ("LISTEN_DB_DEADLINE", "2s"),
        ],
    );
    let a = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5B5", T0), T0).unwrap();
    let b = Dialer::connect(&l.url(), &switch_device("A1B2C3D4E5B6", T0), T0).unwrap();
    push(&a, 60, 0, 101.0);
    push(&b, 60, 0, 101.0);
    wait_for(
        &db,
        &format!("SELECT count(*) FROM power_logs WHERE channel = 0 AND \"timestamp\" = to_timestamp({})", T0 + 60),
        2,
    );
    // A reader holds the table for 8 s (as a partition being made behind
    // a long report would).
    let url = db.url.clone();
    let reader = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("LOCK TABLE power_logs IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        std::thread::sleep(Duration::from_secs(8));
        tx.commit().unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    for m in 2..=6 {
        push(&a, m * 60, 0, 100.0 + m as f64);
        push(&b, m * 60, 0, 100.0 + m as f64);
    }
    // Not stalled: spooled within the deadline, /healthz says so.
    let took = wait_spooled(&spool);
    assert!(took < Duration::from_secs(5), "spooled after {took:?}");
    healthz_until(&l, 503);
    reader.join().unwrap();
    for d in [&a, &b] {
        wait_for(
            &db,
            &format!("SELECT count(*) FROM power_logs WHERE device_id = '{}' AND channel = 0 AND \"timestamp\" >= to_timestamp({})", d.device_id, T0 + 60),
            6,
        );
        let got: Vec<_> = logs(&db, &d.device_id, 0)
            .into_iter()
            .filter(|(o, _)| *o >= 60)
            .collect();
        assert_eq!(got, expected_minutes(1, 6));
    }
    healthz_until(&l, 200);
    a.close();
    b.close();
    drop(l);
    attack(
        "a lock wait behind a 8 s reader",
        "spooled within the deadline, replayed after, no device stalled",
    );
}

#[test]
fn sigkill_at_random_points_under_load_then_a_restart_neither_duplicates_nor_corrupts_a_minute() {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-sigkill");
    let env = [("SHELLYCTL_SPOOL_DIR", spool.path())];
    // Three devices push channel 1 (0 W in the simulator's full status,
    // so every row is from these frames) at 150 W every 10 s of device time as
    // fast as listen takes it; listen is killed three times at a moment
    // picked from the clock, then restarted, and the devices reconnect.
    let macs = ["A1B2C3D4E5C1", "A1B2C3D4E5C2", "A1B2C3D4E5C3"];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut t = 0i64; // seconds of device time after T0
    let frame = |d: &Dialer, t: i64| {
        d.send(&notify_status(
            &d.device_id,
            (T0 + t) as f64,
            switch(1, json!({"apower": 150.0, "voltage": 230.0})),
        ))
    };
    for round in 0..3u64 {
        let l = Listener::start(&db, &env);
        let ds: Vec<Dialer> = macs
            .iter()
            .map(|m| Dialer::connect(&l.url(), &switch_device(m, T0 + t), T0 + t).unwrap())
            .collect();
        let frames = 60 + (seed.wrapping_mul(round + 7) % 120) as i64;
        for k in 0..frames {
            t += 10;
            for d in &ds {
                frame(d, t);
            }
            if k == frames / 2 {
                // Half the round is stored (so the next start has a state
                // to continue from; what a kill loses is the rest).
                let m = (T0 + t) - (T0 + t).rem_euclid(60);
                for d in &ds {
                    wait_for(
                        &db,
                        &format!("SELECT count(*) FROM power_logs WHERE device_id = '{}' AND channel = 1 AND \"timestamp\" = to_timestamp({m})", d.device_id),
                        1,
                    );
                }
            }
        }
        // Some frames are in flight, some batches committed: SIGKILL.
        std::thread::sleep(Duration::from_millis(seed.wrapping_mul(round + 3) % 150));
        drop(l);
        drop(ds);
        t += 30;
    }
    let l = Listener::start(&db, &env);
    let ds: Vec<Dialer> = macs
        .iter()
        .map(|m| Dialer::connect(&l.url(), &switch_device(m, T0 + t), T0 + t).unwrap())
        .collect();
    for _ in 0..12 {
        t += 10;
        for d in &ds {
            frame(d, t);
        }
    }
    let last = (T0 + t) - (T0 + t).rem_euclid(60);
    for d in &ds {
        wait_for(
            &db,
            &format!(
                "SELECT count(*) FROM power_logs WHERE device_id = '{}' AND channel = 1 AND \"timestamp\" = to_timestamp({last})",
                d.device_id
            ),
            1,
        );
    }
    // No minute twice (the key), none with a value never pushed, and no
    // minute missing: a kill loses at most the frames of its last batch
    // window, and their minutes are filled at the next connection from the
    // stored state with the value that held (150 W throughout).
    assert_eq!(
        db.count("SELECT count(*) - count(DISTINCT (device_id, component, channel, \"timestamp\")) FROM power_logs"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM power_logs WHERE channel = 1 AND apower_w <> 150"),
        0
    );
    let minutes = (last - T0) / 60 + 1;
    for d in &ds {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM power_logs WHERE device_id = '{}' AND channel = 1",
                d.device_id
            )),
            minutes,
            "{}: every minute from T0 to the last frame, once (seed {seed})",
            d.device_id
        );
    }
    drop(ds);
    drop(l);
    attack(
        "SIGKILL at random points under load, then restart",
        "no duplicate, no wrong minute",
    );
}

#[test]
fn retention_running_beside_listen_under_load_loses_nothing_and_the_spool_drains_without_a_reconnect(
) {
    let db = TestDb::migrated();
    let spool = TempDir::new("listen-retention");
    let l = Listener::start(
        &db,
        &[
            ("SHELLYCTL_SPOOL_DIR", spool.path()),
            ("LISTEN_DB_DEADLINE", "2s"),
        ],
    );
    let ds: Vec<Dialer> = ["A1B2C3D4E5D1", "A1B2C3D4E5D2"]
        .iter()
        .map(|m| Dialer::connect(&l.url(), &switch_device(m, T0), T0).unwrap())
        .collect();
    // Retention (which drops and makes partitions: exclusive locks on the
    // tables listen writes) runs again and again while the devices push
    // channel 1 at 150 W every 10 s of device time.
    let url = db.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let retention = std::thread::spawn(move || {
        let mut runs = 0;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            let r = shellyctl(&["retention"], &[("DATABASE_URL", url.as_str())]);
            assert!(matches!(r.code, 0 | 75), "retention: {}", r.stderr);
            runs += 1;
        }
        runs
    });
    let mut t = 0;
    for _ in 0..360 {
        t += 10;
        for d in &ds {
            d.send(&notify_status(
                &d.device_id,
                (T0 + t) as f64,
                switch(1, json!({"apower": 150.0})),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = retention.join().unwrap();
    assert!(runs >= 1);
    let minutes = t / 60 + 1;
    for d in &ds {
        wait_for(
            &db,
            &format!(
                "SELECT count(*) FROM power_logs WHERE device_id = '{}' AND channel = 1 AND apower_w = 150",
                d.device_id
            ),
            minutes,
        );
    }
    let start = Instant::now();
    while !spool_files(&spool).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        spool_files(&spool).is_empty(),
        "the spool drains with the devices still connected"
    );
    for d in &ds {
        assert!(d.end_reason().is_none(), "no reconnect");
    }
    drop(ds);
    let (code, _) = l.stop();
    assert_eq!(code, 0);
    attack(
        "retention beside listen under load",
        "no minute lost, spool replayed without a reconnect",
    );
}

#[test]
fn a_frame_ahead_of_our_clock_is_taken_at_our_time_and_the_honest_frames_after_it_count() {
    let db = TestDb::migrated();
    let l = Listener::start(&db, &[]);
    let mut ws = raw_peer(&l);
    let id = "shellyplus1pm-c0ffee000001";
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let frame = |ts: i64, w: f64| {
        json!({"src": id, "method": "NotifyStatus",
               "params": {"ts": ts as f64, "switch:0": {"id": 0, "apower": w, "voltage": 230.0}}})
    };
    // 290 s ahead: inside the window, so taken, but at our time.
    let sent_at = now();
    send_raw(&mut ws, frame(sent_at + 290, 100.0));
    let state = |db: &TestDb| -> (i64, String) {
        let r = db
            .client()
            .query_opt(
                "SELECT (state->>'values_ts')::bigint, state->'values'->>'apower_w' FROM power_log_state WHERE device_id = $1",
                &[&id],
            )
            .unwrap();
        r.map_or((0, String::new()), |r| (r.get(0), r.get(1)))
    };
    let start = Instant::now();
    while state(&db).0 == 0 && start.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ts, w) = state(&db);
    assert!(ts >= sent_at && ts <= now(), "taken at our time, not {ts}");
    assert_eq!(w, "100");
    // An honest frame a second later (its time is before the frame that
    // ran ahead): applied, not refused as "from the past".
    std::thread::sleep(Duration::from_millis(1100));
    let honest = now();
    send_raw(&mut ws, frame(honest, 500.0));
    let start = Instant::now();
    while state(&db) != (honest, "500".into()) && start.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(&db), (honest, "500".into()));
    drop(ws);
    let (_, stderr) = l.stop();
    assert!(!stderr.contains("frame_refused"), "{stderr}");
    attack(
        "a frame 290 s ahead of our clock",
        "taken at our time; the honest frames after it count",
    );
}

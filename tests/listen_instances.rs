//! Two `listen` processes behind a real HAProxy (Debian's), writing to one
//! database: devices reconnect to either (and briefly hold one connection
//! to each), one instance is killed (SIGKILL) mid-run, and every minute is
//! there once with its value; sessions never overlap and each channel has
//! one active period. `scripts/test` installs HAProxy when it is missing
//! (SHELLYCTL_HAPROXY names the binary); without it the test fails.

mod common;
use common::*;
use serde_json::json;
use shelly_sim::dialer::{notify_status, Dialer};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";
/// A minute boundary (unix seconds).
const T0: i64 = 1_790_000_040;
/// Channel 1 of the simulated Pro 4PM is at 0 W in its full status, so
/// every row of it comes from the frames this test pushes.
const CH: i32 = 1;

fn listen(db: &TestDb, instance: &str) -> (ChildGuard, u16) {
    let mut child = spawn(
        &["listen", "--bind", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("LISTEN_TOKEN", TOKEN),
            ("LISTEN_INSTANCE", instance),
        ],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    (child, port)
}

fn haproxy(dir: &TempDir, port: u16, a: u16, b: u16) -> ChildGuard {
    let bin = std::env::var("SHELLYCTL_HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".into());
    // The README's configuration ("Several listens"), on local ports.
    let cfg = format!(
        "global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout tunnel 1h
    retries 3
    option redispatch
frontend shellyctl_ws
    bind 127.0.0.1:{port}
    default_backend shellyctl_listen
backend shellyctl_listen
    balance roundrobin
    option httpchk GET /healthz
    http-check expect rstatus (200|503)
    server a 127.0.0.1:{a} check inter 200ms fall 1 rise 1
    server b 127.0.0.1:{b} check inter 200ms fall 1 rise 1
"
    );
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = ChildGuard::spawn(
        Command::new(&bin)
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "haproxy ({bin}) did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both servers seen up by the checks.
    std::thread::sleep(Duration::from_millis(600));
    child
}

fn device(mac: &str, clock: i64) -> SimConfig {
    let mut cfg = SimConfig::new(DeviceKind::Pro4Pm);
    cfg.mac = mac.into();
    cfg.clock = Some(clock);
    cfg
}

fn push(d: &Dialer, m: i64) {
    d.send(&notify_status(
        &d.device_id,
        (T0 + m * 60) as f64,
        json!({ format!("switch:{CH}"): {"apower": 100.0 + m as f64} }),
    ));
}

/// Waits until every device has its minutes 1..=m of channel CH.
fn wait_minutes(db: &TestDb, devices: usize, m: i64) {
    let sql = format!(
        "SELECT count(*) FROM power_logs WHERE channel = {CH} AND \"timestamp\" >= to_timestamp({})",
        T0 + 60
    );
    let want = devices as i64 * m;
    let start = Instant::now();
    loop {
        let got = db.count(&sql);
        if got >= want {
            assert_eq!(got, want, "no minute twice");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{got} of {want} minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_listens_behind_haproxy_reconnects_to_either_and_one_killed_lose_and_repeat_nothing() {
    let db = TestDb::migrated();
    let dir = TempDir::new("haproxy");
    let (a, pa) = listen(&db, "a");
    let (b, pb) = listen(&db, "b");
    let port = dead_port();
    let _proxy = haproxy(&dir, port, pa, pb);
    let url = format!("ws://127.0.0.1:{port}/ws/{TOKEN}");
    let macs = ["C1C2C3C4C501", "C1C2C3C4C502", "C1C2C3C4C503"];
    let connect = |clock: i64| -> Vec<Dialer> {
        macs.iter()
            .map(|m| Dialer::connect(&url, &device(m, clock), clock).unwrap())
            .collect()
    };
    // Round robin: a, b, a.
    let first = connect(T0);
    for m in 1..=4 {
        for d in &first {
            push(d, m);
        }
    }
    wait_minutes(&db, macs.len(), 4);
    // Every device opens a second connection (round robin: the other
    // listen for some) while the first is still open, then moves to it.
    let second = connect(T0 + 4 * 60 + 30);
    std::thread::sleep(Duration::from_millis(500));
    for d in first {
        d.close();
    }
    for m in 5..=8 {
        for d in &second {
            push(d, m);
        }
    }
    wait_minutes(&db, macs.len(), 8);
    // Instance a dies without a word; its devices (all, for simplicity)
    // reconnect, and HAProxy sends them to b.
    drop(a);
    std::thread::sleep(Duration::from_millis(800));
    let third = connect(T0 + 8 * 60 + 30);
    std::thread::sleep(Duration::from_millis(300));
    for d in second {
        d.close();
    }
    for m in 9..=12 {
        for d in &third {
            push(d, m);
        }
    }
    wait_minutes(&db, macs.len(), 12);
    for d in &third {
        let rows: Vec<(i64, String)> = db
            .client()
            .query(
                "SELECT EXTRACT(EPOCH FROM \"timestamp\")::bigint, apower_w::text FROM power_logs
                  WHERE device_id = $1 AND channel = $2 AND \"timestamp\" >= to_timestamp($3)
                  ORDER BY 1",
                &[&d.device_id, &CH, &((T0 + 60) as f64)],
            )
            .unwrap()
            .iter()
            .map(|r| ((r.get::<_, i64>(0) - T0) / 60, r.get(1)))
            .collect();
        let want: Vec<(i64, String)> = (1..=12).map(|m| (m, format!("{}", 100 + m))).collect();
        assert_eq!(
            rows, want,
            "{}: every minute once, with its value",
            d.device_id
        );
    }
    // Sessions of one device never overlap, and one is open per device.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM listen_sessions x JOIN listen_sessions y
                ON x.device_id = y.device_id AND x.connected_at < y.connected_at
               AND COALESCE(x.disconnected_at, 'infinity') > y.connected_at"
        ),
        0,
        "overlapping sessions"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM listen_sessions WHERE disconnected_at IS NULL"),
        macs.len() as i64
    );
    // One active period per device, from minute 1, still running.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM activity WHERE channel = {CH} AND started_at = to_timestamp({}) AND ended_at IS NULL",
            T0 + 60
        )),
        macs.len() as i64
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM activity WHERE channel = {CH}"
        )),
        macs.len() as i64
    );
    for d in third {
        d.close();
    }
    b.terminate();
    let out = b.wait_with_output();
    assert_eq!(out.status.code(), Some(0));
}

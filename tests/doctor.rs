//! `shellyctl doctor`: every configured check passing, and each failing
//! once (database down, credentials refused, device unreachable, device
//! password wrong, no tariff for the month, broker refusing the client, a
//! settings line systemd ignores). Real PostgreSQL, a real Mosquitto, the
//! simulator.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn mqtt_url() -> String {
    std::env::var("TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// A database with the schema and the g11 example tariff (in force from
/// 2026-01-01 on, with no end: every month since covered).
fn ready_db() -> TestDb {
    let db = TestDb::migrated();
    let example = shellyctl(&["tariff", "example", "g11"], &[]);
    let dir = TempDir::new("doctor-tariff");
    let file = Path::new(dir.path()).join("g11.json");
    std::fs::write(&file, example.stdout).unwrap();
    let run = shellyctl(
        &["tariff", "import", file.to_str().unwrap()],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    db
}

fn doctor(env: &[(&str, &str)], extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["doctor", "--format", "json"];
    args.extend_from_slice(extra);
    let run = shellyctl(&args, env);
    let json: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    (run.code, json)
}

/// The lines of one check, as (subject, status, detail, fix).
fn lines(report: &Value, check: &str) -> Vec<(String, String, String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["check"] == check)
        .map(|l| {
            (
                l["subject"].as_str().unwrap().to_string(),
                l["status"].as_str().unwrap().to_string(),
                l["detail"].as_str().unwrap().to_string(),
                l["fix"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "failed")
        .map(|l| format!("{} {}", l["check"], l["subject"]))
        .collect()
}

#[test]
fn every_configured_check_passes_on_a_working_set_up() {
    let db = ready_db();
    let sim = sim(DeviceKind::Em3Gen3);
    let host = sim.host();
    let url = mqtt_url();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("MQTT_URL", url.as_str()),
        ("MQTT_TOPIC", "shellyctl/doctor-test"),
    ];
    let (code, report) = doctor(&env, &[]);
    assert_eq!(failed(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(report["ok"], true);
    let db_lines = lines(&report, "database");
    assert_eq!(db_lines.len(), 2, "{report:#}");
    assert!(db_lines[1].2.starts_with("current ("), "{db_lines:?}");
    let dev = lines(&report, "device");
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0].0, host);
    assert!(dev[0].2.contains("shelly3em63g3-e4b063a1b2c3"), "{dev:?}");
    assert!(dev[0].2.contains("interval data: emdata:0"), "{dev:?}");
    assert!(dev[0].2.contains("clock within"), "{dev:?}");
    assert_eq!(lines(&report, "notification")[0].1, "ok");
    assert_eq!(lines(&report, "tariff")[0].1, "ok");
    // Not configured here: no settings file, no systemd.
    assert_eq!(lines(&report, "settings")[0].1, "not_configured");
    assert_eq!(lines(&report, "systemd")[0].1, "not_configured");
    // It wrote nothing: no device row, no job run.
    assert_eq!(db.count("SELECT count(*) FROM devices"), 0);
    assert_eq!(db.count("SELECT count(*) FROM job_runs"), 0);

    // The table: a ✔ per passing line and the verdict.
    let table = shellyctl(&["doctor"], &env);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("✔ device"), "{}", table.stdout);
    assert!(table.stdout.ends_with("every configured check passed\n"));
}

#[test]
fn nothing_configured_is_not_checked_and_a_missing_database_fails() {
    let (code, report) = doctor(&[], &[]);
    assert_eq!(code, 1);
    let db = lines(&report, "database");
    assert_eq!(db[0].1, "failed");
    assert!(db[0].2.starts_with("no database configured"), "{db:?}");
    assert_eq!(lines(&report, "device")[0].1, "not_configured");
    assert_eq!(lines(&report, "notification")[0].1, "not_configured");
}

#[test]
fn the_database_down_and_credentials_refused_are_told_apart() {
    let down = format!("postgres://postgres@127.0.0.1:{}/x", dead_port());
    let (code, report) = doctor(&[("DATABASE_URL", &down)], &[]);
    assert_eq!(code, 1);
    let l = &lines(&report, "database")[0];
    assert_eq!((l.0.as_str(), l.1.as_str()), ("connect", "failed"));
    assert!(l.3.starts_with("start PostgreSQL"), "{l:?}");
    assert_eq!(lines(&report, "tariff")[0].1, "failed");

    // The test server trusts every password, so a role that does not
    // exist stands for refused credentials (the same SQLSTATE class 28).
    let db = ready_db();
    let mut cfg: postgres::Config = db.url.parse().unwrap();
    cfg.user("no_such_role_for_doctor");
    let port = cfg.get_ports()[0];
    let refused = format!(
        "postgres://no_such_role_for_doctor:wrong@127.0.0.1:{port}/{}",
        db.name
    );
    let (code, report) = doctor(&[("DATABASE_URL", &refused)], &[]);
    assert_eq!(code, 1);
    let l = &lines(&report, "database")[0];
    assert_eq!(l.1, "failed");
    assert!(l.2.contains("SQLSTATE 28"), "{l:?}");
    assert!(l.3.contains("refused the user or password"), "{l:?}");
    assert!(!l.2.contains("wrong"), "the password is never shown: {l:?}");
}

#[test]
fn an_unmigrated_database_says_run_migrate() {
    let db = TestDb::empty();
    let (code, report) = doctor(&[("DATABASE_URL", &db.url)], &[]);
    assert_eq!(code, 1);
    let l = &lines(&report, "database")[1];
    assert_eq!((l.0.as_str(), l.1.as_str()), ("schema", "failed"));
    assert!(l.3.contains("shellyctl migrate"), "{l:?}");
}

#[test]
fn an_unreachable_device_and_a_wrong_device_password_fail_with_their_fix() {
    let db = ready_db();
    let mut cfg = SimConfig::new(DeviceKind::Em3Gen3);
    cfg.password = Some("right".into());
    let locked = sim_with(cfg);
    let dead = format!("127.0.0.1:{}", dead_port());
    let hosts = format!("{},{dead}", locked.host());
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", hosts.as_str()),
        ("SHELLY_PASSWORD", "wrong"),
        ("SHELLY_RETRIES", "0"),
    ];
    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, 1);
    let dev = lines(&report, "device");
    assert_eq!(dev.len(), 2, "{report:#}");
    assert_eq!(dev[0].1, "failed");
    assert!(
        dev[0].3.contains("credentials/shelly-password"),
        "{:?}",
        dev[0]
    );
    assert!(
        !dev[0].2.contains("wrong"),
        "never the password: {:?}",
        dev[0]
    );
    assert_eq!(dev[1].0, dead);
    assert_eq!(dev[1].1, "failed");
    assert!(dev[1].3.starts_with("check SHELLY_HOST"), "{:?}", dev[1]);

    // With the right password the same device passes.
    let host = locked.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLY_PASSWORD", "right"),
    ];
    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn a_tariff_that_does_not_cover_the_month_fails_and_none_at_all_is_not_checked() {
    let db = TestDb::migrated();
    let (code, report) = doctor(&[("DATABASE_URL", &db.url)], &[]);
    // No tariff at all: costs are not set up, so not checked.
    assert_eq!(code, 0, "{report:#}");
    let t = &lines(&report, "tariff")[0];
    assert_eq!(t.1, "not_configured");
    assert!(t.2.starts_with("no tariff imported"), "{t:?}");

    // Tariffs, but none in force for this month: that fails.
    let db = ready_db();
    let (code, report) = doctor(&[("DATABASE_URL", &db.url)], &["--now", "1735689600"]);
    // 1735689600 = 2025-01-01: the g11 example starts in 2026.
    assert_eq!(code, 1);
    let t = &lines(&report, "tariff")[0];
    assert_eq!((t.0.as_str(), t.1.as_str()), ("2025-01", "failed"));
    assert!(
        t.2.starts_with("no tariff is in force for the whole month"),
        "{t:?}"
    );
}

/// A real Mosquitto that refuses every client (no anonymous access, no
/// users), on a free port; killed with its guard.
fn refusing_broker(dir: &TempDir) -> (ChildGuard, u16) {
    let port = dead_port();
    let conf = Path::new(dir.path()).join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n"),
    )
    .unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is installed (scripts/test installs it)");
    let child = ChildGuard::spawn(
        std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed().as_secs() < 10, "mosquitto did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, port)
}

#[test]
fn a_broker_that_refuses_the_client_fails_the_notification_check() {
    let db = ready_db();
    let dir = TempDir::new("doctor-mqtt");
    let (_broker, port) = refusing_broker(&dir);
    let url = format!("mqtt://127.0.0.1:{port}");
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("MQTT_URL", url.as_str()),
        ("MQTT_TOPIC", "x/alarm"),
        ("MQTT_USER", "shellyctl"),
        ("MQTT_PASSWORD", "nope"),
    ];
    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, 1);
    let n = &lines(&report, "notification")[0];
    assert_eq!((n.0.as_str(), n.1.as_str()), ("mqtt", "failed"));
    assert!(n.3.contains("MQTT_USER"), "{n:?}");
    assert!(!n.2.contains("nope"), "never the password: {n:?}");
}

#[test]
fn a_settings_line_systemd_ignores_fails_naming_file_and_line() {
    let db = ready_db();
    let dir = TempDir::new("doctor-env");
    let file = Path::new(dir.path()).join("shellyctl.env");
    std::fs::write(
        &file,
        format!("DATABASE_URL={}\nexport SHELLY_HOST=192.0.2.1\n", db.url),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, report) = doctor(&[("SHELLYCTL_ENV_FILE", f)], &[]);
    assert_eq!(code, 1);
    let s = lines(&report, "settings");
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, format!("{f}:2"));
    assert_eq!(s[0].1, "failed");
    // The rest of the file was read: the database passes.
    assert_eq!(lines(&report, "database")[0].1, "ok");
}

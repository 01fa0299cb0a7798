mod common;
use common::*;

fn sql_files() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count()
}

#[test]
fn migrate_applies_the_schema_then_is_a_no_op() {
    let db = TestDb::empty();
    let files = sql_files();
    assert!(files >= 3);
    let env = [("DATABASE_URL", db.url.as_str())];
    let first = shellyctl(&["migrate", "--format", "json"], &env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let j = first.json();
    assert_eq!(j["applied"][0]["version"], 1);
    assert_eq!(j["applied"][0]["name"], "0001_init.sql");
    assert_eq!(j["applied"][0]["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(j["already_applied"], 0);
    assert_eq!(
        j["applied"].as_array().unwrap().len(),
        files,
        "every file, in order"
    );
    assert_eq!(j["applied"][1]["name"], "0002_tariff_prices.sql");

    for table in [
        "devices",
        "power_readings",
        "switch_readings",
        "energy_intervals",
        "ingest_cursors",
        "tariffs",
        "alert_events",
        "alert_state",
        "power_logs",
    ] {
        let n = db.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
        ));
        assert_eq!(n, 1, "table {table} missing");
    }
    let idx = db.count(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'power_readings'
           AND (indexdef LIKE '%(ts)%' OR indexdef LIKE '%(device_id, ts)%')",
    );
    assert_eq!(
        idx, 2,
        "power_readings is indexed on (ts) and (device_id, ts)"
    );

    let second = shellyctl(&["migrate", "--format", "json"], &env);
    assert_eq!(second.code, 0);
    assert_eq!(second.json()["applied"].as_array().unwrap().len(), 0);
    assert_eq!(second.json()["already_applied"], files);
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations"),
        files as i64
    );
}

#[test]
fn two_concurrent_migrates_apply_each_file_once() {
    let db = TestDb::empty();
    let children: Vec<_> = (0..4)
        .map(|_| {
            spawn(
                &["migrate", "--format", "json"],
                &[("DATABASE_URL", db.url.as_str())],
            )
        })
        .collect();
    let mut applied_total = 0;
    for c in children {
        let out = c.wait_with_output();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        applied_total += j["applied"].as_array().unwrap().len();
    }
    let files = db.count("SELECT count(*) FROM schema_migrations") as usize;
    assert_eq!(
        applied_total, files,
        "each migration applied by exactly one run"
    );
}

#[test]
fn a_changed_applied_migration_is_an_error() {
    let db = TestDb::migrated();
    db.client()
        .execute(
            "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = 1",
            &[],
        )
        .unwrap();
    let out = shellyctl(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: migration 0001_init.sql was changed after it was applied"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_database_url_is_a_configuration_error() {
    let out = shellyctl(&["migrate"], &[]);
    assert_eq!(out.code, 78);
    assert_eq!(
        out.stderr.trim(),
        "error: no database configured: pass --database-url or set DATABASE_URL (or DATABASE_URL_FILE)"
    );
}

#[test]
fn unreachable_database_is_a_temporary_failure_without_leaking_the_password() {
    let url = format!(
        "postgres://shellyctl:topsecretpw@127.0.0.1:{}/x?connect_timeout=2",
        dead_port()
    );
    let out = shellyctl(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: connecting to PostgreSQL:"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("topsecretpw"));
}

#[test]
fn database_url_can_come_from_a_file() {
    let db = TestDb::empty();
    let dir = TempDir::new("dburl");
    let f = dir.0.join("url");
    std::fs::write(&f, format!("{}\n", db.url)).unwrap();
    let out = shellyctl(&["migrate"], &[("DATABASE_URL_FILE", f.to_str().unwrap())]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn sslmode_require_uses_verified_tls_or_fails_clearly() {
    let db = TestDb::empty();
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
    let cfg: postgres::Config = db.url.parse().unwrap();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let url = |extra: &str| {
        format!(
            "postgres://postgres@localhost:{port}/{}?sslmode=require{extra}",
            db.name
        )
    };
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if ssl_on == "on" && std::path::Path::new(snakeoil).exists() {
        // Debian's default server certificate is for "localhost".
        let ok = shellyctl(
            &["migrate"],
            &[("DATABASE_URL", &url(&format!("&sslrootcert={snakeoil}")))],
        );
        assert_eq!(ok.code, 0, "{}", ok.stderr);
        // The wrong CA: the certificate is refused.
        let ca = TempDir::new("ca");
        let bad = ca.0.join("ca.pem");
        std::fs::write(&bad, include_str!("fixtures/test-ca.pem")).unwrap();
        let refused = shellyctl(
            &["migrate"],
            &[(
                "DATABASE_URL",
                &url(&format!("&sslrootcert={}", bad.display())),
            )],
        );
        assert_ne!(refused.code, 0);
        assert!(
            refused
                .stderr
                .contains("error: connecting to PostgreSQL (TLS)"),
            "{}",
            refused.stderr
        );
    } else {
        let refused = shellyctl(&["migrate"], &[("DATABASE_URL", &url(""))]);
        assert_ne!(
            refused.code, 0,
            "a server without TLS must not be used with sslmode=require"
        );
        assert!(
            refused
                .stderr
                .contains("error: connecting to PostgreSQL (TLS)"),
            "{}",
            refused.stderr
        );
    }
    let missing = shellyctl(
        &["migrate"],
        &[("DATABASE_URL", &url("&sslrootcert=/nonexistent/ca.pem"))],
    );
    assert_eq!(missing.code, 78);
    assert!(
        missing
            .stderr
            .starts_with("error: reading the database CA file /nonexistent/ca.pem"),
        "{}",
        missing.stderr
    );
}

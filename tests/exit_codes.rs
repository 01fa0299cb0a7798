//! Exit codes systemd can act on: only what passes by itself is 75.

mod common;
use common::*;
use std::time::{Duration, Instant};

const MIGRATE_HINT: &str = "run `shellyctl migrate`";

#[test]
fn a_database_without_the_schema_is_a_config_error_that_says_run_migrate() {
    let db = TestDb::empty();
    let sim = sim(DeviceKind::Em3Gen3);
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
    ];
    for args in [
        &["health"][..],
        &["tariff", "list"],
        &["snapshot"],
        &["ingest-intervals"],
        &["retention"],
        &["minutes", "rebuild"],
    ] {
        let out = shellyctl(args, &env);
        assert_eq!(out.code, 78, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(MIGRATE_HINT),
            "{args:?}: {}",
            out.stderr
        );
        // What to do comes first, the server's words after it.
        if !matches!(args[0], "snapshot" | "ingest-intervals") {
            assert!(
                out.stderr.contains("error: the database schema is missing or out of date: run `shellyctl migrate` ("),
                "{args:?}: {}",
                out.stderr
            );
        }
        assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    }
}

#[test]
fn an_unreachable_database_is_temporary() {
    let url = format!("postgres://postgres@127.0.0.1:{}/x", dead_port());
    let out = shellyctl(&["health"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.code, 75, "{}", out.stderr);
}

#[test]
fn a_database_certificate_that_fails_verification_is_a_config_error() {
    let db = TestDb::empty();
    let cfg: postgres::Config = db.url.parse().unwrap();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    // A CA that did not sign the server's certificate (or, on a server
    // without TLS, no TLS at all): either way, retrying cannot help.
    let ca = TempDir::new("wrong-ca");
    let bad = ca.0.join("ca.pem");
    std::fs::write(&bad, include_str!("fixtures/test-ca.pem")).unwrap();
    let url = format!(
        "postgres://postgres@localhost:{port}/{}?sslmode=require&sslrootcert={}",
        db.name,
        bad.display()
    );
    let out = shellyctl(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("connecting to PostgreSQL (TLS)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_statement_that_outlasts_the_url_statement_timeout_ends_the_run() {
    let db = TestDb::migrated();
    // Another session holds the table: without a statement timeout the
    // job would wait for it forever.
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let url = format!("{}?options=-c%20statement_timeout%3D1s", db.url);
    let start = Instant::now();
    let out = shellyctl(&["health"], &[("DATABASE_URL", &url)]);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(out.code, 75, "{}", out.stderr);
    tx.rollback().unwrap();
}

#[test]
fn device_requests_ignore_proxy_variables() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let host = sim.host();
    let proxy = format!("http://127.0.0.1:{}", dead_port());
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLY_RETRIES", "0"),
    ];
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push((var, proxy.as_str()));
    }
    let out = shellyctl(&["snapshot"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = shellyctl(&["ingest-intervals"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(db.count("SELECT count(*) FROM power_readings") > 0);
}

/// A one-shot fake PostgreSQL server: reads the startup message and
/// answers with `reply`.
fn fake_postgres(reply: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    format!("postgres://shellyctl@127.0.0.1:{port}/shellyctl")
}

#[test]
fn a_database_asking_for_a_password_that_is_not_set_is_a_config_error() {
    // AuthenticationCleartextPassword
    let url = fake_postgres(b"R\0\0\0\x08\0\0\0\x03");
    let out = shellyctl(&["health"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
}

#[test]
fn a_peer_that_breaks_the_postgres_protocol_is_a_failure_not_temporary() {
    // ReadyForQuery before any authentication.
    let url = fake_postgres(b"Z\0\0\0\x05I");
    let out = shellyctl(&["health"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}

#[test]
fn a_reversed_day_range_is_a_usage_error() {
    let db = TestDb::migrated();
    let env = [("DATABASE_URL", db.url.as_str())];
    for args in [
        &[
            "report",
            "gaps",
            "--from",
            "2026-01-03",
            "--to",
            "2026-01-02",
            "--offline",
        ][..],
        &[
            "report",
            "costs",
            "--from",
            "2026-01-03",
            "--to",
            "2026-01-02",
        ],
        &[
            "backfill",
            "--host",
            "127.0.0.1:9",
            "--from",
            "2026-01-03",
            "--to",
            "2026-01-02",
        ],
        &["report", "energy"],
    ] {
        let out = shellyctl(args, &env);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
    }
}

#[test]
fn an_unusable_state_directory_with_a_password_is_a_config_error_before_any_request() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let dir = TempDir::new("state");
    let file = dir.0.join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad = file.join("state");
    let out = shellyctl(
        &["snapshot", "--state-dir", bad.to_str().unwrap()],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", &sim.host()),
            ("SHELLY_PASSWORD", "secret-password"),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the state directory {} is not usable",
            bad.display()
        )),
        "{}",
        out.stderr
    );
    assert_untouched(&sim, &db);
}

/// Nothing was asked of the device and nothing was stored.
fn assert_untouched(sim: &Simulator, db: &TestDb) {
    assert_eq!(
        sim.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 0);
}

#[test]
fn an_unsupported_format_is_refused_before_anything_is_stored() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let out = shellyctl(
        &["snapshot", "--format", "csv"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("SHELLY_HOST", &sim.host()),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(
        "--format csv is offered by report costs, report energy and report reconcile only"
    ));
    assert_untouched(&sim, &db);
}

#[test]
fn control_characters_stored_before_the_edge_checks_are_escaped_in_tables() {
    let db = TestDb::migrated();
    db.client()
        .execute(
            "INSERT INTO devices (device_id, model) VALUES ('old-id\u{1b}[2J', 'x\u{7}')",
            &[],
        )
        .unwrap();
    let out = shellyctl(&["device", "list"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{7}'),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("old-id\\u{1b}[2J"), "{}", out.stdout);
}

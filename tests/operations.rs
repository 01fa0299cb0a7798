//! health, metrics, retention, install, completions, cron and compose.

mod common;
use common::*;
use rust_decimal::Decimal;
use std::path::Path;
use std::time::{Duration, Instant};

/// minute, readings, total min/avg/max, phase B current avg, phase A voltage max
type MinuteRow = (
    i64,
    i64,
    Decimal,
    Decimal,
    Decimal,
    Option<Decimal>,
    Option<Decimal>,
);

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn health(db: &TestDb, now: i64) -> Run {
    shellyctl(
        &["health", "--format", "json", "--now", &now.to_string()],
        &[("DATABASE_URL", &db.url)],
    )
}

fn check<'a>(r: &'a serde_json::Value, check: &str, subject: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["subject"].as_str().unwrap().starts_with(subject))
        .unwrap_or_else(|| panic!("no {check} {subject}: {r}"))
}

#[test]
fn health_is_ok_on_fresh_data_and_fails_on_stale_or_partial_data() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", &sim.host()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(shellyctl(&["snapshot"], &env).code, 0);
    assert_eq!(shellyctl(&["ingest-intervals"], &env).code, 0);
    let now = chrono::Utc::now().timestamp();

    // Fresh: the snapshot just ran, the cursor is at the device's last record.
    let fresh = health(&db, now);
    assert_eq!(fresh.code, 0, "{}", fresh.stdout);
    let j = fresh.json();
    assert_eq!(j["ok"], true);
    assert_eq!(check(&j, "job", "snapshot shelly3em63g3")["ok"], true);
    assert_eq!(check(&j, "reading", "shelly3em63g3")["ok"], true);
    assert_eq!(
        check(&j, "intervals", "shelly3em63g3-e4b063a1b2c3 emdata:0")["ok"],
        true
    );

    // Ten minutes later without runs: readings and the snapshot job are stale.
    let stale = health(&db, now + 600);
    assert_eq!(stale.code, 1);
    let j = stale.json();
    assert_eq!(j["ok"], false);
    assert_eq!(check(&j, "reading", "shelly3em63g3")["ok"], false);
    assert_eq!(check(&j, "job", "snapshot")["ok"], false);
    assert_eq!(
        check(&j, "intervals", "shelly3em63g3")["ok"],
        true,
        "30 min allowed"
    );
    // A hundred days later: the newest reading is found although it is in
    // no recent month (the first look only covers five weeks).
    let last: String = db
        .client()
        .query_one("SELECT max(ts)::text FROM power_readings", &[])
        .unwrap()
        .get(0);
    let months_later = health(&db, now + 100 * 86_400);
    let r = check(&months_later.json(), "reading", "shelly3em63g3").clone();
    assert_eq!(
        r["age_s"].as_i64().map(|a| a >= 100 * 86_400),
        Some(true),
        "{r}"
    );
    assert!(r["last"].as_str().is_some(), "{r} (stored {last})");
    let table = shellyctl(&["health", "--now", &(now + 600).to_string()], &env);
    assert!(
        table.stdout.contains("STALE") && table.stdout.contains("unhealthy"),
        "{}",
        table.stdout
    );

    // Partial: a second device never answered; its job row has no success.
    let dead = format!("127.0.0.1:{}", dead_port());
    let env2: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", dead.as_str()),
        ("SHELLY_RETRIES", "0"),
    ];
    assert_eq!(shellyctl(&["snapshot"], &env2).code, 75);
    let partial = health(&db, now + 5);
    assert_eq!(partial.code, 1);
    let c = check(&partial.json(), "job", &format!("snapshot {dead}")).clone();
    assert_eq!(c["ok"], false);
    assert!(c["age_s"].is_null(), "never succeeded");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .starts_with("failing: identifying device"),
        "{c}"
    );
    // Limits are configurable per job.
    let relaxed = shellyctl(
        &[
            "health",
            "--format",
            "json",
            "--max-job-age",
            "snapshot=1h",
            "--now",
            &(now + 600).to_string(),
        ],
        &env,
    );
    assert_eq!(
        check(&relaxed.json(), "job", "snapshot shelly3em63g3")["ok"],
        true
    );
}

#[test]
fn pending_notifications_past_their_limit_make_health_fail() {
    let db = TestDb::migrated();
    // A device was seen and delivered (else unhealthy anyway).
    db.client()
        .batch_execute(
            "INSERT INTO devices (device_id) VALUES ('meter-1');
             INSERT INTO power_readings (ts, device_id, total_power_w) VALUES (to_timestamp(1790000000), 'meter-1', 100);",
        )
        .unwrap();
    db.client().execute(
        "INSERT INTO alert_events (created_at, rule_key, delivery_status) VALUES (to_timestamp(1790000000), 'x/total_power', 'failed')", &[]).unwrap();
    assert_eq!(health(&db, 1_790_000_000 + 60).code, 0);
    let late = health(&db, 1_790_000_000 + 3600);
    assert_eq!(late.code, 1);
    assert_eq!(
        check(&late.json(), "notifications", "1 pending")["ok"],
        false
    );
}

#[test]
fn jobs_write_prometheus_metrics_that_parse_back() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Pro4Pm);
    let dir = TempDir::new("metrics");
    let host = sim.host();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLYCTL_METRICS_FILE", dir.path()),
    ];
    assert_eq!(shellyctl(&["snapshot"], &env).code, 0);
    assert_eq!(shellyctl(&["snapshot"], &env).code, 0);
    let text = std::fs::read_to_string(dir.0.join("shellyctl_snapshot.prom")).unwrap();
    let m = shellyctl::metrics::parse(&text);
    assert_eq!(m["shellyctl_job_runs_total{job=\"snapshot\"}"], 2.0);
    assert_eq!(m["shellyctl_job_failures_total{job=\"snapshot\"}"], 0.0);
    assert_eq!(
        m["shellyctl_rows_written_total{job=\"snapshot\"}"], 8.0,
        "4 channels twice"
    );
    assert_eq!(m["shellyctl_last_exit_code{job=\"snapshot\"}"], 0.0);
    let latency = m
        ["shellyctl_device_latency_seconds{job=\"snapshot\",device=\"shellypro4pm-f008d1d8b8b8\"}"];
    assert!(latency > 0.0 && latency < 5.0);
    assert!(text.contains("# TYPE shellyctl_job_runs_total counter"));
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            series.starts_with("shellyctl_")
                && series.ends_with('}')
                && value.parse::<f64>().is_ok(),
            "{line}"
        );
    }
    // No temporary files are left beside it.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);

    sim.set_sticky_fault(Some(Fault::Status500));
    let env2 = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHELLY_HOST", host.as_str()),
        ("SHELLYCTL_METRICS_FILE", dir.path()),
        ("SHELLY_RETRIES", "0"),
    ];
    assert_eq!(shellyctl(&["snapshot"], &env2).code, 75);
    let m = shellyctl::metrics::parse(
        &std::fs::read_to_string(dir.0.join("shellyctl_snapshot.prom")).unwrap(),
    );
    assert_eq!(m["shellyctl_job_failures_total{job=\"snapshot\"}"], 1.0);
    assert_eq!(m["shellyctl_last_exit_code{job=\"snapshot\"}"], 75.0);
}

#[test]
fn retention_replaces_old_raw_readings_with_exact_one_minute_aggregates() {
    let db = TestDb::migrated();
    let now: i64 = 1_790_000_040; // a minute boundary
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id) VALUES ('m1')", &[])
        .unwrap();
    // 40 days of readings every 10 s? Keep it small: 3 hours of 10-second
    // readings 35 days ago, and 1 hour 2 days ago (kept raw).
    c.execute(
        "INSERT INTO power_readings (ts, device_id, total_power_w, phase_a_power_w, phase_a_voltage_v, phase_b_current_a)
         SELECT to_timestamp($1) + (i * interval '10 seconds'), 'm1', (i % 17) * 10.5, i % 7, 230 + (i % 3) * 0.1,
                CASE WHEN i % 5 = 0 THEN NULL ELSE i % 4 END
           FROM generate_series(0, 1079) i",
        &[&((now - 35 * 86_400) as f64)],
    ).unwrap();
    c.execute(
        "INSERT INTO power_readings (ts, device_id, total_power_w)
         SELECT to_timestamp($1) + (i * interval '10 seconds'), 'm1', 100 FROM generate_series(0, 359) i",
        &[&((now - 2 * 86_400) as f64)],
    ).unwrap();
    // What the aggregates must equal, from the raw rows themselves.
    let expected: Vec<MinuteRow> = c.query(
        "SELECT EXTRACT(EPOCH FROM date_trunc('minute', ts, 'UTC'))::bigint, count(*), min(total_power_w), avg(total_power_w), max(total_power_w),
                avg(phase_b_current_a), max(phase_a_voltage_v)
           FROM power_readings WHERE ts < to_timestamp($1) GROUP BY 1 ORDER BY 1",
        &[&((now - 30 * 86_400) as f64)],
    ).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))).collect();
    assert_eq!(expected.len(), 180);

    let out = shellyctl(
        &[
            "retention",
            "--format",
            "json",
            "--batch-minutes",
            "45",
            "--exact-cutoff",
            "--now",
            &now.to_string(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = out.json();
    // The rows another tool wrote waited in the default partition; taking
    // them into their month aggregated them (db::minutes).
    assert_eq!(j["raw_rows_deleted"], 1080);
    assert_eq!(j["batches"], 4, "3 hours in 45-minute transactions");
    assert!(j["bytes_reclaimed"].as_i64().unwrap() > 1080 * 50);
    assert_eq!(
        db.count("SELECT count(*) FROM power_readings"),
        360,
        "the recent hour stays raw"
    );
    let got: Vec<MinuteRow> = c.query(
        "SELECT EXTRACT(EPOCH FROM minute)::bigint, readings::bigint, total_power_w_min, total_power_w_avg, total_power_w_max,
                phase_b_current_a_avg, phase_a_voltage_v_max FROM power_readings_1m
          WHERE minute < to_timestamp($1) ORDER BY 1", &[&((now - 30 * 86_400) as f64)]).unwrap()
        .iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))).collect();
    assert_eq!(got, expected);

    // Idempotent; and aggregates past their own limit go.
    assert_eq!(
        shellyctl(
            &[
                "retention",
                "--format",
                "json",
                "--exact-cutoff",
                "--now",
                &now.to_string()
            ],
            &[("DATABASE_URL", &db.url)]
        )
        .json()["raw_rows_deleted"],
        0
    );
    // The recent hour was aggregated too, with its rows.
    assert_eq!(db.count("SELECT count(*) FROM power_readings_1m"), 180 + 60);
    let later = shellyctl(
        &[
            "retention",
            "--format",
            "json",
            "--aggregate-days",
            "60",
            "--now",
            &(now + 40 * 86_400).to_string(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(later.json()["aggregate_rows_deleted"], 180);
    assert_eq!(db.count("SELECT count(*) FROM energy_intervals"), 0);
}

#[test]
fn snapshot_repeat_spaces_its_runs() {
    let db = TestDb::migrated();
    let sim = sim(DeviceKind::Em3Gen3);
    let start = Instant::now();
    let out = shellyctl(
        &[
            "snapshot",
            "--repeat",
            "3",
            "--every",
            "300ms",
            "--host",
            &sim.host(),
        ],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert_eq!(db.count("SELECT count(*) FROM power_readings"), 3);
    assert_eq!(db.count("SELECT count(*) FROM power_readings WHERE ts > (SELECT min(ts) FROM power_readings) + interval '250 milliseconds' AND ts < (SELECT min(ts) FROM power_readings) + interval '350 milliseconds'"), 1);
}

#[test]
fn install_into_a_staging_root_is_idempotent_and_uninstall_keeps_settings() {
    let root = TempDir::new("destdir");
    let run = |args: &[&str]| {
        let out = output_of(
            std::process::Command::new(repo("scripts/install"))
                .args(args)
                .env("DESTDIR", root.path())
                .env("SHELLYCTL_BIN", env!("CARGO_BIN_EXE_shellyctl")),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[]);
    let p = |rel: &str| root.0.join(rel.trim_start_matches('/'));
    for f in [
        "usr/local/bin/shellyctl",
        "etc/systemd/system/shellyctl-snapshot@.timer",
        "etc/systemd/system/shellyctl-listen.service",
        "usr/local/share/man/man1/shellyctl.1",
        "usr/local/share/bash-completion/completions/shellyctl",
        "etc/shellyctl/shellyctl.env",
    ] {
        assert!(p(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| std::fs::metadata(p(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("etc/shellyctl/credentials"), 0o700);
    assert_eq!(mode("etc/shellyctl/credentials/shelly-password"), 0o600);
    let token = std::fs::read_to_string(p("etc/shellyctl/credentials/listen-token")).unwrap();
    assert_eq!(token.len(), 48);
    assert!(
        std::fs::read_to_string(p("usr/local/share/man/man1/shellyctl.1"))
            .unwrap()
            .starts_with(".ie")
    );

    // A second run keeps edited settings and secrets.
    std::fs::write(p("etc/shellyctl/shellyctl.env"), "SHELLY_HOST=10.0.0.9\n").unwrap();
    run(&[]);
    assert_eq!(
        std::fs::read_to_string(p("etc/shellyctl/shellyctl.env")).unwrap(),
        "SHELLY_HOST=10.0.0.9\n"
    );
    assert_eq!(
        std::fs::read_to_string(p("etc/shellyctl/credentials/listen-token")).unwrap(),
        token
    );
    assert!(p("etc/shellyctl/shellyctl.env.example").exists());

    run(&["--uninstall"]);
    assert!(!p("usr/local/bin/shellyctl").exists());
    assert!(!p("etc/systemd/system/shellyctl-snapshot@.timer").exists());
    assert!(
        p("etc/shellyctl/shellyctl.env").exists()
            && p("etc/shellyctl/credentials/listen-token").exists()
    );

    run(&["--cron"]);
    let cron = std::fs::read_to_string(p("etc/cron.d/shellyctl")).unwrap();
    assert!(cron.contains("/usr/local/lib/shellyctl/cron-run snapshot --repeat 6 --every 10s"));
    assert!(p("usr/local/lib/shellyctl/cron-run").exists());
}

#[test]
fn completions_and_man_page() {
    let bash = shellyctl(&["completions", "bash"], &[]);
    assert_eq!(bash.code, 0);
    for sub in [
        "snapshot",
        "ingest-intervals",
        "evaluate-alerts",
        "retention",
        "health",
    ] {
        assert!(bash.stdout.contains(sub), "{sub}");
    }
    assert!(shellyctl(&["completions", "zsh"], &[])
        .stdout
        .starts_with("#compdef shellyctl"));
    let man = shellyctl(&["man"], &[]);
    assert!(
        man.stdout.contains(".TH shellyctl 1") && man.stdout.contains("75"),
        "exit codes are in the man page"
    );
}

#[test]
fn the_crontab_matches_the_timers() {
    let cron = std::fs::read_to_string(repo("cron/shellyctl.cron")).unwrap();
    let jobs: Vec<Vec<&str>> = cron
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('='))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(jobs.len(), 7);
    for j in &jobs {
        assert!(j.len() >= 7, "5 time fields, a user, a command: {j:?}");
        assert_eq!(j[5], "shellyctl");
    }
    let line = |job: &str| {
        jobs.iter()
            .find(|j| j.join(" ").contains(&format!("cron-run {job}")))
            .unwrap_or_else(|| panic!("{job}"))
            .clone()
    };
    assert_eq!(line("ingest-intervals")[..5], ["*/5", "*", "*", "*", "*"]);
    assert_eq!(line("backfill")[..2], ["10", "3"]);
    assert!(line("backfill").contains(&"--yesterday"));
    assert_eq!(
        jobs.iter()
            .filter(|j| j.join(" ").contains("evaluate-alerts"))
            .count(),
        2,
        "every 30 s"
    );
    let out = output_of(
        std::process::Command::new("sh")
            .arg("-n")
            .arg(repo("cron/cron-run")),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_runs_postgres_and_shellyctl_from_the_dockerfile() {
    let compose = std::fs::read_to_string(repo("compose.yaml")).unwrap();
    for needle in [
        "services:",
        "  db:",
        "image: postgres:",
        "  shellyctl:",
        "build: .",
        "condition: service_healthy",
        "  listen:",
        "secrets:",
    ] {
        assert!(compose.contains(needle), "{needle}");
    }
    assert!(!compose.contains('\t'), "YAML must not contain tabs");
    let docker = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(
        docker.contains("cargo build --release --locked")
            && docker.contains("cron/shellyctl.cron")
            && docker.contains("shellyctl migrate")
    );
    // Where the compose plugin exists, let Docker itself check the file.
    let available = output_of(std::process::Command::new("docker").args(["compose", "version"]))
        .is_ok_and(|o| o.status.success());
    if available {
        let out = output_of(
            std::process::Command::new("docker")
                .args(["compose", "-f"])
                .arg(repo("compose.yaml"))
                .arg("config")
                .env("SHELLY_HOST", "x"),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_dropped_child_guard_kills_and_reaps_its_process() {
    let mut child = ChildGuard::spawn(&mut sim_command(&["--bind", "127.0.0.1:0"], &[]));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(!line.trim().is_empty(), "the simulator did not start");
    let proc_dir = format!("/proc/{}", child.id());
    assert!(Path::new(&proc_dir).exists());
    drop(child);
    // Killed and reaped: not even a zombie is left.
    assert!(!Path::new(&proc_dir).exists(), "{proc_dir} still exists");
}

#[test]
fn a_child_guard_stops_a_process_with_sigterm() {
    let db = TestDb::migrated();
    let mut child = spawn(
        &["listen", "--bind", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", &db.url),
            ("LISTEN_TOKEN", "t0123456789abcdef"),
        ],
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    child.terminate();
    let out = child.wait_with_output();
    // listen handles SIGTERM and exits 0; SIGKILL would leave no code.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_debian_package_holds_the_binary_units_docs_and_a_conffile() {
    let out_dir = TempDir::new("deb");
    let out = output_of(
        std::process::Command::new("bash")
            .arg(repo("scripts/package"))
            .env("SHELLYCTL_BIN", env!("CARGO_BIN_EXE_shellyctl"))
            // The debug binary is large; xz of it takes half a minute.
            .env("DEB_COMPRESS", "none")
            .env("OUT", out_dir.path()),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");
    let dpkg = |args: &[&str]| {
        let o = output_of(std::process::Command::new("dpkg-deb").args(args).arg(&deb)).unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let files = dpkg(&["-c"]);
    for want in [
        "-rwxr-xr-x root/root",
        " ./usr/bin/shellyctl",
        " ./lib/systemd/system/shellyctl-snapshot@.timer",
        " ./lib/systemd/system/shellyctl-listen.service",
        " ./usr/share/man/man1/shellyctl.1.gz",
        " ./usr/share/bash-completion/completions/shellyctl",
        " ./usr/share/zsh/site-functions/_shellyctl",
        " ./usr/share/fish/vendor_completions.d/shellyctl.fish",
        " ./usr/lib/shellyctl/cron-run",
        " ./etc/shellyctl/shellyctl.env",
    ] {
        assert!(files.contains(want), "{want} missing:\n{files}");
    }
    // No secret and no credential file in the package: postinst makes them.
    assert!(!files.contains("credentials"), "{files}");
    let control = dpkg(&["-f"]);
    assert!(control.contains("Package: shellyctl"), "{control}");
    assert!(control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));
    // Unpacked: the settings file is the example, a conffile; the units
    // run /usr/bin/shellyctl; the maintainer scripts are valid sh and
    // enable nothing.
    let root = TempDir::new("deb-root");
    let x =
        output_of(std::process::Command::new("dpkg-deb").args(["-R", &deb, root.path()])).unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let read = |p: &str| std::fs::read_to_string(Path::new(root.path()).join(p)).unwrap();
    assert_eq!(read("DEBIAN/conffiles"), "/etc/shellyctl/shellyctl.env\n");
    assert_eq!(
        read("etc/shellyctl/shellyctl.env"),
        std::fs::read_to_string(repo("systemd/shellyctl.env.example")).unwrap()
    );
    assert!(read("lib/systemd/system/shellyctl-snapshot@.service")
        .contains("ExecStart=/usr/bin/shellyctl snapshot"));
    assert!(read("usr/lib/shellyctl/cron-run").contains("/usr/bin/shellyctl"));
    for script in ["postinst", "prerm", "postrm"] {
        let text = read(&format!("DEBIAN/{script}"));
        // Nothing enabled or started (the next steps it prints say `sudo
        // systemctl enable ...` for the user to type).
        for line in text.lines().map(str::trim_start) {
            assert!(
                !line.starts_with("systemctl enable") && !line.starts_with("systemctl start"),
                "{script}: {line}"
            );
        }
        let sh = output_of(
            std::process::Command::new("sh")
                .arg("-n")
                .arg(Path::new(root.path()).join("DEBIAN").join(script)),
        )
        .unwrap();
        assert!(
            sh.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&sh.stderr)
        );
    }
    assert!(read("DEBIAN/postrm").contains("rm -rf /etc/shellyctl/credentials"));
}

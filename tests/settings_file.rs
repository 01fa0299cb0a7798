//! The settings file as a hand run and cron read it (systemd's
//! EnvironmentFile= rules, `src/envfile.rs`), `cron/cron-run`'s exit codes,
//! and quiet broken pipes on every command that prints.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A key=value connection string for the test database, with spaces and
/// with `&`, `#`, `$` and quotes in a (trust-ignored) password: every
/// character a shell would have read otherwise.
fn keyword_url(db: &TestDb) -> String {
    let cfg: postgres::Config = db.url.parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".into(),
    };
    format!(
        "host={host} port={} user={} dbname={} password='a&b#c$d \\'q\\''",
        cfg.get_ports()[0],
        cfg.get_user().unwrap_or("postgres"),
        db.name
    )
}

/// Writes `text` as `dir/shellyctl.env`.
fn settings(dir: &TempDir, text: &str) -> String {
    let p = Path::new(dir.path()).join("shellyctl.env");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn a_hand_run_reads_the_settings_file_with_systemds_rules() {
    let db = TestDb::empty();
    let dir = TempDir::new("envfile");
    // Quoted with spaces and a `#`; `&` and `$` inside; a comment; a line
    // systemd ignores (reported, not fatal).
    let file = settings(
        &dir,
        &format!(
            "# settings\nDATABASE_URL=\"{}\"\nexport NOT_A_NAME=1\nSHELLYCTL_LOG_FORMAT=json\n",
            keyword_url(&db).replace('\\', "\\\\").replace('"', "\\\"")
        ),
    );
    let run = shellyctl(&["--env-file", &file, "migrate"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(db.count("SELECT count(*) FROM schema_migrations") > 0);
    let ignored = run.log_events("settings_line_ignored");
    assert_eq!(ignored.len(), 1, "{}", run.stderr);
    assert_eq!(ignored[0]["line"], 3);

    // The same through SHELLYCTL_ENV_FILE, and through `--env-file=`.
    let run = shellyctl(
        &["health", "--format", "json"],
        &[("SHELLYCTL_ENV_FILE", &file)],
    );
    assert_eq!(
        run.code, 1,
        "a database that never saw a device: {}",
        run.stderr
    );
    let run = shellyctl(&[&format!("--env-file={file}"), "tariff", "list"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A variable set in the environment wins over the file, and a flag wins
    // over both: the file's URL is broken, the environment's works.
    let broken = settings(&dir, "DATABASE_URL=postgres://nobody@127.0.0.1:1/none\n");
    let run = shellyctl(
        &["--env-file", &broken, "tariff", "list"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(run.code, 0, "the environment wins: {}", run.stderr);
    let run = shellyctl(
        &[
            "--env-file",
            &broken,
            "tariff",
            "list",
            "--database-url",
            &db.url,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "the flag wins: {}", run.stderr);
    let run = shellyctl(&["--env-file", &broken, "tariff", "list"], &[]);
    assert_eq!(run.code, 75, "the file's URL is used: {}", run.stderr);
}

#[test]
fn later_files_override_earlier_ones_and_the_credentials_beside_the_file_are_read() {
    let db = TestDb::migrated();
    let dir = TempDir::new("envfile-cred");
    let shared = settings(&dir, "SHELLY_HOST=192.0.2.1\nSHELLYCTL_FORMAT=json\n");
    let group = Path::new(dir.path()).join("house.env");
    std::fs::write(&group, "SHELLY_HOST=192.0.2.7\n").unwrap();
    // The database URL as a secret, in credentials/ beside the file (as
    // /etc/shellyctl/credentials), which the units pass as a credential.
    let creds = Path::new(dir.path()).join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("database-url"), format!("{}\n", db.url)).unwrap();
    let run = shellyctl(
        &[
            "--env-file",
            &shared,
            "--env-file",
            group.to_str().unwrap(),
            "health",
        ],
        &[],
    );
    // The group's host (never seen) is the one configured.
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let devices: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "device")
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(devices, vec!["192.0.2.7"], "{report}");
}

#[test]
fn a_settings_file_that_cannot_be_read_is_a_configuration_error_naming_it() {
    let run = shellyctl(
        &["--env-file", "/nonexistent/shellyctl.env", "tariff", "list"],
        &[],
    );
    assert_eq!(run.code, 78);
    assert_eq!(
        run.stderr.trim(),
        "error: cannot read the settings file /nonexistent/shellyctl.env: No such file or directory (os error 2)"
    );
    let run = shellyctl(&["health"], &[("SHELLYCTL_ENV_FILE", "/nonexistent/x.env")]);
    assert_eq!(run.code, 78);
    assert!(run.stderr.contains("/nonexistent/x.env"), "{}", run.stderr);
}

#[test]
fn help_says_what_wins_over_the_file() {
    let run = shellyctl(&["--help"], &[]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("--env-file <FILE>"), "{}", run.stdout);
    assert!(run.stdout.contains("SHELLYCTL_ENV_FILE"));
    assert!(run.stdout.contains("win over the file"));
}

/// Runs cron/cron-run as cron would, with `path` as PATH (with or without
/// logger).
fn cron_run(conf: &TempDir, path: &str, args: &[&str]) -> i32 {
    let out = output_of(
        Command::new("/bin/sh")
            .arg(repo("cron/cron-run"))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("SHELLYCTL_CONF", conf.path())
            .env("SHELLYCTL_BIN", env!("CARGO_BIN_EXE_shellyctl"))
            .env("STATE_DIRECTORY", conf.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    out.status.code().unwrap_or(-1)
}

#[test]
fn cron_run_reads_the_file_like_systemd_and_exits_with_the_jobs_code() {
    let db = TestDb::empty();
    let conf = TempDir::new("cron-run");
    // The URL with `&` unquoted, as the example file had it: a shell that
    // sourced the file ran `user=...` as a command in the background.
    let cfg: postgres::Config = db.url.parse().unwrap();
    let url = format!(
        "postgres:///{}?host=127.0.0.1&port={}&user={}",
        db.name,
        cfg.get_ports()[0],
        cfg.get_user().unwrap_or("postgres")
    );
    settings(
        &conf,
        &format!("DATABASE_URL={url}\nHOMEBRIDGE_ACCESSORY_ID=Power Trigger\n"),
    );
    let system_path = std::env::var("PATH").unwrap_or_default();
    for path in [system_path.as_str(), "/nonexistent"] {
        // logger found, and not found.
        assert_eq!(cron_run(&conf, path, &["migrate"]), 0, "PATH={path}");
        // health of a database that never saw a device: 1.
        assert_eq!(cron_run(&conf, path, &["health"]), 1, "PATH={path}");
        // snapshot without SHELLY_HOST: a usage error, 2 (cron-run exited 0).
        assert_eq!(cron_run(&conf, path, &["snapshot"]), 2, "PATH={path}");
    }
    assert!(db.count("SELECT count(*) FROM schema_migrations") > 0);
    // No settings file at all: the job cannot run as configured (78).
    let empty = TempDir::new("cron-run-none");
    assert_eq!(cron_run(&empty, &system_path, &["health"]), 78);
}

/// Runs the binary with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = command(args, env);
    cmd.stdout(writer);
    let out = ChildGuard::spawn(&mut cmd).wait_with_output();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_on_stdout_is_quiet_for_every_command_that_prints() {
    let db = TestDb::migrated();
    let dir = TempDir::new("pipe");
    let tariff = Path::new(dir.path()).join("g11.json");
    let example = shellyctl(&["tariff", "example", "g11"], &[]);
    assert_eq!(example.code, 0);
    std::fs::write(&tariff, &example.stdout).unwrap();
    let env = [("DATABASE_URL", db.url.as_str())];
    assert_eq!(
        shellyctl(&["tariff", "import", tariff.to_str().unwrap()], &env).code,
        0
    );
    let commands: Vec<Vec<&str>> = vec![
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["completions", "fish"],
        vec!["man"],
        vec!["tariff", "example", "g12"],
        vec!["tariff", "list"],
        vec!["tariff", "list", "--format", "json"],
        vec!["report", "costs", "--month", "2026-10", "--format", "json"],
        vec!["report", "costs", "--month", "2026-10"],
        vec!["report", "energy", "--month", "2026-10", "--format", "csv"],
        vec!["report", "gaps", "--from", "2026-10-01", "--format", "json"],
        // Unhealthy (exit 1: no device ever seen) with a reader; with the
        // reader gone, the closed pipe is what ends it: quietly, 0.
        vec!["health", "--format", "json", "--max-job-age", "snapshot=1h"],
        vec!["slots", "check", "--format", "json"],
        vec!["minutes", "check", "--format", "json"],
        vec!["evaluate-alerts", "--format", "json", "--power-w", "4500"],
        vec!["retention", "--format", "json"],
        vec!["device", "list", "--format", "json"],
    ];
    for args in commands {
        let (code, stderr) = with_closed_stdout(&args, &env);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error:"),
            "{args:?}: {stderr}"
        );
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
}

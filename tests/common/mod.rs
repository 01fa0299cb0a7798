//! Shared helpers for integration tests: a fresh PostgreSQL database per
//! test, the built `shellyctl` run with a scrubbed environment, and the
//! device simulator (in-process, or its `shelly-sim` binary).
#![allow(dead_code, unused_imports)]

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod http;
pub mod proxy;
pub use shelly_sim::{DeviceKind, Fault, Profile, SimConfig, Simulator};

/// The server tests create their databases on. `scripts/test` sets it;
/// the default is the local trust-auth server. No test skips when it is
/// missing: they fail.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// A new, empty database (not migrated).
    pub fn empty() -> TestDb {
        let name = format!(
            "shellyctl_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_subsec_micros()
        );
        let mut admin =
            postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap_or_else(|e| {
                panic!(
                    "cannot reach the test PostgreSQL at {} ({e}); run the tests with scripts/test",
                    admin_url()
                )
            });
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let mut cfg: postgres::Config = admin_url().parse().unwrap();
        cfg.dbname(&name);
        let url = config_to_url(&cfg);
        TestDb { name, url }
    }

    /// A new database with the schema applied (through the binary).
    pub fn migrated() -> TestDb {
        let db = TestDb::empty();
        let out = shellyctl(&["migrate"], &[("DATABASE_URL", &db.url)]);
        assert_eq!(out.code, 0, "migrate failed: {}", out.stderr);
        db
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to test database")
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn config_to_url(cfg: &postgres::Config) -> String {
    use postgres::config::Host;
    let host = match &cfg.get_hosts()[0] {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres");
    let auth = match cfg.get_password() {
        Some(pw) => format!("{user}:{}@", String::from_utf8_lossy(pw)),
        None => format!("{user}@"),
    };
    format!(
        "postgres://{auth}{host}:{port}/{}",
        cfg.get_dbname().unwrap()
    )
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The JSON log lines on stderr.
    pub fn logs(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_events(&self, event: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect()
    }
}

/// Runs the built binary with only PATH and the given variables.
pub fn shellyctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = spawn(args, env).wait_with_output();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    scrubbed(Path::new(env!("CARGO_BIN_EXE_shellyctl")), args, env)
}

/// The simulator's binary, `shelly-sim` (tests/simulator), run like
/// [`command`]. It is another package's binary, so cargo does not build it
/// for these tests: scripts/test builds it first (`cargo build -p shelly-sim`).
pub fn sim_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    // The workspace's binaries share one directory.
    let bin = Path::new(env!("CARGO_BIN_EXE_shellyctl")).with_file_name("shelly-sim");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p shelly-sim` (scripts/test does)",
        bin.display()
    );
    scrubbed(&bin, args, env)
}

/// `program` with only PATH and the given variables, its output piped.
fn scrubbed(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Never the host's /etc/shellyctl/shellyctl.env (a test that wants
        // a settings file sets this itself).
        .env("SHELLYCTL_ENV_FILE", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Starts the built binary in the background, owned by a guard.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard::spawn(&mut command(args, env))
}

/// Runs any program to completion, like `Command::output`, but owned by a
/// guard while it runs. Fails only when the program cannot be started.
pub fn output_of(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(ChildGuard(Some(cmd.spawn()?)).wait_with_output())
}

/// A child process that is killed (SIGKILL) and reaped when the guard is
/// dropped, so a failing test never leaves processes behind.
pub struct ChildGuard(Option<Child>);

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGTERM: i32 = 15;

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(Some(cmd.spawn().expect("spawn child process")))
    }

    /// Sends SIGTERM (without an external `kill` program).
    pub fn terminate(&self) {
        let pid = self.id() as i32;
        // SAFETY: kill(2) has no memory effects; the child is not reaped
        // yet (we own it), so the pid cannot have been reused.
        let rc = unsafe { kill(pid, SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, SIGTERM): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the child to exit and collects its piped output.
    pub fn wait_with_output(mut self) -> Output {
        self.0
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait for child")
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child")
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn sim(kind: DeviceKind) -> Simulator {
    sim_with(SimConfig::new(kind))
}

pub fn sim_with(cfg: SimConfig) -> Simulator {
    Simulator::start("127.0.0.1:0", cfg).expect("start simulator")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "shellyctl-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port that nothing listens on.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `shellyctl tariff import` of a tariff given as JSON (written to a
/// temporary file), with extra arguments such as `--replace`.
pub fn import_tariff(db: &TestDb, tariff: &Value, extra: &[&str]) -> Run {
    let dir = TempDir::new("tariff");
    let path = dir.0.join("t.json");
    std::fs::write(&path, tariff.to_string()).unwrap();
    let mut args = vec!["tariff", "import", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    shellyctl(&args, &[("DATABASE_URL", &db.url)])
}

/// `quarters` 15-minute interval records of one channel from `start`
/// (UTC, RFC 3339), written directly (with the device row).
pub fn put_intervals(
    db: &TestDb,
    device: &str,
    ch: &str,
    start: &str,
    quarters: i64,
    imp: &str,
    exp: &str,
) {
    let mut c = db.client();
    c.execute(
        "INSERT INTO devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&device],
    )
    .unwrap();
    c.execute(
        &format!(
            "INSERT INTO energy_intervals (device_id, channel, start_ts, end_ts, energy_wh, returned_energy_wh, source)
             SELECT $1, $2, t, t + interval '15 minutes', {imp}, {exp}, 'emdata:0'
               FROM generate_series('{start}'::timestamptz,
                                    '{start}'::timestamptz + interval '15 minutes' * ({quarters} - 1),
                                    interval '15 minutes') t"
        ),
        &[&device, &ch],
    )
    .unwrap();
    rebuild_slots(db);
}

/// Recomputes every 15-minute slot from the records, as `shellyctl slots
/// rebuild` does: for tests that write `energy_intervals` with SQL (the
/// ingest path writes slots itself).
/// A row of `energy_hours`: device, channel, UTC day, the 24 hours'
/// import and export Wh and covered seconds.
pub type HourRow = (
    String,
    String,
    chrono::NaiveDate,
    Vec<rust_decimal::Decimal>,
    Vec<rust_decimal::Decimal>,
    Vec<i32>,
);

/// Every row of `energy_hours`, exactly as stored.
pub fn hour_rows(db: &TestDb) -> Vec<HourRow> {
    db.client()
        .query(
            "SELECT device_id, channel, day, import_wh, export_wh, covered_s FROM energy_hours ORDER BY 1, 2, 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

pub fn rebuild_slots(db: &TestDb) {
    shellyctl::db::slots::rebuild(&mut db.client(), &Default::default()).unwrap();
}

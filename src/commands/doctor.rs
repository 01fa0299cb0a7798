//! `shellyctl doctor`: the first-run check after editing the settings. It
//! reads the settings the units get (the settings file, `envfile`) and
//! checks each configured thing once, writing nothing: the settings file,
//! the database (reachable, credentials, schema current), each device
//! (answers, password, model and profile, interval data, clock), the
//! notification backend (reachable and, for MQTT and the Homebridge UI,
//! the credentials; a pulse only with `--pulse`), a tariff for the current
//! month, and under systemd the timers. What is not configured is not
//! checked, and its line says so. Exit 0 only when every configured check
//! passes, else 1.

use crate::db;
use crate::exit::ExitKind;
use crate::notify::delivery::NotifyOptions;
use crate::output::{self, Report};
use crate::settings::{ConnArgs, GlobalArgs};
use crate::shelly::Client;
use clap::Args;
use serde::Serialize;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Devices to check (as for snapshot).
    #[arg(long = "host", env = "SHELLY_HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Largest acceptable difference between a device's clock and ours.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// Also send one test pulse through the notification backend (the
    /// HomeKit sensor trips once).
    #[arg(long)]
    pub pulse: bool,
    #[command(flatten)]
    pub notify: NotifyOptions,
}

/// One line of the report.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    /// Not configured, so not checked.
    NotConfigured,
}

#[derive(Debug, Serialize)]
pub struct Line {
    pub check: &'static str,
    pub subject: String,
    pub status: Status,
    pub detail: String,
    /// What to do, in one sentence (failed lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(check: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Line {
    Line {
        check,
        subject: subject.into(),
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn failed(
    check: &'static str,
    subject: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Line {
    Line {
        check,
        subject: subject.into(),
        status: Status::Failed,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn not_configured(check: &'static str, detail: impl Into<String>) -> Line {
    Line {
        check,
        subject: "-".into(),
        status: Status::NotConfigured,
        detail: detail.into(),
        fix: None,
    }
}

#[derive(Serialize)]
struct DoctorReport {
    ok: bool,
    checks: Vec<Line>,
}

impl Report for DoctorReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for l in &self.checks {
            let mark = match l.status {
                Status::Ok => "✔",
                Status::Failed => "✘",
                Status::NotConfigured => "-",
            };
            s.push_str(&format!(
                "{mark} {:<13} {}: {}\n",
                l.check,
                output::printable(&l.subject),
                output::printable(&l.detail)
            ));
            if let Some(fix) = &l.fix {
                s.push_str(&format!("    fix: {}\n", output::printable(fix)));
            }
        }
        s.push_str(if self.ok {
            "every configured check passed\n"
        } else {
            "some checks failed: see the ✘ lines\n"
        });
        s
    }

    fn summary(&self) -> String {
        let failed = self
            .checks
            .iter()
            .filter(|l| l.status == Status::Failed)
            .count();
        format!(
            "ok={} checks={} failed={failed}\n",
            self.ok,
            self.checks.len()
        )
    }
}

pub fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<ExitKind> {
    let mut checks = settings_lines();
    let mut db = database(global, &mut checks);
    devices(global, args, &mut checks);
    notifications(args, &mut checks);
    match db.as_mut() {
        Some(c) => checks.push(tariff(c, global.now())),
        None => checks.push(failed(
            "tariff",
            "-",
            "not checked: no database",
            "fix the database first",
        )),
    }
    checks.extend(systemd());
    let ok = checks.iter().all(|l| l.status != Status::Failed);
    output::print(global.format, &DoctorReport { ok, checks })?;
    Ok(if ok {
        ExitKind::Success
    } else {
        ExitKind::Failure
    })
}

/// The settings file(s) this run read, and lines systemd ignores.
fn settings_lines() -> Vec<Line> {
    let mut out = Vec::new();
    let Some(summary) = crate::envfile::summary() else {
        return vec![not_configured("settings", "no settings file was read")];
    };
    let s = &summary.loaded;
    if let Some(problem) = &summary.default_unreadable {
        out.push(failed(
            "settings",
            crate::envfile::DEFAULT_PATH,
            problem.clone(),
            "run doctor as root (sudo shellyctl doctor), as the timers read the file as root",
        ));
    }
    if s.files.is_empty() && summary.default_unreadable.is_none() {
        out.push(not_configured(
            "settings",
            format!(
                "no settings file ({} is absent, or SHELLYCTL_ENV_FILE is empty): the environment only",
                crate::envfile::DEFAULT_PATH
            ),
        ));
    }
    for f in &s.files {
        let skipped: Vec<_> = s.skipped.iter().filter(|(p, _, _)| p == f).collect();
        if skipped.is_empty() {
            out.push(ok(
                "settings",
                f.display().to_string(),
                format!("{} settings read", s.assigned_in(f)),
            ));
        }
        for (_, line, why) in skipped {
            out.push(failed(
                "settings",
                format!("{}:{line}", f.display()),
                why.clone(),
                "write it as NAME=value (quote a value with spaces in \"...\"): systemd ignores this line too",
            ));
        }
    }
    if let Some(dir) = &s.credentials_unreadable {
        out.push(failed(
            "settings",
            dir.display().to_string(),
            "the credentials directory is not readable by this user",
            "run doctor as root (sudo shellyctl doctor)",
        ));
    }
    out
}

/// Reachable, credentials accepted, schema current. Returns the connection
/// for the checks that need it.
fn database(global: &GlobalArgs, out: &mut Vec<Line>) -> Option<postgres::Client> {
    let url = match global.database_url() {
        Ok(u) => u,
        Err(e) => {
            out.push(failed(
                "database",
                "-",
                e.0,
                "set DATABASE_URL in the settings file, or the URL in credentials/database-url",
            ));
            return None;
        }
    };
    let mut c = match db::connect(&url) {
        Ok(c) => c,
        Err(e) => {
            let pg = e.chain().find_map(|c| c.downcast_ref::<postgres::Error>());
            let code = pg.and_then(|p| p.code()).map(|s| s.code().to_string());
            let text = pg
                .map(db::error_text)
                .unwrap_or_else(|| crate::failure::describe(&e));
            let fix = match code.as_deref() {
                Some(c) if c.starts_with("28") => {
                    "the server refused the user or password: check them in DATABASE_URL (or credentials/database-url) and the role (CREATE ROLE ... LOGIN PASSWORD ...)"
                }
                Some("3D000") => "create the database: sudo -u postgres createdb -O shellyctl shellyctl",
                _ => "start PostgreSQL or correct the host and port in DATABASE_URL",
            };
            out.push(failed("database", "connect", text, fix));
            return None;
        }
    };
    out.push(ok("database", "connect", "reachable, credentials accepted"));
    match schema(&mut c) {
        Ok(line) => out.push(line),
        Err(e) => out.push(failed(
            "database",
            "schema",
            crate::failure::describe(&e),
            "run: sudo shellyctl migrate",
        )),
    }
    Some(c)
}

fn schema(c: &mut postgres::Client) -> anyhow::Result<Line> {
    let embedded = db::migrate::embedded()?;
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    let applied: Vec<i32> = if exists {
        c.query("SELECT version FROM schema_migrations", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let missing = embedded
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count();
    let unknown = applied
        .iter()
        .filter(|v| !embedded.iter().any(|m| m.version == **v))
        .count();
    Ok(if unknown > 0 {
        failed(
            "database",
            "schema",
            format!("{unknown} migrations newer than this binary"),
            "install the shellyctl that migrated this database (or a newer one)",
        )
    } else if missing > 0 {
        failed(
            "database",
            "schema",
            format!("{missing} of {} migrations not applied", embedded.len()),
            "run: sudo shellyctl migrate",
        )
    } else {
        ok(
            "database",
            "schema",
            format!("current ({} migrations)", embedded.len()),
        )
    })
}

fn devices(global: &GlobalArgs, args: &DoctorArgs, out: &mut Vec<Line>) {
    let hosts = crate::settings::clean_hosts(&args.hosts);
    if hosts.is_empty() {
        out.push(not_configured(
            "device",
            "no SHELLY_HOST (devices that dial out to listen are not checked here)",
        ));
        return;
    }
    let opts = match args.conn.client_options() {
        Ok(o) => o,
        Err(e) => {
            out.push(failed(
                "device",
                "-",
                e.0,
                "correct the device settings (SHELLY_*)",
            ));
            return;
        }
    };
    for host in hosts {
        out.push(device(
            &Client::new(&host, opts.clone()),
            global.now(),
            args,
        ));
    }
}

fn device(client: &Client, now: i64, args: &DoctorArgs) -> Line {
    let host = client.host().to_string();
    let info = match client.identify() {
        Ok(i) => i,
        Err(e) => {
            return failed(
                "device",
                host,
                crate::failure::describe(&e),
                "check SHELLY_HOST and that the device is on and reachable from this machine",
            )
        }
    };
    let status: serde_json::Value = match client.call("Shelly.GetStatus", &[]) {
        Ok(s) => s,
        Err(e) => {
            let unauthorized = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::shelly::client::Error>(),
                    Some(crate::shelly::client::Error::Unauthorized(_))
                )
            });
            return failed(
                "device",
                host,
                crate::failure::describe(&e),
                if unauthorized {
                    "put the device's password into credentials/shelly-password (SHELLY_PASSWORD)"
                } else {
                    "check the device's firmware and network"
                },
            );
        }
    };
    let mut detail = format!(
        "{} {}",
        info.id.as_str(),
        info.model.as_deref().unwrap_or("model unknown")
    );
    if let Some(p) = &info.profile {
        detail.push_str(&format!(", profile {p}"));
    }
    let components = crate::shelly::emdata::components_of(&status);
    if components.is_empty() {
        detail.push_str(", no interval data (live readings only)");
    } else {
        let keys: Vec<&str> = components.iter().map(|c| c.key.as_str()).collect();
        detail.push_str(&format!(", interval data: {}", keys.join(" ")));
    }
    let unixtime = status
        .get("sys")
        .and_then(|s| s.get("unixtime"))
        .and_then(|t| t.as_i64());
    match unixtime {
        None => failed(
            "device",
            host,
            format!("{detail}; its clock is not set"),
            "let the device reach an SNTP server (Sys.SetConfig sntp), or its records have no time",
        ),
        Some(t) if (t - now).unsigned_abs() > args.max_clock_skew.as_secs() => {
            let skew = t - now;
            failed(
                "device",
                host,
                format!(
                    "{detail}; its clock is {} {}",
                    humantime::format_duration(Duration::from_secs(skew.unsigned_abs())),
                    if skew > 0 { "ahead" } else { "behind" }
                ),
                "let the device reach an SNTP server (Sys.SetConfig sntp) and check its time zone",
            )
        }
        Some(t) => ok(
            "device",
            host,
            format!("{detail}; clock within {} s", (t - now).abs()),
        ),
    }
}

fn notifications(args: &DoctorArgs, out: &mut Vec<Line>) {
    let delivery = match args.notify.resolve() {
        Ok(Some(d)) => d,
        Ok(None) => {
            out.push(not_configured(
                "notification",
                "no backend (TRIGGER_HTTP_URL, MQTT_URL or HOMEBRIDGE_API_URL)",
            ));
            return;
        }
        Err(e) => {
            out.push(failed(
                "notification",
                "-",
                e.0,
                "correct the notification settings",
            ));
            return;
        }
    };
    let name = delivery.backend.name();
    let reached = match &delivery.backend {
        // A webhook's GET is the pulse itself: only its port is tried.
        crate::notify::BackendConfig::Webhook(w) => tcp_reachable(&w.on_url, delivery.timeout)
            .map(|addr| format!("{addr} accepts connections (no request sent)")),
        // MQTT: CONNACK with the credentials; Homebridge UI: login and the
        // accessory found.
        other => other
            .connect(delivery.timeout)
            .map(|_| "connected, credentials accepted".to_string()),
    };
    match reached {
        Ok(detail) if args.pulse => {
            let pulse = delivery
                .backend
                .connect(delivery.timeout)
                .and_then(|mut b| crate::notify::pulse(b.as_mut(), delivery.hold));
            out.push(match pulse {
                Ok(_) => ok("notification", name, format!("{detail}; test pulse delivered")),
                Err(e) => failed(
                    "notification",
                    name,
                    format!("test pulse failed: {}", crate::failure::describe(&e)),
                    "check the accessory in Homebridge (see README \"Pointing Homebridge at the alarm\")",
                ),
            });
        }
        Ok(detail) => out.push(ok("notification", name, detail)),
        Err(e) => out.push(failed(
            "notification",
            name,
            crate::failure::describe(&e),
            match name {
                "mqtt" => "start the broker or correct MQTT_URL, MQTT_USER and the mqtt-password credential",
                "homebridge" => "correct HOMEBRIDGE_API_URL, the login (HOMEBRIDGE_USER and password, or the token) and HOMEBRIDGE_ACCESSORY_ID",
                _ => "start Homebridge or correct TRIGGER_HTTP_URL",
            },
        )),
    }
}

/// Connects to the host and port of an http(s) URL.
fn tcp_reachable(url: &str, timeout: Duration) -> anyhow::Result<String> {
    use std::net::ToSocketAddrs;
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("not a URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let default = if url.starts_with("https://") { 443 } else { 80 };
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default}")
    };
    let addr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{target}: no address"))?;
    std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
    Ok(target)
}

/// A tariff in force for the whole current month (UTC month).
fn tariff(c: &mut postgres::Client, now: i64) -> Line {
    use chrono::Datelike;
    let d = db::utc(now);
    let month_start = chrono::NaiveDate::from_ymd_opt(d.year(), d.month(), 1)
        .and_then(|m| m.and_hms_opt(0, 0, 0))
        .map(|m| m.and_utc().timestamp())
        .unwrap_or(now);
    let month_end = d
        .date_naive()
        .checked_add_months(chrono::Months::new(1))
        .and_then(|n| n.with_day(1))
        .and_then(|m| m.and_hms_opt(0, 0, 0))
        .map(|m| m.and_utc().timestamp())
        .unwrap_or(now + 1);
    let month = format!("{:04}-{:02}", d.year(), d.month());
    let names = match db::tariffs::names(c) {
        Ok(n) => n,
        Err(e) => {
            return failed(
                "tariff",
                month,
                crate::failure::describe(&e),
                "run: sudo shellyctl migrate",
            )
        }
    };
    if names.is_empty() {
        // Costs are optional: nothing to check until a tariff is imported.
        return Line {
            check: "tariff",
            subject: month,
            status: Status::NotConfigured,
            detail: "no tariff imported (report costs needs one: shellyctl tariff example g11 > g11.json, edit it, shellyctl tariff import g11.json)".into(),
            fix: None,
        };
    }
    let mut covering = Vec::new();
    for name in &names {
        let Ok(versions) = db::tariffs::versions(c, name, month_start, month_end) else {
            continue;
        };
        // Versions in force one after another from the month's start to its end.
        let mut at = month_start;
        for v in &versions {
            if v.valid_from_utc() <= at {
                at = v.valid_to_utc().unwrap_or(i64::MAX).max(at);
            }
        }
        if at >= month_end {
            covering.push(name.clone());
        }
    }
    if covering.is_empty() {
        failed(
            "tariff",
            month,
            format!("no tariff is in force for the whole month (tariffs: {})", names.join(", ")),
            "import a version valid for this month: shellyctl tariff import FILE (valid_from, valid_to)",
        )
    } else {
        ok(
            "tariff",
            month,
            format!("in force: {}", covering.join(", ")),
        )
    }
}

/// Under systemd: which timers are enabled, when each last ran and how its
/// service ended.
fn systemd() -> Vec<Line> {
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        return vec![not_configured(
            "systemd",
            "systemd is not running here: timers not checked",
        )];
    }
    let show = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("systemctl")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let Some(timers) = show(&[
        "list-units",
        "--all",
        "--no-legend",
        "--plain",
        "--type=timer",
        "shellyctl-*",
    ]) else {
        return vec![failed(
            "systemd",
            "-",
            "systemctl could not be run",
            "run doctor where systemctl works (on the host, not in a container)",
        )];
    };
    let mut out = Vec::new();
    for unit in timers.lines().filter_map(|l| l.split_whitespace().next()) {
        let props = show(&[
            "show",
            unit,
            "-p",
            "UnitFileState,ActiveState,LastTriggerUSec,Triggers",
        ])
        .unwrap_or_default();
        let get = |text: &str, k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_string()
        };
        let active = get(&props, "ActiveState");
        let last = get(&props, "LastTriggerUSec");
        let service = get(&props, "Triggers");
        let sprops = show(&["show", &service, "-p", "Result,ExecMainStatus"]).unwrap_or_default();
        let result = get(&sprops, "Result");
        let code = get(&sprops, "ExecMainStatus");
        let detail = format!(
            "{active}, last ran {}, {service}: {}{}",
            if last.is_empty() || last == "n/a" {
                "never".into()
            } else {
                last.clone()
            },
            if result.is_empty() { "?" } else { &result },
            if code.is_empty() || code == "0" {
                String::new()
            } else {
                format!(" (exit {code})")
            }
        );
        let healthy =
            active == "active" && (result == "success" || result.is_empty() || code == "75");
        out.push(if healthy {
            ok("systemd", unit, detail)
        } else if active != "active" {
            failed(
                "systemd",
                unit,
                detail,
                format!("enable it: sudo systemctl enable --now {unit}"),
            )
        } else {
            failed(
                "systemd",
                unit,
                detail,
                format!("see why: journalctl -u {service}"),
            )
        });
    }
    if out.is_empty() {
        // Not scheduled yet (doctor runs before the timers are enabled, too).
        out.push(not_configured(
            "systemd",
            "no shellyctl timer is enabled yet (README \"Running it for real\", step 4)",
        ));
    }
    out
}

//! `shelly-sim`: a simulated Shelly device on the local network, for trying
//! shellyctl (and for its tests and benchmarks) without hardware. It is its
//! own binary, formerly a subcommand, so that the production `shellyctl`
//! ships no hand-written HTTP server.

use clap::Parser;
use serde_json::json;
use shelly_sim::{device, DeviceKind, Fault, Profile, SimConfig, Simulator};
use shellyctl::exit::{ConfigError, ExitKind};
use shellyctl::log::LogFormat;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
The device password (digest auth, user admin) is not an option, as on a real
device: SHELLY_SIM_PASSWORD, else the file named by SHELLY_SIM_PASSWORD_FILE,
else the credential shelly-sim-password in $CREDENTIALS_DIRECTORY. Unset: no
auth.

The first line on stdout is the address it listens on (host:port).

Exit codes:
  0   success
  1   failure (e.g. the address cannot be bound)
  2   usage error (wrong arguments)
  78  configuration error (bad --mac or --period, unreadable password file)";

#[derive(Parser, Debug)]
#[command(
    name = "shelly-sim",
    version,
    about = "Run a simulated Shelly device, to try shellyctl without hardware",
    after_help = AFTER_HELP
)]
struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address
    /// is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,

    /// Which device to simulate.
    #[arg(long, value_enum, default_value = "3em63g3")]
    device: DeviceKind,

    /// Meter profile (3EM devices): triphase (em:0, emdata:0) or monophase
    /// (em1:0..2, em1data:0..2).
    #[arg(long, value_enum, default_value = "triphase")]
    profile: Profile,

    /// MAC address (12 hex digits); the device id is derived from it.
    #[arg(long)]
    mac: Option<String>,

    /// EMData recording period in seconds (default: 300 for the 3EM-63 Gen3,
    /// 60 for the Pro 3EM).
    #[arg(long)]
    period: Option<i64>,

    /// Days of interval history the device keeps.
    #[arg(long, default_value_t = 7)]
    history_days: i64,

    /// Records per EMData.GetData page.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: u64,

    /// A power-loss gap in the history: HOURS_AGO:MINUTES (repeatable).
    #[arg(long = "gap", value_parser = parse_gap, default_values = ["30:47"])]
    gaps: Vec<(i64, i64)>,

    /// No power-loss gaps at all.
    #[arg(long, conflicts_with = "gaps")]
    no_gaps: bool,

    /// Vary live power over a 10-minute cycle instead of fixed values.
    #[arg(long)]
    wave: bool,

    /// Inject faults: KIND[:PROBABILITY], KIND one of latency=MS, 500, 429,
    /// malformed, drop, hang (repeatable; probability default 1).
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<(Fault, f64)>,

    /// Also act as a device that dials out to a `shellyctl listen` server,
    /// e.g. ws://127.0.0.1:8765/ws/TOKEN: NotifyFullStatus on connect, then
    /// a NotifyStatus every full minute; reconnects when the link drops.
    #[arg(long)]
    connect: Option<String>,

    /// Digest nonce lifetime (firmware 2.0: 1 hour).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    nonce_ttl: Duration,

    /// Freeze the device clock at this unix time.
    #[arg(long, hide = true)]
    clock: Option<i64>,

    /// Seed of the generated history.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Format of the log lines on stderr (level via SHELLYCTL_LOG=debug|info|warn|error).
    #[arg(long, value_enum, default_value = "json", env = "SHELLYCTL_LOG_FORMAT")]
    log_format: LogFormat,
}

/// Errors end as one `error: ...` line on stderr and an exit code that says
/// what kind they are (78 for configuration), as in shellyctl.
fn main() -> ExitCode {
    let args = SimulateArgs::parse();
    shellyctl::log::init(args.log_format);
    match run(&args) {
        Ok(kind) => kind.into(),
        Err(e) => {
            eprintln!("error: {}", shellyctl::failure::describe(&e));
            shellyctl::failure::classify(&e).into()
        }
    }
}

fn parse_gap(s: &str) -> Result<(i64, i64), String> {
    let (h, m) = s
        .split_once(':')
        .ok_or("expected HOURS_AGO:MINUTES, e.g. 30:47")?;
    let h = h.parse().map_err(|_| format!("bad hours in {s:?}"))?;
    let m = m.parse().map_err(|_| format!("bad minutes in {s:?}"))?;
    Ok((h, m))
}

fn parse_fault(s: &str) -> Result<(Fault, f64), String> {
    let (kind, p) = match s.rsplit_once(':') {
        Some((k, p)) => (
            k,
            p.parse::<f64>()
                .map_err(|_| format!("bad probability in {s:?}"))?,
        ),
        None => (s, 1.0),
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability must be between 0 and 1: {s:?}"));
    }
    Ok((kind.parse()?, p))
}

fn run(args: &SimulateArgs) -> anyhow::Result<ExitKind> {
    let mut cfg = SimConfig::new(args.device);
    cfg.profile = args.profile;
    if let Some(mac) = &args.mac {
        anyhow::ensure!(
            mac.len() == 12 && mac.chars().all(|c| c.is_ascii_hexdigit()),
            ConfigError(format!("--mac must be 12 hex digits, got {mac:?}"))
        );
        cfg.mac = mac.to_ascii_uppercase();
    }
    if let Some(p) = args.period {
        anyhow::ensure!(p > 0, ConfigError("--period must be positive".into()));
        cfg.period_s = p;
    }
    cfg.history_days = args.history_days;
    cfg.page_size = args.page_size as usize;
    cfg.gaps = if args.no_gaps {
        vec![]
    } else {
        args.gaps.clone()
    };
    cfg.wave = args.wave;
    cfg.nonce_ttl = args.nonce_ttl;
    cfg.clock = args.clock;
    cfg.seed = args.seed;
    // The simulated device's password, like a real device's, is not an argument.
    cfg.password = shellyctl::secret::from_env("SHELLY_SIM_PASSWORD", "shelly-sim-password")?
        .map(|s| s.expose().to_string());

    let sim = Simulator::start(&args.bind, cfg)?;
    for (fault, p) in &args.faults {
        sim.add_random_fault(*fault, *p);
    }
    shellyctl::log::info(
        "simulator_listening",
        Some(sim.device_id()),
        json!({"addr": sim.host(), "model": device::device_info(sim.config())["model"], "auth": sim.config().password.is_some()}),
    );
    println!("{}", sim.host());
    if let Some(url) = &args.connect {
        let cfg = sim.config().clone();
        let url = url.clone();
        std::thread::spawn(move || dial_forever(&url, &cfg));
    }
    sim.wait();
    Ok(ExitKind::Success)
}

/// Keeps a dial-out connection up and pushes a NotifyStatus each minute.
fn dial_forever(url: &str, cfg: &SimConfig) {
    use shelly_sim::dialer::{notify_status, Dialer};
    let now = || chrono::Utc::now().timestamp();
    loop {
        match Dialer::connect(url, cfg, now()) {
            Ok(d) => {
                shellyctl::log::info("simulator_dialed_out", Some(&d.device_id), json!({}));
                while d.end_reason().is_none() {
                    let t = now();
                    std::thread::sleep(Duration::from_secs((60 - t % 60) as u64));
                    let t = now();
                    let status = device::status(cfg, t, 100);
                    let params: serde_json::Map<String, serde_json::Value> = status
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| {
                            k.starts_with("switch:")
                                || k.starts_with("em:")
                                || k.starts_with("em1:")
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    d.send(&notify_status(
                        &d.device_id,
                        t as f64,
                        serde_json::Value::Object(params),
                    ));
                }
                shellyctl::log::warn(
                    "simulator_link_lost",
                    Some(&d.device_id),
                    json!({"reason": d.end_reason()}),
                );
            }
            Err(e) => shellyctl::log::warn(
                "simulator_dial_failed",
                None,
                json!({"url": shellyctl::notify::redact_url(url), "error": e}),
            ),
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        SimulateArgs::command().debug_assert();
    }
}

//! Prometheus text-format metrics for node_exporter's textfile collector.
//!
//! Each run rewrites its job's file atomically (write a temporary file in
//! the same directory, then rename). Counters continue from the previous
//! file, so they count across runs of these short-lived processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Default)]
struct Collected {
    rows: u64,
    latencies: BTreeMap<String, f64>,
}

static COLLECTED: Mutex<Option<Collected>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Collected) -> T) -> T {
    let mut g = COLLECTED.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Collected::default))
}

/// Rows this run wrote.
pub fn add_rows(n: u64) {
    with(|c| c.rows += n);
}

/// How long a device took to answer, in seconds.
pub fn device_latency(device: &str, seconds: f64) {
    with(|c| {
        c.latencies.insert(device.to_string(), seconds);
    });
}

/// The file for `job`: `path` itself, or `shellyctl_<job>.prom` inside it
/// when it is a directory.
pub fn file_for(path: &Path, job: &str) -> PathBuf {
    if path.is_dir() {
        path.join(format!("shellyctl_{}.prom", job.replace('-', "_")))
    } else {
        path.to_path_buf()
    }
}

/// Parses `name{labels} value` lines (comments skipped).
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the job's metrics after a run.
pub fn write(
    path: &Path,
    job: &str,
    ok: bool,
    exit_code: u8,
    duration_s: f64,
) -> std::io::Result<PathBuf> {
    let file = file_for(path, job);
    let previous = std::fs::read_to_string(&file)
        .map(|t| parse(&t))
        .unwrap_or_default();
    let l = format!("{{job=\"{}\"}}", escape(job));
    let prev = |name: &str| previous.get(&format!("{name}{l}")).copied().unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let (rows, latencies) = with(|c| (c.rows, c.latencies.clone()));
    let last_success = if ok {
        now
    } else {
        prev("shellyctl_last_success_timestamp_seconds")
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "shellyctl_job_runs_total",
        "counter",
        "Runs of the job.",
        vec![(l.clone(), prev("shellyctl_job_runs_total") + 1.0)],
    );
    metric(
        "shellyctl_job_failures_total",
        "counter",
        "Runs that ended with a non-zero exit code.",
        vec![(
            l.clone(),
            prev("shellyctl_job_failures_total") + if ok { 0.0 } else { 1.0 },
        )],
    );
    metric(
        "shellyctl_rows_written_total",
        "counter",
        "Rows written to the database.",
        vec![(
            l.clone(),
            prev("shellyctl_rows_written_total") + rows as f64,
        )],
    );
    metric(
        "shellyctl_last_run_timestamp_seconds",
        "gauge",
        "When the job last ran (unix time).",
        vec![(l.clone(), now)],
    );
    if last_success > 0.0 {
        metric(
            "shellyctl_last_success_timestamp_seconds",
            "gauge",
            "When the job last succeeded (unix time).",
            vec![(l.clone(), last_success)],
        );
    }
    metric(
        "shellyctl_last_exit_code",
        "gauge",
        "Exit code of the last run.",
        vec![(l.clone(), exit_code as f64)],
    );
    metric(
        "shellyctl_last_run_duration_seconds",
        "gauge",
        "Duration of the last run.",
        vec![(l.clone(), duration_s)],
    );
    if !latencies.is_empty() {
        metric(
            "shellyctl_device_latency_seconds",
            "gauge",
            "Time a device took to answer in the last run.",
            latencies
                .iter()
                .map(|(d, s)| {
                    (
                        format!("{{job=\"{}\",device=\"{}\"}}", escape(job), escape(d)),
                        *s,
                    )
                })
                .collect(),
        );
    }
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("metrics"),
        std::process::id()
    ));
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_continue_across_runs_and_the_format_parses_back() {
        let dir = std::env::temp_dir().join(format!("shellyctl-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        add_rows(3);
        let f = write(&dir, "snapshot", true, 0, 0.01).unwrap();
        assert!(f.ends_with("shellyctl_snapshot.prom"));
        write(&dir, "snapshot", false, 75, 0.02).unwrap();
        let m = parse(&std::fs::read_to_string(&f).unwrap());
        assert_eq!(m["shellyctl_job_runs_total{job=\"snapshot\"}"], 2.0);
        assert_eq!(m["shellyctl_job_failures_total{job=\"snapshot\"}"], 1.0);
        assert_eq!(m["shellyctl_last_exit_code{job=\"snapshot\"}"], 75.0);
        assert!(m["shellyctl_last_success_timestamp_seconds{job=\"snapshot\"}"] > 1.7e9);
        assert!(m["shellyctl_rows_written_total{job=\"snapshot\"}"] >= 3.0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

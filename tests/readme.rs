//! The README is executable: the commands its "Tariffs and costs" and
//! "The official meter's data (AMI)" sections tell a user to type are run
//! here as written (with `sh`, in a folder of their own, `shellyctl` on
//! PATH, `$EDITOR` a no-op), against a database holding a month of a
//! meter's records and the DSO's export the AMI section names.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// The lines of the ```sh blocks under the `## {heading}` section.
fn commands(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let rest = &readme[start + heading.len() + 5..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut inside = false;
    for line in section.lines() {
        match (inside, line.trim()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, l) if !l.is_empty() && !l.starts_with('#') => out.push(line.to_string()),
            _ => {}
        }
    }
    assert!(!out.is_empty(), "no commands under {heading:?}");
    out
}

#[test]
fn the_readmes_tariff_and_ami_commands_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let db = TestDb::migrated();
    // The meter the README names, with records on 2026-10-10: 2 kWh.
    put_intervals(
        &db,
        "shelly3em63g3-e4b063a1b2c3",
        "A",
        "2026-10-10T08:00:00Z",
        8,
        "250",
        "0",
    );
    let dir = TempDir::new("readme");
    // The DSO's export the AMI section imports: Tauron eLicznik, one day.
    let mut csv = String::from("Data; Wartość kWh;Rodzaj\n");
    for h in 1..=24 {
        csv.push_str(&format!("2026-10-10 {h}:00;0,25;pobór\n"));
    }
    std::fs::write(Path::new(dir.path()).join("eLicznik-2026-10.csv"), csv).unwrap();

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_shellyctl")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut lines = commands(&readme, "Tariffs and costs");
    lines.extend(commands(&readme, "The official meter's data (AMI)"));
    for line in &lines {
        let out = output_of(
            Command::new("/bin/sh")
                .args(["-c", line])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", &path)
                .env("DATABASE_URL", &db.url)
                .env("EDITOR", "true")
                .env("SHELLYCTL_ENV_FILE", ""),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "README line failed ({:?}): {line}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("| jq .total") {
            // A decimal string, the year's total.
            let total = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                total.starts_with('"') && total.trim_matches('"').parse::<f64>().is_ok(),
                "{total}"
            );
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM ami_readings"), 24);
    assert_eq!(
        db.count("SELECT count(*) FROM tariffs WHERE name IN ('G12', 'Tauron-G12-2026')"),
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE device_id = 'shelly3em63g3-e4b063a1b2c3' AND role = 'grid'"),
        1
    );
}

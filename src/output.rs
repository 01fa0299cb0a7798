//! The one place that prints data to stdout, as a table or as JSON.
//! Commands build a report value; they never print.

use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// Only where a command documents it (reports).
    Csv,
}

/// A command's result, printable in every format.
pub trait Report: Serialize {
    /// Human-readable rendering (already terminated by a newline).
    fn table(&self) -> String;

    /// CSV rendering, for the commands that offer it.
    fn csv(&self) -> Option<String> {
        None
    }
}

/// Prints a report. A closed pipe (`shellyctl ... | head`) is a quiet success.
pub fn print<R: Report>(format: Format, report: &R) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => report.table(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            s
        }
        Format::Csv => report.csv().ok_or_else(|| {
            crate::exit::ConfigError(
                "--format csv is offered by the report commands only; use table or json".into(),
            )
        })?,
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Renders rows with tabled in our house style.
pub fn table<T: tabled::Tabled>(rows: impl IntoIterator<Item = T>) -> String {
    let mut t = tabled::Table::new(rows);
    t.with(tabled::settings::Style::sharp());
    format!("{t}\n")
}

/// One CSV field, quoted when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `Option<T>` as a table cell: empty when absent (never "0").
pub fn cell<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

/// Text from a device or a user, safe for a terminal: control characters
/// (escape sequences, newlines) are shown escaped, never sent raw.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

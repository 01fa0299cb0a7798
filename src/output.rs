//! The one place that prints data to stdout, as a table or as JSON.
//! Commands build a report value; they never print.

use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A command's result, printable in every format.
pub trait Report: Serialize {
    /// Human-readable rendering (already terminated by a newline).
    fn table(&self) -> String;
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

/// `Option<T>` as a table cell: empty when absent (never "0").
pub fn cell<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

//! The one place that prints data to stdout: a table, JSON, CSV or a
//! one-line summary. Commands build a report value; they never print.

use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// Only where a command documents it (reports).
    Csv,
    /// One line of `key=value` counts: what a scheduled job logs. The
    /// default for a job whose stdout is not a terminal (journal, cron, pipe).
    Summary,
}

/// A command's result, printable in every format.
pub trait Report: Serialize {
    /// Human-readable rendering (already terminated by a newline).
    fn table(&self) -> String;

    /// CSV rows (the header first), for the commands that offer CSV;
    /// written with the csv crate, so a field with a separator, a quote or
    /// a newline is quoted correctly.
    fn csv(&self) -> Option<Vec<Vec<String>>> {
        None
    }

    /// One line (newline-terminated) for logs; by default derived from the
    /// JSON form by [`summary_line`].
    fn summary(&self) -> String {
        match serde_json::to_value(self) {
            Ok(v) => summary_line(&v),
            Err(e) => format!("summary unavailable: {e}\n"),
        }
    }
}

/// A report's JSON as one line: top-level numbers, booleans and short
/// strings as `key=value`, arrays as `key=<items>` plus `key_failed=<n>`
/// for items that carry an `error` or `"ok": false`, in key order. Nested objects are
/// left out: the line says how the run went, `--format json` says the rest.
pub fn summary_line(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let Value::Object(fields) = v else {
        return format!("{v}\n");
    };
    let failed = |item: &Value| {
        item.get("ok") == Some(&Value::Bool(false))
            || item.get("error").is_some_and(|e| !e.is_null())
    };
    let mut parts = Vec::new();
    for (key, value) in fields {
        match value {
            Value::Bool(_) | Value::Number(_) => parts.push(format!("{key}={value}")),
            Value::String(s) if s.len() <= 40 && !s.contains(char::is_whitespace) => {
                parts.push(format!("{key}={}", printable(s)))
            }
            Value::Array(items) => {
                parts.push(format!("{key}={}", items.len()));
                let n = items.iter().filter(|i| failed(i)).count();
                if n > 0 {
                    parts.push(format!("{key}_failed={n}"));
                }
            }
            _ => {}
        }
    }
    format!("{}\n", parts.join(" "))
}

/// Writes `bytes` to stdout. A closed pipe (`shellyctl ... | head`) comes
/// back as the `BrokenPipe` error, which the entry point turns into a quiet
/// success ([`is_broken_pipe`]), wherever it was written.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush())
}

/// Whether an error is stdout's reader having gone away.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints a report.
pub fn print<R: Report>(format: Format, report: &R) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => report.table(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            s
        }
        Format::Csv => csv_text(&report.csv().ok_or_else(|| {
            crate::exit::ConfigError(
                "--format csv is offered by the report commands only; use table or json".into(),
            )
        })?)?,
        Format::Summary => report.summary(),
    };
    Ok(write_stdout(text.as_bytes())?)
}

/// Renders rows with tabled in our house style.
pub fn table<T: tabled::Tabled>(rows: impl IntoIterator<Item = T>) -> String {
    let mut t = tabled::Table::new(rows);
    t.with(tabled::settings::Style::sharp());
    // Every cell is shown with control characters escaped: a device name
    // or id stored before the edge checks cannot drive the terminal.
    t.modify(
        tabled::settings::object::Segment::all(),
        tabled::settings::format::Format::content(printable),
    );
    format!("{t}\n")
}

/// Rows as CSV text.
pub fn csv_text(rows: &[Vec<String>]) -> anyhow::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    for r in rows {
        w.write_record(r)?;
    }
    Ok(String::from_utf8(
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
    )?)
}

/// A CSV row from anything printable.
#[macro_export]
macro_rules! csv_row {
    ($($x:expr),* $(,)?) => {
        vec![$($x.to_string()),*]
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_line_counts_items_and_failures_and_skips_nested_objects() {
        let v = json!({
            "dry_run": false,
            "backend": "webhook",
            "devices": [{"ok": true}, {"ok": false, "error": "timed out"}, {"error": null}],
            "delivery": {"delivered": [1]},
            "raw_rows_deleted": 12
        });
        assert_eq!(
            summary_line(&v),
            "backend=webhook devices=3 devices_failed=1 dry_run=false raw_rows_deleted=12\n"
        );
    }

    #[test]
    fn summary_line_of_a_report_without_failures_has_no_failed_count() {
        let v = json!({"devices": [{"ok": true}], "long": "has spaces in it"});
        assert_eq!(summary_line(&v), "devices=1\n");
    }
}

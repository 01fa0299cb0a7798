//! What an error means to the caller: the exit kind of an error chain and
//! its one-line description. The adapters' error types know their kinds
//! (`shelly::Error::exit_kind`, `db::exit_kind`); this is where a chain is
//! asked. `exit` itself depends on nothing.

use crate::exit::{ConfigError, ExitKind, UsageError};

/// Maps any error chain to its exit kind by looking for the typed errors
/// the adapters raise; anything unrecognised is a plain failure.
pub fn classify(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return ExitKind::Config;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return ExitKind::Usage;
        }
        if let Some(e) = cause.downcast_ref::<crate::shelly::Error>() {
            return e.exit_kind();
        }
        if let Some(e) = cause.downcast_ref::<postgres::Error>() {
            return crate::db::exit_kind(e);
        }
        if cause.downcast_ref::<crate::db::Unavailable>().is_some() {
            return ExitKind::Temporary;
        }
    }
    ExitKind::Failure
}

/// The one-line message for an error: its chain, plus what to do when the
/// cause is one a user fixes by a known step.
pub fn describe(err: &anyhow::Error) -> String {
    let hint = err
        .chain()
        .find_map(|c| c.downcast_ref::<postgres::Error>())
        .and_then(crate::db::hint);
    match hint {
        // What to do first: the server's words about a missing relation or
        // function are only the detail.
        Some(h) if h.contains("run `shellyctl migrate`") => {
            let detail = err
                .chain()
                .find_map(|c| c.downcast_ref::<postgres::Error>())
                .and_then(|e| e.as_db_error())
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| format!("{err:#}"));
            format!("{h} ({detail})")
        }
        Some(h) => format!("{err:#} ({h})"),
        None => format!("{err:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_finds_config_errors_under_context() {
        let err = anyhow::Error::new(ConfigError("no DATABASE_URL".into())).context("starting");
        assert_eq!(classify(&err), ExitKind::Config);
        assert_eq!(classify(&anyhow::anyhow!("boom")), ExitKind::Failure);
    }
}

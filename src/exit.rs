//! Exit codes: one meaning each, documented in `--help` and README.
//!
//! The numbers for "retry later" and "configuration" follow sysexits.h
//! (EX_TEMPFAIL, EX_CONFIG), which systemd and cron users already know.

use std::process::ExitCode;

/// What a failed run means to the caller (systemd, cron, a shell script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Success,
    /// Something went wrong that retrying will not fix by itself.
    Failure,
    /// Wrong command-line arguments (clap reports these itself).
    Usage,
    /// A device or the database could not be reached; run again later.
    Temporary,
    /// Missing or invalid configuration, or a device refused our credentials.
    Config,
}

impl ExitKind {
    pub const fn code(self) -> u8 {
        match self {
            ExitKind::Success => 0,
            ExitKind::Failure => 1,
            ExitKind::Usage => 2,
            ExitKind::Temporary => 75,
            ExitKind::Config => 78,
        }
    }

    /// Which of two outcomes a run with several devices reports: the one
    /// that most needs a human (config > failure > temporary > success).
    pub fn worst(self, other: ExitKind) -> ExitKind {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            ExitKind::Success => 0,
            ExitKind::Temporary => 1,
            ExitKind::Failure => 2,
            ExitKind::Usage => 3,
            ExitKind::Config => 4,
        }
    }
}

impl From<ExitKind> for ExitCode {
    fn from(kind: ExitKind) -> ExitCode {
        ExitCode::from(kind.code())
    }
}

/// An error that is the user's configuration to fix (exit 78).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Wrong arguments that clap cannot see alone (a reversed range, a missing
/// choice among options): exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub const HELP: &str = "\
Exit codes:
  0   success
  1   failure (bad data or a protocol error from a device, a database
      error, a bug)
  2   usage error (wrong arguments)
  75  temporary failure: a device or the database is unreachable, timed out,
      answered 5xx or throttled us; run again later (nothing was lost)
  78  configuration or authentication error (missing DATABASE_URL, wrong
      device or database password, refused TLS certificate, invalid
      setting, schema missing: run `shellyctl migrate`)
With several devices, the exit code is that of the most serious failure.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_stable() {
        let kinds = [
            ExitKind::Success,
            ExitKind::Failure,
            ExitKind::Usage,
            ExitKind::Temporary,
            ExitKind::Config,
        ];
        let codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 75, 78]);
    }

    #[test]
    fn worst_prefers_what_needs_a_human() {
        use ExitKind::*;
        assert_eq!(Success.worst(Temporary), Temporary);
        assert_eq!(Temporary.worst(Failure), Failure);
        assert_eq!(Config.worst(Failure), Config);
        assert_eq!(Failure.worst(Success), Failure);
    }
}

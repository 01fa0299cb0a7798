//! The settings file (`/etc/shellyctl/shellyctl.env`), read with the one
//! meaning systemd gives it in `EnvironmentFile=`: the timers read it that
//! way, so a hand run (`shellyctl --env-file FILE`, `SHELLYCTL_ENV_FILE`, or
//! the default path) and `cron/cron-run` read it here, the same way, and
//! never by sourcing it in a shell (where an unquoted `&` ends a command).
//!
//! The rules are systemd's `parse_env_file` (src/basic/env-file.c):
//! - `#` or `;` first on a line starts a comment; a `\` at a comment's end
//!   continues it onto the next line;
//! - `KEY=VALUE`, blanks around the key and before the value ignored; a line
//!   without `=` is ignored;
//! - unquoted: `\x` is `x`, `\` at a line's end joins the next line, trailing
//!   blanks dropped; `&`, `#`, `$`, `;` are plain characters;
//! - `'...'`: every character as written, newlines included;
//! - `"..."`: `\"`, `\\`, `` \` ``, `\$` unescaped, `\` + newline joins lines,
//!   any other `\` kept as written;
//! - quoted and unquoted pieces side by side are joined (`A="x y"z` is
//!   `x yz`); no `$VAR` expansion.
//!
//! Names that are not valid variable names and values that are not UTF-8
//! are skipped, as systemd skips them, with a warning.

use std::path::{Path, PathBuf};

/// The default settings file a hand run reads when it exists and is readable.
pub const DEFAULT_PATH: &str = "/etc/shellyctl/shellyctl.env";

/// One `KEY=VALUE` assignment and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// What [`parse`] found: the assignments in order (a key may repeat; the
/// last wins) and the lines skipped, each with why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub assignments: Vec<Assignment>,
    pub skipped: Vec<(usize, String)>,
}

impl Parsed {
    /// The value of `key` (the last assignment of it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.assignments
            .iter()
            .rev()
            .find(|a| a.key == key)
            .map(|a| a.value.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_newline(b: u8) -> bool {
    matches!(b, b'\n' | b'\r')
}

/// systemd's `env_name_is_valid`: a letter or `_`, then letters, digits, `_`.
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// Ends an assignment: the value's trailing blanks dropped, then kept or
/// skipped as systemd would.
fn push(
    out: &mut Parsed,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
    value_blank: Option<usize>,
    at: usize,
) {
    if let Some(n) = value_blank {
        value.truncate(n);
    }
    let k = String::from_utf8_lossy(key).into_owned();
    match (valid_name(&k), String::from_utf8(std::mem::take(value))) {
        (false, _) => out.skipped.push((
            at,
            format!("{k:?} is not a variable name; the line is ignored"),
        )),
        (true, Err(_)) => out.skipped.push((
            at,
            format!("the value of {k} is not UTF-8; the line is ignored"),
        )),
        (true, Ok(v)) if v.contains('\0') => out.skipped.push((
            at,
            format!("the value of {k} holds a NUL; the line is ignored"),
        )),
        (true, Ok(v)) => out.assignments.push(Assignment {
            key: k,
            value: v,
            line: at,
        }),
    }
    key.clear();
}

/// Parses a settings file's bytes with systemd's `EnvironmentFile=` rules.
pub fn parse(text: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut state = State::PreKey;
    let mut key: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    // Where trailing blanks of the key / an unquoted value begin.
    let mut key_blank: Option<usize> = None;
    let mut value_blank: Option<usize> = None;
    let mut line = 1;
    let mut key_line = 1;

    for &c in text {
        match state {
            State::PreKey => {
                if c == b'#' || c == b';' {
                    state = State::Comment;
                } else if !is_blank(c) {
                    state = State::Key;
                    key_line = line;
                    key.clear();
                    key.push(c);
                    key_blank = None;
                }
            }
            State::Key => {
                if is_newline(c) {
                    out.skipped.push((
                        key_line,
                        format!(
                            "{:?} has no `=`; the line is ignored",
                            String::from_utf8_lossy(&key)
                        ),
                    ));
                    key.clear();
                    state = State::PreKey;
                } else if c == b'=' {
                    if let Some(n) = key_blank {
                        key.truncate(n);
                    }
                    state = State::PreValue;
                    value.clear();
                    value_blank = None;
                } else {
                    if !is_blank(c) {
                        key_blank = None;
                    } else if key_blank.is_none() {
                        key_blank = Some(key.len());
                    }
                    key.push(c);
                }
            }
            State::PreValue => {
                if is_newline(c) {
                    push(&mut out, &mut key, &mut value, None, key_line);
                    state = State::PreKey;
                } else if c == b'\'' {
                    state = State::SingleQuote;
                } else if c == b'"' {
                    state = State::DoubleQuote;
                } else if c == b'\\' {
                    state = State::ValueEscape;
                } else if !is_blank(c) {
                    state = State::Value;
                    value.push(c);
                }
            }
            State::Value => {
                if is_newline(c) {
                    push(&mut out, &mut key, &mut value, value_blank, key_line);
                    value_blank = None;
                    state = State::PreKey;
                } else if c == b'\\' {
                    state = State::ValueEscape;
                    value_blank = None;
                } else {
                    if !is_blank(c) {
                        value_blank = None;
                    } else if value_blank.is_none() {
                        value_blank = Some(value.len());
                    }
                    value.push(c);
                }
            }
            State::ValueEscape => {
                state = State::Value;
                // An escaped newline is a line continuation: eaten whole.
                if !is_newline(c) {
                    value.push(c);
                }
            }
            State::SingleQuote => {
                if c == b'\'' {
                    state = State::PreValue;
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuote => {
                if c == b'"' {
                    state = State::PreValue;
                } else if c == b'\\' {
                    state = State::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuoteEscape => {
                state = State::DoubleQuote;
                if matches!(c, b'"' | b'\\' | b'`' | b'$') {
                    value.push(c);
                } else if c != b'\n' {
                    value.push(b'\\');
                    value.push(c);
                }
            }
            State::Comment => {
                if c == b'\\' {
                    state = State::CommentEscape;
                } else if is_newline(c) {
                    state = State::PreKey;
                }
            }
            State::CommentEscape => {
                state = State::Comment;
            }
        }
        if c == b'\n' {
            line += 1;
        }
    }
    match state {
        State::PreValue
        | State::Value
        | State::ValueEscape
        | State::SingleQuote
        | State::DoubleQuote
        | State::DoubleQuoteEscape => {
            let blank = if state == State::Value {
                value_blank
            } else {
                None
            };
            push(&mut out, &mut key, &mut value, blank, key_line);
        }
        State::Key => out.skipped.push((
            key_line,
            format!(
                "{:?} has no `=`; the line is ignored",
                String::from_utf8_lossy(&key)
            ),
        )),
        _ => {}
    }
    out
}

/// Which settings files a run reads, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--env-file` (repeatable; later files override earlier ones).
    Flags(Vec<PathBuf>),
    /// `SHELLYCTL_ENV_FILE`.
    Variable(PathBuf),
    /// The default path, which exists.
    Default(PathBuf),
    /// None: `SHELLYCTL_ENV_FILE` is empty, or no default file.
    None,
}

impl Source {
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Source::Flags(p) => p.clone(),
            Source::Variable(p) | Source::Default(p) => vec![p.clone()],
            Source::None => vec![],
        }
    }
}

/// The `--env-file` values among the arguments, read before clap (whose
/// options take their defaults from the environment the files fill). Only
/// arguments before a lone `--` count.
pub fn flags_in(args: &[std::ffi::OsString]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--env-file" {
            if let Some(v) = it.next() {
                out.push(PathBuf::from(v));
            }
        } else if let Some(v) = s.strip_prefix("--env-file=") {
            out.push(PathBuf::from(v));
        }
    }
    out
}

/// Decides which files to read: flags, else `SHELLYCTL_ENV_FILE` (empty:
/// none), else the default path when it exists.
pub fn source(flags: Vec<PathBuf>, variable: Option<std::ffi::OsString>, default: &Path) -> Source {
    if !flags.is_empty() {
        return Source::Flags(flags);
    }
    match variable {
        Some(v) if v.is_empty() => Source::None,
        Some(v) => Source::Variable(PathBuf::from(v)),
        None if default.exists() => Source::Default(default.to_path_buf()),
        None => Source::None,
    }
}

/// A settings file that cannot be read.
#[derive(Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read the settings file {}: {}{}",
            self.path.display(),
            self.error,
            if self.error.kind() == std::io::ErrorKind::PermissionDenied {
                " (run it as root, e.g. with sudo, as the timers read it; or give --env-file \
                 another file, or SHELLYCTL_ENV_FILE= for none)"
            } else {
                ""
            }
        )
    }
}

/// What loading the settings did: the variables it set, the ones the
/// environment already had (the environment wins), the lines skipped.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub files: Vec<PathBuf>,
    /// Assignments read per file.
    pub assigned: Vec<(PathBuf, usize)>,
    pub set: Vec<String>,
    pub kept_from_environment: Vec<String>,
    pub skipped: Vec<(PathBuf, usize, String)>,
    /// The credentials directory taken from beside the settings file.
    pub credentials_directory: Option<PathBuf>,
    /// A credentials directory beside the file that this user cannot read.
    pub credentials_unreadable: Option<PathBuf>,
}

/// Reads `files` in order into the environment of this process, before any
/// thread starts: a variable already in the environment is kept (a flag or
/// a variable set by hand wins over the file); among the files the last
/// assignment wins, as with several `EnvironmentFile=` lines. Then, when
/// `CREDENTIALS_DIRECTORY` is unset and a `credentials` directory sits
/// beside the first file (as `/etc/shellyctl/credentials`), it is used, as
/// `cron-run` and the units do.
pub fn load(files: &[PathBuf]) -> Result<Loaded, Unreadable> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut loaded = Loaded::default();
    for path in files {
        let bytes = std::fs::read(path).map_err(|error| Unreadable {
            path: path.clone(),
            error,
        })?;
        let parsed = parse(&bytes);
        for (line, why) in parsed.skipped {
            loaded.skipped.push((path.clone(), line, why));
        }
        loaded
            .assigned
            .push((path.clone(), parsed.assignments.len()));
        for a in parsed.assignments {
            merged.retain(|(k, _)| *k != a.key);
            merged.push((a.key, a.value));
        }
        loaded.files.push(path.clone());
    }
    for (k, v) in merged {
        if std::env::var_os(&k).is_some() {
            loaded.kept_from_environment.push(k);
        } else {
            // Single-threaded here: called first thing in main.
            std::env::set_var(&k, v);
            loaded.set.push(k);
        }
    }
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        if let Some(dir) = files
            .first()
            .and_then(|f| f.parent())
            .map(|d| d.join("credentials"))
            .filter(|d| d.is_dir())
        {
            if std::fs::read_dir(&dir).is_ok() {
                std::env::set_var("CREDENTIALS_DIRECTORY", &dir);
                loaded.credentials_directory = Some(dir);
            } else {
                loaded.credentials_unreadable = Some(dir);
            }
        }
    }
    Ok(loaded)
}

/// What this run's settings files gave, for `shellyctl doctor`.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// What was read (nothing when no file was).
    pub loaded: Loaded,
    /// The default file exists but could not be read (why).
    pub default_unreadable: Option<String>,
}

impl Loaded {
    /// Assignments read from `file`.
    pub fn assigned_in(&self, file: &Path) -> usize {
        self.assigned
            .iter()
            .filter(|(f, _)| f == file)
            .map(|(_, n)| n)
            .sum()
    }
}

static SUMMARY: std::sync::OnceLock<Summary> = std::sync::OnceLock::new();

/// Records what the entry point read (once per process).
pub fn record(s: Summary) {
    let _ = SUMMARY.set(s);
}

/// What the entry point read, if it read settings at all.
pub fn summary() -> Option<&'static Summary> {
    SUMMARY.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .assignments
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    fn one(text: &str) -> String {
        let v = kv(text);
        assert_eq!(v.len(), 1, "{text:?} gave {v:?}");
        v[0].1.clone()
    }

    #[test]
    fn characters_a_shell_treats_specially_are_plain() {
        // The example file's URL: `&` ends a command in sh, not here.
        assert_eq!(
            one("DATABASE_URL=postgres:///shellyctl?host=/run/postgresql&user=shellyctl\n"),
            "postgres:///shellyctl?host=/run/postgresql&user=shellyctl"
        );
        assert_eq!(one("A=a#b;c$HOME|d>e\n"), "a#b;c$HOME|d>e");
        // Spaces inside an unquoted value stay, trailing ones go.
        assert_eq!(
            one("HOMEBRIDGE_ACCESSORY_ID=Power Trigger   \n"),
            "Power Trigger"
        );
        assert_eq!(one("  KEY  =   value\n"), "value");
    }

    #[test]
    fn quotes_follow_systemd() {
        assert_eq!(one("A='x & y # z $V \\n'\n"), "x & y # z $V \\n");
        assert_eq!(
            one(r#"A="say \"hi\" \$V \\ \` \n""#),
            "say \"hi\" $V \\ ` \\n"
        );
        assert_eq!(one("A=\"Power Trigger\"\n"), "Power Trigger");
        // Pieces side by side are joined; blanks between them are not kept.
        assert_eq!(one("A=\"x y\"z\n"), "x yz");
        assert_eq!(one("A='x' \"y\"\n"), "xy");
        // A quoted value may span lines.
        assert_eq!(
            kv("A='one\ntwo'\nB=3\n"),
            vec![("A".into(), "one\ntwo".into()), ("B".into(), "3".into())]
        );
        // An unterminated quote runs to the end of the file, as in systemd.
        assert_eq!(one("A=\"open"), "open");
    }

    #[test]
    fn escapes_and_continuations() {
        assert_eq!(one("A=a\\ b\\#c\n"), "a b#c");
        assert_eq!(one("A=first \\\nsecond\n"), "first second");
        assert_eq!(one("A=\"first \\\nsecond\"\n"), "first second");
        // A backslash before another character inside double quotes stays.
        assert_eq!(one("A=\"C:\\dir\"\n"), "C:\\dir");
    }

    #[test]
    fn comments_empty_values_and_repeats() {
        let text = "# a comment with A=1\n; another\n   # indented\nA=\nB=2\nB=3\n# continued \\\nC=not a setting\n";
        let p = parse(text.as_bytes());
        assert_eq!(p.get("A"), Some(""));
        assert_eq!(p.get("B"), Some("3"));
        assert_eq!(
            p.get("C"),
            None,
            "the comment's continuation line is comment"
        );
        // A `#` after a value is part of it (systemd has no inline comments).
        assert_eq!(one("A=1 # not a comment\n"), "1 # not a comment");
        // CRLF line ends.
        assert_eq!(
            kv("A=1\r\nB=2\r\n"),
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        // No newline at the end.
        assert_eq!(one("A=last"), "last");
    }

    #[test]
    fn lines_systemd_ignores_are_reported() {
        let p = parse(b"export A=1\nno equals sign\n9X=1\nGOOD=1\nBAD=\xff\n");
        assert_eq!(p.assignments.len(), 1);
        assert_eq!(p.get("GOOD"), Some("1"));
        let lines: Vec<usize> = p.skipped.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 3, 5]);
        assert!(
            p.skipped[0].1.contains("not a variable name"),
            "{:?}",
            p.skipped
        );
        assert!(p.skipped[1].1.contains("no `=`"));
        assert!(p.skipped[3].1.contains("not UTF-8"));
    }

    #[test]
    fn line_numbers_count_continuations() {
        let p = parse(b"A='x\ny'\nB=1\\\n2\nC=3\n");
        let at: Vec<(String, usize)> = p
            .assignments
            .iter()
            .map(|a| (a.key.clone(), a.line))
            .collect();
        assert_eq!(at, vec![("A".into(), 1), ("B".into(), 3), ("C".into(), 5)]);
        assert_eq!(p.get("B"), Some("12"));
    }

    #[test]
    fn the_example_file_parses_without_a_skipped_line() {
        let text = include_str!("../systemd/shellyctl.env.example");
        let p = parse(text.as_bytes());
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        // Every commented example, uncommented, parses to what it shows.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.split('=').next().is_some_and(valid_name) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let p = parse(uncommented.as_bytes());
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(p.get("HOMEBRIDGE_ACCESSORY_ID"), Some("Power Trigger"));
        assert_eq!(
            p.get("DATABASE_URL"),
            Some("postgres:///shellyctl?host=/run/postgresql&user=shellyctl")
        );
        assert!(p.get("TRIGGER_HTTP_URL").unwrap().ends_with("&state=true"));
    }

    #[test]
    fn which_files_are_read() {
        let none = Path::new("/nonexistent/shellyctl.env");
        let here = Path::new("Cargo.toml");
        assert_eq!(
            source(vec!["a".into()], Some("b".into()), here),
            Source::Flags(vec!["a".into()])
        );
        assert_eq!(
            source(vec![], Some("b".into()), here),
            Source::Variable("b".into())
        );
        assert_eq!(source(vec![], Some("".into()), here), Source::None);
        assert_eq!(source(vec![], None, here), Source::Default(here.into()));
        assert_eq!(source(vec![], None, none), Source::None);
        let args: Vec<std::ffi::OsString> = [
            "shellyctl",
            "--env-file",
            "x.env",
            "health",
            "--env-file=y.env",
            "--",
            "--env-file",
            "z",
        ]
        .iter()
        .map(Into::into)
        .collect();
        assert_eq!(
            flags_in(&args),
            vec![PathBuf::from("x.env"), PathBuf::from("y.env")]
        );
    }
}

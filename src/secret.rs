//! Secrets (device password, tokens): read from the environment, a file
//! named by `<VAR>_FILE`, or a systemd credential; never from arguments,
//! never printed.

use crate::exit::ConfigError;
use std::path::PathBuf;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Looks up a secret: `$VAR`, else the file in `$VAR_FILE`, else the systemd
/// credential `credential` in `$CREDENTIALS_DIRECTORY`. Empty values count
/// as unset. A named file that cannot be read is a configuration error.
pub fn from_env(var: &str, credential: &str) -> Result<Option<Secret>, ConfigError> {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            return Ok(Some(Secret(v)));
        }
    }
    let file_var = format!("{var}_FILE");
    if let Ok(path) = std::env::var(&file_var) {
        if !path.is_empty() {
            return read_secret_file(PathBuf::from(&path))
                .map_err(|e| ConfigError(format!("reading {file_var} ({path}): {e}")));
        }
    }
    if let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(credential);
        if path.exists() {
            return read_secret_file(path.clone())
                .map_err(|e| ConfigError(format!("reading credential {}: {e}", path.display())));
        }
    }
    Ok(None)
}

fn read_secret_file(path: PathBuf) -> std::io::Result<Option<Secret>> {
    let s = std::fs::read_to_string(path)?;
    let s = s.trim_end_matches(['\n', '\r']);
    Ok((!s.is_empty()).then(|| Secret(s.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn file_values_lose_their_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("shellyctl-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(
            read_secret_file(p.clone()).unwrap().unwrap().expose(),
            "s3cret"
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret_file(p).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

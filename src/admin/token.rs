//! The admin bearer token: configured, or generated once and kept beside the store.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;

use crate::config::{Secret, MIN_TOKEN_LEN};

/// Reads the token file, creating it (mode 0600, 256 random bits) if it does not exist.
/// Warns when an existing file is readable by group or others: the token is the admin API.
pub fn load_or_create(path: &Path) -> std::io::Result<Secret> {
    match read(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the admin token file is readable by group or others; chmod 600 it"
                );
            }
            return Ok(t);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(Secret::new(token))
}

/// Reads the token file; one shorter than [`MIN_TOKEN_LEN`] (empty, truncated) is an error,
/// so a damaged file stops the start instead of every request getting 401.
pub fn read(path: &Path) -> std::io::Result<Secret> {
    let s = std::fs::read_to_string(path)?;
    let token = s.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the token in it has {} characters, fewer than {MIN_TOKEN_LEN}; \
                 delete the file to have a new one generated",
                token.len()
            ),
        ));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_short_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        for short in ["", "\n", "0123456789abcde\n"] {
            std::fs::write(&path, short).unwrap();
            let e = load_or_create(&path).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{short:?}");
            assert!(e.to_string().contains("fewer than 16"), "{e}");
        }
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(load_or_create(&path).unwrap().expose(), "0123456789abcdef");
    }

    #[test]
    fn a_generated_token_is_long_enough_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let t = load_or_create(&path).unwrap();
        assert_eq!(t.expose().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&path).unwrap(), t);
    }
}

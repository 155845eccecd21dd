//! Private files in a service's data directory: credentials and generated secrets, written
//! atomically and readable by the owner only.

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use std::io::Write;
use std::path::Path;
use uuid::Uuid;

/// Replaces `path` with `body`, readable by the owner only, so readers see the old or the new
/// file and never a torn one.
pub fn write_private_atomically(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the path has no file name")?;
    let tmp = dir.join(format!(".{name}.{}.tmp", Uuid::now_v7()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| -> anyhow::Result<()> {
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        // The rename itself is durable only once the directory entry is flushed.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the secret at `path`, or creates it from 48 random bytes on first start.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            anyhow::ensure!(
                text.len() >= 32,
                "{} is too short to be a secret",
                path.display()
            );
            Ok(SecretString::from(text.to_string()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 48];
            rand::rng().fill_bytes(&mut bytes);
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private_atomically(path, secret.as_bytes())?;
            Ok(SecretString::from(secret))
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        let first = load_or_create_secret(&path).unwrap();
        let again = load_or_create_secret(&path).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert!(first.expose_secret().len() >= 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}

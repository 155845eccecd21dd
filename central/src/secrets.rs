//! Secrets generated on first start and kept in the data directory, readable by the owner only.

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use std::io::Write;
use std::path::Path;

/// Reads the secret at `path`, or creates it with 48 random bytes (mode 0600).
pub fn load_or_create(path: &Path) -> anyhow::Result<SecretString> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim();
        anyhow::ensure!(
            text.len() >= 32,
            "{} is too short to be a secret",
            path.display()
        );
        return Ok(SecretString::from(text.to_string()));
    }
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(SecretString::from(secret))
}

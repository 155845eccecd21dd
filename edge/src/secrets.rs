//! The edge's staff-token signing secret, generated on first start into the data directory
//! (owner-readable only). Each edge signs its own tokens, so central's secret never leaves HQ.

use crate::credential::write_private_atomically;
use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use std::path::Path;

pub const JWT_SECRET_FILE: &str = "jwt-secret";

/// Reads the secret at `path`, or creates it from 48 random bytes.
pub fn load_or_create(path: &Path) -> anyhow::Result<SecretString> {
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

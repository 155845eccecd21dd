//! Machine API keys and one-time enrollment tokens: generation and the hash they are stored as.
//!
//! A key is shown once at issuance; only its [`KeyHash`] is persisted and replicated. Keys carry
//! 256 bits of entropy, so a single fast SHA-256 is enough to make the stored value useless to an
//! attacker, and it lets a presented key be looked up by its hash directly.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of machine API keys; lets people and secret scanners recognise a leaked key.
pub const API_KEY_PREFIX: &str = "aero_";
/// Prefix of one-time enrollment tokens, distinct so one is never mistaken for the other.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "aero_enr_";
/// Random bytes behind every key and token.
pub const SECRET_BYTES: usize = 32;
/// Length of the base64url (no padding) encoding of [`SECRET_BYTES`].
pub const ENCODED_SECRET_LEN: usize = 43;

fn random_secret(prefix: &str) -> SecretString {
    let mut bytes = [0u8; SECRET_BYTES];
    // ThreadRng is a CSPRNG seeded and periodically reseeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    let mut text = String::with_capacity(prefix.len() + ENCODED_SECRET_LEN);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    bytes.zeroize();
    SecretString::from(text)
}

/// A freshly issued machine API key (`aero_` + 43 base64url characters).
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn generate() -> ApiKey {
        ApiKey(random_secret(API_KEY_PREFIX))
    }

    /// The full key text, to be shown to the operator exactly once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The value to persist instead of the key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.expose())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(**redacted**)")
    }
}

/// Generates a one-time enrollment token (`aero_enr_` + 43 base64url characters); store it via
/// [`KeyHash::of`] like an API key.
pub fn generate_token() -> SecretString {
    random_secret(ENROLLMENT_TOKEN_PREFIX)
}

/// Lowercase hex SHA-256 of a key's or token's full text, as stored and replicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHash(String);

impl KeyHash {
    /// Hashes a key as presented by a client (e.g. the `X-Api-Key` header value).
    pub fn of(presented: &str) -> KeyHash {
        let digest = Sha256::digest(presented.as_bytes());
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        KeyHash(hex)
    }

    /// Wraps a hash read back from storage; it is trusted to have come from [`KeyHash::of`].
    pub fn from_stored(stored: String) -> KeyHash {
        KeyHash(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_base64url(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn api_key_has_prefix_and_length() {
        let key = ApiKey::generate();
        let text = key.expose();
        assert_eq!(text.len(), API_KEY_PREFIX.len() + ENCODED_SECRET_LEN);
        let body = text.strip_prefix(API_KEY_PREFIX).unwrap();
        assert!(is_base64url(body), "{body}");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn enrollment_token_has_prefix_and_length() {
        let token = generate_token();
        let text = token.expose_secret();
        assert_eq!(
            text.len(),
            ENROLLMENT_TOKEN_PREFIX.len() + ENCODED_SECRET_LEN
        );
        let body = text.strip_prefix(ENROLLMENT_TOKEN_PREFIX).unwrap();
        assert!(is_base64url(body), "{body}");
        assert_ne!(generate_token().expose_secret(), text);
    }

    #[test]
    fn two_keys_differ() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn hash_is_stable_lowercase_hex_sha256() {
        let key = ApiKey::generate();
        let h = key.hash();
        assert_eq!(h, KeyHash::of(key.expose()));
        assert_eq!(h.as_str().len(), 64);
        assert!(
            h.as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(KeyHash::from_stored(h.as_str().to_owned()), h);
    }

    #[test]
    fn hash_matches_known_sha256_vector() {
        assert_eq!(
            KeyHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_hash_serializes_as_plain_string() {
        let h = KeyHash::of("abc");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", h.as_str()));
        assert_eq!(serde_json::from_str::<KeyHash>(&json).unwrap(), h);
    }

    #[test]
    fn debug_does_not_reveal_key() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, "ApiKey(**redacted**)");
        assert!(!shown.contains(key.expose()));
        let body = key.expose().strip_prefix(API_KEY_PREFIX).unwrap();
        assert!(!format!("{key:#?}").contains(body));
    }
}

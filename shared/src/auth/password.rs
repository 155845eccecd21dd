//! Staff password hashing and verification (argon2id, PHC strings).
//!
//! Hashing and verification each cost tens of milliseconds of CPU and ~19 MiB of memory by
//! design; async callers should run them on `tokio::task::spawn_blocking`.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// Memory cost in KiB (OWASP Password Storage Cheat Sheet minimum for argon2id).
pub const ARGON2_M_COST_KIB: u32 = 19_456;
/// Iterations (OWASP minimum paired with [`ARGON2_M_COST_KIB`]).
pub const ARGON2_T_COST: u32 = 2;
/// Lanes (OWASP minimum).
pub const ARGON2_P_COST: u32 = 1;

// Verification takes its cost parameters from the stored hash, so a corrupted or hostile row
// could ask for gigabytes of memory and abort the process on allocation failure. Anything far
// above what we ever write is treated as malformed.
const MAX_ACCEPTED_M_COST_KIB: u32 = 256 * 1024;
const MAX_ACCEPTED_T_COST: u32 = 16;
const MAX_ACCEPTED_P_COST: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(#[source] argon2::Error),
    #[error("password hashing failed: {0}")]
    Hash(#[source] argon2::password_hash::Error),
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .map_err(PasswordError::Params)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string to store.
pub fn hash_password(password: &SecretString) -> Result<String, PasswordError> {
    let hash = hasher()?
        .hash_password(password.expose_secret().as_bytes())
        .map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string. Any parse failure, unsupported algorithm or
/// out-of-range cost yields `false`, so callers cannot tell a bad row from a wrong password.
pub fn verify_password(password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_ACCEPTED_M_COST_KIB
        || params.t_cost() > MAX_ACCEPTED_T_COST
        || params.p_cost() > MAX_ACCEPTED_P_COST
    {
        return false;
    }
    let Ok(argon2) = hasher() else {
        return false;
    };
    // The stored hash's own parameters are used; the output comparison is constant-time.
    argon2
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// Spends the same work as [`verify_password`] against a fixed hash and discards the result.
///
/// Call it when the username is unknown so that a login for a non-existent user takes as long as
/// one with a wrong password, which keeps usernames from being enumerated by timing.
pub fn dummy_verify(password: &SecretString) {
    let phc = dummy_hash();
    std::hint::black_box(verify_password(password, phc));
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // Fixed salt: this hash protects nothing, and avoiding the RNG leaves the constant
        // parameters as the only (impossible) failure path.
        hasher()
            .and_then(|h| {
                h.hash_password_with_salt(b"aero-dummy-password", b"aero-dummy-salt!")
                    .map_err(PasswordError::Hash)
            })
            .map(|h| h.to_string())
            .expect("argon2 with the constant OWASP parameters and a 16-byte salt cannot fail")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn hash_then_verify_roundtrips() {
        let pw = secret("correct horse battery staple");
        let phc = hash_password(&pw).unwrap();
        assert!(verify_password(&pw, &phc));
    }

    #[test]
    fn wrong_password_is_rejected() {
        let phc = hash_password(&secret("right")).unwrap();
        assert!(!verify_password(&secret("wrong"), &phc));
    }

    #[test]
    fn malformed_hash_is_rejected() {
        let pw = secret("anything");
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(!verify_password(&pw, bad), "accepted {bad:?}");
        }
    }

    #[test]
    fn salts_differ_between_hashes() {
        let pw = secret("same");
        assert_ne!(hash_password(&pw).unwrap(), hash_password(&pw).unwrap());
    }

    #[test]
    fn phc_string_is_argon2id_with_owasp_minimums() {
        let phc = hash_password(&secret("pw")).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        assert!(params.m_cost() >= 19_456);
        assert!(params.t_cost() >= 2);
        assert!(params.p_cost() >= 1);
        assert!(phc.contains("m=19456,t=2,p=1"), "{phc}");
    }

    #[test]
    fn dummy_verify_runs_and_dummy_hash_is_valid() {
        dummy_verify(&secret("whoever"));
        assert!(verify_password(
            &secret("aero-dummy-password"),
            dummy_hash()
        ));
    }
}

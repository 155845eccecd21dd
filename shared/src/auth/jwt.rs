//! Staff access tokens: issuing and verifying short-lived HS256 JWTs.
//!
//! Each node (central, and every edge for its own venue staff) signs with its own secret, so a
//! token is only ever verified by the party that issued it and a symmetric algorithm suffices.
//! The algorithm is pinned to HS256 on both sides; the header's `alg` is never trusted.

use std::fmt;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Who a token is issued for; [`JwtKeys::issue`] adds the registered claims itself so callers
/// cannot produce a token with a foreign issuer, audience or lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffIdentity {
    pub sub: Uuid,
    pub username: String,
    pub role: String,
    pub sites: Vec<Uuid>,
    /// The account's token version at issue (see `UserRecord::token_version`).
    pub version: i64,
}

/// The claims carried by a staff token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StaffClaims {
    pub sub: Uuid,
    pub username: String,
    pub role: String,
    pub sites: Vec<Uuid>,
    /// The account's token version at issue: a revocation bumps the stored one, and the token
    /// is refused from then on.
    pub ver: i64,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    /// Bad signature, wrong algorithm, audience or issuer, missing claims or malformed token.
    /// The source is for logs only; clients should just get a 401.
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("could not sign token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            _ => JwtError::Invalid(e),
        }
    }
}

/// Signing and verification keys plus the issuer, audience and lifetime this node uses.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    audience: String,
    issuer: String,
    ttl: chrono::Duration,
}

impl JwtKeys {
    /// `secret` should be at least 32 random bytes; validating that is the configuration's job.
    pub fn new(secret: &SecretString, issuer: &str, audience: &str, ttl: chrono::Duration) -> Self {
        // jsonwebtoken picks its provider from its cargo features and panics on first use if
        // feature unification ever enables both backends; installing ours explicitly avoids
        // that. An Err only means a provider is already installed, which is fine.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);

        let key = secret.expose_secret().as_bytes();
        JwtKeys {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            audience: audience.to_owned(),
            issuer: issuer.to_owned(),
            ttl,
        }
    }

    /// Signs a token for `identity` valid from `now` for the configured lifetime.
    /// Returns the token and its lifetime in seconds (the OAuth-style `expires_in`).
    pub fn issue(
        &self,
        identity: StaffIdentity,
        now: DateTime<Utc>,
    ) -> Result<(String, i64), JwtError> {
        let iat = now.timestamp();
        let expires_in = self.ttl.num_seconds();
        let claims = StaffClaims {
            sub: identity.sub,
            username: identity.username,
            role: identity.role,
            sites: identity.sites,
            ver: identity.version,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(expires_in),
            jti: Uuid::new_v4(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(JwtError::Sign)?;
        Ok((token, expires_in))
    }

    /// Verifies signature, algorithm, issuer, audience, `exp` and `nbf` against the system clock.
    pub fn verify(&self, token: &str) -> Result<StaffClaims, JwtError> {
        let data = jsonwebtoken::decode::<StaffClaims>(token, &self.decoding, &self.validation)?;
        Ok(data.claims)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn ttl(&self) -> chrono::Duration {
        self.ttl
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("secret", &"**redacted**")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

    fn keys_with(secret: &str, issuer: &str, audience: &str) -> JwtKeys {
        JwtKeys::new(
            &SecretString::from(secret.to_owned()),
            issuer,
            audience,
            chrono::Duration::minutes(15),
        )
    }

    fn keys() -> JwtKeys {
        keys_with(SECRET, "aero-central", "aero-hq")
    }

    fn identity() -> StaffIdentity {
        StaffIdentity {
            sub: Uuid::new_v4(),
            username: "alice".to_owned(),
            role: "manager".to_owned(),
            sites: vec![Uuid::new_v4(), Uuid::new_v4()],
            version: 3,
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn issue_then_verify_roundtrips() {
        let keys = keys();
        let who = identity();
        let now = Utc::now();
        let (token, expires_in) = keys.issue(who.clone(), now).unwrap();
        assert_eq!(expires_in, 15 * 60);

        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, who.sub);
        assert_eq!(claims.username, who.username);
        assert_eq!(claims.role, who.role);
        assert_eq!(claims.sites, who.sites);
        assert_eq!(claims.ver, 3);
        assert_eq!(claims.iss, "aero-central");
        assert_eq!(claims.aud, "aero-hq");
        assert_eq!(claims.iat, now.timestamp());
        assert_eq!(claims.nbf, now.timestamp());
        assert_eq!(claims.exp, now.timestamp() + 15 * 60);
    }

    #[test]
    fn each_token_gets_a_fresh_jti() {
        let keys = keys();
        let now = Utc::now();
        let a = keys
            .verify(&keys.issue(identity(), now).unwrap().0)
            .unwrap();
        let b = keys
            .verify(&keys.issue(identity(), now).unwrap().0)
            .unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn header_is_hs256() {
        let (token, _) = keys().issue(identity(), Utc::now()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn expired_token_is_rejected() {
        let keys = keys();
        let (token, _) = keys
            .issue(identity(), Utc::now() - chrono::Duration::hours(2))
            .unwrap();
        assert!(matches!(keys.verify(&token), Err(JwtError::Expired)));
    }

    #[test]
    fn future_token_is_not_yet_valid() {
        let keys = keys();
        let (token, _) = keys
            .issue(identity(), Utc::now() + chrono::Duration::minutes(5))
            .unwrap();
        assert!(matches!(keys.verify(&token), Err(JwtError::NotYetValid)));
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let (token, _) = keys_with(SECRET, "aero-central", "aero-venue")
            .issue(identity(), Utc::now())
            .unwrap();
        assert!(matches!(keys().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn wrong_issuer_is_rejected() {
        let (token, _) = keys_with(SECRET, "aero-edge", "aero-hq")
            .issue(identity(), Utc::now())
            .unwrap();
        assert!(matches!(keys().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn alg_none_token_is_rejected() {
        let keys = keys();
        let (good, _) = keys.issue(identity(), Utc::now()).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(
                matches!(keys.verify(&token), Err(JwtError::Invalid(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn other_hmac_algorithm_is_rejected() {
        let now = Utc::now().timestamp();
        let claims = serde_json::json!({
            "sub": Uuid::new_v4(), "username": "eve", "role": "owner", "sites": [], "ver": 0,
            "iss": "aero-central", "aud": "aero-hq", "iat": now, "nbf": now,
            "exp": now + 600, "jti": Uuid::new_v4(),
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(keys().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let keys = keys();
        let (token, _) = keys.issue(identity(), Utc::now()).unwrap();
        let (unsigned, sig) = token.rsplit_once('.').unwrap();
        let first = sig.chars().next().unwrap();
        let replacement = if first == 'A' { 'B' } else { 'A' };
        let tampered = format!("{unsigned}.{replacement}{}", &sig[1..]);
        assert!(matches!(keys.verify(&tampered), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let keys = keys();
        let (token, _) = keys.issue(identity(), Utc::now()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["role"] = "owner".into();
        let forged = format!("{}.{}.{}", parts[0], b64(&claims.to_string()), parts[2]);
        assert!(matches!(keys.verify(&forged), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn token_from_other_secret_is_rejected() {
        let (token, _) = keys_with(
            "another-secret-another-secret-xx",
            "aero-central",
            "aero-hq",
        )
        .issue(identity(), Utc::now())
        .unwrap();
        assert!(matches!(keys().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn garbage_is_rejected() {
        for token in ["", "a.b.c", "not-a-token"] {
            assert!(matches!(keys().verify(token), Err(JwtError::Invalid(_))));
        }
    }

    #[test]
    fn debug_does_not_reveal_secret() {
        let shown = format!("{:?}", keys());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("**redacted**"));
    }
}

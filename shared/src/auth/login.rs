//! Staff login, the same at central and at an edge: verify the password against the stored
//! argon2id hash and issue a short-lived JWT.

use super::extract::Security;
use super::jwt::StaffIdentity;
use super::password::{dummy_verify, verify_password};
use crate::problem::ApiError;
use crate::validate::{Validate, Validator};
use crate::wire::UserRecord;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `POST /v1/auth/login`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
}

impl Validate for LoginRequest {
    fn validate(&self, v: &mut Validator) {
        v.text("username", &self.username, 64);
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

/// Checks `password` for `user` (None when unknown, disabled or not allowed here) and issues a
/// token. Unknown users cost the same argon2 work as known ones, so usernames cannot be probed
/// by timing; every failure reads the same.
pub async fn login(
    security: &Security,
    user: Option<UserRecord>,
    password: SecretString,
    now: DateTime<Utc>,
) -> Result<TokenResponse, ApiError> {
    let refused = ApiError::Unauthorized("invalid username or password");
    let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
        tokio::task::spawn_blocking(move || dummy_verify(&password))
            .await
            .map_err(ApiError::internal)?;
        return Err(refused);
    };
    let hash = user.password_hash.clone();
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !valid {
        tracing::info!(username = %user.username, "failed login");
        return Err(refused);
    }
    let identity = StaffIdentity {
        sub: user.id,
        username: user.username,
        role: user.role.as_str().to_string(),
        sites: user.site_ids,
    };
    let (access_token, expires_in) = security
        .jwt
        .issue(identity, now)
        .map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in,
    })
}

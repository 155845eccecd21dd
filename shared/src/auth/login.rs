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
use std::net::IpAddr;

/// `POST /v1/auth/login`
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

impl Validate for LoginRequest {
    fn validate(&self, v: &mut Validator) {
        v.text("username", &self.username, 64);
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

/// Lets a login attempt from `client` proceed to the user lookup, unless the address has failed
/// to authenticate too often or exceeded its login attempts.
pub fn admit(security: &Security, client: IpAddr) -> Result<(), ApiError> {
    security.limits.check_failed_auth(client)?;
    security.limits.check_login(client)
}

/// Checks `password` for `user` (None when unknown, disabled or not allowed here) and issues a
/// token; a refusal counts as a failed authentication of `client`. Unknown users cost the same
/// argon2 work as known ones, so usernames cannot be probed by timing; every failure reads the
/// same.
pub async fn login(
    security: &Security,
    client: IpAddr,
    user: Option<UserRecord>,
    password: SecretString,
    now: DateTime<Utc>,
) -> Result<TokenResponse, ApiError> {
    let outcome = verify_and_issue(security, user, password, now).await;
    if let Err(ApiError::Unauthorized(_)) = outcome {
        security.limits.record_failed_auth(client);
    }
    outcome
}

async fn verify_and_issue(
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
        version: user.token_version,
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

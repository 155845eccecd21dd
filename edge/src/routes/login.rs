//! `POST /v1/auth/login` for venue staff: checked against the replicated argon2id hashes and
//! signed with this edge's own secret, so staff can log in while central is unreachable.

use super::AppState;
use aero_shared::ApiError;
use aero_shared::auth::jwt::StaffIdentity;
use aero_shared::auth::password::{dummy_verify, verify_password};
use aero_shared::json::ValidJson;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::UserRecord;
use axum::extract::{ConnectInfo, State};
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::OptionalExtension;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/login", post(login))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: SecretString,
}

impl Validate for LoginRequest {
    fn validate(&self, v: &mut Validator) {
        v.text("username", &self.username, 64);
    }
}

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ValidJson(body): ValidJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    state.security.limits.check_login(peer.ip())?;
    let username = body.username.trim().to_string();
    let user: Option<UserRecord> = state
        .replica
        .read(move |c| {
            let data: Option<String> = c
                .query_row(
                    "SELECT data FROM users WHERE username = ?1 AND disabled_at IS NULL ORDER BY id LIMIT 1",
                    [username],
                    |r| r.get(0),
                )
                .optional()?;
            data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
        })
        .await?;
    // Only staff of this venue (or chain-wide roles) may log in here.
    let site = state.site_id;
    let Some(user) = user.filter(|u| u.role.is_chain_wide() || u.site_ids.contains(&site)) else {
        // Spend the same time as a real check so usernames cannot be probed by timing.
        let password = body.password;
        tokio::task::spawn_blocking(move || dummy_verify(&password))
            .await
            .map_err(ApiError::internal)?;
        return Err(ApiError::Unauthorized("invalid username or password"));
    };
    let password = body.password;
    let hash = user.password_hash.clone();
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !valid {
        tracing::info!(username = %user.username, "failed login");
        return Err(ApiError::Unauthorized("invalid username or password"));
    }
    let identity = StaffIdentity {
        sub: user.id,
        username: user.username,
        role: user.role.as_str().to_string(),
        sites: user.site_ids,
    };
    let (access_token, expires_in) = state
        .security
        .jwt
        .issue(identity, chrono::Utc::now())
        .map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

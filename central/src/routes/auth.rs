//! `POST /v1/auth/login`: HQ staff trade a username and password for a short-lived JWT.

use crate::state::AppState;
use aero_shared::ApiError;
use aero_shared::auth::jwt::StaffIdentity;
use aero_shared::auth::password::{dummy_verify, verify_password};
use aero_shared::json::ValidJson;
use aero_shared::validate::{Validate, Validator};
use axum::extract::{ConnectInfo, State};
use axum::routing::post;
use axum::{Json, Router};
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
    let user = state.store.user_by_username(body.username.trim()).await?;
    let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
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
        .issue(identity, state.clock.now())
        .map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

//! `POST /v1/auth/login`: HQ staff trade a username and password for a short-lived JWT.

use crate::state::AppState;
use aero_shared::ApiError;
use aero_shared::auth::login::{self, LoginRequest, TokenResponse};
use aero_shared::client_ip::ClientAddr;
use aero_shared::json::ValidJson;
use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", summary = "Log in as HQ staff; returns a Bearer JWT", request_body = LoginRequest, responses((status = 200, description = "OK", body = TokenResponse), (status = 401, description = "Unknown user or wrong password", content_type = "application/problem+json", body = aero_shared::Problem), (status = 429, description = "Too many login attempts from this client", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(body): ValidJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    login::admit(&state.security, client)?;
    let user = state.store.user_by_username(body.username.trim()).await?;
    let token = login::login(
        &state.security,
        client,
        user,
        body.password,
        state.clock.now(),
    )
    .await?;
    Ok(Json(token))
}

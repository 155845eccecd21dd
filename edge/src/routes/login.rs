//! `POST /v1/auth/login` for venue staff: checked against the replicated argon2id hashes and
//! signed with this edge's own secret, so staff can log in while central is unreachable.

use super::AppState;
use aero_shared::ApiError;
use aero_shared::auth::login::{self, LoginRequest, TokenResponse};
use aero_shared::client_ip::ClientAddr;
use aero_shared::json::ValidJson;
use aero_shared::wire::UserRecord;
use axum::Json;
use axum::extract::State;
use rusqlite::OptionalExtension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "login", summary = "Log in as venue staff (users replicated from HQ); returns a Bearer JWT for this edge", request_body = LoginRequest, responses((status = 200, description = "OK", body = TokenResponse), (status = 401, description = "Unknown user or wrong password", content_type = "application/problem+json", body = aero_shared::Problem), (status = 429, description = "Too many login attempts from this client", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(body): ValidJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    login::admit(&state.security, client)?;
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
    let user = user.filter(|u| u.role.is_chain_wide() || u.site_ids.contains(&site));
    let token = login::login(
        &state.security,
        client,
        user,
        body.password,
        chrono::Utc::now(),
    )
    .await?;
    Ok(Json(token))
}

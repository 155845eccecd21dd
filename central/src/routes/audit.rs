//! `GET /v1/audit`: who did what, from where, newest first.

use super::clamp_limit;
use crate::state::AppState;
use crate::store::AuditEntry;
use aero_shared::ApiError;
use aero_shared::auth::extract::{Auth, require};
use aero_shared::auth::principal::Permission;
use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/audit",
        get(list_audit.layer(require(Permission::ReadAudit))),
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    site_id: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct AuditList {
    entries: Vec<AuditEntry>,
}

async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    match query.site_id {
        Some(site) => auth.ensure_site(site).await?,
        None if !auth.principal.is_chain_wide() => {
            return Err(ApiError::field("site_id", "required for site-scoped staff"));
        }
        None => {}
    }
    let entries = state
        .store
        .list_audit(query.site_id, clamp_limit(query.limit, 100, 1000))
        .await?;
    Ok(Json(AuditList { entries }))
}

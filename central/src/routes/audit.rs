//! `GET /v1/audit`: who did what, from where, newest first; narrowed to a venue, an actor or an
//! action.

use crate::state::AppState;
use crate::store::{AuditEntry, AuditFilter};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::page;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(Permission::ReadAudit, routes!(list_audit)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries about this venue; required for site-scoped staff.
    site_id: Option<Uuid>,
    /// Only writes by this actor: a user's or device's id, or the name the entry recorded (a
    /// username, a device's name), ignoring case.
    actor: Option<String>,
    /// Only entries of this action, e.g. `site.create` or `dead_letter.retry_requested`.
    action: Option<String>,
    /// Entries in the answer: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AuditList {
    entries: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", summary = "The audit log, newest first", params(AuditQuery), responses((status = 200, description = "OK", body = AuditList)))]
async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = page::limit(query.limit, 100, 1000).map_err(|e| ApiError::Validation(vec![e]))?;
    match query.site_id {
        Some(site) => auth.ensure_site(site).await?,
        None if !auth.principal.is_chain_wide() => {
            return Err(ApiError::field("site_id", "required for site-scoped staff"));
        }
        None => {}
    }
    let filter = AuditFilter::new(
        query.site_id,
        query.actor.as_deref(),
        query.action.as_deref(),
    );
    let entries = state.store.list_audit(&filter, limit).await?;
    Ok(Json(AuditList { entries }))
}

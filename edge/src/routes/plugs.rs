//! The venue's smart plugs: as the reconcile loop last found them (state, reachability, draw and
//! what each should be doing; `GET /v1/plugs`, answered from memory, never from the network),
//! and a manager's override (`POST /v1/plugs/{id}/power`).

use super::{AppState, refuse, write_error};
use crate::audit::{actor_name, record};
use crate::plugs::reconcile::{self, PlugView};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::{NameKey, PageQuery};
use aero_shared::wire::{NewPlugOverride, PlugOverrideRecord};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadPlugs, routes!(list)))
        .routes(guarded(Permission::ControlPlugs, routes!(power)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Plugs {
    plugs: Vec<PlugView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// The venue's plugs by name, paged from what the reconcile loop last found.
#[utoipa::path(get, path = "/v1/plugs", tag = "plugs", params(PageQuery), responses((status = 200, description = "OK", body = Plugs)))]
async fn list(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Plugs>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let paged = page.slice(state.plugs.list(), |p| (p.name.clone(), p.id));
    Ok(Json(Plugs {
        plugs: paged.rows,
        next_after: paged.next_after,
    }))
}

/// A manager switches a plug by hand until a given time (`{"on", "until"}`), even with central
/// unreachable: stored and queued for HQ in one transaction, audited, and applied by the
/// reconcile loop at once; from `until` on the plug's schedules govern again.
#[utoipa::path(post, path = "/v1/plugs/{id}/power", tag = "plugs", params(("id" = Uuid, Path)), request_body = NewPlugOverride, responses((status = 201, description = "Created", body = PlugOverrideRecord)))]
async fn power(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<NewPlugOverride>,
) -> Result<(StatusCode, Json<PlugOverrideRecord>), ApiError> {
    let now = state.clock.now();
    let site_id = state.site_id;
    let set = state
        .writer
        .mutate(move |c| {
            let Some(plug) = reconcile::plug(c, site_id, id)? else {
                return refuse(ApiError::NotFound("no such plug"));
            };
            let set = match body.record(&plug, now, actor_name(&auth)) {
                Ok(set) => set,
                Err(reason) => return refuse(ApiError::field("until", reason)),
            };
            reconcile::set_override(c, &set)?;
            let state = if body.on { "on" } else { "off" };
            let target = format!(
                "plug {} ({}) {state} until {}",
                plug.id, plug.name, set.until
            );
            record(c, &auth, "plug.override", &target, set.set_at)?;
            Ok(set)
        })
        .await
        .map_err(write_error)?;
    state.plugs.kick();
    Ok((StatusCode::CREATED, Json(set)))
}

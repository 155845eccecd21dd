//! Smart plugs and their power schedules, as data: each venue's edge drives the plugs.

use crate::state::{AppState, actor};
use crate::store::{NameKey, TimeKey};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{
    NewPlugOverride, PlugOverrideRecord, PlugRecord, PlugStatusRecord, PowerState, ScheduleRecord,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadPlugs, routes!(list_plugs)))
        .routes(guarded(Permission::ManagePlugs, routes!(create_plug)))
        .routes(guarded(Permission::ReadPlugs, routes!(list_schedules)))
        .routes(guarded(Permission::ManagePlugs, routes!(create_schedule)))
        .routes(guarded(Permission::ReadPlugs, routes!(list_overrides)))
        .routes(guarded(Permission::ControlPlugs, routes!(create_override)))
}

#[utoipa::path(post, path = "/v1/plugs/{id}/overrides", tag = "plugs", params(("id" = Uuid, Path)), request_body = NewPlugOverride, responses((status = 201, description = "Created", body = PlugOverrideRecord)))]
async fn create_override(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<NewPlugOverride>,
) -> Result<Answer, ApiError> {
    let plug = plug_for(&state, &auth, id).await?;
    let set = body
        .record(&plug, state.clock.now(), auth.principal.display_name())
        .map_err(|reason| ApiError::field("until", reason))?;
    let answer = Answer::json(StatusCode::CREATED, &set)?;
    answering(
        &answer,
        state.store.create_plug_override(&actor(&auth), &set),
    )
    .await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct OverrideList {
    overrides: Vec<PlugOverrideRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/plugs/{id}/overrides", tag = "plugs", summary = "A plug's overrides, the one set last first", params(("id" = Uuid, Path), PageQuery), responses((status = 200, description = "OK", body = OverrideList)))]
async fn list_overrides(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<OverrideList>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let plug = plug_for(&state, &auth, id).await?;
    let overrides = state
        .store
        .plug_overrides(plug.id, page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(overrides, |o| (o.set_at, o.id));
    Ok(Json(OverrideList {
        overrides: paged.rows,
        next_after: paged.next_after,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlug {
    name: String,
    host: String,
    #[serde(default = "kasa_port")]
    port: u16,
    #[serde(default)]
    child_id: Option<String>,
}

fn kasa_port() -> u16 {
    9999
}

impl Validate for NewPlug {
    fn validate(&self, v: &mut Validator) {
        v.text("name", &self.name, 100);
        v.text("host", &self.host, 253);
        v.check(
            self.host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')),
            "host",
            "must be an IP address or host name",
        );
        v.check(self.port != 0, "port", "must be between 1 and 65535");
        if let Some(child) = &self.child_id {
            v.text("child_id", child, 64);
        }
    }
}

#[utoipa::path(post, path = "/v1/sites/{site_id}/plugs", tag = "plugs", summary = "Register a smart plug", params(("site_id" = Uuid, Path)), request_body = NewPlug, responses((status = 201, description = "Created", body = PlugRecord)))]
async fn create_plug(
    State(state): State<AppState>,
    auth: Auth,
    Path(site_id): Path<Uuid>,
    ValidJson(body): ValidJson<NewPlug>,
) -> Result<Answer, ApiError> {
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let plug = PlugRecord {
        id: Uuid::now_v7(),
        site_id,
        name: body.name.trim().to_string(),
        host: body.host,
        port: body.port,
        child_id: body.child_id,
        created_at: state.clock.now(),
    };
    let answer = Answer::json(StatusCode::CREATED, &plug)?;
    answering(&answer, state.store.create_plug(&actor(&auth), &plug)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct PlugList {
    plugs: Vec<PlugView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// A plug as HQ sees it: its configuration and what the venue last reported of it (`null`
/// until the venue first reported).
#[derive(Serialize, utoipa::ToSchema)]
struct PlugView {
    #[serde(flatten)]
    plug: PlugRecord,
    status: Option<PlugStatusRecord>,
}

#[utoipa::path(get, path = "/v1/sites/{site_id}/plugs", tag = "plugs", summary = "List a site's smart plugs, by name", params(("site_id" = Uuid, Path), PageQuery), responses((status = 200, description = "OK", body = PlugList)))]
async fn list_plugs(
    State(state): State<AppState>,
    _auth: Auth,
    Path(site_id): Path<Uuid>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<PlugList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let mut statuses: HashMap<Uuid, PlugStatusRecord> = state
        .store
        .plug_statuses(site_id)
        .await?
        .into_iter()
        .map(|s| (s.plug_id, s))
        .collect();
    let plugs = state
        .store
        .list_plugs(site_id, page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(plugs, |p| (p.name.clone(), p.id));
    let plugs = paged
        .rows
        .into_iter()
        .map(|plug| PlugView {
            status: statuses.remove(&plug.id),
            plug,
        })
        .collect();
    Ok(Json(PlugList {
        plugs,
        next_after: paged.next_after,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    cron: String,
    state: PowerState,
}

impl Validate for NewSchedule {
    fn validate(&self, v: &mut Validator) {
        v.cron("cron", &self.cron);
    }
}

async fn plug_for(state: &AppState, auth: &Auth, id: Uuid) -> Result<PlugRecord, ApiError> {
    let plug = state
        .store
        .get_plug(id)
        .await?
        .ok_or(ApiError::NotFound("no such plug"))?;
    auth.ensure_site(plug.site_id).await?;
    Ok(plug)
}

#[utoipa::path(post, path = "/v1/plugs/{id}/schedules", tag = "plugs", summary = "Add a cron schedule (site timezone) for a plug", params(("id" = Uuid, Path)), request_body = NewSchedule, responses((status = 201, description = "Created", body = ScheduleRecord)))]
async fn create_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<NewSchedule>,
) -> Result<Answer, ApiError> {
    let plug = plug_for(&state, &auth, id).await?;
    let schedule = ScheduleRecord {
        id: Uuid::now_v7(),
        plug_id: plug.id,
        site_id: plug.site_id,
        cron: body.cron.trim().to_string(),
        state: body.state,
        created_at: state.clock.now(),
    };
    let answer = Answer::json(StatusCode::CREATED, &schedule)?;
    answering(
        &answer,
        state.store.create_schedule(&actor(&auth), &schedule),
    )
    .await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct ScheduleList {
    schedules: Vec<ScheduleRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/plugs/{id}/schedules", tag = "plugs", summary = "List a plug's schedules, oldest first", params(("id" = Uuid, Path), PageQuery), responses((status = 200, description = "OK", body = ScheduleList)))]
async fn list_schedules(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let plug = plug_for(&state, &auth, id).await?;
    let schedules = state
        .store
        .list_schedules(plug.id, page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(schedules, |s| (s.created_at, s.id));
    Ok(Json(ScheduleList {
        schedules: paged.rows,
        next_after: paged.next_after,
    }))
}

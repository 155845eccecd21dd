//! Venue devices and their API keys: issued once, stored hashed, revocable.

use crate::state::{AppState, actor};
use crate::store::TimeKey;
use aero_shared::ApiError;
use aero_shared::auth::api_key::ApiKey;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::{DeviceKind, Permission};
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::DeviceRecord;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadSites, routes!(list_devices)))
        .routes(guarded(Permission::ManageDevices, routes!(create_device)))
        .routes(guarded(Permission::ManageDevices, routes!(revoke_device)))
}

/// Kinds a venue device may be registered as (the edge's own credential comes from enrollment).
#[derive(Deserialize, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum RegistrableKind {
    Kiosk,
    Pos,
    Tablet,
    Game,
    Scoreboard,
}

impl From<RegistrableKind> for DeviceKind {
    fn from(kind: RegistrableKind) -> Self {
        match kind {
            RegistrableKind::Kiosk => Self::Kiosk,
            RegistrableKind::Pos => Self::Pos,
            RegistrableKind::Tablet => Self::Tablet,
            RegistrableKind::Game => Self::Game,
            RegistrableKind::Scoreboard => Self::Scoreboard,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    name: String,
    kind: RegistrableKind,
    #[serde(default)]
    allowed_networks: Vec<String>,
}

impl Validate for NewDevice {
    fn validate(&self, v: &mut Validator) {
        v.text("name", &self.name, 100);
        v.networks("allowed_networks", &self.allowed_networks);
    }
}

/// A device without its key hash: what list endpoints and `aero-central devices` show.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub kind: DeviceKind,
    #[schema(value_type = Vec<String>)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        Self {
            id: d.id,
            site_id: d.site_id,
            name: d.name,
            kind: d.kind,
            allowed_networks: d.allowed_networks,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct IssuedDevice {
    #[serde(flatten)]
    device: DeviceView,
    /// Shown exactly once; only its hash is stored.
    api_key: String,
}

#[utoipa::path(post, path = "/v1/sites/{site_id}/devices", tag = "devices", summary = "Register a device; its API key is shown once", params(("site_id" = Uuid, Path)), request_body = NewDevice, responses((status = 201, description = "Created", body = IssuedDevice)))]
async fn create_device(
    State(state): State<AppState>,
    auth: Auth,
    Path(site_id): Path<Uuid>,
    ValidJson(body): ValidJson<NewDevice>,
) -> Result<Answer, ApiError> {
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let mut v = Validator::new();
    let allowed_networks = v.networks("allowed_networks", &body.allowed_networks);
    v.finish()?;
    let key = ApiKey::generate();
    let device = DeviceRecord {
        id: Uuid::now_v7(),
        site_id,
        name: body.name.trim().to_string(),
        kind: body.kind.into(),
        allowed_networks,
        key_hash: key.hash().as_str().to_string(),
        created_at: state.clock.now(),
        revoked_at: None,
    };
    let answer = Answer::json(
        StatusCode::CREATED,
        &IssuedDevice {
            device: device.clone().into(),
            api_key: key.expose().to_string(),
        },
    )?;
    answering(&answer, state.store.create_device(&actor(&auth), &device)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeviceList {
    devices: Vec<DeviceView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sites/{site_id}/devices", tag = "devices", summary = "List a site's devices, oldest first", params(("site_id" = Uuid, Path), PageQuery), responses((status = 200, description = "OK", body = DeviceList)))]
async fn list_devices(
    State(state): State<AppState>,
    _auth: Auth,
    Path(site_id): Path<Uuid>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let devices = state
        .store
        .list_devices(site_id, page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(devices, |d| (d.created_at, d.id));
    Ok(Json(DeviceList {
        devices: paged.rows.into_iter().map(DeviceView::from).collect(),
        next_after: paged.next_after,
    }))
}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices", summary = "Revoke a device's API key", params(("id" = Uuid, Path)), responses((status = 204, description = "Revoked")))]
async fn revoke_device(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let device = state
        .store
        .get_device(id)
        .await?
        .ok_or(ApiError::NotFound("no such device"))?;
    auth.ensure_site(device.site_id).await?;
    state
        .store
        .revoke_device(&actor(&auth), id, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

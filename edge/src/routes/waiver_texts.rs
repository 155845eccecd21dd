//! The waiver text in force at this venue: the newest version HQ published that the replica
//! holds, which a terminal shows before a waiver is signed (and which the waiver then records).

use super::AppState;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::wire::WaiverTextRecord;
use aero_shared::{ApiError, Problem};
use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(
        Permission::ReadWaiverTexts,
        routes!(current_waiver_text),
    ))
}

/// The newest waiver text this venue holds: show it before a waiver is signed.
#[utoipa::path(get, path = "/v1/waiver-texts/current", tag = "customers", responses((status = 200, description = "OK", body = WaiverTextRecord), (status = 404, description = "HQ has published no waiver text yet (or none has reached this venue)", content_type = "application/problem+json", body = Problem)))]
async fn current_waiver_text(
    State(state): State<AppState>,
    _auth: Auth,
) -> Result<Json<WaiverTextRecord>, ApiError> {
    state
        .replica
        .read(crate::replica::waiver_texts::current)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no waiver text has been published yet"))
}

//! HQ's requests about a venue's dead letters: retry one (the venue queues the same write
//! again) or discard it. The request travels to the venue in its change feed; the venue acts on
//! it when it pulls, even after days offline, and its decision comes back through its outbox
//! and shows at `GET /v1/sites/{site_id}/dead-letters`. Both are audited at central, and the
//! venue audits what it did.

use crate::state::{AppState, actor};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::{Answer, answering};
use aero_shared::openapi::guarded;
use aero_shared::wire::{DeadLetterAction, DeadLetterRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::SubsecRound as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(
            Permission::ManageDeadLetters,
            routes!(request_retry),
        ))
        .routes(guarded(
            Permission::ManageDeadLetters,
            routes!(request_discard),
        ))
}

/// Asks the venue to queue the refused write again as a new op, once whatever made central
/// refuse it is fixed. Answers 202: the venue acts when it next pulls. 404 if central refused
/// no such op from the site, 409 once the venue has resolved it.
#[utoipa::path(post, path = "/v1/sites/{site_id}/dead-letters/{op_id}/retry", tag = "sites", params(("site_id" = Uuid, Path), ("op_id" = Uuid, Path)), responses((status = 202, description = "Requested: the venue retries it when it next pulls", body = DeadLetterRequest)))]
async fn request_retry(
    state: State<AppState>,
    auth: Auth,
    Path((site_id, op_id)): Path<(Uuid, Uuid)>,
) -> Result<Answer, ApiError> {
    request(state, auth, site_id, op_id, DeadLetterAction::Retry).await
}

/// Asks the venue to drop the refused write for good. Answers 202: the venue acts when it
/// next pulls. 404 if central refused no such op from the site, 409 once the venue has
/// resolved it.
#[utoipa::path(post, path = "/v1/sites/{site_id}/dead-letters/{op_id}/discard", tag = "sites", params(("site_id" = Uuid, Path), ("op_id" = Uuid, Path)), responses((status = 202, description = "Requested: the venue discards it when it next pulls", body = DeadLetterRequest)))]
async fn request_discard(
    state: State<AppState>,
    auth: Auth,
    Path((site_id, op_id)): Path<(Uuid, Uuid)>,
) -> Result<Answer, ApiError> {
    request(state, auth, site_id, op_id, DeadLetterAction::Discard).await
}

async fn request(
    State(state): State<AppState>,
    auth: Auth,
    site_id: Uuid,
    op_id: Uuid,
    action: DeadLetterAction,
) -> Result<Answer, ApiError> {
    let request = DeadLetterRequest {
        op_id,
        site_id,
        action,
        requested_by: auth.principal.display_name(),
        requested_at: state.clock.now().trunc_subsecs(3),
    };
    let answer = Answer::json(StatusCode::ACCEPTED, &request)?;
    answering(
        &answer,
        state
            .store
            .request_dead_letter_action(&actor(&auth), &request),
    )
    .await?;
    Ok(answer)
}

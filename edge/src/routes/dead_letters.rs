//! Dead letters: ops central refused for good. A manager lists them, and retries one (queued
//! again as a new op, after whatever made central refuse it was fixed) or discards it. Both are
//! audited, and both queue a `dead_letter` event op in the same transaction, so central records
//! the decision exactly once: HQ sees each venue's refusals, open or resolved, at
//! `GET /v1/sites/{id}/dead-letters`.

use super::{AppState, audit, write_error};
use crate::outbox::{append_op, parse_kind};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::Answer;
use aero_shared::openapi::guarded;
use aero_shared::wire::{DeadLetterResolution, Entity, OpKind, Resolution};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ManageDeadLetters, routes!(list)))
        .routes(guarded(Permission::ManageDeadLetters, routes!(retry)))
        .routes(guarded(Permission::ManageDeadLetters, routes!(discard)))
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub op_id: Uuid,
    pub seq: i64,
    pub entity: String,
    pub entity_id: Uuid,
    pub kind: String,
    pub reason: String,
    pub rejected_at: String,
    pub data: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeadLetters {
    dead_letters: Vec<DeadLetter>,
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead_letters", responses((status = 200, description = "OK", body = DeadLetters)))]
async fn list(State(state): State<AppState>, _auth: Auth) -> Result<Json<DeadLetters>, ApiError> {
    let dead_letters = state
        .replica
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT op_id, seq, entity, entity_id, kind, reason, rejected_at, data
                   FROM dead_letters ORDER BY rejected_at DESC, seq DESC LIMIT 1000",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeadLetter {
                    op_id: r.get(0)?,
                    seq: r.get(1)?,
                    entity: r.get(2)?,
                    entity_id: r.get(3)?,
                    kind: r.get(4)?,
                    reason: r.get(5)?,
                    rejected_at: r.get(6)?,
                    data: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(Json(DeadLetters { dead_letters }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Retried {
    /// The dead letter's op id.
    retried: Uuid,
    /// The new op that carries the same write to central.
    op_id: Uuid,
    seq: i64,
}

/// Queues the write again as a new op (central remembers the refused op id, so the same op
/// would be refused again without being looked at), and tells central which op it became.
#[utoipa::path(post, path = "/v1/dead-letters/{op_id}/retry", tag = "dead_letters", params(("op_id" = Uuid, Path)), responses((status = 200, description = "Queued again", body = Retried)))]
async fn retry(
    State(state): State<AppState>,
    auth: Auth,
    Path(op_id): Path<Uuid>,
) -> Result<Answer, ApiError> {
    let now = Utc::now();
    state
        .writer
        .mutate_answering(move |c| {
            let (entity, entity_id, kind, data) =
                take(c, op_id)?.ok_or(ApiError::NotFound("no such dead letter"))?;
            let entity = Entity::parse(&entity)
                .ok_or_else(|| anyhow::anyhow!("unknown entity {entity:?}"))?;
            let value: serde_json::Value = serde_json::from_str(&data)?;
            let seq = append_op(c, entity, entity_id, parse_kind(&kind)?, &value, now)?;
            let new_id: Uuid =
                c.query_row("SELECT op_id FROM outbox WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })?;
            resolve(c, &auth, op_id, Some(new_id), now)?;
            audit::record(c, &auth, "dead_letter.retry", &op_id.to_string(), now)?;
            Ok(Answer::json(
                StatusCode::OK,
                &Retried {
                    retried: op_id,
                    op_id: new_id,
                    seq,
                },
            )?)
        })
        .await
        .map_err(write_error)
}

/// Forgets the dead letter for good: what it carried never reaches central, only the decision
/// (a `dead_letter` event op), with the answer committed in the same transaction.
#[utoipa::path(post, path = "/v1/dead-letters/{op_id}/discard", tag = "dead_letters", params(("op_id" = Uuid, Path)), responses((status = 204, description = "Discarded")))]
async fn discard(
    State(state): State<AppState>,
    auth: Auth,
    Path(op_id): Path<Uuid>,
) -> Result<Answer, ApiError> {
    let now = Utc::now();
    state
        .writer
        .mutate_answering(move |c| {
            take(c, op_id)?.ok_or(ApiError::NotFound("no such dead letter"))?;
            resolve(c, &auth, op_id, None, now)?;
            audit::record(c, &auth, "dead_letter.discard", &op_id.to_string(), now)?;
            Ok(Answer::empty(StatusCode::NO_CONTENT))
        })
        .await
        .map_err(write_error)
}

/// Removes a dead letter, returning (entity, entity_id, kind, data).
fn take(c: &Connection, op_id: Uuid) -> anyhow::Result<Option<(String, Uuid, String, String)>> {
    Ok(c.query_row(
        "DELETE FROM dead_letters WHERE op_id = ?1 RETURNING entity, entity_id, kind, data",
        [op_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()?)
}

/// Queues the decision about dead letter `op_id` for central, in the caller's transaction: it
/// is delivered exactly once, like any other op, and central records it on the refused op.
fn resolve(
    c: &Connection,
    auth: &Auth,
    op_id: Uuid,
    retried_as: Option<Uuid>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let resolution = DeadLetterResolution {
        op_id,
        resolution: if retried_as.is_some() {
            Resolution::Retried
        } else {
            Resolution::Discarded
        },
        retried_as,
        by: audit::actor_name(auth),
        at,
    };
    append_op(c, Entity::DeadLetter, op_id, OpKind::Event, &resolution, at)?;
    Ok(())
}

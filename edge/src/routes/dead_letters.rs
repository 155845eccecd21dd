//! Dead letters at the venue: a manager lists them, and retries or discards one (see
//! [`crate::dead_letters`]). HQ sees each venue's refusals, open or resolved, at
//! `GET /v1/sites/{id}/dead-letters` on central, and can ask for the same decisions there.

use super::{AppState, write_error};
use crate::audit::Actor;
use crate::dead_letters;
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::Answer;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use rusqlite::{ToSql, params_from_iter};
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
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// A dead letter's place in the list, newest refusal first: when it was refused, its seq, and
/// its op id (a seq may be used again after a fork).
type DeadLetterKey = (String, i64, Uuid);

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead_letters", summary = "The ops central refused for good, newest refusal first", params(PageQuery), responses((status = 200, description = "OK", body = DeadLetters)))]
async fn list(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let page = paging.page::<DeadLetterKey>()?;
    let (after, fetch) = (page.after.clone(), page.fetch());
    let dead_letters = state
        .replica
        .read(move |c| {
            let cursor = if after.is_some() {
                "WHERE (rejected_at, seq, op_id) < (?2, ?3, ?4)"
            } else {
                ""
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT op_id, seq, entity, entity_id, kind, reason, rejected_at, data
                   FROM dead_letters {cursor}
                  ORDER BY rejected_at DESC, seq DESC, op_id DESC LIMIT ?1"
            ))?;
            let mut values: Vec<&dyn ToSql> = vec![&fetch];
            if let Some((rejected_at, seq, op_id)) = &after {
                values.extend([rejected_at as &dyn ToSql, seq, op_id]);
            }
            let rows = stmt.query_map(params_from_iter(values), |r| {
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
    let paged = page.finish(dead_letters, |d| (d.rejected_at.clone(), d.seq, d.op_id));
    Ok(Json(DeadLetters {
        dead_letters: paged.rows,
        next_after: paged.next_after,
    }))
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
            let new = dead_letters::retry(c, &Actor::of(&auth), op_id, now)?
                .ok_or(ApiError::NotFound("no such dead letter"))?;
            Ok(Answer::json(
                StatusCode::OK,
                &Retried {
                    retried: op_id,
                    op_id: new.op_id,
                    seq: new.seq,
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
            if !dead_letters::discard(c, &Actor::of(&auth), op_id, now)? {
                return Err(ApiError::NotFound("no such dead letter").into());
            }
            Ok(Answer::empty(StatusCode::NO_CONTENT))
        })
        .await
        .map_err(write_error)
}

//! Dead letters: ops central refused for good, kept at the venue until someone decides about
//! each. A manager here, or HQ through central (a `dead_letter_request` in the change feed),
//! retries one (the same write queued again as a new op, after whatever made central refuse
//! it was fixed) or discards it. Each decision is audited and queued as a `dead_letter` event
//! op in the same transaction, so central records it exactly once.

use crate::audit::{Actor, record_as};
use crate::outbox::{append_op, parse_kind};
use aero_shared::wire::{
    DeadLetterAction, DeadLetterRequest, DeadLetterResolution, Entity, OpKind, Resolution,
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

/// A dead letter queued again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retried {
    /// The new op that carries the same write to central.
    pub op_id: Uuid,
    pub seq: i64,
}

/// Queues dead letter `op_id`'s write again as a new op (central remembers the refused op id,
/// so the same op would be refused again without being looked at), in the caller's
/// transaction. `None` if there is no such dead letter (any more).
pub fn retry(
    c: &Connection,
    actor: &Actor,
    op_id: Uuid,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<Retried>> {
    let Some((entity, entity_id, kind, data)) = take(c, op_id)? else {
        return Ok(None);
    };
    let entity =
        Entity::parse(&entity).ok_or_else(|| anyhow::anyhow!("unknown entity {entity:?}"))?;
    let value: serde_json::Value = serde_json::from_str(&data)?;
    let seq = append_op(c, entity, entity_id, parse_kind(&kind)?, &value, at)?;
    let new_id: Uuid = c.query_row("SELECT op_id FROM outbox WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })?;
    resolve(c, actor, op_id, Some(new_id), at)?;
    record_as(c, actor, "dead_letter.retry", &op_id.to_string(), at)?;
    Ok(Some(Retried { op_id: new_id, seq }))
}

/// Forgets dead letter `op_id` for good, in the caller's transaction: what it carried never
/// reaches central, only the decision. `false` if there is no such dead letter (any more).
pub fn discard(
    c: &Connection,
    actor: &Actor,
    op_id: Uuid,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    if take(c, op_id)?.is_none() {
        return Ok(false);
    }
    resolve(c, actor, op_id, None, at)?;
    record_as(c, actor, "dead_letter.discard", &op_id.to_string(), at)?;
    Ok(true)
}

/// Carries out HQ's request as pulled from central, in the pull's transaction. A dead letter
/// already resolved here (by a manager, or by this same request pulled before) is left as it
/// is, so a request replayed by a resync does nothing. Returns whether it acted.
pub fn carry_out(
    c: &Connection,
    request: &DeadLetterRequest,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let actor = Actor::hq(&request.requested_by);
    Ok(match request.action {
        DeadLetterAction::Retry => retry(c, &actor, request.op_id, at)?.is_some(),
        DeadLetterAction::Discard => discard(c, &actor, request.op_id, at)?,
    })
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
    actor: &Actor,
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
        by: actor.name.clone(),
        at,
    };
    append_op(c, Entity::DeadLetter, op_id, OpKind::Event, &resolution, at)?;
    Ok(())
}

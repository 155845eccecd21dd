//! The audit log and the change log, both written inside the caller's transaction: `audit`,
//! and `append_change` (with `append_user_changes` for a user's scopes).

use super::codec::{json, ts};
use super::conn::exec;
use crate::store::{Actor, AuditEvent, StoreResult, user_change_scopes};
use aero_shared::wire::{ChangeOp, Entity, UserRecord};
use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use serde::Serialize;
use uuid::Uuid;

pub(super) fn audit(
    tx: &Transaction<'_>,
    actor: &Actor,
    event: AuditEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    exec(
        tx,
        "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            Uuid::now_v7(),
            ts(at),
            actor.kind,
            actor.id,
            actor.name,
            actor.ip.map(|ip| ip.to_string()),
            actor.request_id,
            event.action,
            event.target,
            event.site_id,
        ],
    )?;
    Ok(())
}

/// Appends the new state of a row to the change feed, inside the caller's transaction.
pub(super) fn append_change<T: Serialize>(
    tx: &Transaction<'_>,
    entity: Entity,
    entity_id: Uuid,
    site_id: Option<Uuid>,
    record: &T,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO change_log (entity, entity_id, op, site_id, data, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entity.as_str(),
        entity_id,
        ChangeOp::Upsert.as_str(),
        site_id,
        json(record)?,
        ts(at)
    ])?;
    Ok(())
}

pub(super) fn append_user_changes(
    tx: &Transaction<'_>,
    user: &UserRecord,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    for scope in user_change_scopes(user, user) {
        append_change(tx, Entity::User, user.id, scope, user, at)?;
    }
    Ok(())
}

//! The audit log and the change log, both written inside the caller's transaction: `audit`,
//! the `NewChange` rows a write replicates, and `append_changes` under the change-log lock.

use super::codec::{int, to_json, ts};
use super::conn::Conn;
use crate::store::{Actor, AuditEvent, StoreError, StoreResult, user_change_scopes};
use aero_shared::wire::{ChangeOp, Entity, UserRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn audit(
    conn: &mut Conn,
    actor: &Actor,
    event: AuditEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO audit_log (id, [at], actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id) \
         VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10)",
    );
    q.bind(Uuid::now_v7());
    q.bind(ts(at));
    q.bind(actor.kind);
    q.bind(actor.id);
    q.bind(actor.name.as_str());
    q.bind(actor.ip.map(|ip| ip.to_string()));
    q.bind(actor.request_id.as_deref());
    q.bind(event.action);
    q.bind(event.target);
    q.bind(event.site_id);
    conn.exec(q).await
}

/// A change-log row to append: the full new state of one row, already serialised.
pub(super) struct NewChange {
    entity: Entity,
    entity_id: Uuid,
    /// `None`: chain-wide, pulled by every site.
    site_id: Option<Uuid>,
    data: String,
    at: DateTime<Utc>,
}

impl NewChange {
    pub(super) fn upsert<T: Serialize>(
        entity: Entity,
        entity_id: Uuid,
        site_id: Option<Uuid>,
        record: &T,
        at: DateTime<Utc>,
    ) -> StoreResult<Self> {
        Ok(Self {
            entity,
            entity_id,
            site_id,
            data: to_json(record)?,
            at,
        })
    }
}

/// A user replicates to each of its sites, or (chain-wide roles, or no sites) everywhere.
pub(super) fn user_changes(user: &UserRecord, at: DateTime<Utc>) -> StoreResult<Vec<NewChange>> {
    user_change_changes(user, user, at)
}

/// A change to a user replicates to every site it had and has (see `user_change_scopes`).
pub(super) fn user_change_changes(
    before: &UserRecord,
    after: &UserRecord,
    at: DateTime<Utc>,
) -> StoreResult<Vec<NewChange>> {
    user_change_scopes(before, after)
        .into_iter()
        .map(|scope| NewChange::upsert(Entity::User, after.id, scope, after, at))
        .collect()
}

/// Takes the change-log lock for the rest of the transaction.
///
/// Why: `change_log.seq` is an IDENTITY, handed out when a row is inserted but visible only
/// when its transaction commits. Two concurrent writers could take 42 and 43 and commit 43
/// first; an edge pulling at that moment moves its cursor to 43 and never sees 42. With this
/// exclusive, transaction-owned lock held from just before the first change-log INSERT until
/// COMMIT, no writer can take a seq until the previous appender has committed, so seq order is
/// commit order and "every row after my cursor" is complete. Callers do their other writes
/// first and take the lock last, so it is held only for a few inserts and the commit.
async fn lock_change_log(conn: &mut Conn) -> StoreResult<()> {
    let row = conn
        .row(Query::new(
            "DECLARE @result INT; \
             EXEC @result = sp_getapplock @Resource = N'aero_change_log', @LockMode = N'Exclusive', \
                  @LockOwner = N'Transaction', @LockTimeout = 10000; \
             SELECT @result;",
        ))
        .await?
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("sp_getapplock returned no result")))?;
    match int(&row, 0)? {
        // 0: granted at once; 1: granted after waiting.
        code if code >= 0 => Ok(()),
        // -1: timed out; -2: cancelled; -3: chosen as a deadlock victim.
        code @ -3..=-1 => Err(StoreError::Transient(format!(
            "could not take the change-log lock (sp_getapplock returned {code})"
        ))),
        // -999: a parameter or call error, which no retry will fix.
        code => Err(StoreError::Other(anyhow::anyhow!(
            "sp_getapplock failed with {code}"
        ))),
    }
}

/// Appends `changes` under the change-log lock; call it last in a transaction.
pub(super) async fn append_changes(conn: &mut Conn, changes: &[NewChange]) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    lock_change_log(conn).await?;
    for change in changes {
        let mut q = Query::new(
            "INSERT INTO change_log (entity, entity_id, op, site_id, data, changed_at) \
             VALUES (@P1, @P2, @P3, @P4, @P5, @P6)",
        );
        q.bind(change.entity.as_str());
        q.bind(change.entity_id);
        q.bind(ChangeOp::Upsert.as_str());
        q.bind(change.site_id);
        q.bind(change.data.as_str());
        q.bind(ts(change.at));
        conn.exec(q).await?;
    }
    Ok(())
}

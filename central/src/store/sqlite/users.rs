//! Staff users: creating them with their site assignments, looking them up, changing and
//! disabling them; each write is audited and replicated to the user's sites (or chain-wide).

use super::SqliteStore;
use super::changelog::{append_change, append_user_changes, audit};
use super::codec::{parse_enum, parse_opt_ts, parse_ts, ts};
use super::conn::exec;
use super::pages::keyset_page;
use crate::store::{
    Actor, AuditEvent, NameKey, StoreError, StoreResult, UserChanges, user_change_scopes,
};
use aero_shared::wire::{Entity, UserRecord};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

fn user_from_row(conn: &Connection, row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let id: Uuid = row.get(0)?;
    let mut stmt =
        conn.prepare_cached("SELECT site_id FROM user_sites WHERE user_id = ?1 ORDER BY site_id")?;
    let site_ids = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<Uuid>>>()?;
    Ok(UserRecord {
        id,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        role: parse_enum(&row.get::<_, String>(3)?)?,
        site_ids,
        created_at: parse_ts(&row.get::<_, String>(4)?)?,
        disabled_at: parse_opt_ts(row.get(5)?)?,
        token_version: row.get(6)?,
    })
}

pub(super) async fn create(
    store: &SqliteStore,
    actor: &Actor,
    user: &UserRecord,
) -> StoreResult<()> {
    let (actor, user) = (actor.clone(), user.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO users (id, username, password_hash, role, created_at, token_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user.id, user.username, user.password_hash, user.role.as_str(), ts(user.created_at), user.token_version],
        )?;
        for site in &user.site_ids {
            exec(tx, "INSERT INTO user_sites (user_id, site_id) VALUES (?1, ?2)", params![user.id, site])?;
        }
        audit(tx, &actor, AuditEvent { action: "user.create", target: Some(user.id.to_string()), site_id: user.site_ids.first().copied() }, user.created_at)?;
        append_user_changes(tx, &user, user.created_at)
    })
    .await
}

pub(super) async fn by_username(
    store: &SqliteStore,
    username: &str,
) -> StoreResult<Option<UserRecord>> {
    let username = username.to_string();
    store.read(move |c| {
        Ok(c.query_row(
            "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE username = ?1",
            [username],
            |row| user_from_row(c, row),
        )
        .optional()?)
    })
    .await
}

pub(super) async fn list(
    store: &SqliteStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<UserRecord>> {
    let after = after.cloned();
    store
        .read(move |c| {
            keyset_page(
                c,
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users",
                None,
                &["username", "id"],
                after,
                limit,
                |row| user_from_row(c, row),
            )
        })
        .await
}

pub(super) async fn get(store: &SqliteStore, id: Uuid) -> StoreResult<Option<UserRecord>> {
    store.read(move |c| {
        Ok(c.query_row(
            "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
            [id],
            |row| user_from_row(c, row),
        )
        .optional()?)
    })
    .await
}

pub(super) async fn disable(
    store: &SqliteStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let actor = actor.clone();
    store.write(move |tx| {
        let changed = tx.execute(
            "UPDATE users SET disabled_at = ?2, token_version = token_version + 1
                 WHERE id = ?1 AND disabled_at IS NULL",
            params![id, ts(at)],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        // The record as stored, `disabled_at` included: edges refuse its logins when it lands.
        let user = tx.query_row(
            "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
            [id],
            |row| user_from_row(tx, row),
        )?;
        audit(
            tx,
            &actor,
            AuditEvent {
                action: "user.disable",
                target: Some(id.to_string()),
                site_id: user.site_ids.first().copied(),
            },
            at,
        )?;
        append_user_changes(tx, &user, at)?;
        Ok(true)
    })
    .await
}

pub(super) async fn update(
    store: &SqliteStore,
    actor: &Actor,
    id: Uuid,
    expected_version: i64,
    changes: &UserChanges,
    at: DateTime<Utc>,
) -> StoreResult<UserRecord> {
    let (actor, changes) = (actor.clone(), changes.clone());
    store.write(move |tx| {
        // The one writer connection serialises this read-compare-write against every other.
        let current = tx
            .query_row(
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
                [id],
                |row| user_from_row(tx, row),
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        if current.token_version != expected_version {
            return Err(StoreError::PreconditionFailed);
        }
        let Some(updated) = changes.apply(&current, at) else {
            return Ok(current);
        };
        tx.execute(
            "UPDATE users SET role = ?2, password_hash = ?3, disabled_at = ?4, token_version = ?5 WHERE id = ?1",
            params![
                id,
                updated.role.as_str(),
                updated.password_hash,
                updated.disabled_at.map(ts),
                updated.token_version
            ],
        )?;
        if updated.site_ids != current.site_ids {
            exec(tx, "DELETE FROM user_sites WHERE user_id = ?1", [id])?;
            for site in &updated.site_ids {
                exec(tx, "INSERT INTO user_sites (user_id, site_id) VALUES (?1, ?2)", params![id, site])?;
            }
        }
        audit(
            tx,
            &actor,
            AuditEvent {
                action: "user.update",
                target: Some(id.to_string()),
                site_id: updated.site_ids.first().or(current.site_ids.first()).copied(),
            },
            at,
        )?;
        for scope in user_change_scopes(&current, &updated) {
            append_change(tx, Entity::User, id, scope, &updated, at)?;
        }
        Ok(updated)
    })
    .await
}

pub(super) async fn token_version(store: &SqliteStore, id: Uuid) -> StoreResult<Option<i64>> {
    store
        .read(move |c| {
            Ok(c.prepare_cached(
                "SELECT token_version FROM users WHERE id = ?1 AND disabled_at IS NULL",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?)
        })
        .await
}

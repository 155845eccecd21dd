//! Staff users: creating them with their site assignments, looking them up, changing and
//! disabling them; each write is audited and replicated to the user's sites (or chain-wide).

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit, user_change_changes, user_changes};
use super::codec::{int, ts, user_columns, user_from, uuid};
use super::conn::Conn;
use super::pages::keyset_sql;
use crate::store::{Actor, AuditEvent, NameKey, StoreError, StoreResult, UserChanges};
use aero_shared::wire::UserRecord;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tiberius::{Query, Row};
use uuid::Uuid;

/// The user of a "user row; its site links" pair of result sets, if the first set has a row.
fn one_user(sets: Vec<Vec<Row>>) -> StoreResult<Option<UserRecord>> {
    let mut sets = sets.into_iter();
    let users = sets.next().unwrap_or_default();
    let links = sets.next().unwrap_or_default();
    let Some(row) = users.first() else {
        return Ok(None);
    };
    let mut found = [user_from(row)?];
    attach_sites(&mut found, &links)?;
    let [user] = found;
    Ok(Some(user))
}

/// Collects `(user_id, site_id)` rows into each user's sorted `site_ids`. Sorting in Rust keeps
/// the order the SQLite store returns (UUID byte order), which SQL Server's GUID order is not.
fn attach_sites(users: &mut [UserRecord], links: &[Row]) -> StoreResult<()> {
    let mut by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for link in links {
        by_user
            .entry(uuid(link, 0)?)
            .or_default()
            .push(uuid(link, 1)?);
    }
    for user in users {
        let mut sites = by_user.remove(&user.id).unwrap_or_default();
        sites.sort();
        user.site_ids = sites;
    }
    Ok(())
}

async fn disable_user_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    // The guarded UPDATE claims the change: a concurrent disable waits on the row lock and then
    // no longer matches `disabled_at IS NULL`, so exactly one of them audits and replicates.
    let mut q = Query::new(concat!(
        "DECLARE @disabled INT; ",
        "UPDATE users SET disabled_at = @P2, token_version = token_version + 1 ",
        "WHERE id = @P1 AND disabled_at IS NULL; ",
        "SET @disabled = @@ROWCOUNT; ",
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = @P1 AND @disabled = 1; ",
        "SELECT user_id, site_id FROM user_sites WHERE user_id = @P1 AND @disabled = 1;"
    ));
    q.bind(id);
    q.bind(ts(at));
    let mut sets = conn.results(q).await?.into_iter();
    let users = sets.next().unwrap_or_default();
    let links = sets.next().unwrap_or_default();
    let Some(row) = users.first() else {
        return Ok(false);
    };
    // The record as stored, `disabled_at` included: edges refuse its logins when it lands.
    let mut found = [user_from(row)?];
    attach_sites(&mut found, &links)?;
    let [user] = found;
    let event = AuditEvent {
        action: "user.disable",
        target: Some(id.to_string()),
        site_id: user.site_ids.first().copied(),
    };
    audit(conn, actor, event, at).await?;
    append_changes(conn, &user_changes(&user, at)?).await?;
    Ok(true)
}

async fn create_user_tx(
    conn: &mut Conn,
    actor: &Actor,
    user: &UserRecord,
    changes: &[NewChange],
) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO users (id, username, password_hash, role, created_at, disabled_at, token_version) \
         VALUES (@P1, @P2, @P3, @P4, @P5, NULL, @P6)",
    );
    q.bind(user.id);
    q.bind(user.username.as_str());
    q.bind(user.password_hash.as_str());
    q.bind(user.role.as_str());
    q.bind(ts(user.created_at));
    q.bind(user.token_version);
    conn.exec(q).await?;
    for site in &user.site_ids {
        let mut q = Query::new("INSERT INTO user_sites (user_id, site_id) VALUES (@P1, @P2)");
        q.bind(user.id);
        q.bind(*site);
        conn.exec(q).await?;
    }
    let event = AuditEvent {
        action: "user.create",
        target: Some(user.id.to_string()),
        site_id: user.site_ids.first().copied(),
    };
    audit(conn, actor, event, user.created_at).await?;
    append_changes(conn, changes).await
}

pub(super) async fn create(
    store: &MssqlStore,
    actor: &Actor,
    user: &UserRecord,
) -> StoreResult<()> {
    let changes = user_changes(user, user.created_at)?;
    let changes = changes.as_slice();
    store
        .transaction(|conn| Box::pin(create_user_tx(conn, actor, user, changes)))
        .await
}

/// Case-insensitive: `users.username` is declared with a case-insensitive collation, which
/// governs this comparison (and the unique constraint), so no LOWER() is needed, and the
/// index is still used.
pub(super) async fn by_username(
    store: &MssqlStore,
    username: &str,
) -> StoreResult<Option<UserRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE username = @P1; ",
                    "SELECT us.user_id, us.site_id FROM user_sites us ",
                    "JOIN users u ON u.id = us.user_id WHERE u.username = @P1;"
                ));
                q.bind(username);
                one_user(conn.results(q).await?)
            })
        })
        .await
}

pub(super) async fn list(
    store: &MssqlStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<UserRecord>> {
    let page = keyset_sql(
        user_columns!(),
        "users",
        None,
        0,
        &["username", "id"],
        false,
        after.is_some(),
    );
    // The page's site links come from the same page, selected again (`TOP` with `ORDER BY` is
    // allowed in a derived table).
    let sql = format!(
        "{page}; SELECT user_id, site_id FROM user_sites \
          WHERE user_id IN (SELECT id FROM ({page}) AS page);"
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                if let Some((username, id)) = after {
                    q.bind(username.as_str());
                    q.bind(*id);
                }
                let mut sets = conn.results(q).await?.into_iter();
                let rows = sets.next().unwrap_or_default();
                let links = sets.next().unwrap_or_default();
                let mut users = rows
                    .iter()
                    .map(user_from)
                    .collect::<StoreResult<Vec<_>>>()?;
                attach_sites(&mut users, &links)?;
                Ok(users)
            })
        })
        .await
}

pub(super) async fn get(store: &MssqlStore, id: Uuid) -> StoreResult<Option<UserRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE id = @P1; ",
                    "SELECT user_id, site_id FROM user_sites WHERE user_id = @P1;"
                ));
                q.bind(id);
                one_user(conn.results(q).await?)
            })
        })
        .await
}

pub(super) async fn disable(
    store: &MssqlStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    store
        .transaction(|conn| Box::pin(disable_user_tx(conn, actor, id, at)))
        .await
}

async fn update_user_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    expected_version: i64,
    changes: &UserChanges,
    at: DateTime<Utc>,
) -> StoreResult<UserRecord> {
    // Lock the row before reading it (the no-op UPDATE holds an exclusive row lock until
    // COMMIT, on Babelfish too), so a concurrent change waits and then sees this one's version.
    let mut q = Query::new(concat!(
        "DECLARE @found INT; ",
        "UPDATE users SET token_version = token_version WHERE id = @P1; ",
        "SET @found = @@ROWCOUNT; ",
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = @P1 AND @found = 1; ",
        "SELECT user_id, site_id FROM user_sites WHERE user_id = @P1 AND @found = 1;"
    ));
    q.bind(id);
    let current = one_user(conn.results(q).await?)?.ok_or(StoreError::NotFound)?;
    if current.token_version != expected_version {
        return Err(StoreError::PreconditionFailed);
    }
    let Some(updated) = changes.apply(&current, at) else {
        return Ok(current);
    };
    let mut q = Query::new(
        "UPDATE users SET role = @P2, password_hash = @P3, disabled_at = @P4, token_version = @P5 \
         WHERE id = @P1",
    );
    q.bind(id);
    q.bind(updated.role.as_str());
    q.bind(updated.password_hash.as_str());
    q.bind(updated.disabled_at.map(ts));
    q.bind(updated.token_version);
    conn.exec(q).await?;
    if updated.site_ids != current.site_ids {
        let mut q = Query::new("DELETE FROM user_sites WHERE user_id = @P1");
        q.bind(id);
        conn.exec(q).await?;
        for site in &updated.site_ids {
            let mut q = Query::new("INSERT INTO user_sites (user_id, site_id) VALUES (@P1, @P2)");
            q.bind(id);
            q.bind(*site);
            conn.exec(q).await?;
        }
    }
    let event = AuditEvent {
        action: "user.update",
        target: Some(id.to_string()),
        site_id: updated
            .site_ids
            .first()
            .or(current.site_ids.first())
            .copied(),
    };
    audit(conn, actor, event, at).await?;
    append_changes(conn, &user_change_changes(&current, &updated, at)?).await?;
    Ok(updated)
}

pub(super) async fn update(
    store: &MssqlStore,
    actor: &Actor,
    id: Uuid,
    expected_version: i64,
    changes: &UserChanges,
    at: DateTime<Utc>,
) -> StoreResult<UserRecord> {
    store
        .transaction(|conn| {
            Box::pin(update_user_tx(
                conn,
                actor,
                id,
                expected_version,
                changes,
                at,
            ))
        })
        .await
}

/// `None` for an unknown or disabled user.
pub(super) async fn token_version(store: &MssqlStore, id: Uuid) -> StoreResult<Option<i64>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT token_version FROM users WHERE id = @P1 AND disabled_at IS NULL",
                );
                q.bind(id);
                conn.row(q).await?.as_ref().map(|r| int(r, 0)).transpose()
            })
        })
        .await
}

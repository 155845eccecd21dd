//! Sites: creating, listing, reading and updating them; each write is audited and replicated
//! to the site itself.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{site_columns, site_from, to_json, ts};
use super::conn::Conn;
use super::pages::keyset_sql;
use crate::store::{Actor, AuditEvent, NameKey, SiteChanges, StoreError, StoreResult, site_etag};
use aero_shared::etag::IfMatch;
use aero_shared::wire::{Entity, SiteRecord};
use chrono::{DateTime, Utc};
use tiberius::Query;
use uuid::Uuid;

async fn update_site_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    changes: &SiteChanges,
    if_match: &IfMatch,
    at: DateTime<Utc>,
) -> StoreResult<SiteRecord> {
    // Lock the row before reading it: the no-op UPDATE takes an exclusive row lock held until
    // COMMIT on SQL Server and on Babelfish alike (Babelfish ignores table hints by default), so
    // concurrent updates of one site run one after the other and each compares against the
    // previous one's committed result. @@ROWCOUNT = 0: there is no such site.
    let mut q = Query::new(concat!(
        "DECLARE @found INT; ",
        "UPDATE sites SET name = name WHERE id = @P1; ",
        "SET @found = @@ROWCOUNT; ",
        "SELECT ",
        site_columns!(),
        " FROM sites WHERE id = @P1 AND @found = 1;"
    ));
    q.bind(id);
    let current = match conn.row(q).await? {
        Some(row) => site_from(&row)?,
        None => return Err(StoreError::NotFound),
    };
    if !if_match.admits(&site_etag(&current)) {
        return Err(StoreError::PreconditionFailed);
    }
    let Some(updated) = changes.apply(&current) else {
        // Nothing to write (also what a retry finds after a commit whose answer was lost).
        return Ok(current);
    };
    // Only the columns sent: a concurrent edit of another field is never written back.
    let networks = changes.allowed_networks.as_ref().map(to_json).transpose()?;
    let mut q = Query::new(
        "UPDATE sites SET name = COALESCE(@P2, name), timezone = COALESCE(@P3, timezone), \
         allowed_networks = COALESCE(@P4, allowed_networks) WHERE id = @P1",
    );
    q.bind(id);
    q.bind(changes.name.as_deref());
    q.bind(changes.timezone.as_deref());
    q.bind(networks);
    conn.exec(q).await?;
    let event = AuditEvent {
        action: "site.update",
        target: Some(id.to_string()),
        site_id: Some(id),
    };
    audit(conn, actor, event, at).await?;
    let change = NewChange::upsert(Entity::Site, id, Some(id), &updated, at)?;
    append_changes(conn, &[change]).await?;
    Ok(updated)
}

pub(super) async fn create(
    store: &MssqlStore,
    actor: &Actor,
    site: &SiteRecord,
) -> StoreResult<()> {
    let networks = to_json(&site.allowed_networks)?;
    let change = NewChange::upsert(Entity::Site, site.id, Some(site.id), site, site.created_at)?;
    let (networks, change) = (networks.as_str(), &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "INSERT INTO sites (id, name, timezone, allowed_networks, created_at) \
                     VALUES (@P1, @P2, @P3, @P4, @P5); \
                     INSERT INTO site_sync (site_id, acked_seq, pull_cursor) VALUES (@P1, 0, 0);",
                );
                q.bind(site.id);
                q.bind(site.name.as_str());
                q.bind(site.timezone.as_str());
                q.bind(networks);
                q.bind(ts(site.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "site.create",
                    target: Some(site.id.to_string()),
                    site_id: Some(site.id),
                };
                audit(conn, actor, event, site.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn list(
    store: &MssqlStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<SiteRecord>> {
    let sql = keyset_sql(
        site_columns!(),
        "sites",
        None,
        0,
        &["name", "id"],
        false,
        after.is_some(),
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                if let Some((name, id)) = after {
                    q.bind(name.as_str());
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(site_from).collect()
            })
        })
        .await
}

pub(super) async fn get(store: &MssqlStore, id: Uuid) -> StoreResult<Option<SiteRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    site_columns!(),
                    " FROM sites WHERE id = @P1"
                ));
                q.bind(id);
                conn.row(q).await?.as_ref().map(site_from).transpose()
            })
        })
        .await
}

pub(super) async fn update(
    store: &MssqlStore,
    actor: &Actor,
    id: Uuid,
    changes: &SiteChanges,
    if_match: &IfMatch,
    at: DateTime<Utc>,
) -> StoreResult<SiteRecord> {
    store
        .transaction(|conn| Box::pin(update_site_tx(conn, actor, id, changes, if_match, at)))
        .await
}

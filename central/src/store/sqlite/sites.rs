//! Sites: creating, listing, reading and updating them; each write is audited and replicated
//! to the site itself.

use super::SqliteStore;
use super::changelog::{append_change, audit};
use super::codec::{json, site_from_row, ts};
use super::conn::exec;
use super::pages::keyset_page;
use crate::store::{Actor, AuditEvent, NameKey, SiteChanges, StoreError, StoreResult, site_etag};
use aero_shared::etag::IfMatch;
use aero_shared::wire::{Entity, SiteRecord};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

pub(super) async fn create(
    store: &SqliteStore,
    actor: &Actor,
    site: &SiteRecord,
) -> StoreResult<()> {
    let (actor, site) = (actor.clone(), site.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO sites (id, name, timezone, allowed_networks, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![site.id, site.name, site.timezone, json(&site.allowed_networks)?, ts(site.created_at)],
        )?;
        exec(tx, "INSERT INTO site_sync (site_id) VALUES (?1)", [site.id])?;
        audit(tx, &actor, AuditEvent { action: "site.create", target: Some(site.id.to_string()), site_id: Some(site.id) }, site.created_at)?;
        append_change(tx, Entity::Site, site.id, Some(site.id), &site, site.created_at)
    })
    .await
}

pub(super) async fn list(
    store: &SqliteStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<SiteRecord>> {
    let after = after.cloned();
    store
        .read(move |c| {
            keyset_page(
                c,
                "SELECT id, name, timezone, allowed_networks, created_at FROM sites",
                None,
                &["name", "id"],
                after,
                limit,
                site_from_row,
            )
        })
        .await
}

pub(super) async fn get(store: &SqliteStore, id: Uuid) -> StoreResult<Option<SiteRecord>> {
    store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1",
                [id],
                site_from_row,
            )
            .optional()?)
        })
        .await
}

pub(super) async fn update(
    store: &SqliteStore,
    actor: &Actor,
    id: Uuid,
    changes: &SiteChanges,
    if_match: &IfMatch,
    at: DateTime<Utc>,
) -> StoreResult<SiteRecord> {
    let (actor, changes, if_match) = (actor.clone(), changes.clone(), if_match.clone());
    store
        .write(move |tx| {
            // The one writer connection serialises this read-compare-write against every other.
            let current = tx
                .query_row(
                    "SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1",
                    [id],
                    site_from_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if !if_match.admits(&site_etag(&current)) {
                return Err(StoreError::PreconditionFailed);
            }
            let Some(updated) = changes.apply(&current) else {
                return Ok(current);
            };
            // Only the columns sent: a concurrent edit of another field is never written back.
            let networks = changes.allowed_networks.as_ref().map(json).transpose()?;
            tx.execute(
                "UPDATE sites SET name = COALESCE(?2, name), timezone = COALESCE(?3, timezone),
                    allowed_networks = COALESCE(?4, allowed_networks) WHERE id = ?1",
                params![id, changes.name, changes.timezone, networks],
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "site.update",
                    target: Some(id.to_string()),
                    site_id: Some(id),
                },
                at,
            )?;
            append_change(tx, Entity::Site, id, Some(id), &updated, at)?;
            Ok(updated)
        })
        .await
}

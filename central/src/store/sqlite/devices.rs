//! Devices: creating them, looking them up (by id, site or key hash) and revoking them; each
//! write is audited and replicated to the device's site.

use super::SqliteStore;
use super::changelog::{append_change, audit};
use super::codec::{DEVICE_COLUMNS, device_from_row, json, time_key, ts};
use super::conn::exec;
use super::pages::keyset_page;
use crate::store::{Actor, AuditEvent, StoreResult, TimeKey};
use aero_shared::wire::{DeviceRecord, Entity};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

pub(super) fn insert_device(tx: &Transaction<'_>, d: &DeviceRecord) -> StoreResult<()> {
    exec(
        tx,
        "INSERT INTO devices (id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
        params![d.id, d.site_id, d.name, d.kind.as_str(), json(&d.allowed_networks)?, d.key_hash, ts(d.created_at)],
    )?;
    Ok(())
}

pub(super) async fn create(
    store: &SqliteStore,
    actor: &Actor,
    device: &DeviceRecord,
) -> StoreResult<()> {
    let (actor, device) = (actor.clone(), device.clone());
    store
        .write(move |tx| {
            insert_device(tx, &device)?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "device.create",
                    target: Some(device.id.to_string()),
                    site_id: Some(device.site_id),
                },
                device.created_at,
            )?;
            append_change(
                tx,
                Entity::Device,
                device.id,
                Some(device.site_id),
                &device,
                device.created_at,
            )
        })
        .await
}

pub(super) async fn get(store: &SqliteStore, id: Uuid) -> StoreResult<Option<DeviceRecord>> {
    store
        .read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                device_from_row,
            )
            .optional()?)
        })
        .await
}

pub(super) async fn list(
    store: &SqliteStore,
    site_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<DeviceRecord>> {
    let after = time_key(after);
    store
        .read(move |c| {
            keyset_page(
                c,
                &format!("SELECT {DEVICE_COLUMNS} FROM devices"),
                Some(("site_id = ?1", site_id)),
                &["created_at", "id"],
                after,
                limit,
                device_from_row,
            )
        })
        .await
}

pub(super) async fn by_key_hash(
    store: &SqliteStore,
    key_hash: &str,
) -> StoreResult<Option<DeviceRecord>> {
    let key_hash = key_hash.to_string();
    store
        .read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE key_hash = ?1 AND revoked_at IS NULL"
            ))?;
            Ok(stmt.query_row([key_hash], device_from_row).optional()?)
        })
        .await
}

pub(super) async fn revoke(
    store: &SqliteStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let actor = actor.clone();
    store
        .write(move |tx| {
            let changed = exec(
                tx,
                "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts(at)],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let device = tx.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                device_from_row,
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "device.revoke",
                    target: Some(id.to_string()),
                    site_id: Some(device.site_id),
                },
                at,
            )?;
            append_change(tx, Entity::Device, id, Some(device.site_id), &device, at)?;
            Ok(true)
        })
        .await
}

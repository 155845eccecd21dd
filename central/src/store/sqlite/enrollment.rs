//! Enrollment: one-time tokens, and redeeming one for an edge's device credential (which
//! fences the site's previous edge).

use super::SqliteStore;
use super::changelog::{append_change, audit};
use super::codec::{DEVICE_COLUMNS, device_from_row, site_from_row, ts};
use super::conn::exec;
use super::devices::insert_device;
use crate::store::{Actor, AuditEvent, EnrollmentToken, Redeemed, StoreResult};
use aero_shared::wire::{DeviceRecord, Entity};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

pub(super) async fn create_token(
    store: &SqliteStore,
    actor: &Actor,
    token: &EnrollmentToken,
) -> StoreResult<()> {
    let (actor, token) = (actor.clone(), token.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO enrollment_tokens (id, site_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.id, token.site_id, token.token_hash, ts(token.created_at), ts(token.expires_at)],
        )?;
        audit(tx, &actor, AuditEvent { action: "enrollment_token.create", target: Some(token.id.to_string()), site_id: Some(token.site_id) }, token.created_at)
    })
    .await
}

pub(super) async fn redeem(
    store: &SqliteStore,
    token_hash: &str,
    now: DateTime<Utc>,
    edge: &DeviceRecord,
) -> StoreResult<Redeemed> {
    let (token_hash, edge) = (token_hash.to_string(), edge.clone());
    store.write(move |tx| {
        let token: Option<(Uuid, Uuid)> = tx
            .query_row(
                "SELECT id, site_id FROM enrollment_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![token_hash, ts(now)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((token_id, site_id)) = token else {
            return Ok(Redeemed::Refused);
        };
        let device = DeviceRecord { site_id, ..edge.clone() };
        exec(tx, "UPDATE enrollment_tokens SET used_at = ?2, device_id = ?3 WHERE id = ?1", params![token_id, ts(now), device.id])?;
        let actor = Actor { kind: "edge", id: Some(device.id), name: device.name.clone(), ip: None, request_id: None };
        // A new enrollment fences the previous box: its credential stops working here, and
        // (replicated) at the venue.
        let fenced: Vec<DeviceRecord> = tx
            .prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE site_id = ?1 AND kind = 'edge' AND revoked_at IS NULL"))?
            .query_map([site_id], device_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        for old in fenced {
            exec(tx, "UPDATE devices SET revoked_at = ?2 WHERE id = ?1", params![old.id, ts(now)])?;
            let old = DeviceRecord { revoked_at: Some(now), ..old };
            audit(tx, &actor, AuditEvent { action: "edge.fence", target: Some(old.id.to_string()), site_id: Some(site_id) }, now)?;
            append_change(tx, Entity::Device, old.id, Some(site_id), &old, now)?;
        }
        insert_device(tx, &device)?;
        audit(tx, &actor, AuditEvent { action: "edge.enroll", target: Some(device.id.to_string()), site_id: Some(site_id) }, now)?;
        append_change(tx, Entity::Device, device.id, Some(site_id), &device, now)?;
        let site = tx.query_row("SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1", [site_id], site_from_row)?;
        let acked_seq = tx
            .query_row("SELECT acked_seq FROM site_sync WHERE site_id = ?1", [site_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok(Redeemed::Enrolled { site, acked_seq })
    })
    .await
}

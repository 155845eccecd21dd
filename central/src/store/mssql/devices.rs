//! Devices: creating them, looking them up (by id, site or key hash) and revoking them; each
//! write is audited and replicated to the device's site.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{device_columns, device_from, to_json, ts};
use super::conn::Conn;
use super::pages::keyset_sql;
use crate::store::{Actor, AuditEvent, StoreResult, TimeKey};
use aero_shared::wire::{DeviceRecord, Entity};
use chrono::{DateTime, Utc};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn insert_device(
    conn: &mut Conn,
    d: &DeviceRecord,
    networks: &str,
) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO devices (id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at) \
         VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, NULL)",
    );
    q.bind(d.id);
    q.bind(d.site_id);
    q.bind(d.name.as_str());
    q.bind(d.kind.as_str());
    q.bind(networks);
    q.bind(d.key_hash.as_str());
    q.bind(ts(d.created_at));
    conn.exec(q).await
}

/// Revokes a live device; returns its stored record, `revoked_at` included, when this call
/// revoked it (`None`: no such device, or it was already revoked).
pub(super) async fn revoke_row(
    conn: &mut Conn,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<Option<DeviceRecord>> {
    let mut q = Query::new(concat!(
        "DECLARE @revoked INT; ",
        "UPDATE devices SET revoked_at = @P2 WHERE id = @P1 AND revoked_at IS NULL; ",
        "SET @revoked = @@ROWCOUNT; ",
        "SELECT ",
        device_columns!(),
        " FROM devices WHERE id = @P1 AND @revoked = 1;"
    ));
    q.bind(id);
    q.bind(ts(at));
    conn.row(q).await?.as_ref().map(device_from).transpose()
}

async fn revoke_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    // The record as stored, `revoked_at` included: edges stop accepting the key when it lands.
    let Some(device) = revoke_row(conn, id, at).await? else {
        return Ok(false);
    };
    let event = AuditEvent {
        action: "device.revoke",
        target: Some(id.to_string()),
        site_id: Some(device.site_id),
    };
    audit(conn, actor, event, at).await?;
    let change = NewChange::upsert(Entity::Device, id, Some(device.site_id), &device, at)?;
    append_changes(conn, &[change]).await?;
    Ok(true)
}

pub(super) async fn create(
    store: &MssqlStore,
    actor: &Actor,
    device: &DeviceRecord,
) -> StoreResult<()> {
    let networks = to_json(&device.allowed_networks)?;
    let change = NewChange::upsert(
        Entity::Device,
        device.id,
        Some(device.site_id),
        device,
        device.created_at,
    )?;
    let (networks, change) = (networks.as_str(), &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                insert_device(conn, device, networks).await?;
                let event = AuditEvent {
                    action: "device.create",
                    target: Some(device.id.to_string()),
                    site_id: Some(device.site_id),
                };
                audit(conn, actor, event, device.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn get(store: &MssqlStore, id: Uuid) -> StoreResult<Option<DeviceRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM devices WHERE id = @P1"
                ));
                q.bind(id);
                conn.row(q).await?.as_ref().map(device_from).transpose()
            })
        })
        .await
}

pub(super) async fn list(
    store: &MssqlStore,
    site_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<DeviceRecord>> {
    let sql = keyset_sql(
        device_columns!(),
        "devices",
        Some("site_id = @P2"),
        1,
        &["created_at", "id"],
        false,
        after.is_some(),
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                q.bind(site_id);
                if let Some((at, id)) = after {
                    q.bind(ts(*at));
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(device_from).collect()
            })
        })
        .await
}

pub(super) async fn by_key_hash(
    store: &MssqlStore,
    key_hash: &str,
) -> StoreResult<Option<DeviceRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM devices WHERE key_hash = @P1 AND revoked_at IS NULL"
                ));
                q.bind(key_hash);
                conn.row(q).await?.as_ref().map(device_from).transpose()
            })
        })
        .await
}

pub(super) async fn revoke(
    store: &MssqlStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    store
        .transaction(|conn| Box::pin(revoke_tx(conn, actor, id, at)))
        .await
}

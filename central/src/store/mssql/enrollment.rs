//! Enrollment: one-time tokens, and redeeming one for an edge's device credential (which
//! fences the site's previous edge).

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{int, site_columns, site_from, to_json, ts, uuid};
use super::conn::Conn;
use super::devices::{insert_device, revoke_row};
use crate::store::{Actor, AuditEvent, EnrollmentToken, Redeemed, StoreError, StoreResult};
use aero_shared::auth::principal::DeviceKind;
use aero_shared::wire::{DeviceRecord, Entity};
use chrono::{DateTime, Utc};
use tiberius::Query;
use uuid::Uuid;

/// Revokes every live edge credential of the site (a new enrollment fences the previous box:
/// its key stops working here and, once the revocation replicates, at the venue). Returns the
/// change-log rows of the revoked devices, for the caller to append last.
async fn fence_previous_edges(
    conn: &mut Conn,
    site_id: Uuid,
    now: DateTime<Utc>,
    actor: &Actor,
) -> StoreResult<Vec<NewChange>> {
    // Enrollments of one site run one after the other on the site's row (the no-op UPDATE
    // locks it until COMMIT on SQL Server and Babelfish alike), so two tokens redeemed at once
    // cannot each miss the other's new edge and leave two live boxes.
    let mut q = Query::new(
        "UPDATE sites SET name = name WHERE id = @P1; \
         SELECT id FROM devices WHERE site_id = @P1 AND kind = @P2 AND revoked_at IS NULL;",
    );
    q.bind(site_id);
    q.bind(DeviceKind::Edge.as_str());
    let live: Vec<Uuid> = conn
        .rows(q)
        .await?
        .iter()
        .map(|row| uuid(row, 0))
        .collect::<StoreResult<_>>()?;
    let mut changes = Vec::new();
    for id in live {
        // `None`: revoked meanwhile by HQ, which audited and replicated it itself.
        let Some(old) = revoke_row(conn, id, now).await? else {
            continue;
        };
        let event = AuditEvent {
            action: "edge.fence",
            target: Some(old.id.to_string()),
            site_id: Some(site_id),
        };
        audit(conn, actor, event, now).await?;
        changes.push(NewChange::upsert(
            Entity::Device,
            old.id,
            Some(site_id),
            &old,
            now,
        )?);
    }
    Ok(changes)
}

async fn redeem_tx(
    conn: &mut Conn,
    token_hash: &str,
    now: DateTime<Utc>,
    edge: &DeviceRecord,
) -> StoreResult<Redeemed> {
    // Claim the token with the UPDATE itself: a concurrent redemption waits on the row lock
    // and then no longer matches `used_at IS NULL`, so a token is used exactly once.
    let mut q = Query::new(
        "DECLARE @claimed INT; \
         UPDATE enrollment_tokens SET used_at = @P2, device_id = @P3 \
          WHERE token_hash = @P1 AND used_at IS NULL AND expires_at > @P2; \
         SET @claimed = @@ROWCOUNT; \
         SELECT site_id FROM enrollment_tokens WHERE token_hash = @P1 AND @claimed = 1;",
    );
    q.bind(token_hash);
    q.bind(ts(now));
    q.bind(edge.id);
    let Some(claimed) = conn.row(q).await? else {
        return Ok(Redeemed::Refused);
    };
    let site_id = uuid(&claimed, 0)?;
    let device = DeviceRecord {
        site_id,
        ..edge.clone()
    };
    let actor = Actor {
        kind: "edge",
        id: Some(device.id),
        name: device.name.clone(),
        ip: None,
        request_id: None,
    };
    let mut changes = fence_previous_edges(conn, site_id, now, &actor).await?;
    insert_device(conn, &device, &to_json(&device.allowed_networks)?).await?;
    let event = AuditEvent {
        action: "edge.enroll",
        target: Some(device.id.to_string()),
        site_id: Some(site_id),
    };
    audit(conn, &actor, event, now).await?;

    let mut q = Query::new(concat!(
        "SELECT ",
        site_columns!(),
        " FROM sites WHERE id = @P1; ",
        "SELECT acked_seq FROM site_sync WHERE site_id = @P1;"
    ));
    q.bind(site_id);
    let mut sets = conn.results(q).await?.into_iter();
    let site_rows = sets.next().unwrap_or_default();
    let site = site_from(site_rows.first().ok_or(StoreError::NotFound)?)?;
    let acked_seq = match sets.next().unwrap_or_default().first() {
        Some(row) => int(row, 0)?,
        None => 0,
    };

    changes.push(NewChange::upsert(
        Entity::Device,
        device.id,
        Some(site_id),
        &device,
        now,
    )?);
    // Last, so the change-log lock is held only for these inserts and the commit.
    append_changes(conn, &changes).await?;
    Ok(Redeemed::Enrolled { site, acked_seq })
}

pub(super) async fn create_token(
    store: &MssqlStore,
    actor: &Actor,
    token: &EnrollmentToken,
) -> StoreResult<()> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "INSERT INTO enrollment_tokens (id, site_id, token_hash, created_at, expires_at, used_at, device_id) \
                     VALUES (@P1, @P2, @P3, @P4, @P5, NULL, NULL)",
                );
                q.bind(token.id);
                q.bind(token.site_id);
                q.bind(token.token_hash.as_str());
                q.bind(ts(token.created_at));
                q.bind(ts(token.expires_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "enrollment_token.create",
                    target: Some(token.id.to_string()),
                    site_id: Some(token.site_id),
                };
                audit(conn, actor, event, token.created_at).await
            })
        })
        .await
}

pub(super) async fn redeem(
    store: &MssqlStore,
    token_hash: &str,
    now: DateTime<Utc>,
    edge: &DeviceRecord,
) -> StoreResult<Redeemed> {
    store
        .transaction(|conn| Box::pin(redeem_tx(conn, token_hash, now, edge)))
        .await
}

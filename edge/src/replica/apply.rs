//! Applying central's change feed to the replica. Runs on the writer connection, inside the
//! writer's transaction, together with the cursor update, so a page is applied whole or not at all.

use super::ts;
use aero_shared::wire::{
    Change, ChangeOp, CustomerRecord, DeviceRecord, Entity, ProductRecord, SiteRecord, UserRecord,
    WaiverRecord,
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Applies one pulled page and stores `next_cursor`. Returns how many changes were applied
/// (skipped rows with pending local ops are not counted).
pub fn apply_page(
    conn: &Connection,
    changes: &[Change],
    next_cursor: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut applied = 0;
    for change in changes {
        // A row with un-acknowledged local ops is ours to send first: central's copy is older
        // than what the venue already did, and will come back through the feed after the push.
        let pending: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE entity = ?1 AND entity_id = ?2)",
            )?
            .query_row(params![change.entity.as_str(), change.entity_id], |r| {
                r.get(0)
            })?;
        if pending {
            continue;
        }
        match apply_change(conn, change) {
            Ok(()) => applied += 1,
            // A record this version cannot read must not stall the whole feed behind it.
            Err(err) => tracing::warn!(
                seq = change.seq,
                entity = change.entity.as_str(),
                entity_id = %change.entity_id,
                error = %err,
                "skipping a change the replica cannot apply"
            ),
        }
    }
    conn.execute(
        "UPDATE sync_state SET cursor = MAX(cursor, ?1), last_pull_at = ?2, online = 1, last_error = NULL WHERE id = 1",
        params![next_cursor, ts(now)],
    )?;
    Ok(applied)
}

fn table(entity: Entity) -> Option<&'static str> {
    match entity {
        Entity::Site => Some("sites"),
        Entity::Device => Some("devices"),
        Entity::User => Some("users"),
        Entity::Product => Some("products"),
        Entity::Customer => Some("customers"),
        Entity::Waiver => Some("waivers"),
        Entity::Game | Entity::Plug | Entity::PlugSchedule => None,
    }
}

fn apply_change(conn: &Connection, change: &Change) -> anyhow::Result<()> {
    let id = change.entity_id;
    if change.op == ChangeOp::Delete {
        match table(change.entity) {
            Some(table) => conn.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?,
            None => conn.execute(
                "DELETE FROM other_rows WHERE entity = ?1 AND entity_id = ?2",
                params![change.entity.as_str(), id],
            )?,
        };
        return Ok(());
    }
    let data = serde_json::to_string(&change.data)?;
    match change.entity {
        Entity::Site => {
            let site: SiteRecord = serde_json::from_value(change.data.clone())?;
            conn.execute(
                "INSERT INTO sites (id, allowed_networks, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET allowed_networks = excluded.allowed_networks, data = excluded.data",
                params![id, serde_json::to_string(&site.allowed_networks)?, data],
            )?;
        }
        Entity::Device => {
            let device: DeviceRecord = serde_json::from_value(change.data.clone())?;
            conn.execute(
                "INSERT INTO devices (id, site_id, key_hash, revoked_at, data) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET site_id = excluded.site_id, key_hash = excluded.key_hash,
                    revoked_at = excluded.revoked_at, data = excluded.data",
                params![id, device.site_id, device.key_hash, device.revoked_at.map(ts), data],
            )?;
        }
        Entity::User => {
            let user: UserRecord = serde_json::from_value(change.data.clone())?;
            conn.execute(
                "INSERT INTO users (id, username, disabled_at, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET username = excluded.username,
                    disabled_at = excluded.disabled_at, data = excluded.data",
                params![id, user.username, user.disabled_at.map(ts), data],
            )?;
        }
        Entity::Product => {
            let product: ProductRecord = serde_json::from_value(change.data.clone())?;
            conn.execute(
                "INSERT INTO products (id, sku, active, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, active = excluded.active, data = excluded.data",
                params![id, product.sku, product.active, data],
            )?;
        }
        Entity::Customer => {
            let customer: CustomerRecord = serde_json::from_value(change.data.clone())?;
            upsert_customer(conn, &customer)?;
        }
        Entity::Waiver => {
            let waiver: WaiverRecord = serde_json::from_value(change.data.clone())?;
            upsert_waiver(conn, &waiver)?;
        }
        Entity::Game | Entity::Plug | Entity::PlugSchedule => {
            conn.execute(
                "INSERT INTO other_rows (entity, entity_id, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (entity, entity_id) DO UPDATE SET data = excluded.data",
                params![change.entity.as_str(), id, data],
            )?;
        }
    }
    Ok(())
}

/// Writes a customer row; shared by local registration and the pull. The email column is
/// lowercased for case-insensitive lookup; the record keeps what was entered. An identical row
/// is left untouched: the pull brings every customer this venue registered back from central's
/// feed, and rewriting it would cost the single writer a page write for nothing.
pub fn upsert_customer(conn: &Connection, c: &CustomerRecord) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO customers (id, phone, email, home_site_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET phone = excluded.phone, email = excluded.email,
            home_site_id = excluded.home_site_id, data = excluded.data
         WHERE customers.data IS NOT excluded.data",
    )?
    .execute(params![c.id, c.phone, c.email.as_deref().map(str::to_lowercase), c.home_site_id, ts(c.created_at), serde_json::to_string(c)?],
    )?;
    Ok(())
}

/// Writes a waiver row; shared by local signing and the pull.
pub fn upsert_waiver(conn: &Connection, w: &WaiverRecord) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO waivers (id, customer_id, expires_at, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id,
            expires_at = excluded.expires_at, data = excluded.data
         WHERE waivers.data IS NOT excluded.data",
    )?
    .execute(params![
        w.id,
        w.customer_id,
        ts(w.expires_at),
        serde_json::to_string(w)?
    ])?;
    Ok(())
}

/// The allowed networks of a replicated site, `None` if the site is not (yet) replicated.
pub fn site_networks(
    conn: &Connection,
    site_id: Uuid,
) -> anyhow::Result<Option<Vec<ipnet::IpNet>>> {
    use rusqlite::OptionalExtension;
    let text: Option<String> = conn
        .query_row(
            "SELECT allowed_networks FROM sites WHERE id = ?1",
            [site_id],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| Ok(serde_json::from_str(&t)?)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::append_op;
    use crate::replica::{Replica, customer};
    use aero_shared::wire::OpKind;

    fn person(id: Uuid, site: Uuid, first: &str) -> CustomerRecord {
        CustomerRecord {
            id,
            first_name: first.into(),
            last_name: "Doe".into(),
            birth_date: chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("date"),
            phone: Some("+441234567".into()),
            email: Some("Jo@Example.com".into()),
            guardian_id: None,
            home_site_id: site,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn an_identical_customer_is_not_rewritten_but_a_changed_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let local = person(Uuid::now_v7(), site, "Local");
        upsert_customer(&conn, &local).expect("insert");
        assert_eq!(conn.changes(), 1);
        upsert_customer(&conn, &local).expect("echo");
        assert_eq!(
            conn.changes(),
            0,
            "the echo of an identical row writes nothing"
        );
        let edited = CustomerRecord {
            first_name: "Edited".into(),
            ..local.clone()
        };
        upsert_customer(&conn, &edited).expect("edit");
        assert_eq!(conn.changes(), 1);
        assert_eq!(customer(&conn, local.id).expect("read"), Some(edited));
    }

    fn change(seq: i64, c: &CustomerRecord) -> Change {
        Change {
            seq,
            entity: Entity::Customer,
            entity_id: c.id,
            op: ChangeOp::Upsert,
            site_id: None,
            data: serde_json::to_value(c).expect("json"),
        }
    }

    #[test]
    fn a_pull_never_overwrites_a_row_with_pending_local_ops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let now = Utc::now();
        let local = person(Uuid::now_v7(), site, "Local");
        upsert_customer(&conn, &local).expect("insert");
        append_op(
            &conn,
            Entity::Customer,
            local.id,
            OpKind::Upsert,
            &local,
            now,
        )
        .expect("op");
        let other = person(Uuid::now_v7(), Uuid::now_v7(), "Other");
        let stale = person(local.id, site, "Stale");
        let broken = Change {
            data: serde_json::json!({ "not": "a customer" }),
            ..change(12, &other)
        };

        let applied = apply_page(
            &conn,
            &[change(10, &stale), change(11, &other), broken],
            12,
            now,
        )
        .expect("apply");

        assert_eq!(applied, 1);
        assert_eq!(
            customer(&conn, local.id)
                .expect("read")
                .map(|c| c.first_name),
            Some("Local".into())
        );
        assert_eq!(
            customer(&conn, other.id)
                .expect("read")
                .map(|c| c.first_name),
            Some("Other".into())
        );
        let (cursor, online): (i64, bool) = conn
            .query_row("SELECT cursor, online FROM sync_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("state");
        assert_eq!((cursor, online), (12, true));
        // Email lookups are case-insensitive; the record keeps what was typed.
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM customers WHERE email = 'jo@example.com'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(found, 2);
    }

    #[test]
    fn a_replica_enrolled_for_another_site_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open"));
        assert!(Replica::open(dir.path(), Uuid::now_v7(), 1).is_err());
    }
}

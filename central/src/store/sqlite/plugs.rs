//! Plugs, their overrides and statuses, and their schedules (data only; the edge drives the
//! plugs), each creation audited and replicated to the plug's site.

use super::SqliteStore;
use super::changelog::{append_change, audit};
use super::codec::{enum_text, parse_enum, parse_json, parse_ts, time_key, ts};
use super::conn::exec;
use super::pages::{keyset_page, keyset_sql, push_name_key};
use super::venue;
use crate::store::{Actor, AuditEvent, NameKey, StoreResult, TimeKey};
use aero_shared::wire::{Entity, PlugOverrideRecord, PlugRecord, PlugStatusRecord, ScheduleRecord};
use rusqlite::{OptionalExtension, Row, ToSql, params, params_from_iter};
use uuid::Uuid;

fn plug_from_row(row: &Row<'_>) -> rusqlite::Result<PlugRecord> {
    Ok(PlugRecord {
        id: row.get(0)?,
        site_id: row.get(1)?,
        name: row.get(2)?,
        host: row.get(3)?,
        port: row.get(4)?,
        child_id: row.get(5)?,
        created_at: parse_ts(&row.get::<_, String>(6)?)?,
    })
}

pub(super) async fn create(
    store: &SqliteStore,
    actor: &Actor,
    plug: &PlugRecord,
) -> StoreResult<()> {
    let (actor, p) = (actor.clone(), plug.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO plugs (id, site_id, name, host, port, child_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![p.id, p.site_id, p.name, p.host, p.port, p.child_id, ts(p.created_at)],
        )?;
        audit(tx, &actor, AuditEvent { action: "plug.create", target: Some(p.id.to_string()), site_id: Some(p.site_id) }, p.created_at)?;
        append_change(tx, Entity::Plug, p.id, Some(p.site_id), &p, p.created_at)
    })
    .await
}

pub(super) async fn get(store: &SqliteStore, id: Uuid) -> StoreResult<Option<PlugRecord>> {
    store.read(move |c| {
        Ok(c.query_row("SELECT id, site_id, name, host, port, child_id, created_at FROM plugs WHERE id = ?1", [id], plug_from_row)
            .optional()?)
    })
    .await
}

pub(super) async fn list(
    store: &SqliteStore,
    site_id: Uuid,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<PlugRecord>> {
    let after = after.cloned();
    store
        .read(move |c| {
            keyset_page(
                c,
                "SELECT id, site_id, name, host, port, child_id, created_at FROM plugs",
                Some(("site_id = ?1", site_id)),
                &["name", "id"],
                after,
                limit,
                plug_from_row,
            )
        })
        .await
}

pub(super) async fn create_override(
    store: &SqliteStore,
    actor: &Actor,
    set: &PlugOverrideRecord,
) -> StoreResult<()> {
    let (actor, o) = (actor.clone(), set.clone());
    store
        .write(move |tx| {
            venue::plug_override(tx, &o, o.set_at)?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "plug_override.create",
                    target: Some(o.plug_id.to_string()),
                    site_id: Some(o.site_id),
                },
                o.set_at,
            )
        })
        .await
}

pub(super) async fn overrides(
    store: &SqliteStore,
    plug_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<PlugOverrideRecord>> {
    let after = time_key(after);
    store
        .read(move |c| {
            let sql = keyset_sql(
                "SELECT data FROM plug_overrides",
                Some("plug_id = ?1"),
                1,
                &["set_at", "id"],
                true,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&plug_id, &limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.map(|data| Ok(parse_json(&data?)?)).collect()
        })
        .await
}

pub(super) async fn statuses(
    store: &SqliteStore,
    site_id: Uuid,
) -> StoreResult<Vec<PlugStatusRecord>> {
    store
        .read(move |c| {
            let mut stmt = c.prepare_cached("SELECT data FROM plug_status WHERE site_id = ?1")?;
            let rows = stmt.query_map([site_id], |r| r.get::<_, String>(0))?;
            rows.map(|data| Ok(parse_json(&data?)?)).collect()
        })
        .await
}

pub(super) async fn create_schedule(
    store: &SqliteStore,
    actor: &Actor,
    schedule: &ScheduleRecord,
) -> StoreResult<()> {
    let (actor, s) = (actor.clone(), schedule.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO plug_schedules (id, plug_id, site_id, cron, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.id, s.plug_id, s.site_id, s.cron, enum_text(&s.state), ts(s.created_at)],
        )?;
        audit(tx, &actor, AuditEvent { action: "plug_schedule.create", target: Some(s.id.to_string()), site_id: Some(s.site_id) }, s.created_at)?;
        append_change(tx, Entity::PlugSchedule, s.id, Some(s.site_id), &s, s.created_at)
    })
    .await
}

pub(super) async fn list_schedules(
    store: &SqliteStore,
    plug_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<ScheduleRecord>> {
    let after = time_key(after);
    store
        .read(move |c| {
            keyset_page(
                c,
                "SELECT id, plug_id, site_id, cron, state, created_at FROM plug_schedules",
                Some(("plug_id = ?1", plug_id)),
                &["created_at", "id"],
                after,
                limit,
                |r| {
                    Ok(ScheduleRecord {
                        id: r.get(0)?,
                        plug_id: r.get(1)?,
                        site_id: r.get(2)?,
                        cron: r.get(3)?,
                        state: parse_enum(&r.get::<_, String>(4)?)?,
                        created_at: parse_ts(&r.get::<_, String>(5)?)?,
                    })
                },
            )
        })
        .await
}

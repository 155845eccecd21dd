//! Plugs and their schedules (data only; the edge drives the plugs), each creation audited
//! and replicated to the plug's site.

use super::changelog::{NewChange, append_changes, audit};
use super::codec::{
    enum_text, json_col, plug_columns, plug_from, schedule_columns, schedule_from, ts,
};
use super::pages::keyset_sql;
use super::{MssqlStore, venue};
use crate::store::{Actor, AuditEvent, NameKey, StoreResult, TimeKey};
use aero_shared::wire::{Entity, PlugOverrideRecord, PlugRecord, PlugStatusRecord, ScheduleRecord};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn create(
    store: &MssqlStore,
    actor: &Actor,
    plug: &PlugRecord,
) -> StoreResult<()> {
    let change = NewChange::upsert(
        Entity::Plug,
        plug.id,
        Some(plug.site_id),
        plug,
        plug.created_at,
    )?;
    let (p, change) = (plug, &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "INSERT INTO plugs (",
                    plug_columns!(),
                    ") VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)"
                ));
                q.bind(p.id);
                q.bind(p.site_id);
                q.bind(p.name.as_str());
                q.bind(p.host.as_str());
                q.bind(i32::from(p.port));
                q.bind(p.child_id.as_deref());
                q.bind(ts(p.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "plug.create",
                    target: Some(p.id.to_string()),
                    site_id: Some(p.site_id),
                };
                audit(conn, actor, event, p.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn get(store: &MssqlStore, id: Uuid) -> StoreResult<Option<PlugRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    plug_columns!(),
                    " FROM plugs WHERE id = @P1"
                ));
                q.bind(id);
                conn.row(q).await?.as_ref().map(plug_from).transpose()
            })
        })
        .await
}

pub(super) async fn list(
    store: &MssqlStore,
    site_id: Uuid,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<PlugRecord>> {
    let sql = keyset_sql(
        plug_columns!(),
        "plugs",
        Some("site_id = @P2"),
        1,
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
                q.bind(site_id);
                if let Some((name, id)) = after {
                    q.bind(name.as_str());
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(plug_from).collect()
            })
        })
        .await
}

/// An override set at HQ: stored (replicated to the plug's site) and audited in one
/// transaction.
pub(super) async fn create_override(
    store: &MssqlStore,
    actor: &Actor,
    set: &PlugOverrideRecord,
) -> StoreResult<()> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                if let Some(change) = venue::plug_override(conn, set, set.set_at).await? {
                    append_changes(conn, std::slice::from_ref(&change)).await?;
                }
                let event = AuditEvent {
                    action: "plug_override.create",
                    target: Some(set.plug_id.to_string()),
                    site_id: Some(set.site_id),
                };
                audit(conn, actor, event, set.set_at).await
            })
        })
        .await
}

pub(super) async fn overrides(
    store: &MssqlStore,
    plug_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<PlugOverrideRecord>> {
    let sql = keyset_sql(
        "data",
        "plug_overrides",
        Some("plug_id = @P2"),
        1,
        &["set_at", "id"],
        true,
        after.is_some(),
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                q.bind(plug_id);
                if let Some((at, id)) = after {
                    q.bind(ts(*at));
                    q.bind(*id);
                }
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| json_col(row, 0))
                    .collect()
            })
        })
        .await
}

pub(super) async fn statuses(
    store: &MssqlStore,
    site_id: Uuid,
) -> StoreResult<Vec<PlugStatusRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new("SELECT data FROM plug_status WHERE site_id = @P1");
                q.bind(site_id);
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| json_col(row, 0))
                    .collect()
            })
        })
        .await
}

pub(super) async fn create_schedule(
    store: &MssqlStore,
    actor: &Actor,
    schedule: &ScheduleRecord,
) -> StoreResult<()> {
    let state = enum_text(&schedule.state)?;
    let change = NewChange::upsert(
        Entity::PlugSchedule,
        schedule.id,
        Some(schedule.site_id),
        schedule,
        schedule.created_at,
    )?;
    let (s, state, change) = (schedule, state.as_str(), &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "INSERT INTO plug_schedules (",
                    schedule_columns!(),
                    ") VALUES (@P1, @P2, @P3, @P4, @P5, @P6)"
                ));
                q.bind(s.id);
                q.bind(s.plug_id);
                q.bind(s.site_id);
                q.bind(s.cron.as_str());
                q.bind(state);
                q.bind(ts(s.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "plug_schedule.create",
                    target: Some(s.id.to_string()),
                    site_id: Some(s.site_id),
                };
                audit(conn, actor, event, s.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn list_schedules(
    store: &MssqlStore,
    plug_id: Uuid,
    after: Option<&TimeKey>,
    limit: u32,
) -> StoreResult<Vec<ScheduleRecord>> {
    let sql = keyset_sql(
        schedule_columns!(),
        "plug_schedules",
        Some("plug_id = @P2"),
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
                q.bind(plug_id);
                if let Some((at, id)) = after {
                    q.bind(ts(*at));
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(schedule_from).collect()
            })
        })
        .await
}

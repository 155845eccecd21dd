//! Waiver texts: published as the next version, audited and replicated chain-wide in one
//! transaction, and listed newest first.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{int, text, time, ts, uuid};
use super::errors::VERSION_TAKEN;
use crate::store::waiver_texts::PUBLISHED;
use crate::store::{Actor, AuditEvent, StoreError, StoreResult, WaiverTextDraft};
use aero_shared::wire::{Entity, WaiverTextRecord};
use tiberius::{Query, Row};

fn from_row(row: &Row) -> StoreResult<WaiverTextRecord> {
    Ok(WaiverTextRecord {
        id: uuid(row, 0)?,
        version: int(row, 1)?,
        title: text(row, 2)?,
        body: text(row, 3)?,
        published_at: time(row, 4)?,
        published_by: text(row, 5)?,
    })
}

/// A publication that lost the race for a version runs again (the store's retry) and takes the
/// next one. The range lock below makes that race impossible on SQL Server; the unique
/// constraint covers an engine that does not honour the hint.
fn lost_the_version(err: StoreError) -> StoreError {
    match err {
        StoreError::Conflict(what) if what.starts_with(VERSION_TAKEN) => {
            StoreError::Transient(format!("concurrent publication: {what}"))
        }
        other => other,
    }
}

pub(super) async fn publish(
    store: &MssqlStore,
    actor: &Actor,
    draft: &WaiverTextDraft,
) -> StoreResult<WaiverTextRecord> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                // UPDLOCK + HOLDLOCK keep the range read for MAX locked until COMMIT, so a
                // concurrent publication waits here and then reads this one's version.
                let mut q = Query::new(
                    "DECLARE @version BIGINT; \
                     SELECT @version = COALESCE(MAX(version), 0) + 1 FROM waiver_texts WITH (UPDLOCK, HOLDLOCK); \
                     INSERT INTO waiver_texts (id, version, title, body, published_at, published_by) \
                     VALUES (@P1, @version, @P2, @P3, @P4, @P5); \
                     SELECT @version;",
                );
                q.bind(draft.id);
                q.bind(draft.title.as_str());
                q.bind(draft.body.as_str());
                q.bind(ts(draft.published_at));
                q.bind(draft.published_by.as_str());
                let row = conn.row(q).await.map_err(lost_the_version)?.ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!("publishing returned no version"))
                })?;
                let published = draft.published_as(int(&row, 0)?);
                let event = AuditEvent {
                    action: PUBLISHED,
                    target: Some(published.id.to_string()),
                    site_id: None,
                };
                audit(conn, actor, event, published.published_at).await?;
                let change = NewChange::upsert(
                    Entity::WaiverText,
                    published.id,
                    None,
                    &published,
                    published.published_at,
                )?;
                append_changes(conn, std::slice::from_ref(&change)).await?;
                Ok(published)
            })
        })
        .await
}

pub(super) async fn list(
    store: &MssqlStore,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<WaiverTextRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT TOP (@P1) id, version, title, body, published_at, published_by \
                       FROM waiver_texts WHERE version < @P2 ORDER BY version DESC",
                );
                q.bind(i64::from(limit));
                q.bind(before.unwrap_or(i64::MAX));
                conn.rows(q).await?.iter().map(from_row).collect()
            })
        })
        .await
}

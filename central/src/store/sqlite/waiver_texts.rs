//! Waiver texts: published as the next version, audited and replicated chain-wide in one
//! transaction, and listed newest first.

use super::changelog::{append_change, audit};
use super::codec::{parse_ts, ts};
use super::conn::exec;
use crate::store::waiver_texts::PUBLISHED;
use crate::store::{Actor, AuditEvent, StoreResult, WaiverTextDraft};
use aero_shared::wire::{Entity, WaiverTextRecord};
use rusqlite::{Connection, Row, Transaction, params};

const COLUMNS: &str = "id, version, title, body, published_at, published_by";

fn from_row(row: &Row<'_>) -> rusqlite::Result<WaiverTextRecord> {
    Ok(WaiverTextRecord {
        id: row.get(0)?,
        version: row.get(1)?,
        title: row.get(2)?,
        body: row.get(3)?,
        published_at: parse_ts(&row.get::<_, String>(4)?)?,
        published_by: row.get(5)?,
    })
}

/// The next version is read and taken in the same write transaction, on the store's one writer
/// connection (an IMMEDIATE transaction, so another process holding the file waits too):
/// nothing can publish in between.
pub(super) fn publish(
    tx: &Transaction<'_>,
    actor: &Actor,
    draft: &WaiverTextDraft,
) -> StoreResult<WaiverTextRecord> {
    let version: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM waiver_texts",
        [],
        |r| r.get(0),
    )?;
    let text = draft.published_as(version);
    exec(
        tx,
        &format!("INSERT INTO waiver_texts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            text.id,
            text.version,
            text.title,
            text.body,
            ts(text.published_at),
            text.published_by
        ],
    )?;
    audit(
        tx,
        actor,
        AuditEvent {
            action: PUBLISHED,
            target: Some(text.id.to_string()),
            site_id: None,
        },
        text.published_at,
    )?;
    append_change(
        tx,
        Entity::WaiverText,
        text.id,
        None,
        &text,
        text.published_at,
    )?;
    Ok(text)
}

pub(super) fn list(
    c: &Connection,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<WaiverTextRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM waiver_texts WHERE version < ?1 ORDER BY version DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

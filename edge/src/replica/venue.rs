//! The venue's own records in the replica: orders, refunds, ledger entries, check-ins and
//! scores. Each is written once (by the route that took it, or by the pull when central sends
//! it: another venue's ledger entry, or this venue's own history on a rebuilt box) and never
//! edited, so writing a record the replica already holds changes nothing.

use super::ts;
use aero_shared::wire::{
    CheckinRecord, GameRecord, LedgerEntry, OrderRecord, RefundRecord, ScoreRecord,
};
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Writes an order and its lines. Returns false if the replica already held it.
pub fn insert_order(conn: &Connection, order: &OrderRecord) -> anyhow::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO orders (id, customer_id, total_cents, created_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            order.id,
            order.customer_id,
            order.total_cents,
            ts(order.created_at),
            serde_json::to_string(order)?
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    let mut line_stmt = conn.prepare_cached(
        "INSERT INTO order_lines (order_id, line_no, product_id, customer_id, kind, quantity, total_cents, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (line_no, line) in order.lines.iter().enumerate() {
        line_stmt.execute(params![
            order.id,
            line_no as i64,
            line.product_id,
            order.customer_id,
            line.kind.as_str(),
            line.quantity,
            line.total_cents,
            ts(order.created_at)
        ])?;
    }
    Ok(true)
}

/// Writes a refund. Returns false if the replica already held it.
pub fn insert_refund(conn: &Connection, refund: &RefundRecord) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO refunds (id, order_id, total_cents, created_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            refund.id,
            refund.order_id,
            refund.total_cents,
            ts(refund.created_at),
            serde_json::to_string(refund)?
        ])?
        == 1)
}

/// Appends a ledger entry. Returns false if the replica already held it.
pub fn insert_ledger_entry(conn: &Connection, entry: &LedgerEntry) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO ledger (id, customer_id, account, delta, created_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            entry.id,
            entry.customer_id,
            entry.account.as_str(),
            entry.delta,
            ts(entry.created_at),
            serde_json::to_string(entry)?
        ])?
        == 1)
}

/// Writes a check-in. Returns false if the replica already held it.
pub fn insert_checkin(conn: &Connection, checkin: &CheckinRecord) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO checkins (id, customer_id, wristband, product_id, order_id, starts_at, ends_at, created_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            checkin.id,
            checkin.customer_id,
            checkin.wristband,
            checkin.product_id,
            checkin.order_id,
            ts(checkin.starts_at),
            ts(checkin.ends_at),
            ts(checkin.created_at),
            serde_json::to_string(checkin)?
        ])?
        == 1)
}

/// Writes a score. Returns false if the replica already held it.
pub fn insert_score(conn: &Connection, score: &ScoreRecord) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO scores (id, game_id, customer_id, score, created_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            score.id,
            score.game_id,
            score.customer_id,
            score.score,
            ts(score.created_at),
            serde_json::to_string(score)?
        ])?
        == 1)
}

/// Writes a game defined at HQ (games are edited there, so a newer row replaces the old).
pub fn upsert_game(conn: &Connection, game: &GameRecord) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO games (id, data) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET data = excluded.data WHERE games.data IS NOT excluded.data",
    )?
    .execute(params![game.id, serde_json::to_string(game)?])?;
    Ok(())
}

/// Whether the replica holds a venue record (all of them immutable) under this id.
pub fn holds(conn: &Connection, table: &str, id: Uuid) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"
        ))?
        .query_row([id], |r| r.get(0))?)
}

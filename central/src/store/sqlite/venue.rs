//! Venue records pushed by edges (orders with their lines, refunds, ledger entries, check-ins,
//! scores): storing each once and publishing it to the change feed, and loading what the push
//! rules check a batch's records against.

use super::changelog::append_change;
use super::codec::{json, parse_json, ts};
use super::conn::exec;
use crate::store::StoreResult;
use crate::store::push_rules::{Known, Lookup};
use aero_shared::wire::{
    CheckinRecord, Entity, LedgerEntry, OrderRecord, PlugOverrideRecord, RefundRecord, ScoreRecord,
};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use uuid::Uuid;

// Each record is stored once. The rules refused a held id with other content, so an id already
// held is the same record again: nothing is written or published. Ledger entries replicate
// chain-wide (every venue sees every balance); orders, refunds, check-ins and scores to their
// own site, so a rebuilt venue box gets its history back.

pub(super) fn order(tx: &Transaction<'_>, o: &OrderRecord, at: DateTime<Utc>) -> StoreResult<()> {
    if insert_order(tx, o)? {
        append_change(tx, Entity::Order, o.id, Some(o.site_id), o, at)?;
    }
    Ok(())
}

pub(super) fn refund(tx: &Transaction<'_>, r: &RefundRecord, at: DateTime<Utc>) -> StoreResult<()> {
    let inserted = exec(
        tx,
        "INSERT INTO refunds (id, order_id, site_id, total_cents, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        params![
            r.id,
            r.order_id,
            r.site_id,
            r.total_cents,
            ts(r.created_at),
            json(r)?
        ],
    )?;
    if inserted == 1 {
        append_change(tx, Entity::Refund, r.id, Some(r.site_id), r, at)?;
    }
    Ok(())
}

pub(super) fn ledger_entry(
    tx: &Transaction<'_>,
    e: &LedgerEntry,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let inserted = exec(
        tx,
        "INSERT INTO ledger_entries (id, customer_id, account, delta, site_id, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        params![
            e.id,
            e.customer_id,
            e.account.as_str(),
            e.delta,
            e.site_id,
            ts(e.created_at),
            json(e)?
        ],
    )?;
    if inserted == 1 {
        append_change(tx, Entity::LedgerEntry, e.id, None, e, at)?;
    }
    Ok(())
}

pub(super) fn checkin(
    tx: &Transaction<'_>,
    c: &CheckinRecord,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let inserted = exec(
        tx,
        "INSERT INTO checkins (id, site_id, customer_id, product_id, wristband, starts_at, ends_at, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        params![
            c.id,
            c.site_id,
            c.customer_id,
            c.product_id,
            c.wristband,
            ts(c.starts_at),
            ts(c.ends_at),
            ts(c.created_at),
            json(c)?
        ],
    )?;
    if inserted == 1 {
        append_change(tx, Entity::Checkin, c.id, Some(c.site_id), c, at)?;
    }
    Ok(())
}

pub(super) fn plug_override(
    tx: &Transaction<'_>,
    o: &PlugOverrideRecord,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let inserted = exec(
        tx,
        "INSERT INTO plug_overrides (id, plug_id, site_id, set_at, ends_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        params![
            o.id,
            o.plug_id,
            o.site_id,
            ts(o.set_at),
            ts(o.until),
            json(o)?
        ],
    )?;
    if inserted == 1 {
        append_change(tx, Entity::PlugOverride, o.id, Some(o.site_id), o, at)?;
    }
    Ok(())
}

pub(super) fn score(tx: &Transaction<'_>, s: &ScoreRecord, at: DateTime<Utc>) -> StoreResult<()> {
    let inserted = exec(
        tx,
        "INSERT INTO scores (id, site_id, game_id, customer_id, score, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        params![
            s.id,
            s.site_id,
            s.game_id,
            s.customer_id,
            s.score,
            ts(s.created_at),
            json(s)?
        ],
    )?;
    if inserted == 1 {
        append_change(tx, Entity::Score, s.id, Some(s.site_id), s, at)?;
    }
    Ok(())
}

/// Writes an order and its lines; false if the order was already held.
fn insert_order(tx: &Transaction<'_>, o: &OrderRecord) -> StoreResult<bool> {
    let inserted = exec(
        tx,
        "INSERT INTO orders (id, site_id, customer_id, total_cents, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        params![
            o.id,
            o.site_id,
            o.customer_id,
            o.total_cents,
            ts(o.created_at),
            json(o)?
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    for (line_no, line) in o.lines.iter().enumerate() {
        exec(
            tx,
            "INSERT INTO order_lines (order_id, line_no, site_id, product_id, sku, name, quantity, total_cents, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                o.id,
                i64::try_from(line_no).unwrap_or(i64::MAX),
                o.site_id,
                line.product_id,
                line.sku,
                line.name,
                line.quantity,
                line.total_cents,
                ts(o.created_at)
            ],
        )?;
    }
    Ok(true)
}

/// Fills in what central holds of the batch's games and venue records (see [`Lookup`]);
/// customers are loaded with the held ops.
pub(super) fn load_known(
    tx: &Transaction<'_>,
    lookup: &Lookup,
    known: &mut Known,
) -> StoreResult<()> {
    let mut game = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM games WHERE id = ?1)")?;
    for id in &lookup.game_ids {
        if game.query_row([id], |r| r.get::<_, bool>(0))? {
            known.games.insert(*id);
        }
    }
    by_id(
        tx,
        "SELECT data FROM orders WHERE id = ?1",
        &lookup.order_ids,
        &mut known.orders,
    )?;
    by_id(
        tx,
        "SELECT data FROM refunds WHERE id = ?1",
        &lookup.refund_ids,
        &mut known.refunds,
    )?;
    let mut refunds_of = tx.prepare_cached("SELECT data FROM refunds WHERE order_id = ?1")?;
    for order_id in &lookup.refunded_order_ids {
        for data in refunds_of.query_map([order_id], |r| r.get::<_, String>(0))? {
            let refund: RefundRecord = parse_json(&data?)?;
            known.refunds.insert(refund.id, refund);
        }
    }
    by_id(
        tx,
        "SELECT data FROM ledger_entries WHERE id = ?1",
        &lookup.ledger_entry_ids,
        &mut known.ledger_entries,
    )?;
    by_id(
        tx,
        "SELECT data FROM checkins WHERE id = ?1",
        &lookup.checkin_ids,
        &mut known.checkins,
    )?;
    by_id(
        tx,
        "SELECT data FROM scores WHERE id = ?1",
        &lookup.score_ids,
        &mut known.scores,
    )?;
    by_id(
        tx,
        "SELECT data FROM plug_overrides WHERE id = ?1",
        &lookup.plug_override_ids,
        &mut known.plug_overrides,
    )?;
    let mut plug = tx.prepare_cached("SELECT site_id FROM plugs WHERE id = ?1")?;
    for id in &lookup.plug_ids {
        if let Some(site) = plug.query_row([id], |r| r.get(0)).optional()? {
            known.plugs.insert(*id, site);
        }
    }
    Ok(())
}

/// Loads the records `sql` finds (one per id, from its `data`) into `into`.
fn by_id<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    sql: &str,
    ids: &[Uuid],
    into: &mut HashMap<Uuid, T>,
) -> StoreResult<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    for id in ids {
        let data: Option<String> = stmt.query_row([id], |r| r.get(0)).optional()?;
        if let Some(data) = data {
            into.insert(*id, parse_json(&data)?);
        }
    }
    Ok(())
}

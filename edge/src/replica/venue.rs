//! The venue's own records in the replica: orders, refunds, ledger entries, check-ins and
//! scores. Each is written once (by the route that took it, or by the pull when central sends
//! it: another venue's ledger entry, or this venue's own history on a rebuilt box) and never
//! edited, so writing a record the replica already holds changes nothing.

use super::{parse_ts, ts};
use aero_shared::wire::{
    Account, CheckinRecord, GameRecord, LedgerEntry, OrderRecord, ProductRecord, RefundRecord,
    ScoreRecord, SiteRecord,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
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

/// A customer's balances: each the sum of its account's ledger entries, chain-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Balances {
    pub stored_value: i64,
    pub arcade_credits: i64,
    pub visits: i64,
}

impl Balances {
    pub fn get(&self, account: Account) -> i64 {
        match account {
            Account::StoredValue => self.stored_value,
            Account::ArcadeCredits => self.arcade_credits,
            Account::Visits => self.visits,
        }
    }
}

/// The sum of one account's entries (0 without any).
pub fn balance(conn: &Connection, customer_id: Uuid, account: Account) -> anyhow::Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE customer_id = ?1 AND account = ?2",
        )?
        .query_row(params![customer_id, account.as_str()], |r| r.get(0))?)
}

pub fn balances(conn: &Connection, customer_id: Uuid) -> anyhow::Result<Balances> {
    let mut out = Balances::default();
    let mut stmt = conn.prepare_cached(
        "SELECT account, SUM(delta) FROM ledger WHERE customer_id = ?1 GROUP BY account",
    )?;
    let mut rows = stmt.query([customer_id])?;
    while let Some(row) = rows.next()? {
        let sum: i64 = row.get(1)?;
        match Account::parse(row.get_ref(0)?.as_str()?) {
            Some(Account::StoredValue) => out.stored_value = sum,
            Some(Account::ArcadeCredits) => out.arcade_credits = sum,
            Some(Account::Visits) => out.visits = sum,
            None => {}
        }
    }
    Ok(out)
}

/// A jump session running now, as the kiosk lookup shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveSession {
    pub id: Uuid,
    pub wristband: String,
    pub ends_at: DateTime<Utc>,
}

/// The customer's sessions that end after `now`, soonest end first.
pub fn active_sessions_of(
    conn: &Connection,
    customer_id: Uuid,
    now: &str,
) -> anyhow::Result<Vec<ActiveSession>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, wristband, ends_at FROM checkins WHERE customer_id = ?1 AND ends_at > ?2
         ORDER BY ends_at, id",
    )?;
    let rows = stmt.query_map(params![customer_id, now], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
    })?;
    rows.map(|row| {
        let (id, wristband, ends_at) = row?;
        Ok(ActiveSession {
            id,
            wristband,
            ends_at: parse_ts(&ends_at)?,
        })
    })
    .collect()
}

/// Every session of the venue that ends after `now`, soonest end first.
pub fn active_checkins(
    conn: &Connection,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<CheckinRecord>> {
    let mut stmt =
        conn.prepare_cached("SELECT data FROM checkins WHERE ends_at > ?1 ORDER BY ends_at, id")?;
    let rows = stmt.query_map([ts(now)], |r| r.get::<_, String>(0))?;
    rows.map(|data| Ok(serde_json::from_str(&data?)?)).collect()
}

/// The session a wristband is in now, if any.
pub fn session_of_wristband(
    conn: &Connection,
    wristband: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Uuid>> {
    Ok(conn
        .prepare_cached("SELECT id FROM checkins WHERE wristband = ?1 AND ends_at > ?2 LIMIT 1")?
        .query_row(params![wristband, ts(now)], |r| r.get(0))
        .optional()?)
}

/// Whether a waiver of this customer is valid at `now`.
pub fn has_valid_waiver(conn: &Connection, customer_id: Uuid, now: &str) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM waivers WHERE customer_id = ?1 AND expires_at > ?2)",
        )?
        .query_row(params![customer_id, now], |r| r.get(0))?)
}

/// The oldest order of the customer holding an unused pass of `product_id`: orders fully
/// refunded give none, and each check-in that used a pass names its order. A free order (total
/// 0) cannot be refunded, so its passes always count.
///
/// The orders are walked oldest first and the walk stops at the first with a pass left, so a
/// check-in costs the customer's orders already used up, not their whole history.
pub fn order_with_unused_pass(
    conn: &Connection,
    customer_id: Uuid,
    product_id: Uuid,
) -> anyhow::Result<Option<Uuid>> {
    let mut orders = conn.prepare_cached(
        "SELECT l.order_id, SUM(l.quantity), o.total_cents
           FROM order_lines l JOIN orders o ON o.id = l.order_id
          WHERE l.customer_id = ?1 AND l.product_id = ?2
          GROUP BY l.order_id
          ORDER BY MIN(l.created_at), l.order_id",
    )?;
    let mut refunded = conn
        .prepare_cached("SELECT COALESCE(SUM(total_cents), 0) FROM refunds WHERE order_id = ?1")?;
    let mut used = conn
        .prepare_cached("SELECT COUNT(*) FROM checkins WHERE order_id = ?1 AND product_id = ?2")?;
    let mut rows = orders.query(params![customer_id, product_id])?;
    while let Some(row) = rows.next()? {
        let (order_id, passes, total): (Uuid, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if total > 0 && refunded.query_row([order_id], |r| r.get::<_, i64>(0))? >= total {
            continue;
        }
        if used.query_row(params![order_id, product_id], |r| r.get::<_, i64>(0))? < passes {
            return Ok(Some(order_id));
        }
    }
    Ok(None)
}

pub fn product(conn: &Connection, id: Uuid) -> anyhow::Result<Option<ProductRecord>> {
    let data: Option<String> = conn
        .prepare_cached("SELECT data FROM products WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

pub fn order(conn: &Connection, id: Uuid) -> anyhow::Result<Option<OrderRecord>> {
    let data: Option<String> = conn
        .prepare_cached("SELECT data FROM orders WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

/// The refunds taken from an order, oldest first.
pub fn refunds_of(conn: &Connection, order_id: Uuid) -> anyhow::Result<Vec<RefundRecord>> {
    let mut stmt = conn
        .prepare_cached("SELECT data FROM refunds WHERE order_id = ?1 ORDER BY created_at, id")?;
    let rows = stmt.query_map([order_id], |r| r.get::<_, String>(0))?;
    rows.map(|data| Ok(serde_json::from_str(&data?)?)).collect()
}

/// The orders of `site_id` created in `[from, to)`, oldest first.
pub fn orders_between(
    conn: &Connection,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<OrderRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM orders WHERE created_at >= ?1 AND created_at < ?2
         ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map(params![ts(from), ts(to)], |r| r.get::<_, String>(0))?;
    let mut orders = Vec::new();
    for data in rows {
        let order: OrderRecord = serde_json::from_str(&data?)?;
        // The replica holds this venue's history; the check keeps a report to its own site.
        if order.site_id == site_id {
            orders.push(order);
        }
    }
    Ok(orders)
}

/// A site's timezone from the replicated `sites` row.
pub fn site_timezone(conn: &Connection, site_id: Uuid) -> anyhow::Result<Option<Tz>> {
    let data: Option<String> = conn
        .prepare_cached("SELECT data FROM sites WHERE id = ?1")?
        .query_row([site_id], |r| r.get(0))
        .optional()?;
    let Some(data) = data else {
        return Ok(None);
    };
    let site: SiteRecord = serde_json::from_str(&data)?;
    let tz = site.timezone.parse().map_err(|_| {
        anyhow::anyhow!("site {site_id} has an unknown timezone {:?}", site.timezone)
    })?;
    Ok(Some(tz))
}

//! The venue's own records in the replica: orders, refunds, ledger entries, check-ins and
//! scores. Each is written once (by the route that took it, or by the pull when central sends
//! it: another venue's ledger entry, or this venue's own history on a rebuilt box) and never
//! edited, so writing a record the replica already holds changes nothing.

use super::{parse_ts, ts};
use aero_shared::ledger::{Movement, usable_at};
use aero_shared::page::TimeKey;
use aero_shared::wire::{
    Account, CheckinRecord, Entity, GameRecord, LedgerEntry, OpKind, OrderRecord, ProductKind,
    ProductRecord, RefundRecord, ScoreRecord, SiteRecord,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use uuid::Uuid;

/// A record the venue takes once and never edits: an order, refund, ledger entry, check-in or
/// score. Each is written to the replica and queued for central in one transaction (see
/// [`crate::outbox::write_and_queue`]), from one serialization of the record.
pub trait VenueRecord: Serialize {
    /// The entity its outbox op names.
    const ENTITY: Entity;
    /// The kind of its outbox op.
    const KIND: OpKind;
    fn id(&self) -> Uuid;
    /// Writes the record, with `data` its JSON. Returns false if the replica already held it.
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool>;
}

/// Writes a venue record. Returns false if the replica already held it.
pub fn insert<R: VenueRecord>(conn: &Connection, record: &R) -> anyhow::Result<bool> {
    record.insert_json(conn, &serde_json::to_string(record)?)
}

impl VenueRecord for OrderRecord {
    const ENTITY: Entity = Entity::Order;
    const KIND: OpKind = OpKind::Upsert;
    fn id(&self) -> Uuid {
        self.id
    }
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool> {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO orders (id, customer_id, total_cents, created_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                self.id,
                self.customer_id,
                self.total_cents,
                ts(self.created_at),
                data
            ])?;
        if inserted == 0 {
            return Ok(false);
        }
        if let Some(customer_id) = self.customer_id {
            let mut passes = conn.prepare_cached(
                "INSERT INTO passes_left (order_id, product_id, customer_id, remaining, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (order_id, product_id) DO UPDATE SET remaining = remaining + excluded.remaining",
            )?;
            for line in self.lines.iter().filter(|l| l.kind == ProductKind::Pass) {
                passes.execute(params![
                    self.id,
                    line.product_id,
                    customer_id,
                    line.quantity,
                    ts(self.created_at)
                ])?;
            }
        }
        Ok(true)
    }
}

impl VenueRecord for RefundRecord {
    const ENTITY: Entity = Entity::Refund;
    const KIND: OpKind = OpKind::Upsert;
    fn id(&self) -> Uuid {
        self.id
    }
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool> {
        let inserted = insert_refund_row(conn, self, data)?;
        if inserted {
            conn.prepare_cached(
                "UPDATE passes_left SET remaining = 0
                  WHERE order_id = ?1 AND remaining > 0 AND EXISTS (
                        SELECT 1 FROM orders o WHERE o.id = ?1 AND o.total_cents > 0
                           AND o.total_cents <= (SELECT SUM(total_cents) FROM refunds WHERE order_id = ?1))",
            )?
            .execute([self.order_id])?;
        }
        Ok(inserted)
    }
}

impl VenueRecord for LedgerEntry {
    const ENTITY: Entity = Entity::LedgerEntry;
    const KIND: OpKind = OpKind::LedgerAppend;
    fn id(&self) -> Uuid {
        self.id
    }
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool> {
        Ok(conn
            .prepare_cached(
                "INSERT INTO ledger (id, customer_id, account, delta, created_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                self.id,
                self.customer_id,
                self.account.as_str(),
                self.delta,
                ts(self.created_at),
                data
            ])?
            == 1)
    }
}

impl VenueRecord for CheckinRecord {
    const ENTITY: Entity = Entity::Checkin;
    const KIND: OpKind = OpKind::Upsert;
    fn id(&self) -> Uuid {
        self.id
    }
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool> {
        let inserted = insert_checkin_row(conn, self, data)?;
        if let (true, Some(order_id)) = (inserted, self.order_id) {
            conn.prepare_cached(
                "UPDATE passes_left SET remaining = remaining - 1
                  WHERE order_id = ?1 AND product_id = ?2 AND remaining > 0",
            )?
            .execute(params![order_id, self.product_id])?;
        }
        Ok(inserted)
    }
}

impl VenueRecord for ScoreRecord {
    const ENTITY: Entity = Entity::Score;
    const KIND: OpKind = OpKind::Upsert;
    fn id(&self) -> Uuid {
        self.id
    }
    fn insert_json(&self, conn: &Connection, data: &str) -> anyhow::Result<bool> {
        Ok(conn
            .prepare_cached(
                "INSERT INTO scores (id, game_id, customer_id, score, created_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                self.id,
                self.game_id,
                self.customer_id,
                self.score,
                ts(self.created_at),
                data
            ])?
            == 1)
    }
}

/// Writes an order (its lines live in its record). Returns false if the replica already held it.
pub fn insert_order(conn: &Connection, order: &OrderRecord) -> anyhow::Result<bool> {
    insert(conn, order)
}

/// Writes a refund. Returns false if the replica already held it. A refund that completes the
/// refund of a (paid) order voids the passes it left.
pub fn insert_refund(conn: &Connection, refund: &RefundRecord) -> anyhow::Result<bool> {
    insert(conn, refund)
}

fn insert_refund_row(conn: &Connection, refund: &RefundRecord, data: &str) -> anyhow::Result<bool> {
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
            data
        ])?
        == 1)
}

/// Appends a ledger entry. Returns false if the replica already held it.
pub fn insert_ledger_entry(conn: &Connection, entry: &LedgerEntry) -> anyhow::Result<bool> {
    insert(conn, entry)
}

/// Writes a check-in. Returns false if the replica already held it.
/// A check-in that used a pass spends one of its order's.
pub fn insert_checkin(conn: &Connection, checkin: &CheckinRecord) -> anyhow::Result<bool> {
    insert(conn, checkin)
}

fn insert_checkin_row(
    conn: &Connection,
    checkin: &CheckinRecord,
    data: &str,
) -> anyhow::Result<bool> {
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
            data
        ])?
        == 1)
}

/// Writes a score. Returns false if the replica already held it.
pub fn insert_score(conn: &Connection, score: &ScoreRecord) -> anyhow::Result<bool> {
    insert(conn, score)
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

/// Whether `table` of the replica holds a row under this id: a point read on its key, nothing
/// decoded. For a venue record (all of them immutable), holding the id is holding the record.
pub fn holds(conn: &Connection, table: &str, id: Uuid) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1)"
        ))?
        .query_row([id], |r| r.get(0))?)
}

/// A customer's balances: each the sum of its account's ledger entries, chain-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// What the customer can use of one account at `now` (0 without any entries): the sum of its
/// entries, except that a membership's visits lapse (see `aero_shared::ledger`).
pub fn balance(
    conn: &Connection,
    customer_id: Uuid,
    account: Account,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    if account == Account::Visits {
        return visits_usable(conn, customer_id, now);
    }
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE customer_id = ?1 AND account = ?2",
        )?
        .query_row(params![customer_id, account.as_str()], |r| r.get(0))?)
}

/// Every account of the customer at `now`, as [`balance`] counts them.
pub fn balances(
    conn: &Connection,
    customer_id: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<Balances> {
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
            Some(Account::Visits) => out.visits = visits_usable(conn, customer_id, now)?,
            None => {}
        }
    }
    Ok(out)
}

/// The membership visits usable at `now`: the customer's visit entries, oldest first, through
/// the lapsing rule both sides share.
pub fn visits_usable(
    conn: &Connection,
    customer_id: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, delta, json_extract(data, '$.expires_at') FROM ledger
          WHERE customer_id = ?1 AND account = 'visits' ORDER BY created_at, id",
    )?;
    let mut rows = stmt.query([customer_id])?;
    let mut movements = Vec::new();
    while let Some(row) = rows.next()? {
        let expires_at: Option<String> = row.get(2)?;
        movements.push(Movement {
            at: parse_ts(row.get_ref(0)?.as_str()?)?,
            delta: row.get(1)?,
            expires_at: expires_at.as_deref().map(parse_ts).transpose()?,
        });
    }
    Ok(usable_at(movements, now))
}

/// A jump session running now, as the kiosk lookup shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// One page of the venue's sessions that end after `now`, soonest end first: at most `limit`,
/// following `after`.
pub fn active_checkins(
    conn: &Connection,
    now: DateTime<Utc>,
    after: Option<&TimeKey>,
    limit: u32,
) -> anyhow::Result<Vec<CheckinRecord>> {
    let cursor = if after.is_some() {
        "AND (ends_at, id) > (?3, ?4)"
    } else {
        ""
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT data FROM checkins WHERE ends_at > ?1 {cursor} ORDER BY ends_at, id LIMIT ?2"
    ))?;
    let now = ts(now);
    let after = after.map(|(at, id)| (ts(*at), *id));
    let mut values: Vec<&dyn ToSql> = vec![&now, &limit];
    if let Some((at, id)) = &after {
        values.extend([at as &dyn ToSql, id]);
    }
    let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
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

/// The oldest order of the customer holding an unused pass of `product_id` (see the
/// `passes_left` table: orders fully refunded give none, and each check-in that used a pass
/// spent one of its order's).
pub fn order_with_unused_pass(
    conn: &Connection,
    customer_id: Uuid,
    product_id: Uuid,
) -> anyhow::Result<Option<Uuid>> {
    Ok(conn
        .prepare_cached(
            "SELECT order_id FROM passes_left
              WHERE customer_id = ?1 AND product_id = ?2 AND remaining > 0
              ORDER BY created_at, order_id LIMIT 1",
        )?
        .query_row(params![customer_id, product_id], |r| r.get(0))
        .optional()?)
}

/// Most products decoded on one thread that are kept for the next read of the same row.
const DECODED_PRODUCTS_KEPT: usize = 1024;

/// A product as this thread last decoded it, with the stored text it came from.
struct DecodedProduct {
    text: Box<str>,
    product: ProductRecord,
}

thread_local! {
    /// Every sale reads its products inside the writer's transaction, and decoding the same few
    /// rows again for each one cost the writer more than reading them. A decoded product is
    /// used again only while its row holds the very text it was decoded from, so a change HQ
    /// made is seen by the next read as before.
    static DECODED_PRODUCTS: RefCell<HashMap<Uuid, DecodedProduct>> = RefCell::new(HashMap::new());
}

pub fn product(conn: &Connection, id: Uuid) -> anyhow::Result<Option<ProductRecord>> {
    let mut stmt = conn.prepare_cached("SELECT data FROM products WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let text = row.get_ref(0)?.as_str()?;
    DECODED_PRODUCTS.with_borrow_mut(|decoded| {
        if let Some(known) = decoded.get(&id)
            && *known.text == *text
        {
            return Ok(Some(known.product.clone()));
        }
        let product: ProductRecord = serde_json::from_str(text)?;
        if decoded.len() >= DECODED_PRODUCTS_KEPT {
            decoded.clear();
        }
        decoded.insert(
            id,
            DecodedProduct {
                text: text.into(),
                product: product.clone(),
            },
        );
        Ok(Some(product))
    })
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

/// One page of the orders of `site_id` created in `[from, to)`, oldest first: at most `limit`,
/// following `after`.
pub fn orders_page(
    conn: &Connection,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<&TimeKey>,
    limit: u32,
) -> anyhow::Result<Vec<OrderRecord>> {
    let cursor = if after.is_some() {
        "AND (created_at, id) > (?5, ?6)"
    } else {
        ""
    };
    // The replica holds this venue's history; the site filter keeps the list to its own site.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT data FROM orders
          WHERE created_at >= ?1 AND created_at < ?2 AND json_extract(data, '$.site_id') = ?3
          {cursor} ORDER BY created_at, id LIMIT ?4"
    ))?;
    let (from, to, site) = (ts(from), ts(to), site_id.to_string());
    let after = after.map(|(at, id)| (ts(*at), *id));
    let mut values: Vec<&dyn ToSql> = vec![&from, &to, &site, &limit];
    if let Some((at, id)) = &after {
        values.extend([at as &dyn ToSql, id]);
    }
    let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
    rows.map(|data| Ok(serde_json::from_str(&data?)?)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::query_plan::query_plan;
    use aero_shared::wire::{OrderLine, RefundTender, Tender, TenderKind};
    use chrono::SubsecRound;

    fn order(customer: Uuid, pass: Uuid, quantity: i32, minutes_ago: i64) -> OrderRecord {
        let total = 1500 * i64::from(quantity);
        OrderRecord {
            id: Uuid::now_v7(),
            site_id: Uuid::nil(),
            customer_id: Some(customer),
            lines: vec![OrderLine {
                product_id: pass,
                sku: "JUMP60".into(),
                name: "Jump 60".into(),
                kind: ProductKind::Pass,
                quantity,
                unit_price_cents: 1500,
                total_cents: total,
            }],
            tenders: vec![Tender {
                kind: TenderKind::Card,
                amount_cents: total,
                received_cents: None,
                change_cents: 0,
                reference: Some("T".into()),
            }],
            total_cents: total,
            change_cents: 0,
            sold_by: "device:x".into(),
            created_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
        }
    }

    fn checkin(customer: Uuid, pass: Uuid, order_id: Uuid) -> CheckinRecord {
        let now = Utc::now();
        CheckinRecord {
            id: Uuid::now_v7(),
            site_id: Uuid::nil(),
            customer_id: customer,
            wristband: format!("W-{}", Uuid::now_v7()),
            product_id: pass,
            order_id: Some(order_id),
            ledger_entry_id: None,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(1),
            created_at: now,
        }
    }

    fn full_refund(order: &OrderRecord) -> RefundRecord {
        RefundRecord {
            id: Uuid::now_v7(),
            order_id: order.id,
            site_id: order.site_id,
            tenders: vec![RefundTender {
                kind: TenderKind::Card,
                amount_cents: order.total_cents,
            }],
            total_cents: order.total_cents,
            reason: "cancelled".into(),
            refunded_by: "user:x".into(),
            created_at: Utc::now(),
        }
    }

    /// Every page of a keyset list, `limit` rows at a time, following each page's cursor.
    fn walk<T>(
        limit: u32,
        key: impl Fn(&T) -> TimeKey,
        mut read: impl FnMut(Option<&TimeKey>, u32) -> Vec<T>,
    ) -> Vec<T> {
        use aero_shared::page::{Page, PageQuery};
        let mut all = Vec::new();
        let mut page = Page::first(limit);
        loop {
            let rows = read(page.after.as_ref(), page.fetch());
            let paged = page.finish(rows, &key);
            assert!(paged.rows.len() <= limit as usize);
            all.extend(paged.rows);
            let Some(cursor) = paged.next_after else {
                return all;
            };
            let query = PageQuery {
                limit: Some(i64::from(limit)),
                after: Some(cursor),
            };
            page = query.page().expect("the cursor of a page");
        }
    }

    #[test]
    fn a_product_is_read_afresh_once_hq_changed_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let (_replica, conn) =
            crate::replica::Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        let mut product = ProductRecord {
            id: Uuid::now_v7(),
            sku: "JUMP60".into(),
            name: "Jump 60".into(),
            kind: ProductKind::Pass,
            price_cents: 1500,
            duration_minutes: Some(60),
            grant: None,
            active: true,
            created_at: Utc::now().trunc_subsecs(3),
        };
        let store = |p: &ProductRecord| {
            conn.execute(
                "INSERT OR REPLACE INTO products (id, sku, active, data) VALUES (?1, ?2, ?3, ?4)",
                params![p.id, p.sku, p.active, serde_json::to_string(p).unwrap()],
            )
            .unwrap();
        };
        store(&product);
        assert_eq!(
            super::product(&conn, product.id).unwrap(),
            Some(product.clone())
        );
        assert_eq!(
            super::product(&conn, product.id).unwrap(),
            Some(product.clone())
        );
        product.price_cents = 1700;
        product.active = false;
        store(&product);
        assert_eq!(
            super::product(&conn, product.id).unwrap(),
            Some(product.clone())
        );
        conn.execute("DELETE FROM products WHERE id = ?1", [product.id])
            .unwrap();
        assert_eq!(super::product(&conn, product.id).unwrap(), None);
    }

    #[test]
    fn the_gate_and_the_pages_read_rows_in_index_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let (_replica, conn) =
            crate::replica::Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        let plan = |sql: &str| query_plan(&conn, sql).unwrap();
        for (sql, search) in [
            (
                "SELECT order_id FROM passes_left
                  WHERE customer_id = x'00' AND product_id = x'00' AND remaining > 0
                  ORDER BY created_at, order_id LIMIT 1",
                "PRIMARY KEY (customer_id=? AND product_id=?)",
            ),
            (
                "SELECT data FROM checkins WHERE ends_at > '' AND (ends_at, id) > ('', x'00')
                  ORDER BY ends_at, id LIMIT 50",
                "INDEX checkins_ends",
            ),
            (
                "SELECT id FROM checkins WHERE ends_at > '' AND ends_at <= 'z' ORDER BY ends_at, id",
                "INDEX checkins_ends",
            ),
            (
                "SELECT data FROM orders WHERE created_at >= '' AND created_at < 'z'
                  AND (created_at, id) > ('', x'00') ORDER BY created_at, id LIMIT 50",
                "INDEX orders_created",
            ),
        ] {
            let plan = plan(sql);
            assert!(plan.contains(search), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[test]
    fn spending_a_pass_changes_no_index_of_the_passes_left() {
        let dir = tempfile::tempdir().unwrap();
        let (_replica, conn) =
            crate::replica::Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        // SQLite rewrites an index on UPDATE only when it holds a changed column or its WHERE
        // names one: `remaining`, the only column a check-in changes, must be in neither.
        // The primary key's own B-tree is the table itself (checked below): the one page a
        // spent pass rewrites.
        let indexes: Vec<(String, bool)> = conn
            .prepare(
                "SELECT name, partial FROM pragma_index_list('passes_left') WHERE origin != 'pk'",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!indexes.is_empty());
        for (name, partial) in indexes {
            let columns: Vec<Option<String>> = conn
                .prepare(&format!("SELECT name FROM pragma_index_xinfo('{name}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                !columns.contains(&Some("remaining".into())),
                "{name}: {columns:?}"
            );
            assert!(!partial, "{name} is partial");
        }
        // The table itself is its primary key, the gate's search order, with no rowid beside.
        let without_rowid: i64 = conn
            .query_row("SELECT wr FROM pragma_table_list('passes_left')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(without_rowid, 1);
    }

    #[test]
    fn pages_of_orders_and_sessions_visit_each_row_once_ties_included() {
        let dir = tempfile::tempdir().expect("dir");
        let (_replica, conn) =
            super::super::Replica::open(dir.path(), Uuid::now_v7(), 1).expect("replica");
        let (customer, pass) = (Uuid::now_v7(), Uuid::now_v7());
        let now = Utc::now();
        // Five orders in one millisecond (ordered by id), two earlier, one of another site and
        // one before the day asked for.
        let same_ms = now.trunc_subsecs(3);
        let mut ours: Vec<OrderRecord> = (0..5)
            .map(|_| OrderRecord {
                created_at: same_ms,
                ..order(customer, pass, 1, 0)
            })
            .chain([order(customer, pass, 1, 5), order(customer, pass, 1, 9)])
            .collect();
        let elsewhere = OrderRecord {
            site_id: Uuid::now_v7(),
            ..order(customer, pass, 1, 3)
        };
        let before = order(customer, pass, 1, 120);
        for o in ours.iter().chain([&elsewhere, &before]) {
            insert_order(&conn, o).expect("order");
        }
        ours.sort_by_key(|o| (ts(o.created_at), o.id));
        let (from, to) = (
            now - chrono::Duration::minutes(60),
            now + chrono::Duration::minutes(1),
        );
        let walked = walk(
            2,
            |o: &OrderRecord| (o.created_at, o.id),
            |after, limit| orders_page(&conn, Uuid::nil(), from, to, after, limit).expect("page"),
        );
        let ids = |orders: &[OrderRecord]| orders.iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(ids(&walked), ids(&ours));

        // Sessions: four ending in the same millisecond, and one already over.
        let order_id = ours[0].id;
        let mut running: Vec<CheckinRecord> = (0..4)
            .map(|_| CheckinRecord {
                ends_at: same_ms + chrono::Duration::minutes(30),
                ..checkin(customer, pass, order_id)
            })
            .chain([checkin(customer, pass, order_id)])
            .collect();
        let over = CheckinRecord {
            ends_at: now - chrono::Duration::minutes(1),
            ..checkin(customer, pass, order_id)
        };
        for k in running.iter().chain([&over]) {
            insert_checkin(&conn, k).expect("check-in");
        }
        running.sort_by_key(|k| (ts(k.ends_at), k.id));
        let walked = walk(
            3,
            |k: &CheckinRecord| (k.ends_at, k.id),
            |after, limit| active_checkins(&conn, now, after, limit).expect("page"),
        );
        let ids: Vec<Uuid> = walked.iter().map(|k| k.id).collect();
        assert_eq!(ids, running.iter().map(|k| k.id).collect::<Vec<_>>());
    }

    #[test]
    fn passes_are_spent_oldest_first_voided_by_a_full_refund_and_counted_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (_replica, conn) =
            super::super::Replica::open(dir.path(), Uuid::now_v7(), 1).expect("replica");
        let (customer, pass) = (Uuid::now_v7(), Uuid::now_v7());
        let older = order(customer, pass, 1, 20);
        let newer = order(customer, pass, 2, 10);
        let refunded = order(customer, pass, 5, 30);
        for o in [&newer, &older, &refunded] {
            assert!(insert_order(&conn, o).expect("order"));
        }
        assert!(insert_refund(&conn, &full_refund(&refunded)).expect("refund"));
        let next = || order_with_unused_pass(&conn, customer, pass).expect("query");

        // The oldest order with a pass left goes first; the refunded one never does.
        assert_eq!(next(), Some(older.id));
        let used = checkin(customer, pass, older.id);
        assert!(insert_checkin(&conn, &used).expect("check-in"));
        // The same check-in arriving again (its echo from central) spends nothing more.
        assert!(!insert_checkin(&conn, &used).expect("echo"));
        assert_eq!(next(), Some(newer.id));
        for _ in 0..2 {
            insert_checkin(&conn, &checkin(customer, pass, newer.id)).expect("check-in");
        }
        assert_eq!(next(), None);
        // An order arriving again changes no count either.
        assert!(!insert_order(&conn, &newer).expect("echo"));
        assert_eq!(next(), None);
    }

    #[test]
    fn an_upgraded_replica_counts_the_passes_already_sold_used_and_refunded() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = super::super::open_connection(&dir.path().join("edge.db")).expect("db");
        super::super::embedded::migrations::runner()
            .set_target(refinery::Target::Version(5))
            .run(&mut conn)
            .expect("migrate to V5");
        let (customer, pass) = (Uuid::now_v7(), Uuid::now_v7());
        let (used_up, half_used, refunded) = (
            order(customer, pass, 1, 30),
            order(customer, pass, 3, 20),
            order(customer, pass, 4, 40),
        );
        let raw_order = |o: &OrderRecord| {
            conn.execute(
                "INSERT INTO orders (id, customer_id, total_cents, created_at, data) VALUES (?1, ?2, ?3, ?4, '{}')",
                params![o.id, o.customer_id, o.total_cents, ts(o.created_at)],
            )
            .expect("order row");
            conn.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, customer_id, kind, quantity, total_cents, created_at)
                 VALUES (?1, 0, ?2, ?3, 'pass', ?4, ?5, ?6)",
                params![o.id, pass, customer, o.lines[0].quantity, o.total_cents, ts(o.created_at)],
            )
            .expect("line row");
        };
        let raw_checkin = |order_id: Uuid| {
            let c = checkin(customer, pass, order_id);
            conn.execute(
                "INSERT INTO checkins (id, customer_id, wristband, product_id, order_id, starts_at, ends_at, created_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '{}')",
                params![c.id, customer, c.wristband, pass, order_id, ts(c.starts_at), ts(c.ends_at), ts(c.created_at)],
            )
            .expect("check-in row");
        };
        for o in [&used_up, &half_used, &refunded] {
            raw_order(o);
        }
        raw_checkin(used_up.id);
        raw_checkin(half_used.id);
        conn.execute(
            "INSERT INTO refunds (id, order_id, total_cents, created_at, data) VALUES (?1, ?2, ?3, ?4, '{}')",
            params![Uuid::now_v7(), refunded.id, refunded.total_cents, ts(Utc::now())],
        )
        .expect("refund row");

        super::super::embedded::migrations::runner()
            .run(&mut conn)
            .expect("upgrade");
        let left: Vec<(Uuid, i64)> = conn
            .prepare("SELECT order_id, remaining FROM passes_left ORDER BY created_at")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            left,
            vec![(refunded.id, 0), (used_up.id, 0), (half_used.id, 2)]
        );
        assert_eq!(
            order_with_unused_pass(&conn, customer, pass).expect("query"),
            Some(half_used.id)
        );
    }
}

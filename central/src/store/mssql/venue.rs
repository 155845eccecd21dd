//! Venue records pushed by edges (orders with their lines, refunds, ledger entries, check-ins,
//! scores): storing each once inside the push's transaction and returning the change it
//! publishes, and loading what the push rules check a batch's records against.
//!
//! Each record is stored once. The rules refused a held id with other content, so an id already
//! held is the same record again: nothing is written or published. `INSERT ... WHERE NOT
//! EXISTS` under UPDLOCK + HOLDLOCK makes a concurrent first insert of the same id wait instead
//! of racing (and a duplicate key that still slips through is retried by the push). Ledger
//! entries replicate chain-wide (every venue sees every balance); orders, refunds, check-ins and
//! scores to their own site, so a rebuilt venue box gets its history back.

use super::changelog::NewChange;
use super::codec::{int, text, to_json, ts, uuid};
use super::conn::Conn;
use super::sync::{MAX_PARAMS, placeholders};
use crate::store::push_rules::{Known, Lookup};
use crate::store::{StoreError, StoreResult};
use aero_shared::wire::{
    CheckinRecord, Entity, LedgerEntry, OrderRecord, PlugOverrideRecord, RefundRecord, ScoreRecord,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use tiberius::{Query, Row};
use uuid::Uuid;

/// Runs an insert whose batch ends with `SELECT @inserted`; true when it wrote the row.
async fn inserted(conn: &mut Conn, q: Query<'_>) -> StoreResult<bool> {
    Ok(match conn.row(q).await? {
        Some(row) => int(&row, 0)? == 1,
        None => false,
    })
}

pub(super) async fn order(
    conn: &mut Conn,
    o: &OrderRecord,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    // The order and its lines in one statement batch: lines only when the order is new. Each
    // line binds six values after the order's six (at most 50 lines: well within the limit).
    let mut sql = String::from(
        "DECLARE @inserted INT; \
         INSERT INTO orders (id, site_id, customer_id, total_cents, created_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6 \
          WHERE NOT EXISTS (SELECT 1 FROM orders WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; ",
    );
    if !o.lines.is_empty() {
        sql.push_str(
            "IF @inserted = 1 INSERT INTO order_lines \
             (order_id, line_no, site_id, product_id, sku, name, quantity, total_cents, created_at) VALUES ",
        );
        let values: Vec<String> = (0..o.lines.len())
            .map(|i| {
                let p = 7 + i * 6;
                format!(
                    "(@P1, @P{}, @P2, @P{}, @P{}, @P{}, @P{}, @P{}, @P5)",
                    p,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            })
            .collect();
        sql.push_str(&values.join(", "));
        sql.push_str("; ");
    }
    sql.push_str("SELECT @inserted;");
    let data = to_json(o)?;
    let mut q = Query::new(sql);
    q.bind(o.id);
    q.bind(o.site_id);
    q.bind(o.customer_id);
    q.bind(o.total_cents);
    q.bind(ts(o.created_at));
    q.bind(data.as_str());
    for (line_no, line) in o.lines.iter().enumerate() {
        q.bind(i32::try_from(line_no).unwrap_or(i32::MAX));
        q.bind(line.product_id);
        q.bind(line.sku.as_str());
        q.bind(line.name.as_str());
        q.bind(line.quantity);
        q.bind(line.total_cents);
    }
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::Order, o.id, Some(o.site_id), o, at).map(Some)
}

pub(super) async fn refund(
    conn: &mut Conn,
    r: &RefundRecord,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    let data = to_json(r)?;
    let mut q = Query::new(
        "DECLARE @inserted INT; \
         INSERT INTO refunds (id, order_id, site_id, total_cents, created_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6 \
          WHERE NOT EXISTS (SELECT 1 FROM refunds WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; \
         SELECT @inserted;",
    );
    q.bind(r.id);
    q.bind(r.order_id);
    q.bind(r.site_id);
    q.bind(r.total_cents);
    q.bind(ts(r.created_at));
    q.bind(data.as_str());
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::Refund, r.id, Some(r.site_id), r, at).map(Some)
}

pub(super) async fn ledger_entry(
    conn: &mut Conn,
    e: &LedgerEntry,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    let data = to_json(e)?;
    let mut q = Query::new(
        "DECLARE @inserted INT; \
         INSERT INTO ledger_entries (id, customer_id, account, delta, site_id, created_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7 \
          WHERE NOT EXISTS (SELECT 1 FROM ledger_entries WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; \
         SELECT @inserted;",
    );
    q.bind(e.id);
    q.bind(e.customer_id);
    q.bind(e.account.as_str());
    q.bind(e.delta);
    q.bind(e.site_id);
    q.bind(ts(e.created_at));
    q.bind(data.as_str());
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::LedgerEntry, e.id, None, e, at).map(Some)
}

pub(super) async fn checkin(
    conn: &mut Conn,
    c: &CheckinRecord,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    let data = to_json(c)?;
    let mut q = Query::new(
        "DECLARE @inserted INT; \
         INSERT INTO checkins (id, site_id, customer_id, product_id, wristband, starts_at, ends_at, created_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9 \
          WHERE NOT EXISTS (SELECT 1 FROM checkins WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; \
         SELECT @inserted;",
    );
    q.bind(c.id);
    q.bind(c.site_id);
    q.bind(c.customer_id);
    q.bind(c.product_id);
    q.bind(c.wristband.as_str());
    q.bind(ts(c.starts_at));
    q.bind(ts(c.ends_at));
    q.bind(ts(c.created_at));
    q.bind(data.as_str());
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::Checkin, c.id, Some(c.site_id), c, at).map(Some)
}

pub(super) async fn score(
    conn: &mut Conn,
    s: &ScoreRecord,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    let data = to_json(s)?;
    let mut q = Query::new(
        "DECLARE @inserted INT; \
         INSERT INTO scores (id, site_id, game_id, customer_id, score, created_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7 \
          WHERE NOT EXISTS (SELECT 1 FROM scores WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; \
         SELECT @inserted;",
    );
    q.bind(s.id);
    q.bind(s.site_id);
    q.bind(s.game_id);
    q.bind(s.customer_id);
    q.bind(s.score);
    q.bind(ts(s.created_at));
    q.bind(data.as_str());
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::Score, s.id, Some(s.site_id), s, at).map(Some)
}

pub(super) async fn plug_override(
    conn: &mut Conn,
    o: &PlugOverrideRecord,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    let data = to_json(o)?;
    let mut q = Query::new(
        "DECLARE @inserted INT; \
         INSERT INTO plug_overrides (id, plug_id, site_id, set_at, ends_at, data) \
         SELECT @P1, @P2, @P3, @P4, @P5, @P6 \
          WHERE NOT EXISTS (SELECT 1 FROM plug_overrides WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); \
         SET @inserted = @@ROWCOUNT; \
         SELECT @inserted;",
    );
    q.bind(o.id);
    q.bind(o.plug_id);
    q.bind(o.site_id);
    q.bind(ts(o.set_at));
    q.bind(ts(o.until));
    q.bind(data.as_str());
    if !inserted(conn, q).await? {
        return Ok(None);
    }
    NewChange::upsert(Entity::PlugOverride, o.id, Some(o.site_id), o, at).map(Some)
}

/// What `load_known` asks, one statement per list. Each statement's first column is its own
/// index in this table, so rows find their list whichever result sets a round trip returns.
const KNOWN_QUERIES: [&str; 9] = [
    "SELECT 0, id FROM games WHERE id IN (",
    "SELECT 1, data FROM orders WHERE id IN (",
    "SELECT 2, data FROM refunds WHERE id IN (",
    "SELECT 3, data FROM refunds WHERE order_id IN (",
    "SELECT 4, data FROM ledger_entries WHERE id IN (",
    "SELECT 5, data FROM checkins WHERE id IN (",
    "SELECT 6, data FROM scores WHERE id IN (",
    "SELECT 7, id, site_id FROM plugs WHERE id IN (",
    "SELECT 8, data FROM plug_overrides WHERE id IN (",
];

/// One round trip of `load_known`: statements from [`KNOWN_QUERIES`] with their lists, and
/// the ids they bind, in order.
#[derive(Debug, Default)]
struct KnownRoundTrip {
    sql: String,
    ids: Vec<Uuid>,
}

/// Packs `lists` (one per entry of [`KNOWN_QUERIES`]) into as few round trips as `MAX_PARAMS`
/// allows, splitting a long list over several.
fn known_round_trips(lists: [&[Uuid]; 9]) -> Vec<KnownRoundTrip> {
    let mut trips = Vec::new();
    let mut trip = KnownRoundTrip::default();
    for (head, mut ids) in KNOWN_QUERIES.into_iter().zip(lists) {
        while !ids.is_empty() {
            if trip.ids.len() == MAX_PARAMS {
                trips.push(std::mem::take(&mut trip));
            }
            let (now, later) = ids.split_at(ids.len().min(MAX_PARAMS - trip.ids.len()));
            trip.sql.push_str(head);
            trip.sql
                .push_str(&placeholders(trip.ids.len() + 1, now.len()));
            trip.sql.push_str("); ");
            trip.ids.extend_from_slice(now);
            ids = later;
        }
    }
    if !trip.ids.is_empty() {
        trips.push(trip);
    }
    trips
}

/// Reads the stored record in column 1 of `row` into `into`, under the id `id_of` gives.
fn insert<T: DeserializeOwned>(
    row: &Row,
    into: &mut HashMap<Uuid, T>,
    id_of: fn(&T) -> Uuid,
) -> StoreResult<()> {
    let record: T = serde_json::from_str(&text(row, 1)?)
        .map_err(|e| StoreError::Other(anyhow::anyhow!("reading a stored venue record: {e}")))?;
    into.insert(id_of(&record), record);
    Ok(())
}

/// Fills in what central holds of the batch's games and venue records (see [`Lookup`]);
/// customers are loaded with the held ops. One round trip unless the batch is huge.
pub(super) async fn load_known(
    conn: &mut Conn,
    lookup: &Lookup,
    known: &mut Known,
) -> StoreResult<()> {
    let lists = [
        lookup.game_ids.as_slice(),
        &lookup.order_ids,
        &lookup.refund_ids,
        &lookup.refunded_order_ids,
        &lookup.ledger_entry_ids,
        &lookup.checkin_ids,
        &lookup.score_ids,
        &lookup.plug_ids,
        &lookup.plug_override_ids,
    ];
    for trip in known_round_trips(lists) {
        let mut q = Query::new(trip.sql);
        for id in &trip.ids {
            q.bind(*id);
        }
        for row in conn.results(q).await?.iter().flatten() {
            match int(row, 0)? {
                0 => {
                    known.games.insert(uuid(row, 1)?);
                }
                1 => insert(row, &mut known.orders, |r| r.id)?,
                2 | 3 => insert(row, &mut known.refunds, |r| r.id)?,
                4 => insert(row, &mut known.ledger_entries, |r| r.id)?,
                5 => insert(row, &mut known.checkins, |r| r.id)?,
                6 => insert(row, &mut known.scores, |r| r.id)?,
                7 => {
                    known.plugs.insert(uuid(row, 1)?, uuid(row, 2)?);
                }
                8 => insert(row, &mut known.plug_overrides, |r| r.id)?,
                other => {
                    return Err(StoreError::Other(anyhow::anyhow!(
                        "unexpected lookup {other}"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    /// The `@Pn` numbers in `sql`, in order of appearance.
    fn placeholder_numbers(sql: &str) -> Vec<usize> {
        sql.split("@P")
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_usual_batch_is_looked_up_in_one_round_trip() {
        let (games, orders, scores, plugs) = (ids(3), ids(200), ids(300), ids(2));
        let trips = known_round_trips([&games, &orders, &[], &[], &[], &[], &scores, &plugs, &[]]);
        assert_eq!(trips.len(), 1);
        let trip = &trips[0];
        assert_eq!(trip.sql.matches("SELECT").count(), 4);
        assert_eq!(
            placeholder_numbers(&trip.sql),
            (1..=505).collect::<Vec<_>>()
        );
        let bound: Vec<Uuid> = [games, orders, scores, plugs].concat();
        assert_eq!(trip.ids, bound);
    }

    #[test]
    fn long_lists_are_split_within_the_parameter_limit() {
        let orders = ids(MAX_PARAMS + 10);
        let refunds = ids(MAX_PARAMS);
        let trips = known_round_trips([&[], &orders, &refunds, &[], &[], &[], &[], &[], &[]]);
        assert_eq!(trips.len(), 3);
        for trip in &trips {
            assert!(trip.ids.len() <= MAX_PARAMS);
            assert_eq!(
                placeholder_numbers(&trip.sql),
                (1..=trip.ids.len()).collect::<Vec<_>>()
            );
        }
        let bound: Vec<Uuid> = trips.iter().flat_map(|t| t.ids.clone()).collect();
        assert_eq!(bound, [orders, refunds].concat());
        assert!(known_round_trips([&[]; 9]).is_empty());
    }
}

//! HQ's reads of venue data, by the rules of `store::reports`: a site's day, sales by product,
//! check-ins per interval, negative balances, leaderboards, and the chain-wide customer lookup
//! with balances.

use super::codec::{CUSTOMER_COLUMNS, customer_from_row, parse_enum, parse_ts, ts};
use super::pages::keyset_sql;
use crate::store::reports::{self, VisitEntry, like_prefix};
use crate::store::{
    CustomerBalances, CustomerKey, CustomerSearch, DailyReport, LeaderboardEntry, LeaderboardQuery,
    NegativeBalance, ProductSales, StoreResult,
};
use aero_shared::wire::{Account, ScoreOrder};
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, ToSql, params, params_from_iter};
use uuid::Uuid;

pub(super) fn daily(
    c: &Connection,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> StoreResult<DailyReport> {
    Ok(c.prepare_cached(
        "SELECT
            (SELECT COUNT(*) FROM orders WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3),
            (SELECT COALESCE(SUM(total_cents), 0) FROM orders WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3),
            (SELECT COALESCE(SUM(total_cents), 0) FROM refunds WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3),
            (SELECT COUNT(*) FROM checkins WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3),
            (SELECT COUNT(*) FROM customers WHERE home_site_id = ?1 AND created_at >= ?2 AND created_at < ?3)",
    )?
    .query_row(params![site_id, ts(from), ts(to)], |r| {
        Ok(DailyReport::new(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?)
}

pub(super) fn sales_by_product(
    c: &Connection,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> StoreResult<Vec<ProductSales>> {
    let mut stmt = c.prepare_cached(
        "SELECT product_id, MIN(sku), MIN(name), SUM(quantity), SUM(total_cents) FROM order_lines
          WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3
          GROUP BY product_id",
    )?;
    let mut sales = stmt
        .query_map(params![site_id, ts(from), ts(to)], |r| {
            Ok(ProductSales {
                product_id: r.get(0)?,
                sku: r.get(1)?,
                name: r.get(2)?,
                quantity: r.get(3)?,
                sales_cents: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    reports::sort_sales(&mut sales);
    Ok(sales)
}

pub(super) fn checkins_between(
    c: &Connection,
    site_id: Uuid,
    bounds: &[DateTime<Utc>],
) -> StoreResult<Vec<i64>> {
    let [first, .., last] = bounds else {
        return Ok(Vec::new());
    };
    // One count per interval, in one pass over the day's rows: ?1 is the site, ?2 and ?3 the
    // whole range, ?4.. the bounds in order.
    let columns: Vec<String> = (0..bounds.len() - 1)
        .map(|i| {
            format!(
                "COALESCE(SUM(CASE WHEN created_at >= ?{} AND created_at < ?{} THEN 1 ELSE 0 END), 0)",
                i + 4,
                i + 5
            )
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM checkins WHERE site_id = ?1 AND created_at >= ?2 AND created_at < ?3",
        columns.join(", ")
    );
    let mut values = vec![
        Value::Blob(site_id.as_bytes().to_vec()),
        Value::Text(ts(*first)),
        Value::Text(ts(*last)),
    ];
    values.extend(bounds.iter().map(|b| Value::Text(ts(*b))));
    Ok(c.prepare_cached(&sql)?
        .query_row(params_from_iter(values), |r| {
            (0..bounds.len() - 1).map(|i| r.get(i)).collect()
        })?)
}

pub(super) fn negative_balances(
    c: &Connection,
    now: DateTime<Utc>,
) -> StoreResult<Vec<NegativeBalance>> {
    let sums = c
        .prepare_cached(
            "SELECT l.customer_id, c.first_name, c.last_name, l.account, SUM(l.delta)
               FROM ledger_entries l JOIN customers c ON c.id = l.customer_id
              WHERE l.account <> 'visits'
              GROUP BY l.customer_id, c.first_name, c.last_name, l.account
             HAVING SUM(l.delta) < 0",
        )?
        .query_map([], |r| {
            Ok(NegativeBalance {
                customer_id: r.get(0)?,
                first_name: r.get(1)?,
                last_name: r.get(2)?,
                account: parse_enum(&r.get::<_, String>(3)?)?,
                balance: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let visits = c
        .prepare_cached(
            "SELECT l.customer_id, l.created_at, l.delta, l.data, c.first_name, c.last_name
               FROM ledger_entries l JOIN customers c ON c.id = l.customer_id
              WHERE l.account = 'visits'
              ORDER BY l.customer_id, l.created_at, l.id",
        )?
        .query_map([], |r| Ok((visit_entry(r)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<_>>()?;
    reports::negative_balances(sums, visits, now)
}

/// A `visits` ledger row whose first four columns are customer_id, created_at, delta, data.
fn visit_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<VisitEntry> {
    Ok(VisitEntry {
        customer_id: r.get(0)?,
        created_at: parse_ts(&r.get::<_, String>(1)?)?,
        delta: r.get(2)?,
        data: r.get(3)?,
    })
}

pub(super) fn leaderboard(
    c: &Connection,
    query: &LeaderboardQuery,
) -> StoreResult<Vec<LeaderboardEntry>> {
    // Scores are ranked by `score * ?6`: -1 puts the highest first, 1 the lowest.
    let sign: i64 = match query.score_order {
        ScoreOrder::HighestWins => -1,
        ScoreOrder::LowestWins => 1,
    };
    let mut stmt = c.prepare_cached(
        "SELECT b.customer_id, c.first_name, b.score, b.site_id, b.created_at FROM (
             SELECT customer_id, score, site_id, created_at, id,
                    ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY score * ?6, created_at, id) AS n
               FROM scores
              WHERE game_id = ?1 AND (?2 IS NULL OR site_id = ?2)
                AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4)
         ) b JOIN customers c ON c.id = b.customer_id
          WHERE b.n = 1
          ORDER BY b.score * ?6, b.created_at, b.customer_id
          LIMIT ?5",
    )?;
    let (from, to) = match query.window {
        Some((from, to)) => (Some(ts(from)), Some(ts(to))),
        None => (None, None),
    };
    Ok(stmt
        .query_map(
            params![query.game_id, query.site_id, from, to, query.limit, sign],
            |r| {
                Ok(LeaderboardEntry {
                    customer_id: r.get(0)?,
                    first_name: r.get(1)?,
                    score: r.get(2)?,
                    site_id: r.get(3)?,
                    at: parse_ts(&r.get::<_, String>(4)?)?,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn search_customers(
    c: &Connection,
    search: &CustomerSearch,
    after: Option<&CustomerKey>,
    limit: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<CustomerBalances>> {
    let (filter, value) = match search {
        CustomerSearch::Phone(phone) => ("phone = ?1", phone.clone()),
        CustomerSearch::Email(email) => ("email = ?1 COLLATE NOCASE", email.clone()),
        CustomerSearch::Name(name) => (
            "first_name LIKE ?1 ESCAPE '\\' OR last_name LIKE ?1 ESCAPE '\\'
             OR (first_name || ' ' || last_name) LIKE ?1 ESCAPE '\\'",
            like_prefix(name, false),
        ),
    };
    let sql = keyset_sql(
        &format!("SELECT {CUSTOMER_COLUMNS} FROM customers"),
        Some(filter),
        1,
        &["last_name", "first_name", "id"],
        false,
        after.is_some(),
    );
    let mut values: Vec<&dyn ToSql> = vec![&value, &limit];
    if let Some((last, first, id)) = after {
        values.extend([last as &dyn ToSql, first, id]);
    }
    let customers = c
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), customer_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut sums = c.prepare_cached(
        "SELECT account, SUM(delta) FROM ledger_entries
          WHERE customer_id = ?1 AND account <> 'visits' GROUP BY account",
    )?;
    let mut visits = c.prepare_cached(
        "SELECT customer_id, created_at, delta, data FROM ledger_entries
          WHERE customer_id = ?1 AND account = 'visits' ORDER BY created_at, id",
    )?;
    customers
        .into_iter()
        .map(|customer| {
            let found = sums
                .query_map([customer.id], |r| {
                    Ok((parse_enum::<Account>(&r.get::<_, String>(0)?)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let entries = visits
                .query_map([customer.id], visit_entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let usable = reports::usable_visits(entries, now)?;
            let visits = usable.get(&customer.id).copied().unwrap_or(0);
            Ok(CustomerBalances::new(customer, &found, visits))
        })
        .collect()
}

//! HQ's reads of venue data, by the rules of `store::reports`: a site's day, sales by product,
//! check-ins per interval, negative balances and leaderboards.

use super::MssqlStore;
use super::codec::{int, text, time, ts, uuid};
use crate::store::reports::{self, VisitEntry};
use crate::store::{
    DailyReport, LeaderboardEntry, LeaderboardQuery, NegativeBalance, ProductSales, StoreError,
    StoreResult,
};
use aero_shared::wire::{Account, ScoreOrder};
use chrono::{DateTime, Utc};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn daily(
    store: &MssqlStore,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> StoreResult<DailyReport> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT \
                       (SELECT COUNT_BIG(*) FROM orders \
                         WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                       (SELECT ISNULL(SUM(total_cents), 0) FROM orders \
                         WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                       (SELECT ISNULL(SUM(total_cents), 0) FROM refunds \
                         WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                       (SELECT COUNT_BIG(*) FROM checkins \
                         WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                       (SELECT COUNT_BIG(*) FROM customers \
                         WHERE home_site_id = @P1 AND created_at >= @P2 AND created_at < @P3)",
                );
                q.bind(site_id);
                q.bind(ts(from));
                q.bind(ts(to));
                let row = conn.row(q).await?.ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!("the report query returned no row"))
                })?;
                Ok(DailyReport::new(
                    int(&row, 0)?,
                    int(&row, 1)?,
                    int(&row, 2)?,
                    int(&row, 3)?,
                    int(&row, 4)?,
                ))
            })
        })
        .await
}

pub(super) async fn sales_by_product(
    store: &MssqlStore,
    site_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> StoreResult<Vec<ProductSales>> {
    let mut sales = store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT product_id, MIN(sku), MIN(name), SUM(CAST(quantity AS BIGINT)), SUM(total_cents) \
                       FROM order_lines \
                      WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3 \
                      GROUP BY product_id",
                );
                q.bind(site_id);
                q.bind(ts(from));
                q.bind(ts(to));
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(ProductSales {
                            product_id: uuid(row, 0)?,
                            sku: text(row, 1)?,
                            name: text(row, 2)?,
                            quantity: int(row, 3)?,
                            sales_cents: int(row, 4)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()
            })
        })
        .await?;
    reports::sort_sales(&mut sales);
    Ok(sales)
}

pub(super) async fn checkins_between(
    store: &MssqlStore,
    site_id: Uuid,
    bounds: &[DateTime<Utc>],
) -> StoreResult<Vec<i64>> {
    let [first, .., last] = bounds else {
        return Ok(Vec::new());
    };
    let intervals = bounds.len() - 1;
    // One count per interval, in one pass over the day's rows: @P1 is the site, @P2 and @P3 the
    // whole range, @P4.. the bounds in order.
    let columns: Vec<String> = (0..intervals)
        .map(|i| {
            format!(
                "ISNULL(SUM(CASE WHEN created_at >= @P{} AND created_at < @P{} THEN 1 ELSE 0 END), 0)",
                i + 4,
                i + 5
            )
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM checkins WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3",
        columns.join(", ")
    );
    let (sql, first, last) = (sql.as_str(), *first, *last);
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(site_id);
                q.bind(ts(first));
                q.bind(ts(last));
                for bound in bounds {
                    q.bind(ts(*bound));
                }
                let row = conn.row(q).await?.ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!("the report query returned no row"))
                })?;
                (0..intervals).map(|i| int(&row, i)).collect()
            })
        })
        .await
}

pub(super) async fn negative_balances(
    store: &MssqlStore,
    now: DateTime<Utc>,
) -> StoreResult<Vec<NegativeBalance>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let q = Query::new(
                    "SELECT l.customer_id, c.first_name, c.last_name, l.account, SUM(l.delta) \
                       FROM ledger_entries l JOIN customers c ON c.id = l.customer_id \
                      WHERE l.account <> N'visits' \
                      GROUP BY l.customer_id, c.first_name, c.last_name, l.account \
                     HAVING SUM(l.delta) < 0",
                );
                let sums = conn
                    .rows(q)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(NegativeBalance {
                            customer_id: uuid(row, 0)?,
                            first_name: text(row, 1)?,
                            last_name: text(row, 2)?,
                            account: account(row, 3)?,
                            balance: int(row, 4)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                let q = Query::new(
                    "SELECT l.customer_id, l.created_at, l.delta, l.data, c.first_name, c.last_name \
                       FROM ledger_entries l JOIN customers c ON c.id = l.customer_id \
                      WHERE l.account = N'visits' \
                      ORDER BY l.created_at, l.id",
                );
                let visits = conn
                    .rows(q)
                    .await?
                    .iter()
                    .map(|row| Ok((visit_entry(row)?, text(row, 4)?, text(row, 5)?)))
                    .collect::<StoreResult<Vec<_>>>()?;
                reports::negative_balances(sums, visits, now)
            })
        })
        .await
}

/// A `visits` ledger row whose first four columns are customer_id, created_at, delta, data.
pub(super) fn visit_entry(row: &tiberius::Row) -> StoreResult<VisitEntry> {
    Ok(VisitEntry {
        customer_id: uuid(row, 0)?,
        created_at: time(row, 1)?,
        delta: int(row, 2)?,
        data: text(row, 3)?,
    })
}

pub(super) fn account(row: &tiberius::Row, at: usize) -> StoreResult<Account> {
    let name = text(row, at)?;
    Account::parse(&name)
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("unknown account {name}")))
}

pub(super) async fn leaderboard(
    store: &MssqlStore,
    query: &LeaderboardQuery,
) -> StoreResult<Vec<LeaderboardEntry>> {
    // Scores are ranked by `score * @P6`: -1 puts the highest first, 1 the lowest. Ties are
    // broken by the text form of ids, which sorts like the SQLite store's.
    let sign: i64 = match query.score_order {
        ScoreOrder::HighestWins => -1,
        ScoreOrder::LowestWins => 1,
    };
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT TOP (@P5) b.customer_id, c.first_name, b.score, b.site_id, b.created_at FROM ( \
                         SELECT customer_id, score, site_id, created_at, \
                                ROW_NUMBER() OVER (PARTITION BY customer_id \
                                                   ORDER BY score * @P6, created_at, CONVERT(CHAR(36), id)) AS n \
                           FROM scores \
                          WHERE game_id = @P1 AND (@P2 IS NULL OR site_id = @P2) \
                            AND (@P3 IS NULL OR created_at >= @P3) AND (@P4 IS NULL OR created_at < @P4) \
                     ) b JOIN customers c ON c.id = b.customer_id \
                      WHERE b.n = 1 \
                      ORDER BY b.score * @P6, b.created_at, CONVERT(CHAR(36), b.customer_id)",
                );
                q.bind(query.game_id);
                q.bind(query.site_id);
                q.bind(query.window.map(|(from, _)| ts(from)));
                q.bind(query.window.map(|(_, to)| ts(to)));
                q.bind(i64::from(query.limit));
                q.bind(sign);
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(LeaderboardEntry {
                            customer_id: uuid(row, 0)?,
                            first_name: text(row, 1)?,
                            score: int(row, 2)?,
                            site_id: uuid(row, 3)?,
                            at: time(row, 4)?,
                        })
                    })
                    .collect()
            })
        })
        .await
}

//! Chain-wide customers as HQ reads them: by id or phone, their waivers, and the HQ lookup with
//! balances (the rows themselves arrive through `sync::push`).

use super::codec::{customer_columns, customer_from, int, uuid, waiver_columns, waiver_from};
use super::pages::keyset_sql;
use super::sync::placeholders;
use super::{MssqlStore, reports};
use crate::store::reports::{self as store_reports, like_prefix};
use crate::store::{CustomerBalances, CustomerKey, CustomerSearch, StoreResult};
use aero_shared::wire::{Account, CustomerRecord, WaiverRecord};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn get(store: &MssqlStore, id: Uuid) -> StoreResult<Option<CustomerRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    customer_columns!(),
                    " FROM customers WHERE id = @P1"
                ));
                q.bind(id);
                conn.row(q).await?.as_ref().map(customer_from).transpose()
            })
        })
        .await
}

pub(super) async fn by_phone(store: &MssqlStore, phone: &str) -> StoreResult<Vec<CustomerRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT TOP (50) ",
                    customer_columns!(),
                    " FROM customers WHERE phone = @P1 ",
                    "ORDER BY last_name, first_name, CONVERT(CHAR(36), id)"
                ));
                q.bind(phone);
                conn.rows(q).await?.iter().map(customer_from).collect()
            })
        })
        .await
}

pub(super) async fn count(store: &MssqlStore) -> StoreResult<i64> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                match conn
                    .row(Query::new("SELECT COUNT_BIG(*) FROM customers"))
                    .await?
                {
                    Some(row) => int(&row, 0),
                    None => Ok(0),
                }
            })
        })
        .await
}

pub(super) async fn waivers_for(
    store: &MssqlStore,
    customer_id: Uuid,
) -> StoreResult<Vec<WaiverRecord>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "SELECT ",
                    waiver_columns!(),
                    " FROM waivers WHERE customer_id = @P1 ",
                    "ORDER BY signed_at, CONVERT(CHAR(36), id)"
                ));
                q.bind(customer_id);
                conn.rows(q).await?.iter().map(waiver_from).collect()
            })
        })
        .await
}

/// Customers matching `search`, each with their balances: one round trip for the customers,
/// one for their balances.
pub(super) async fn search(
    store: &MssqlStore,
    search: &CustomerSearch,
    after: Option<&CustomerKey>,
    limit: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<CustomerBalances>> {
    // The name columns and email compare ignoring case (their collation, V5).
    let (filter, value) = match search {
        CustomerSearch::Phone(phone) => ("phone = @P2", phone.clone()),
        CustomerSearch::Email(email) => ("email = @P2", email.clone()),
        CustomerSearch::Name(name) => (
            "first_name LIKE @P2 ESCAPE N'\\' OR last_name LIKE @P2 ESCAPE N'\\' \
             OR (first_name + N' ' + last_name) LIKE @P2 ESCAPE N'\\'",
            like_prefix(name, true),
        ),
    };
    let sql = keyset_sql(
        customer_columns!(),
        "customers",
        Some(filter),
        1,
        &["last_name", "first_name", "id"],
        false,
        after.is_some(),
    );
    let (sql, value) = (sql.as_str(), value.as_str());
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                q.bind(value);
                if let Some((last, first, id)) = after {
                    q.bind(last.as_str());
                    q.bind(first.as_str());
                    q.bind(*id);
                }
                let customers = conn
                    .rows(q)
                    .await?
                    .iter()
                    .map(customer_from)
                    .collect::<StoreResult<Vec<_>>>()?;
                if customers.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = Query::new(format!(
                    "SELECT customer_id, account, SUM(delta) FROM ledger_entries \
                      WHERE customer_id IN ({}) AND account <> N'visits' \
                      GROUP BY customer_id, account",
                    placeholders(1, customers.len())
                ));
                for customer in &customers {
                    q.bind(customer.id);
                }
                let mut sums: HashMap<Uuid, Vec<(Account, i64)>> = HashMap::new();
                for row in conn.rows(q).await? {
                    sums.entry(uuid(&row, 0)?)
                        .or_default()
                        .push((reports::account(&row, 1)?, int(&row, 2)?));
                }
                let mut q = Query::new(format!(
                    "SELECT customer_id, created_at, delta, data FROM ledger_entries \
                      WHERE customer_id IN ({}) AND account = N'visits' \
                      ORDER BY created_at, id",
                    placeholders(1, customers.len())
                ));
                for customer in &customers {
                    q.bind(customer.id);
                }
                let entries = conn
                    .rows(q)
                    .await?
                    .iter()
                    .map(reports::visit_entry)
                    .collect::<StoreResult<Vec<_>>>()?;
                let visits = store_reports::usable_visits(entries, now)?;
                Ok(customers
                    .into_iter()
                    .map(|c| {
                        let found = sums.remove(&c.id).unwrap_or_default();
                        let usable = visits.get(&c.id).copied().unwrap_or(0);
                        CustomerBalances::new(c, &found, usable)
                    })
                    .collect())
            })
        })
        .await
}

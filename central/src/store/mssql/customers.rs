//! Chain-wide venue data as HQ reads it: customers, their waivers, and a site's daily report
//! (the rows themselves arrive through `sync::push`).

use super::MssqlStore;
use super::codec::{customer_columns, customer_from, int, ts, waiver_columns, waiver_from};
use crate::store::{DailyReport, StoreError, StoreResult};
use aero_shared::wire::{CustomerRecord, WaiverRecord};
use chrono::{DateTime, Utc};
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

pub(super) async fn daily_report(
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
                Ok(DailyReport {
                    orders: int(&row, 0)?,
                    revenue_cents: int(&row, 1)?,
                    checkins: int(&row, 2)?,
                    new_customers: int(&row, 3)?,
                })
            })
        })
        .await
}

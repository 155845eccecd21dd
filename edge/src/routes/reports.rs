//! The venue's own figures for one local day, from its replica (so they work offline). Central
//! computes the same figures from the same records by the same rules:
//!
//! - the day is `[local midnight, next local midnight)` in the site's timezone, in UTC
//!   ([`aero_shared::clock::local_day`]);
//! - gross sales: the totals of orders created that day; refunds: the totals of refunds created
//!   that day (whenever their order was); revenue: gross sales less refunds;
//! - check-ins created that day; new customers: customers whose home site is this venue,
//!   created that day;
//! - sales by product: the quantities and line totals of the orders created that day, per
//!   product, named as the lines were sold, ordered by SKU.

use super::AppState;
use super::orders::DateQuery;
use crate::replica::ts;
use crate::replica::venue::{orders_between, site_timezone};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::clock::{local_date, local_day};
use aero_shared::openapi::guarded;
use aero_shared::page::{NameKey, PageQuery};
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::params;
use serde::Serialize;
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadReports, routes!(daily)))
        .routes(guarded(Permission::ReadReports, routes!(sales_by_product)))
}

/// One local day of the site, as UTC bounds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Day {
    pub date: NaiveDate,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The day `date` names (`YYYY-MM-DD`), or today, in the site's timezone.
pub(super) async fn resolve_day(state: &AppState, date: Option<&str>) -> Result<Day, ApiError> {
    let site = state.site_id;
    let tz = state
        .replica
        .read(move |c| site_timezone(c, site))
        .await?
        .ok_or_else(|| {
            ApiError::Unavailable("the replica has not received this site from central yet".into())
        })?;
    let date = match date {
        Some(text) => text
            .parse::<NaiveDate>()
            .map_err(|_| ApiError::field("date", "must be a date such as 2026-01-31"))?,
        None => local_date(tz, state.clock.now()),
    };
    let (from, to) = local_day(tz, date).ok_or_else(|| ApiError::field("date", "out of range"))?;
    Ok(Day { date, from, to })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DailyReport {
    site_id: Uuid,
    date: NaiveDate,
    orders: i64,
    revenue_cents: i64,
    gross_sales_cents: i64,
    refunds_cents: i64,
    checkins: i64,
    new_customers: i64,
}

#[utoipa::path(get, path = "/v1/reports/daily", tag = "reports", summary = "A site's local day (?site_id=&date=): orders, gross sales, refunds, revenue, check-ins, new customers", params(DateQuery), responses((status = 200, description = "OK", body = DailyReport)))]
async fn daily(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<DateQuery>,
) -> Result<Json<DailyReport>, ApiError> {
    let day = resolve_day(&state, query.date.as_deref()).await?;
    let site_id = state.site_id;
    let report = state
        .replica
        .read(move |c| {
            // The replica holds this venue's own orders, refunds and check-ins; the site filter
            // keeps the figures to it regardless.
            let (from, to, site) = (ts(day.from), ts(day.to), site_id.to_string());
            let range = params![from, to, site];
            let (orders, gross_sales_cents): (i64, i64) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(total_cents), 0) FROM orders
                  WHERE created_at >= ?1 AND created_at < ?2 AND json_extract(data, '$.site_id') = ?3",
                range,
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let refunds_cents: i64 = c.query_row(
                "SELECT COALESCE(SUM(total_cents), 0) FROM refunds
                  WHERE created_at >= ?1 AND created_at < ?2 AND json_extract(data, '$.site_id') = ?3",
                range,
                |r| r.get(0),
            )?;
            let checkins: i64 = c.query_row(
                "SELECT COUNT(*) FROM checkins
                  WHERE created_at >= ?1 AND created_at < ?2 AND json_extract(data, '$.site_id') = ?3",
                range,
                |r| r.get(0),
            )?;
            let new_customers: i64 = c.query_row(
                "SELECT COUNT(*) FROM customers
                  WHERE home_site_id = ?3 AND created_at >= ?1 AND created_at < ?2",
                params![from, to, site_id],
                |r| r.get(0),
            )?;
            Ok(DailyReport {
                site_id,
                date: day.date,
                orders,
                revenue_cents: gross_sales_cents - refunds_cents,
                gross_sales_cents,
                refunds_cents,
                checkins,
                new_customers,
            })
        })
        .await?;
    Ok(Json(report))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ProductSales {
    product_id: Uuid,
    sku: String,
    name: String,
    quantity: i64,
    sales_cents: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SalesByProduct {
    site_id: Uuid,
    date: NaiveDate,
    products: Vec<ProductSales>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// The day's figures are summed from every order of the day, then paged: a page holds one row
/// per product sold, so the rows are bounded by the catalog rather than by the day's sales.
#[utoipa::path(get, path = "/v1/reports/sales-by-product", tag = "reports", summary = "A site's local day (?site_id=&date=): quantity and sales per product, by SKU", params(DateQuery, PageQuery), responses((status = 200, description = "OK", body = SalesByProduct)))]
async fn sales_by_product(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<DateQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<SalesByProduct>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let day = resolve_day(&state, query.date.as_deref()).await?;
    let site_id = state.site_id;
    let orders = state
        .replica
        .read(move |c| orders_between(c, site_id, day.from, day.to))
        .await?;
    let mut by_product: HashMap<Uuid, ProductSales> = HashMap::new();
    // Oldest first: a product renamed during the day is reported under its latest name.
    for line in orders.into_iter().flat_map(|o| o.lines) {
        let sales = by_product
            .entry(line.product_id)
            .or_insert_with(|| ProductSales {
                product_id: line.product_id,
                sku: String::new(),
                name: String::new(),
                quantity: 0,
                sales_cents: 0,
            });
        sales.sku = line.sku;
        sales.name = line.name;
        sales.quantity += i64::from(line.quantity);
        sales.sales_cents += line.total_cents;
    }
    let mut products: Vec<ProductSales> = by_product.into_values().collect();
    products.sort_by(|a, b| a.sku.cmp(&b.sku).then(a.product_id.cmp(&b.product_id)));
    let paged = page.slice(products, |p| (p.sku.clone(), p.product_id));
    Ok(Json(SalesByProduct {
        site_id,
        date: day.date,
        products: paged.rows,
        next_after: paged.next_after,
    }))
}

//! HQ reports. A site's day (in the site's own timezone): orders, sales, refunds, revenue,
//! check-ins and sign-ups; sales by product; check-ins per local hour. Chain-wide: balances
//! below zero. What each figure means is in `store::reports` (and `docs/reports.md`).
//!
//! Site-scoped staff see their own sites' days only; balances are chain-wide, like the ledger.

use super::local_time::{self, site_timezone};
use crate::state::AppState;
use crate::store::{NegativeBalance, ProductSales};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::wire::SiteRecord;
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadReports, routes!(daily)))
        .routes(guarded(Permission::ReadReports, routes!(sales_by_product)))
        .routes(guarded(Permission::ReadReports, routes!(checkins_by_hour)))
        .routes(guarded(Permission::ReadReports, routes!(negative_balances)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DayQuery {
    site_id: Uuid,
    date: NaiveDate,
}

/// The site a day report is about, checked against the caller, with the day's UTC range.
struct SiteDay {
    site: SiteRecord,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

async fn site_day(state: &AppState, auth: &Auth, query: &DayQuery) -> Result<SiteDay, ApiError> {
    auth.ensure_site(query.site_id).await?;
    let site = state
        .store
        .get_site(query.site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let tz = site_timezone(&site.timezone)?;
    let (from, to) = local_time::day(tz, query.date)?;
    Ok(SiteDay { site, tz, from, to })
}

#[derive(Serialize, utoipa::ToSchema)]
struct DailyReportView {
    site_id: Uuid,
    date: NaiveDate,
    timezone: String,
    orders: i64,
    gross_sales_cents: i64,
    refunds_cents: i64,
    revenue_cents: i64,
    checkins: i64,
    new_customers: i64,
}

#[utoipa::path(get, path = "/v1/reports/daily", tag = "reports", summary = "A site's local day (?site_id=&date=): orders, gross sales, refunds, revenue, check-ins, new customers", params(DayQuery), responses((status = 200, description = "OK", body = DailyReportView), (status = 404, description = "No such site", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn daily(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<DayQuery>,
) -> Result<Json<DailyReportView>, ApiError> {
    let day = site_day(&state, &auth, &query).await?;
    let report = state
        .store
        .daily_report(day.site.id, day.from, day.to)
        .await?;
    Ok(Json(DailyReportView {
        site_id: day.site.id,
        date: query.date,
        timezone: day.site.timezone,
        orders: report.orders,
        gross_sales_cents: report.gross_sales_cents,
        refunds_cents: report.refunds_cents,
        revenue_cents: report.revenue_cents,
        checkins: report.checkins,
        new_customers: report.new_customers,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct SalesByProductView {
    site_id: Uuid,
    date: NaiveDate,
    timezone: String,
    products: Vec<ProductSales>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/sales-by-product", tag = "reports", summary = "A site's local day (?site_id=&date=): quantity and sales per product, by SKU", params(DayQuery, PageQuery), responses((status = 200, description = "OK", body = SalesByProductView), (status = 404, description = "No such site", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn sales_by_product(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<DayQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<SalesByProductView>, ApiError> {
    let page = paging.page::<(String, Uuid)>()?;
    let day = site_day(&state, &auth, &query).await?;
    let sales = state
        .store
        .sales_by_product(day.site.id, day.from, day.to)
        .await?;
    let paged = page.slice(sales, |s| (s.sku.clone(), s.product_id));
    Ok(Json(SalesByProductView {
        site_id: day.site.id,
        date: query.date,
        timezone: day.site.timezone,
        products: paged.rows,
        next_after: paged.next_after,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct CheckinsByHourView {
    site_id: Uuid,
    date: NaiveDate,
    timezone: String,
    hours: Vec<HourView>,
}

/// One hour of the local day. On a fall-back day the repeated hour appears twice, told apart
/// by its UTC offset; on a spring-forward day the skipped hour does not appear.
#[derive(Serialize, utoipa::ToSchema)]
struct HourView {
    /// The local time the hour starts at, `HH:MM`.
    hour: String,
    /// The site's UTC offset during that hour, `+HH:MM`.
    utc_offset: String,
    starts_at: DateTime<Utc>,
    count: i64,
}

#[utoipa::path(get, path = "/v1/reports/checkins-by-hour", tag = "reports", summary = "A site's local day (?site_id=&date=): check-ins per local hour (23 or 25 on DST days)", params(DayQuery), responses((status = 200, description = "OK", body = CheckinsByHourView), (status = 404, description = "No such site", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn checkins_by_hour(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<DayQuery>,
) -> Result<Json<CheckinsByHourView>, ApiError> {
    let day = site_day(&state, &auth, &query).await?;
    let bounds = local_time::hour_bounds(day.from, day.to);
    let counts = state.store.checkins_between(day.site.id, &bounds).await?;
    let hours = bounds
        .iter()
        .zip(counts)
        .map(|(start, count)| {
            let local = start.with_timezone(&day.tz);
            HourView {
                hour: local.format("%H:%M").to_string(),
                utc_offset: local.format("%:z").to_string(),
                starts_at: *start,
                count,
            }
        })
        .collect();
    Ok(Json(CheckinsByHourView {
        site_id: day.site.id,
        date: query.date,
        timezone: day.site.timezone,
        hours,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct NegativeBalancesView {
    balances: Vec<NegativeBalance>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/negative-balances", tag = "reports", summary = "Every customer balance below zero, chain-wide, lowest first", params(PageQuery), responses((status = 200, description = "OK", body = NegativeBalancesView)))]
async fn negative_balances(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<NegativeBalancesView>, ApiError> {
    let page = paging.page::<(i64, Uuid, String)>()?;
    let balances = state.store.negative_balances(state.clock.now()).await?;
    let paged = page.slice(balances, |b| {
        (b.balance, b.customer_id, b.account.as_str().to_string())
    });
    Ok(Json(NegativeBalancesView {
        balances: paged.rows,
        next_after: paged.next_after,
    }))
}

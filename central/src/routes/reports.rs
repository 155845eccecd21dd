//! Reports: a site's day (in the site's own timezone) of orders, revenue, check-ins, sign-ups.

use crate::state::AppState;
use aero_shared::ApiError;
use aero_shared::auth::extract::{Auth, require};
use aero_shared::auth::principal::Permission;
use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/reports/daily",
        get(daily.layer(require(Permission::ReadReports))),
    )
}

#[derive(Deserialize)]
struct DailyQuery {
    site_id: Uuid,
    date: NaiveDate,
}

#[derive(Serialize)]
struct DailyReportView {
    site_id: Uuid,
    date: NaiveDate,
    timezone: String,
    orders: i64,
    revenue_cents: i64,
    checkins: i64,
    new_customers: i64,
}

async fn daily(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<DailyQuery>,
) -> Result<Json<DailyReportView>, ApiError> {
    auth.ensure_site(query.site_id).await?;
    let site = state
        .store
        .get_site(query.site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let tz: Tz = site
        .timezone
        .parse()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("site has an invalid timezone")))?;
    let start_of = |date: NaiveDate| {
        // The first instant of the local day; a DST gap at midnight moves it forward.
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        tz.from_local_datetime(&midnight)
            .earliest()
            .unwrap_or_else(|| tz.from_utc_datetime(&midnight))
            .with_timezone(&Utc)
    };
    let next = query
        .date
        .succ_opt()
        .ok_or_else(|| ApiError::field("date", "out of range"))?;
    let report = state
        .store
        .daily_report(site.id, start_of(query.date), start_of(next))
        .await?;
    Ok(Json(DailyReportView {
        site_id: site.id,
        date: query.date,
        timezone: site.timezone,
        orders: report.orders,
        revenue_cents: report.revenue_cents,
        checkins: report.checkins,
        new_customers: report.new_customers,
    }))
}

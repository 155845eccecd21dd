//! Health, metrics and the sync status terminals use for their "offline" banner.

use super::AppState;
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::page::{NameKey, PageQuery};
use aero_shared::wire::{EdgeStatus, HealthStatus, ProductRecord};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(guarded(Permission::ReadStatus, routes!(status)))
        .routes(guarded(Permission::ReadCatalog, routes!(products)))
}

/// Healthy when the database writer commits and the replica reads: the same check that feeds
/// the systemd watchdog.
#[utoipa::path(get, path = "/healthz", tag = "status", responses((status = 200, description = "OK", body = HealthStatus)))]
async fn healthz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    let health = crate::health::EdgeHealth {
        writer: state.writer.clone(),
        replica: Arc::clone(&state.replica),
    };
    match aero_shared::systemd::probe(&health, crate::health::HTTP_CHECK_TIMEOUT).await {
        Ok(()) => Ok(Json(HealthStatus::up("ok"))),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            Err(ApiError::Unavailable(
                "the local database did not answer the health check".into(),
            ))
        }
    }
}

/// Ready when the replica answers and holds this edge's own site, i.e. the first pull landed
/// and device keys can be checked.
#[utoipa::path(get, path = "/readyz", tag = "status", responses((status = 200, description = "OK", body = HealthStatus)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    let site = state.site_id;
    let known = state
        .replica
        .read(move |c| crate::replica::apply::site_networks(c, site))
        .await?
        .is_some();
    if known {
        Ok(Json(HealthStatus::up("ready")))
    } else {
        Err(ApiError::Unavailable(
            "the replica has not received this site from central yet".into(),
        ))
    }
}

/// Sync health: whether central is reachable, pending ops, dead letters, replica lag.
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, description = "OK", body = EdgeStatus)))]
async fn status(State(state): State<AppState>, _auth: Auth) -> Result<Json<EdgeStatus>, ApiError> {
    Ok(Json(state.replica.status(Utc::now()).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
struct ProductList {
    products: Vec<ProductRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// The products this venue sells now, by SKU.
#[utoipa::path(get, path = "/v1/products", tag = "status", params(PageQuery), responses((status = 200, description = "OK", body = ProductList)))]
async fn products(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let products = state
        .replica
        .active_products(page.after.clone(), page.fetch())
        .await?;
    let paged = page.finish(products, |p| (p.sku.clone(), p.id));
    Ok(Json(ProductList {
        products: paged.rows,
        next_after: paged.next_after,
    }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "status", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let now = Utc::now();
    let status = state.replica.status(now).await?;
    let gauges = &state.gauges;
    gauges.pending_ops.set(status.pending_ops);
    gauges
        .oldest_pending_age_seconds
        .set(status.oldest_pending_age_seconds.unwrap_or(0));
    gauges.dead_letters.set(status.dead_letters);
    gauges.online.set(i64::from(status.online));
    gauges.cursor.set(status.cursor);
    gauges
        .last_push_timestamp_seconds
        .set(status.last_push_at.map_or(0, |t| t.timestamp()));
    gauges
        .last_pull_timestamp_seconds
        .set(status.last_pull_at.map_or(0, |t| t.timestamp()));
    gauges.replica_lag_seconds.set(
        status
            .last_pull_at
            .map_or(0, |t| (now - t).num_seconds().max(0)),
    );
    Ok((
        [(header::CONTENT_TYPE, aero_shared::metrics::CONTENT_TYPE)],
        aero_shared::metrics::render(&state.registry),
    ))
}

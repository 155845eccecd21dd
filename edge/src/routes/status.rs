//! Health, metrics and the sync status terminals use for their "offline" banner.

use super::AppState;
use aero_shared::ApiError;
use aero_shared::auth::extract::{Auth, require};
use aero_shared::auth::principal::Permission;
use aero_shared::wire::{EdgeStatus, ProductRecord};
use axum::extract::State;
use axum::handler::Handler;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/status",
            get(status.layer(require(Permission::ReadStatus))),
        )
        .route(
            "/v1/products",
            get(products.layer(require(Permission::ReadCatalog))),
        )
}

/// Healthy when the database writer commits and the replica reads: the same check that feeds
/// the systemd watchdog.
async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let health = crate::health::EdgeHealth {
        writer: state.writer.clone(),
        replica: Arc::clone(&state.replica),
    };
    match aero_shared::systemd::probe(&health, crate::health::HTTP_CHECK_TIMEOUT).await {
        Ok(()) => Ok(Json(json!({ "status": "ok" }))),
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
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let site = state.site_id;
    let known = state
        .replica
        .read(move |c| crate::replica::apply::site_networks(c, site))
        .await?
        .is_some();
    if known {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(ApiError::Unavailable(
            "the replica has not received this site from central yet".into(),
        ))
    }
}

async fn status(State(state): State<AppState>, _auth: Auth) -> Result<Json<EdgeStatus>, ApiError> {
    Ok(Json(state.replica.status(Utc::now()).await?))
}

async fn products(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>, ApiError> {
    let products: Vec<ProductRecord> = state.replica.active_products().await?;
    Ok(Json(json!({ "products": products })))
}

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

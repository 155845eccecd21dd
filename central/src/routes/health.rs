//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use crate::state::AppState;
use aero_shared::metrics::{CONTENT_TYPE, render};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// Healthy when a store round trip answers in time: the same check that feeds the systemd
/// watchdog.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let health = crate::health::StoreHealth(std::sync::Arc::clone(&state.store));
    match aero_shared::systemd::probe(&health, crate::health::HTTP_CHECK_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "detail": "database unreachable" })),
            )
        }
    }
}

/// Ready when the database answers: a load balancer stops routing here when it does not.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "detail": "database unreachable" })),
            )
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(head) = state.store.change_head().await {
        state.sync_metrics.change_head.set(head);
    }
    let edges = &state.sync_metrics.edges;
    if let Err(err) = edges.refresh(&*state.store, state.clock.now()).await {
        tracing::warn!(error = %err, "reading the edges' sync state for metrics failed");
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(&state.registry),
    )
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

//! Operational endpoints: liveness, readiness and Prometheus metrics.

use crate::state::AppState;
use aero_shared::metrics::{CONTENT_TYPE, render};
use aero_shared::wire::HealthStatus;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Healthy when a store round trip answers in time: the same check that feeds the systemd
/// watchdog.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = HealthStatus), (status = 503, description = "The store does not answer", body = HealthStatus)))]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let health = crate::health::StoreHealth(std::sync::Arc::clone(&state.store));
    match aero_shared::systemd::probe(&health, crate::health::HTTP_CHECK_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, Json(HealthStatus::up("ok"))),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthStatus::unavailable("database unreachable")),
            )
        }
    }
}

/// Ready when the database answers: a load balancer stops routing here when it does not.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready", body = HealthStatus), (status = 503, description = "Not ready", body = HealthStatus)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(HealthStatus::up("ready"))),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthStatus::unavailable("database unreachable")),
            )
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
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

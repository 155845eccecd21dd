//! Central's HTTP API: one module per resource, each exporting `router()`.

mod audit;
mod auth;
mod catalog;
mod customers;
pub mod devices;
mod health;
mod leaderboards;
mod local_time;
mod plugs;
mod reports;
mod sites;
mod sync;
pub mod users;

use crate::state::AppState;
use axum::Router;

pub fn api_router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(sites::router())
        .merge(devices::router())
        .merge(users::router())
        .merge(catalog::router())
        .merge(plugs::router())
        .merge(audit::router())
        .merge(reports::router())
        .merge(leaderboards::router())
        .merge(customers::router())
        .merge(sync::router())
}

/// Pagination caps shared by list endpoints.
pub(crate) fn clamp_limit(limit: Option<u32>, default: u32, max: u32) -> u32 {
    limit.unwrap_or(default).clamp(1, max)
}

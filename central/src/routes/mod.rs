//! Central's HTTP API: one module per resource, each exporting `router()`.

mod audit;
mod auth;
mod catalog;
mod customers;
mod dead_letters;
pub mod devices;
mod health;
mod leaderboards;
mod local_time;
mod plugs;
mod reports;
mod sites;
mod sync;
pub mod users;
mod waiver_texts;

use crate::state::AppState;
use aero_shared::openapi;
use utoipa_axum::router::OpenApiRouter;

/// The router and the OpenAPI document describing it, from the same declarations; the
/// router serves the document at `/openapi.json` and renders it at `/docs`.
pub fn documented() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let served = openapi::ServedDocument::default();
    let (router, doc) = openapi::document_routes(api_router(), &served).split_for_parts();
    let doc = openapi::finish(
        doc,
        "AeroSports central",
        "The HQ admin API and the sync hub venue edges push to and pull from. Staff log in at `/v1/auth/login` and send `Authorization: Bearer <token>`; edges authenticate with their device key in `X-Api-Key`. Errors are `application/problem+json`.",
        &served,
    );
    (router, doc)
}

/// Every route of central, each registered with its operation in the OpenAPI document.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(sites::router())
        .merge(dead_letters::router())
        .merge(devices::router())
        .merge(users::router())
        .merge(catalog::router())
        .merge(waiver_texts::router())
        .merge(plugs::router())
        .merge(audit::router())
        .merge(reports::router())
        .merge(leaderboards::router())
        .merge(customers::router())
        .merge(sync::router())
}

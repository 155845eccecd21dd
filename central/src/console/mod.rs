//! The HQ console: server-rendered HTML pages under `/console` for HQ staff and venue managers,
//! with htmx (vendored, built into the binary) refreshing the live parts.
//!
//! Pages are not part of the JSON API and are not in `/openapi.json`. They read and change
//! data only through the API itself ([`api::Api`]), as the signed-in user, so a page can show
//! or do nothing that user could not do with curl. One module per page or concern.

mod api;
mod assets;
mod audit;
mod catalogue;
mod dead_letters;
mod devices;
mod layout;
mod leaderboards;
mod login;
mod overview;
mod plugs;
mod session;
mod staff;
mod venue;
mod waiver_texts;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

pub use session::csrf_key;

/// What every console handler shares.
#[derive(Clone)]
pub struct Console {
    /// The API's routes (with their own layers, inside the shared pipeline): where console
    /// requests are forwarded to.
    api: Router,
    /// Signs each session's CSRF token.
    csrf_key: Arc<[u8; 32]>,
    /// Cookies are marked `Secure` when the console's public URL is HTTPS.
    secure_cookies: bool,
}

/// The console's routes. `api` is the router serving `/v1`, without the outer pipeline (the
/// console's own request already went through it).
pub fn router(api: Router, csrf_key: [u8; 32], secure_cookies: bool) -> Router {
    let console = Console {
        api,
        csrf_key: Arc::new(csrf_key),
        secure_cookies,
    };
    Router::new()
        .route("/console", get(overview::page))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/overview/table", get(overview::table))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/venues", post(overview::create))
        .route("/console/venues/{site_id}", get(venue::page))
        .route("/console/venues/{site_id}/devices", post(devices::issue))
        .route(
            "/console/venues/{site_id}/enrollment-tokens",
            post(devices::enrollment_token),
        )
        .route("/console/devices/{device_id}/revoke", post(devices::revoke))
        .route("/console/venues/{site_id}/staff", post(staff::add))
        .route("/console/users/{user_id}/access", post(staff::set_access))
        .route(
            "/console/venues/{site_id}/dead-letters/{op_id}",
            post(dead_letters::decide),
        )
        .route(
            "/console/plugs/{plug_id}/override",
            post(plugs::set_override),
        )
        .route("/console/catalogue", get(catalogue::page))
        .route("/console/catalogue/products", post(catalogue::add_product))
        .route(
            "/console/catalogue/products/{id}/retire",
            post(catalogue::retire_product),
        )
        .route("/console/catalogue/games", post(catalogue::add_game))
        .route(
            "/console/catalogue/waiver-texts",
            post(waiver_texts::publish),
        )
        .route("/console/audit", get(audit::page))
        .route("/console/assets/{name}", get(assets::serve))
        .with_state(console)
}

/// The answer to a form whose CSRF token is missing or wrong: nothing was changed.
fn csrf_refused() -> Response {
    layout::error_page(
        StatusCode::FORBIDDEN,
        "The form's security token is missing or wrong, so nothing was changed. Reload the page and try again.",
    )
}

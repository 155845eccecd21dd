//! `GET /v1/live`: the venue's live feed over a websocket (see [`crate::live`]). `?since=SEQ`
//! resumes after the last event a client saw.

use super::AppState;
use crate::live::socket::{self, Ended};
use crate::live::visibility::Audience;
use aero_shared::ApiError;
use aero_shared::auth::extract::{API_KEY_HEADER, Auth};
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

/// Bytes queued towards one client beyond what its socket took (one message at a time is sent).
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(
        guarded(Permission::WatchLive, routes!(live))
            .map(|route| route.route_layer(from_fn(credentials_from_query))),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LiveQuery {
    since: Option<u64>,
}

#[utoipa::path(get, path = "/v1/live", tag = "live", params(LiveQuery), responses((status = 101, description = "Switched to a websocket"), (status = 400, description = "Not a websocket handshake", content_type = "application/problem+json", body = aero_shared::Problem), (status = 426, description = "The connection cannot be upgraded", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn live(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<LiveQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let slot = state.live.admit().ok_or_else(|| {
        ApiError::Unavailable(
            "the live feed has as many clients as it serves; retry shortly".into(),
        )
    })?;
    let audience = Audience::of(&auth.principal);
    // Subscribed before the upgrade is answered: nothing published once the client holds its
    // connection can be missed.
    let subscription = state.live.subscribe(query.since);
    let hub = Arc::clone(&state.live);
    // The protocol layer refuses a bigger frame before reading it whole; the connection then
    // closes it with 1009.
    let max_message = hub.settings().max_message_bytes;
    Ok(upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .read_buffer_size(aero_shared::websocket::READ_BUFFER_BYTES)
        .on_upgrade(move |ws| async move {
            let (tx, rx) = ws.split();
            let settings = *hub.settings();
            let ended = socket::run(
                tx,
                rx,
                audience,
                subscription,
                settings.ping_interval(),
                settings.send_timeout(),
                settings.inbound(),
                hub.closing(),
            )
            .await;
            match ended {
                Ended::TooSlow | Ended::Stalled => {
                    hub.metrics().slow_clients_dropped.inc();
                    tracing::info!(?ended, ?audience, "dropped a live client that fell behind");
                }
                Ended::TooBig | Ended::Flooding => {
                    tracing::info!(?ended, ?audience, "closed a live client that sent too much");
                }
                Ended::ClientLeft | Ended::Unresponsive | Ended::ServerClosing => {}
            }
            drop(slot);
        }))
}

/// Browsers cannot set headers on a websocket, so a scoreboard page may pass its key as
/// `?api_key=` and a staff screen its token as `?access_token=`. They become the usual headers
/// (a header, if sent, wins) and leave the URI, so nothing after this (logs included) sees them.
async fn credentials_from_query(mut request: Request, next: Next) -> Response {
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri()) else {
        return next.run(request).await;
    };
    if !pairs
        .iter()
        .any(|(name, _)| name == "api_key" || name == "access_token")
    {
        return next.run(request).await;
    }
    let headers = request.headers_mut();
    let has_credential =
        headers.contains_key(API_KEY_HEADER) || headers.contains_key(header::AUTHORIZATION);
    let mut kept = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "api_key" if !has_credential => {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(API_KEY_HEADER, value);
                }
            }
            "access_token" if !has_credential => {
                if let Ok(value) = HeaderValue::from_str(&format!("Bearer {value}")) {
                    headers.insert(header::AUTHORIZATION, value);
                }
            }
            "api_key" | "access_token" => {}
            // A cursor is digits; anything else stays invalid, and is refused as such.
            "since" if value.bytes().all(|b| b.is_ascii_digit()) => {
                kept.push(format!("since={value}"));
            }
            "since" => kept.push("since=invalid".into()),
            _ => {}
        }
    }
    let path = request.uri().path();
    let rebuilt = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(path_and_query) = rebuilt.parse::<PathAndQuery>() {
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    next.run(request).await
}

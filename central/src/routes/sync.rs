//! The edges' side of central: enrollment, outbox push, change-feed pull, and the websocket
//! that hints "something changed" so a venue pulls within about a second.

use crate::hints::HintReceiver;
use crate::presence::{HINT_PING_EVERY, Heartbeat};
use crate::state::AppState;
use crate::store::Redeemed;
use aero_shared::ApiError;
use aero_shared::auth::api_key::{ApiKey, KeyHash};
use aero_shared::auth::extract::Auth;
use aero_shared::auth::login;
use aero_shared::auth::principal::{DeviceKind, Permission, Principal};
use aero_shared::client_ip::ClientAddr;
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::problem::FieldError;
use aero_shared::wire::{
    DeviceRecord, EnrollRequest, EnrollResponse, OutboxBacklog, PullResponse, PushRequest,
    PushResponse,
};
use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The header an edge names its version in when it opens the hint socket.
pub const EDGE_VERSION_HEADER: &str = "x-aero-edge-version";
/// Longest edge version kept; a longer (or non-ASCII) one is ignored.
const MAX_EDGE_VERSION_LEN: usize = 40;

/// Most change-feed rows one pull returns.
pub const MAX_PULL_ROWS: u32 = 5_000;
/// Roughly how much change data one pull page carries.
pub const PULL_PAGE_BYTES: usize = 512 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(guarded(Permission::Sync, routes!(push)))
        .routes(guarded(Permission::Sync, routes!(pull)))
        .routes(guarded(Permission::Sync, routes!(notify)))
}

#[utoipa::path(post, path = "/v1/edge/enroll", tag = "sync", summary = "Trade an enrollment token for the edge's site credential", request_body = EnrollRequest, responses((status = 200, description = "OK", body = EnrollResponse), (status = 401, description = "The enrollment token is unknown, used or expired", content_type = "application/problem+json", body = aero_shared::Problem), (status = 429, description = "Too many attempts from this client", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn enroll(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(body): ValidJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    // Tokens are guessable only by brute force: throttle attempts like logins.
    login::admit(&state.security, client)?;
    let key = ApiKey::generate();
    let now = state.clock.now();
    let edge = DeviceRecord {
        id: Uuid::now_v7(),
        site_id: Uuid::nil(),
        name: body.name.unwrap_or_else(|| "edge".into()),
        kind: DeviceKind::Edge,
        allowed_networks: Vec::new(),
        key_hash: key.hash().as_str().to_string(),
        created_at: now,
        revoked_at: None,
    };
    match state
        .store
        .redeem_enrollment_token(KeyHash::of(body.token.trim()).as_str(), now, &edge)
        .await?
    {
        Redeemed::Enrolled { site, acked_seq } => {
            tracing::info!(site_id = %site.id, device_id = %edge.id, "edge enrolled");
            Ok(Json(EnrollResponse {
                site_id: site.id,
                device_id: edge.id,
                api_key: key.expose().to_string(),
                next_seq: acked_seq + 1,
                site,
                store_id: state.store.store_id(),
            }))
        }
        Redeemed::Refused => {
            state.security.limits.record_failed_auth(client);
            Err(ApiError::Unauthorized(
                "the enrollment token is unknown, used or expired",
            ))
        }
    }
}

fn edge_site(auth: &Auth) -> Result<Uuid, ApiError> {
    match auth.principal {
        Principal::Device {
            site_id,
            kind: DeviceKind::Edge,
            ..
        } => Ok(site_id),
        _ => Err(ApiError::Forbidden("only an enrolled edge may sync")),
    }
}

#[utoipa::path(post, path = "/v1/sync/push", tag = "sync", summary = "Push a batch of outbox ops (idempotent by site and seq)", request_body = PushRequest, responses((status = 200, description = "OK", body = PushResponse)))]
async fn push(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let site_id = edge_site(&auth)?;
    let store_id = state.store.store_id();
    if let Some(bound) = body.store_id.filter(|bound| *bound != store_id) {
        return Err(ApiError::Conflict(format!(
            "the edge is bound to database {bound}, but this is database {store_id}: refusing its ops"
        )));
    }
    let outcome = state
        .store
        .push(site_id, &body.ops, state.clock.now())
        .await?;
    state.sync_metrics.pushed_ops.inc_by(body.ops.len() as u64);
    state
        .sync_metrics
        .rejected_ops
        .inc_by(outcome.rejected.len() as u64);
    if let Some(seq) = outcome.forked_at {
        tracing::warn!(%site_id, seq, acked_seq = outcome.acked_seq, "push forked from the ops central holds; the edge renumbers");
    }
    Ok(Json(PushResponse {
        acked_seq: outcome.acked_seq,
        expected_seq: outcome.expected_seq,
        rejected: outcome.rejected,
        forked_at: outcome.forked_at,
        store_id,
        head: state.store.change_head().await?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PullQuery {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
    /// Ops waiting in the edge's outbox, shown on HQ's chain status.
    #[param(minimum = 0)]
    pending_ops: Option<i64>,
    /// When the oldest op in the edge's outbox was written; omitted when none waits.
    oldest_pending_at: Option<DateTime<Utc>>,
}

impl PullQuery {
    /// What the edge said of its outbox, if it said anything; a negative count is a 422.
    fn outbox(&self) -> Result<Option<OutboxBacklog>, ApiError> {
        match self.pending_ops {
            None => Ok(None),
            Some(n) if n < 0 => Err(ApiError::Validation(vec![FieldError::new(
                "pending_ops",
                "must be 0 or more",
            )])),
            Some(pending_ops) => Ok(Some(OutboxBacklog {
                pending_ops,
                oldest_pending_at: self.oldest_pending_at.filter(|_| pending_ops > 0),
            })),
        }
    }
}

#[utoipa::path(get, path = "/v1/sync/pull", tag = "sync", summary = "Pull the site's change feed after a cursor", params(PullQuery), responses((status = 200, description = "OK", body = PullResponse)))]
async fn pull(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<PullQuery>,
) -> Result<Json<PullResponse>, ApiError> {
    let site_id = edge_site(&auth)?;
    let outbox = query.outbox()?;
    let after = query.after.max(0);
    // An edge asks for what it can apply; the page is bounded here whatever it asks.
    let limit = query.limit.unwrap_or(1000).clamp(1, MAX_PULL_ROWS);
    let changes = state
        .store
        .pull(site_id, after, limit, PULL_PAGE_BYTES)
        .await?;
    let next_cursor = changes.last().map_or(after, |c| c.seq);
    let head = state.store.change_head().await?;
    let anchor = if after > 0 {
        state.store.change_anchor(site_id, after).await?
    } else {
        None
    };
    let acked_seq = state.store.acked_seq(site_id).await?;
    state
        .store
        .record_pull(site_id, next_cursor, state.clock.now(), outbox)
        .await?;
    Ok(Json(PullResponse {
        // The global head may belong to other sites' rows: `more` can be a harmless maybe,
        // never a false "done".
        more: !changes.is_empty() && next_cursor < head,
        changes,
        next_cursor,
        store_id: state.store.store_id(),
        head,
        acked_seq,
        anchor,
    }))
}

/// Websocket: sends `{"head": N}` on connecting and whenever the change log grows in the edge's
/// scope (its own rows or chain-wide ones), and a ping every 20 s so dead connections are
/// noticed by both sides. An edge may name its version in `X-Aero-Edge-Version`; while the
/// socket is open the venue shows as online in `GET /v1/sites/status`.
#[utoipa::path(get, path = "/v1/sync/notify", tag = "sync", params(("X-Aero-Edge-Version" = Option<String>, Header, description = "The edge's version, shown on HQ's chain status")), responses((status = 101, description = "Switched to a websocket"), (status = 400, description = "Not a websocket handshake", content_type = "application/problem+json", body = aero_shared::Problem), (status = 426, description = "The connection cannot be upgraded", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn notify(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let site_id = edge_site(&auth)?;
    let edge_version = headers
        .get(EDGE_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            (1..=MAX_EDGE_VERSION_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string);
    // Subscribed before the first head is read, so no change falls between the two.
    let hints = state.hints.subscribe(site_id);
    let head = state.hints.head();
    let closing = state.shutdown.clone();
    let presence = state.presence.clone();
    let mut heartbeat = Heartbeat::new(Arc::clone(&state.store), Arc::clone(&state.clock), site_id);
    let upgrade = upgrade.read_buffer_size(aero_shared::websocket::READ_BUFFER_BYTES);
    Ok(upgrade.on_upgrade(move |socket| async move {
        // Online on HQ's overview for exactly as long as the socket is open: on this instance
        // by its presence, on the others by the heartbeat it writes.
        let _connected = presence.connect(site_id, edge_version);
        heartbeat.heard().await;
        stream_hints(socket, head, hints, closing, &mut heartbeat).await;
        heartbeat.closed().await;
    }))
}

async fn stream_hints(
    mut socket: WebSocket,
    head: i64,
    mut hints: HintReceiver,
    closing: tokio_util::sync::CancellationToken,
    heartbeat: &mut Heartbeat,
) {
    let mut ping = tokio::time::interval(HINT_PING_EVERY);
    let send_head = |n: i64| Message::Text(format!("{{\"head\":{n}}}").into());
    if socket.send(send_head(head)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = closing.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            hinted = hints.next() => {
                let Some(n) = hinted else {
                    return;
                };
                if socket.send(send_head(n)).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                // A cut cable loses no packet it could notice: only the missing pongs tell.
                if heartbeat.is_silent() {
                    tracing::info!("closing a silent hint socket");
                    return;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // A pong, or anything else: the edge is there.
                Some(Ok(_)) => heartbeat.heard().await,
            },
        }
    }
}

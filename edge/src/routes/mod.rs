//! The venue API. Every request is answered from the local replica: no request ever waits for
//! central, so terminals keep working through an outage.

pub mod balances;
pub mod checkins;
pub mod customers;
pub mod dead_letters;
pub mod live;
pub mod login;
pub mod orders;
pub mod plugs;
pub mod refunds;
pub mod reports;
pub mod scores;
pub mod status;
pub mod waiver_texts;

use crate::outbox::Writer;
use crate::replica::Replica;
use aero_shared::auth::extract::Security;
use aero_shared::clock::SharedClock;
use aero_shared::handler_state::{HandlerState, WithSecurity};
use aero_shared::metrics::HttpMetrics;
use aero_shared::openapi;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

/// Sync health as Prometheus gauges, refreshed from the replica at each scrape.
#[derive(Debug, Default)]
pub struct SyncGauges {
    pub pending_ops: Gauge,
    pub oldest_pending_age_seconds: Gauge,
    pub dead_letters: Gauge,
    pub online: Gauge,
    pub cursor: Gauge,
    pub last_push_timestamp_seconds: Gauge,
    pub last_pull_timestamp_seconds: Gauge,
    /// Seconds since the last successful pull (0 before the first).
    pub replica_lag_seconds: Gauge,
    /// Central's change-log head as the last pull of this process saw it (0 until then); the
    /// sync engine sets it.
    pub central_head: Gauge,
    /// Changes central held past this edge's cursor at the last pull (0 when caught up); the
    /// sync engine sets it.
    pub replica_lag_changes: Gauge,
}

impl SyncGauges {
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "outbox_pending_ops",
            "Local ops not yet acknowledged by central",
            gauges.pending_ops.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged op (0 when none)",
            gauges.oldest_pending_age_seconds.clone(),
        );
        registry.register(
            "dead_letters",
            "Ops central rejected for good",
            gauges.dead_letters.clone(),
        );
        registry.register(
            "central_online",
            "1 when the last sync with central succeeded",
            gauges.online.clone(),
        );
        registry.register(
            "pull_cursor",
            "Position in central's change feed",
            gauges.cursor.clone(),
        );
        registry.register(
            "last_push_timestamp_seconds",
            "Unix time of the last successful push (0 before the first)",
            gauges.last_push_timestamp_seconds.clone(),
        );
        registry.register(
            "last_pull_timestamp_seconds",
            "Unix time of the last successful pull (0 before the first)",
            gauges.last_pull_timestamp_seconds.clone(),
        );
        registry.register(
            "replica_lag_seconds",
            "Seconds since the last successful pull from central (0 before the first)",
            gauges.replica_lag_seconds.clone(),
        );
        registry.register(
            "central_head",
            "Central's change-log head at the last pull of this process (0 until then)",
            gauges.central_head.clone(),
        );
        registry.register(
            "replica_lag_changes",
            "Changes central held past this edge's cursor at the last pull: 0 when caught up, else central's head minus the cursor (an upper bound)",
            gauges.replica_lag_changes.clone(),
        );
        aero_shared::metrics::register_build_info(registry, env!("CARGO_PKG_VERSION"));
        gauges
    }
}

/// What every handler reaches: the services below, behind one reference count.
pub type AppState = HandlerState<Services>;

/// The edge's services, as the routes use them.
#[derive(Debug)]
pub struct Services {
    pub replica: Arc<Replica>,
    pub writer: Writer,
    pub security: Arc<Security>,
    /// The one site this edge serves.
    pub site_id: Uuid,
    pub registry: Arc<Registry>,
    pub gauges: Arc<SyncGauges>,
    pub http_metrics: Arc<HttpMetrics>,
    /// The venue's live feed; routes publish after their write commits.
    pub live: Arc<crate::live::LiveHub>,
    /// What venue records are stamped with and sessions expire by; tests move it by hand.
    pub clock: SharedClock,
    /// The venue's plugs as the reconcile loop last found them.
    pub plugs: Arc<crate::plugs::reconcile::PlugBoard>,
}

impl WithSecurity for Services {
    fn security(&self) -> &Arc<Security> {
        &self.security
    }
}

/// The router and the OpenAPI document describing it, from the same declarations; the
/// router serves the document at `/openapi.json` and renders it at `/docs`.
pub fn documented() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let served = openapi::ServedDocument::default();
    let (router, doc) = openapi::document_routes(api_router(), &served).split_for_parts();
    let doc = openapi::finish(
        doc,
        "AeroSports venue edge",
        "The venue API, answered from the local replica so terminals keep working while central is unreachable. Staff log in at `/v1/auth/login` and send `Authorization: Bearer <token>`; devices send their API key in `X-Api-Key`. Errors are `application/problem+json`.",
        &served,
    );
    (router, doc)
}

/// Every route of the edge, each registered with its operation in the OpenAPI document.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(status::router())
        .merge(customers::router())
        .merge(waiver_texts::router())
        .merge(login::router())
        .merge(dead_letters::router())
        .merge(orders::router())
        .merge(refunds::router())
        .merge(balances::router())
        .merge(checkins::router())
        .merge(reports::router())
        .merge(scores::router())
        .merge(live::router())
        .merge(plugs::router())
}

/// Maps a failed local write to its problem: a request the write refused answers with its own
/// problem; a fenced edge answers 503 with the reason (the write was not taken, so nothing is
/// lost); anything else is a bug, a 500.
pub fn write_error(err: anyhow::Error) -> aero_shared::ApiError {
    let err = match err.downcast::<aero_shared::ApiError>() {
        Ok(refused) => return refused,
        Err(err) => err,
    };
    match err.downcast::<crate::outbox::Fenced>() {
        Ok(fenced) => aero_shared::ApiError::Unavailable(fenced.to_string()),
        Err(err) => aero_shared::ApiError::Internal(err),
    }
}

/// Refuses a request from inside a write: nothing it wrote stays (the writer takes back a refused
/// request's writes, see [`crate::outbox`]), an idempotent request is not marked committed, and
/// [`write_error`] answers with `problem`. Refusing before writing anything costs least.
pub fn refuse<T>(problem: aero_shared::ApiError) -> anyhow::Result<T> {
    Err(anyhow::Error::new(problem))
}

//! The state every central handler shares.

use crate::config::Settings;
use crate::hints::ChangeHints;
use crate::store::{Actor, Store};
use aero_shared::auth::extract::{Auth, Security};
use aero_shared::clock::SharedClock;
use aero_shared::handler_state::{HandlerState, WithSecurity};
use aero_shared::metrics::HttpMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every handler reaches: the services below, behind one reference count.
pub type AppState = HandlerState<Services>;

/// Central's services, as the routes use them.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub security: Arc<Security>,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub registry: Arc<Registry>,
    pub http_metrics: Arc<HttpMetrics>,
    pub sync_metrics: Arc<SyncMetrics>,
    /// Which venues the change log grew for, watched from the database itself so every
    /// instance behind a load balancer hints its edges of every change, whichever wrote it.
    pub hints: ChangeHints,
    /// The venues whose edges hold a hint socket open to this instance.
    pub presence: crate::presence::EdgePresence,
    /// Cancelled when the server begins to shut down, so long-lived websockets end too.
    pub shutdown: CancellationToken,
}

impl WithSecurity for Services {
    fn security(&self) -> &Arc<Security> {
        &self.security
    }
}

/// The audit identity of an authenticated caller.
pub fn actor(auth: &Auth) -> Actor {
    Actor {
        kind: auth.principal.kind_label(),
        id: Some(auth.principal.id()),
        name: auth.principal.display_name(),
        ip: Some(auth.client),
        request_id: auth.request_id.clone(),
    }
}

/// Sync traffic as HQ sees it.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    pub pushed_ops: Counter,
    pub rejected_ops: Counter,
    pub change_head: Gauge,
    /// The chain's edges as aggregates (see [`crate::edge_health`]).
    pub edges: crate::edge_health::EdgeHealth,
}

impl SyncMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            edges: crate::edge_health::EdgeHealth::register(registry),
            ..Self::default()
        };
        aero_shared::metrics::register_build_info(registry, env!("CARGO_PKG_VERSION"));
        registry.register(
            "sync_pushed_ops",
            "Ops received from edges",
            metrics.pushed_ops.clone(),
        );
        registry.register(
            "sync_rejected_ops",
            "Ops rejected permanently: the venues' dead letters",
            metrics.rejected_ops.clone(),
        );
        registry.register(
            "sync_change_head",
            "Highest seq of the change log",
            metrics.change_head.clone(),
        );
        metrics
    }
}

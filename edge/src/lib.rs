//! `aero-edge`: the venue daemon. It keeps a replica of its site's HQ data, serves the venue's
//! terminals from it, records every local mutation in a transactional outbox, and syncs with
//! central (push first, then pull) whenever central is reachable.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod credential;
pub mod dead_letters;
pub mod health;
pub mod live;
pub mod ops;
pub mod outbox;
pub mod plugs;
pub mod replica;
pub mod routes;
pub mod shutdown;
pub mod sync;

use crate::auth::{ReplicaCredentials, ReplicaIdempotency};
use crate::config::Settings;
use crate::credential::Credential;
use crate::outbox::Writer;
use crate::replica::Replica;
use crate::routes::{AppState, Services, SyncGauges};
use crate::sync::SyncEngine;
use aero_shared::auth::extract::Security;
use aero_shared::auth::jwt::JwtKeys;
use aero_shared::clock::{SharedClock, SystemClock};
use aero_shared::idempotency::{self, Idempotency, IdempotencyStore};
use aero_shared::metrics::HttpMetrics;
use aero_shared::pipeline;
use aero_shared::ratelimit::RateLimits;
use axum::Router;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The audience of staff tokens this edge issues; central's tokens are not valid here.
pub const JWT_AUDIENCE: &str = "aero-edge";

/// A built edge: the HTTP application and the sync engine, not yet running.
#[derive(Debug)]
pub struct Edge {
    pub router: Router,
    pub state: AppState,
    pub engine: Arc<SyncEngine>,
}

/// Loads the credential from the data dir; a clear error when this edge was never enrolled.
pub fn load_credential(settings: &Settings) -> anyhow::Result<Credential> {
    let data_dir = settings.data_dir();
    Credential::load(&data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "this edge is not enrolled ({} not found): run `aero-edge enroll --central URL --token TOKEN` first",
            credential::path_in(&data_dir).display()
        )
    })
}

/// Opens the replica, starts the database writer and builds routes and sync engine.
pub fn build(settings: &Settings, credential: Credential) -> anyhow::Result<Edge> {
    build_with_clock(settings, credential, Arc::new(SystemClock))
}

/// [`build`] with the clock the venue's routes stamp records and expire sessions by.
pub fn build_with_clock(
    settings: &Settings,
    credential: Credential,
    clock: SharedClock,
) -> anyhow::Result<Edge> {
    let data_dir = settings.data_dir();
    let (replica, write_conn) = Replica::open(&data_dir, credential.site_id, credential.next_seq)?;
    // Bind the replica to the central database that issued the credential.
    write_conn.execute(
        "UPDATE sync_state SET central_store_id = ?1 WHERE id = 1 AND central_store_id IS NULL",
        [credential.store_id],
    )?;
    let writer = Writer::start(write_conn)?;
    let jwt_secret = aero_shared::files::load_or_create_secret(&data_dir.join("jwt-secret"))?;
    let security = Arc::new(Security {
        jwt: JwtKeys::new(
            &jwt_secret,
            JWT_AUDIENCE,
            JWT_AUDIENCE,
            chrono::Duration::minutes(settings.jwt_ttl_minutes.clamp(1, 24 * 60)),
        ),
        credentials: Arc::new(ReplicaCredentials::new(Arc::clone(&replica))),
        limits: RateLimits::new(&settings.limits),
        hq_networks: Vec::new(),
        served_site: Some(credential.site_id),
    });
    let mut registry = Registry::with_prefix("aero_edge");
    let http_metrics = Arc::new(HttpMetrics::register(&mut registry));
    let gauges = Arc::new(SyncGauges::register(&mut registry));
    let live = Arc::new(live::LiveHub::with_settings(settings.live));
    live.register_metrics(&mut registry);
    let state = AppState::new(Services {
        replica: Arc::clone(&replica),
        writer: writer.clone(),
        security: Arc::clone(&security),
        site_id: credential.site_id,
        registry: Arc::new(registry),
        gauges,
        http_metrics: Arc::clone(&http_metrics),
        live,
        clock,
        plugs: Arc::default(),
    });
    let idempotency_store: Arc<dyn IdempotencyStore> = Arc::new(ReplicaIdempotency(writer.clone()));
    let (router, _) = routes::documented();
    let router = router
        .layer(Idempotency {
            store: Arc::clone(&idempotency_store),
            security: Arc::clone(&security),
        })
        .with_state(state.clone());
    let router = pipeline::apply(
        router,
        &settings.limits,
        &settings.cors_origins,
        &settings.trusted_proxies,
        http_metrics,
    );
    let engine = Arc::new(
        SyncEngine::new(credential, settings.sync, replica, writer)?.with_lag_gauges(
            state.gauges.central_head.clone(),
            state.gauges.replica_lag_changes.clone(),
        ),
    );
    Ok(Edge {
        router,
        state,
        engine,
    })
}

/// Runs the edge on a bound listener until `shutdown` resolves: the HTTP API, the sync loop
/// and the change-hint socket.
///
/// systemd hears `READY=1` once the replica is open and the listener bound, watchdog pings
/// while [`health::EdgeHealth`] passes, and `STOPPING=1` when shutdown begins. Shutdown then
/// stops accepting, gives running requests `server.drain_deadline_secs`, closes live sockets, stops
/// the background loops and runs [`shutdown::finish`] (writer flushed, a last short push,
/// writer closed).
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Held until this function returns: a restore refuses to run while the edge serves.
    let _data_lock =
        aero_shared::data_lock::DataDirLock::acquire(&settings.data_dir(), "aero-edge serve")?;
    let tls = settings.tls.acceptor()?;
    let credential = load_credential(&settings)?;
    let site_id = credential.site_id;
    let edge = build(&settings, credential)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sync_task = tokio::spawn(Arc::clone(&edge.engine).run(stop_rx.clone()));
    let hint_task = tokio::spawn(Arc::clone(&edge.engine).listen_for_hints(stop_rx.clone()));
    spawn_housekeeping(
        Arc::clone(&edge.state.security),
        Arc::new(ReplicaIdempotency(edge.state.writer.clone())),
        stop_rx.clone(),
    );
    let sessions = live::sessions::SessionWatcher::start(
        Arc::clone(&edge.state.replica),
        Arc::clone(&edge.state.live),
        Arc::new(SystemClock),
    )?;
    let sessions_task = tokio::spawn(sessions.run(stop_rx.clone()));
    let plugs = plugs::reconcile::PlugReconciler::new(
        Arc::clone(&edge.state.replica),
        edge.state.writer.clone(),
        site_id,
        Arc::clone(&edge.state.plugs),
        Arc::clone(&edge.state.live),
        Arc::clone(&edge.state.clock),
        settings.plugs,
    );
    let plugs_task = tokio::spawn(plugs.run(stop_rx.clone()));
    tracing::info!(addr = %listener.local_addr()?, %site_id, "aero-edge listening");
    // The replica is open (build) and the listener bound (by the caller): ready to serve.
    aero_shared::systemd::notify_ready();
    let watchdog = aero_shared::systemd::spawn_watchdog(Arc::new(health::EdgeHealth {
        writer: edge.state.writer.clone(),
        replica: Arc::clone(&edge.state.replica),
    }));
    let mut server_stop = stop_rx;
    let hub = Arc::clone(&edge.state.live);
    let options = aero_shared::server::ServeOptions {
        tls,
        ..settings.server.options()
    };
    let served = aero_shared::server::serve_with(
        listener,
        edge.router,
        async move {
            tokio::select! {
                () = shutdown => {}
                _ = server_stop.wait_for(|stop| *stop) => {}
            }
            aero_shared::systemd::notify_stopping();
            // Live connections are upgraded out of the HTTP server's reach: they are told here.
            hub.close();
        },
        options,
    )
    .await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = stop_tx.send(true);
    for task in [sync_task, hint_task, sessions_task, plugs_task] {
        if let Err(err) = task.await {
            tracing::error!(error = %err, "a background task failed");
        }
    }
    shutdown::finish(
        &edge.engine,
        &edge.state.replica,
        &edge.state.writer,
        Duration::from_secs(settings.sync.final_push_secs),
    )
    .await;
    served?;
    tracing::info!("aero-edge stopped");
    Ok(())
}

/// Once a minute: forgets idle rate-limit state and expired idempotency keys.
fn spawn_housekeeping(
    security: Arc<Security>,
    keys: Arc<dyn IdempotencyStore>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                return;
            }
            security.limits.housekeeping();
            let before = chrono::Utc::now() - idempotency::KEY_LIFETIME;
            if let Err(err) = keys.purge(before).await {
                tracing::warn!(error = %err, "could not purge expired idempotency keys");
            }
        }
    });
}

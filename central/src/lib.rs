//! `aero-central`: the HQ service that owns the chain's database, serves the HQ admin API and
//! is the sync hub every venue edge pushes to and pulls from.

pub mod backup;
pub mod config;
pub mod console;
pub mod credentials;
pub mod edge_health;
pub mod health;
pub mod hints;
pub mod ops;
pub mod presence;
pub mod routes;
pub mod state;
pub mod store;

use crate::config::Settings;
use crate::credentials::StoreCredentials;
use crate::hints::ChangeHints;
use crate::state::{AppState, Services, SyncMetrics};
use crate::store::Store;
use aero_shared::auth::extract::Security;
use aero_shared::auth::jwt::JwtKeys;
use aero_shared::clock::{SharedClock, SystemClock};
use aero_shared::idempotency::{self, Begin, Idempotency, IdempotencyStore, StoredResponse};
use aero_shared::metrics::HttpMetrics;
use aero_shared::ratelimit::RateLimits;
use aero_shared::{ApiError, pipeline};
use async_trait::async_trait;
use axum::Router;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The audience central's staff tokens are issued for; an edge's tokens carry another.
pub const JWT_AUDIENCE: &str = "aero-central";

/// Opens the configured store, migrating it.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let data_dir = settings.data_dir();
    std::fs::create_dir_all(&data_dir)?;
    let url = settings
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_string());
    store::open(url.as_deref(), &data_dir).await
}

/// Builds the application: state, routes and the shared pipeline.
pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<(Router, AppState)> {
    let settings = Arc::new(settings);
    let store = open_store(&settings).await?;
    let jwt_secret = match &settings.jwt_secret {
        Some(secret) => {
            anyhow::ensure!(
                secret.expose_secret().len() >= 32,
                "AERO_JWT_SECRET must be at least 32 characters (or unset, to generate one)"
            );
            secret.clone()
        }
        None => aero_shared::files::load_or_create_secret(&settings.data_dir().join("jwt-secret"))?,
    };
    let security = Arc::new(Security {
        jwt: JwtKeys::new(
            &jwt_secret,
            JWT_AUDIENCE,
            JWT_AUDIENCE,
            chrono::Duration::minutes(settings.jwt_ttl_minutes.clamp(1, 24 * 60)),
        ),
        credentials: Arc::new(StoreCredentials::new(Arc::clone(&store))),
        limits: RateLimits::new(&settings.limits),
        hq_networks: settings.hq_networks.clone(),
        served_site: None,
    });
    let mut registry = Registry::with_prefix("aero_central");
    let http_metrics = Arc::new(HttpMetrics::register(&mut registry));
    let sync_metrics = Arc::new(SyncMetrics::register(&mut registry));
    let hints = ChangeHints::start(Arc::clone(&store)).await?;
    spawn_housekeeping(Arc::clone(&security), &store);
    let presence = presence::EdgePresence::new(Arc::clone(&clock));
    let state = AppState::new(Services {
        store: Arc::clone(&store),
        security,
        settings: Arc::clone(&settings),
        clock,
        registry: Arc::new(registry),
        http_metrics: Arc::clone(&http_metrics),
        sync_metrics,
        hints,
        presence,
        shutdown: CancellationToken::new(),
    });
    let idempotency_store: Arc<dyn IdempotencyStore> = Arc::new(StoreIdempotency(state.clone()));
    let (router, _) = routes::documented();
    let api = router
        .layer(Idempotency {
            store: idempotency_store,
            security: Arc::clone(&state.security),
        })
        .with_state(state.clone());
    // The console forwards its data requests to `api` itself, inside the pipeline it already
    // passed; its pages are HTML, outside the documented JSON API.
    let secure_cookies = settings
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));
    let console = console::router(
        api.clone(),
        console::csrf_key(jwt_secret.expose_secret()),
        secure_cookies,
    );
    let router = api.merge(console);
    let router = pipeline::apply(
        router,
        &settings.limits,
        &settings.cors_origins,
        &settings.trusted_proxies,
        http_metrics,
    );
    Ok((router, state))
}

/// Runs central on a bound listener until `shutdown` resolves.
///
/// systemd hears `READY=1` once the store is open and migrated and the listener bound,
/// watchdog pings while a store round trip passes ([`health::StoreHealth`]), and `STOPPING=1`
/// when shutdown begins. Shutdown then stops accepting, closes the edges' hint sockets and
/// gives running requests `server.drain_deadline_secs`; connections still open then are closed.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = settings.server.options();
    let (router, state) = build(settings, Arc::new(SystemClock)).await?;
    tracing::info!(addr = %listener.local_addr()?, "aero-central listening");
    aero_shared::systemd::notify_ready();
    let watchdog = aero_shared::systemd::spawn_watchdog(Arc::new(health::StoreHealth(Arc::clone(
        &state.store,
    ))));
    let closing = state.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        aero_shared::systemd::notify_stopping();
        closing.cancel();
    };
    let served = aero_shared::server::serve_with(listener, router, shutdown, options).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    served?;
    tracing::info!("aero-central stopped");
    Ok(())
}

/// Once a minute, until the service is dropped: forgets idle rate-limit state and expired
/// idempotency keys.
fn spawn_housekeeping(security: Arc<Security>, store: &Arc<dyn Store>) {
    let weak = Arc::downgrade(&security);
    let store = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let (Some(security), Some(store)) = (weak.upgrade(), store.upgrade()) else {
                return;
            };
            security.limits.housekeeping();
            let before = chrono::Utc::now() - idempotency::KEY_LIFETIME;
            if let Err(err) = store.idempotency_purge(before).await {
                tracing::warn!(error = %err, "could not purge expired idempotency keys");
            }
        }
    });
}

/// Idempotency keys of HQ POSTs live in central's database.
struct StoreIdempotency(AppState);

#[async_trait]
impl IdempotencyStore for StoreIdempotency {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
        let now = self.0.clock.now();
        Ok(self
            .0
            .store
            .idempotency_begin(scope, key, fingerprint, now)
            .await?)
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), ApiError> {
        Ok(self
            .0
            .store
            .idempotency_complete(scope, key, response)
            .await?)
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError> {
        Ok(self.0.store.idempotency_release(scope, key).await?)
    }

    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, ApiError> {
        Ok(self.0.store.idempotency_purge(before).await?)
    }
}

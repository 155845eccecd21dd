//! Central's health: a round trip to its store. It feeds the systemd watchdog and answers
//! `/healthz`, so both tell the same truth.

use crate::store::Store;
use aero_shared::systemd::HealthCheck;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// How long `/healthz` waits for the store before calling central unhealthy.
pub const HTTP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Passes when the store answers a query.
#[derive(Debug)]
pub struct StoreHealth(pub Arc<dyn Store>);

#[async_trait]
impl HealthCheck for StoreHealth {
    async fn check(&self) -> anyhow::Result<()> {
        self.0
            .ping()
            .await
            .map_err(|err| anyhow::anyhow!("store: {err}"))
    }
}

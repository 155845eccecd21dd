//! systemd integration: readiness, a watchdog fed only by a passing health check, and the
//! stopping notice (all no-ops outside systemd).

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// A round trip through what the service cannot work without (its database writer, its
/// store). The watchdog is fed only while it passes, so systemd restarts a wedged process.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    async fn check(&self) -> anyhow::Result<()>;
}

/// Runs `check`, failing it when it does not answer within `timeout`.
pub async fn probe(check: &dyn HealthCheck, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, check.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// One watchdog beat: `ping` runs only when the check passes within `timeout`; a failure is
/// logged and skipped, so enough of them in a row let systemd's watchdog fire.
pub async fn beat(
    check: &dyn HealthCheck,
    timeout: Duration,
    ping: impl FnOnce(),
) -> Result<(), String> {
    let outcome = probe(check, timeout).await;
    match &outcome {
        Ok(()) => ping(),
        Err(reason) => {
            tracing::error!(%reason, "health check failed: not feeding the systemd watchdog");
        }
    }
    outcome
}

/// Tells systemd the service is ready. Call it once the store is open and the listener bound.
pub fn notify_ready() {
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "could not notify systemd of readiness");
    }
}

/// When the unit has `WatchdogSec=`, runs `check` every half watchdog period and pings systemd
/// after each pass. Each check is bounded by a quarter of the period, so a hung check misses
/// its ping instead of delaying the next one. The task ends when the returned handle is
/// aborted (at shutdown, which has its own stop timeout).
pub fn spawn_watchdog(check: Arc<dyn HealthCheck>) -> Option<tokio::task::JoinHandle<()>> {
    let timeout = sd_notify::watchdog_enabled()?;
    let period = (timeout / 2).max(Duration::from_millis(200));
    let check_timeout = period / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = beat(check.as_ref(), check_timeout, || {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            })
            .await;
        }
    }))
}

/// Tells systemd the service is stopping: sent as soon as shutdown begins.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

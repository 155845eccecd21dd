//! systemd integration: readiness and the watchdog heartbeat (no-ops outside systemd).

use std::time::Duration;

/// Tells systemd the service is ready (after migrations ran and the listener is bound) and,
/// when the unit has `WatchdogSec=`, keeps the watchdog fed from the async runtime, so a
/// wedged runtime gets the process restarted.
pub fn notify_ready() {
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "could not notify systemd of readiness");
    }
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        let period = (timeout / 2).max(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

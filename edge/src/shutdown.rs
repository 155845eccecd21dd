//! The edge's last steps on SIGTERM, once the API has stopped taking requests: every queued
//! write committed, one short push so central has the venue's latest, the writer closed with
//! the WAL checkpointed.

use crate::outbox::Writer;
use crate::replica::Replica;
use crate::sync::SyncEngine;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// Flushes the writer, makes one push attempt bounded by `final_push`, then closes the writer.
/// Each outcome is logged; nothing here fails the shutdown, because nothing acknowledged can
/// be lost by then (every acknowledged write is committed with its outbox op).
pub async fn finish(
    engine: &SyncEngine,
    replica: &Arc<Replica>,
    writer: &Writer,
    final_push: Duration,
) {
    if let Err(err) = writer.flush().await {
        tracing::error!(error = %format!("{err:#}"), "could not flush the database writer");
    }
    last_push(engine, replica, final_push).await;
    match writer.close().await {
        Ok(()) => tracing::info!("database writer closed, WAL checkpointed"),
        Err(err) => tracing::warn!(error = %format!("{err:#}"), "database writer closed"),
    }
}

/// One push round that may not outlast `bound`: a venue box must not hang on a dead link.
async fn last_push(engine: &SyncEngine, replica: &Arc<Replica>, bound: Duration) {
    if engine.is_fenced() {
        tracing::warn!("final push skipped: central fenced this edge");
        return;
    }
    let outcome = tokio::time::timeout(bound, engine.push_all()).await;
    let pending = replica
        .status(Utc::now())
        .await
        .map(|s| s.pending_ops)
        .unwrap_or(-1);
    match outcome {
        Ok(Ok(summary)) => tracing::info!(
            pushed = summary.acked,
            rejected = summary.rejected,
            pending,
            "final push done"
        ),
        Ok(Err(err)) => tracing::warn!(
            error = %err,
            pending,
            "final push failed; pending ops stay queued for the next start"
        ),
        Err(_) => tracing::warn!(
            bound_secs = bound.as_secs_f64(),
            pending,
            "final push did not finish in time; pending ops stay queued for the next start"
        ),
    }
}

//! Connections: opening one (WAL, a busy timeout, durable commits, foreign keys), the pool of
//! reader connections, and the store's two ways of running work on a blocking thread: `write`
//! (one transaction on the writer, SQLITE_BUSY retried within a deadline) and `read` (a
//! reader); plus `exec`, which runs a statement through a connection's statement cache.

use super::errors::map_err;
use super::{SqliteStore, idempotency};
use crate::store::{StoreError, StoreResult};
use aero_shared::idempotency::current_request;
use anyhow::Context;
use backon::{BlockingRetryable, ExponentialBuilder};
use rusqlite::{Connection, OpenFlags, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) const READERS: usize = 4;

pub(crate) fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a write acknowledged to a caller survives power loss, not just a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Runs `work` in one write transaction on a blocking thread, retrying SQLITE_BUSY (another
    /// process holding the lock, e.g. the CLI) within a deadline.
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        // The idempotent request this write serves (read here: task-locals stay on this task).
        let request = current_request();
        tokio::task::spawn_blocking(move || {
            let attempt = || {
                let mut conn = writer.lock().expect("writer mutex poisoned");
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(map_err)?;
                let out = work(&tx)?;
                if let Some(request) = &request {
                    idempotency::record_request(&tx, request)?;
                }
                tx.commit().map_err(map_err)?;
                Ok(out)
            };
            attempt
                .retry(busy_backoff())
                .when(|e: &StoreError| matches!(e, StoreError::Transient(_)))
                .call()
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("store task failed: {e}")))?
    }

    pub(super) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool poisoned").pop();
            let conn = match conn {
                Some(conn) => conn,
                None => open_connection(&path)?,
            };
            let out = work(&conn);
            let mut pool = readers.lock().expect("reader pool poisoned");
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("store task failed: {e}")))?
    }
}

fn busy_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .with_total_delay(Some(Duration::from_secs(10)))
        .without_max_times()
}

/// Executes through the connection's statement cache: the sync path runs the same few
/// statements for every pushed op.
pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

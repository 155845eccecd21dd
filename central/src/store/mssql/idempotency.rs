//! Idempotency keys of HQ POSTs: claiming a key (or replaying its stored response), storing
//! the response, releasing a key whose request failed, and purging expired keys.

use super::MssqlStore;
use super::codec::{decode_error, get, int, opt_int, opt_text, text, ts};
use super::conn::Conn;
use super::errors::race_is_transient;
use crate::store::StoreResult;
use aero_shared::idempotency::{Begin, StoredResponse};
use chrono::{DateTime, Utc};
use tiberius::Query;

async fn idempotency_begin_tx(
    conn: &mut Conn,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> StoreResult<Begin> {
    // A key older than 24 hours is forgotten and may be used afresh.
    let mut q = Query::new(
        "DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2 AND created_at < @P3; \
         SELECT fingerprint, status, content_type, body FROM idempotency_keys WITH (UPDLOCK, HOLDLOCK) \
          WHERE scope = @P1 AND [key] = @P2;",
    );
    q.bind(scope);
    q.bind(key);
    q.bind(ts(now - chrono::Duration::hours(24)));
    let Some(row) = conn.row(q).await? else {
        let mut q = Query::new(
            "INSERT INTO idempotency_keys (scope, [key], fingerprint, status, content_type, body, created_at) \
             VALUES (@P1, @P2, @P3, NULL, NULL, NULL, @P4)",
        );
        q.bind(scope);
        q.bind(key);
        q.bind(fingerprint);
        q.bind(ts(now));
        conn.exec(q).await?;
        return Ok(Begin::Started);
    };
    if text(&row, 0)? != fingerprint {
        return Ok(Begin::Mismatch);
    }
    let Some(status) = opt_int(&row, 1)? else {
        return Ok(Begin::InProgress);
    };
    Ok(Begin::Replay(StoredResponse {
        status: u16::try_from(status).map_err(|e| decode_error(1, e))?,
        content_type: opt_text(&row, 2)?,
        body: get::<&[u8]>(&row, 3)?
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    }))
}

pub(super) async fn begin(
    store: &MssqlStore,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> StoreResult<Begin> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                // Two first uses of one key race to insert it; the loser retries and sees
                // InProgress.
                idempotency_begin_tx(conn, scope, key, fingerprint, now)
                    .await
                    .map_err(race_is_transient)
            })
        })
        .await
}

pub(super) async fn complete(
    store: &MssqlStore,
    scope: &str,
    key: &str,
    response: &StoredResponse,
) -> StoreResult<()> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "UPDATE idempotency_keys SET status = @P3, content_type = @P4, body = @P5 \
                     WHERE scope = @P1 AND [key] = @P2",
                );
                q.bind(scope);
                q.bind(key);
                q.bind(i32::from(response.status));
                q.bind(response.content_type.as_deref());
                q.bind(response.body.as_slice());
                conn.exec(q).await
            })
        })
        .await
}

pub(super) async fn release(store: &MssqlStore, scope: &str, key: &str) -> StoreResult<()> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q =
                    Query::new("DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2");
                q.bind(scope);
                q.bind(key);
                conn.exec(q).await
            })
        })
        .await
}

pub(super) async fn purge(store: &MssqlStore, before: DateTime<Utc>) -> StoreResult<u64> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "DELETE FROM idempotency_keys WHERE created_at < @P1; SELECT @@ROWCOUNT;",
                );
                q.bind(ts(before));
                let removed = match conn.row(q).await? {
                    Some(row) => int(&row, 0)?,
                    None => 0,
                };
                Ok(u64::try_from(removed).unwrap_or(0))
            })
        })
        .await
}

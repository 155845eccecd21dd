//! Idempotency keys of HQ POSTs: claiming a key (or replaying its stored response), storing
//! the response, releasing a key whose request failed, and purging expired keys.

use super::MssqlStore;
use super::codec::{decode_error, get, int, opt_int, opt_text, opt_time, text, time, ts};
use super::conn::Conn;
use super::errors::race_is_transient;
use crate::store::StoreResult;
use aero_shared::idempotency::{
    Begin, Decision, KEY_LIFETIME, KeyState, KeyedRequest, StoredResponse, decide,
};
use chrono::{DateTime, Utc};
use tiberius::Query;

async fn idempotency_begin_tx(
    conn: &mut Conn,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> StoreResult<Begin> {
    // A key older than its lifetime is forgotten and may be used afresh.
    let mut q = Query::new(
        "DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2 AND created_at < @P3; \
         SELECT fingerprint, status, content_type, body, created_at, committed_at \
           FROM idempotency_keys WITH (UPDLOCK, HOLDLOCK) \
          WHERE scope = @P1 AND [key] = @P2;",
    );
    q.bind(scope);
    q.bind(key);
    q.bind(ts(now - KEY_LIFETIME));
    let found = match conn.row(q).await? {
        None => None,
        Some(row) => {
            let response = match opt_int(&row, 1)? {
                Some(status) => Some(StoredResponse {
                    status: u16::try_from(status).map_err(|e| decode_error(1, e))?,
                    content_type: opt_text(&row, 2)?,
                    body: get::<&[u8]>(&row, 3)?
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                }),
                None => None,
            };
            Some(KeyState {
                fingerprint: text(&row, 0)?,
                response,
                created_at: time(&row, 4)?,
                committed: opt_time(&row, 5)?.is_some(),
            })
        }
    };
    match decide(found, fingerprint, now) {
        Decision::Insert => {
            let mut q = Query::new(
                "INSERT INTO idempotency_keys (scope, [key], fingerprint, status, content_type, body, created_at) \
                 VALUES (@P1, @P2, @P3, NULL, NULL, NULL, @P4)",
            );
            q.bind(scope);
            q.bind(key);
            q.bind(fingerprint);
            q.bind(ts(now));
            conn.exec(q).await?;
            Ok(Begin::Started)
        }
        Decision::TakeOver => {
            let mut q = Query::new(
                "UPDATE idempotency_keys SET created_at = @P3 WHERE scope = @P1 AND [key] = @P2",
            );
            q.bind(scope);
            q.bind(key);
            q.bind(ts(now));
            conn.exec(q).await?;
            Ok(Begin::Started)
        }
        Decision::Answer(begin) => Ok(begin),
    }
}

/// Records the idempotent request committed, with its answer when the route declared one,
/// inside the transaction of its writes: a retry replays that answer (or, without one, is
/// refused rather than run again).
pub(super) async fn record_committed(
    conn: &mut Conn,
    request: &KeyedRequest,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = match request.answer {
        Some(_) => {
            "UPDATE idempotency_keys \
                SET committed_at = @P3, status = @P4, content_type = @P5, body = @P6 \
              WHERE scope = @P1 AND [key] = @P2"
        }
        None => "UPDATE idempotency_keys SET committed_at = @P3 WHERE scope = @P1 AND [key] = @P2",
    };
    let mut q = Query::new(sql);
    q.bind(request.scope.as_str());
    q.bind(request.key.as_str());
    q.bind(ts(at));
    if let Some(answer) = &request.answer {
        q.bind(i32::from(answer.status().as_u16()));
        q.bind(answer.content_type());
        q.bind(answer.body());
    }
    conn.exec(q).await
}

/// Whether the idempotent request (scope, key) already committed its writes: checked before a
/// retried unit of work runs again, since the COMMIT of the previous attempt may have succeeded
/// with its acknowledgement lost.
pub(super) async fn is_committed(conn: &mut Conn, scope: &str, key: &str) -> StoreResult<bool> {
    let mut q = Query::new(
        "SELECT 1 FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2 AND committed_at IS NOT NULL",
    );
    q.bind(scope);
    q.bind(key);
    Ok(conn.row(q).await?.is_some())
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
                // An answer recorded with the request's writes stays its answer.
                let mut q = Query::new(
                    "UPDATE idempotency_keys SET status = @P3, content_type = @P4, body = @P5 \
                     WHERE scope = @P1 AND [key] = @P2 AND status IS NULL",
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
                // A request whose writes committed keeps its key: running it again would apply
                // it twice.
                let mut q = Query::new(
                    "DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2 AND committed_at IS NULL",
                );
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

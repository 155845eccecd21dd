//! Idempotency keys of HQ POSTs: claiming a key (or replaying its stored response), storing
//! the response, recording that a keyed request committed, releasing a key whose request
//! failed, and purging expired keys.

use super::SqliteStore;
use super::codec::{parse_ts, ts};
use super::conn::exec;
use crate::store::StoreResult;
use aero_shared::idempotency::{
    Begin, Decision, KEY_LIFETIME, KeyState, KeyedRequest, StoredResponse, decide,
};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

/// Forgets the keys made before `?1`, found through `idempotency_keys_created` (V15).
const PURGE_EXPIRED_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < ?1";

/// Records, in the transaction of its writes, that the idempotent request committed, with its
/// answer when the route declared one: a retry replays that answer (or, without one, is refused
/// rather than run again).
pub(super) fn record_request(tx: &Transaction<'_>, request: &KeyedRequest) -> StoreResult<()> {
    let now = ts(Utc::now());
    match &request.answer {
        Some(answer) => exec(
            tx,
            "UPDATE idempotency_keys SET committed_at = ?3, status = ?4, content_type = ?5, body = ?6 WHERE scope = ?1 AND key = ?2",
            params![
                request.scope,
                request.key,
                now,
                answer.status().as_u16(),
                answer.content_type(),
                answer.body()
            ],
        )?,
        None => exec(
            tx,
            "UPDATE idempotency_keys SET committed_at = ?3 WHERE scope = ?1 AND key = ?2",
            params![request.scope, request.key, now],
        )?,
    };
    Ok(())
}

pub(super) async fn begin(
    store: &SqliteStore,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> StoreResult<Begin> {
    let (scope, key, fingerprint) = (scope.to_string(), key.to_string(), fingerprint.to_string());
    store.write(move |tx| {
        let stale = ts(now - KEY_LIFETIME);
        exec(tx, "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND created_at < ?3", params![scope, key, stale])?;
        let found = tx
            .query_row(
                "SELECT fingerprint, status, content_type, body, created_at, committed_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                params![scope, key],
                |r| {
                    let status: Option<u16> = r.get(1)?;
                    let response = match status {
                        Some(status) => Some(StoredResponse {
                            status,
                            content_type: r.get(2)?,
                            body: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                        }),
                        None => None,
                    };
                    Ok(KeyState {
                        fingerprint: r.get(0)?,
                        response,
                        created_at: parse_ts(&r.get::<_, String>(4)?)?,
                        committed: r.get::<_, Option<String>>(5)?.is_some(),
                    })
                },
            )
            .optional()?;
        Ok(match decide(found, &fingerprint, now) {
            Decision::Insert => {
                exec(
                    tx,
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![scope, key, fingerprint, ts(now)],
                )?;
                Begin::Started
            }
            Decision::TakeOver => {
                exec(
                    tx,
                    "UPDATE idempotency_keys SET created_at = ?3 WHERE scope = ?1 AND key = ?2",
                    params![scope, key, ts(now)],
                )?;
                Begin::Started
            }
            Decision::Answer(begin) => begin,
        })
    })
    .await
}

pub(super) async fn complete(
    store: &SqliteStore,
    scope: &str,
    key: &str,
    response: &StoredResponse,
) -> StoreResult<()> {
    let (scope, key, response) = (scope.to_string(), key.to_string(), response.clone());
    store.write(move |tx| {
        // An answer recorded with the request's writes stays its answer.
        exec(
            tx,
            "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5 WHERE scope = ?1 AND key = ?2 AND status IS NULL",
            params![scope, key, response.status, response.content_type, response.body],
        )?;
        Ok(())
    })
    .await
}

pub(super) async fn release(store: &SqliteStore, scope: &str, key: &str) -> StoreResult<()> {
    let (scope, key) = (scope.to_string(), key.to_string());
    store.write(move |tx| {
        exec(
            tx,
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND committed_at IS NULL",
            params![scope, key],
        )?;
        Ok(())
    })
    .await
}

pub(super) async fn purge(store: &SqliteStore, before: DateTime<Utc>) -> StoreResult<u64> {
    store
        .write(move |tx| {
            let removed = exec(tx, PURGE_EXPIRED_KEYS, [ts(before)])?;
            Ok(u64::try_from(removed).unwrap_or(0))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::query_plan::query_plan;

    #[test]
    fn expired_keys_are_found_through_their_index_not_by_reading_the_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("central.db")).expect("open");
        let writer = store.writer.lock().expect("writer");
        assert_eq!(
            query_plan(&writer, PURGE_EXPIRED_KEYS).expect("plan"),
            "SEARCH idempotency_keys USING INDEX idempotency_keys_created (created_at<?)"
        );
    }
}

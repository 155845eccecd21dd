//! Credentials and idempotency keys backed by `edge.db`: device keys and site networks come from
//! the replica (so revocations replicate), never from a call to central.

use crate::outbox::Writer;
use crate::replica::{Replica, apply, parse_ts, ts};
use aero_shared::ApiError;
use aero_shared::auth::api_key::KeyHash;
use aero_shared::auth::extract::{CredentialStore, DeviceCredential};
use aero_shared::idempotency::{
    Begin, Decision, IdempotencyStore, KEY_LIFETIME, KeyState, StoredResponse, decide,
};
use aero_shared::wire::DeviceRecord;
use async_trait::async_trait;
use chrono::Utc;
use ipnet::IpNet;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// Device credentials from the replica, with the live ones cached in memory by key hash: every
/// device request is authenticated, and the cache turns a database read into a map lookup.
///
/// The cache is tied to the replica's device epoch, which the sync engine bumps right after it
/// commits a pulled page carrying device changes, so a revocation takes effect at the edge as
/// soon as it is in the replica, exactly as without the cache. Unknown or revoked keys are not
/// cached (a stream of made-up keys cannot grow it); they are looked up every time.
#[derive(Debug)]
pub struct ReplicaCredentials {
    replica: Arc<Replica>,
    cache: RwLock<CredentialCache>,
}

#[derive(Debug, Default)]
struct CredentialCache {
    /// The device epoch the entries were read at; entries of an older epoch are never used.
    epoch: u64,
    by_hash: HashMap<String, DeviceCredential>,
}

impl ReplicaCredentials {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self {
            replica,
            cache: RwLock::new(CredentialCache::default()),
        }
    }

    fn cached(&self, hash: &KeyHash, epoch: u64) -> Option<DeviceCredential> {
        let cache = self.cache.read().ok()?;
        if cache.epoch != epoch {
            return None;
        }
        cache.by_hash.get(hash.as_str()).cloned()
    }

    /// Keeps `device`, read at `epoch`, unless devices changed since the read began.
    fn remember(&self, hash: &KeyHash, epoch: u64, device: &DeviceCredential) {
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        if self.replica.device_epoch() != epoch {
            return;
        }
        if cache.epoch != epoch {
            cache.by_hash.clear();
            cache.epoch = epoch;
        }
        cache
            .by_hash
            .insert(hash.as_str().to_string(), device.clone());
    }
}

#[async_trait]
impl CredentialStore for ReplicaCredentials {
    async fn device_for_key(&self, hash: &KeyHash) -> Result<Option<DeviceCredential>, ApiError> {
        // Read the epoch before the database: a change committed after this point bumps it, so
        // what is read below can only be remembered if it is still current.
        let epoch = self.replica.device_epoch();
        if let Some(device) = self.cached(hash, epoch) {
            return Ok(Some(device));
        }
        // An indexed point read: in place, see `Replica::read_now`.
        let device = self.replica.read_now(|c| {
            let data: Option<String> = c
                .prepare_cached(
                    "SELECT data FROM devices WHERE key_hash = ?1 AND revoked_at IS NULL",
                )?
                .query_row([hash.as_str()], |r| r.get(0))
                .optional()?;
            data.map(|d| Ok(serde_json::from_str::<DeviceRecord>(&d)?))
                .transpose()
        })?;
        let device = device.map(|d| DeviceCredential {
            device_id: d.id,
            site_id: d.site_id,
            kind: d.kind,
            allowed_networks: d.allowed_networks,
        });
        if let Some(device) = &device {
            self.remember(hash, epoch, device);
        }
        Ok(device)
    }

    async fn site_networks(&self, site_id: Uuid) -> Result<Option<Vec<IpNet>>, ApiError> {
        Ok(self
            .replica
            .read(move |c| apply::site_networks(c, site_id))
            .await?)
    }

    /// Read from the replica on every request, uncached: a primary-key point read, so a
    /// revocation takes effect the moment the pulled page carrying it commits. A record from
    /// a central that predates token versions has none, which reads as 0, as it does there.
    async fn staff_token_version(&self, user_id: Uuid) -> Result<Option<i64>, ApiError> {
        Ok(self.replica.read_now(|c| {
            let version: Option<Option<i64>> = c
                .prepare_cached(
                    "SELECT json_extract(data, '$.token_version') FROM users
                     WHERE id = ?1 AND disabled_at IS NULL",
                )?
                .query_row([user_id], |r| r.get(0))
                .optional()?;
            Ok(version.map(|v| v.unwrap_or(0)))
        })?)
    }
}

/// Forgets the keys made before `?1`, found through `idempotency_keys_created` (V12).
const PURGE_EXPIRED_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < ?1";

#[derive(Debug)]
pub struct ReplicaIdempotency(pub Writer);

#[async_trait]
impl IdempotencyStore for ReplicaIdempotency {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
        let (scope, key, fingerprint) =
            (scope.to_string(), key.to_string(), fingerprint.to_string());
        let now = Utc::now();
        let begin = self
            .0
            .write(move |c| {
                // A key older than its lifetime is forgotten and may be used afresh.
                c.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND created_at < ?3",
                    params![scope, key, ts(now - KEY_LIFETIME)],
                )?;
                let found = c
                    .query_row(
                        "SELECT fingerprint, status, content_type, body, created_at, committed_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                        params![scope, key],
                        |r| {
                            let status: Option<u16> = r.get(1)?;
                            let committed: Option<String> = r.get(5)?;
                            Ok((r.get::<_, String>(0)?, status.map(|status| StoredResponse {
                                status,
                                content_type: r.get(2).ok().flatten(),
                                body: r.get::<_, Option<Vec<u8>>>(3).ok().flatten().unwrap_or_default(),
                            }), r.get::<_, String>(4)?, committed.is_some()))
                        },
                    )
                    .optional()?
                    .map(|(fingerprint, response, created_at, committed)| {
                        Ok::<_, anyhow::Error>(KeyState {
                            fingerprint,
                            response,
                            created_at: parse_ts(&created_at)?,
                            committed,
                        })
                    })
                    .transpose()?;
                Ok(match decide(found, &fingerprint, now) {
                    Decision::Insert => {
                        c.execute(
                            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4)",
                            params![scope, key, fingerprint, ts(now)],
                        )?;
                        Begin::Started
                    }
                    Decision::TakeOver => {
                        c.execute(
                            "UPDATE idempotency_keys SET created_at = ?3 WHERE scope = ?1 AND key = ?2",
                            params![scope, key, ts(now)],
                        )?;
                        Begin::Started
                    }
                    Decision::Answer(begin) => begin,
                })
            })
            .await?;
        Ok(begin)
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), ApiError> {
        let (scope, key, response) = (scope.to_string(), key.to_string(), response.clone());
        self.0
            .write(move |c| {
                // An answer recorded with the request's writes stays its answer.
                c.execute(
                    "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5 WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                    params![scope, key, response.status, response.content_type, response.body],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.0
            .write(move |c| {
                // A request whose writes committed keeps its key: running it again would
                // apply it twice.
                c.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL AND committed_at IS NULL",
                    params![scope, key],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn purge(&self, before: chrono::DateTime<Utc>) -> Result<u64, ApiError> {
        let removed = self
            .0
            .write(move |c| Ok(c.execute(PURGE_EXPIRED_KEYS, [ts(before)])?))
            .await?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::append_op;
    use aero_shared::idempotency::{Answer, serving};
    use aero_shared::query_plan::query_plan;
    use aero_shared::wire::{Entity, OpKind};
    use axum::http::StatusCode;

    fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn expired_keys_are_found_through_their_index_not_by_reading_the_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        assert_eq!(
            query_plan(&conn, PURGE_EXPIRED_KEYS).expect("plan"),
            "SEARCH idempotency_keys USING INDEX idempotency_keys_created (created_at<?)"
        );
    }

    /// The answer commits with the write it answers: a retry after the answer was
    /// lost (the process stopped before the middleware stored it) gets that answer replayed,
    /// and the write is not run twice. A write that rolls back records nothing.
    #[tokio::test]
    async fn the_answer_of_a_request_commits_with_its_write_and_is_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let keys = ReplicaIdempotency(writer.clone());
        let (scope, key) = ("device:1".to_string(), "k1".to_string());
        assert_eq!(
            keys.begin(&scope, &key, "f").await.expect("begin"),
            Begin::Started
        );
        let entity_id = Uuid::now_v7();
        let answer = Answer::json(StatusCode::CREATED, &serde_json::json!({ "id": entity_id }))
            .expect("answer");
        let queued = answer.clone();
        let sent = serving(scope.clone(), key.clone(), async {
            writer
                .mutate_answering(move |c| {
                    append_op(
                        c,
                        Entity::Customer,
                        entity_id,
                        OpKind::Upsert,
                        &1,
                        Utc::now(),
                    )?;
                    Ok(queued.clone())
                })
                .await
                .expect("write")
        })
        .await;
        assert_eq!(sent, answer);
        // The process stops here: the middleware never completes the key.
        assert_eq!(
            keys.begin(&scope, &key, "f").await.expect("retry"),
            Begin::Replay(answer.to_stored())
        );
        keys.release(&scope, &key).await.expect("release");
        assert_eq!(
            keys.begin(&scope, &key, "f")
                .await
                .expect("retry after release"),
            Begin::Replay(answer.to_stored())
        );
        // The middleware's own answer never replaces the one that committed with the write.
        let other = StoredResponse {
            status: 409,
            content_type: None,
            body: Vec::new(),
        };
        keys.complete(&scope, &key, &other).await.expect("complete");
        assert_eq!(
            keys.begin(&scope, &key, "f")
                .await
                .expect("retry after complete"),
            Begin::Replay(answer.to_stored())
        );
        assert_eq!(
            replica
                .read(|c| Ok(count(c, "outbox")))
                .await
                .expect("outbox"),
            1
        );

        // A refused write rolls back: no answer, no mark; the key is released as usual.
        let refused = "k2".to_string();
        assert_eq!(
            keys.begin(&scope, &refused, "f").await.expect("begin"),
            Begin::Started
        );
        let outcome = serving(scope.clone(), refused.clone(), async {
            writer
                .mutate_answering(move |c| {
                    append_op(
                        c,
                        Entity::Customer,
                        Uuid::now_v7(),
                        OpKind::Upsert,
                        &2,
                        Utc::now(),
                    )?;
                    Err(aero_shared::ApiError::NotFound("no such customer").into())
                })
                .await
        })
        .await;
        assert!(outcome.is_err());
        assert_eq!(
            keys.begin(&scope, &refused, "f").await.expect("retry"),
            Begin::InProgress
        );
        keys.release(&scope, &refused).await.expect("release");
        assert_eq!(
            keys.begin(&scope, &refused, "f").await.expect("again"),
            Begin::Started
        );
        assert_eq!(
            replica
                .read(|c| Ok(count(c, "outbox")))
                .await
                .expect("outbox"),
            1
        );
    }

    #[tokio::test]
    async fn a_request_whose_write_committed_is_never_run_again_even_without_its_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let keys = ReplicaIdempotency(writer.clone());
        let (scope, key) = ("device:1".to_string(), "k1".to_string());
        assert_eq!(
            keys.begin(&scope, &key, "f").await.expect("begin"),
            Begin::Started
        );
        // The business write commits, and the process stops before the answer is recorded.
        serving(scope.clone(), key.clone(), async {
            writer
                .mutate(|c| {
                    append_op(
                        c,
                        Entity::Customer,
                        Uuid::now_v7(),
                        OpKind::Upsert,
                        &1,
                        Utc::now(),
                    )
                })
                .await
                .expect("write");
        })
        .await;
        keys.release(&scope, &key).await.expect("release");
        assert_eq!(
            keys.begin(&scope, &key, "f").await.expect("retry"),
            Begin::CommittedWithoutAnswer
        );

        // A request that never wrote is released and may run again.
        let other = "k2".to_string();
        assert_eq!(
            keys.begin(&scope, &other, "f").await.expect("begin"),
            Begin::Started
        );
        keys.release(&scope, &other).await.expect("release");
        assert_eq!(
            keys.begin(&scope, &other, "f").await.expect("again"),
            Begin::Started
        );
        assert_eq!(
            keys.purge(Utc::now() + chrono::Duration::seconds(1))
                .await
                .expect("purge"),
            2
        );
    }
}

//! Credentials and idempotency keys backed by `edge.db`: device keys and site networks come from
//! the replica (so revocations replicate), never from a call to central.

use crate::outbox::Writer;
use crate::replica::{Replica, apply, parse_ts, ts};
use aero_shared::ApiError;
use aero_shared::auth::api_key::KeyHash;
use aero_shared::auth::extract::{CredentialStore, DeviceCredential};
use aero_shared::idempotency::{Begin, IdempotencyStore, StoredResponse};
use aero_shared::wire::DeviceRecord;
use async_trait::async_trait;
use chrono::Utc;
use ipnet::IpNet;
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;
use uuid::Uuid;

/// A started request that never completed (the process died mid-request) stops blocking its
/// key after this long.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug)]
pub struct ReplicaCredentials(pub Arc<Replica>);

#[async_trait]
impl CredentialStore for ReplicaCredentials {
    async fn device_for_key(&self, hash: &KeyHash) -> Result<Option<DeviceCredential>, ApiError> {
        let hash = hash.as_str().to_string();
        let device = self
            .0
            .read(move |c| {
                let data: Option<String> = c
                    .query_row(
                        "SELECT data FROM devices WHERE key_hash = ?1 AND revoked_at IS NULL",
                        [hash],
                        |r| r.get(0),
                    )
                    .optional()?;
                data.map(|d| Ok(serde_json::from_str::<DeviceRecord>(&d)?))
                    .transpose()
            })
            .await?;
        Ok(device.map(|d| DeviceCredential {
            device_id: d.id,
            site_id: d.site_id,
            kind: d.kind,
            allowed_networks: d.allowed_networks,
        }))
    }

    async fn site_networks(&self, site_id: Uuid) -> Result<Option<Vec<IpNet>>, ApiError> {
        Ok(self
            .0
            .read(move |c| apply::site_networks(c, site_id))
            .await?)
    }
}

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
                type Row = (String, Option<u16>, Option<String>, Option<Vec<u8>>, String);
                let found: Option<Row> = c
                    .query_row(
                        "SELECT fingerprint, status, content_type, body, created_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                        params![scope, key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                match found {
                    None => {
                        c.execute(
                            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4)",
                            params![scope, key, fingerprint, ts(now)],
                        )?;
                        Ok(Begin::Started)
                    }
                    Some((stored, _, _, _, _)) if stored != fingerprint => Ok(Begin::Mismatch),
                    Some((_, Some(status), content_type, body, _)) => Ok(Begin::Replay(StoredResponse {
                        status,
                        content_type,
                        body: body.unwrap_or_default(),
                    })),
                    Some((_, None, _, _, created_at)) => {
                        if now - parse_ts(&created_at)? > ABANDONED_AFTER {
                            c.execute(
                                "UPDATE idempotency_keys SET created_at = ?3 WHERE scope = ?1 AND key = ?2",
                                params![scope, key, ts(now)],
                            )?;
                            Ok(Begin::Started)
                        } else {
                            Ok(Begin::InProgress)
                        }
                    }
                }
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
                c.execute(
                    "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5 WHERE scope = ?1 AND key = ?2",
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
                c.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                    params![scope, key],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

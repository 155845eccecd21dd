//! Credential lookups for the shared `Auth` extractor, answered from central's store; staff
//! token versions through a short-lived cache.

use crate::store::Store;
use aero_shared::ApiError;
use aero_shared::auth::api_key::KeyHash;
use aero_shared::auth::extract::{CredentialStore, DeviceCredential};
use async_trait::async_trait;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a staff account's token version is trusted without reading it again. Every staff
/// request checks it, so the cache saves a query per request; a revocation written by any
/// instance behind the load balancer is seen by all of them within this bound.
pub const TOKEN_VERSION_TTL: Duration = Duration::from_secs(2);

/// Beyond this many cached accounts, expired entries are swept before another is added.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug)]
pub struct StoreCredentials {
    store: Arc<dyn Store>,
    versions: Mutex<HashMap<Uuid, (Instant, Option<i64>)>>,
}

impl StoreCredentials {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            versions: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl CredentialStore for StoreCredentials {
    async fn device_for_key(&self, hash: &KeyHash) -> Result<Option<DeviceCredential>, ApiError> {
        Ok(self
            .store
            .device_by_key_hash(hash.as_str())
            .await?
            .map(|d| DeviceCredential {
                device_id: d.id,
                site_id: d.site_id,
                kind: d.kind,
                allowed_networks: d.allowed_networks,
            }))
    }

    async fn site_networks(&self, site_id: Uuid) -> Result<Option<Vec<IpNet>>, ApiError> {
        Ok(self
            .store
            .get_site(site_id)
            .await?
            .map(|s| s.allowed_networks))
    }

    async fn staff_token_version(&self, user_id: Uuid) -> Result<Option<i64>, ApiError> {
        let cached = self
            .versions
            .lock()
            .ok()
            .and_then(|versions| versions.get(&user_id).copied());
        if let Some((read_at, version)) = cached
            && read_at.elapsed() < TOKEN_VERSION_TTL
        {
            return Ok(version);
        }
        // Taken before the read: an entry must not outlive TTL counted from what it reflects.
        let read_at = Instant::now();
        let version = self.store.user_token_version(user_id).await?;
        if let Ok(mut versions) = self.versions.lock() {
            if versions.len() >= SWEEP_ABOVE {
                versions.retain(|_, (at, _)| at.elapsed() < TOKEN_VERSION_TTL);
            }
            versions.insert(user_id, (read_at, version));
        }
        Ok(version)
    }

    fn forget_staff(&self, user_id: Uuid) {
        if let Ok(mut versions) = self.versions.lock() {
            versions.remove(&user_id);
        }
    }
}

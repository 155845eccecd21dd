//! Credential lookups for the shared `Auth` extractor, answered from central's store.

use crate::store::Store;
use aero_shared::ApiError;
use aero_shared::auth::api_key::KeyHash;
use aero_shared::auth::extract::{CredentialStore, DeviceCredential};
use async_trait::async_trait;
use ipnet::IpNet;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug)]
pub struct StoreCredentials(pub Arc<dyn Store>);

#[async_trait]
impl CredentialStore for StoreCredentials {
    async fn device_for_key(&self, hash: &KeyHash) -> Result<Option<DeviceCredential>, ApiError> {
        Ok(self
            .0
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
        Ok(self.0.get_site(site_id).await?.map(|s| s.allowed_networks))
    }
}

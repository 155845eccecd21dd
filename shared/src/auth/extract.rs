//! The `Auth` extractor: authentication, authorization (permission, site scope, network) and
//! per-principal rate limiting, in that order, for every protected route.

use super::api_key::KeyHash;
use super::jwt::{JwtError, JwtKeys};
use super::principal::{DeviceKind, Permission, Principal, Role, address_allowed};
use crate::problem::ApiError;
use crate::ratelimit::RateLimits;
use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

pub const API_KEY_HEADER: &str = "x-api-key";

/// A device as the credential store knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceCredential {
    pub device_id: Uuid,
    pub site_id: Uuid,
    pub kind: DeviceKind,
    pub allowed_networks: Vec<IpNet>,
}

/// Where credentials are looked up: central's database, or the edge's replica.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The device holding this key, unless the key is unknown or revoked.
    async fn device_for_key(&self, hash: &KeyHash) -> Result<Option<DeviceCredential>, ApiError>;
    /// A site's allowed networks for sensitive operations; `None` if the site does not exist.
    async fn site_networks(&self, site_id: Uuid) -> Result<Option<Vec<IpNet>>, ApiError>;
}

/// Everything the `Auth` extractor needs, shared by all requests of a service.
pub struct Security {
    pub jwt: JwtKeys,
    pub credentials: Arc<dyn CredentialStore>,
    pub limits: RateLimits,
    /// Where chain-wide staff may perform sensitive operations from (HQ office, VPN).
    pub hq_networks: Vec<IpNet>,
    /// Set on an edge: every request there is about this one site.
    pub served_site: Option<Uuid>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("jwt", &self.jwt)
            .field("hq_networks", &self.hq_networks)
            .field("served_site", &self.served_site)
            .finish_non_exhaustive()
    }
}

/// Attached to a route with [`require`]; read by [`Auth`].
#[derive(Clone, Copy, Debug)]
pub struct RequiredPermission(pub Permission);

/// The layer that names the permission a route needs: `post(handler.layer(require(P)))`.
pub fn require(permission: Permission) -> axum::Extension<RequiredPermission> {
    axum::Extension(RequiredPermission(permission))
}

/// An authenticated, authorized, rate-limited caller.
#[derive(Clone, Debug)]
pub struct Auth {
    pub principal: Principal,
    pub client: IpAddr,
    pub permission: Permission,
    /// The request id the pipeline assigned, for audit entries.
    pub request_id: Option<String>,
    security: Arc<Security>,
}

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    Arc<Security>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let security = Arc::<Security>::from_ref(state);
        let Some(RequiredPermission(permission)) = parts.extensions.get().copied() else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "route {} names no permission",
                parts.uri.path()
            )));
        };
        let client = client_addr(parts);
        let principal = authenticate(parts, &security).await?;
        let request_id = parts
            .headers
            .get(crate::pipeline::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let auth = Auth {
            principal,
            client,
            permission,
            request_id,
            security,
        };
        if !auth.principal.has(permission) {
            return Err(ApiError::Forbidden(
                "this credential lacks the permission for this action",
            ));
        }
        let path_site = path_site_id(parts, state).await?;
        if let Some(site) = path_site.or(auth.security.served_site) {
            auth.ensure_site(site).await?;
        } else if permission.is_sensitive() {
            auth.ensure_network(None).await?;
        }
        if permission == Permission::Sync {
            auth.security.limits.check_sync(auth.principal.id())?;
        } else {
            auth.security.limits.check_principal(auth.principal.id())?;
        }
        Ok(auth)
    }
}

impl Auth {
    /// Site scoping for a resource found by id (its site known only after the lookup); also
    /// the network check when this route is sensitive.
    pub async fn ensure_site(&self, site_id: Uuid) -> Result<(), ApiError> {
        if !self.principal.can_access_site(site_id) {
            return Err(ApiError::Forbidden(
                "this credential is not valid for that site",
            ));
        }
        if self.permission.is_sensitive() {
            self.ensure_network(Some(site_id)).await?;
        }
        Ok(())
    }

    async fn ensure_network(&self, site: Option<Uuid>) -> Result<(), ApiError> {
        let networks = match (&self.principal, site, self.security.served_site) {
            (
                Principal::Device {
                    allowed_networks, ..
                },
                _,
                _,
            ) if !allowed_networks.is_empty() => allowed_networks.clone(),
            (Principal::Device { site_id, .. }, _, _) => self.site_networks(*site_id).await?,
            (Principal::Staff { role, .. }, _, None) if role.is_chain_wide() => {
                self.security.hq_networks.clone()
            }
            (_, Some(site), _) => self.site_networks(site).await?,
            (_, None, Some(served)) => self.site_networks(served).await?,
            (Principal::Staff { .. }, None, None) => match self.principal.home_site() {
                Some(site) => self.site_networks(site).await?,
                None => Vec::new(),
            },
        };
        if address_allowed(self.client, &networks) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this operation is only allowed from the site's trusted networks",
            ))
        }
    }

    async fn site_networks(&self, site: Uuid) -> Result<Vec<IpNet>, ApiError> {
        Ok(self
            .security
            .credentials
            .site_networks(site)
            .await?
            .unwrap_or_default())
    }

    pub fn actor_id(&self) -> Uuid {
        self.principal.id()
    }
}

pub(crate) async fn authenticate(
    parts: &Parts,
    security: &Security,
) -> Result<Principal, ApiError> {
    if let Some(key) = parts.headers.get(API_KEY_HEADER) {
        let key = key
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the API key is malformed"))?;
        let device = security
            .credentials
            .device_for_key(&KeyHash::of(key.trim()))
            .await?
            .ok_or(ApiError::Unauthorized("unknown or revoked API key"))?;
        return Ok(Principal::Device {
            device_id: device.device_id,
            site_id: device.site_id,
            kind: device.kind,
            allowed_networks: device.allowed_networks,
        });
    }
    let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "send an X-Api-Key header or an Authorization: Bearer token",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be a Bearer token",
        ))?;
    let claims = security.jwt.verify(token.trim()).map_err(|err| match err {
        JwtError::Expired => ApiError::Unauthorized("the token has expired"),
        _ => ApiError::Unauthorized("the token is invalid"),
    })?;
    let role = Role::parse(&claims.role).ok_or(ApiError::Unauthorized("the token is invalid"))?;
    Ok(Principal::Staff {
        user_id: claims.sub,
        username: claims.username,
        role,
        sites: claims.sites,
    })
}

async fn path_site_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Option<Uuid>, ApiError> {
    let Ok(params) = RawPathParams::from_request_parts(parts, state).await else {
        return Ok(None);
    };
    for (name, value) in &params {
        if name == "site_id" {
            return value
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest("site_id in the path must be a UUID".into()));
        }
    }
    Ok(None)
}

/// The TCP peer address. Behind a reverse proxy, terminate at the proxy on the same host and
/// restrict by the proxy's own networks; forwarded headers are not trusted.
pub fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

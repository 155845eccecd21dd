//! The `Auth` extractor: the failed-authentication throttle, authentication, authorization
//! (permission, site scope, network) and per-principal rate limiting, in that order, for every
//! protected route.

use super::api_key::KeyHash;
use super::jwt::{JwtError, JwtKeys};
use super::principal::{DeviceKind, Permission, Principal, Role, address_allowed};
use crate::client_ip::ClientAddr;
use crate::problem::ApiError;
use crate::ratelimit::RateLimits;
use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, RawPathParams};
use axum::http::HeaderName;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

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
    /// A staff account's current token version; `None` if the account is unknown or disabled.
    /// A token carrying any other version was issued before a revocation and is refused.
    async fn staff_token_version(&self, user_id: Uuid) -> Result<Option<i64>, ApiError>;
    /// Forgets anything cached about a staff account this node just changed, so its own
    /// revocations apply at once rather than when the cache expires.
    fn forget_staff(&self, _user_id: Uuid) {}
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

/// Who is calling, counting a refused credential against the client address. An address that
/// has failed too often is refused here, before its credential is looked up.
pub(crate) async fn authenticate(
    parts: &Parts,
    security: &Security,
) -> Result<Principal, ApiError> {
    let client = client_addr(parts);
    let outcome = identify(parts, security).await;
    if let Err(ApiError::Unauthorized(_)) = outcome {
        security.limits.record_failed_auth(client);
    }
    outcome
}

/// Who is calling, without counting a failure: for a look-ahead (the idempotency layer) that
/// the `Auth` extractor repeats, so one request counts once. A locked-out address is still
/// refused before any lookup.
pub(crate) async fn identify(parts: &Parts, security: &Security) -> Result<Principal, ApiError> {
    security.limits.check_failed_auth(client_addr(parts))?;
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
    // Role and sites come from the token; the version says they are still the account's.
    let current = security.credentials.staff_token_version(claims.sub).await?;
    if current != Some(claims.ver) {
        return Err(ApiError::Unauthorized(
            "the token has been revoked; log in again",
        ));
    }
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

/// The client address every check and record of a request uses: the one the pipeline resolved
/// ([`crate::client_ip::resolve_client`]), which is the TCP peer unless that peer is one of
/// `trusted_proxies`, whose `X-Forwarded-For` / `Forwarded` chain then names the client.
/// Outside the pipeline it is the TCP peer.
pub fn client_addr(parts: &Parts) -> IpAddr {
    if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>() {
        return *addr;
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LimitSettings;
    use axum::Router;
    use axum::body::Body;
    use axum::handler::Handler;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use secrecy::SecretString;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// Knows one device key and counts every lookup.
    struct CountingCredentials {
        key: KeyHash,
        device: DeviceCredential,
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl CredentialStore for CountingCredentials {
        async fn device_for_key(
            &self,
            hash: &KeyHash,
        ) -> Result<Option<DeviceCredential>, ApiError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok((hash.as_str() == self.key.as_str()).then(|| self.device.clone()))
        }

        async fn site_networks(&self, _: Uuid) -> Result<Option<Vec<IpNet>>, ApiError> {
            Ok(Some(Vec::new()))
        }

        async fn staff_token_version(&self, _: Uuid) -> Result<Option<i64>, ApiError> {
            Ok(Some(0))
        }
    }

    struct Fixture {
        router: Router,
        credentials: Arc<CountingCredentials>,
        key: String,
    }

    fn fixture(failed_auth_burst: u32) -> Fixture {
        let key = super::super::api_key::ApiKey::generate();
        let credentials = Arc::new(CountingCredentials {
            key: key.hash(),
            device: DeviceCredential {
                device_id: Uuid::now_v7(),
                site_id: Uuid::now_v7(),
                kind: DeviceKind::Pos,
                allowed_networks: Vec::new(),
            },
            lookups: AtomicUsize::new(0),
        });
        let security = Arc::new(Security {
            jwt: JwtKeys::new(
                &SecretString::from("a-test-signing-secret-of-32-characters!!"),
                "test",
                "test",
                chrono::Duration::minutes(5),
            ),
            credentials: Arc::clone(&credentials) as Arc<dyn CredentialStore>,
            limits: RateLimits::new(&LimitSettings {
                failed_auth_per_minute: 1,
                failed_auth_burst,
                ..LimitSettings::default()
            }),
            hq_networks: Vec::new(),
            served_site: None,
        });
        let handler = |_: Auth| async { "ok" };
        let router = Router::new()
            .route(
                "/status",
                get(handler.layer(require(Permission::ReadStatus))),
            )
            .with_state(security);
        Fixture {
            router,
            credentials,
            key: key.expose().to_string(),
        }
    }

    impl Fixture {
        async fn call(&self, client: &str, header: (HeaderName, &str)) -> axum::response::Response {
            let mut request = Request::get("/status")
                .header(header.0, header.1)
                .body(Body::empty())
                .expect("request");
            request
                .extensions_mut()
                .insert(ClientAddr(client.parse().expect("address")));
            self.router.clone().oneshot(request).await.expect("answer")
        }

        fn lookups(&self) -> usize {
            self.credentials.lookups.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn failed_api_keys_lock_the_address_out_before_the_credential_store() {
        let fx = fixture(3);
        let attacker = "203.0.113.9";
        for attempt in 1..=3 {
            let response = fx.call(attacker, (API_KEY_HEADER, "guessed-key")).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                fx.lookups(),
                attempt,
                "each failure within the burst is looked up"
            );
        }
        for (name, value) in [
            (API_KEY_HEADER, "guessed-key"),
            (API_KEY_HEADER, fx.key.as_str()),
        ] {
            let response = fx.call(attacker, (name, value)).await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry_after: u64 = response.headers()[header::RETRY_AFTER]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry_after), "{retry_after}");
            assert_eq!(fx.lookups(), 3, "a locked-out address costs no lookup");
        }
        let response = fx.call("198.51.100.7", (API_KEY_HEADER, &fx.key)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "another address is unaffected"
        );
        assert_eq!(fx.lookups(), 4);
    }

    #[tokio::test]
    async fn bad_tokens_count_as_failures_and_successes_do_not() {
        let fx = fixture(2);
        let client = "203.0.113.9";
        for _ in 0..10 {
            let response = fx.call(client, (API_KEY_HEADER, &fx.key)).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "successes are not counted"
            );
        }
        let bearer = (header::AUTHORIZATION, "Bearer not.a.token");
        assert_eq!(
            fx.call(client, bearer.clone()).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            fx.call(client, bearer).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            fx.call(client, (API_KEY_HEADER, &fx.key)).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(fx.lookups(), 10);
    }
}

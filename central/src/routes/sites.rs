//! Sites (venues), their one-time enrollment tokens and their sync health, one by one and
//! chain-wide.

use crate::state::{AppState, actor};
use crate::store::{
    DeadLetterState, EnrollmentToken, NameKey, RejectedOpRecord, SiteChanges, StoreError, site_etag,
};
use aero_shared::ApiError;
use aero_shared::auth::api_key::{KeyHash, generate_token};
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::{Permission, Principal};
use aero_shared::etag::{IfMatch, with_etag};
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{SiteRecord, SiteSyncStatus};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadSites, routes!(list_sites)))
        .routes(guarded(Permission::ManageSites, routes!(create_site)))
        .routes(guarded(Permission::ReadSites, routes!(get_site)))
        .routes(guarded(Permission::ManageSites, routes!(update_site)))
        .routes(guarded(
            Permission::IssueEnrollmentTokens,
            routes!(create_enrollment_token),
        ))
        .routes(guarded(Permission::ReadSyncHealth, routes!(chain_status)))
        .routes(guarded(Permission::ReadSyncHealth, routes!(site_sync)))
        .routes(guarded(Permission::ReadSyncHealth, routes!(dead_letters)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    name: String,
    timezone: String,
    #[serde(default)]
    allowed_networks: Vec<String>,
}

impl Validate for NewSite {
    fn validate(&self, v: &mut Validator) {
        v.text("name", &self.name, 100);
        v.timezone("timezone", &self.timezone);
        v.networks("allowed_networks", &self.allowed_networks);
    }
}

#[utoipa::path(post, path = "/v1/sites", tag = "sites", summary = "Create a site (name, timezone, allowed networks)", request_body = NewSite, responses((status = 201, description = "Created", body = SiteRecord)))]
async fn create_site(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewSite>,
) -> Result<Answer, ApiError> {
    let mut v = Validator::new();
    let allowed_networks = v.networks("allowed_networks", &body.allowed_networks);
    v.finish()?;
    let site = SiteRecord {
        id: Uuid::now_v7(),
        name: body.name.trim().to_string(),
        timezone: body.timezone,
        allowed_networks,
        created_at: state.clock.now(),
    };
    let answer = Answer::json(StatusCode::CREATED, &site)?;
    answering(&answer, state.store.create_site(&actor(&auth), &site)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct SiteList {
    sites: Vec<SiteRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sites", tag = "sites", summary = "List the sites the caller can see, by name", params(PageQuery), responses((status = 200, description = "OK", body = SiteList)))]
async fn list_sites(
    State(state): State<AppState>,
    auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<SiteList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let key = |s: &SiteRecord| (s.name.clone(), s.id);
    let paged = match &auth.principal {
        principal if principal.is_chain_wide() => page.finish(
            state
                .store
                .list_sites(page.after.as_ref(), page.fetch())
                .await?,
            key,
        ),
        // A site-bound caller sees the few sites it is bound to, read one by one.
        Principal::Staff { sites: ids, .. } => {
            let mut sites = Vec::with_capacity(ids.len());
            for id in ids {
                sites.extend(state.store.get_site(*id).await?);
            }
            sites.sort_by_key(key);
            page.slice(sites, key)
        }
        Principal::Device { site_id, .. } => page.slice(state.store.get_site(*site_id).await?, key),
    };
    Ok(Json(SiteList {
        sites: paged.rows,
        next_after: paged.next_after,
    }))
}

/// One site, with its entity tag as `ETag` for a later `If-Match`.
fn tagged(site: SiteRecord) -> Response {
    let etag = site_etag(&site);
    with_etag(Json(site), &etag)
}

#[utoipa::path(get, path = "/v1/sites/{site_id}", tag = "sites", summary = "Get one site", params(("site_id" = Uuid, Path)), responses((status = 200, description = "OK, with the site's entity tag in `ETag`", body = SiteRecord)))]
async fn get_site(
    State(state): State<AppState>,
    _auth: Auth,
    Path(site_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let site = state.store.get_site(site_id).await?;
    site.map(tagged).ok_or(ApiError::NotFound("no such site"))
}

/// `PATCH /v1/sites/{site_id}`: the fields to change; absent (or null) fields keep their value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    allowed_networks: Option<Vec<String>>,
}

impl Validate for SitePatch {
    fn validate(&self, v: &mut Validator) {
        v.check(
            self.name.is_some() || self.timezone.is_some() || self.allowed_networks.is_some(),
            "body",
            "name, timezone or allowed_networks: at least one field to change",
        );
        if let Some(name) = &self.name {
            v.text("name", name, 100);
        }
        if let Some(timezone) = &self.timezone {
            v.timezone("timezone", timezone);
        }
        if let Some(networks) = &self.allowed_networks {
            v.networks("allowed_networks", networks);
        }
    }
}

/// Changes only the fields sent, so two edits of different fields both land; with `If-Match`,
/// only if the site is still as the client last read it (412 otherwise).
#[utoipa::path(patch, path = "/v1/sites/{site_id}", tag = "sites", summary = "Change a site's name, timezone or allowed networks", params(("site_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The `ETag` of the client's last read: the change is made only if the site is still as read")), request_body = SitePatch, responses((status = 200, description = "OK, with the new entity tag in `ETag`", body = SiteRecord), (status = 412, description = "The site changed since the read named by `If-Match`", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn update_site(
    State(state): State<AppState>,
    auth: Auth,
    Path(site_id): Path<Uuid>,
    if_match: IfMatch,
    ValidJson(body): ValidJson<SitePatch>,
) -> Result<Response, ApiError> {
    let mut v = Validator::new();
    let allowed_networks = body
        .allowed_networks
        .map(|networks| v.networks("allowed_networks", &networks));
    v.finish()?;
    let changes = SiteChanges {
        name: body.name.map(|name| name.trim().to_string()),
        timezone: body.timezone,
        allowed_networks,
    };
    let site = state
        .store
        .update_site(
            &actor(&auth),
            site_id,
            &changes,
            &if_match,
            state.clock.now(),
        )
        .await
        .map_err(|err| match err {
            StoreError::NotFound => ApiError::NotFound("no such site"),
            other => other.into(),
        })?;
    Ok(tagged(site))
}

#[derive(Serialize, utoipa::ToSchema)]
struct IssuedEnrollmentToken {
    token: String,
    expires_at: DateTime<Utc>,
    site_id: Uuid,
}

#[utoipa::path(post, path = "/v1/sites/{site_id}/enrollment-tokens", tag = "sites", summary = "Issue a one-time edge enrollment token", params(("site_id" = Uuid, Path)), responses((status = 201, description = "Created", body = IssuedEnrollmentToken)))]
async fn create_enrollment_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(site_id): Path<Uuid>,
) -> Result<Answer, ApiError> {
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let token = generate_token();
    let now = state.clock.now();
    let expires_at = now + chrono::Duration::minutes(state.settings.enrollment_token_ttl_minutes);
    let record = EnrollmentToken {
        id: Uuid::now_v7(),
        site_id,
        token_hash: KeyHash::of(token.expose_secret()).as_str().to_string(),
        created_at: now,
        expires_at,
    };
    let answer = Answer::json(
        StatusCode::CREATED,
        &IssuedEnrollmentToken {
            token: token.expose_secret().to_string(),
            expires_at,
            site_id,
        },
    )?;
    answering(
        &answer,
        state.store.create_enrollment_token(&actor(&auth), &record),
    )
    .await?;
    Ok(answer)
}

#[utoipa::path(get, path = "/v1/sites/{site_id}/sync", tag = "sites", summary = "A venue's sync health: last push/pull, acked seq, lag", params(("site_id" = Uuid, Path)), responses((status = 200, description = "OK", body = SiteSyncStatus)))]
async fn site_sync(
    State(state): State<AppState>,
    _auth: Auth,
    Path(site_id): Path<Uuid>,
) -> Result<Json<SiteSyncStatus>, ApiError> {
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    Ok(Json(state.store.site_sync(site_id).await?))
}

/// One venue's health as HQ's chain overview shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct VenueStatus {
    site_id: Uuid,
    name: String,
    timezone: String,
    /// The venue's edge holds its change-hint socket open, or pushed or pulled within the last
    /// few seconds.
    online: bool,
    /// Since when the edge has been out of contact (its socket closed, or its last push or
    /// pull, whichever is latest); `null` while online or when it never made contact.
    offline_since: Option<DateTime<Utc>>,
    /// Since when the current hint socket has been open, when this instance holds it.
    connected_since: Option<DateTime<Utc>>,
    last_push_at: Option<DateTime<Utc>>,
    last_pull_at: Option<DateTime<Utc>>,
    acked_seq: i64,
    /// Changes in the venue's scope its edge has not pulled yet.
    pull_lag: i64,
    /// Ops central refused from the venue that are still dead letters there.
    dead_letters: i64,
    /// Ops waiting in the edge's outbox when it last pulled; `null` before its first report.
    pending_ops: Option<i64>,
    /// How long the oldest of those ops has waited, as of now: it keeps growing while a venue
    /// that held pending ops is offline.
    oldest_pending_age_seconds: Option<i64>,
    /// What the edge named itself in `X-Aero-Edge-Version` when its socket opened.
    edge_version: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChainStatus {
    /// As of when the figures were read.
    at: DateTime<Utc>,
    sites: Vec<VenueStatus>,
}

/// Every venue the caller may see with its edge's health: what the HQ overview polls.
#[utoipa::path(get, path = "/v1/sites/status", tag = "sites", summary = "Every visible venue's edge health: online, offline since, last push/pull, lag, dead letters, version", responses((status = 200, description = "OK", body = ChainStatus)))]
async fn chain_status(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ChainStatus>, ApiError> {
    let now = state.clock.now();
    let mut sites = Vec::new();
    let store = state.store.as_ref();
    let every_site = crate::store::listing::every(
        |after, limit| async move { store.list_sites(after.as_ref(), limit).await },
        |s: &SiteRecord| (s.name.clone(), s.id),
    )
    .await?;
    for site in every_site {
        if !auth.principal.can_access_site(site.id) {
            continue;
        }
        let sync = state.store.site_sync(site.id).await?;
        let dead_letters = state
            .store
            .rejected_ops(site.id, DeadLetterState::Open, None, 1000)
            .await?
            .len() as i64;
        let presence = state.presence.of(site.id);
        let last_contact = [
            presence.disconnected_at,
            sync.hint_seen_at,
            sync.hint_closed_at,
            sync.last_push_at,
            sync.last_pull_at,
        ]
        .into_iter()
        .flatten()
        .max();
        let online = crate::presence::is_online(&presence, &sync, now);
        sites.push(VenueStatus {
            site_id: site.id,
            name: site.name,
            timezone: site.timezone,
            online,
            offline_since: if online { None } else { last_contact },
            connected_since: presence.connected_since,
            last_push_at: sync.last_push_at,
            last_pull_at: sync.last_pull_at,
            acked_seq: sync.acked_seq,
            pull_lag: sync.pull_lag,
            dead_letters,
            pending_ops: sync.outbox.map(|o| o.pending_ops),
            oldest_pending_age_seconds: sync
                .outbox
                .and_then(|o| o.oldest_pending_at)
                .map(|at| (now - at).num_seconds().max(0)),
            edge_version: presence.edge_version,
        });
    }
    Ok(Json(ChainStatus { at: now, sites }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// `open` (the default), `resolved` or `all`.
    state: Option<String>,
}

/// A venue's refused op as HQ sees it: still a dead letter at the venue (`open`), or retried or
/// discarded there (`resolved`, with who decided, when and how).
#[derive(Serialize, utoipa::ToSchema)]
struct DeadLetterView {
    state: DeadLetterState,
    #[serde(flatten)]
    op: RejectedOpRecord,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeadLetterList {
    dead_letters: Vec<DeadLetterView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

/// The ops central refused for good from a venue, newest first. Open ones sit in the venue's
/// dead letters until a manager retries or discards them there; that decision reaches central
/// through the venue's outbox and is shown with the op (`?state=resolved` or `all`).
#[utoipa::path(get, path = "/v1/sites/{site_id}/dead-letters", tag = "sites", params(("site_id" = Uuid, Path), DeadLetterQuery, PageQuery), responses((status = 200, description = "OK", body = DeadLetterList)))]
async fn dead_letters(
    State(state): State<AppState>,
    _auth: Auth,
    Path(site_id): Path<Uuid>,
    Query(query): Query<DeadLetterQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let page = paging.page::<i64>()?;
    let wanted = match query.state.as_deref() {
        None | Some("open") => DeadLetterState::Open,
        Some("resolved") => DeadLetterState::Resolved,
        Some("all") => DeadLetterState::All,
        Some(_) => return Err(ApiError::field("state", "must be open, resolved or all")),
    };
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(ApiError::NotFound("no such site"))?;
    let ops = state
        .store
        .rejected_ops(site_id, wanted, page.after, page.fetch())
        .await?;
    let paged = page.finish(ops, |op| op.seq);
    let dead_letters = paged
        .rows
        .into_iter()
        .map(|op| DeadLetterView {
            state: if op.resolution.is_some() {
                DeadLetterState::Resolved
            } else {
                DeadLetterState::Open
            },
            op,
        })
        .collect();
    Ok(Json(DeadLetterList {
        dead_letters,
        next_after: paged.next_after,
    }))
}

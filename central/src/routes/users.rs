//! Staff users: owners and admins are chain-wide; managers and staff belong to sites.

use crate::state::{AppState, actor};
use crate::store::{NameKey, StoreError, UserChanges, user_etag};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::password::hash_password;
use aero_shared::auth::principal::{Permission, Principal, Role};
use aero_shared::etag::{IfMatch, with_etag};
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::UserRecord;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ManageUsers, routes!(list_users)))
        .routes(guarded(Permission::ManageUsers, routes!(create_user)))
        .routes(guarded(
            Permission::ManageUsers,
            routes!(get_user, update_user, disable_user),
        ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    pub role: Role,
    #[serde(default)]
    pub site_ids: Vec<Uuid>,
}

pub const MIN_PASSWORD_CHARS: usize = 12;

fn check_password(v: &mut Validator, password: &SecretString) {
    let chars = password.expose_secret().chars().count();
    v.check(
        (MIN_PASSWORD_CHARS..=128).contains(&chars),
        "password",
        "must be 12 to 128 characters",
    );
}

/// Chain-wide roles take no sites; site roles need at least one.
fn check_assignment(v: &mut Validator, role: Role, site_ids: &[Uuid]) {
    if role.is_chain_wide() {
        v.check(
            site_ids.is_empty(),
            "site_ids",
            "owners and admins are chain-wide and take no sites",
        );
    } else {
        v.check(
            !site_ids.is_empty(),
            "site_ids",
            "managers and staff need at least one site",
        );
    }
}

/// Every named site must exist.
async fn check_sites_exist(state: &AppState, site_ids: &[Uuid]) -> Result<(), ApiError> {
    let mut v = Validator::new();
    for (i, site) in site_ids.iter().enumerate() {
        if state.store.get_site(*site).await?.is_none() {
            v.error(&format!("site_ids[{i}]"), "no such site");
        }
    }
    v.finish()
}

impl Validate for NewUser {
    fn validate(&self, v: &mut Validator) {
        v.text("username", &self.username, 64);
        v.check(
            self.username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')),
            "username",
            "may contain letters, digits and . _ - @ only",
        );
        check_password(v, &self.password);
        check_assignment(v, self.role, &self.site_ids);
    }
}

/// A user as shown to admins: never the password hash.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: Uuid,
    username: String,
    role: Role,
    site_ids: Vec<Uuid>,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            site_ids: u.site_ids,
            created_at: u.created_at,
            disabled_at: u.disabled_at,
        }
    }
}

/// Hashes a password on a blocking thread (argon2 is deliberately slow).
async fn hash_on_blocking_thread(password: SecretString) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Builds a user record, hashing the password.
pub async fn new_user_record(body: NewUser, now: DateTime<Utc>) -> Result<UserRecord, ApiError> {
    let password_hash = hash_on_blocking_thread(body.password).await?;
    let mut site_ids = body.site_ids;
    site_ids.sort();
    site_ids.dedup();
    Ok(UserRecord {
        id: Uuid::now_v7(),
        username: body.username.trim().to_string(),
        password_hash,
        role: body.role,
        site_ids,
        created_at: now,
        disabled_at: None,
        token_version: 0,
    })
}

#[utoipa::path(post, path = "/v1/users", tag = "users", summary = "Create a staff user", request_body = NewUser, responses((status = 201, description = "Created", body = UserView)))]
async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewUser>,
) -> Result<Answer, ApiError> {
    if body.role == Role::Owner && !is_owner(&auth) {
        return Err(ApiError::Forbidden(
            "only an owner can create another owner",
        ));
    }
    check_sites_exist(&state, &body.site_ids).await?;
    let user = new_user_record(body, state.clock.now()).await?;
    let answer = Answer::json(StatusCode::CREATED, &UserView::from(user.clone()))?;
    answering(&answer, state.store.create_user(&actor(&auth), &user)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserList {
    users: Vec<UserView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/users", tag = "users", summary = "List staff users, by username", params(PageQuery), responses((status = 200, description = "OK", body = UserList)))]
async fn list_users(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<UserList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let users = state
        .store
        .list_users(page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(users, |u| (u.username.clone(), u.id));
    Ok(Json(UserList {
        users: paged.rows.into_iter().map(UserView::from).collect(),
        next_after: paged.next_after,
    }))
}

fn is_owner(auth: &Auth) -> bool {
    matches!(
        auth.principal,
        Principal::Staff {
            role: Role::Owner,
            ..
        }
    )
}

/// `DELETE /v1/users/{id}`: disables the account (the row stays, for the audit trail). Login
/// and the tokens already issued are refused at central within seconds and, once the change
/// replicates, at the user's edges.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), responses((status = 204, description = "Disabled"), (status = 422, description = "A caller cannot disable their own account", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn disable_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&state, &auth, id).await?;
    if auth.principal.id() == user.id {
        return Err(ApiError::Unprocessable(
            "you cannot disable your own account".into(),
        ));
    }
    if user.role == Role::Owner && !is_owner(&auth) {
        return Err(ApiError::Forbidden("only an owner can disable an owner"));
    }
    // False when it was disabled already (or meanwhile): the outcome asked for holds either way.
    state
        .store
        .disable_user(&actor(&auth), id, state.clock.now())
        .await?;
    state.security.credentials.forget_staff(id);
    Ok(StatusCode::NO_CONTENT)
}

/// One user, with its entity tag as `ETag` for a later `If-Match`.
fn tagged(user: UserRecord) -> Response {
    let etag = user_etag(&user);
    with_etag(Json(UserView::from(user)), &etag)
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", summary = "Get one user", params(("id" = Uuid, Path)), responses((status = 200, description = "OK, with the account's entity tag in `ETag`", body = UserView)))]
async fn get_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(tagged(visible_user(&state, &auth, id).await?))
}

/// The user `id`, if every site of theirs is one the caller may manage.
async fn visible_user(state: &AppState, auth: &Auth, id: Uuid) -> Result<UserRecord, ApiError> {
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or(ApiError::NotFound("no such user"))?;
    for site in &user.site_ids {
        auth.ensure_site(*site).await?;
    }
    Ok(user)
}

/// `PATCH /v1/users/{id}`: the fields to change; absent (or null) fields keep their value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    role: Option<Role>,
    /// Replaces the user's sites.
    #[serde(default)]
    site_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    disabled: Option<bool>,
    /// A new password (an administrator's reset).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

impl Validate for UserPatch {
    fn validate(&self, v: &mut Validator) {
        v.check(
            self.role.is_some()
                || self.site_ids.is_some()
                || self.disabled.is_some()
                || self.password.is_some(),
            "body",
            "role, site_ids, disabled or password: at least one field to change",
        );
        if let Some(password) = &self.password {
            check_password(v, password);
        }
        if let Some(sites) = &self.site_ids {
            v.check(sites.len() <= 256, "site_ids", "at most 256 sites");
        }
    }
}

/// Attempts at a change that another writer keeps overtaking before this one gives up with 412.
const UPDATE_ATTEMPTS: usize = 3;

/// Changes a user's role, sites, password or disabled state. Every change bumps the account's
/// token version, so tokens issued before it are refused (within seconds, see SECURITY.md)
/// and the user logs in again with what the account now allows. With `If-Match`, only if the
/// account is still as the client last read it (412 otherwise).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", summary = "Change a user's role, sites, password or disabled state", params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The `ETag` of the client's last read: the change is made only if the account is still as read")), request_body = UserPatch, responses((status = 200, description = "OK, with the new entity tag in `ETag`", body = UserView), (status = 412, description = "The account changed since the read named by `If-Match`, or other writers kept overtaking this change", content_type = "application/problem+json", body = aero_shared::Problem), (status = 422, description = "A change the caller may not make (their own account, an owner)", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn update_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    if_match: IfMatch,
    ValidJson(body): ValidJson<UserPatch>,
) -> Result<Response, ApiError> {
    if let Some(sites) = &body.site_ids {
        check_sites_exist(&state, sites).await?;
    }
    let password_hash = match body.password {
        Some(password) => Some(hash_on_blocking_thread(password).await?),
        None => None,
    };
    let changes = UserChanges {
        role: body.role,
        site_ids: body.site_ids,
        password_hash,
        disabled: body.disabled,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = state
            .store
            .get_user(id)
            .await?
            .ok_or(ApiError::NotFound("no such user"))?;
        if !if_match.admits(&user_etag(&current)) {
            return Err(StoreError::PreconditionFailed.into());
        }
        let now = state.clock.now();
        // The rules are checked against the record as read; the store writes only if that is
        // still the stored version, so they hold for what is written.
        authorize_change(&auth, &current, &changes).await?;
        if let Some(after) = changes.apply(&current, now) {
            let mut v = Validator::new();
            check_assignment(&mut v, after.role, &after.site_ids);
            v.finish()?;
        }
        match state
            .store
            .update_user(&actor(&auth), id, current.token_version, &changes, now)
            .await
        {
            Ok(user) => {
                state.security.credentials.forget_staff(id);
                return Ok(tagged(user));
            }
            // Changed between the read and the write: the rules are checked again against the
            // new state, unless the client asked for the state it had read.
            Err(StoreError::PreconditionFailed)
                if if_match.is_absent() && attempt < UPDATE_ATTEMPTS =>
            {
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Who may change what: the caller must reach every site the user has and would have, only an
/// owner touches an owner, and nobody changes their own role, sites or disabled state (a
/// lock-out nobody could undo); their own password they may.
async fn authorize_change(
    auth: &Auth,
    user: &UserRecord,
    changes: &UserChanges,
) -> Result<(), ApiError> {
    let new_sites = changes.site_ids.iter().flatten();
    for site in user.site_ids.iter().chain(new_sites) {
        auth.ensure_site(*site).await?;
    }
    let owner_involved = user.role == Role::Owner || changes.role == Some(Role::Owner);
    if owner_involved && !is_owner(auth) {
        return Err(ApiError::Forbidden(
            "only an owner can change an owner or make one",
        ));
    }
    let changes_access =
        changes.role.is_some() || changes.site_ids.is_some() || changes.disabled.is_some();
    if auth.principal.id() == user.id && changes_access {
        return Err(ApiError::Unprocessable(
            "you cannot change your own role, sites or disabled state".into(),
        ));
    }
    Ok(())
}

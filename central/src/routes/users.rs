//! Staff users: owners and admins are chain-wide; managers and staff belong to sites.

use crate::state::{AppState, actor};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::password::hash_password;
use aero_shared::auth::principal::{Permission, Principal, Role};
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::UserRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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
        .routes(guarded(Permission::ManageUsers, routes!(disable_user)))
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
        let chars = self.password.expose_secret().chars().count();
        v.check(
            (MIN_PASSWORD_CHARS..=128).contains(&chars),
            "password",
            "must be 12 to 128 characters",
        );
        if self.role.is_chain_wide() {
            v.check(
                self.site_ids.is_empty(),
                "site_ids",
                "owners and admins are chain-wide and take no sites",
            );
        } else {
            v.check(
                !self.site_ids.is_empty(),
                "site_ids",
                "managers and staff need at least one site",
            );
        }
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

/// Builds a user record, hashing the password on a blocking thread (argon2 is deliberately slow).
pub async fn new_user_record(body: NewUser, now: DateTime<Utc>) -> Result<UserRecord, ApiError> {
    let password = body.password;
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
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
    let mut v = Validator::new();
    for (i, site) in body.site_ids.iter().enumerate() {
        if state.store.get_site(*site).await?.is_none() {
            v.error(&format!("site_ids[{i}]"), "no such site");
        }
    }
    v.finish()?;
    let user = new_user_record(body, state.clock.now()).await?;
    let answer = Answer::json(StatusCode::CREATED, &UserView::from(user.clone()))?;
    answering(&answer, state.store.create_user(&actor(&auth), &user)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserList {
    users: Vec<UserView>,
}

#[utoipa::path(get, path = "/v1/users", tag = "users", summary = "List staff users", responses((status = 200, description = "OK", body = UserList)))]
async fn list_users(
    State(state): State<AppState>,
    _auth: Auth,
) -> Result<Json<UserList>, ApiError> {
    let users = state.store.list_users().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
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
/// at central and, once the change replicates, at the user's edges is refused from then on;
/// access tokens already issued stay valid until they expire (minutes).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), responses((status = 204, description = "Disabled"), (status = 422, description = "A caller cannot disable their own account", content_type = "application/problem+json", body = aero_shared::Problem)))]
async fn disable_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or(ApiError::NotFound("no such user"))?;
    for site in &user.site_ids {
        auth.ensure_site(*site).await?;
    }
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
    Ok(StatusCode::NO_CONTENT)
}

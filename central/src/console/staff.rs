//! The venue page's staff forms: add a staff member or manager of the venue (`POST /v1/users`),
//! disable an account and enable it again (`PATCH /v1/users/{id}`). The API decides who may do
//! what (a manager reaches only their venues, nobody disables themselves); its refusal shows on
//! the page as for any other form.

use super::api::{Api, ApiFailure, signed_out};
use super::session::Session;
use super::venue::{self, Extras};
use super::{Console, csrf_refused};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

/// The roles a venue's page hands out; owners and admins are chain-wide and made elsewhere.
pub const VENUE_ROLES: [&str; 2] = ["staff", "manager"];

#[derive(Deserialize)]
pub struct NewStaff {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

#[derive(Deserialize)]
struct Created {
    username: String,
    role: String,
}

/// `POST /console/venues/{site_id}/staff`: a new account with this venue as its one site.
pub async fn add(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(site_id): Path<Uuid>,
    Form(form): Form<NewStaff>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    if !VENUE_ROLES.contains(&form.role.as_str()) {
        return venue::render_refusal(
            &session,
            &api,
            site_id,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose staff or manager.".into(),
        )
        .await;
    }
    let body = serde_json::json!({
        "username": form.username,
        "password": form.password,
        "role": form.role,
        "site_ids": [site_id],
    });
    let answer = api
        .json::<Created>(Some(&session.token), Method::POST, "/v1/users", Some(&body))
        .await;
    let extras = match answer {
        Ok(created) => Extras {
            status: Some(StatusCode::CREATED),
            done: Some(format!(
                "Added {} as {} of this venue; they sign in with the password you chose.",
                created.username, created.role
            )),
            ..Extras::default()
        },
        Err(ApiFailure::SignedOut) => return signed_out(),
        Err(failure) => Extras::failed(&failure),
    };
    venue::render(&session, &api, site_id, &venue::View::default(), extras).await
}

#[derive(Deserialize)]
pub struct Access {
    #[serde(default)]
    csrf: String,
    /// The venue page to return to.
    site_id: Uuid,
    /// `disable` or `enable`.
    action: String,
}

/// `POST /console/users/{user_id}/access`: disables the account or enables it again.
pub async fn set_access(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(user_id): Path<Uuid>,
    Form(form): Form<Access>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let disabled = match form.action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => {
            return venue::render_refusal(
                &session,
                &api,
                form.site_id,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose disable or enable.".into(),
            )
            .await;
        }
    };
    let body = serde_json::json!({ "disabled": disabled });
    let path = format!("/v1/users/{user_id}");
    match api
        .act(&session.token, Method::PATCH, &path, Some(&body))
        .await
    {
        Ok(()) => Redirect::to(&format!(
            "/console/venues/{}?done=staff-{}d",
            form.site_id, form.action
        ))
        .into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            venue::render_refusal(
                &session,
                &api,
                form.site_id,
                failure.status(),
                failure.message(),
            )
            .await
        }
    }
}

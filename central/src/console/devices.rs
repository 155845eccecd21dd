//! The venue page's forms that issue and revoke credentials: a device and its API key, an
//! edge enrollment token, revoking a device's key. A key or token is shown once, on the answer
//! to the form, and never kept by the console.

use super::api::{Api, ApiFailure, signed_out};
use super::session::Session;
use super::venue::{self, Extras, Secret};
use super::{Console, csrf_refused};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct NewDevice {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    allowed_networks: String,
}

#[derive(Deserialize)]
struct Issued {
    name: String,
    kind: String,
    api_key: String,
}

/// `POST /console/venues/{site_id}/devices`: `POST /v1/sites/{site_id}/devices`, then the
/// venue page with the new key.
pub async fn issue(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(site_id): Path<Uuid>,
    Form(form): Form<NewDevice>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let networks: Vec<&str> = form
        .allowed_networks
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let body =
        serde_json::json!({"name": form.name, "kind": form.kind, "allowed_networks": networks});
    let answer = api
        .json::<Issued>(
            Some(&session.token),
            Method::POST,
            &format!("/v1/sites/{site_id}/devices"),
            Some(&body),
        )
        .await;
    let extras = match answer {
        Ok(issued) => Extras {
            status: Some(StatusCode::CREATED),
            done: Some(format!("Registered the {} {}.", issued.kind, issued.name)),
            secret: Some(Secret {
                label: "The device's API key",
                note: format!(
                    "Copy the key of {} now and enter it on the device: it is shown only this once.",
                    issued.name
                ),
                value: issued.api_key,
            }),
            ..Extras::default()
        },
        Err(ApiFailure::SignedOut) => return signed_out(),
        Err(failure) => Extras::failed(&failure),
    };
    venue::render(&session, &api, site_id, &venue::View::default(), extras).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct EnrollmentToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// `POST /console/venues/{site_id}/enrollment-tokens`: a one-time token for `aero-edge enroll`.
pub async fn enrollment_token(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(site_id): Path<Uuid>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let answer = api
        .json::<EnrollmentToken>(
            Some(&session.token),
            Method::POST,
            &format!("/v1/sites/{site_id}/enrollment-tokens"),
            None,
        )
        .await;
    let extras = match answer {
        Ok(issued) => Extras {
            status: Some(StatusCode::CREATED),
            secret: Some(Secret {
                label: "Edge enrollment token",
                note: format!(
                    "Run `aero-edge enroll --central URL --token TOKEN` on the venue's edge before {}. The token works once and is shown only this once.",
                    issued.expires_at.format("%Y-%m-%d %H:%M UTC")
                ),
                value: issued.token,
            }),
            ..Extras::default()
        },
        Err(ApiFailure::SignedOut) => return signed_out(),
        Err(failure) => Extras::failed(&failure),
    };
    venue::render(&session, &api, site_id, &venue::View::default(), extras).await
}

#[derive(Deserialize)]
pub struct Revoke {
    #[serde(default)]
    csrf: String,
    site_id: Uuid,
}

/// `POST /console/devices/{device_id}/revoke`: `DELETE /v1/devices/{device_id}`.
pub async fn revoke(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(device_id): Path<Uuid>,
    Form(form): Form<Revoke>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    match api
        .act(
            &session.token,
            Method::DELETE,
            &format!("/v1/devices/{device_id}"),
            None,
        )
        .await
    {
        Ok(()) => {
            Redirect::to(&format!("/console/venues/{}?done=revoked", form.site_id)).into_response()
        }
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

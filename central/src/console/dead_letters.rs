//! A venue's dead letters on its console page: HQ asks the venue to retry or discard one
//! (`POST /v1/sites/{site_id}/dead-letters/{op_id}/retry|discard`); the venue acts when it
//! next pulls, and its decision then shows with the dead letter.

use super::api::{Api, ApiFailure, signed_out};
use super::session::Session;
use super::venue;
use super::{Console, csrf_refused};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct Decide {
    #[serde(default)]
    csrf: String,
    /// `retry` or `discard`.
    action: String,
}

/// `POST /console/venues/{site_id}/dead-letters/{op_id}`.
pub async fn decide(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path((site_id, op_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<Decide>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let action = match form.action.as_str() {
        "retry" | "discard" => form.action.as_str(),
        _ => {
            return venue::render_refusal(
                &session,
                &api,
                site_id,
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "Choose retry or discard.".into(),
            )
            .await;
        }
    };
    let path = format!("/v1/sites/{site_id}/dead-letters/{op_id}/{action}");
    match api.act(&session.token, Method::POST, &path, None).await {
        Ok(()) => Redirect::to(&format!(
            "/console/venues/{site_id}?done={action}-requested"
        ))
        .into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            venue::render_refusal(&session, &api, site_id, failure.status(), failure.message())
                .await
        }
    }
}

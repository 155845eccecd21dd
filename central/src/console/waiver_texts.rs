//! The catalogue's waiver texts: the versions HQ published, newest first, each readable in
//! full, and the form that publishes the next version (`POST /v1/waiver-texts`). A published text
//! is never edited: a change of wording is a new version, and each signed waiver keeps the
//! version its signer was shown.

use super::api::{Api, ApiFailure, signed_out};
use super::catalogue::{self, Extras};
use super::layout::when;
use super::session::{CSRF_FIELD, Session};
use super::{Console, csrf_refused};
use axum::Form;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

/// How many of the newest versions the page lists.
const SHOWN: u32 = 20;

#[derive(Deserialize)]
struct WaiverTextPage {
    waiver_texts: Vec<WaiverText>,
    next_after: Option<String>,
}

#[derive(Deserialize)]
struct WaiverText {
    version: i64,
    title: String,
    body: String,
    published_at: DateTime<Utc>,
    published_by: String,
}

/// The publish form's fields, kept to fill the form again after an error.
#[derive(Deserialize, Default)]
pub struct NewWaiverText {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

/// The waiver texts section of the catalogue page.
pub async fn section(
    session: &Session,
    api: &Api,
    now: DateTime<Utc>,
    draft: &NewWaiverText,
) -> Result<Markup, ApiFailure> {
    let listed: Result<WaiverTextPage, _> = api
        .get(&session.token, &format!("/v1/waiver-texts?limit={SHOWN}"))
        .await;
    if let Err(ApiFailure::SignedOut) = listed {
        return Err(ApiFailure::SignedOut);
    }
    Ok(html! {
        @match &listed {
            Ok(page) if page.waiver_texts.is_empty() => {
                p { "No waiver text is published yet: venues take waivers without a recorded wording." }
            }
            Ok(page) => {
                @if let Some(current) = page.waiver_texts.first() {
                    p { "Venues show version " strong { (current.version) } " to signers once their edges have pulled it." }
                }
                div.scroll { table.waiver-texts {
                    caption.sr-only { "Published waiver texts, newest first" }
                    thead { tr {
                        th scope="col" { "Version" } th scope="col" { "Title and wording" }
                        th scope="col" { "Published" } th scope="col" { "By" }
                    } }
                    tbody {
                        @for text in &page.waiver_texts {
                            tr data-version=(text.version) {
                                th scope="row" { (text.version) }
                                td {
                                    details {
                                        summary { (text.title) }
                                        div.wording { (text.body) }
                                    }
                                }
                                td { (when(Some(text.published_at), now)) }
                                td { (text.published_by) }
                            }
                        }
                    }
                } }
                @if page.next_after.is_some() {
                    p.hint { "Older versions are kept; the " (SHOWN) " newest are listed." }
                }
            }
            Err(failure) => { p.notice.error { (failure.message()) } }
        }
        h3 id="publish-waiver" { "Publish a new version" }
        form.stack method="post" action="/console/catalogue/waiver-texts" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
            label for="waiver-title" { "Title" }
            input id="waiver-title" name="title" type="text" required maxlength="200" value=(draft.title);
            label for="waiver-body" { "Wording" }
            textarea id="waiver-body" name="body" required maxlength="50000" rows="10" { (draft.body) }
            button type="submit" { "Publish version" }
        }
    })
}

/// `POST /console/catalogue/waiver-texts`: `POST /v1/waiver-texts`, then the catalogue.
pub async fn publish(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Form(form): Form<NewWaiverText>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let body = serde_json::json!({ "title": form.title, "body": form.body });
    match api
        .act(
            &session.token,
            Method::POST,
            "/v1/waiver-texts",
            Some(&body),
        )
        .await
    {
        Ok(()) => Redirect::to("/console/catalogue?done=waiver-published").into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            let extras = Extras {
                status: Some(failure.status()),
                error: Some(failure.message()),
                waiver: form,
                ..Extras::default()
            };
            catalogue::render(&session, &api, extras).await
        }
    }
}

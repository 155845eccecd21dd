//! Waiver texts: the wording every venue shows before a waiver is signed. HQ publishes each
//! new wording as the next version (1, 2, 3, ... chain-wide); a published text is never edited
//! or withdrawn, and every venue replicates every version, so the version a signed waiver
//! records always names the words its signer was shown.

use crate::state::{AppState, actor};
use crate::store::WaiverTextDraft;
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{MAX_WAIVER_BODY_CHARS, MAX_WAIVER_TITLE_CHARS, WaiverTextRecord};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::SubsecRound as _;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Those who answer for what the venues have customers sign: HQ and venue managers.
        // Every terminal reads the current text at its own edge.
        .routes(guarded(Permission::ReadReports, routes!(list_waiver_texts)))
        // Whoever may change what the chain sells may change what its customers sign.
        .routes(guarded(
            Permission::ManageCatalog,
            routes!(publish_waiver_text),
        ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWaiverText {
    /// 1 to 200 characters.
    title: String,
    /// The wording, 1 to 50,000 characters; line breaks and tabs are kept as sent.
    body: String,
}

impl Validate for NewWaiverText {
    fn validate(&self, v: &mut Validator) {
        v.text("title", &self.title, MAX_WAIVER_TITLE_CHARS);
        // Not `text`: a legal text pasted from a word processor may break its lines with CRLF.
        if self.body.trim().is_empty() {
            v.error("body", "must not be blank");
        } else if self.body.chars().count() > MAX_WAIVER_BODY_CHARS {
            v.error(
                "body",
                format!("must be at most {MAX_WAIVER_BODY_CHARS} characters"),
            );
        }
        v.check(
            !self
                .body
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
            "body",
            "must not contain control characters other than line breaks and tabs",
        );
    }
}

/// Publishes a new wording as the next version (1 for the chain's first). Every venue shows it
/// before the next waiver it takes, as soon as the change reaches it.
#[utoipa::path(post, path = "/v1/waiver-texts", tag = "catalog", summary = "Publish the next version of the waiver text", request_body = NewWaiverText, responses((status = 201, description = "Published", body = WaiverTextRecord)))]
async fn publish_waiver_text(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewWaiverText>,
) -> Result<(StatusCode, Json<WaiverTextRecord>), ApiError> {
    // The version is only known inside the publishing transaction, so unlike the catalog's
    // creations the answer cannot be declared before the write: the store marks an
    // `Idempotency-Key` committed with it and the middleware keeps this answer for replay.
    let actor = actor(&auth);
    let draft = WaiverTextDraft {
        id: Uuid::now_v7(),
        title: body.title.trim().to_string(),
        body: body.body,
        // Milliseconds, as both stores keep them, so the answer is the record as stored.
        published_at: state.clock.now().trunc_subsecs(3),
        published_by: actor.name.clone(),
    };
    let published = state.store.publish_waiver_text(&actor, &draft).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct WaiverTextList {
    waiver_texts: Vec<WaiverTextRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/waiver-texts", tag = "catalog", summary = "List the published waiver texts, newest version first", params(PageQuery), responses((status = 200, description = "OK", body = WaiverTextList)))]
async fn list_waiver_texts(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<WaiverTextList>, ApiError> {
    // Newest first: a page resumes below the last version it showed.
    let page = paging.page::<i64>()?;
    let texts = state
        .store
        .list_waiver_texts(page.after, page.fetch())
        .await?;
    let paged = page.finish(texts, |t| t.version);
    Ok(Json(WaiverTextList {
        waiver_texts: paged.rows,
        next_after: paged.next_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(title: &str, body: &str) -> Vec<String> {
        let text = NewWaiverText {
            title: title.into(),
            body: body.into(),
        };
        let mut v = Validator::new();
        text.validate(&mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(ApiError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn title_and_body_are_named_when_blank_or_too_long() {
        assert!(refusals("Liability waiver", "I accept the risks.\r\n\tSigned below.").is_empty());
        assert_eq!(refusals(" ", ""), ["title", "body"]);
        let long_title = "t".repeat(MAX_WAIVER_TITLE_CHARS + 1);
        let long_body = "é".repeat(MAX_WAIVER_BODY_CHARS + 1);
        assert_eq!(refusals(&long_title, &long_body), ["title", "body"]);
        assert!(refusals(&"t".repeat(200), &"é".repeat(50_000)).is_empty());
        assert_eq!(refusals("Waiver", "a\u{0}b"), ["body"]);
    }
}

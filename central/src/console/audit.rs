//! The audit log: who changed what, when and from where (`GET /v1/audit`), filtered by venue,
//! actor and action. Venue staff read it one of their venues at a time, as the API requires.

use super::api::{Api, ApiFailure, query_string, signed_out};
use super::layout::{self, Section, when};
use super::session::Session;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Entries the page shows: the newest that match.
const SHOWN: usize = 200;

#[derive(Deserialize)]
struct SitePage {
    sites: Vec<Site>,
    next_after: Option<String>,
}

#[derive(Deserialize)]
struct Site {
    id: Uuid,
    name: String,
}

#[derive(Deserialize)]
struct AuditList {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    at: DateTime<Utc>,
    actor_kind: String,
    actor_name: String,
    ip: Option<String>,
    request_id: Option<String>,
    action: String,
    target: Option<String>,
    site_id: Option<Uuid>,
}

/// The filter form's fields as typed; blank means "any".
#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    site_id: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
}

/// `GET /console/audit`.
pub async fn page(session: Session, api: Api, Query(filters): Query<Filters>) -> Response {
    let token = session.token.as_str();
    let sites = match api
        .every(token, "/v1/sites", |p: SitePage| (p.sites, p.next_after))
        .await
    {
        Ok(sites) => sites,
        Err(ApiFailure::SignedOut) => return signed_out(),
        Err(failure) => return failure.into_response(),
    };
    let mut venue = match filters.site_id.trim() {
        "" => None,
        text => match Uuid::parse_str(text) {
            Ok(id) => Some(id),
            Err(_) => {
                let refused = ApiFailure::Refused {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    detail: "Choose a venue from the list.".into(),
                    errors: Vec::new(),
                };
                return render(&session, &sites, &filters, None, Err(refused), None);
            }
        },
    };
    let mut answer = list(&api, token, venue, &filters).await;
    // Venue staff may not read the whole chain's log: show their first venue's instead.
    let mut hint = None;
    if venue.is_none()
        && refused_for_want_of_a_venue(&answer)
        && let Some(first) = sites.first()
    {
        venue = Some(first.id);
        hint = Some(format!(
            "You read the log one venue at a time; showing {}.",
            first.name
        ));
        answer = list(&api, token, venue, &filters).await;
    }
    if matches!(answer, Err(ApiFailure::SignedOut)) {
        return signed_out();
    }
    render(&session, &sites, &filters, venue, answer, hint.as_deref())
}

async fn list(
    api: &Api,
    token: &str,
    venue: Option<Uuid>,
    filters: &Filters,
) -> Result<Vec<Entry>, ApiFailure> {
    let venue = venue.map(|id| id.to_string());
    let limit = SHOWN.to_string();
    let mut query = vec![("limit", limit.as_str())];
    for (name, value) in [
        ("site_id", venue.as_deref().unwrap_or("")),
        ("actor", filters.actor.trim()),
        ("action", filters.action.trim()),
    ] {
        if !value.is_empty() {
            query.push((name, value));
        }
    }
    let path = format!("/v1/audit?{}", query_string(&query));
    let list: AuditList = api.get(token, &path).await?;
    Ok(list.entries)
}

fn refused_for_want_of_a_venue(answer: &Result<Vec<Entry>, ApiFailure>) -> bool {
    matches!(answer, Err(ApiFailure::Refused { errors, .. }) if errors.iter().any(|e| e.field == "site_id"))
}

fn render(
    session: &Session,
    sites: &[Site],
    filters: &Filters,
    venue: Option<Uuid>,
    answer: Result<Vec<Entry>, ApiFailure>,
    hint: Option<&str>,
) -> Response {
    let names: HashMap<Uuid, &str> = sites.iter().map(|s| (s.id, s.name.as_str())).collect();
    let status = match &answer {
        Ok(_) => StatusCode::OK,
        Err(failure) => failure.status(),
    };
    let error = answer.as_ref().err().map(ApiFailure::message);
    let content = html! {
        h1 { "Audit log" }
        (layout::notice(error.as_deref(), None))
        form.filters method="get" action="/console/audit" {
            div {
                label for="audit-venue" { "Venue" }
                select id="audit-venue" name="site_id" {
                    option value="" selected[venue.is_none()] { "All venues" }
                    @for site in sites {
                        option value=(site.id) selected[venue == Some(site.id)] { (site.name) }
                    }
                }
            }
            div {
                label for="audit-actor" { "User (name or id)" }
                input id="audit-actor" name="actor" type="text" value=(filters.actor);
            }
            div {
                label for="audit-action" { "Action (exact, e.g. site.create)" }
                input id="audit-action" name="action" type="text" value=(filters.action);
            }
            button type="submit" { "Filter" }
        }
        @if let Some(hint) = hint {
            p.hint role="status" { (hint) }
        }
        @if let Ok(entries) = &answer {
            (table(entries, &names, Utc::now()))
        }
    };
    layout::respond(
        status,
        layout::page("Audit log", Section::Audit, Some(session), content),
    )
}

fn table(entries: &[Entry], names: &HashMap<Uuid, &str>, now: DateTime<Utc>) -> Markup {
    html! {
        p.summary {
            (entries.len()) " matching " (if entries.len() == 1 { "entry" } else { "entries" }) ", newest first."
            @if entries.len() == SHOWN {
                " Only the newest " (SHOWN) " are shown: narrow the filter to see older ones."
            }
        }
        @if entries.is_empty() {
            p { "No entries match." }
        } @else {
            div.scroll { table.audit {
                caption.sr-only { "Audit log entries, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Venue" } th scope="col" { "Actor" }
                    th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Client address" }
                    th scope="col" { "Request id" }
                } }
                tbody {
                    @for e in entries {
                        tr data-action=(e.action) {
                            th scope="row" { (when(Some(e.at), now)) }
                            td {
                                @match e.site_id {
                                    Some(id) => { (names.get(&id).map_or_else(|| id.to_string(), |name| name.to_string())) }
                                    None => { "Chain-wide" }
                                }
                            }
                            td { (e.actor_name) " " span.hint { "(" (e.actor_kind) ")" } }
                            td { code { (e.action) } }
                            td { @match &e.target { Some(target) => { code { (target) } } None => { "none" } } }
                            td { (e.ip.as_deref().unwrap_or("not recorded")) }
                            td { @match &e.request_id { Some(id) => { code { (id) } } None => { "none" } } }
                        }
                    }
                }
            } }
        }
    }
}

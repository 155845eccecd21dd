//! The venue page's smart plugs: what the venue last reported of each (state, reachability,
//! problem), its schedules, and the form that overrides it on or off until a time given in
//! the venue's timezone (`POST /v1/plugs/{id}/overrides`).

use super::api::{Api, ApiFailure, signed_out};
use super::layout::when;
use super::session::{CSRF_FIELD, Session};
use super::venue::{self, Extras};
use super::{Console, csrf_refused};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct PlugList {
    plugs: Vec<Plug>,
}

#[derive(Deserialize)]
struct Plug {
    id: Uuid,
    name: String,
    host: String,
    port: u16,
    child_id: Option<String>,
    status: Option<PlugStatus>,
}

#[derive(Deserialize)]
struct PlugStatus {
    state: Option<String>,
    reachable: bool,
    last_seen: Option<DateTime<Utc>>,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct ScheduleList {
    schedules: Vec<Schedule>,
}

#[derive(Deserialize)]
struct Schedule {
    cron: String,
    state: String,
}

/// The plugs section of a venue's page.
pub async fn section(
    session: &Session,
    api: &Api,
    site_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Markup, ApiFailure> {
    let token = session.token.as_str();
    let list: PlugList = match api.get(token, &format!("/v1/sites/{site_id}/plugs")).await {
        Ok(list) => list,
        Err(ApiFailure::SignedOut) => return Err(ApiFailure::SignedOut),
        Err(failure) => return Ok(html! { p.notice.error { (failure.message()) } }),
    };
    let mut schedules = Vec::new();
    for plug in &list.plugs {
        let listed: Result<ScheduleList, _> = api
            .get(token, &format!("/v1/plugs/{}/schedules", plug.id))
            .await;
        schedules.push(listed.map(|l| l.schedules).unwrap_or_default());
    }
    Ok(html! {
        @if list.plugs.is_empty() {
            p { "No smart plugs at this venue." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Plug" } th scope="col" { "State" } th scope="col" { "Reachable" }
                    th scope="col" { "Schedules" } th scope="col" { "Override" }
                } }
                tbody {
                    @for (plug, schedules) in list.plugs.iter().zip(&schedules) {
                        tr {
                            th scope="row" {
                                (plug.name)
                                br;
                                span.hint { (plug.host) ":" (plug.port) @if let Some(child) = &plug.child_id { " outlet " (child) } }
                            }
                            td { (plug.status.as_ref().and_then(|s| s.state.as_deref()).unwrap_or("unknown")) }
                            td {
                                @match &plug.status {
                                    Some(s) if s.reachable => { "yes, seen " (when(s.last_seen, now)) }
                                    Some(s) => {
                                        "no"
                                        @if let Some(problem) = &s.problem { ": " (problem) }
                                    }
                                    None => { "not reported yet" }
                                }
                            }
                            td {
                                @if schedules.is_empty() { "none" } @else {
                                    ul { @for s in schedules { li { code { (s.cron) } " → " (s.state) } } }
                                }
                            }
                            td {
                                form.stack method="post" action=(format!("/console/plugs/{}/override", plug.id)) {
                                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                    input type="hidden" name="site_id" value=(site_id);
                                    fieldset {
                                        legend { "Turn " (plug.name) }
                                        label { input type="radio" name="on" value="true" required; " on" }
                                        " "
                                        label { input type="radio" name="on" value="false"; " off" }
                                    }
                                    label for=(format!("until-{}", plug.id)) { "until (venue time)" }
                                    input id=(format!("until-{}", plug.id)) name="until" type="datetime-local" required;
                                    button type="submit" { "Override " (plug.name) }
                                }
                            }
                        }
                    }
                }
            } }
        }
    })
}

#[derive(Deserialize)]
pub struct Override {
    #[serde(default)]
    csrf: String,
    site_id: Uuid,
    #[serde(default)]
    on: String,
    #[serde(default)]
    until: String,
}

#[derive(Deserialize)]
struct Site {
    timezone: String,
}

/// `POST /console/plugs/{plug_id}/override`.
pub async fn set_override(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(plug_id): Path<Uuid>,
    Form(form): Form<Override>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let failed = |message: String, status: StatusCode| Extras {
        status: Some(status),
        error: Some(message),
        ..Extras::default()
    };
    let site: Site = match api
        .get(&session.token, &format!("/v1/sites/{}", form.site_id))
        .await
    {
        Ok(site) => site,
        Err(failure) => return failure.into_response(),
    };
    let on = match form.on.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            let extras = failed("Choose on or off.".into(), StatusCode::UNPROCESSABLE_ENTITY);
            return venue::render(
                &session,
                &api,
                form.site_id,
                &venue::View::default(),
                extras,
            )
            .await;
        }
    };
    let Some(until) = local_to_utc(&site.timezone, &form.until) else {
        let extras = failed(
            "Give the time the override ends as a date and time.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        return venue::render(
            &session,
            &api,
            form.site_id,
            &venue::View::default(),
            extras,
        )
        .await;
    };
    let body = serde_json::json!({"on": on, "until": until});
    match api
        .act(
            &session.token,
            Method::POST,
            &format!("/v1/plugs/{plug_id}/overrides"),
            Some(&body),
        )
        .await
    {
        Ok(()) => {
            Redirect::to(&format!("/console/venues/{}?done=override", form.site_id)).into_response()
        }
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            let extras = failed(failure.message(), failure.status());
            venue::render(
                &session,
                &api,
                form.site_id,
                &venue::View::default(),
                extras,
            )
            .await
        }
    }
}

/// A browser's `datetime-local` value (`YYYY-MM-DDTHH:MM`, optionally with seconds) in the
/// venue's timezone, as UTC; the earlier instant when the local time occurs twice.
fn local_to_utc(timezone: &str, text: &str) -> Option<DateTime<Utc>> {
    let tz: chrono_tz::Tz = timezone.parse().ok()?;
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_time_is_read_in_the_venue_timezone() {
        let utc = local_to_utc("Europe/London", "2026-07-01T18:30").unwrap();
        assert_eq!(utc.to_rfc3339(), "2026-07-01T17:30:00+00:00");
        assert_eq!(local_to_utc("Europe/London", "tomorrow"), None);
        assert_eq!(local_to_utc("Nowhere/City", "2026-07-01T18:30"), None);
    }
}

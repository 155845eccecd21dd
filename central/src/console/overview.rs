//! The chain overview: every venue the user may see with its edge's health, refreshed every
//! second by htmx from `GET /v1/sites/status`, unhealthy venues first unless the user sorts
//! by a column; and the form that adds a venue.

use super::Console;
use super::api::{Api, ApiFailure};
use super::layout::{self, Section, ago, when};
use super::session::{CSRF_FIELD, Session};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use std::cmp::Ordering;
use uuid::Uuid;

/// How often the table refreshes: a stopped edge shows as offline within a few seconds.
const REFRESH: &str = "every 1s";

#[derive(Deserialize)]
pub struct ChainStatus {
    pub at: DateTime<Utc>,
    pub sites: Vec<VenueStatus>,
}

#[derive(Deserialize)]
pub struct VenueStatus {
    pub site_id: Uuid,
    pub name: String,
    pub online: bool,
    pub offline_since: Option<DateTime<Utc>>,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    pub pull_lag: i64,
    pub dead_letters: i64,
    pub pending_ops: Option<i64>,
    pub oldest_pending_age_seconds: Option<i64>,
    pub edge_version: Option<String>,
}

/// An op waiting this long in a venue's outbox means its writes are not reaching central.
const STUCK_PENDING_SECS: i64 = 300;

impl VenueStatus {
    /// Offline, holding dead letters, or with writes waiting for more than a few minutes.
    fn unhealthy(&self) -> bool {
        !self.online || self.dead_letters > 0 || self.pending_stuck()
    }

    fn pending_stuck(&self) -> bool {
        self.oldest_pending_age_seconds
            .is_some_and(|age| age >= STUCK_PENDING_SECS)
    }
}

/// A venue's outbox as the tables show it: the count, and how long the oldest op has waited.
pub fn pending_markup(site: &VenueStatus) -> Markup {
    html! {
        @match (site.pending_ops, site.oldest_pending_age_seconds) {
            (None, _) => { "unknown" }
            (Some(0), _) => { "0" }
            (Some(n), Some(age)) if site.pending_stuck() => {
                span.badge.warn { span aria-hidden="true" { "! " } (n) }
                " " span.since { "oldest " (ago(chrono::Duration::seconds(age))) }
            }
            (Some(n), Some(age)) => { (n) " " span.since { "oldest " (ago(chrono::Duration::seconds(age))) } }
            (Some(n), None) => { (n) }
        }
    }
}

/// The columns the table sorts by.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Unhealthy first (longest offline first), then by name.
    #[default]
    Health,
    Name,
    LastPush,
    LastPull,
    DeadLetters,
    PullLag,
    Pending,
}

impl SortKey {
    fn as_str(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Name => "name",
            Self::LastPush => "last_push",
            Self::LastPull => "last_pull",
            Self::DeadLetters => "dead_letters",
            Self::PullLag => "pull_lag",
            Self::Pending => "pending",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

#[derive(Deserialize, Default)]
pub struct Sorting {
    #[serde(default)]
    sort: SortKey,
    #[serde(default)]
    dir: Direction,
}

fn compare(a: &VenueStatus, b: &VenueStatus, key: SortKey) -> Ordering {
    let by_name = || a.name.to_lowercase().cmp(&b.name.to_lowercase());
    match key {
        SortKey::Health => b
            .unhealthy()
            .cmp(&a.unhealthy())
            .then(a.online.cmp(&b.online))
            // Longest offline first; a venue never seen (no date) is the oldest problem.
            .then(a.offline_since.cmp(&b.offline_since))
            .then(b.dead_letters.cmp(&a.dead_letters))
            .then(
                b.oldest_pending_age_seconds
                    .cmp(&a.oldest_pending_age_seconds),
            )
            .then_with(by_name),
        SortKey::Name => by_name(),
        SortKey::LastPush => a.last_push_at.cmp(&b.last_push_at).then_with(by_name),
        SortKey::LastPull => a.last_pull_at.cmp(&b.last_pull_at).then_with(by_name),
        SortKey::DeadLetters => a.dead_letters.cmp(&b.dead_letters).then_with(by_name),
        SortKey::PullLag => a.pull_lag.cmp(&b.pull_lag).then_with(by_name),
        SortKey::Pending => a
            .oldest_pending_age_seconds
            .cmp(&b.oldest_pending_age_seconds)
            .then(a.pending_ops.cmp(&b.pending_ops))
            .then_with(by_name),
    }
}

/// Sorts venues for the table.
pub fn sort(sites: &mut [VenueStatus], key: SortKey, dir: Direction) {
    sites.sort_by(|a, b| {
        let order = compare(a, b, key);
        if dir == Direction::Desc {
            order.reverse()
        } else {
            order
        }
    });
}

/// `GET /console`.
pub async fn page(session: Session, api: Api, Query(sorting): Query<Sorting>) -> Response {
    render(
        &session,
        &api,
        &sorting,
        StatusCode::OK,
        None,
        &NewVenue::default(),
    )
    .await
}

async fn render(
    session: &Session,
    api: &Api,
    sorting: &Sorting,
    status: StatusCode,
    error: Option<&str>,
    venue: &NewVenue,
) -> Response {
    let table = match table_markup(session, api, sorting).await {
        Ok(table) => table,
        Err(failure) => return failure.into_response(),
    };
    let content = html! {
        h1 { "Chain overview" }
        (layout::notice(error, None))
        p.hint { "Venues with a problem are listed first. The table refreshes every second." }
        div id="venues" hx-get=(format!("/console/overview/table?sort={}&dir={}", sorting.sort.as_str(), dir_str(sorting.dir))) hx-trigger=(REFRESH) hx-swap="innerHTML" {
            (table)
        }
        section aria-labelledby="add-venue" {
            h2 id="add-venue" { "Add a venue" }
            form.stack method="post" action="/console/venues" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="venue-name" { "Name" }
                input id="venue-name" name="name" type="text" required maxlength="100" value=(venue.name);
                label for="venue-timezone" { "Timezone (IANA name, e.g. Europe/London)" }
                input id="venue-timezone" name="timezone" type="text" required value=(if venue.timezone.is_empty() { "UTC" } else { &venue.timezone });
                label for="venue-networks" { "Allowed networks (CIDR, comma separated; optional)" }
                input id="venue-networks" name="allowed_networks" type="text" value=(venue.allowed_networks);
                button type="submit" { "Add venue" }
            }
        }
    };
    layout::respond(
        status,
        layout::page("Chain overview", Section::Overview, Some(session), content),
    )
}

fn dir_str(dir: Direction) -> &'static str {
    match dir {
        Direction::Asc => "asc",
        Direction::Desc => "desc",
    }
}

/// `GET /console/overview/table`: the table alone, for htmx to swap in.
pub async fn table(
    session: Result<Session, super::session::SignInFirst>,
    api: Api,
    Query(sorting): Query<Sorting>,
) -> Response {
    let Ok(session) = session else {
        return hx_to_login();
    };
    match table_markup(&session, &api, &sorting).await {
        Ok(table) => layout::respond(StatusCode::OK, table),
        Err(ApiFailure::SignedOut) => hx_to_login(),
        Err(failure) => layout::respond(
            failure.status(),
            html! { p.notice.error role="alert" { strong { "Error: " } (failure.message()) } },
        ),
    }
}

/// Sends the whole page to the login form, not just the fragment htmx asked for.
fn hx_to_login() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert("hx-redirect", HeaderValue::from_static("/console/login"));
    response
}

async fn table_markup(
    session: &Session,
    api: &Api,
    sorting: &Sorting,
) -> Result<Markup, ApiFailure> {
    let mut status: ChainStatus = api.get(&session.token, "/v1/sites/status").await?;
    sort(&mut status.sites, sorting.sort, sorting.dir);
    let now = status.at;
    let online = status.sites.iter().filter(|s| s.online).count();
    let header = |key: SortKey, label: &str| {
        let active = sorting.sort == key;
        let next = if active && sorting.dir == Direction::Asc {
            Direction::Desc
        } else {
            Direction::Asc
        };
        let aria = active.then_some(match sorting.dir {
            Direction::Asc => "ascending",
            Direction::Desc => "descending",
        });
        html! {
            th scope="col" aria-sort=[aria] {
                a href=(format!("/console?sort={}&dir={}", key.as_str(), dir_str(next))) {
                    (label)
                    @if active {
                        span.sr-only { ", sorted " (aria.unwrap_or("")) }
                        span aria-hidden="true" { @if sorting.dir == Direction::Asc { " ▲" } @else { " ▼" } }
                    }
                }
            }
        }
    };
    Ok(html! {
        p.summary id="venue-summary" { (online) " of " (status.sites.len()) " venues online." }
        @if status.sites.is_empty() {
            p { "No venues yet." }
        } @else {
            div.scroll {
                table.venues {
                    caption.sr-only { "Venues and the health of their edges" }
                    thead {
                        tr {
                            (header(SortKey::Name, "Venue"))
                            (header(SortKey::Health, "Status"))
                            (header(SortKey::LastPush, "Last push"))
                            (header(SortKey::LastPull, "Last pull"))
                            (header(SortKey::Pending, "Pending ops"))
                            (header(SortKey::PullLag, "Pull lag"))
                            (header(SortKey::DeadLetters, "Dead letters"))
                            th scope="col" { "Edge version" }
                        }
                    }
                    tbody {
                        @for site in &status.sites {
                            tr data-venue=(site.name) data-online=(site.online) {
                                th scope="row" { a href=(format!("/console/venues/{}", site.site_id)) { (site.name) } }
                                td {
                                    @if site.online {
                                        span.badge.ok { span aria-hidden="true" { "● " } "Online" }
                                    } @else {
                                        span.badge.bad { span aria-hidden="true" { "✕ " } "Offline" }
                                        @match site.offline_since {
                                            Some(since) => { " " span.since { "for " (ago(now - since)) } }
                                            None => { " " span.since { "never connected" } }
                                        }
                                    }
                                }
                                td { (when(site.last_push_at, now)) }
                                td { (when(site.last_pull_at, now)) }
                                td { (pending_markup(site)) }
                                td { (site.pull_lag) }
                                td {
                                    @if site.dead_letters > 0 {
                                        span.badge.warn { span aria-hidden="true" { "! " } (site.dead_letters) }
                                    } @else { "0" }
                                }
                                td { (site.edge_version.as_deref().unwrap_or("unknown")) }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The add-a-venue form's fields, kept to fill the form again after an error.
#[derive(Deserialize, Default)]
pub struct NewVenue {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    allowed_networks: String,
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// `POST /console/venues`: creates the venue through `POST /v1/sites`, then opens its page.
pub async fn create(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Form(form): Form<NewVenue>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return super::csrf_refused();
    }
    let networks: Vec<&str> = form
        .allowed_networks
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let body = serde_json::json!({
        "name": form.name,
        "timezone": form.timezone.trim(),
        "allowed_networks": networks,
    });
    match api
        .json::<Created>(Some(&session.token), Method::POST, "/v1/sites", Some(&body))
        .await
    {
        Ok(created) => Redirect::to(&format!("/console/venues/{}", created.id)).into_response(),
        Err(ApiFailure::SignedOut) => super::api::signed_out(),
        Err(failure) => {
            render(
                &session,
                &api,
                &Sorting::default(),
                failure.status(),
                Some(&failure.message()),
                &form,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venue(name: &str, online: bool, offline_secs: Option<i64>, dead: i64) -> VenueStatus {
        VenueStatus {
            site_id: Uuid::now_v7(),
            name: name.into(),
            online,
            offline_since: offline_secs
                .map(|s| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_000_000 - s)),
            last_push_at: None,
            last_pull_at: None,
            pull_lag: 0,
            dead_letters: dead,
            pending_ops: None,
            oldest_pending_age_seconds: None,
            edge_version: None,
        }
    }

    #[test]
    fn unhealthy_venues_come_first_longest_offline_first() {
        let mut sites = vec![
            venue("Alpha", true, None, 0),
            venue("Bravo", false, Some(10), 0),
            venue("Charlie", true, None, 2),
            venue("Delta", false, Some(600), 0),
            venue("Echo", false, None, 0),
        ];
        sort(&mut sites, SortKey::Health, Direction::Asc);
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Echo", "Delta", "Bravo", "Charlie", "Alpha"]);
        sort(&mut sites, SortKey::Name, Direction::Desc);
        assert_eq!(sites[0].name, "Echo");
    }

    #[test]
    fn an_online_venue_whose_writes_wait_for_minutes_counts_as_unhealthy() {
        let mut stuck = venue("Foxtrot", true, None, 0);
        stuck.pending_ops = Some(12);
        stuck.oldest_pending_age_seconds = Some(STUCK_PENDING_SECS);
        let mut busy = venue("Golf", true, None, 0);
        busy.pending_ops = Some(40);
        busy.oldest_pending_age_seconds = Some(2);
        let mut sites = vec![busy, venue("Alpha", true, None, 0), stuck];
        sort(&mut sites, SortKey::Health, Direction::Asc);
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Foxtrot", "Golf", "Alpha"]);
        assert!(
            pending_markup(&sites[0])
                .into_string()
                .contains("oldest 5 min")
        );
    }
}

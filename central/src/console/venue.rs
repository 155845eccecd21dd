//! A venue's page: its edge's health, devices and their keys, smart plugs, staff, the day's
//! report with sales by product (today in the venue's timezone, or `?date=`), and the
//! leaderboards of its games (today, this week or all time: `?board=`).

use super::api::{Api, ApiFailure};
use super::layout::{self, Section, money, when};
use super::leaderboards::Period;
use super::overview::ChainStatus;
use super::session::{CSRF_FIELD, Session};
use super::staff;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
struct Site {
    id: Uuid,
    name: String,
    timezone: String,
    #[serde(default)]
    allowed_networks: Vec<String>,
}

#[derive(Deserialize)]
struct DeviceList {
    devices: Vec<Device>,
}

#[derive(Deserialize)]
struct Device {
    id: Uuid,
    name: String,
    kind: String,
    #[serde(default)]
    allowed_networks: Vec<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct UserList {
    users: Vec<User>,
}

#[derive(Deserialize)]
struct User {
    id: Uuid,
    username: String,
    role: String,
    site_ids: Vec<Uuid>,
    disabled_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Daily {
    date: NaiveDate,
    orders: i64,
    gross_sales_cents: i64,
    refunds_cents: i64,
    revenue_cents: i64,
    checkins: i64,
    new_customers: i64,
}

#[derive(Deserialize)]
struct SalesByProduct {
    products: Vec<ProductSales>,
}

#[derive(Deserialize)]
struct ProductSales {
    sku: String,
    name: String,
    quantity: i64,
    sales_cents: i64,
}

#[derive(Deserialize)]
struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
}

#[derive(Deserialize)]
struct DeadLetter {
    seq: i64,
    op_id: Uuid,
    reason: String,
    rejected_at: DateTime<Utc>,
    request: Option<DeadLetterRequest>,
}

#[derive(Deserialize)]
struct DeadLetterRequest {
    action: String,
    requested_by: String,
    requested_at: DateTime<Utc>,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    date: Option<NaiveDate>,
    #[serde(default)]
    board: Period,
    done: Option<String>,
}

/// Which day's report and which period's leaderboards the page shows.
#[derive(Default)]
pub struct View {
    pub date: Option<NaiveDate>,
    pub board: Period,
}

/// A secret the API returned once (a device key, an enrollment token): shown on this one
/// answer with a copy button, never stored by the console.
pub struct Secret {
    pub label: &'static str,
    pub value: String,
    pub note: String,
}

/// What a form's answer adds to the page.
#[derive(Default)]
pub struct Extras {
    pub status: Option<StatusCode>,
    pub error: Option<String>,
    pub done: Option<String>,
    pub secret: Option<Secret>,
}

impl Extras {
    /// A form refused, by the API or by the console's own check of a field: `error` is shown
    /// and the page answers with `status`.
    pub fn refused(status: StatusCode, error: String) -> Self {
        Self {
            status: Some(status),
            error: Some(error),
            ..Self::default()
        }
    }

    /// A form the API refused.
    pub fn failed(failure: &ApiFailure) -> Self {
        Self::refused(failure.status(), failure.message())
    }
}

/// The venue's page answering a refused form.
pub async fn render_refusal(
    session: &Session,
    api: &Api,
    site_id: Uuid,
    status: StatusCode,
    error: String,
) -> Response {
    let extras = Extras::refused(status, error);
    render(session, api, site_id, &View::default(), extras).await
}

/// `GET /console/venues/{site_id}`.
pub async fn page(
    session: Session,
    api: Api,
    Path(site_id): Path<Uuid>,
    Query(query): Query<PageQuery>,
) -> Response {
    let done = match query.done.as_deref() {
        Some("revoked") => Some("The device's key was revoked.".to_string()),
        Some("retry-requested") => Some(
            "The venue was asked to retry it; its edge does so once it pulls the request."
                .to_string(),
        ),
        Some("discard-requested") => Some(
            "The venue was asked to discard it; its edge does so once it pulls the request."
                .to_string(),
        ),
        Some("staff-disabled") => Some(
            "The account was disabled: it can no longer sign in, and the tokens it holds are refused."
                .to_string(),
        ),
        Some("staff-enabled") => Some("The account was enabled again.".to_string()),
        Some("override") => Some(
            "The override was set; the venue's edge applies it once it pulls the change."
                .to_string(),
        ),
        _ => None,
    };
    render(
        &session,
        &api,
        site_id,
        &View {
            date: query.date,
            board: query.board,
        },
        Extras {
            done,
            ..Extras::default()
        },
    )
    .await
}

/// Renders the venue's page; an API failure for the venue itself becomes the answer.
pub async fn render(
    session: &Session,
    api: &Api,
    site_id: Uuid,
    view: &View,
    extras: Extras,
) -> Response {
    match content(session, api, site_id, view, extras).await {
        Ok((status, title, content)) => layout::respond(
            status,
            layout::page(&title, Section::Venue, Some(session), content),
        ),
        Err(failure) => failure.into_response(),
    }
}

async fn content(
    session: &Session,
    api: &Api,
    site_id: Uuid,
    view: &View,
    extras: Extras,
) -> Result<(StatusCode, String, Markup), ApiFailure> {
    let token = session.token.as_str();
    let site: Site = api.get(token, &format!("/v1/sites/{site_id}")).await?;
    let tz: chrono_tz::Tz = site.timezone.parse().unwrap_or(chrono_tz::UTC);
    let status: ChainStatus = api.get(token, "/v1/sites/status").await?;
    let now = status.at;
    let date = view
        .date
        .unwrap_or_else(|| now.with_timezone(&tz).date_naive());
    let health = status.sites.into_iter().find(|s| s.site_id == site_id);
    let devices: Result<DeviceList, _> = api
        .get(token, &format!("/v1/sites/{site_id}/devices"))
        .await;
    let users: Result<UserList, _> = api.get(token, "/v1/users").await;
    let daily: Result<Daily, _> = api
        .get(
            token,
            &format!("/v1/reports/daily?site_id={site_id}&date={date}"),
        )
        .await;
    let sales: Result<SalesByProduct, _> = api
        .get(
            token,
            &format!("/v1/reports/sales-by-product?site_id={site_id}&date={date}"),
        )
        .await;
    let plugs = super::plugs::section(session, api, site_id, now).await?;
    let leaderboards = super::leaderboards::section(token, api, site_id, view.board).await?;
    let dead_letters: Result<DeadLetterList, _> = api
        .get(
            token,
            &format!("/v1/sites/{site_id}/dead-letters?state=open"),
        )
        .await;
    for failure in [
        devices.as_ref().err(),
        dead_letters.as_ref().err(),
        users.as_ref().err(),
        daily.as_ref().err(),
        sales.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        if matches!(failure, ApiFailure::SignedOut) {
            return Err(ApiFailure::SignedOut);
        }
    }
    let status = extras.status.unwrap_or(StatusCode::OK);
    let markup = html! {
        p { a href="/console" { "← Chain overview" } }
        h1 { (site.name) }
        p.hint { "Timezone " (site.timezone) "." @if !site.allowed_networks.is_empty() { " Allowed networks: " (site.allowed_networks.join(", ")) "." } }
        (layout::notice(extras.error.as_deref(), extras.done.as_deref()))
        @if let Some(secret) = &extras.secret {
            section.notice.done aria-labelledby="secret-heading" {
                h2 id="secret-heading" { (secret.label) }
                p { (secret.note) }
                div.secret {
                    label.sr-only for="secret-value" { (secret.label) }
                    input id="secret-value" type="text" readonly value=(secret.value);
                    button type="button" data-copy="secret-value" { "Copy" }
                }
                p id="secret-value-status" role="status" {}
            }
        }
        section aria-labelledby="edge-heading" {
            h2 id="edge-heading" { "Edge" }
            @match &health {
                Some(h) => {
                    dl.grid {
                        div.figure { dt { "Status" } dd id="edge-status" {
                            @if h.online { span aria-hidden="true" { "● " } "Online" } @else { span aria-hidden="true" { "✕ " } "Offline" }
                        } }
                        div.figure { dt { "Last push" } dd { (when(h.last_push_at, now)) } }
                        div.figure { dt { "Last pull" } dd { (when(h.last_pull_at, now)) } }
                        div.figure { dt { "Pending ops" } dd id="edge-pending" { (super::overview::pending_markup(h)) } }
                        div.figure { dt { "Dead letters" } dd { (h.dead_letters) } }
                        div.figure { dt { "Version" } dd { (h.edge_version.as_deref().unwrap_or("unknown")) } }
                    }
                }
                None => { p { "Sync health is not available to you." } }
            }
            form.inline method="post" action=(format!("/console/venues/{}/enrollment-tokens", site.id)) {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                button type="submit" { "Issue an edge enrollment token" }
            }
        }
        section aria-labelledby="dead-letters-heading" {
            h2 id="dead-letters-heading" { "Dead letters" }
            p.hint { "Writes of this venue that central refused for good. Retry one once its cause is fixed, or discard it: the venue acts when it next pulls (staff there can decide too), and the dead letter then leaves this list." }
            @match &dead_letters {
                Ok(list) if list.dead_letters.is_empty() => { p { "None open." } }
                Ok(list) => {
                    div.scroll { table {
                        thead { tr { th scope="col" { "Outbox seq" } th scope="col" { "Refused" } th scope="col" { "Reason" } th scope="col" { "Requested" } th scope="col" { "Action" } } }
                        tbody {
                            @for d in &list.dead_letters {
                                tr {
                                    th scope="row" { (d.seq) }
                                    td { (when(Some(d.rejected_at), now)) }
                                    td { (d.reason) }
                                    td {
                                        @match &d.request {
                                            Some(r) => { (r.action) " by " (r.requested_by) ", " (when(Some(r.requested_at), now)) }
                                            None => { "Nothing yet" }
                                        }
                                    }
                                    td {
                                        form.inline method="post" action=(format!("/console/venues/{}/dead-letters/{}", site.id, d.op_id)) {
                                            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                            button type="submit" name="action" value="retry" aria-label=(format!("Retry dead letter {}", d.seq)) { "Retry" }
                                            " "
                                            button type="submit" name="action" value="discard" aria-label=(format!("Discard dead letter {}", d.seq)) { "Discard" }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
        }
        section aria-labelledby="devices-heading" {
            h2 id="devices-heading" { "Devices and keys" }
            @match &devices {
                Ok(list) => { (device_table(session, site.id, &list.devices)) }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
            h3 { "Register a device" }
            form.stack method="post" action=(format!("/console/venues/{}/devices", site.id)) {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="device-name" { "Name" }
                input id="device-name" name="name" type="text" required maxlength="100";
                label for="device-kind" { "Kind" }
                select id="device-kind" name="kind" {
                    @for kind in ["kiosk", "pos", "tablet", "game", "scoreboard"] {
                        option value=(kind) { (kind) }
                    }
                }
                label for="device-networks" { "Allowed networks (CIDR, comma separated; optional)" }
                input id="device-networks" name="allowed_networks" type="text";
                button type="submit" { "Register and issue a key" }
            }
        }
        section aria-labelledby="plugs-heading" {
            h2 id="plugs-heading" { "Smart plugs" }
            (plugs)
        }
        section aria-labelledby="staff-heading" {
            h2 id="staff-heading" { "Staff" }
            @match &users {
                Ok(list) => { (staff_table(session, site.id, &list.users)) }
                Err(failure) => { p { (failure.message()) } }
            }
            h3 { "Add a staff member" }
            form.stack method="post" action=(format!("/console/venues/{}/staff", site.id)) {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="staff-username" { "Username" }
                input id="staff-username" name="username" type="text" required autocomplete="off";
                label for="staff-role" { "Role" }
                select id="staff-role" name="role" {
                    @for role in staff::VENUE_ROLES {
                        option value=(role) { (role) }
                    }
                }
                label for="staff-password" { "Password (12 to 128 characters; give it to them in person)" }
                input id="staff-password" name="password" type="password" required minlength="12" maxlength="128" autocomplete="new-password";
                button type="submit" { "Add to this venue" }
            }
        }
        section aria-labelledby="report-heading" {
            h2 id="report-heading" { "Report for " (date.format("%A %-d %B %Y")) }
            form method="get" action=(format!("/console/venues/{}", site.id)) {
                label for="report-date" { "Day " }
                input id="report-date" name="date" type="date" value=(date.to_string());
                " "
                button type="submit" { "Show" }
            }
            @match &daily {
                Ok(d) => {
                    dl.grid aria-label=(format!("Figures for {}", d.date)) {
                        div.figure { dt { "Orders" } dd { (d.orders) } }
                        div.figure { dt { "Revenue" } dd { (money(d.revenue_cents)) } }
                        div.figure { dt { "Gross sales" } dd { (money(d.gross_sales_cents)) } }
                        div.figure { dt { "Refunds" } dd { (money(d.refunds_cents)) } }
                        div.figure { dt { "Check-ins" } dd { (d.checkins) } }
                        div.figure { dt { "New customers" } dd { (d.new_customers) } }
                    }
                }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
            h3 { "Sales by product" }
            @match &sales {
                Ok(s) if s.products.is_empty() => { p { "No sales on this day." } }
                Ok(s) => {
                    div.scroll { table {
                        thead { tr { th scope="col" { "SKU" } th scope="col" { "Product" } th scope="col" { "Quantity" } th scope="col" { "Sales" } } }
                        tbody {
                            @for p in &s.products {
                                tr { td { (p.sku) } th scope="row" { (p.name) } td { (p.quantity) } td { (money(p.sales_cents)) } }
                            }
                        }
                    } }
                }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
        }
        section aria-labelledby="leaderboards-heading" {
            h2 id="leaderboards-heading" { "Leaderboards" }
            p.hint { "Each player's best score at this venue, in the venue's timezone." }
            (leaderboards)
        }
    };
    Ok((status, site.name.clone(), markup))
}

fn device_table(session: &Session, site_id: Uuid, devices: &[Device]) -> Markup {
    html! {
        @if devices.is_empty() {
            p { "No devices yet." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Allowed networks" }
                    th scope="col" { "Registered" } th scope="col" { "Key" }
                } }
                tbody {
                    @for d in devices {
                        tr {
                            th scope="row" { (d.name) }
                            td { (d.kind) }
                            td { @if d.allowed_networks.is_empty() { "the venue's" } @else { (d.allowed_networks.join(", ")) } }
                            td { (d.created_at.format("%Y-%m-%d %H:%M UTC")) }
                            td {
                                @if let Some(revoked) = d.revoked_at {
                                    "Revoked " (revoked.format("%Y-%m-%d %H:%M UTC"))
                                } @else {
                                    form.inline method="post" action=(format!("/console/devices/{}/revoke", d.id)) data-confirm=(format!("Revoke the key of {}? The device stops working.", d.name)) {
                                        input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                        input type="hidden" name="site_id" value=(site_id);
                                        button.danger type="submit" aria-label=(format!("Revoke the key of {}", d.name)) { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn staff_table(session: &Session, site_id: Uuid, users: &[User]) -> Markup {
    let staff: Vec<&User> = users
        .iter()
        .filter(|u| u.site_ids.contains(&site_id) || matches!(u.role.as_str(), "owner" | "admin"))
        .collect();
    html! {
        @if staff.is_empty() {
            p { "No staff." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Role" } th scope="col" { "Scope" }
                    th scope="col" { "Account" } th scope="col" { "Access" }
                } }
                tbody {
                    @for u in staff {
                        tr {
                            th scope="row" { (u.username) }
                            td { (u.role) }
                            td { @if u.site_ids.contains(&site_id) { "this venue" } @else { "chain-wide" } }
                            td { @if let Some(at) = u.disabled_at { "disabled " (at.format("%Y-%m-%d %H:%M UTC")) } @else { "active" } }
                            td {
                                @if u.site_ids.contains(&site_id) {
                                    @let (action, label) = if u.disabled_at.is_some() { ("enable", "Enable") } else { ("disable", "Disable") };
                                    form.inline method="post" action=(format!("/console/users/{}/access", u.id)) data-confirm=[(u.disabled_at.is_none()).then(|| format!("Disable {}? They can no longer sign in.", u.username))] {
                                        input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                        input type="hidden" name="site_id" value=(site_id);
                                        input type="hidden" name="action" value=(action);
                                        button.danger[u.disabled_at.is_none()] type="submit" aria-label=(format!("{label} {}", u.username)) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

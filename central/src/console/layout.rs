//! The frame every console page shares: document head, skip link, navigation, sign-out form,
//! and the headers an HTML page is served with.

use super::session::{CSRF_FIELD, Session};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

/// Pages load scripts, styles and images from central only, run no inline script, submit
/// forms only to central, and may not be framed.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// htmx settings: no inline indicator styles (the CSP forbids them), no `eval`, requests only
/// to central.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"historyCacheSize":0}"#;

/// Where a page sits in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Venue,
    Catalogue,
    Audit,
    SignIn,
    Error,
}

/// A whole page.
pub fn page(title: &str, section: Section, session: Option<&Session>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · AeroSports HQ" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/htmx.min.js" defer {}
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "AeroSports HQ" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/console" aria-current=[(section == Section::Overview).then_some("page")] { "Chain overview" } }
                                li { a href="/console/catalogue" aria-current=[(section == Section::Catalogue).then_some("page")] { "Catalogue" } }
                                li { a href="/console/audit" aria-current=[(section == Section::Audit).then_some("page")] { "Audit log" } }
                            }
                        }
                        form.signout method="post" action="/console/logout" {
                            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    (content)
                }
            }
        }
    }
}

/// An HTML answer with the console's page headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    response
}

/// A page saying why the request could not be served.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let heading = match status {
        StatusCode::FORBIDDEN => "Not permitted",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_server_error() => "Something went wrong",
        _ => "The request was refused",
    };
    respond(
        status,
        page(
            heading,
            Section::Error,
            None,
            html! {
                h1 { (heading) }
                p role="alert" { (message) }
                p { a href="/console" { "Back to the chain overview" } }
            },
        ),
    )
}

/// A message the user must notice (an error) or a confirmation.
pub fn notice(error: Option<&str>, done: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            div.notice.error role="alert" { strong { "Error: " } (error) }
        }
        @if let Some(done) = done {
            div.notice.done role="status" { strong { "Done: " } (done) }
        }
    }
}

/// A point in time as text with its machine-readable form.
pub fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) {
                (ago(now - at)) " ago"
            }
        },
        None => html! { "never" },
    }
}

/// A duration the way people say it: `42 s`, `5 min`, `3 h 20 min`, `2 d 4 h`.
pub fn ago(elapsed: chrono::Duration) -> String {
    let secs = elapsed.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Cents as money, e.g. `1234` as `12.34`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_money_read_naturally() {
        assert_eq!(ago(chrono::Duration::seconds(42)), "42 s");
        assert_eq!(ago(chrono::Duration::seconds(300)), "5 min");
        assert_eq!(ago(chrono::Duration::seconds(12_000)), "3 h 20 min");
        assert_eq!(ago(chrono::Duration::seconds(187_200)), "2 d 4 h");
        assert_eq!(money(1234), "12.34");
        assert_eq!(money(-5), "-0.05");
    }

    #[test]
    fn text_is_escaped() {
        let markup = notice(Some("<script>alert(1)</script>"), None).into_string();
        assert!(markup.contains("&lt;script&gt;"));
        assert!(!markup.contains("<script>"));
    }
}

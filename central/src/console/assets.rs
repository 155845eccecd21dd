//! The console's static files, built into the binary: no CDN, no separate server, no Node step
//! at run time. htmx is vendored (`central/console-assets/htmx.min.js`, version and licence
//! beside it).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// htmx 2.0.11 from npm (`htmx.org`), BSD Zero-Clause licence (`htmx.LICENSE`).
const HTMX: &[u8] = include_bytes!("../../console-assets/htmx.min.js");
const CSS: &[u8] = include_bytes!("../../console-assets/console.css");
const JS: &[u8] = include_bytes!("../../console-assets/console.js");
const ICON: &[u8] = include_bytes!("../../console-assets/favicon.svg");

/// Assets change only with a new binary; an hour keeps pages fast without pinning an old
/// script for long after an upgrade.
const CACHE: &str = "public, max-age=3600";

/// `GET /console/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return super::layout::error_page(StatusCode::NOT_FOUND, "No such file."),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    response
}

//! The outer request pipeline both services share: request id + tracing span, body limit,
//! timeout, CORS, HTTP metrics, the client address behind trusted proxies, and problem+json for
//! every error the framework produces itself.

use crate::client_ip::{TrustedProxies, resolve_client};
use crate::metrics::HttpMetrics;
use crate::problem::{PROBLEM_JSON, Problem, problem_response, problem_type};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use ipnet::IpNet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::util::MapRequestLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest incoming request id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Operator-tunable limits, the `[limits]` table of both services' configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    pub body_bytes: usize,
    pub request_timeout_secs: u64,
    /// Sustained requests per second allowed to one API key or user.
    pub requests_per_second: u32,
    /// Short bursts above the sustained rate.
    pub burst: u32,
    /// Login attempts per minute from one client address.
    pub login_per_minute: u32,
    /// Sync requests per second allowed to one edge node (central only).
    pub sync_requests_per_second: u32,
    /// Failed authentications per minute from one client address, sustained; past the burst
    /// the address gets 429 before its credentials are looked up.
    pub failed_auth_per_minute: u32,
    /// Failed authentications one client address may make at once.
    pub failed_auth_burst: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            request_timeout_secs: 15,
            requests_per_second: 50,
            burst: 100,
            login_per_minute: 10,
            sync_requests_per_second: 500,
            failed_auth_per_minute: 20,
            failed_auth_burst: 20,
        }
    }
}

impl LimitSettings {
    /// Values the limiter or the body limit cannot work with, as `(key, problem)` under the
    /// `[limits]` table.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.body_bytes < 1024 {
            problems.push(("limits.body_bytes", "must be at least 1024".into()));
        }
        let at_least_one = [
            (
                "limits.request_timeout_secs",
                self.request_timeout_secs == 0,
            ),
            ("limits.requests_per_second", self.requests_per_second == 0),
            ("limits.burst", self.burst == 0),
            ("limits.login_per_minute", self.login_per_minute == 0),
            (
                "limits.sync_requests_per_second",
                self.sync_requests_per_second == 0,
            ),
            (
                "limits.failed_auth_per_minute",
                self.failed_auth_per_minute == 0,
            ),
            ("limits.failed_auth_burst", self.failed_auth_burst == 0),
        ];
        for (key, zero) in at_least_one {
            if zero {
                problems.push((key, "must be at least 1".into()));
            }
        }
        problems
    }
}

#[derive(Clone, Copy, Default)]
struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Wraps a service's routes in the shared pipeline, outermost layer first.
pub fn apply(
    router: Router,
    settings: &LimitSettings,
    cors_origins: &[String],
    trusted_proxies: &[IpNet],
    metrics: Arc<HttpMetrics>,
) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    // Router::layer wraps outward: the last layer added here is the first to see a request.
    router
        .layer(MapRequestLayer::new({
            let trusted = TrustedProxies::new(trusted_proxies);
            move |request| resolve_client(&trusted, request)
        }))
        .layer(DefaultBodyLimit::disable())
        .layer(cors(cors_origins))
        .layer(RequestBodyLimitLayer::new(settings.body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(settings.request_timeout_secs.max(1)),
        ))
        .layer(middleware::from_fn(problem_for_framework_errors))
        .layer(middleware::from_fn_with_state(metrics, record_metrics))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<Body>| {
                // The path only: query strings can carry phone numbers and emails.
                let id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeUuidV7))
        .layer(MapRequestLayer::new(drop_unusable_request_id))
}

/// A caller's request id (an edge's sync request carries its own) is kept so both sides log
/// the same id, when it is one short run of visible ASCII; anything else (empty, too long, with
/// spaces or control characters, sent twice) is dropped, and [`SetRequestIdLayer`] then makes a
/// fresh UUIDv7, so a client cannot forge log lines or flood them.
fn drop_unusable_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    let usable = matches!((ids.next(), ids.next()), (Some(id), None) if is_usable_request_id(id));
    if !usable {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

fn is_usable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(crate::auth::extract::API_KEY_HEADER),
            HeaderName::from_static(crate::idempotency::IDEMPOTENCY_KEY_HEADER),
        ])
        .max_age(Duration::from_secs(600))
}

async fn record_metrics(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    metrics.observe(&method, &route, response.status(), started.elapsed());
    response
}

/// Errors produced by the framework or tower layers (404, 405, 408, 413, path rejections)
/// arrive as plain text; clients get the same problem+json shape as from handlers.
async fn problem_for_framework_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with(PROBLEM_JSON) {
        return response;
    }
    let plain = content_type.is_empty() || content_type.starts_with("text/plain");
    let (parts, body) = response.into_parts();
    let text = if plain {
        to_bytes(body, 2048)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let detail = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let mut problem_resp = problem_response(&Problem {
        kind: problem_type(status),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
    });
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem_resp
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    problem_resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_short_run_of_visible_ascii_is_a_usable_request_id() {
        let usable =
            |text: &[u8]| is_usable_request_id(&HeaderValue::from_bytes(text).expect("header"));
        assert!(usable(b"0190b7c2-3f1e-7c3a-9d2e-5b8f0a1c2d3e"));
        assert!(usable(b"edge-42"));
        assert!(!usable(b""));
        assert!(!usable(b"two words"));
        assert!(!usable(b"tab\there"));
        assert!(!usable("caf\u{e9}".as_bytes()));
        assert!(usable(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!usable(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
    }
}

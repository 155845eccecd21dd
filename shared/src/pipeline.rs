//! The outer request pipeline both services share: request id + tracing span, body limit,
//! timeout, CORS, HTTP metrics, the client address behind trusted proxies, security headers on
//! every response, problem+json for every error the framework produces itself, and a 500
//! problem for a handler that panics.

mod framework_problems;
mod record_metrics;

use crate::client_ip::{TrustedProxies, resolve_client};
use crate::metrics::HttpMetrics;
use crate::problem::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use framework_problems::FrameworkProblemsLayer;
use ipnet::IpNet;
use record_metrics::RecordMetricsLayer;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

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
        // Written into a buffer on the stack, not through `fmt` into a `String`.
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// Wraps a service's routes in the shared pipeline, outermost layer first.
///
/// The layers form one stack handed to `Router::layer` once. `Router::layer` boxes what it is
/// given around every route, and a boxed route is cloned for each request it serves: layered one
/// by one, every layer would be its own box, and each request would clone the whole tower of
/// them at every level. Inside the router, the metrics still see the matched route template.
pub fn apply(
    router: Router,
    settings: &LimitSettings,
    cors_origins: &[String],
    trusted_proxies: &[IpNet],
    metrics: Arc<HttpMetrics>,
) -> Router {
    let trusted = TrustedProxies::new(trusted_proxies);
    let stack = ServiceBuilder::new()
        .map_response(add_security_headers)
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeUuidV7))
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
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(RecordMetricsLayer(metrics))
        .layer(FrameworkProblemsLayer)
        .layer(CatchPanicLayer::custom(panic_as_problem))
        .map_request(move |request| resolve_client(&trusted, request))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.body_bytes))
        .layer(cors(cors_origins))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(settings.request_timeout_secs.max(1)),
        ));
    router.layer(stack)
}

/// A handler that panics answers 500 problem+json, logged with the panic's message, instead of
/// the connection closing without an answer; the service and other requests carry on.
fn panic_as_problem(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    axum::response::IntoResponse::into_response(ApiError::internal(anyhow::anyhow!(
        "the handler panicked: {message}"
    )))
}

/// Headers every answer carries, errors and framework rejections included (this is the outermost
/// layer). The API answers JSON that holds tokens, keys and customer data: nothing may cache it
/// or sniff it into something a browser runs, and no page may frame it. A route that knows better
/// (a cacheable page with its own policy) sets its own `Cache-Control` or
/// `Content-Security-Policy`, which are then left alone.
fn add_security_headers<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    // What CORS answers depend on (see `cors`), on every answer: one with no `Origin` may be
    // cached and then offered to a page that sent one.
    headers.append(header::VARY, HeaderValue::from_static(CORS_VARY));
    response
}

/// The request headers a CORS answer depends on, as tower-http's CORS layer lists them (a test
/// holds the two together).
const CORS_VARY: &str = "origin, access-control-request-method, access-control-request-headers";

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
            crate::auth::extract::API_KEY_HEADER,
            HeaderName::from_static(crate::idempotency::IDEMPOTENCY_KEY_HEADER),
            header::IF_MATCH,
        ])
        // A browser client reads the tag of what it loaded to send it back as If-Match.
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(600))
        // `add_security_headers` sends the same `Vary` as one constant, where the layer would
        // join the names into a new header value for every request.
        .vary([] as [HeaderName; 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vary_sent_is_the_one_tower_https_cors_layer_would_send() {
        let names: Vec<String> = tower_http::cors::preflight_request_headers()
            .map(|name| name.as_str().to_owned())
            .collect();
        assert_eq!(CORS_VARY, names.join(", "));
    }

    #[test]
    fn security_headers_are_added_and_a_routes_own_cache_policy_is_kept() {
        let plain = add_security_headers(axum::http::Response::new(()));
        assert_eq!(plain.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(plain.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(plain.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(plain.headers()[header::VARY], CORS_VARY);
        assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            plain.headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'none'"
        );
        let mut page = axum::http::Response::new(());
        page.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        let page = add_security_headers(page);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "max-age=300");
        assert_eq!(
            page.headers().get_all(header::CACHE_CONTROL).iter().count(),
            1
        );
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_problem_json_and_the_service_carries_on() {
        use tower::ServiceExt;
        async fn panicking_handler() -> &'static str {
            panic!("a bug in a handler")
        }
        let router = Router::new()
            .route("/panics", axum::routing::get(panicking_handler))
            .route("/works", axum::routing::get(|| async { "fine" }));
        let app = apply(
            router,
            &LimitSettings::default(),
            &[],
            &[],
            Arc::new(HttpMetrics::register(
                &mut prometheus_client::registry::Registry::default(),
            )),
        );
        let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
        let panicked = app.clone().oneshot(get("/panics")).await.expect("answer");
        assert_eq!(
            panicked.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            panicked.headers()[header::CONTENT_TYPE],
            crate::problem::PROBLEM_JSON
        );
        assert_eq!(
            panicked.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = axum::body::to_bytes(panicked.into_body(), 4096)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem json");
        assert_eq!(problem["status"], 500);
        assert!(
            !problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("a bug in a handler"),
            "the panic message is logged, not shown: {problem}"
        );
        let after = app.oneshot(get("/works")).await.expect("answer");
        assert_eq!(after.status(), axum::http::StatusCode::OK);
    }

    #[tokio::test]
    async fn a_request_counts_in_flight_until_it_is_answered_or_abandoned() {
        use std::future::Future;
        use tower::ServiceExt;
        let release = Arc::new(tokio::sync::Notify::new());
        let waiting = Arc::clone(&release);
        let router = Router::new().route(
            "/waits",
            axum::routing::get(move || {
                let waiting = Arc::clone(&waiting);
                async move {
                    waiting.notified().await;
                    "done"
                }
            }),
        );
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(HttpMetrics::register(&mut registry));
        let app = apply(router, &LimitSettings::default(), &[], &[], metrics);
        let in_flight = || {
            crate::metrics::render(&registry)
                .lines()
                .find_map(|line| line.strip_prefix("http_requests_in_flight "))
                .map(str::to_owned)
        };
        let get = || Request::get("/waits").body(Body::empty()).expect("request");
        let poll_once = |call: &mut std::pin::Pin<Box<dyn Future<Output = _> + Send>>| {
            let waker = std::task::Waker::noop();
            call.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
        };
        assert_eq!(in_flight().as_deref(), Some("0"));

        let mut answered: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(app.clone().oneshot(get()));
        let mut abandoned: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(app.oneshot(get()));
        assert!(poll_once(&mut answered).is_pending());
        assert!(poll_once(&mut abandoned).is_pending());
        assert_eq!(in_flight().as_deref(), Some("2"));

        drop(abandoned);
        assert_eq!(in_flight().as_deref(), Some("1"));
        release.notify_waiters();
        let response: axum::response::Response = answered.await.expect("answer");
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        assert_eq!(in_flight().as_deref(), Some("0"));
    }

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

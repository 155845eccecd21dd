//! What ops watch: every metric family on both services' `/metrics`, and one request id tying
//! an edge's sync request to central's handling of it.

use aero_tests::{TestCentral, TestEdge, wait_until};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const REQUEST_ID: &str = "x-request-id";

/// The metric families a Prometheus text exposition declares (`# TYPE name kind`).
fn families(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_families(text: &str, names: &[&str]) {
    let found = families(text);
    let missing: Vec<_> = names.iter().filter(|n| !found.contains(**n)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
}

/// The value of the first sample named exactly `name` (labels included in `name` if any).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn both_services_export_traffic_sync_lag_dead_letter_and_build_families() {
    let central = TestCentral::start().await;
    let token = central.owner_token().await;
    let site = central.create_site(&token, "Metrics Park").await;
    let enrollment = central.enrollment_token(&token, site).await;
    let edge = TestEdge::start(&central, &enrollment).await;
    wait_until("the edge's first pull", Duration::from_secs(20), || async {
        sample(
            &edge.metrics().await,
            "aero_edge_last_pull_timestamp_seconds",
        )
        .is_some_and(|t| t > 0.0)
    })
    .await;

    let version = env!("CARGO_PKG_VERSION");
    let text = edge.metrics().await;
    assert_families(
        &text,
        &[
            "aero_edge_http_requests",
            "aero_edge_http_request_duration_seconds",
            "aero_edge_http_requests_in_flight",
            "aero_edge_outbox_pending_ops",
            "aero_edge_outbox_oldest_pending_age_seconds",
            "aero_edge_dead_letters",
            "aero_edge_replica_lag_seconds",
            "aero_edge_replica_lag_changes",
            "aero_edge_central_head",
            "aero_edge_build_info",
        ],
    );
    assert_eq!(
        sample(
            &text,
            &format!("aero_edge_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "aero_edge_replica_lag_changes"), Some(0.0));
    assert!(
        sample(&text, "aero_edge_central_head").is_some_and(|h| h > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "aero_edge_replica_lag_seconds").is_some_and(|s| s < 60.0),
        "{text}"
    );

    let text = central
        .client
        .get(central.url("/metrics"))
        .send()
        .await
        .expect("scrape central")
        .text()
        .await
        .expect("metrics text");
    assert_families(
        &text,
        &[
            "aero_central_http_requests",
            "aero_central_http_request_duration_seconds",
            "aero_central_http_requests_in_flight",
            "aero_central_sync_pushed_ops",
            "aero_central_sync_rejected_ops",
            "aero_central_sync_change_head",
            "aero_central_sites",
            "aero_central_edge_stale_sites",
            "aero_central_edge_max_pull_age_seconds",
            "aero_central_edge_max_push_age_seconds",
            "aero_central_edge_max_pull_lag_changes",
            "aero_central_build_info",
        ],
    );
    assert_eq!(
        sample(
            &text,
            &format!("aero_central_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "aero_central_sites"), Some(1.0));
    // The one edge pulled moments ago and is caught up.
    assert_eq!(sample(&text, "aero_central_edge_stale_sites"), Some(0.0));
    assert_eq!(
        sample(&text, "aero_central_edge_max_pull_lag_changes"),
        Some(0.0)
    );
}

/// One request as the stand-in saw it: the path, the id the edge sent, the id central answered.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

#[derive(Clone)]
struct Forward {
    upstream: String,
    client: reqwest::Client,
    seen: Seen,
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Passes each request on to central and records both ids. The change-hint websocket is
/// refused (the edge then pulls on its timer), as a plain HTTP relay cannot carry it.
async fn forward(State(to): State<Forward>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if path == "/v1/sync/notify" {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::empty())
            .expect("response");
    }
    let body = to_bytes(body, usize::MAX).await.expect("request body");
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    for hop in ["host", "connection", "content-length", "transfer-encoding"] {
        headers.remove(hop);
    }
    let answer = to
        .client
        .request(parts.method, format!("{}{path}{query}", to.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("central answers");
    to.seen.lock().expect("seen").push((
        path,
        request_id(&parts.headers),
        request_id(answer.headers()),
    ));
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.expect("central's body");
    response.body(Body::from(bytes)).expect("response")
}

#[tokio::test]
async fn central_handles_an_edge_sync_request_under_the_edge_own_request_id() {
    let central = TestCentral::start().await;
    let token = central.owner_token().await;
    let site = central.create_site(&token, "Traced Park").await;
    let enrollment = central.enrollment_token(&token, site).await;

    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let relay = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().fallback(forward).with_state(Forward {
        upstream: central.url(""),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        seen: Arc::clone(&seen),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let _edge = TestEdge::start_with(&relay, &enrollment, |_| {}).await;
    let pulls = || {
        seen.lock()
            .expect("seen")
            .iter()
            .filter(|(path, _, _)| path == "/v1/sync/pull")
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_until("the edge's first pull", Duration::from_secs(20), || {
        let found = !pulls().is_empty();
        async move { found }
    })
    .await;
    for (_, sent, answered) in pulls() {
        let sent = sent.expect("the edge sends a request id");
        let id = Uuid::parse_str(&sent).expect("a UUID");
        assert_eq!(id.get_version_num(), 7, "{sent}");
        assert_eq!(answered.as_deref(), Some(sent.as_str()), "central kept it");
    }
}

#[tokio::test]
async fn central_replaces_a_request_id_it_cannot_use() {
    let central = TestCentral::start().await;
    let answered = |id: String| {
        let request = central
            .client
            .get(central.url("/healthz"))
            .header(REQUEST_ID, id);
        async move {
            let response = request.send().await.expect("healthz");
            assert_eq!(response.status(), 200);
            request_id(response.headers()).expect("an id is always answered")
        }
    };
    assert_eq!(answered("edge-42".into()).await, "edge-42");
    for unusable in ["two words".to_string(), "x".repeat(129)] {
        let id = answered(unusable.clone()).await;
        assert_ne!(id, unusable);
        let id = Uuid::parse_str(&id).expect("a fresh UUID");
        assert_eq!(id.get_version_num(), 7);
    }
}

/// A central process writing its log to a file; killed on drop.
struct CentralProcess(std::process::Child);

impl Drop for CentralProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl CentralProcess {
    /// Starts `aero-central serve` with `env`, its stderr (the log) going to `log`, and returns
    /// once `/healthz` answers (the first probe carries the request id `trace-me-42`).
    async fn start(dir: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        // A child process needs the port number up front: take a free one from the kernel.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let central = CentralProcess(
            std::process::Command::new(aero_tests::process::central_binary())
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["serve", "--listen", &addr.to_string()])
                .env_remove("NO_COLOR")
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log).expect("log file"))
                .spawn()
                .expect("spawn aero-central serve"),
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("http://{addr}/healthz");
        wait_until("central to answer", Duration::from_secs(20), || {
            let request = client.get(&url).header(REQUEST_ID, "trace-me-42").send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        central
    }
}

#[tokio::test]
async fn human_logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("central.log");
    let _central = CentralProcess::start(dir.path(), &log, &[("RUST_LOG", "info")]).await;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("central's start-up lines", Duration::from_secs(10), || {
        let logged = text().contains(" INFO ");
        async move { logged }
    })
    .await;
    let text = text();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
}

#[tokio::test]
async fn json_logs_carry_a_request_id_in_the_request_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("central.log");
    let _central = CentralProcess::start(
        dir.path(),
        &log,
        &[
            ("AERO_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,tower_http=debug"),
        ],
    )
    .await;
    let request_lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["span"]["request_id"] == "trace-me-42")
            .collect()
    };
    wait_until(
        "a log line in the request's span",
        Duration::from_secs(10),
        || {
            let found = !request_lines().is_empty();
            async move { found }
        },
    )
    .await;
    let line = &request_lines()[0];
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["path"], "/healthz", "{line}");
    assert!(line["fields"]["message"].is_string(), "{line}");
    for field in ["timestamp", "level", "target"] {
        assert!(line[field].is_string(), "no {field} in {line}");
    }
}

//! OWASP API8:2023 (security misconfiguration): both services allow cross-origin calls only
//! from configured origins, send security headers on every answer (errors included), and never
//! show internals in an error: no SQL, no table names, no file paths, no panics or backtraces,
//! even when the database underneath is broken.

use aero_tests::venue::Venue;
use aero_tests::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use std::time::Duration;

const PORTAL: &str = "https://portal.aerosports.example";
const EVIL: &str = "https://evil.example";

/// Preflights `path` from `origin` and sends a real GET from it; returns the
/// `Access-Control-Allow-Origin` each answer carried.
async fn cors_answers(
    client: &reqwest::Client,
    url: &str,
    origin: &str,
) -> (Option<String>, Option<String>) {
    let preflight = client
        .request(Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-api-key",
        )
        .send()
        .await
        .expect("preflight");
    let get = client
        .get(url)
        .header("origin", origin)
        .send()
        .await
        .expect("get");
    let allow = |r: &Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    (allow(&preflight), allow(&get))
}

#[tokio::test]
async fn cross_origin_calls_are_allowed_only_from_configured_origins() {
    let central = TestCentral::start_with(|s| s.cors_origins = vec![PORTAL.into()]).await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start_with(&central.url(""), &token, |s| {
        s.cors_origins = vec![PORTAL.into()];
    })
    .await;
    // And an edge left at the default: no origin is allowed at all.
    let token = central.enrollment_token(&owner, site).await;
    let closed = TestEdge::start_with(&central.url(""), &token, |_| {}).await;

    for (service, client, url) in [
        ("central", &central.client, central.url("/v1/sites")),
        ("edge", &edge.client, edge.url("/v1/customers")),
    ] {
        let (preflight, get) = cors_answers(client, &url, PORTAL).await;
        assert_eq!(preflight.as_deref(), Some(PORTAL), "{service} preflight");
        assert_eq!(get.as_deref(), Some(PORTAL), "{service} GET");
        let (preflight, get) = cors_answers(client, &url, EVIL).await;
        assert_eq!(preflight, None, "{service} preflight from another origin");
        assert_eq!(get, None, "{service} GET from another origin");
        let (preflight, get) = cors_answers(client, &url, "null").await;
        assert_eq!((preflight, get), (None, None), "{service}: origin null");
    }
    let (preflight, get) = cors_answers(&closed.client, &closed.url("/v1/customers"), PORTAL).await;
    assert_eq!(
        (preflight, get),
        (None, None),
        "default edge allows no origin"
    );
}

fn assert_security_headers(response: &Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_string())
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert!(
        header("content-security-policy").contains("frame-ancestors 'none'"),
        "{what}"
    );
}

#[tokio::test]
async fn every_answer_carries_security_headers_errors_included() {
    let venue = Venue::open().await;
    let central = &venue.central;
    let owner = central.owner_token().await;
    let requests = [
        (
            "central login",
            central.request(Method::POST, "/v1/auth/login").json(
                &serde_json::json!({ "username": "owner", "password": aero_tests::OWNER_PASSWORD }),
            ),
        ),
        (
            "central read",
            central
                .request(Method::GET, "/v1/sites")
                .bearer_auth(&owner),
        ),
        ("central 401", central.request(Method::GET, "/v1/sites")),
        ("central 404", central.request(Method::GET, "/nowhere")),
        ("central healthz", central.request(Method::GET, "/healthz")),
        (
            "central 413",
            central
                .request(Method::POST, "/v1/sites")
                .bearer_auth(&owner)
                .body(vec![b' '; 2 * 1024 * 1024]),
        ),
        (
            "edge read",
            venue.edge.request(Method::GET, "/v1/products", &venue.pos),
        ),
        (
            "edge 403",
            venue.edge.request(Method::GET, "/v1/plugs", &venue.kiosk),
        ),
        (
            "edge 422",
            venue
                .edge
                .request(Method::POST, "/v1/customers", &venue.tablet)
                .json(&serde_json::json!({})),
        ),
        (
            "edge 405",
            venue
                .edge
                .request(Method::DELETE, "/v1/products", &venue.pos),
        ),
        (
            "edge metrics",
            venue.edge.client.get(venue.edge.url("/metrics")),
        ),
    ];
    for (what, request) in requests {
        let response = request.send().await.expect("request");
        assert_security_headers(&response, what);
    }
}

/// Fails when `body` shows anything of how the service is built.
fn assert_no_internals(body: &str, what: &str) {
    let lower = body.to_lowercase();
    for leak in [
        "select ",
        "insert ",
        "sqlite",
        "rusqlite",
        "no such table",
        "syntax error",
        "panicked",
        "backtrace",
        "stack",
        ".rs:",
        "src/",
        "/tmp",
        "/work",
        "/home",
        "/root",
        "orders_gone",
        "audit_log",
        "anyhow",
        "tokio",
    ] {
        assert!(!lower.contains(leak), "{what} shows {leak:?}: {body}");
    }
}

async fn problem_text(response: Response, status: u16, what: &str) -> String {
    assert_eq!(response.status(), status, "{what}");
    let body = expect_problem(response, status).await;
    let text = body.to_string();
    assert_no_internals(&text, what);
    text
}

#[tokio::test]
async fn errors_show_no_sql_paths_or_stack_traces_even_from_a_broken_database() {
    let venue = Venue::open().await;
    let central = &venue.central;
    let owner = central.owner_token().await;

    // Hostile input of every kind: the answers say what is wrong with it and nothing more.
    let injection = "%27%20OR%201%3D1%3B%20DROP%20TABLE%20customers%3B--";
    let lookup = venue
        .get(&venue.kiosk, &format!("/v1/customers?phone={injection}"))
        .await;
    if lookup.status() == 200 {
        let found = expect_status(lookup, 200).await;
        assert_eq!(found["customers"], serde_json::json!([]), "{found}");
    } else {
        problem_text(lookup, 422, "phone lookup with SQL").await;
    }
    let cases = [
        (
            "malformed json",
            venue
                .edge
                .request(Method::POST, "/v1/orders", &venue.pos)
                .header("content-type", "application/json")
                .body("{\"lines\": [")
                .send()
                .await
                .expect("request"),
            400,
        ),
        (
            "wrong types",
            venue
                .edge
                .request(Method::POST, "/v1/orders", &venue.pos)
                .json(&serde_json::json!({ "lines": "all of them", "tenders": 7 }))
                .send()
                .await
                .expect("request"),
            422,
        ),
        (
            "bad uuid in the path",
            venue
                .get(&venue.pos, "/v1/orders/%27%3B%20DROP%20TABLE%20orders")
                .await,
            400,
        ),
        (
            "bad query value",
            central
                .request(Method::GET, "/v1/audit?limit=-1%27")
                .bearer_auth(&owner)
                .send()
                .await
                .expect("request"),
            400,
        ),
        (
            "bad date",
            central
                .request(
                    Method::GET,
                    &format!(
                        "/v1/reports/daily?site_id={}&date=2026-13-45%27--",
                        venue.site
                    ),
                )
                .bearer_auth(&owner)
                .send()
                .await
                .expect("request"),
            400,
        ),
        (
            "unknown path",
            central
                .request(Method::GET, "/v1/../../etc/passwd")
                .send()
                .await
                .expect("request"),
            404,
        ),
    ];
    for (what, response, status) in cases {
        problem_text(response, status, what).await;
    }

    // A broken database: a table the handlers need is gone. The answer is a bare 500 problem;
    // the details are for the log.
    let edge_db = rusqlite::Connection::open(venue.edge.db_path()).expect("open edge.db");
    edge_db
        .execute_batch("ALTER TABLE orders RENAME TO orders_gone")
        .expect("rename");
    wait_until(
        "the edge to notice the missing table",
        Duration::from_secs(10),
        || async { venue.get(&venue.pos, "/v1/orders").await.status() == 500 },
    )
    .await;
    let response = venue.get(&venue.pos, "/v1/orders").await;
    problem_text(response, 500, "edge with a broken table").await;
    let central_db =
        rusqlite::Connection::open(central.data_dir.path().join("central.db")).expect("open");
    central_db
        .execute_batch("ALTER TABLE audit_log RENAME TO audit_gone")
        .expect("rename");
    let response = central
        .request(Method::GET, "/v1/audit")
        .bearer_auth(&owner)
        .send()
        .await
        .expect("request");
    problem_text(response, 500, "central with a broken table").await;
}

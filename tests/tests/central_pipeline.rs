//! The outer pipeline over real HTTP: request ids, CORS from configuration.

use aero_tests::TestCentral;
use reqwest::Method;

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_id_is_kept() {
    let central = TestCentral::start().await;
    let generated = central
        .request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "generated id {id}");

    let kept = central
        .request(Method::GET, "/v1/sites")
        .header("x-request-id", "terminal-42-req-7")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 401);
    assert_eq!(kept.headers()["x-request-id"], "terminal-42-req-7");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let central = TestCentral::start_with(|settings| {
        settings.cors_origins = vec!["https://admin.aerosports.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        central
            .request(Method::OPTIONS, "/v1/sites")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://admin.aerosports.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://admin.aerosports.example"
    );
    let vary = "origin, access-control-request-method, access-control-request-headers";
    assert_eq!(allowed.headers()["vary"], vary);
    // An answer to a request without an Origin says the same, as a cache may keep it.
    let plain = central
        .request(Method::GET, "/v1/sites")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers().get_all("vary").iter().count(), 1);
    assert_eq!(plain.headers()["vary"], vary);
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "an unconfigured origin must not be allowed"
    );
}

//! Waiver texts end to end: HQ publishes a wording, the venue's edge replicates it and serves
//! the newest at `/v1/waiver-texts/current`, each waiver a tablet takes records the version its
//! signer was shown, and central keeps that version once the waiver is pushed. Publishing is
//! HQ's alone and its body is validated.

use aero_tests::venue::{MANAGER_PASSWORD, Venue};
use aero_tests::{expect_problem, expect_status, wait_settled, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// The text the edge serves as current to `key`, or `None` while it answers 404.
async fn current_text(venue: &Venue, key: &str) -> Option<Value> {
    let response = venue.get(key, "/v1/waiver-texts/current").await;
    if response.status() == 404 {
        expect_problem(response, 404).await;
        return None;
    }
    Some(expect_status(response, 200).await)
}

async fn wait_for_version(venue: &Venue, version: i64) -> Value {
    wait_until(
        &format!("waiver text version {version} at the edge"),
        Duration::from_secs(20),
        || async {
            current_text(venue, &venue.tablet)
                .await
                .is_some_and(|t| t["version"] == version)
        },
    )
    .await;
    current_text(venue, &venue.tablet)
        .await
        .expect("current text")
}

/// Signs a waiver for `customer` at the tablet; returns the answer.
async fn sign(venue: &Venue, customer: Uuid, signer: &str) -> Value {
    let path = format!("/v1/customers/{customer}/waivers");
    let body = json!({ "signer_name": signer });
    expect_status(venue.post(&venue.tablet, &path, body).await, 201).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_text_reaches_the_venue_and_each_waiver_records_its_version() {
    let venue = Venue::open().await;
    let central = &venue.central;
    let owner = central.owner_token().await;

    // Before HQ publishes anything there is no current text, and a waiver names none.
    assert_eq!(current_text(&venue, &venue.tablet).await, None);
    let customer = venue.customer("Wendy", "+447700900801", false).await;
    let unversioned = sign(&venue, customer, "Wendy Jumper").await;
    assert!(unversioned["text_version"].is_null(), "{unversioned}");

    let first = central
        .post_json(
            &owner,
            "/v1/waiver-texts",
            &json!({ "title": "Liability waiver", "body": "I accept the risks of jumping.\nSigned below." }),
            201,
        )
        .await;
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["published_by"], aero_tests::OWNER, "{first}");
    assert_eq!(first["title"], "Liability waiver");

    // The edge serves it to every terminal as it came from HQ.
    assert_eq!(wait_for_version(&venue, 1).await, first);
    assert_eq!(
        current_text(&venue, &venue.scoreboard).await,
        Some(first.clone())
    );
    let signed_v1 = sign(&venue, customer, "Wendy Jumper").await;
    assert_eq!(signed_v1["text_version"], 1, "{signed_v1}");

    let second = central
        .post_json(
            &owner,
            "/v1/waiver-texts",
            &json!({ "title": "Liability waiver (2026)", "body": "I accept the risks of jumping, and of the foam pit." }),
            201,
        )
        .await;
    assert_eq!(second["version"], 2, "{second}");
    assert_eq!(wait_for_version(&venue, 2).await, second);
    let signed_v2 = sign(&venue, customer, "Wendy Jumper").await;
    assert_eq!(signed_v2["text_version"], 2, "{signed_v2}");

    // HQ and the venue's manager list every version, newest first, a page at a time.
    let manager = central.login("morgan", MANAGER_PASSWORD).await;
    let listed = central.get_json(&manager, "/v1/waiver-texts", 200).await;
    assert_eq!(listed["waiver_texts"], json!([second, first]), "{listed}");
    assert!(listed["next_after"].is_null(), "{listed}");
    let page = central
        .get_json(&owner, "/v1/waiver-texts?limit=1", 200)
        .await;
    assert_eq!(page["waiver_texts"], json!([second]), "{page}");
    let after = page["next_after"].as_str().expect("a next page");
    let rest = central
        .get_json(
            &owner,
            &format!("/v1/waiver-texts?limit=1&after={after}"),
            200,
        )
        .await;
    assert_eq!(rest["waiver_texts"], json!([first]), "{rest}");
    assert!(rest["next_after"].is_null(), "{rest}");

    // Once the venue has synced, central holds each waiver with the version its signer saw.
    wait_settled(|| venue.edge.status(&venue.pos)).await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let mut held: Vec<(String, Option<i64>)> = store
        .waivers_for(customer)
        .await
        .expect("waivers")
        .into_iter()
        .map(|w| (w.id.to_string(), w.text_version))
        .collect();
    held.sort();
    let id = |w: &Value| w["id"].as_str().expect("id").to_string();
    assert_eq!(
        held,
        [
            (id(&unversioned), None),
            (id(&signed_v1), Some(1)),
            (id(&signed_v2), Some(2)),
        ]
    );
    let audit = central.get_json(&owner, "/v1/audit", 200).await;
    let published = audit["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| e["action"] == "waiver_text.published")
        .count();
    assert_eq!(published, 2, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_hq_publishes_and_a_text_needs_a_title_and_a_body() {
    let venue = Venue::open().await;
    let central = &venue.central;
    let owner = central.owner_token().await;

    // One 422 names each bad field.
    let response = central
        .request(Method::POST, "/v1/waiver-texts")
        .bearer_auth(&owner)
        .json(&json!({ "title": "", "body": "x".repeat(50_001) }))
        .send()
        .await
        .expect("publish");
    let problem = expect_problem(response, 422).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["title", "body"], "{problem}");

    // A venue manager may read the texts at central but not publish one; a device may do
    // neither.
    let manager = central.login("morgan", MANAGER_PASSWORD).await;
    let body = json!({ "title": "Liability waiver", "body": "I accept the risks of jumping." });
    let as_manager = central
        .request(Method::POST, "/v1/waiver-texts")
        .bearer_auth(&manager)
        .json(&body)
        .send()
        .await
        .expect("publish as manager");
    expect_problem(as_manager, 403).await;
    for key in [&venue.kiosk, &venue.tablet] {
        for method in [Method::POST, Method::GET] {
            let mut request = central
                .request(method.clone(), "/v1/waiver-texts")
                .header("x-api-key", key);
            if method == Method::POST {
                request = request.json(&body);
            }
            expect_problem(request.send().await.expect("as a device"), 403).await;
        }
    }
    let listed = central.get_json(&owner, "/v1/waiver-texts", 200).await;
    assert_eq!(listed["waiver_texts"], json!([]), "{listed}");

    // A publication retried with its Idempotency-Key is answered again, not published twice.
    let publish = || async {
        central
            .request(Method::POST, "/v1/waiver-texts")
            .bearer_auth(&owner)
            .header("Idempotency-Key", "waiver-2026")
            .json(&body)
            .send()
            .await
            .expect("publish")
    };
    let first = publish().await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = expect_status(first, 201).await;
    let again = publish().await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(expect_status(again, 201).await, first);
    let listed = central.get_json(&owner, "/v1/waiver-texts", 200).await;
    assert_eq!(listed["waiver_texts"], json!([first]), "{listed}");
}

//! OWASP API4:2023 (unrestricted resource consumption): request bodies over the limit are 413
//! and write nothing, a list page at central or at the edge never holds more than its maximum
//! (a `limit` beyond it is a 422) and its cursor walks every row once, and one credential
//! sending too fast gets 429 with `Retry-After` without slowing another.

use aero_central::store::Actor;
use aero_shared::wire::{ProductKind, ProductRecord};
use aero_tests::venue::Venue;
use aero_tests::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// More than the default body limit (1 MiB) of both services.
fn oversized_text() -> String {
    "x".repeat(1024 * 1024 + 1)
}

#[tokio::test]
async fn oversized_bodies_are_413_problems_and_write_nothing() {
    let venue = Venue::open().await;

    let customer = json!({ "first_name": oversized_text(), "last_name": "Jumper",
                           "birth_date": "1990-01-01", "phone": "+447700900401" });
    let response = venue.post(&venue.tablet, "/v1/customers", customer).await;
    expect_problem(response, 413).await;
    let found = expect_status(
        venue
            .get(&venue.kiosk, "/v1/customers?phone=%2B447700900401")
            .await,
        200,
    )
    .await;
    assert_eq!(found["customers"], json!([]), "{found}");

    let owner = venue.central.owner_token().await;
    let sites_before = venue.central.get_json(&owner, "/v1/sites", 200).await;
    let response = venue
        .central
        .request(Method::POST, "/v1/sites")
        .bearer_auth(&owner)
        .json(&json!({ "name": oversized_text(), "timezone": "Europe/London" }))
        .send()
        .await
        .expect("request");
    expect_problem(response, 413).await;
    let sites_after = venue.central.get_json(&owner, "/v1/sites", 200).await;
    assert_eq!(sites_before, sites_after);

    // Just under the limit is not refused for its size (the name is then too long: 422).
    let response = venue
        .central
        .request(Method::POST, "/v1/sites")
        .bearer_auth(&owner)
        .json(&json!({ "name": "x".repeat(1024 * 1024 - 100), "timezone": "Europe/London" }))
        .send()
        .await
        .expect("request");
    expect_problem(response, 422).await;
}

#[tokio::test]
async fn list_pages_are_capped_and_their_cursor_walks_every_row_once() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    // 1,100 audited changes, made through the store as `aero-central` itself would.
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("open store");
    let actor = Actor::system("test");
    for n in 0..1100 {
        let product = ProductRecord {
            id: Uuid::now_v7(),
            sku: format!("SKU{n}"),
            name: format!("Product {n}"),
            kind: ProductKind::Addon,
            price_cents: 100,
            duration_minutes: None,
            grant: None,
            active: true,
            created_at: chrono::Utc::now(),
        };
        store
            .create_product(&actor, &product)
            .await
            .expect("create product");
    }
    let count = |body: &serde_json::Value| body["entries"].as_array().expect("entries").len();
    let default_page = central.get_json(&owner, "/v1/audit", 200).await;
    assert_eq!(count(&default_page), 100, "default audit page");
    let largest = central.get_json(&owner, "/v1/audit?limit=1000", 200).await;
    assert_eq!(count(&largest), 1000, "audit page cap");
    for refused in [
        "/v1/audit?limit=1001",
        "/v1/audit?limit=0",
        "/v1/products?limit=501",
    ] {
        let response = central
            .request(Method::GET, refused)
            .bearer_auth(&owner)
            .send()
            .await
            .expect("request");
        let problem = expect_problem(response, 422).await;
        assert_eq!(
            problem["errors"][0]["field"], "limit",
            "{refused}: {problem}"
        );
    }
    let not_a_number = central
        .request(Method::GET, "/v1/audit?limit=99999999999999999999")
        .bearer_auth(&owner)
        .send()
        .await
        .expect("request");
    expect_problem(not_a_number, 400).await;

    // More products than the largest page: the first page is capped and carries a cursor, and
    // following the cursors yields every product exactly once, in SKU order.
    let first = central.get_json(&owner, "/v1/products", 200).await;
    assert_eq!(first["products"].as_array().expect("products").len(), 100);
    assert!(first["next_after"].is_string(), "{}", first["next_after"]);
    let mut skus = Vec::new();
    let mut path = "/v1/products?limit=500".to_string();
    loop {
        let page = central.get_json(&owner, &path, 200).await;
        let rows = page["products"].as_array().expect("products");
        assert!(rows.len() <= 500);
        skus.extend(
            rows.iter()
                .map(|p| p["sku"].as_str().expect("sku").to_string()),
        );
        match page["next_after"].as_str() {
            Some(cursor) => path = format!("/v1/products?limit=500&after={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..1100).map(|n| format!("SKU{n}")).collect();
    expected.sort();
    assert_eq!(skus, expected);
}

#[tokio::test]
async fn edge_list_pages_are_capped_and_their_cursor_walks_every_row_once() {
    let venue = Venue::open().await;
    // More customers on one phone number than a default page holds: the kiosk lookup matches
    // the whole normalized number, so all of them answer it.
    let phone = "+447700900402";
    let mut registered = Vec::new();
    for n in 0..130 {
        registered.push(venue.customer(&format!("Jumper{n}"), phone, false).await);
    }
    let lookup = "/v1/customers?phone=%2B447700900402";

    let first = expect_status(venue.get(&venue.kiosk, lookup).await, 200).await;
    assert_eq!(first["customers"].as_array().expect("customers").len(), 100);
    assert!(first["next_after"].is_string(), "{}", first["next_after"]);

    // Every list the edge serves refuses a page size outside 1 to 500, naming `limit`.
    let lists = [
        "/v1/customers?phone=%2B447700900402&",
        "/v1/orders?",
        "/v1/products?",
        "/v1/plugs?",
        "/v1/dead-letters?",
        "/v1/sessions/active?",
        "/v1/reports/sales-by-product?",
    ];
    for list in lists {
        for limit in [0, 501] {
            let path = format!("{list}limit={limit}");
            let problem = expect_problem(venue.manager_get(&path).await, 422).await;
            assert_eq!(problem["errors"][0]["field"], "limit", "{path}: {problem}");
        }
        let path = format!("{list}after=not-a-cursor");
        let problem = expect_problem(venue.manager_get(&path).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "after", "{path}: {problem}");
        let largest = format!("{list}limit=500");
        expect_status(venue.manager_get(&largest).await, 200).await;
    }

    // Following the cursor yields every customer once, in registration order, and the last
    // page says so with a null cursor.
    let mut walked = Vec::new();
    let mut pages = 0;
    let mut path = format!("{lookup}&limit=50");
    loop {
        let page = expect_status(venue.get(&venue.kiosk, &path).await, 200).await;
        let rows = page["customers"].as_array().expect("customers");
        assert!(rows.len() <= 50, "{}", rows.len());
        walked.extend(
            rows.iter()
                .map(|c| c["id"].as_str().expect("id").parse::<Uuid>().expect("uuid")),
        );
        pages += 1;
        match page["next_after"].as_str() {
            Some(cursor) => path = format!("{lookup}&limit=50&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(walked, registered);
}

#[tokio::test]
async fn one_key_over_its_rate_gets_429_with_retry_after_and_another_key_does_not() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start_with(&central.url(""), &token, |s| {
        s.limits.requests_per_second = 1;
        s.limits.burst = 3;
    })
    .await;
    let (_, noisy) = central.create_device(&owner, site, "kiosk").await;
    let (_, quiet) = central.create_device(&owner, site, "pos").await;
    // Each key is polled until the edge knows it; unknown keys do not spend a key's budget.
    for key in [&noisy, &quiet] {
        wait_until("the key at the edge", Duration::from_secs(20), || async {
            edge.status(key).await.is_some()
        })
        .await;
    }

    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..6 {
        let response = edge
            .request(Method::GET, "/v1/products", &noisy)
            .send()
            .await
            .expect("request");
        statuses.push(response.status().as_u16());
        if response.status() == 429 && throttled.is_none() {
            throttled = Some(response);
        }
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    let throttled = throttled.unwrap_or_else(|| panic!("never throttled: {statuses:?}"));
    let retry_after: u64 = throttled
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    expect_problem(throttled, 429).await;

    let other = edge
        .request(Method::GET, "/v1/products", &quiet)
        .send()
        .await
        .expect("request");
    expect_status(other, 200).await;
}

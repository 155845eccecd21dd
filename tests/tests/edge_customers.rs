//! Registering a family at the edge: a guardian with minors, all committed together and all
//! reaching central linked to their guardian; invalid families change nothing.

use aero_tests::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

async fn venue(central: &TestCentral) -> (TestEdge, String) {
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(central, &token).await;
    let (_, tablet) = central.create_device(&owner, site, "tablet").await;
    wait_until(
        "the edge to accept the tablet key",
        Duration::from_secs(20),
        || async { edge.status(&tablet).await.is_some() },
    )
    .await;
    (edge, tablet)
}

async fn register(edge: &TestEdge, key: &str, body: Value) -> reqwest::Response {
    edge.request(Method::POST, "/v1/customers", key)
        .json(&body)
        .send()
        .await
        .expect("register request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guardian_with_minors_registers_as_one_family_and_reaches_central() {
    let central = TestCentral::start().await;
    let (edge, tablet) = venue(&central).await;
    let body = register(
        &edge,
        &tablet,
        json!({
            "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09",
            "phone": "+44 7700 900456",
            "minors": [
                { "first_name": "Ada", "last_name": "Hopper", "birth_date": "2016-03-01" },
                { "first_name": "Alan", "last_name": "Hopper", "birth_date": "2019-07-20" }
            ]
        }),
    )
    .await;
    let family = expect_status(body, 201).await;
    let guardian: Uuid = family["id"].as_str().unwrap().parse().unwrap();
    let minors = family["minors"].as_array().unwrap();
    assert_eq!(minors.len(), 2);
    for minor in minors {
        assert_eq!(minor["guardian_id"], guardian.to_string());
        assert!(minor["phone"].is_null());
    }

    let store = aero_central::open_store(&central.settings()).await.unwrap();
    let ids: Vec<Uuid> = minors
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    wait_until(
        "the family to reach central",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            let ids = ids.clone();
            async move {
                for id in ids {
                    if store.get_customer(id).await.unwrap().is_none() {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    for id in &ids {
        let minor = store.get_customer(*id).await.unwrap().unwrap();
        assert_eq!(minor.guardian_id, Some(guardian));
    }
    assert_eq!(store.count_customers().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_families_are_refused_with_field_errors_and_write_nothing() {
    let central = TestCentral::start().await;
    let (edge, tablet) = venue(&central).await;
    let cases = [
        (
            json!({ "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09",
                    "minors": [{ "first_name": "Ada", "last_name": "Hopper", "birth_date": "1990-01-01" }] }),
            "minors[0].birth_date",
        ),
        (
            json!({ "first_name": "Kid", "last_name": "Hopper", "birth_date": "2015-01-01",
                    "minors": [{ "first_name": "Ada", "last_name": "Hopper", "birth_date": "2019-01-01" }] }),
            "birth_date",
        ),
        (
            json!({ "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09",
                    "minors": [{ "first_name": "", "last_name": "Hopper", "birth_date": "2019-01-01" }] }),
            "minors[0].first_name",
        ),
        (
            json!({ "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09",
                    "nickname": "Amazing" }),
            "nickname",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_problem(register(&edge, &tablet, body).await, 422).await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "expected {field} in {problem}");
    }
    // A valid registration afterwards: once it has reached central (ops arrive in seq order),
    // central holds exactly that one customer, so none of the refused ones was queued.
    let ok = register(
        &edge,
        &tablet,
        json!({ "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09" }),
    )
    .await;
    let id: Uuid = expect_status(ok, 201).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = aero_central::open_store(&central.settings()).await.unwrap();
    wait_until(
        "the valid customer to reach central",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move { store.get_customer(id).await.unwrap().is_some() }
        },
    )
    .await;
    assert_eq!(store.count_customers().await.unwrap(), 1);
}

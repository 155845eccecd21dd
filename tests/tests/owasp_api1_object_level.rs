//! OWASP API1:2023 (broken object-level authorization): another venue's orders, plugs, devices
//! and site records, addressed by id, are refused to a venue's devices and staff, at the edge
//! and at central, and nothing is changed by trying.

use aero_tests::venue::{MANAGER_PASSWORD, Venue};
use aero_tests::{TestEdge, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// A second venue on the first venue's central: its own site, edge, POS and edge manager.
struct OtherVenue {
    site: Uuid,
    edge: TestEdge,
    pos: String,
    /// A manager of this venue only, logged in at its edge.
    manager: String,
}

async fn other_venue(venue: &Venue) -> OtherVenue {
    let central = &venue.central;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "York").await;
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({ "username": "bea", "password": MANAGER_PASSWORD, "role": "manager", "site_ids": [site] }),
            201,
        )
        .await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(central, &token).await;
    let (_, pos) = central.create_device(&owner, site, "pos").await;
    wait_until(
        "York's POS key at its edge",
        Duration::from_secs(20),
        || async { edge.status(&pos).await.is_some() },
    )
    .await;
    let manager = edge_login(&edge, "bea").await;
    OtherVenue {
        site,
        edge,
        pos,
        manager,
    }
}

/// Logs `username` in at `edge` once the edge has replicated the account.
async fn edge_login(edge: &TestEdge, username: &str) -> String {
    let login = || async {
        edge.client
            .post(edge.url("/v1/auth/login"))
            .json(&json!({ "username": username, "password": MANAGER_PASSWORD }))
            .send()
            .await
            .expect("login")
    };
    wait_until(
        "the manager's account at the edge",
        Duration::from_secs(20),
        || async { login().await.status() == 200 },
    )
    .await;
    expect_status(login().await, 200).await["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

async fn bearer_get(edge: &TestEdge, path: &str, token: &str) -> Response {
    edge.client
        .get(edge.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn another_venues_orders_and_plugs_are_not_found_at_this_venues_edge() {
    let leeds = Venue::open().await;
    let york = other_venue(&leeds).await;
    let owner = leeds.central.owner_token().await;

    let customer = leeds.customer("Ada", "+447700900101", true).await;
    let order = leeds.sell(customer, "JUMP60", 1, 1500).await;
    let order_id = order["id"].as_str().expect("order id").to_string();
    let plug = leeds
        .central
        .post_json(
            &owner,
            &format!("/v1/sites/{}/plugs", leeds.site),
            &json!({ "name": "Laser room", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await;
    let plug_id = plug["id"].as_str().expect("plug id").to_string();
    wait_until(
        "the plug at Leeds' edge",
        Duration::from_secs(20),
        || async {
            let body: Value = leeds
                .manager_get("/v1/plugs")
                .await
                .json()
                .await
                .unwrap_or_default();
            body.to_string().contains(&plug_id)
        },
    )
    .await;
    // A device created after the plug and the order reaches York only once York has pulled past
    // both: from then on, whatever York lacks, it lacks by scope and not by lag.
    let (_, york_kiosk) = leeds
        .central
        .create_device(&owner, york.site, "kiosk")
        .await;
    wait_until("York's new kiosk key", Duration::from_secs(20), || async {
        york.edge.status(&york_kiosk).await.is_some()
    })
    .await;

    // The order, by id, at the other venue: not found to its POS, and its manager cannot refund it.
    let receipt = york
        .edge
        .request(Method::GET, &format!("/v1/orders/{order_id}"), &york.pos)
        .send()
        .await
        .expect("receipt");
    expect_problem(receipt, 404).await;
    let refund = york
        .edge
        .client
        .post(york.edge.url(&format!("/v1/orders/{order_id}/refund")))
        .bearer_auth(&york.manager)
        .json(
            &json!({ "tenders": [{ "kind": "cash", "amount_cents": 1500 }], "reason": "not ours" }),
        )
        .send()
        .await
        .expect("refund");
    expect_problem(refund, 404).await;
    // Still refundable in full where it was sold: the attempt at York took nothing from it.
    let receipt = expect_status(
        leeds
            .get(&leeds.pos, &format!("/v1/orders/{order_id}"))
            .await,
        200,
    )
    .await;
    assert!(
        receipt["refunds"].as_array().is_none_or(Vec::is_empty),
        "{receipt}"
    );

    // The plug, by id, at the other venue: not listed, and its manager cannot switch it.
    let york_plugs: Value = bearer_get(&york.edge, "/v1/plugs", &york.manager)
        .await
        .json()
        .await
        .expect("json");
    assert!(!york_plugs.to_string().contains(&plug_id), "{york_plugs}");
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let power = york
        .edge
        .client
        .post(york.edge.url(&format!("/v1/plugs/{plug_id}/power")))
        .bearer_auth(&york.manager)
        .json(&json!({ "on": true, "until": until }))
        .send()
        .await
        .expect("power");
    expect_problem(power, 404).await;
    let overrides = leeds
        .central
        .get_json(&owner, &format!("/v1/plugs/{plug_id}/overrides"), 200)
        .await;
    assert_eq!(overrides["overrides"], json!([]), "{overrides}");
}

#[tokio::test]
async fn one_venues_keys_and_tokens_are_refused_at_another_venues_edge() {
    let leeds = Venue::open().await;
    let york = other_venue(&leeds).await;

    // Leeds' POS key is bound to Leeds: York's edge does not know it.
    let status = york
        .edge
        .request(Method::GET, "/v1/status", &leeds.pos)
        .send()
        .await
        .expect("status");
    expect_problem(status, 401).await;
    // Leeds' manager token was signed by Leeds' edge; York's edge does not accept it.
    let status = bearer_get(&york.edge, "/v1/status", &leeds.manager).await;
    expect_problem(status, 401).await;
    // And the other way round.
    let status = leeds
        .edge
        .request(Method::GET, "/v1/status", &york.pos)
        .send()
        .await
        .expect("status");
    expect_problem(status, 401).await;
    let status = bearer_get(&leeds.edge, "/v1/status", &york.manager).await;
    expect_problem(status, 401).await;
    // Controls: each credential works at its own venue.
    expect_status(leeds.get(&leeds.pos, "/v1/status").await, 200).await;
    expect_status(
        bearer_get(&york.edge, "/v1/status", &york.manager).await,
        200,
    )
    .await;
}

#[tokio::test]
async fn a_site_manager_cannot_read_or_change_another_sites_records_at_central() {
    let leeds = Venue::open().await;
    let central = &leeds.central;
    let owner = central.owner_token().await;
    let york = central.create_site(&owner, "York").await;
    let york_plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{york}/plugs"),
            &json!({ "name": "Arcade", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await["id"]
        .as_str()
        .expect("plug id")
        .to_string();
    let (york_kiosk, _) = central.create_device(&owner, york, "kiosk").await;
    let leeds_plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{}/plugs", leeds.site),
            &json!({ "name": "Laser room", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await["id"]
        .as_str()
        .expect("plug id")
        .to_string();
    // Leeds' manager, logged in at central.
    let manager = central.login("morgan", MANAGER_PASSWORD).await;

    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let date = chrono::Utc::now().date_naive();
    let reads = [
        format!("/v1/sites/{york}"),
        format!("/v1/sites/{york}/devices"),
        format!("/v1/sites/{york}/plugs"),
        format!("/v1/sites/{york}/sync"),
        format!("/v1/sites/{york}/dead-letters"),
        format!("/v1/plugs/{york_plug}/schedules"),
        format!("/v1/plugs/{york_plug}/overrides"),
        format!("/v1/reports/daily?site_id={york}&date={date}"),
        format!("/v1/reports/sales-by-product?site_id={york}&date={date}"),
        format!("/v1/audit?site_id={york}"),
    ];
    for path in &reads {
        let response = central
            .request(Method::GET, path)
            .bearer_auth(&manager)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert_eq!(status, 403, "GET {path} as Leeds' manager");
        expect_problem(response, 403).await;
    }
    let writes = [
        (
            format!("/v1/plugs/{york_plug}/schedules"),
            json!({ "cron": "0 0 9 * * *", "state": "on" }),
        ),
        (
            format!("/v1/plugs/{york_plug}/overrides"),
            json!({ "on": true, "until": until }),
        ),
    ];
    for (path, body) in &writes {
        let response = central
            .request(Method::POST, path)
            .bearer_auth(&manager)
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "POST {path} as Leeds' manager");
        expect_problem(response, 403).await;
    }
    let revoke = central
        .request(Method::DELETE, &format!("/v1/devices/{york_kiosk}"))
        .bearer_auth(&manager)
        .send()
        .await
        .expect("revoke");
    expect_problem(revoke, 403).await;

    // Nothing at York changed.
    let schedules = central
        .get_json(&owner, &format!("/v1/plugs/{york_plug}/schedules"), 200)
        .await;
    assert_eq!(schedules["schedules"], json!([]), "{schedules}");
    let overrides = central
        .get_json(&owner, &format!("/v1/plugs/{york_plug}/overrides"), 200)
        .await;
    assert_eq!(overrides["overrides"], json!([]), "{overrides}");
    let devices = central
        .get_json(&owner, &format!("/v1/sites/{york}/devices"), 200)
        .await;
    let kiosk = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["id"] == json!(york_kiosk))
        .expect("York's kiosk is listed");
    assert!(kiosk["revoked_at"].is_null(), "{kiosk}");

    // The site list shows Leeds only; the same reads of Leeds' own records succeed.
    let sites = central.get_json(&manager, "/v1/sites", 200).await;
    let ids: Vec<&str> = sites["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [leeds.site.to_string()], "{sites}");
    for path in [
        format!("/v1/sites/{}/devices", leeds.site),
        format!("/v1/plugs/{leeds_plug}/schedules"),
        format!("/v1/audit?site_id={}", leeds.site),
    ] {
        central.get_json(&manager, &path, 200).await;
    }
}

//! OWASP API6:2023 (unrestricted access to sensitive business flows): refunds, balance
//! adjustments, plug control and HQ administration are refused (403 problem+json, nothing
//! changed) to an authorized caller who is outside the site's allowed networks or HQ's, and a
//! spoofed `X-Forwarded-For` does not help. How forwarded addresses are trusted behind a real
//! proxy is proven in `central_proxies.rs`.

use aero_central::store::Actor;
use aero_shared::auth::principal::Role;
use aero_shared::wire::SiteRecord;
use aero_tests::venue::{MANAGER_PASSWORD, Venue};
use aero_tests::{TestCentral, create_user, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// An address inside the networks these tests allow; the test client is never there.
const INSIDE: &str = "10.20.0.5";

async fn assert_network_refusal(response: Response, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    let problem = expect_problem(response, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("network")),
        "{what}: {problem}"
    );
}

#[tokio::test]
async fn venue_refunds_adjustments_and_plug_control_are_refused_outside_the_sites_networks() {
    let venue = Venue::open_with_networks(&["10.20.0.0/16"]).await;
    let owner = venue.central.owner_token().await;
    let plug = venue
        .central
        .post_json(
            &owner,
            &format!("/v1/sites/{}/plugs", venue.site),
            &json!({ "name": "Laser room", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await["id"]
        .as_str()
        .expect("plug id")
        .to_string();
    wait_until("the plug at the edge", Duration::from_secs(20), || async {
        let body: Value = venue
            .manager_get("/v1/plugs")
            .await
            .json()
            .await
            .unwrap_or_default();
        body.to_string().contains(&plug)
    })
    .await;
    // Selling is not sensitive: the venue works from anywhere on its LAN.
    let ada = venue.customer("Ada", "+447700900601", true).await;
    let order = venue.sell(ada, "TOPUP50", 1, 5000).await;
    let order_id = order["id"].as_str().expect("order id").to_string();

    let refund_body =
        json!({ "tenders": [{ "kind": "cash", "amount_cents": 5000 }], "reason": "changed mind" });
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let flows = [
        (format!("/v1/orders/{order_id}/refund"), refund_body.clone()),
        (
            format!("/v1/customers/{ada}/balances/adjust"),
            json!({ "account": "stored_value", "delta": 100_000, "reason": "goodwill" }),
        ),
        (
            format!("/v1/plugs/{plug}/power"),
            json!({ "on": true, "until": until }),
        ),
    ];
    for (path, body) in &flows {
        assert_network_refusal(venue.manager_post(path, body.clone()).await, path).await;
        // Naming an address inside the networks changes nothing: no proxy is trusted.
        let spoofed = venue
            .edge
            .client
            .post(venue.edge.url(path))
            .bearer_auth(&venue.manager)
            .header("x-forwarded-for", INSIDE)
            .header("forwarded", format!("for={INSIDE}"))
            .json(body)
            .send()
            .await
            .expect("request");
        assert_network_refusal(spoofed, &format!("{path} with X-Forwarded-For")).await;
    }
    // Nothing moved: the order is unrefunded, the balance is what was bought, the plug has no
    // manual override.
    let receipt = expect_status(
        venue
            .get(&venue.pos, &format!("/v1/orders/{order_id}"))
            .await,
        200,
    )
    .await;
    assert!(
        receipt["refunds"].as_array().is_none_or(Vec::is_empty),
        "{receipt}"
    );
    assert_eq!(venue.balances(ada).await["stored_value"], 5000);
    let plugs = expect_status(venue.manager_get("/v1/plugs").await, 200).await;
    assert!(!plugs.to_string().contains("override"), "{plugs}");
    // Reading is not sensitive.
    expect_status(venue.manager_get("/v1/reports/daily").await, 200).await;

    // Control: once HQ adds this address to the site's networks, the same refund goes through.
    let patch = venue
        .central
        .request(Method::PATCH, &format!("/v1/sites/{}", venue.site))
        .bearer_auth(&owner)
        .json(&json!({ "allowed_networks": ["10.20.0.0/16", "127.0.0.0/8", "::1/128"] }))
        .send()
        .await
        .expect("patch");
    expect_status(patch, 200).await;
    let path = format!("/v1/orders/{order_id}/refund");
    wait_until(
        "the refund once the networks replicate",
        Duration::from_secs(20),
        || async {
            venue
                .manager_post(&path, refund_body.clone())
                .await
                .status()
                == 201
        },
    )
    .await;
}

#[tokio::test]
async fn hq_administration_and_plug_overrides_are_refused_outside_allowed_networks() {
    let central = TestCentral::start_with(|settings| {
        settings.hq_networks = vec!["10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    // The site exists already (its creation is itself refused from here), open to 10.20/16.
    let site = SiteRecord {
        id: Uuid::now_v7(),
        name: "Leeds".into(),
        timezone: "Europe/London".into(),
        allowed_networks: vec!["10.20.0.0/16".parse().expect("cidr")],
        created_at: chrono::Utc::now(),
    };
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    store
        .create_site(&Actor::system("test"), &site)
        .await
        .expect("site");
    create_user(
        &central.settings(),
        "morgan",
        MANAGER_PASSWORD,
        Role::Manager,
        vec![site.id],
    )
    .await;
    let owner = central.owner_token().await;
    let manager = central.login("morgan", MANAGER_PASSWORD).await;
    // Even listing staff is user management, refused from here: the store names morgan.
    let morgan = store
        .user_by_username("morgan")
        .await
        .expect("lookup")
        .expect("morgan")
        .id;
    let users_before = store.list_users(None, 500).await.expect("users").len();
    // Adding plugs is HQ's catalog work, not plug control: allowed from here.
    let plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{}/plugs", site.id),
            &json!({ "name": "Laser room", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await["id"]
        .as_str()
        .expect("plug id")
        .to_string();

    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let hq_flows = [
        (
            Method::POST,
            "/v1/sites".to_string(),
            json!({ "name": "York", "timezone": "Europe/London", "allowed_networks": ["0.0.0.0/0"] }),
        ),
        (
            Method::PATCH,
            format!("/v1/sites/{}", site.id),
            json!({ "allowed_networks": ["0.0.0.0/0"] }),
        ),
        (
            Method::POST,
            format!("/v1/sites/{}/devices", site.id),
            json!({ "name": "Kiosk 1", "kind": "kiosk" }),
        ),
        (
            Method::POST,
            format!("/v1/sites/{}/enrollment-tokens", site.id),
            json!({}),
        ),
        (Method::GET, "/v1/users".to_string(), json!(null)),
        (
            Method::POST,
            "/v1/users".to_string(),
            json!({ "username": "eve", "password": "a long enough password", "role": "admin", "site_ids": [] }),
        ),
        (Method::DELETE, format!("/v1/users/{morgan}"), json!(null)),
    ];
    for (method, path, body) in &hq_flows {
        for spoof in [None, Some("10.1.2.3")] {
            let mut request = central.request(method.clone(), path).bearer_auth(&owner);
            if !body.is_null() {
                request = request.json(body);
            }
            if let Some(address) = spoof {
                request = request.header("x-forwarded-for", address);
            }
            let response = request.send().await.expect("request");
            assert_network_refusal(response, &format!("{method} {path} (spoof {spoof:?})")).await;
        }
    }
    let override_path = format!("/v1/plugs/{plug}/overrides");
    let response = central
        .request(Method::POST, &override_path)
        .bearer_auth(&manager)
        .json(&json!({ "on": true, "until": until }))
        .send()
        .await
        .expect("request");
    assert_network_refusal(response, &override_path).await;

    // Nothing changed: one site with its own networks, no devices, morgan still enabled and
    // able to log in, no override.
    let sites = central.get_json(&owner, "/v1/sites", 200).await;
    assert_eq!(
        sites["sites"].as_array().expect("sites").len(),
        1,
        "{sites}"
    );
    assert_eq!(
        sites["sites"][0]["allowed_networks"],
        json!(["10.20.0.0/16"])
    );
    let devices = central
        .get_json(&owner, &format!("/v1/sites/{}/devices", site.id), 200)
        .await;
    assert_eq!(devices["devices"], json!([]));
    assert_eq!(
        store.list_users(None, 500).await.expect("users").len(),
        users_before
    );
    let morgan = store
        .get_user(morgan)
        .await
        .expect("lookup")
        .expect("morgan");
    assert!(morgan.disabled_at.is_none(), "morgan was disabled");
    central.login("morgan", MANAGER_PASSWORD).await;
    let overrides = central.get_json(&owner, &override_path, 200).await;
    assert_eq!(overrides["overrides"], json!([]));
}

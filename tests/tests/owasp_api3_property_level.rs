//! OWASP API3:2023 (broken object property-level authorization): a client cannot set the
//! properties the server owns (prices, totals, balances, waiver state, ids, roles, site ids,
//! key material). Such fields are refused with 422 and the stored result is checked to be
//! untouched; and what the server keeps secret (password and key hashes) is never shown.

use aero_tests::venue::Venue;
use aero_tests::{TestCentral, expect_problem, expect_status};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The `field` of every entry of a validation problem's `errors`, joined for messages.
fn fields(problem: &Value) -> String {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn venue_clients_cannot_set_prices_totals_balances_waivers_or_ids() {
    let venue = Venue::open().await;
    let jump = venue.product("JUMP60");
    let leeds = venue.site;
    let elsewhere = Uuid::now_v7();
    let chosen_id = Uuid::now_v7();
    let customer = venue.customer("Ada", "+447700900301", false).await;

    let line = json!({ "product_id": jump, "quantity": 1 });
    let cash = json!({ "kind": "cash", "amount_cents": 1 });
    let orders = [
        json!({ "customer_id": customer, "lines": [line], "tenders": [cash], "total_cents": 1 }),
        json!({ "customer_id": customer,
                "lines": [{ "product_id": jump, "quantity": 1, "unit_price_cents": 1 }],
                "tenders": [cash] }),
        json!({ "customer_id": customer,
                "lines": [{ "product_id": jump, "quantity": 1, "total_cents": 1 }],
                "tenders": [cash] }),
        json!({ "customer_id": customer, "lines": [line], "tenders": [cash], "site_id": elsewhere }),
        json!({ "customer_id": customer, "lines": [line], "tenders": [cash], "id": chosen_id }),
        json!({ "customer_id": customer, "lines": [line], "tenders": [cash], "change_cents": 99 }),
        json!({ "customer_id": customer, "lines": [line],
                "tenders": [{ "kind": "cash", "amount_cents": 1, "change_cents": 99 }] }),
    ];
    for body in orders {
        let problem = venue.order(body.clone(), 422).await;
        assert!(!fields(&problem).is_empty(), "{body} -> {problem}");
    }
    let day = expect_status(venue.get(&venue.pos, "/v1/orders").await, 200).await;
    assert_eq!(
        day["orders"],
        json!([]),
        "a refused order was stored: {day}"
    );

    // Balances and waiver state are the server's: a registration that brings its own is refused.
    let person = |extra: (&str, Value)| {
        let mut body = json!({ "first_name": "Bo", "last_name": "Jumper", "birth_date": "1991-02-03",
                               "phone": "+447700900302" });
        body[extra.0] = extra.1;
        body
    };
    for extra in [
        ("balances", json!({ "stored_value": 100_000 })),
        ("stored_value", json!(100_000)),
        ("arcade_credits", json!(5000)),
        ("waiver_valid", json!(true)),
        ("home_site_id", json!(elsewhere)),
        ("id", json!(chosen_id)),
    ] {
        let field = extra.0;
        let response = venue
            .post(&venue.tablet, "/v1/customers", person(extra))
            .await;
        let problem = expect_problem(response, 422).await;
        assert!(
            fields(&problem).contains(field) || problem["detail"].to_string().contains(field),
            "{field}: {problem}"
        );
    }
    let found = expect_status(
        venue
            .get(&venue.kiosk, "/v1/customers?phone=%2B447700900302")
            .await,
        200,
    )
    .await;
    assert_eq!(found["customers"], json!([]), "{found}");
    // A waiver's lifetime is the server's too.
    let waiver = venue
        .post(
            &venue.tablet,
            &format!("/v1/customers/{customer}/waivers"),
            json!({ "signer_name": "Ada", "expires_at": "2099-01-01T00:00:00Z" }),
        )
        .await;
    expect_problem(waiver, 422).await;
    let ada = venue.lookup("+447700900301").await;
    assert_eq!(ada["waiver_valid"], false, "{ada}");
    assert_eq!(
        venue.balances(customer).await,
        json!({ "stored_value": 0, "arcade_credits": 0, "visits": 0 })
    );

    // The accepted order is priced by the catalog, never by the client.
    let order = venue.sell(customer, "JUMP60", 2, 1500).await;
    assert_eq!(order["total_cents"], 3000, "{order}");
    assert_eq!(order["site_id"], json!(leeds), "{order}");
}

#[tokio::test]
async fn staff_cannot_set_roles_site_ids_or_key_material_at_central() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let leeds = central.create_site(&owner, "Leeds").await;
    let york = central.create_site(&owner, "York").await;
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({ "username": "ali", "password": "an admin's long password", "role": "admin", "site_ids": [] }),
            201,
        )
        .await;
    let admin = central.login("ali", "an admin's long password").await;
    let users_before = central.get_json(&owner, "/v1/users", 200).await;

    // An admin cannot mint an owner, and nobody sets a user's hash, id or state.
    let escalate = central
        .request(Method::POST, "/v1/users")
        .bearer_auth(&admin)
        .json(&json!({ "username": "eve", "password": "a long enough password", "role": "owner", "site_ids": [] }))
        .send()
        .await
        .expect("request");
    expect_problem(escalate, 403).await;
    for (field, value) in [
        (
            "password_hash",
            json!("$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB"),
        ),
        ("id", json!(Uuid::now_v7())),
        ("disabled_at", json!(null)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
    ] {
        let mut body = json!({ "username": "eve", "password": "a long enough password", "role": "staff", "site_ids": [leeds] });
        body[field] = value;
        let response = central
            .request(Method::POST, "/v1/users")
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .expect("request");
        expect_problem(response, 422).await;
    }
    let users_after = central.get_json(&owner, "/v1/users", 200).await;
    assert_eq!(users_before, users_after, "a refused user was stored");
    assert!(
        !users_after.to_string().contains("argon2"),
        "user list shows hashes: {users_after}"
    );

    // A device is created at the site in its path, with a key the server makes.
    for (field, value) in [
        ("site_id", json!(york)),
        (
            "api_key",
            json!("aero_chosen_by_the_client_0000000000000000"),
        ),
        ("key_hash", json!("00")),
        ("revoked_at", json!(null)),
    ] {
        let mut body = json!({ "name": "Kiosk 9", "kind": "kiosk" });
        body[field] = value;
        let response = central
            .request(Method::POST, &format!("/v1/sites/{leeds}/devices"))
            .bearer_auth(&owner)
            .json(&body)
            .send()
            .await
            .expect("request");
        expect_problem(response, 422).await;
    }
    let edge_kind = central
        .request(Method::POST, &format!("/v1/sites/{leeds}/devices"))
        .bearer_auth(&owner)
        .json(&json!({ "name": "Fake edge", "kind": "edge" }))
        .send()
        .await
        .expect("request");
    let problem = expect_problem(edge_kind, 422).await;
    assert!(fields(&problem).contains("kind"), "{problem}");
    for site in [leeds, york] {
        let devices = central
            .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
            .await;
        assert_eq!(devices["devices"], json!([]), "{devices}");
    }
    let (_, key) = central.create_device(&owner, leeds, "kiosk").await;
    let devices = central
        .get_json(&owner, &format!("/v1/sites/{leeds}/devices"), 200)
        .await;
    let listed = devices.to_string();
    assert!(!listed.contains(&key), "device list shows the key");
    assert!(
        !listed.contains("hash"),
        "device list shows a hash: {listed}"
    );

    // A site's id and creation time are not editable.
    let site_before = central
        .get_json(&owner, &format!("/v1/sites/{leeds}"), 200)
        .await;
    for (field, value) in [
        ("id", json!(york)),
        ("created_at", json!("2020-01-01T00:00:00Z")),
    ] {
        let response = central
            .request(Method::PATCH, &format!("/v1/sites/{leeds}"))
            .bearer_auth(&owner)
            .json(&json!({ field: value, "name": "Renamed" }))
            .send()
            .await
            .expect("request");
        expect_problem(response, 422).await;
    }
    let site_after = central
        .get_json(&owner, &format!("/v1/sites/{leeds}"), 200)
        .await;
    assert_eq!(site_before, site_after);
}

#[tokio::test]
async fn an_edge_cannot_push_records_for_another_site() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let leeds = central.create_site(&owner, "Leeds").await;
    let york = central.create_site(&owner, "York").await;
    let product = central
        .post_json(
            &owner,
            "/v1/products",
            &json!({ "sku": "JUMP60", "name": "Jump 60", "kind": "pass", "price_cents": 1500, "duration_minutes": 60 }),
            201,
        )
        .await["id"]
        .clone();
    let token = central.enrollment_token(&owner, leeds).await;
    let enrolled = central
        .request(Method::POST, "/v1/edge/enroll")
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("enroll");
    let leeds_edge = expect_status(enrolled, 200).await["api_key"]
        .as_str()
        .expect("api_key")
        .to_string();

    let now = chrono::Utc::now();
    let order_for = |site: Uuid| {
        json!({
            "id": Uuid::now_v7(), "site_id": site, "customer_id": null,
            "lines": [{ "product_id": product, "sku": "JUMP60", "name": "Jump 60", "kind": "pass",
                        "quantity": 1, "unit_price_cents": 1500, "total_cents": 1500 }],
            "tenders": [{ "kind": "card", "amount_cents": 1500, "received_cents": null,
                          "change_cents": 0, "reference": "T1" }],
            "total_cents": 1500, "change_cents": 0, "sold_by": "device:pos",
            "created_at": now.to_rfc3339(),
        })
    };
    // York's order, then (the control) the same order for Leeds itself.
    let ops: Vec<Value> = [order_for(york), order_for(leeds)]
        .into_iter()
        .zip(1..)
        .map(|(order, seq)| {
            json!({ "seq": seq, "op_id": Uuid::now_v7(), "entity": "order",
                    "entity_id": order["id"], "kind": "upsert", "data": order })
        })
        .collect();
    let push = central
        .request(Method::POST, "/v1/sync/push")
        .header("x-api-key", &leeds_edge)
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .expect("push");
    let answer = expect_status(push, 200).await;
    let rejected = answer["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 1, "{answer}");
    assert_eq!(
        rejected[0]["seq"], 1,
        "York's order is the one refused: {answer}"
    );

    let date = now.with_timezone(&chrono_tz::Europe::London).date_naive();
    for (site, orders) in [(york, 0), (leeds, 1)] {
        let report = central
            .get_json(
                &owner,
                &format!("/v1/reports/daily?site_id={site}&date={date}"),
                200,
            )
            .await;
        assert_eq!(report["orders"], orders, "{report}");
        assert_eq!(report["revenue_cents"], orders * 1500, "{report}");
    }
}

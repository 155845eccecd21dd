//! HQ administration over real HTTP on loopback: editing a site (`PATCH /v1/sites/{site_id}`),
//! disabling a staff user (`DELETE /v1/users/{id}`) and retiring a product, including what
//! reaches an edge; and HQ's reports over what venues pushed.
//!
//! Every test starts its own central on its own temporary data directory.

use aero_shared::auth::principal::Role;
use aero_tests::{
    OWNER, OWNER_PASSWORD, TestCentral, TestEdge, create_user, expect_problem, expect_status,
    wait_until,
};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const STAFF_PASSWORD: &str = "staff password 123";

async fn patch_site(central: &TestCentral, token: &str, site: Uuid, body: &Value) -> Response {
    central
        .request(Method::PATCH, &format!("/v1/sites/{site}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn disable(central: &TestCentral, token: &str, user: Uuid) -> Response {
    central
        .request(Method::DELETE, &format!("/v1/users/{user}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn login_status(url: String, username: &str, password: &str) -> u16 {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(url)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("login request")
        .status()
        .as_u16()
}

/// Creates a staff user of `sites` through the API; returns its id.
async fn create_staff(central: &TestCentral, token: &str, username: &str, sites: &[Uuid]) -> Uuid {
    let body = central
        .post_json(
            token,
            "/v1/users",
            &json!({ "username": username, "password": STAFF_PASSWORD, "role": "staff", "site_ids": sites }),
            201,
        )
        .await;
    body["id"].as_str().expect("id").parse().expect("uuid")
}

/// The id of the user called `username`, from `GET /v1/users`.
async fn user_id(central: &TestCentral, token: &str, username: &str) -> Uuid {
    user_view(central, token, username).await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid")
}

async fn user_view(central: &TestCentral, token: &str, username: &str) -> Value {
    let users = central.get_json(token, "/v1/users", 200).await;
    users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == username)
        .unwrap_or_else(|| panic!("no user {username} in {users}"))
        .clone()
}

async fn audit_entries(central: &TestCentral, token: &str) -> Vec<Value> {
    let audit = central.get_json(token, "/v1/audit", 200).await;
    audit["entries"].as_array().expect("entries").clone()
}

fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("problem has no errors array: {problem}"))
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PATCH /v1/sites/{site_id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_changes_allowed_networks_and_get_shows_it() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let before = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;

    let response = patch_site(
        &central,
        &owner,
        site,
        &json!({ "allowed_networks": ["10.1.0.0/16", "2001:db8::/32"] }),
    )
    .await;
    let updated = expect_status(response, 200).await;
    assert_eq!(
        updated["allowed_networks"],
        json!(["10.1.0.0/16", "2001:db8::/32"]),
        "{updated}"
    );
    let after = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;
    assert_eq!(after, updated, "GET shows what PATCH answered");
    for unchanged in ["id", "name", "timezone", "created_at"] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged}: {after}");
    }

    // Name and timezone change too; fields left out keep their value.
    let response = patch_site(
        &central,
        &owner,
        site,
        &json!({ "name": "  Leeds North  ", "timezone": "America/New_York" }),
    )
    .await;
    expect_status(response, 200).await;
    let after = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;
    assert_eq!(after["name"], "Leeds North", "{after}");
    assert_eq!(after["timezone"], "America/New_York", "{after}");
    assert_eq!(
        after["allowed_networks"],
        json!(["10.1.0.0/16", "2001:db8::/32"])
    );
    let listed = central.get_json(&owner, "/v1/sites", 200).await;
    assert_eq!(listed["sites"][0], after, "{listed}");
}

#[tokio::test]
async fn patch_with_invalid_cidr_or_timezone_is_422_and_nothing_changes() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let before = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;

    for (body, field) in [
        (
            json!({ "allowed_networks": ["10.0.0.0/8", "10.0.0.0/33"] }),
            "allowed_networks[1]",
        ),
        (json!({ "timezone": "Mars/Olympus_Mons" }), "timezone"),
        // One bad field spoils the whole patch: the valid name is not applied either.
        (
            json!({ "name": "Leeds North", "timezone": "Nowhere" }),
            "timezone",
        ),
        (json!({ "name": "   " }), "name"),
        (json!({ "colour": "red" }), "colour"),
        (json!({}), "body"),
    ] {
        let response = patch_site(&central, &owner, site, &body).await;
        let problem = expect_problem(response, 422).await;
        assert!(
            error_fields(&problem).contains(&field.to_string()),
            "{body} -> {problem}"
        );
    }

    let after = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;
    assert_eq!(after, before, "a refused patch changes nothing");
    assert!(
        !audit_entries(&central, &owner)
            .await
            .iter()
            .any(|e| e["action"] == "site.update"),
        "a refused patch is not audited as an update"
    );
}

#[tokio::test]
async fn patch_needs_manage_sites_and_a_known_site() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    create_user(
        &central.settings(),
        "mia",
        "manager password 1",
        Role::Manager,
        vec![site],
    )
    .await;
    let manager = central.login("mia", "manager password 1").await;

    let response = patch_site(
        &central,
        &manager,
        site,
        &json!({ "allowed_networks": ["0.0.0.0/0"] }),
    )
    .await;
    expect_problem(response, 403).await;
    let unknown = Uuid::now_v7();
    let response = patch_site(&central, &owner, unknown, &json!({ "name": "Ghost" })).await;
    expect_problem(response, 404).await;

    let after = central
        .get_json(&owner, &format!("/v1/sites/{site}"), 200)
        .await;
    assert_eq!(after["allowed_networks"], json!(["127.0.0.0/8", "::1/128"]));
}

// ---------------------------------------------------------------------------------------------
// DELETE /v1/users/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_disabled_staff_user_cannot_log_in() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let sam = create_staff(&central, &owner, "sam", &[site]).await;
    // Working credentials first, so the 401 below is the disable's doing.
    central.login("sam", STAFF_PASSWORD).await;

    expect_status(disable(&central, &owner, sam).await, 204).await;
    let problem = expect_problem(
        central
            .request(Method::POST, "/v1/auth/login")
            .json(&json!({ "username": "sam", "password": STAFF_PASSWORD }))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert!(
        !problem.to_string().contains("disabled"),
        "the refusal does not reveal that the account exists: {problem}"
    );

    // Idempotent: disabling again is 204 and keeps the first time; the row stays listed.
    let first = user_view(&central, &owner, "sam").await;
    assert!(first["disabled_at"].is_string(), "{first}");
    expect_status(disable(&central, &owner, sam).await, 204).await;
    let again = user_view(&central, &owner, "sam").await;
    assert_eq!(again["disabled_at"], first["disabled_at"]);
    assert_eq!(again["site_ids"], json!([site.to_string()]));

    expect_problem(disable(&central, &owner, Uuid::now_v7()).await, 404).await;
    let response = central
        .request(Method::DELETE, "/v1/users/not-a-uuid")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    expect_problem(response, 400).await;
}

#[tokio::test]
async fn disabling_yourself_is_422() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let me = user_id(&central, &owner, OWNER).await;
    let problem = expect_problem(disable(&central, &owner, me).await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("own"),
        "{problem}"
    );
    assert!(user_view(&central, &owner, OWNER).await["disabled_at"].is_null());
    central.login(OWNER, OWNER_PASSWORD).await;
}

#[tokio::test]
async fn an_admin_cannot_disable_an_owner_but_an_owner_can() {
    let central = TestCentral::start().await;
    create_user(
        &central.settings(),
        "ada",
        "admin password 12",
        Role::Admin,
        vec![],
    )
    .await;
    create_user(
        &central.settings(),
        "olga",
        "owner password 12",
        Role::Owner,
        vec![],
    )
    .await;
    let owner = central.owner_token().await;
    let admin = central.login("ada", "admin password 12").await;
    let olga = user_id(&central, &owner, "olga").await;

    let problem = expect_problem(disable(&central, &admin, olga).await, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("owner"),
        "{problem}"
    );
    assert!(user_view(&central, &owner, "olga").await["disabled_at"].is_null());
    central.login("olga", "owner password 12").await;

    // An admin may disable staff, and an admin cannot disable themselves either.
    let site = central.create_site(&owner, "Leeds").await;
    let sam = create_staff(&central, &owner, "sam", &[site]).await;
    expect_status(disable(&central, &admin, sam).await, 204).await;
    let ada = user_id(&central, &owner, "ada").await;
    expect_problem(disable(&central, &admin, ada).await, 422).await;

    // Another owner can.
    expect_status(disable(&central, &owner, olga).await, 204).await;
    assert_eq!(
        login_status(central.url("/v1/auth/login"), "olga", "owner password 12").await,
        401
    );
}

#[tokio::test]
async fn disabling_a_user_outside_hq_networks_is_403() {
    let central = TestCentral::start_with(|settings| {
        settings.hq_networks = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    create_user(
        &central.settings(),
        "sam",
        STAFF_PASSWORD,
        Role::Staff,
        vec![],
    )
    .await;
    let owner = central.owner_token().await;
    // Listing users is user management too, so look the id up in the store directly.
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("open store");
    let sam = store
        .user_by_username("sam")
        .await
        .unwrap()
        .expect("sam")
        .id;
    let problem = expect_problem(disable(&central, &owner, sam).await, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("network"),
        "{problem}"
    );
    let sam = store.get_user(sam).await.unwrap().expect("sam");
    assert_eq!(sam.disabled_at, None);
}

// ---------------------------------------------------------------------------------------------
// POST /v1/products/{id}/retire
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_retired_product_stays_listed_inactive_and_only_catalog_managers_retire() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    create_staff(&central, &owner, "sam", &[site]).await;
    let sam = central.login("sam", STAFF_PASSWORD).await;
    let product = central
        .post_json(
            &owner,
            "/v1/products",
            &json!({ "sku": "JUMP60", "name": "Jump 60", "kind": "pass", "price_cents": 1500, "duration_minutes": 60 }),
            201,
        )
        .await;
    let id = product["id"].as_str().unwrap();
    let path = format!("/v1/products/{id}/retire");

    let response = central
        .request(Method::POST, &path)
        .bearer_auth(&sam)
        .send()
        .await
        .unwrap();
    expect_problem(response, 403).await;
    let retired = central.post_json(&owner, &path, &json!({}), 200).await;
    assert_eq!(retired["active"], false, "{retired}");
    // Retiring it again answers the same and is not audited twice.
    let again = central.post_json(&owner, &path, &json!({}), 200).await;
    assert_eq!(again, retired);
    let listed = central.get_json(&owner, "/v1/products", 200).await;
    let listed: Vec<&Value> = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == id)
        .collect();
    assert_eq!(listed, vec![&retired]);
    let retirements = audit_entries(&central, &owner)
        .await
        .into_iter()
        .filter(|e| e["action"] == "product.retire" && e["target"] == id)
        .count();
    assert_eq!(retirements, 1);
    let unknown = format!("/v1/products/{}/retire", Uuid::now_v7());
    let response = central
        .request(Method::POST, &unknown)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    expect_problem(response, 404).await;
}

// ---------------------------------------------------------------------------------------------
// Reports, leaderboards and the customer lookup over pushed venue data
// ---------------------------------------------------------------------------------------------

/// Enrolls an edge credential for `site` (no edge runs: the test pushes as one).
async fn edge_key(central: &TestCentral, owner: &str, site: Uuid) -> String {
    let token = central.enrollment_token(owner, site).await;
    let response = central
        .request(Method::POST, "/v1/edge/enroll")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    expect_status(response, 200).await["api_key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Pushes `records` (entity, record) as the site's ops from `first_seq`; asserts none is refused.
async fn push_records(central: &TestCentral, key: &str, first_seq: i64, records: &[(&str, Value)]) {
    let ops: Vec<Value> = records
        .iter()
        .zip(first_seq..)
        .map(|((entity, data), seq)| {
            json!({
                "seq": seq,
                "op_id": Uuid::now_v7(),
                "entity": entity,
                "entity_id": data["id"],
                "kind": if *entity == "ledger_entry" { "ledger_append" } else { "upsert" },
                "data": data,
            })
        })
        .collect();
    let response = central
        .request(Method::POST, "/v1/sync/push")
        .header("X-Api-Key", key)
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    let answer = expect_status(response, 200).await;
    assert_eq!(answer["rejected"], json!([]), "{answer}");
}

fn customer_json(site: Uuid, first_name: &str, phone: &str) -> Value {
    json!({
        "id": Uuid::now_v7(), "first_name": first_name, "last_name": "Lee",
        "birth_date": "2012-01-01", "phone": phone, "email": null, "guardian_id": null,
        "home_site_id": site, "created_at": "2026-10-24T12:00:00Z",
    })
}

fn order_json(site: Uuid, product: Uuid, quantity: i64, unit: i64, at: &str) -> Value {
    json!({
        "id": Uuid::now_v7(), "site_id": site, "customer_id": null,
        "lines": [{ "product_id": product, "sku": "JUMP60", "name": "Jump 60", "kind": "pass",
                    "quantity": quantity, "unit_price_cents": unit, "total_cents": quantity * unit }],
        "tenders": [{ "kind": "card", "amount_cents": quantity * unit, "received_cents": null,
                      "change_cents": 0, "reference": "T1" }],
        "total_cents": quantity * unit, "change_cents": 0, "sold_by": "device:pos",
        "created_at": at,
    })
}

fn checkin_json(site: Uuid, customer: &Value, at: &str) -> Value {
    json!({
        "id": Uuid::now_v7(), "site_id": site, "customer_id": customer["id"], "wristband": "W-1",
        "product_id": Uuid::now_v7(), "order_id": Uuid::now_v7(), "ledger_entry_id": null,
        "starts_at": at, "ends_at": "2026-10-26T00:00:00Z", "created_at": at,
    })
}

#[tokio::test]
async fn reports_count_pushed_venue_data_by_the_sites_local_day() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    // Europe/London: 2026-10-25 is 25 hours long, 01:00 to 02:00 happening twice.
    let site = central.create_site(&owner, "Leeds").await;
    let key = edge_key(&central, &owner, site).await;
    let product = Uuid::now_v7();
    let ada = customer_json(site, "Ada", "+441130000001");
    let refunded = order_json(site, product, 2, 1500, "2026-10-24T22:59:00Z");
    let refund = json!({
        "id": Uuid::now_v7(), "order_id": refunded["id"], "site_id": site,
        "tenders": [{ "kind": "card", "amount_cents": 1000 }], "total_cents": 1000,
        "reason": "closed early", "refunded_by": "user:x", "created_at": "2026-10-25T09:00:00Z",
    });
    let debt = json!({
        "id": Uuid::now_v7(), "customer_id": ada["id"], "account": "stored_value", "delta": -250,
        "reason": "adjustment", "ref_id": null, "site_id": site, "created_at": "2026-10-25T09:00:00Z",
    });
    push_records(
        &central,
        &key,
        1,
        &[
            ("customer", ada.clone()),
            // 23:59 BST on the 24th, then 00:00 BST on the 25th: one minute apart, two days.
            ("order", refunded.clone()),
            (
                "order",
                order_json(site, product, 1, 1500, "2026-10-24T23:00:00Z"),
            ),
            ("refund", refund),
            ("ledger_entry", debt),
            // 01:30 BST, then 01:30 GMT: the same wall-clock hour, twice.
            ("checkin", checkin_json(site, &ada, "2026-10-25T00:30:00Z")),
            ("checkin", checkin_json(site, &ada, "2026-10-25T01:30:00Z")),
        ],
    )
    .await;

    let day = central
        .get_json(
            &owner,
            &format!("/v1/reports/daily?site_id={site}&date=2026-10-25"),
            200,
        )
        .await;
    for (field, value) in [
        ("orders", 1),
        ("gross_sales_cents", 1500),
        ("refunds_cents", 1000),
        ("revenue_cents", 500),
        ("checkins", 2),
    ] {
        assert_eq!(day[field], value, "{field}: {day}");
    }
    let before = central
        .get_json(
            &owner,
            &format!("/v1/reports/daily?site_id={site}&date=2026-10-24"),
            200,
        )
        .await;
    assert_eq!(
        (before["orders"].as_i64(), before["revenue_cents"].as_i64()),
        (Some(1), Some(3000))
    );

    let sales = central
        .get_json(
            &owner,
            &format!("/v1/reports/sales-by-product?site_id={site}&date=2026-10-25"),
            200,
        )
        .await;
    assert_eq!(
        sales["products"],
        json!([{ "product_id": product, "sku": "JUMP60", "name": "Jump 60", "quantity": 1, "sales_cents": 1500 }]),
        "{sales}"
    );

    let hours = central
        .get_json(
            &owner,
            &format!("/v1/reports/checkins-by-hour?site_id={site}&date=2026-10-25"),
            200,
        )
        .await;
    let hours = hours["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 25);
    let labels: Vec<(String, String, i64)> = hours[..4]
        .iter()
        .map(|h| {
            (
                h["hour"].as_str().unwrap().to_string(),
                h["utc_offset"].as_str().unwrap().to_string(),
                h["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let label = |hour: &str, offset: &str, count| (hour.to_string(), offset.to_string(), count);
    assert_eq!(
        labels,
        vec![
            label("00:00", "+01:00", 0),
            label("01:00", "+01:00", 1),
            label("01:00", "+00:00", 1),
            label("02:00", "+00:00", 0),
        ]
    );
    assert_eq!(hours[24]["hour"], "23:00");
    let spring = central
        .get_json(
            &owner,
            &format!("/v1/reports/checkins-by-hour?site_id={site}&date=2026-03-29"),
            200,
        )
        .await;
    assert_eq!(spring["hours"].as_array().unwrap().len(), 23);

    let negative = central
        .get_json(&owner, "/v1/reports/negative-balances", 200)
        .await;
    assert_eq!(
        negative["balances"],
        json!([{ "customer_id": ada["id"], "first_name": "Ada", "last_name": "Lee",
                 "account": "stored_value", "balance": -250 }])
    );
    let found = central
        .get_json(&owner, "/v1/customers?phone=%2B44%20113%200000001", 200)
        .await;
    let customers = found["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 1, "{found}");
    assert_eq!(customers[0]["id"], ada["id"]);
    assert_eq!(
        customers[0]["balances"],
        json!([{ "account": "stored_value", "balance": -250 },
               { "account": "arcade_credits", "balance": 0 },
               { "account": "visits", "balance": 0 }])
    );
    let found = central
        .get_json(&owner, "/v1/customers?name=ada%20l", 200)
        .await;
    assert_eq!(found["customers"].as_array().unwrap().len(), 1, "{found}");
    let response = central
        .request(Method::GET, "/v1/customers?phone=1&name=ada")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    expect_problem(response, 422).await;
}

#[tokio::test]
async fn a_site_scoped_manager_reads_only_their_own_sites_reports() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let leeds = central.create_site(&owner, "Leeds").await;
    let york = central.create_site(&owner, "York").await;
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({ "username": "mia", "password": STAFF_PASSWORD, "role": "manager", "site_ids": [leeds] }),
            201,
        )
        .await;
    let mia = central.login("mia", STAFF_PASSWORD).await;
    create_staff(&central, &owner, "sam", &[leeds]).await;
    let sam = central.login("sam", STAFF_PASSWORD).await;

    for report in ["daily", "sales-by-product", "checkins-by-hour"] {
        let path = |site: Uuid| format!("/v1/reports/{report}?site_id={site}&date=2026-05-01");
        central.get_json(&mia, &path(leeds), 200).await;
        let response = central
            .request(Method::GET, &path(york))
            .bearer_auth(&mia)
            .send()
            .await
            .unwrap();
        expect_problem(response, 403).await;
        // Staff do not read reports at all.
        let response = central
            .request(Method::GET, &path(leeds))
            .bearer_auth(&sam)
            .send()
            .await
            .unwrap();
        expect_problem(response, 403).await;
    }
    central
        .get_json(&mia, "/v1/reports/negative-balances", 200)
        .await;
    let response = central
        .request(Method::GET, "/v1/reports/negative-balances")
        .bearer_auth(&sam)
        .send()
        .await
        .unwrap();
    expect_problem(response, 403).await;
}

#[tokio::test]
async fn leaderboards_rank_pushed_scores_and_an_unknown_game_is_not_found() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let key = edge_key(&central, &owner, site).await;
    let game = central
        .post_json(
            &owner,
            "/v1/games",
            &json!({ "name": "Dodgeball", "score_order": "lowest_wins" }),
            201,
        )
        .await;
    let (ann, bob) = (
        customer_json(site, "Ann", "+441130000002"),
        customer_json(site, "Bob", "+441130000003"),
    );
    let score = |customer: &Value, score: i64, at: &str| {
        json!({
            "id": Uuid::now_v7(), "site_id": site, "game_id": game["id"],
            "customer_id": customer["id"], "score": score, "device_id": null, "created_at": at,
        })
    };
    push_records(
        &central,
        &key,
        1,
        &[
            ("customer", ann.clone()),
            ("customer", bob.clone()),
            ("score", score(&ann, 30, "2026-01-01T10:00:00Z")),
            ("score", score(&bob, 20, "2026-01-01T10:05:00Z")),
            ("score", score(&ann, 10, "2026-01-01T10:10:00Z")),
        ],
    )
    .await;

    let board = central
        .get_json(
            &owner,
            &format!(
                "/v1/leaderboards/{}?period=all",
                game["id"].as_str().unwrap()
            ),
            200,
        )
        .await;
    let entries: Vec<(i64, &str, i64)> = board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rank"].as_i64().unwrap(),
                e["first_name"].as_str().unwrap(),
                e["score"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(entries, vec![(1, "Ann", 10), (2, "Bob", 20)], "{board}");
    assert_eq!(board["entries"][0]["site_id"], site.to_string());
    assert_eq!(board["entries"][0]["at"], "2026-01-01T10:10:00Z");
    // Scores from 2026 are not this week's.
    let week = central
        .get_json(
            &owner,
            &format!(
                "/v1/leaderboards/{}?period=week&site_id={site}",
                game["id"].as_str().unwrap()
            ),
            200,
        )
        .await;
    assert_eq!(
        (
            week["period"].as_str(),
            week["entries"].as_array().map(Vec::len)
        ),
        (Some("week"), Some(0))
    );

    let response = central
        .request(Method::GET, &format!("/v1/leaderboards/{}", Uuid::now_v7()))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    expect_problem(response, 404).await;
    let response = central
        .request(
            Method::GET,
            &format!(
                "/v1/leaderboards/{}?period=month",
                game["id"].as_str().unwrap()
            ),
        )
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

// ---------------------------------------------------------------------------------------------
// Audit, OpenAPI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn site_updates_and_user_disables_are_audited() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let sam = create_staff(&central, &owner, "sam", &[site]).await;
    let response = patch_site(
        &central,
        &owner,
        site,
        &json!({ "allowed_networks": ["192.168.10.0/24"] }),
    )
    .await;
    expect_status(response, 200).await;
    expect_status(disable(&central, &owner, sam).await, 204).await;
    // A repeated disable changes nothing and is not audited again.
    expect_status(disable(&central, &owner, sam).await, 204).await;

    let entries = audit_entries(&central, &owner).await;
    for (action, target) in [("site.update", site), ("user.disable", sam)] {
        let matching: Vec<&Value> = entries.iter().filter(|e| e["action"] == action).collect();
        assert_eq!(matching.len(), 1, "{action}: {entries:?}");
        let entry = matching[0];
        assert_eq!(entry["actor_name"], OWNER, "{entry}");
        assert_eq!(entry["actor_kind"], "user", "{entry}");
        assert_eq!(entry["ip"], "127.0.0.1", "{entry}");
        assert_eq!(entry["target"], target.to_string(), "{entry}");
        assert_eq!(entry["site_id"], site.to_string(), "{entry}");
    }
    // Site-scoped audit reads see both too.
    let scoped = central
        .get_json(&owner, &format!("/v1/audit?site_id={site}"), 200)
        .await;
    let actions: Vec<&str> = scoped["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"site.update") && actions.contains(&"user.disable"),
        "{scoped}"
    );
}

#[tokio::test]
async fn openapi_lists_the_admin_operations() {
    let central = TestCentral::start().await;
    let response = central
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    let doc = expect_status(response, 200).await;
    assert!(
        doc["paths"]["/v1/sites/{site_id}"]["patch"].is_object(),
        "{doc}"
    );
    assert!(
        doc["paths"]["/v1/users/{id}"]["delete"]["responses"]["204"].is_object(),
        "{doc}"
    );
    for (path, method) in [
        ("/v1/products/{id}/retire", "post"),
        ("/v1/reports/sales-by-product", "get"),
        ("/v1/reports/checkins-by-hour", "get"),
        ("/v1/reports/negative-balances", "get"),
        ("/v1/leaderboards/{game_id}", "get"),
        ("/v1/customers", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path}: {doc}");
    }
}

// ---------------------------------------------------------------------------------------------
// What reaches the edge
// ---------------------------------------------------------------------------------------------

/// The site's allowed networks as the edge's replica holds them (what its `Auth` checks).
fn edge_site_networks(edge: &TestEdge, site: Uuid) -> Option<Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(
        edge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(1)).ok()?;
    let networks = aero_edge::replica::apply::site_networks(&conn, site).ok()??;
    Some(networks.iter().map(ToString::to_string).collect())
}

#[tokio::test]
async fn a_disabled_user_and_new_networks_reach_the_edge() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let sam = create_staff(&central, &owner, "sam", &[site]).await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start_with(&central.url(""), &token, |settings| {
        // This test polls the edge's login; keep the per-address login throttle out of the way.
        settings.limits.login_per_minute = 10_000;
    })
    .await;
    let edge_login = edge.url("/v1/auth/login");

    wait_until(
        "sam can log in at the edge",
        Duration::from_secs(20),
        || {
            let url = edge_login.clone();
            async move { login_status(url, "sam", STAFF_PASSWORD).await == 200 }
        },
    )
    .await;
    wait_until(
        "the edge holds the site's networks",
        Duration::from_secs(20),
        || async { edge_site_networks(&edge, site).is_some() },
    )
    .await;

    expect_status(disable(&central, &owner, sam).await, 204).await;
    let response = patch_site(
        &central,
        &owner,
        site,
        &json!({ "allowed_networks": ["10.42.0.0/16"] }),
    )
    .await;
    expect_status(response, 200).await;

    wait_until(
        "the edge refuses sam's login",
        Duration::from_secs(20),
        || {
            let url = edge_login.clone();
            async move { login_status(url, "sam", STAFF_PASSWORD).await == 401 }
        },
    )
    .await;
    wait_until(
        "the edge holds the new networks",
        Duration::from_secs(20),
        || async { edge_site_networks(&edge, site) == Some(vec!["10.42.0.0/16".to_string()]) },
    )
    .await;
}

// Field-level PATCH with ETag / If-Match

async fn patch_site_if_match(
    central: &TestCentral,
    token: &str,
    site: Uuid,
    if_match: &str,
    body: &Value,
) -> Response {
    central
        .request(Method::PATCH, &format!("/v1/sites/{site}"))
        .bearer_auth(token)
        .header("if-match", if_match)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// `GET path` as `token`: the body and its `ETag`.
async fn get_tagged(central: &TestCentral, token: &str, path: &str) -> (Value, String) {
    let response = central
        .request(Method::GET, path)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let etag = response
        .headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .expect("ascii")
        .to_string();
    (expect_status(response, 200).await, etag)
}

#[tokio::test]
async fn concurrent_patches_of_different_site_fields_both_land() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    for round in 0..5 {
        let name = format!("Leeds {round}");
        let networks = json!([format!("10.{round}.0.0/16")]);
        let (rename, rezone) = (
            json!({ "name": name }),
            json!({ "allowed_networks": networks }),
        );
        let (renamed, rezoned) = tokio::join!(
            patch_site(&central, &owner, site, &rename),
            patch_site(&central, &owner, site, &rezone),
        );
        expect_status(renamed, 200).await;
        expect_status(rezoned, 200).await;
        let stored = central
            .get_json(&owner, &format!("/v1/sites/{site}"), 200)
            .await;
        assert_eq!(stored["name"], name.as_str(), "round {round}: {stored}");
        assert_eq!(
            stored["allowed_networks"], networks,
            "round {round}: {stored}"
        );
    }
}

#[tokio::test]
async fn a_stale_if_match_is_412_problem_and_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let path = format!("/v1/sites/{site}");
    let (_, read) = get_tagged(&central, &owner, &path).await;

    // The tag just read admits the write, whose answer carries the new tag.
    let response = patch_site_if_match(
        &central,
        &owner,
        site,
        &read,
        &json!({ "name": "Leeds North" }),
    )
    .await;
    let written = response.headers()["etag"].to_str().unwrap().to_string();
    let body = expect_status(response, 200).await;
    assert_eq!(body["name"], "Leeds North");
    assert_ne!(written, read);
    let (stored, current) = get_tagged(&central, &owner, &path).await;
    assert_eq!(current, written);

    // An edit based on the first read is refused and writes nothing.
    let problem = expect_problem(
        patch_site_if_match(
            &central,
            &owner,
            site,
            &read,
            &json!({ "timezone": "Asia/Tokyo" }),
        )
        .await,
        412,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("changed"),
        "{problem}"
    );
    assert_eq!(
        get_tagged(&central, &owner, &path).await,
        (stored, current.clone())
    );

    // A weak tag never matches; a malformed one is a 400; `*` matches whatever is stored.
    expect_problem(
        patch_site_if_match(
            &central,
            &owner,
            site,
            &format!("W/{current}"),
            &json!({ "timezone": "Asia/Tokyo" }),
        )
        .await,
        412,
    )
    .await;
    expect_problem(
        patch_site_if_match(&central, &owner, site, "no-quotes", &json!({ "name": "X" })).await,
        400,
    )
    .await;
    let body = expect_status(
        patch_site_if_match(
            &central,
            &owner,
            site,
            "*",
            &json!({ "timezone": "Asia/Tokyo" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["timezone"], "Asia/Tokyo");
}

#[tokio::test]
async fn a_user_change_based_on_a_stale_read_is_412_and_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let other = central.create_site(&owner, "York").await;
    let id = create_staff(&central, &owner, "sam", &[site]).await;
    let path = format!("/v1/users/{id}");
    let (_, read) = get_tagged(&central, &owner, &path).await;

    let response = central
        .request(Method::PATCH, &path)
        .bearer_auth(&owner)
        .header("if-match", &read)
        .json(&json!({ "role": "manager" }))
        .send()
        .await
        .expect("request");
    let written = response.headers()["etag"].to_str().unwrap().to_string();
    expect_status(response, 200).await;
    assert_ne!(written, read);

    let response = central
        .request(Method::PATCH, &path)
        .bearer_auth(&owner)
        .header("if-match", &read)
        .json(&json!({ "site_ids": [other] }))
        .send()
        .await
        .expect("request");
    expect_problem(response, 412).await;
    let (user, current) = get_tagged(&central, &owner, &path).await;
    assert_eq!(current, written);
    assert_eq!(user["role"], "manager");
    assert_eq!(user["site_ids"], json!([site]));
}

#[tokio::test]
async fn cors_lets_an_admin_page_send_if_match_and_read_the_etag() {
    let origin = "https://admin.aerosports.example";
    let central = TestCentral::start_with(|settings| {
        settings.cors_origins = vec![origin.into()];
    })
    .await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let path = format!("/v1/sites/{site}");
    let preflight = central
        .request(Method::OPTIONS, &path)
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization,content-type,if-match",
        )
        .send()
        .await
        .expect("preflight");
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("if-match"), "{allowed}");
    let response = central
        .request(Method::GET, &path)
        .bearer_auth(&owner)
        .header("origin", origin)
        .send()
        .await
        .expect("get");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");
}

// A 422 names every field

#[tokio::test]
async fn a_body_with_several_bad_fields_is_one_422_naming_each_and_creates_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let before = central.get_json(&owner, "/v1/users", 200).await["users"]
        .as_array()
        .expect("users")
        .len();
    for (body, named) in [
        (
            json!({ "username": "kim", "password": 12, "role": "wizard", "site_ids": [] }),
            vec!["password", "role"],
        ),
        (json!({ "role": "staff" }), vec!["password", "username"]),
        (
            json!({ "username": "kim", "password": "long enough password", "role": "staff", "site_ids": ["x", "y"], "admin": true }),
            vec!["admin", "site_ids[0]", "site_ids[1]"],
        ),
    ] {
        let response = central
            .request(Method::POST, "/v1/users")
            .bearer_auth(&owner)
            .json(&body)
            .send()
            .await
            .expect("request");
        let problem = expect_problem(response, 422).await;
        let mut fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                assert!(e["message"].is_string(), "{problem}");
                e["field"].as_str().expect("field")
            })
            .collect();
        fields.sort();
        assert_eq!(fields, named, "{body}");
    }
    let after = central.get_json(&owner, "/v1/users", 200).await["users"]
        .as_array()
        .expect("users")
        .len();
    assert_eq!(after, before, "a refused body creates nothing");
}

//! HQ administration over real HTTP on loopback: editing a site (`PATCH /v1/sites/{site_id}`)
//! and disabling a staff user (`DELETE /v1/users/{id}`), including what reaches an edge.
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

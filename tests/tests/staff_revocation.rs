//! Revocation of people: disabling a user, changing a role or removing a site assignment
//! refuses the tokens issued before it within 5 s at central and, once replicated, at the edge.

use aero_central::store::Actor;
use aero_tests::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The bound SECURITY.md promises.
const REVOKED_WITHIN: Duration = Duration::from_secs(5);

const PASSWORD: &str = "a long venue password";

async fn create_staff(
    central: &TestCentral,
    owner: &str,
    username: &str,
    role: &str,
    sites: &[Uuid],
) -> Uuid {
    let body = central
        .post_json(
            owner,
            "/v1/users",
            &json!({ "username": username, "password": PASSWORD, "role": role, "site_ids": sites }),
            201,
        )
        .await;
    body["id"].as_str().expect("id").parse().expect("uuid")
}

async fn patch_user(central: &TestCentral, owner: &str, id: Uuid, body: &Value) -> Response {
    central
        .request(Method::PATCH, &format!("/v1/users/{id}"))
        .bearer_auth(owner)
        .json(body)
        .send()
        .await
        .expect("patch user")
}

async fn central_status(central: &TestCentral, token: &str, path: &str) -> u16 {
    central
        .request(Method::GET, path)
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn edge_login(edge: &TestEdge, username: &str) -> Response {
    edge.client
        .post(edge.url("/v1/auth/login"))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .expect("login at the edge")
}

/// Logs in at the edge once the account has replicated there; returns the token.
async fn edge_token(edge: &TestEdge, username: &str) -> String {
    wait_until(
        "the account at the edge",
        Duration::from_secs(20),
        || async { edge_login(edge, username).await.status() == 200 },
    )
    .await;
    let body = expect_status(edge_login(edge, username).await, 200).await;
    body["access_token"].as_str().expect("token").to_string()
}

async fn edge_status(edge: &TestEdge, token: &str) -> u16 {
    edge.client
        .get(edge.url("/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls until `check` holds and asserts it took less than [`REVOKED_WITHIN`] from `since`.
async fn refused_within<F, Fut>(what: &str, since: Instant, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(what, Duration::from_secs(20), check).await;
    let took = since.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < REVOKED_WITHIN, "{what} took {took:?}");
}

async fn venue() -> (TestCentral, String, Uuid, TestEdge) {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(&central, &token).await;
    (central, owner, site, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_user_is_refused_at_central_and_at_the_edge_within_5_s() {
    let (central, owner, site, edge) = venue().await;
    let id = create_staff(&central, &owner, "morgan", "manager", &[site]).await;
    let at_central = central.login("morgan", PASSWORD).await;
    let at_edge = edge_token(&edge, "morgan").await;
    let site_path = format!("/v1/sites/{site}");
    assert_eq!(central_status(&central, &at_central, &site_path).await, 200);
    assert_eq!(edge_status(&edge, &at_edge).await, 200);

    let disabling = Instant::now();
    let response = central
        .request(Method::DELETE, &format!("/v1/users/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("disable");
    expect_status(response, 204).await;
    refused_within(
        "the disabled user's token at central",
        disabling,
        || async { central_status(&central, &at_central, &site_path).await == 401 },
    )
    .await;
    refused_within(
        "the disabled user's token at the edge",
        disabling,
        || async { edge_status(&edge, &at_edge).await == 401 },
    )
    .await;
    let problem = expect_problem(
        central
            .request(Method::GET, &site_path)
            .bearer_auth(&at_central)
            .send()
            .await
            .expect("request"),
        401,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("revoked"),
        "{problem}"
    );
    expect_problem(edge_login(&edge, "morgan").await, 401).await;
    let response = central
        .request(Method::POST, "/v1/auth/login")
        .json(&json!({ "username": "morgan", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    expect_problem(response, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_written_by_another_instance_is_seen_within_5_s() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "York").await;
    let id = create_staff(&central, &owner, "riley", "manager", &[site]).await;
    let token = central.login("riley", PASSWORD).await;
    let site_path = format!("/v1/sites/{site}");
    assert_eq!(central_status(&central, &token, &site_path).await, 200);

    // Another instance on the same database: this one's cache only learns of it by expiry.
    let other = aero_central::open_store(&central.settings())
        .await
        .expect("open the store");
    let disabling = Instant::now();
    assert!(
        other
            .disable_user(&Actor::system("other-instance"), id, chrono::Utc::now())
            .await
            .expect("disable")
    );
    refused_within("a token revoked by another instance", disabling, || async {
        central_status(&central, &token, &site_path).await == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_change_demotes_the_user_within_5_s() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Hull").await;
    let id = create_staff(&central, &owner, "ada", "admin", &[]).await;
    let admin = central.login("ada", PASSWORD).await;
    assert_eq!(central_status(&central, &admin, "/v1/users").await, 200);

    let demoting = Instant::now();
    let body = expect_status(
        patch_user(
            &central,
            &owner,
            id,
            &json!({ "role": "manager", "site_ids": [site] }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["role"], "manager");
    assert_eq!(body["site_ids"], json!([site]));
    refused_within("the demoted admin's token", demoting, || async {
        central_status(&central, &admin, "/v1/users").await == 401
    })
    .await;

    // Logged in again, the user has what the new role allows and nothing more.
    let manager = central.login("ada", PASSWORD).await;
    expect_problem(
        central
            .request(Method::GET, "/v1/users")
            .bearer_auth(&manager)
            .send()
            .await
            .expect("request"),
        403,
    )
    .await;
    let site_path = format!("/v1/sites/{site}");
    assert_eq!(central_status(&central, &manager, &site_path).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_site_assignment_revokes_it_at_that_edge_within_5_s() {
    let (central, owner, site, edge) = venue().await;
    let other = central.create_site(&owner, "Bradford").await;
    let id = create_staff(&central, &owner, "sam", "staff", &[site, other]).await;
    let at_edge = edge_token(&edge, "sam").await;
    assert_eq!(edge_status(&edge, &at_edge).await, 200);

    let removing = Instant::now();
    let body = expect_status(
        patch_user(&central, &owner, id, &json!({ "site_ids": [other] })).await,
        200,
    )
    .await;
    assert_eq!(body["site_ids"], json!([other]));
    refused_within("the removed site's token at its edge", removing, || async {
        edge_status(&edge, &at_edge).await == 401
    })
    .await;
    expect_problem(edge_login(&edge, "sam").await, 401).await;
    // At central the account keeps the other site.
    let token = central.login("sam", PASSWORD).await;
    assert_eq!(
        central_status(&central, &token, &format!("/v1/sites/{other}")).await,
        200
    );
    assert_eq!(
        central_status(&central, &token, &format!("/v1/sites/{site}")).await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_user_change_is_refused_and_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Wakefield").await;
    let id = create_staff(&central, &owner, "kim", "staff", &[site]).await;
    let token = central.login("kim", PASSWORD).await;
    let site_path = format!("/v1/sites/{site}");

    for (body, field) in [
        (json!({ "site_ids": [] }), "site_ids"),
        (json!({ "role": "admin", "site_ids": [site] }), "site_ids"),
        (json!({ "site_ids": [Uuid::now_v7()] }), "site_ids[0]"),
        (json!({ "password": "short" }), "password"),
        (json!({}), "body"),
    ] {
        let problem = expect_problem(patch_user(&central, &owner, id, &body).await, 422).await;
        assert!(
            problem["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .any(|e| e["field"] == field),
            "{body} should name {field}: {problem}"
        );
    }
    // Nothing changed: the token issued before is still good, the account as it was.
    assert_eq!(central_status(&central, &token, &site_path).await, 200);
    let user = central
        .get_json(&owner, &format!("/v1/users/{id}"), 200)
        .await;
    assert_eq!(user["role"], "staff");
    assert_eq!(user["site_ids"], json!([site]));

    // Nobody changes their own role; only an owner makes an owner.
    let owner_id = central.get_json(&owner, "/v1/users", 200).await["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == aero_tests::OWNER)
        .expect("the owner")["id"]
        .as_str()
        .expect("id")
        .parse::<Uuid>()
        .expect("uuid");
    expect_problem(
        patch_user(&central, &owner, owner_id, &json!({ "role": "admin" })).await,
        422,
    )
    .await;
    create_staff(&central, &owner, "alex", "admin", &[]).await;
    let admin = central.login("alex", PASSWORD).await;
    expect_problem(
        patch_user(
            &central,
            &admin,
            id,
            &json!({ "role": "owner", "site_ids": [] }),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(central_status(&central, &token, &site_path).await, 200);
}

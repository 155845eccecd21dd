//! Central behind a reverse proxy, over real HTTP on loopback: the test client is the proxy
//! (its requests come from 127.0.0.1) and names the clients it forwards in `X-Forwarded-For` or
//! `Forwarded`. Those headers count only when `trusted_proxies` holds the peer; the client is
//! then the rightmost untrusted address, and the login throttle, the failed-authentication
//! throttle, the HQ-network check and the audit log all see it.

use aero_shared::auth::extract::API_KEY_HEADER;
use aero_tests::{OWNER, OWNER_PASSWORD, TestCentral, expect_problem, expect_status};
use reqwest::{Method, Response};
use serde_json::{Value, json};

const CLIENT_A: &str = "203.0.113.9";
const CLIENT_B: &str = "198.51.100.7";

fn behind_loopback_proxy(settings: &mut aero_central::config::Settings) {
    settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
}

async fn login_as(central: &TestCentral, forwarded_for: &str, password: &str) -> Response {
    central
        .request(Method::POST, "/v1/auth/login")
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "username": OWNER, "password": password }))
        .send()
        .await
        .expect("login request")
}

/// A sensitive operation (creating a site) sent with one forwarding header.
async fn create_site_via(
    central: &TestCentral,
    token: &str,
    header: (&str, &str),
    name: &str,
) -> Response {
    central
        .request(Method::POST, "/v1/sites")
        .bearer_auth(token)
        .header(header.0, header.1)
        .json(&json!({ "name": name, "timezone": "Europe/London", "allowed_networks": [] }))
        .send()
        .await
        .expect("request")
}

async fn site_creations(central: &TestCentral, token: &str) -> Vec<Value> {
    let audit = central.get_json(token, "/v1/audit", 200).await;
    audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "site.create")
        .cloned()
        .collect()
}

fn retry_after(response: &Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_headers_change_nothing() {
    let central = TestCentral::start_with(|settings| {
        settings.limits.login_per_minute = 2;
        settings.hq_networks = vec![format!("{CLIENT_A}/32").parse().unwrap()];
    })
    .await;
    // The login throttle counts the loopback peer, whatever client is claimed.
    for claimed in [CLIENT_A, CLIENT_B] {
        expect_problem(login_as(&central, claimed, "wrong password!!").await, 401).await;
    }
    expect_problem(login_as(&central, "192.0.2.1", OWNER_PASSWORD).await, 429).await;

    // Claiming an HQ address does not pass the HQ-network check.
    let central = TestCentral::start_with(|settings| {
        settings.hq_networks = vec![format!("{CLIENT_A}/32").parse().unwrap()];
    })
    .await;
    let owner = central.owner_token().await;
    for header in [
        ("x-forwarded-for", CLIENT_A),
        ("forwarded", "for=203.0.113.9"),
    ] {
        expect_problem(
            create_site_via(&central, &owner, header, "Leeds").await,
            403,
        )
        .await;
    }
}

#[tokio::test]
async fn the_audit_log_records_the_peer_without_and_the_forwarded_client_with_trust() {
    let ignoring = TestCentral::start().await;
    let owner = ignoring.owner_token().await;
    let header = ("x-forwarded-for", CLIENT_A);
    expect_status(
        create_site_via(&ignoring, &owner, header, "Leeds").await,
        201,
    )
    .await;
    let entries = site_creations(&ignoring, &owner).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["ip"], "127.0.0.1", "{entries:?}");

    let trusting = TestCentral::start_with(|settings| {
        behind_loopback_proxy(settings);
        settings.hq_networks = vec!["203.0.113.0/24".parse().unwrap()];
    })
    .await;
    let owner = trusting.owner_token().await;
    expect_status(
        create_site_via(&trusting, &owner, header, "Leeds").await,
        201,
    )
    .await;
    let entries = site_creations(&trusting, &owner).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["ip"], CLIENT_A, "{entries:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_login_throttle_counts_each_forwarded_client() {
    let central = TestCentral::start_with(|settings| {
        behind_loopback_proxy(settings);
        settings.limits.login_per_minute = 2;
    })
    .await;
    for _ in 0..2 {
        expect_problem(login_as(&central, CLIENT_A, "wrong password!!").await, 401).await;
    }
    let locked = login_as(&central, CLIENT_A, OWNER_PASSWORD).await;
    assert!(retry_after(&locked) >= 1);
    expect_problem(locked, 429).await;
    // Another client behind the same proxy is not locked out with it.
    expect_status(login_as(&central, CLIENT_B, OWNER_PASSWORD).await, 200).await;
    // A client claiming to be A in front of B is B, the address the proxy itself saw.
    let chain = format!("{CLIENT_A}, {CLIENT_B}");
    expect_status(login_as(&central, &chain, OWNER_PASSWORD).await, 200).await;
}

#[tokio::test]
async fn the_hq_network_check_uses_the_rightmost_untrusted_forwarded_address() {
    let central = TestCentral::start_with(|settings| {
        behind_loopback_proxy(settings);
        settings.hq_networks = vec!["203.0.113.0/24".parse().unwrap()];
    })
    .await;
    let owner = central.owner_token().await;
    for (i, header) in [
        ("x-forwarded-for", CLIENT_A),
        ("forwarded", "for=203.0.113.9;proto=https"),
        // A load balancer (trusted) between the client and the proxy is skipped.
        ("x-forwarded-for", "203.0.113.9, 127.0.0.5"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = create_site_via(&central, &owner, header, &format!("Site {i}")).await;
        expect_status(response, 201).await;
    }
    for header in [
        ("x-forwarded-for", CLIENT_B),
        // Spoofing the left of the chain does not make B an HQ address.
        ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
        ("forwarded", "for=203.0.113.9, for=198.51.100.7"),
    ] {
        let response = create_site_via(&central, &owner, header, "Refused").await;
        let problem = expect_problem(response, 403).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("networks"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn failed_api_keys_lock_out_one_forwarded_client_and_not_another() {
    let central = TestCentral::start_with(|settings| {
        behind_loopback_proxy(settings);
        settings.limits.failed_auth_burst = 3;
        settings.limits.failed_auth_per_minute = 1;
    })
    .await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let (_, key) = central.create_device(&owner, site, "kiosk").await;
    let with_key = |client: &'static str, key: String| {
        central
            .request(Method::GET, "/v1/products")
            .header("x-forwarded-for", client)
            .header(API_KEY_HEADER, key)
            .send()
    };
    expect_status(with_key(CLIENT_B, key.clone()).await.unwrap(), 200).await;
    for _ in 0..3 {
        let response = with_key(CLIENT_A, "guessed-key".into()).await.unwrap();
        expect_problem(response, 401).await;
    }
    // Locked out: refused before any lookup, the right key as well.
    for guess in ["guessed-key".to_string(), key.clone()] {
        let response = with_key(CLIENT_A, guess).await.unwrap();
        assert!((1..=60).contains(&retry_after(&response)));
        expect_problem(response, 429).await;
    }
    // A bad token from the locked-out client is refused the same way.
    let response = central
        .request(Method::GET, "/v1/sites")
        .header("x-forwarded-for", CLIENT_A)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    expect_problem(response, 429).await;
    // Another client behind the same proxy authenticates normally.
    expect_status(with_key(CLIENT_B, key).await.unwrap(), 200).await;
    let response = central
        .request(Method::GET, "/v1/sites")
        .header("x-forwarded-for", CLIENT_B)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    expect_status(response, 200).await;
}

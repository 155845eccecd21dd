//! The edge behind a reverse proxy on the venue LAN (a TLS terminator in front of the box), over
//! real HTTP on loopback: the test client is the proxy (its requests come from 127.0.0.1) and
//! names the venue machine it forwards in `X-Forwarded-For`. The header counts only when
//! `trusted_proxies` holds the peer; the client is then the rightmost untrusted address, and the
//! site's network rule for sensitive flows and the failed-authentication throttle both see it.

use aero_shared::auth::principal::Role;
use aero_tests::{TestCentral, TestEdge, create_user, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// The manager's desk on the venue LAN: the venue's only allowed network.
const DESK: &str = "10.20.30.40";
/// Another machine on the LAN.
const OTHER: &str = "10.20.31.7";
const MANAGER: &str = "proxyford-manager";
const MANAGER_PASSWORD: &str = "a long manager password";

/// A venue whose sensitive flows are allowed only from [`DESK`], served by an edge configured
/// by `configure`, with one registered customer and a tablet key.
struct Venue {
    _central: TestCentral,
    edge: TestEdge,
    tablet: String,
    customer: String,
}

impl Venue {
    async fn open(configure: impl FnOnce(&mut aero_edge::config::Settings)) -> Self {
        let central = TestCentral::start().await;
        let owner = central.owner_token().await;
        let site = central
            .create_site_with_networks(&owner, "Proxyford", &[&format!("{DESK}/32")])
            .await;
        create_user(
            &central.settings(),
            MANAGER,
            MANAGER_PASSWORD,
            Role::Manager,
            vec![site],
        )
        .await;
        let (_, tablet) = central.create_device(&owner, site, "tablet").await;
        let token = central.enrollment_token(&owner, site).await;
        let edge = TestEdge::start_with(&central.url(""), &token, configure).await;
        // Until the key replicates it is unknown, and each refusal spends the asking address's
        // failed-authentication budget: every poll names a fresh address (when the proxy is
        // trusted) so the addresses the tests use start with theirs whole.
        let poll = std::cell::Cell::new(0u32);
        wait_until(
            "the edge to know the tablet",
            Duration::from_secs(20),
            || {
                poll.set(poll.get() + 1);
                let client = format!("10.99.{}.{}", poll.get() / 250, poll.get() % 250 + 1);
                let request = edge
                    .request(Method::GET, "/v1/status", &tablet)
                    .header("x-forwarded-for", client)
                    .send();
                async move { request.await.is_ok_and(|r| r.status() == 200) }
            },
        )
        .await;
        let registered = edge
            .request(Method::POST, "/v1/customers", &tablet)
            .json(&json!({ "first_name": "Ada", "last_name": "Jumper",
                           "birth_date": "1990-01-02", "phone": "+447700900701" }))
            .send()
            .await
            .expect("register");
        let customer = expect_status(registered, 201).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        Self {
            _central: central,
            edge,
            tablet,
            customer,
        }
    }

    /// Signs the manager in at the edge, forwarded for `client`.
    async fn manager_token(&self, client: &str) -> String {
        let response = self
            .edge
            .client
            .post(self.edge.url("/v1/auth/login"))
            .header("x-forwarded-for", client)
            .json(&json!({ "username": MANAGER, "password": MANAGER_PASSWORD }))
            .send()
            .await
            .expect("login");
        expect_status(response, 200).await["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// A goodwill credit (a sensitive flow) by the manager, forwarded for `client` when set.
    async fn adjust_from(&self, token: &str, client: Option<&str>) -> Response {
        let mut request = self
            .edge
            .client
            .post(
                self.edge
                    .url(&format!("/v1/customers/{}/balances/adjust", self.customer)),
            )
            .bearer_auth(token)
            .json(&json!({ "account": "arcade_credits", "delta": 5, "reason": "goodwill" }));
        if let Some(client) = client {
            request = request.header("x-forwarded-for", client);
        }
        request.send().await.expect("adjust")
    }

    /// `GET /v1/status` with `key`, forwarded for `client`; the status code.
    async fn status_with_key(&self, key: &str, client: &str) -> u16 {
        self.edge
            .request(Method::GET, "/v1/status", key)
            .header("x-forwarded-for", client)
            .send()
            .await
            .expect("status")
            .status()
            .as_u16()
    }
}

async fn assert_network_refusal(response: Response, what: &str) {
    let problem = expect_problem(response, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("network")),
        "{what}: {problem}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_sensitive_flow_is_allowed_only_for_the_forwarded_desk() {
    let venue = Venue::open(|settings| {
        settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let token = venue.manager_token(DESK).await;
    expect_status(venue.adjust_from(&token, Some(DESK)).await, 201).await;
    // A second trusted hop to the right is skipped; the desk is still the client.
    let through_two = format!("{DESK}, 127.0.0.2");
    expect_status(venue.adjust_from(&token, Some(&through_two)).await, 201).await;
    // The same token from another machine is refused.
    assert_network_refusal(venue.adjust_from(&token, Some(OTHER)).await, "other").await;
    // Claiming the desk's address to the left of the real one changes nothing: the rightmost
    // untrusted address is the client.
    let spoofed = format!("{DESK}, {OTHER}");
    assert_network_refusal(venue.adjust_from(&token, Some(&spoofed)).await, "spoofed").await;
    // The proxy itself is not the desk.
    assert_network_refusal(venue.adjust_from(&token, None).await, "proxy").await;
}

#[tokio::test]
async fn without_trusted_proxies_the_edge_ignores_forwarded_headers() {
    let venue = Venue::open(|_| {}).await;
    let token = venue.manager_token(DESK).await;
    // The peer (127.0.0.1) is the client whatever the header claims.
    assert_network_refusal(venue.adjust_from(&token, Some(DESK)).await, "claimed desk").await;
}

#[tokio::test]
async fn failed_keys_are_throttled_per_forwarded_client_not_for_the_whole_venue() {
    let venue = Venue::open(|settings| {
        settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        settings.limits.failed_auth_per_minute = 3;
        settings.limits.failed_auth_burst = 3;
    })
    .await;
    let wrong_key = format!("ak_{}", Uuid::now_v7().simple());
    let mut throttled = None;
    for attempt in 1..=10 {
        let status = venue.status_with_key(&wrong_key, OTHER).await;
        if status == 429 {
            throttled = Some(attempt);
            break;
        }
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let throttled = throttled.expect("bad keys from one client end in 429");
    assert!(throttled <= 5, "throttled only at attempt {throttled}");
    // That address is refused even with a good key until its budget refills...
    assert_eq!(venue.status_with_key(&venue.tablet, OTHER).await, 429);
    // ...while another machine behind the same proxy is served.
    assert_eq!(venue.status_with_key(&venue.tablet, DESK).await, 200);
}

//! OWASP API2:2023 (broken authentication): tampered, expired and wrong-audience staff tokens and
//! tampered device keys are refused with 401 at both services, and guessing passwords or keys
//! from one address is throttled with 429 before the right credential is even looked at.

use aero_shared::auth::jwt::{JwtKeys, StaffClaims, StaffIdentity};
use aero_tests::venue::{MANAGER_PASSWORD, Venue};
use aero_tests::{OWNER, OWNER_PASSWORD, TestCentral, expect_problem, expect_status};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

/// The claims inside a token, read without verifying it (as any holder of the token can).
fn claims_of(token: &str) -> StaffClaims {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("staff claims")
}

fn identity(claims: &StaffClaims) -> StaffIdentity {
    StaffIdentity {
        sub: claims.sub,
        username: claims.username.clone(),
        role: claims.role.clone(),
        sites: claims.sites.clone(),
        version: claims.ver,
    }
}

/// A service's JWT signing secret, read from its data directory.
fn secret_in(dir: &std::path::Path) -> SecretString {
    let text = std::fs::read_to_string(dir.join("jwt-secret")).expect("jwt-secret");
    SecretString::from(text.trim().to_string())
}

/// Replaces the character at `at` with a different one of the same alphabet.
fn flip(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

async fn edge_get(venue: &Venue, path: &str, token: &str) -> Response {
    venue
        .edge
        .client
        .get(venue.edge.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn central_get(central: &TestCentral, path: &str, token: &str) -> Response {
    central
        .request(Method::GET, path)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn tampered_expired_and_wrong_audience_tokens_are_refused() {
    let venue = Venue::open().await;
    let manager = venue.manager.clone();
    let claims = claims_of(&manager);
    let edge_secret = secret_in(venue.edge.data_dir.path());
    let edge_keys = |ttl_minutes| {
        JwtKeys::new(
            &edge_secret,
            aero_edge::JWT_AUDIENCE,
            aero_edge::JWT_AUDIENCE,
            chrono::Duration::minutes(ttl_minutes),
        )
    };

    // Control: the edge's own token, and one signed with its secret and the same claims, work;
    // so each refusal below is due to the one thing that differs.
    expect_status(edge_get(&venue, "/v1/status", &manager).await, 200).await;
    let (fresh, _) = edge_keys(60)
        .issue(identity(&claims), chrono::Utc::now())
        .expect("sign");
    expect_status(edge_get(&venue, "/v1/status", &fresh).await, 200).await;

    // Tampered: the payload promoted to owner under the original signature, and a flipped
    // signature character.
    let [header, _, signature] =
        <[&str; 3]>::try_from(manager.split('.').collect::<Vec<_>>()).expect("three parts");
    let mut promoted = serde_json::to_value(&claims).expect("claims json");
    promoted["role"] = json!("owner");
    let promoted = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(promoted.to_string())
    );
    let resigned = format!(
        "{}.{}",
        manager.rsplit_once('.').expect("signature").0,
        flip(signature, 3)
    );
    // Expired: signed with the edge's secret, issued two hours ago for an hour.
    let (expired, _) = edge_keys(60)
        .issue(
            identity(&claims),
            chrono::Utc::now() - chrono::Duration::hours(2),
        )
        .expect("sign");
    // Not yet valid: issued an hour from now.
    let (future, _) = edge_keys(60)
        .issue(
            identity(&claims),
            chrono::Utc::now() + chrono::Duration::hours(1),
        )
        .expect("sign");
    // Wrong audience: the edge's secret, but a token meant for central.
    let (for_central, _) = JwtKeys::new(
        &edge_secret,
        aero_edge::JWT_AUDIENCE,
        aero_central::JWT_AUDIENCE,
        chrono::Duration::minutes(60),
    )
    .issue(identity(&claims), chrono::Utc::now())
    .expect("sign");
    // A real token central issued to the same manager is for central only.
    let central_token = venue.central.login("morgan", MANAGER_PASSWORD).await;
    for (what, token) in [
        ("payload promoted to owner", &promoted),
        ("signature flipped", &resigned),
        ("expired", &expired),
        ("not yet valid", &future),
        ("audience aero-central", &for_central),
        ("central's own token", &central_token),
    ] {
        let response = edge_get(&venue, "/v1/status", token).await;
        assert_eq!(response.status(), 401, "edge accepted a token: {what}");
        expect_problem(response, 401).await;
    }

    // At central: the edge's token, and central's own token expired or re-signed.
    let central_secret = secret_in(venue.central.data_dir.path());
    let owner = venue.central.owner_token().await;
    let owner_claims = claims_of(&owner);
    let (expired_owner, _) = JwtKeys::new(
        &central_secret,
        aero_central::JWT_AUDIENCE,
        aero_central::JWT_AUDIENCE,
        chrono::Duration::minutes(15),
    )
    .issue(
        identity(&owner_claims),
        chrono::Utc::now() - chrono::Duration::hours(1),
    )
    .expect("sign");
    let (owner_signed, owner_signature) = owner.rsplit_once('.').expect("signature");
    let flipped_owner = format!("{owner_signed}.{}", flip(owner_signature, 3));
    for (what, token) in [
        ("the edge's token", &manager),
        ("expired", &expired_owner),
        ("signature flipped", &flipped_owner),
    ] {
        let response = central_get(&venue.central, "/v1/sites", token).await;
        assert_eq!(response.status(), 401, "central accepted a token: {what}");
        expect_problem(response, 401).await;
    }
    expect_status(central_get(&venue.central, "/v1/sites", &owner).await, 200).await;
}

#[tokio::test]
async fn tampered_device_keys_are_refused_at_the_edge_and_at_central() {
    let venue = Venue::open().await;
    let key = venue.kiosk.clone();
    let last = key.chars().count() - 1;
    let tampered = [
        ("last character changed", flip(&key, last)),
        ("a character in the middle changed", flip(&key, last / 2)),
        ("truncated", key[..key.len() - 1].to_string()),
        ("extended", format!("{key}A")),
        ("case changed", key.to_uppercase()),
        ("empty", String::new()),
    ];
    for (what, bad) in &tampered {
        if bad == &key {
            continue;
        }
        let at_edge = venue.get(bad, "/v1/products").await;
        assert_eq!(at_edge.status(), 401, "edge accepted a key: {what}");
        expect_problem(at_edge, 401).await;
        let at_central = venue
            .central
            .request(Method::GET, "/v1/products")
            .header("x-api-key", bad)
            .send()
            .await
            .expect("request");
        assert_eq!(at_central.status(), 401, "central accepted a key: {what}");
        expect_problem(at_central, 401).await;
    }
    expect_status(venue.get(&key, "/v1/products").await, 200).await;
    let at_central = venue
        .central
        .request(Method::GET, "/v1/products")
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request");
    expect_status(at_central, 200).await;
}

/// The statuses of `attempts` requests made one after another by `request`.
async fn statuses<F, Fut>(attempts: usize, mut request: F) -> Vec<u16>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let mut seen = Vec::new();
    for _ in 0..attempts {
        seen.push(request().await.status().as_u16());
    }
    seen
}

#[tokio::test]
async fn brute_force_on_passwords_and_keys_is_throttled_before_the_right_one_gets_in() {
    let central = TestCentral::start_with(|s| {
        s.limits.login_per_minute = 5;
        s.limits.failed_auth_per_minute = 5;
        s.limits.failed_auth_burst = 5;
    })
    .await;
    let login = |password: &'static str| {
        central
            .request(Method::POST, "/v1/auth/login")
            .json(&json!({ "username": OWNER, "password": password }))
            .send()
    };
    // One good login first, for a token that sets up a key below.
    let owner: Value = expect_status(login(OWNER_PASSWORD).await.expect("login"), 200).await;
    let owner = owner["access_token"].as_str().expect("token").to_string();
    let site = central.create_site(&owner, "Leeds").await;
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;

    let seen = statuses(4, || async {
        login("guess-one-two-three").await.expect("login")
    })
    .await;
    assert_eq!(seen, [401, 401, 401, 401], "wrong passwords");
    // The sixth attempt this minute is refused however right it is.
    let throttled = login(OWNER_PASSWORD).await.expect("login");
    let retry_after = throttled.headers().get("retry-after").cloned();
    expect_problem(throttled, 429).await;
    let seconds: u64 = retry_after
        .expect("Retry-After on the throttled login")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(seconds >= 1, "Retry-After {seconds}");

    // Guessing keys: the failures already counted (four passwords) plus one more lock the
    // address out; then even the real key is refused before it is looked up.
    let guessed = central
        .request(Method::GET, "/v1/products")
        .header(
            "x-api-key",
            "aero_guessed0000000000000000000000000000000000",
        )
        .send()
        .await
        .expect("request");
    expect_problem(guessed, 401).await;
    let locked = central
        .request(Method::GET, "/v1/products")
        .header("x-api-key", &kiosk)
        .send()
        .await
        .expect("request");
    assert!(
        locked.headers().contains_key("retry-after"),
        "no Retry-After on {}",
        locked.status()
    );
    expect_problem(locked, 429).await;
}

//! Central's change hints reach only the venues a change concerns: a change to one venue's rows
//! hints that venue's edge and no other, a chain-wide change hints every edge.

use aero_tests::{TestCentral, expect_status};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a hint may take: the change log is read every quarter second.
const HINT_LIMIT: Duration = Duration::from_secs(5);

async fn enroll_edge(central: &TestCentral, owner: &str, site: Uuid) -> String {
    let token = central.enrollment_token(owner, site).await;
    let response = central
        .request(Method::POST, "/v1/edge/enroll")
        .json(&json!({ "token": token, "name": "hinted edge" }))
        .send()
        .await
        .expect("enroll");
    expect_status(response, 200).await["api_key"]
        .as_str()
        .expect("api_key")
        .to_string()
}

async fn hint_socket(central: &TestCentral, api_key: &str) -> Socket {
    let url = central
        .url("/v1/sync/notify")
        .replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_str(api_key).expect("header"));
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("hint socket");
    socket
}

/// The head of the next hint on `socket`.
async fn next_head(socket: &mut Socket) -> i64 {
    loop {
        let message = tokio::time::timeout(HINT_LIMIT, socket.next())
            .await
            .expect("a hint in time")
            .expect("the socket stays open")
            .expect("a message");
        if let Message::Text(text) = message {
            let hint: Value = serde_json::from_str(text.as_str()).expect("hint json");
            return hint["head"].as_i64().expect("head");
        }
    }
}

/// The last change in the edge's scope, as its pull sees it.
async fn last_in_scope(central: &TestCentral, api_key: &str) -> i64 {
    let response = central
        .request(Method::GET, "/v1/sync/pull?after=0&limit=5000")
        .header("x-api-key", api_key)
        .send()
        .await
        .expect("pull");
    let page = expect_status(response, 200).await;
    page["changes"]
        .as_array()
        .and_then(|changes| changes.last())
        .and_then(|change| change["seq"].as_i64())
        .expect("the edge's scope holds its own rows")
}

/// Reads hints until one covers `seq`; returns its head.
async fn hinted_up_to(socket: &mut Socket, seq: i64) -> i64 {
    loop {
        let head = next_head(socket).await;
        if head >= seq {
            return head;
        }
    }
}

async fn rename_site(central: &TestCentral, owner: &str, site: Uuid, name: &str) {
    let response = central
        .request(Method::PATCH, &format!("/v1/sites/{site}"))
        .bearer_auth(owner)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("rename");
    expect_status(response, 200).await;
}

#[tokio::test]
async fn a_venue_is_hinted_only_of_changes_in_its_scope() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site_a = central.create_site(&owner, "Venue A").await;
    let site_b = central.create_site(&owner, "Venue B").await;
    let key_a = enroll_edge(&central, &owner, site_a).await;
    let key_b = enroll_edge(&central, &owner, site_b).await;
    let mut edge_a = hint_socket(&central, &key_a).await;
    let mut edge_b = hint_socket(&central, &key_b).await;
    // Each socket announces the head on connecting; what was written before (the edges' own
    // enrollment) is hinted if that head did not cover it yet.
    hinted_up_to(&mut edge_a, last_in_scope(&central, &key_a).await).await;
    hinted_up_to(&mut edge_b, last_in_scope(&central, &key_b).await).await;

    // A change to venue A's own row hints A.
    rename_site(&central, &owner, site_a, "Venue A, renamed").await;
    let renamed = last_in_scope(&central, &key_a).await;
    let hinted_a = hinted_up_to(&mut edge_a, renamed).await;

    // A chain-wide change hints both, and it is the first thing B hears of: B was never
    // hinted of A's rename.
    central
        .post_json(
            &owner,
            "/v1/products",
            &json!({ "sku": "JUMP-60", "name": "Jump 60", "kind": "pass", "price_cents": 1500, "duration_minutes": 60 }),
            201,
        )
        .await;
    let hinted_b = next_head(&mut edge_b).await;
    assert!(
        hinted_b > hinted_a,
        "B's next hint is the chain-wide change ({hinted_b}), not A's rename ({hinted_a})"
    );
    assert_eq!(next_head(&mut edge_a).await, hinted_b, "A hears of it too");
}

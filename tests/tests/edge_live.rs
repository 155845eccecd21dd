//! The venue's live feed end to end: games defined at HQ replicate to the edge, a game station
//! posts scores (by customer or wristband), a scoreboard sees each one live within 100 ms while
//! another client has stopped reading, and leaderboards rank them.

use aero_edge::replica::venue::insert_checkin;
use aero_shared::wire::CheckinRecord;
use aero_tests::{TestCentral, TestEdge, expect_status, wait_until};
use chrono::Utc;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The acceptance criterion: a posted score is on the scoreboards within this.
const LIVE_WITHIN: Duration = Duration::from_millis(100);

async fn watch(edge: &TestEdge, key: &str) -> Ws {
    let mut request = edge
        .url("/v1/live")
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_str(key).expect("key"));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the handshake answers")
    .expect("the live feed opens");
    ws
}

async fn next_event(ws: &mut Ws, within: Duration) -> Value {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await.expect("open").expect("a frame") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("json"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected an event, got {other:?}"),
            }
        }
    })
    .await
    .expect("an event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoreboards_see_scores_live_and_leaderboards_rank_them() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(&central, &token).await;
    let (_, game_key) = central.create_device(&owner, site, "game").await;
    let (_, scoreboard_key) = central.create_device(&owner, site, "scoreboard").await;
    let (_, kiosk_key) = central.create_device(&owner, site, "kiosk").await;
    let game = central
        .post_json(
            &owner,
            "/v1/games",
            &json!({ "name": "Laser maze", "score_order": "highest_wins" }),
            201,
        )
        .await;
    let game_id = game["id"].as_str().expect("game id").to_string();
    let leaderboard = format!("/v1/leaderboards/{game_id}?period=today");
    wait_until(
        "the game and the devices at the edge",
        Duration::from_secs(20),
        || async {
            let response = edge
                .request(Method::GET, &leaderboard, &scoreboard_key)
                .send()
                .await;
            matches!(response, Ok(r) if r.status() == 200) && edge.status(&game_key).await.is_some()
        },
    )
    .await;
    let mut customers = Vec::new();
    for (first, phone) in [("Ada", "0113 496 0101"), ("Bo", "0113 496 0102")] {
        let response = edge
            .request(Method::POST, "/v1/customers", &kiosk_key)
            .json(&json!({ "first_name": first, "last_name": "Jumper", "birth_date": "2001-02-03", "phone": phone, "email": null }))
            .send()
            .await
            .expect("register");
        let body = expect_status(response, 201).await;
        customers.push(body["id"].as_str().expect("id").to_string());
    }
    // Bo is jumping with wristband W-77 (written as the check-in route does).
    let conn = rusqlite::Connection::open(edge.db_path()).expect("open edge.db");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let now = Utc::now();
    insert_checkin(
        &conn,
        &CheckinRecord {
            id: Uuid::now_v7(),
            site_id: site,
            customer_id: customers[1].parse().expect("uuid"),
            wristband: "W-77".into(),
            product_id: Uuid::now_v7(),
            order_id: Some(Uuid::now_v7()),
            ledger_entry_id: None,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(1),
            created_at: now,
        },
    )
    .expect("check-in");
    drop(conn);

    // A client that connected and then never reads again, and the scoreboard.
    let _stalled = watch(&edge, &scoreboard_key).await;
    let mut scoreboard = watch(&edge, &scoreboard_key).await;
    let post = |body: Value| {
        let edge = &edge;
        let game_key = &game_key;
        async move {
            let response = edge
                .request(Method::POST, "/v1/scores", game_key)
                .json(&body)
                .send()
                .await
                .expect("post score");
            expect_status(response, 201).await
        }
    };
    for (who, score) in [
        (json!({ "customer_id": customers[0] }), 1200),
        (json!({ "wristband": "W-77" }), 1500),
        (json!({ "customer_id": customers[0] }), 900),
    ] {
        let mut body = who;
        body["game_id"] = json!(game_id);
        body["score"] = json!(score);
        let posted_at = Instant::now();
        let (posted, event) = tokio::join!(
            post(body),
            next_event(&mut scoreboard, Duration::from_secs(5))
        );
        let took = posted_at.elapsed();
        eprintln!("score {score} reached the scoreboard {took:?} after it was posted");
        assert_eq!(event["type"], "score");
        assert_eq!(event["score_id"], posted["id"]);
        assert_eq!(event["score"], score);
        assert!(
            took < LIVE_WITHIN,
            "the score took {took:?} to reach the scoreboard"
        );
    }

    let response = edge
        .request(Method::GET, &leaderboard, &scoreboard_key)
        .send()
        .await
        .expect("leaderboard");
    let board = expect_status(response, 200).await;
    let lines: Vec<(u64, &str, i64)> = board["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["rank"].as_u64().unwrap(),
                e["first_name"].as_str().unwrap(),
                e["score"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [(1, "Bo", 1500), (2, "Ada", 1200)]);

    // An unknown game is refused, and the scoreboard may not post.
    let response = edge
        .request(Method::POST, "/v1/scores", &game_key)
        .json(&json!({ "game_id": Uuid::now_v7(), "customer_id": customers[0], "score": 1 }))
        .send()
        .await
        .expect("post");
    expect_status(response, 422).await;
    let response = edge
        .request(Method::POST, "/v1/scores", &scoreboard_key)
        .json(&json!({ "game_id": game_id, "customer_id": customers[0], "score": 1 }))
        .send()
        .await
        .expect("post");
    expect_status(response, 403).await;
}

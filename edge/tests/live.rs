//! The venue's live feed, scores and leaderboards against an edge served in-process on loopback
//! (no central: the replica rows a test needs are written directly): who sees which events,
//! resuming, slow clients, clients that send too much, credentials for browsers, and ranking
//! across periods.

use aero_edge::config::Settings;
use aero_edge::credential::Credential;
use aero_edge::live::{LiveEvent, RETAINED};
use aero_edge::replica::apply::upsert_customer;
use aero_edge::replica::venue::{insert_checkin, insert_score, upsert_game};
use aero_edge::routes::AppState;
use aero_shared::auth::api_key::KeyHash;
use aero_shared::auth::jwt::StaffIdentity;
use aero_shared::auth::principal::{DeviceKind, Role};
use aero_shared::wire::{
    CheckinRecord, CustomerRecord, DeviceRecord, GameRecord, ScoreOrder, ScoreRecord, SiteRecord,
    UserRecord,
};
use chrono::{DateTime, Duration as Span, NaiveDate, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// An edge serving on a loopback port from its own temporary directory.
struct Venue {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    state: AppState,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

enum Caller<'a> {
    Key(&'a str),
    Staff(&'a str),
}

impl Venue {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: Some(dir.path().to_path_buf()),
            ..Settings::default()
        };
        settings.limits.requests_per_second = 10_000;
        settings.limits.burst = 10_000;
        configure(&mut settings);
        let site_id = Uuid::now_v7();
        let credential = Credential {
            // Never called: these tests run no sync.
            central_url: "http://127.0.0.1:9".into(),
            site_id,
            device_id: Uuid::now_v7(),
            api_key: "not used".to_string().into(),
            next_seq: 1,
            store_id: None,
        };
        let edge = aero_edge::build(&settings, credential).unwrap();
        let site = SiteRecord {
            id: site_id,
            name: "Leeds".into(),
            timezone: "Europe/London".into(),
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
            created_at: Utc::now(),
        };
        edge.state
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO sites (id, allowed_networks, data) VALUES (?1, ?2, ?3)",
                    rusqlite::params![
                        site.id,
                        serde_json::to_string(&site.allowed_networks)?,
                        serde_json::to_string(&site)?
                    ],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(aero_shared::server::serve(listener, edge.router, async {
            let _ = rx.await;
        }));
        Self {
            _dir: dir,
            addr,
            state: edge.state,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown: Some(tx),
        }
    }

    /// Registers a device of `kind` at `site` (this venue's unless given); returns its key.
    async fn device_at(&self, kind: DeviceKind, site: Uuid) -> String {
        let key = format!("test-key-{}-{}", kind.as_str(), Uuid::new_v4().simple());
        let record = DeviceRecord {
            id: Uuid::now_v7(),
            site_id: site,
            name: kind.as_str().into(),
            kind,
            allowed_networks: vec![],
            key_hash: KeyHash::of(&key).as_str().to_string(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        self.state
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO devices (id, site_id, key_hash, revoked_at, data) VALUES (?1, ?2, ?3, NULL, ?4)",
                    rusqlite::params![record.id, record.site_id, record.key_hash, serde_json::to_string(&record)?],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        key
    }

    async fn device(&self, kind: DeviceKind) -> String {
        self.device_at(kind, self.state.site_id).await
    }

    /// A token for a new account of `role` at this venue, which is put in the replica first.
    async fn staff_token(&self, role: &str) -> String {
        let user = UserRecord {
            id: Uuid::now_v7(),
            username: format!("{role}-1"),
            password_hash: String::new(),
            role: Role::parse(role).expect("a role"),
            site_ids: vec![self.state.site_id],
            created_at: Utc::now(),
            disabled_at: None,
            token_version: 0,
        };
        let identity = StaffIdentity {
            sub: user.id,
            username: user.username.clone(),
            role: role.into(),
            sites: vec![self.state.site_id],
            version: 0,
        };
        self.state
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO users (id, username, disabled_at, data) VALUES (?1, ?2, NULL, ?3)",
                    rusqlite::params![user.id, user.username, serde_json::to_string(&user)?],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        self.state
            .security
            .jwt
            .issue(identity, Utc::now())
            .unwrap()
            .0
    }

    async fn game(&self, order: ScoreOrder) -> Uuid {
        let game = GameRecord {
            id: Uuid::now_v7(),
            name: "Dodgeball".into(),
            score_order: order,
            created_at: Utc::now(),
        };
        let id = game.id;
        self.state
            .writer
            .write(move |c| upsert_game(c, &game))
            .await
            .unwrap();
        id
    }

    async fn customer(&self, first_name: &str) -> Uuid {
        let customer = CustomerRecord {
            id: Uuid::now_v7(),
            first_name: first_name.into(),
            last_name: "Jumper".into(),
            birth_date: NaiveDate::from_ymd_opt(2010, 5, 6).unwrap(),
            phone: None,
            email: None,
            guardian_id: None,
            home_site_id: self.state.site_id,
            created_at: Utc::now(),
        };
        let id = customer.id;
        self.state
            .writer
            .write(move |c| upsert_customer(c, &customer))
            .await
            .unwrap();
        id
    }

    async fn check_in(&self, customer: Uuid, wristband: &str, ends_at: DateTime<Utc>) {
        let record = CheckinRecord {
            id: Uuid::now_v7(),
            site_id: self.state.site_id,
            customer_id: customer,
            wristband: wristband.into(),
            product_id: Uuid::now_v7(),
            order_id: Some(Uuid::now_v7()),
            ledger_entry_id: None,
            starts_at: ends_at - Span::hours(2),
            ends_at,
            created_at: ends_at - Span::hours(2),
        };
        self.state
            .writer
            .write(move |c| insert_checkin(c, &record).map(drop))
            .await
            .unwrap();
    }

    /// A score set at `at` (in the past), written as the pull would.
    async fn past_score(&self, game: Uuid, customer: Uuid, score: i64, at: DateTime<Utc>) {
        let record = ScoreRecord {
            id: Uuid::now_v7(),
            site_id: self.state.site_id,
            game_id: game,
            customer_id: customer,
            score,
            device_id: None,
            created_at: at,
        };
        self.state
            .writer
            .write(move |c| insert_score(c, &record).map(drop))
            .await
            .unwrap();
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: Caller,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        match caller {
            Caller::Key(key) => request.header("x-api-key", key),
            Caller::Staff(token) => request.bearer_auth(token),
        }
    }

    async fn post_score(&self, key: &str, body: Value) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::POST, "/v1/scores", Caller::Key(key))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn leaderboard(&self, key: &str, game: Uuid, query: &str) -> (u16, Value) {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/leaderboards/{game}{query}"),
                Caller::Key(key),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Opens the live feed; `query` is appended to the path as is.
    async fn watch(&self, caller: Caller<'_>, query: &str) -> Ws {
        self.try_watch(Some(caller), query)
            .await
            .expect("the live feed opens")
    }

    async fn try_watch(
        &self,
        caller: Option<Caller<'_>>,
        query: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}/v1/live{query}", self.addr)
            .into_client_request()
            .unwrap();
        match caller {
            Some(Caller::Key(key)) => {
                request
                    .headers_mut()
                    .insert("x-api-key", HeaderValue::from_str(key).unwrap());
            }
            Some(Caller::Staff(token)) => {
                request.headers_mut().insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
            }
            None => {}
        }
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
            .await
            .expect("the handshake answers")
            .map(|(ws, _)| ws)
    }
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.state.live.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The next event (pings are answered by the client library and skipped).
async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message within the patience")
            .expect("the feed is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn order_event() -> LiveEvent {
    LiveEvent::Order {
        order_id: Uuid::now_v7(),
        customer_id: None,
        total_cents: 2500,
    }
}

fn checkin_event(customer: Uuid) -> LiveEvent {
    LiveEvent::Checkin {
        checkin_id: Uuid::now_v7(),
        customer_id: customer,
        wristband: "W-100".into(),
        product_id: Uuid::now_v7(),
        ends_at: Utc::now() + Span::hours(1),
    }
}

fn plug_event(state: &str) -> LiveEvent {
    LiveEvent::PlugState {
        plug_id: Uuid::nil(),
        state: state.into(),
        reachable: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_kind_sees_only_its_events_and_staff_see_everything() {
    let venue = Venue::start().await;
    let game_key = venue.device(DeviceKind::Game).await;
    let scoreboard_key = venue.device(DeviceKind::Scoreboard).await;
    let pos_key = venue.device(DeviceKind::Pos).await;
    let staff = venue.staff_token("staff").await;
    let game = venue.game(ScoreOrder::HighestWins).await;
    let ada = venue.customer("Ada").await;

    let mut game_ws = venue.watch(Caller::Key(&game_key), "").await;
    let mut scoreboard_ws = venue.watch(Caller::Key(&scoreboard_key), "").await;
    let mut pos_ws = venue.watch(Caller::Key(&pos_key), "").await;
    let mut staff_ws = venue.watch(Caller::Staff(&staff), "").await;

    let hub = &venue.state.live;
    hub.publish(order_event(), Utc::now());
    hub.publish(checkin_event(ada), Utc::now());
    hub.publish(plug_event("on"), Utc::now());
    let (status, _) = venue
        .post_score(
            &game_key,
            json!({ "game_id": game, "customer_id": ada, "score": 420 }),
        )
        .await;
    assert_eq!(status, 201);
    hub.publish(order_event(), Utc::now());
    let (status, _) = venue
        .post_score(
            &game_key,
            json!({ "game_id": game, "customer_id": ada, "score": 7 }),
        )
        .await;
    assert_eq!(status, 201);

    // Each client's last event comes after everything it must not see.
    let seen_by_game = take(&mut game_ws, 2).await;
    assert_eq!(kinds(&seen_by_game), ["score", "score"]);
    assert_eq!(seqs(&seen_by_game), [4, 6]);
    assert_eq!(seen_by_game[0]["score"], 420);
    assert_eq!(seen_by_game[0]["first_name"], "Ada");
    assert_eq!(seen_by_game[0]["game_id"], game.to_string());
    assert_eq!(seqs(&take(&mut scoreboard_ws, 3).await), [2, 4, 6]);
    let seen_by_pos = take(&mut pos_ws, 3).await;
    assert_eq!(kinds(&seen_by_pos), ["order", "checkin", "order"]);
    let seen_by_staff = take(&mut staff_ws, 6).await;
    assert_eq!(
        kinds(&seen_by_staff),
        ["order", "checkin", "plug_state", "score", "order", "score"]
    );
    assert_eq!(seqs(&seen_by_staff), [1, 2, 3, 4, 5, 6]);
}

async fn take(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(ws).await);
    }
    events
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_replays_what_was_missed_and_a_lost_cursor_resets() {
    let venue = Venue::start().await;
    let staff = venue.staff_token("manager").await;
    let hub = &venue.state.live;
    for n in 0..5 {
        hub.publish(plug_event(&format!("on-{n}")), Utc::now());
    }
    let mut ws = venue.watch(Caller::Staff(&staff), "?since=2").await;
    assert_eq!(seqs(&take(&mut ws, 3).await), [3, 4, 5]);
    hub.publish(plug_event("off"), Utc::now());
    assert_eq!(seqs(&take(&mut ws, 1).await), [6]);
    drop(ws);

    // A cursor from an earlier run of the server (sequences restart with it).
    let mut ws = venue.watch(Caller::Staff(&staff), "?since=999").await;
    assert_eq!(next_event(&mut ws).await, json!({ "type": "reset" }));
    hub.publish(plug_event("on"), Utc::now());
    assert_eq!(seqs(&take(&mut ws, 1).await), [7]);
    drop(ws);

    // A cursor older than what is retained.
    for _ in 0..RETAINED {
        hub.publish(plug_event("flood"), Utc::now());
    }
    let mut ws = venue.watch(Caller::Staff(&staff), "?since=3").await;
    assert_eq!(next_event(&mut ws).await, json!({ "type": "reset" }));
    hub.publish(plug_event("off"), Utc::now());
    assert_eq!(seqs(&take(&mut ws, 1).await), [7 + RETAINED as u64 + 1]);

    // The oldest cursor the retained events still cover resumes; one before it resets.
    let published = 8 + RETAINED as u64;
    let oldest_retained = published - RETAINED as u64 + 1;
    let mut ws = venue
        .watch(
            Caller::Staff(&staff),
            &format!("?since={}", oldest_retained - 1),
        )
        .await;
    assert_eq!(
        next_event(&mut ws).await["seq"].as_u64(),
        Some(oldest_retained)
    );
    let mut ws = venue
        .watch(
            Caller::Staff(&staff),
            &format!("?since={}", oldest_retained - 2),
        )
        .await;
    assert_eq!(next_event(&mut ws).await, json!({ "type": "reset" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_others_get_everything() {
    const BATCH: u64 = 100;
    const TOTAL: u64 = 8 * BATCH;
    let venue = Venue::start_with(|s| s.live.send_timeout_ms = 300).await;
    let staff = venue.staff_token("staff").await;
    let hub = std::sync::Arc::clone(&venue.state.live);

    // A peer with a small receive window that never reads after the handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(venue.addr).await.unwrap();
    let mut request = format!("ws://{}/v1/live", venue.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {staff}")).unwrap(),
    );
    let (mut stalled, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut fast = venue.watch(Caller::Staff(&staff), "").await;
    assert_eq!(hub.metrics().clients.get(), 2);

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while (seen.len() as u64) < TOTAL {
            let seq = next_event(&mut fast).await["seq"].as_u64().unwrap();
            seen.push(seq);
            progress_tx.send_replace(seq);
        }
        (seen, fast)
    });
    // Big events, so the stalled peer's socket buffers fill; published in batches the reading
    // client keeps up with (a burst beyond the retained events would drop any client).
    let payload = "x".repeat(16 * 1024);
    for batch in 1..=(TOTAL / BATCH) {
        for _ in 0..BATCH {
            hub.publish(plug_event(&payload), Utc::now());
        }
        tokio::time::timeout(PATIENCE, progress.wait_for(|seq| *seq >= batch * BATCH))
            .await
            .expect("the reading client keeps up")
            .unwrap();
    }
    let (seen, _fast) = reader.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());

    tokio::time::timeout(PATIENCE, async {
        while hub.metrics().clients.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled client is dropped");
    assert_eq!(hub.metrics().slow_clients_dropped.get(), 1);
    // What the stalled peer finds when it reads at last: part of the feed, then the end.
    let mut delivered = 0u64;
    loop {
        match tokio::time::timeout(PATIENCE, stalled.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(_))) => delivered += 1,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(_)) | Some(Err(_)) | None => break,
        }
    }
    eprintln!("the stalled client had {delivered} of {TOTAL} events when it was dropped");
    assert!(delivered < TOTAL);
}

/// The close frame the server ends `ws` with (pongs and pings before it are skipped).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message within the patience")
            .expect("the feed sends a close frame before ending")
            .expect("a valid frame");
        match message {
            Message::Close(Some(frame)) => return frame.code.into(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_closes_the_client_with_1009() {
    let venue = Venue::start_with(|s| s.live.max_message_bytes = 1024).await;
    let scoreboard = venue.device(DeviceKind::Scoreboard).await;
    let mut ws = venue.watch(Caller::Key(&scoreboard), "").await;
    // Within the limit: nothing happens, events still flow.
    ws.send(Message::Text("x".repeat(1024).into()))
        .await
        .unwrap();
    venue
        .state
        .live
        .publish(checkin_event(Uuid::now_v7()), Utc::now());
    assert_eq!(next_event(&mut ws).await["type"], "checkin");

    ws.send(Message::Text("x".repeat(1025).into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_the_feed_is_closed_with_1008() {
    let venue = Venue::start_with(|s| {
        s.live.inbound_messages_per_sec = 1;
        s.live.inbound_burst = 5;
    })
    .await;
    let scoreboard = venue.device(DeviceKind::Scoreboard).await;
    let mut quiet = venue.watch(Caller::Key(&scoreboard), "").await;
    let mut flooding = venue.watch(Caller::Key(&scoreboard), "").await;
    for _ in 0..50 {
        if flooding
            .send(Message::Ping(Vec::new().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut flooding).await, 1008);
    // The flood closed only the client that sent it.
    venue
        .state
        .live
        .publish(checkin_event(Uuid::now_v7()), Utc::now());
    assert_eq!(next_event(&mut quiet).await["type"], "checkin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_pass_credentials_in_the_query_and_clients_are_bounded() {
    let venue = Venue::start_with(|s| s.live.max_clients = 2).await;
    let scoreboard = venue.device(DeviceKind::Scoreboard).await;
    let elsewhere = venue
        .device_at(DeviceKind::Scoreboard, Uuid::now_v7())
        .await;
    let staff = venue.staff_token("staff").await;
    let refused = |outcome: Result<Ws, tokio_tungstenite::tungstenite::Error>| match outcome {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the feed opened"),
    };
    assert_eq!(refused(venue.try_watch(None, "").await), 401);
    assert_eq!(
        refused(venue.try_watch(None, "?api_key=made-up").await),
        401
    );
    assert_eq!(
        refused(venue.try_watch(Some(Caller::Key(&elsewhere)), "").await),
        403
    );

    let mut by_key = venue
        .try_watch(None, &format!("?api_key={scoreboard}&since=0"))
        .await
        .unwrap();
    let mut by_token = venue
        .try_watch(None, &format!("?access_token={staff}"))
        .await
        .unwrap();
    venue
        .state
        .live
        .publish(checkin_event(Uuid::now_v7()), Utc::now());
    assert_eq!(next_event(&mut by_key).await["type"], "checkin");
    assert_eq!(next_event(&mut by_token).await["type"], "checkin");

    // The venue's limit: a third client waits for a place.
    assert_eq!(
        refused(venue.try_watch(Some(Caller::Key(&scoreboard)), "").await),
        503
    );
    by_key.close(None).await.unwrap();
    drop(by_key);
    let hub = &venue.state.live;
    tokio::time::timeout(PATIENCE, async {
        while hub.metrics().clients.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the closed client's place is freed");
    venue.watch(Caller::Key(&scoreboard), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_by_wristband_goes_to_the_running_session_and_bad_scores_are_refused() {
    let venue = Venue::start().await;
    let game_key = venue.device(DeviceKind::Game).await;
    let scoreboard = venue.device(DeviceKind::Scoreboard).await;
    let game = venue.game(ScoreOrder::HighestWins).await;
    let (ada, bob) = (venue.customer("Ada").await, venue.customer("Bob").await);
    let now = Utc::now();
    venue.check_in(bob, "W-1", now - Span::minutes(10)).await;
    venue.check_in(ada, "W-1", now + Span::hours(1)).await;
    venue.check_in(bob, "W-2", now - Span::minutes(1)).await;
    let mut feed = venue.watch(Caller::Key(&scoreboard), "").await;

    let (status, body) = venue
        .post_score(
            &game_key,
            json!({ "game_id": game, "wristband": "W-1", "score": 300 }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["customer_id"], ada.to_string());
    assert_eq!(body["site_id"], venue.state.site_id.to_string());
    assert!(body["device_id"].is_string(), "{body}");
    let event = next_event(&mut feed).await;
    assert_eq!(
        (&event["type"], &event["score_id"], &event["first_name"]),
        (&json!("score"), &body["id"], &json!("Ada"))
    );

    let field_of = |body: &Value| {
        body["errors"][0]["field"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for (request, field) in [
        (
            json!({ "game_id": game, "wristband": "W-2", "score": 1 }),
            "wristband",
        ),
        (
            json!({ "game_id": game, "wristband": "W-404", "score": 1 }),
            "wristband",
        ),
        (
            json!({ "game_id": Uuid::now_v7(), "customer_id": ada, "score": 1 }),
            "game_id",
        ),
        (
            json!({ "game_id": game, "customer_id": Uuid::now_v7(), "score": 1 }),
            "customer_id",
        ),
        (
            json!({ "game_id": game, "customer_id": ada, "wristband": "W-1", "score": 1 }),
            "customer_id",
        ),
        (json!({ "game_id": game, "score": 1 }), "customer_id"),
        (
            json!({ "game_id": game, "customer_id": ada, "score": -1 }),
            "score",
        ),
    ] {
        let (status, body) = venue.post_score(&game_key, request.clone()).await;
        assert_eq!(status, 422, "{request} -> {body}");
        assert_eq!(field_of(&body), field, "{request} -> {body}");
    }
    let (status, _) = venue
        .post_score(
            &scoreboard,
            json!({ "game_id": game, "customer_id": ada, "score": 1 }),
        )
        .await;
    assert_eq!(status, 403);

    // One score recorded, with its outbox op for central, and announced once.
    let (scores, ops): (i64, i64) = venue
        .state
        .replica
        .read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM scores), (SELECT COUNT(*) FROM outbox WHERE entity = 'score')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!((scores, ops), (1, 1));
    venue.state.live.publish(order_event(), Utc::now());
    venue.state.live.publish(checkin_event(ada), Utc::now());
    assert_eq!(next_event(&mut feed).await["type"], "checkin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_rank_each_customers_best_by_period_and_score_order() {
    let venue = Venue::start().await;
    let scoreboard = venue.device(DeviceKind::Scoreboard).await;
    let highest = venue.game(ScoreOrder::HighestWins).await;
    let lowest = venue.game(ScoreOrder::LowestWins).await;
    let [ann, bob, cat, dan] = [
        venue.customer("Ann").await,
        venue.customer("Bob").await,
        venue.customer("Cat").await,
        venue.customer("Dan").await,
    ];
    // The site's periods as the edge sees them now.
    let window = |board: &Value| -> (DateTime<Utc>, DateTime<Utc>) {
        (
            board["from"].as_str().unwrap().parse().unwrap(),
            board["until"].as_str().unwrap().parse().unwrap(),
        )
    };
    let (status, today) = venue.leaderboard(&scoreboard, highest, "").await;
    assert_eq!(status, 200, "{today}");
    assert_eq!(today["period"], "today");
    assert!(today["entries"].as_array().unwrap().is_empty());
    let (today_from, today_until) = window(&today);
    let (_, week) = venue
        .leaderboard(&scoreboard, highest, "?period=week")
        .await;
    let (week_from, _) = window(&week);
    let old = week_from - Span::hours(1);
    // Some moment of this week that is not today (today may be its first day).
    let this_week = if week_from < today_from {
        week_from
    } else {
        today_until
    };
    let s = Span::seconds;

    venue.past_score(highest, ann, 900, old).await;
    venue.past_score(highest, ann, 100, today_from).await;
    venue.past_score(highest, bob, 300, this_week).await;
    venue.past_score(highest, cat, 200, today_from + s(1)).await;
    venue.past_score(highest, cat, 250, today_from + s(2)).await;
    venue.past_score(highest, dan, 250, today_from + s(3)).await;
    venue.past_score(lowest, ann, 42, old).await;
    venue.past_score(lowest, ann, 50, today_from).await;
    venue.past_score(lowest, bob, 45, today_from + s(4)).await;
    venue.past_score(lowest, bob, 45, today_from + s(5)).await;

    let ranked = |board: &Value| -> Vec<(u64, String, i64)> {
        board["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["rank"].as_u64().unwrap(),
                    e["first_name"].as_str().unwrap().to_string(),
                    e["score"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let board = |game, query: &'static str| {
        let venue = &venue;
        let scoreboard = &scoreboard;
        async move {
            let (status, body) = venue.leaderboard(scoreboard, game, query).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let line = |rank: u64, name: &str, score: i64| (rank, name.to_string(), score);

    assert_eq!(
        ranked(&board(highest, "").await),
        [
            line(1, "Cat", 250),
            line(2, "Dan", 250),
            line(3, "Ann", 100)
        ]
    );
    assert_eq!(
        ranked(&board(highest, "?period=week").await),
        [
            line(1, "Bob", 300),
            line(2, "Cat", 250),
            line(3, "Dan", 250),
            line(4, "Ann", 100)
        ]
    );
    assert_eq!(
        ranked(&board(highest, "?period=all").await),
        [
            line(1, "Ann", 900),
            line(2, "Bob", 300),
            line(3, "Cat", 250),
            line(4, "Dan", 250)
        ]
    );
    assert_eq!(
        ranked(&board(highest, "?period=all&limit=2").await),
        [line(1, "Ann", 900), line(2, "Bob", 300)]
    );
    let lowest_today = board(lowest, "?period=today").await;
    assert_eq!(lowest_today["score_order"], "lowest_wins");
    assert_eq!(
        ranked(&lowest_today),
        [line(1, "Bob", 45), line(2, "Ann", 50)]
    );
    // A best score set twice counts from the first time.
    let first_45: DateTime<Utc> = lowest_today["entries"][0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first_45, today_from + s(4));
    assert_eq!(lowest_today["entries"][0]["customer_id"], bob.to_string());
    assert_eq!(
        ranked(&board(lowest, "?period=all").await),
        [line(1, "Ann", 42), line(2, "Bob", 45)]
    );
    let _ = (cat, dan);

    assert_eq!(
        venue.leaderboard(&scoreboard, Uuid::now_v7(), "").await.0,
        404
    );
    for bad in ["?period=month", "?limit=0", "?limit=101"] {
        assert_eq!(
            venue.leaderboard(&scoreboard, highest, bad).await.0,
            422,
            "{bad}"
        );
    }
}

//! A keyed POST whose answer never reached the store (the process stopped between the commit of
//! its write and the middleware storing the answer) is answered on retry with the original
//! status and body, and its write is not run a second time.

use aero_edge::auth::{ReplicaCredentials, ReplicaIdempotency};
use aero_edge::outbox::Writer;
use aero_edge::replica::Replica;
use aero_edge::routes::{AppState, Services, SyncGauges, api_router};
use aero_shared::ApiError;
use aero_shared::auth::extract::Security;
use aero_shared::auth::jwt::{JwtKeys, StaffIdentity};
use aero_shared::auth::principal::Role;
use aero_shared::idempotency::{
    Begin, Idempotency, IdempotencyStore, REPLAYED_HEADER, StoredResponse,
};
use aero_shared::metrics::HttpMetrics;
use aero_shared::pipeline::LimitSettings;
use aero_shared::ratelimit::RateLimits;
use aero_shared::wire::UserRecord;
use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use std::sync::Arc;
use tower::ServiceExt;
use uuid::Uuid;

/// The real key store, except that answers handed over after the handler are lost.
struct LosesAnswers(ReplicaIdempotency);

#[async_trait]
impl IdempotencyStore for LosesAnswers {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
        self.0.begin(scope, key, fingerprint).await
    }

    async fn complete(&self, _: &str, _: &str, _: &StoredResponse) -> Result<(), ApiError> {
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError> {
        self.0.release(scope, key).await
    }

    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, ApiError> {
        self.0.purge(before).await
    }
}

struct Venue {
    _dir: tempfile::TempDir,
    state: AppState,
    bearer: String,
}

impl Venue {
    fn open() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let site_id = Uuid::now_v7();
        let (replica, conn) = Replica::open(dir.path(), site_id, 1).expect("replica");
        // The manager's account, as a pull from central would have put it in the replica.
        let manager = UserRecord {
            id: Uuid::now_v7(),
            username: "manager".into(),
            password_hash: String::new(),
            role: Role::Manager,
            site_ids: vec![site_id],
            created_at: chrono::Utc::now(),
            disabled_at: None,
            token_version: 0,
        };
        conn.execute(
            "INSERT INTO users (id, username, disabled_at, data) VALUES (?1, ?2, NULL, ?3)",
            rusqlite::params![
                manager.id,
                manager.username,
                serde_json::to_string(&manager).expect("json")
            ],
        )
        .expect("manager account");
        let writer = Writer::start(conn).expect("writer");
        let jwt = JwtKeys::new(
            &SecretString::from("a test secret of at least thirty-two bytes"),
            "aero-edge",
            "aero-edge",
            chrono::Duration::minutes(5),
        );
        let (bearer, _) = jwt
            .issue(
                StaffIdentity {
                    sub: manager.id,
                    username: "manager".into(),
                    role: "manager".into(),
                    sites: vec![site_id],
                    version: manager.token_version,
                },
                chrono::Utc::now(),
            )
            .expect("token");
        let security = Arc::new(Security {
            jwt,
            credentials: Arc::new(ReplicaCredentials::new(Arc::clone(&replica))),
            limits: RateLimits::new(&LimitSettings::default()),
            hq_networks: Vec::new(),
            served_site: Some(site_id),
        });
        let mut registry = Registry::default();
        let state = AppState::new(Services {
            replica,
            writer,
            security,
            site_id,
            http_metrics: Arc::new(HttpMetrics::register(&mut registry)),
            gauges: Arc::new(SyncGauges::register(&mut registry)),
            registry: Arc::new(registry),
            live: Arc::new(aero_edge::live::LiveHub::new()),
            clock: Arc::new(aero_shared::clock::SystemClock),
            plugs: Arc::default(),
        });
        Self {
            _dir: dir,
            state,
            bearer,
        }
    }

    /// The venue API behind the idempotency middleware, keeping keys in `store`.
    fn app(&self, store: Arc<dyn IdempotencyStore>) -> Router {
        Router::from(api_router())
            .layer(Idempotency {
                store,
                security: Arc::clone(&self.state.security),
            })
            .with_state(self.state.clone())
    }

    fn keys(&self) -> ReplicaIdempotency {
        ReplicaIdempotency(self.state.writer.clone())
    }

    /// Sends `POST path` with `key`, first through an app that loses the answer, then again
    /// through the real one; returns both answers as (status, content type, replayed, body).
    async fn post_twice(&self, path: &str, key: &str, body: &serde_json::Value) -> [Sent; 2] {
        let lossy = self.app(Arc::new(LosesAnswers(self.keys())));
        let real = self.app(Arc::new(self.keys()));
        [
            self.post(lossy, path, key, body).await,
            self.post(real, path, key, body).await,
        ]
    }

    async fn post(&self, app: Router, path: &str, key: &str, body: &serde_json::Value) -> Sent {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.bearer))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        Sent {
            status: parts.status,
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().expect("ascii").to_string()),
            replayed: parts.headers.contains_key(REPLAYED_HEADER),
            body: to_bytes(body, usize::MAX).await.expect("body").to_vec(),
        }
    }

    async fn count(&self, sql: &'static str) -> i64 {
        self.state
            .replica
            .read(move |c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .await
            .expect("count")
    }
}

#[derive(Debug, PartialEq)]
struct Sent {
    status: StatusCode,
    content_type: Option<String>,
    replayed: bool,
    body: Vec<u8>,
}

fn assert_replayed(first: &Sent, retry: &Sent, status: StatusCode) {
    assert_eq!(
        first.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&first.body)
    );
    assert!(!first.replayed);
    assert!(retry.replayed, "the retry is answered from the store");
    assert_eq!(
        (retry.status, &retry.content_type, &retry.body),
        (first.status, &first.content_type, &first.body),
        "the retry gets the original answer byte for byte"
    );
}

#[tokio::test]
async fn a_registration_whose_answer_was_lost_is_replayed_not_run_again() {
    let venue = Venue::open();
    let body = serde_json::json!({
        "first_name": "Ada",
        "last_name": "Lovelace",
        "birth_date": "1985-12-10",
        "phone": "0113 496 0000",
        "minors": [{ "first_name": "Byron", "last_name": "Lovelace", "birth_date": "2016-01-02" }],
    });
    let [first, retry] = venue.post_twice("/v1/customers", "tablet-1", &body).await;
    assert_replayed(&first, &retry, StatusCode::CREATED);
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(venue.count("SELECT COUNT(*) FROM customers").await, 2);
    assert_eq!(venue.count("SELECT COUNT(*) FROM outbox").await, 2);

    // A waiver for that customer, likewise.
    let customer: serde_json::Value = serde_json::from_slice(&first.body).expect("json");
    let path = format!(
        "/v1/customers/{}/waivers",
        customer["id"].as_str().expect("id")
    );
    let waiver = serde_json::json!({ "signer_name": "Ada Lovelace" });
    let [first, retry] = venue.post_twice(&path, "tablet-2", &waiver).await;
    assert_replayed(&first, &retry, StatusCode::CREATED);
    assert_eq!(venue.count("SELECT COUNT(*) FROM waivers").await, 1);
    assert_eq!(venue.count("SELECT COUNT(*) FROM outbox").await, 3);
}

#[tokio::test]
async fn a_refusal_decided_in_the_write_records_nothing_with_it() {
    let venue = Venue::open();
    let path = format!("/v1/customers/{}/waivers", Uuid::now_v7());
    let waiver = serde_json::json!({ "signer_name": "Nobody" });
    let lossy = venue.app(Arc::new(LosesAnswers(venue.keys())));
    let refused = venue.post(lossy, &path, "tablet-3", &waiver).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    // Nothing committed: the key holds neither an answer nor a commit mark.
    assert_eq!(
        venue
            .count("SELECT COUNT(*) FROM idempotency_keys WHERE key = 'tablet-3' AND status IS NULL AND committed_at IS NULL")
            .await,
        1
    );
    assert_eq!(venue.count("SELECT COUNT(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn a_dead_letter_retry_or_discard_whose_answer_was_lost_is_replayed() {
    let venue = Venue::open();
    let dead = |seq: i64| {
        let op_id = Uuid::now_v7();
        let entity_id = Uuid::now_v7();
        (seq, op_id, entity_id)
    };
    let (retried, discarded) = (dead(1), dead(2));
    venue
        .state
        .writer
        .write(move |c| {
            for (seq, op_id, entity_id) in [retried, discarded] {
                c.execute(
                    "INSERT INTO dead_letters (op_id, seq, entity, entity_id, kind, data, reason, rejected_at, created_at)
                     VALUES (?1, ?2, 'customer', ?3, 'upsert', '{}', 'refused', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')",
                    rusqlite::params![op_id, seq, entity_id],
                )?;
            }
            Ok(())
        })
        .await
        .expect("dead letters");
    let none = serde_json::Value::Null;

    // The retry's answer (the new op's id and seq) is made by the write itself.
    let path = format!("/v1/dead-letters/{}/retry", retried.1);
    let [first, retry] = venue.post_twice(&path, "manager-1", &none).await;
    assert_replayed(&first, &retry, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_slice(&first.body).expect("json");
    assert_eq!(answer["seq"], 1);
    // The retried op, and the decision for central: queued once.
    assert_eq!(venue.count("SELECT COUNT(*) FROM outbox").await, 2);

    let path = format!("/v1/dead-letters/{}/discard", discarded.1);
    let [first, retry] = venue.post_twice(&path, "manager-2", &none).await;
    assert_replayed(&first, &retry, StatusCode::NO_CONTENT);
    assert_eq!(venue.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    assert_eq!(
        venue
            .count("SELECT COUNT(*) FROM outbox WHERE entity = 'dead_letter'")
            .await,
        2
    );
    assert_eq!(
        venue
            .count("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'dead_letter.%'")
            .await,
        2
    );
}

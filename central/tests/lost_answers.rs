//! Every HQ POST that creates something records its answer with its write: a keyed request whose
//! answer never reached the store (the process stopped between the commit and the middleware
//! storing the answer) is answered on retry with the original status and body, and is not run
//! a second time.

use aero_central::config::Settings;
use aero_central::routes::api_router;
use aero_central::state::AppState;
use aero_central::store::{Actor, Store};
use aero_shared::ApiError;
use aero_shared::auth::jwt::StaffIdentity;
use aero_shared::auth::principal::Role;
use aero_shared::clock::SystemClock;
use aero_shared::idempotency::{
    Begin, Idempotency, IdempotencyStore, REPLAYED_HEADER, StoredResponse,
};
use aero_shared::wire::UserRecord;
use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;
use uuid::Uuid;

/// Central's key store, except that answers handed over after the handler are lost.
struct LosesAnswers(Arc<dyn Store>);

#[async_trait]
impl IdempotencyStore for LosesAnswers {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
        let now = chrono::Utc::now();
        Ok(self
            .0
            .idempotency_begin(scope, key, fingerprint, now)
            .await?)
    }

    async fn complete(&self, _: &str, _: &str, _: &StoredResponse) -> Result<(), ApiError> {
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError> {
        Ok(self.0.idempotency_release(scope, key).await?)
    }

    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, ApiError> {
        Ok(self.0.idempotency_purge(before).await?)
    }
}

struct Hq {
    _dir: tempfile::TempDir,
    /// The service as it runs, keys kept in its store.
    app: Router,
    /// The same routes, behind a key store that loses answers.
    lossy: Router,
    state: AppState,
    bearer: String,
}

impl Hq {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            data_dir: Some(dir.path().to_path_buf()),
            jwt_secret: Some(SecretString::from(
                "a test secret of at least thirty-two bytes",
            )),
            ..Settings::default()
        };
        let (app, state) = aero_central::build(settings, Arc::new(SystemClock))
            .await
            .expect("build");
        let lossy = axum::Router::from(api_router())
            .layer(Idempotency {
                store: Arc::new(LosesAnswers(Arc::clone(&state.store))),
                security: Arc::clone(&state.security),
            })
            .with_state(state.clone());
        // A staff token is honoured only while its account exists at the version it names.
        let owner = UserRecord {
            id: Uuid::now_v7(),
            username: "owner".into(),
            password_hash: String::new(),
            role: Role::Owner,
            site_ids: Vec::new(),
            created_at: chrono::Utc::now(),
            disabled_at: None,
            token_version: 0,
        };
        state
            .store
            .create_user(&Actor::system("test"), &owner)
            .await
            .expect("owner account");
        let (bearer, _) = state
            .security
            .jwt
            .issue(
                StaffIdentity {
                    sub: owner.id,
                    username: "owner".into(),
                    role: "owner".into(),
                    sites: Vec::new(),
                    version: owner.token_version,
                },
                chrono::Utc::now(),
            )
            .expect("token");
        Self {
            _dir: dir,
            app,
            lossy,
            state,
            bearer,
        }
    }

    /// Sends `POST path` with a fresh key through the routes that lose the answer, then again
    /// through the service; checks the retry got the first answer replayed and returns it.
    async fn created(&self, path: &str, body: Value) -> Value {
        let key = Uuid::now_v7().to_string();
        let first = self.post(self.lossy.clone(), path, &key, &body).await;
        let retry = self.post(self.app.clone(), path, &key, &body).await;
        assert_eq!(
            first.status,
            StatusCode::CREATED,
            "{path}: {}",
            String::from_utf8_lossy(&first.body)
        );
        assert!(!first.replayed);
        assert!(
            retry.replayed,
            "{path}: the retry is answered from the store"
        );
        assert_eq!(
            (retry.status, &retry.content_type, &retry.body),
            (first.status, &first.content_type, &first.body),
            "{path}: the retry gets the original answer byte for byte"
        );
        serde_json::from_slice(&first.body).expect("json")
    }

    async fn post(&self, app: Router, path: &str, key: &str, body: &Value) -> Sent {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.bearer))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .expect("request");
        // Sensitive operations are allowed from HQ's networks only.
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
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
}

struct Sent {
    status: StatusCode,
    content_type: Option<String>,
    replayed: bool,
    body: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hq_create_replays_its_answer_after_the_answer_was_lost() {
    let hq = Hq::start().await;
    let store = &hq.state.store;

    let site = hq
        .created(
            "/v1/sites",
            json!({ "name": "Leeds", "timezone": "Europe/London" }),
        )
        .await;
    assert_eq!(store.list_sites(None, 500).await.expect("sites").len(), 1);
    let site_id = site["id"].as_str().expect("site id");

    let token = hq
        .created(&format!("/v1/sites/{site_id}/enrollment-tokens"), json!({}))
        .await;
    assert!(token["token"].as_str().is_some_and(|t| !t.is_empty()));

    let device = hq
        .created(
            &format!("/v1/sites/{site_id}/devices"),
            json!({ "name": "Front desk", "kind": "kiosk" }),
        )
        .await;
    assert!(device["api_key"].as_str().is_some());
    let site_uuid: Uuid = site_id.parse().expect("uuid");
    assert_eq!(
        store
            .list_devices(site_uuid, None, 500)
            .await
            .expect("devices")
            .len(),
        1
    );

    hq.created(
        "/v1/users",
        json!({
            "username": "leeds.staff",
            "password": "a long enough password",
            "role": "staff",
            "site_ids": [site_id],
        }),
    )
    .await;
    let named =
        |users: Vec<UserRecord>| users.iter().filter(|u| u.username == "leeds.staff").count();
    assert_eq!(named(store.list_users(None, 500).await.expect("users")), 1);

    hq.created(
        "/v1/products",
        json!({ "sku": "JUMP60", "name": "One hour", "kind": "pass", "price_cents": 1500, "duration_minutes": 60 }),
    )
    .await;
    assert_eq!(
        store
            .list_products(None, 500)
            .await
            .expect("products")
            .len(),
        1
    );

    hq.created("/v1/games", json!({ "name": "Dodgeball" }))
        .await;
    assert_eq!(store.list_games(None, 500).await.expect("games").len(), 1);

    let plug = hq
        .created(
            &format!("/v1/sites/{site_id}/plugs"),
            json!({ "name": "Lights", "host": "192.0.2.10" }),
        )
        .await;
    let plug_id = plug["id"].as_str().expect("plug id");
    hq.created(
        &format!("/v1/plugs/{plug_id}/schedules"),
        json!({ "cron": "0 0 9 * * *", "state": "on" }),
    )
    .await;
    let plug_uuid: Uuid = plug_id.parse().expect("uuid");
    assert_eq!(
        store
            .list_schedules(plug_uuid, None, 500)
            .await
            .expect("schedules")
            .len(),
        1
    );
}

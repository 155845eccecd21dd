//! Test harness: real `aero-central` servers on loopback ports, each on its own temporary data
//! directory, plus an HTTP client that speaks the public contract.

use aero_central::config::Settings;
use aero_central::store::Actor;
use aero_shared::auth::password::hash_password;
use aero_shared::auth::principal::Role;
use aero_shared::wire::UserRecord;
use reqwest::{Client, Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const OWNER: &str = "owner";
pub const OWNER_PASSWORD: &str = "correct horse battery staple";

/// A running central. Dropping it shuts the server down and removes its data.
pub struct TestCentral {
    pub addr: SocketAddr,
    pub data_dir: TempDir,
    pub client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// What it was started with, so a restart runs the same configuration.
    launched: Settings,
}

impl TestCentral {
    /// Starts central with default settings and an owner account.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts central after `configure` adjusted its settings.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            data_dir: Some(data_dir.path().to_path_buf()),
            ..Settings::default()
        };
        configure(&mut settings);
        create_user(&settings, OWNER, OWNER_PASSWORD, Role::Owner, vec![]).await;
        Self::launch(settings, data_dir).await
    }

    async fn launch(settings: Settings, data_dir: TempDir) -> Self {
        // Bind first, then spawn: the port is known and accepting before any request is sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, task) = spawn_central(settings.clone(), listener);
        Self {
            addr,
            data_dir,
            client: Client::builder().no_proxy().build().expect("client"),
            shutdown: Some(tx),
            task: Some(task),
            launched: settings,
        }
    }

    /// Starts a stopped central again on the same address and data directory, as an operator
    /// restarting the service would: edges keep the URL they enrolled with.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the same port again");
        let (tx, task) = spawn_central(self.launched.clone(), listener);
        self.shutdown = Some(tx);
        self.task = Some(task);
    }

    /// Issues a one-time enrollment token for `site`.
    pub async fn enrollment_token(&self, token: &str, site: Uuid) -> String {
        let body = self
            .post_json(
                token,
                &format!("/v1/sites/{site}/enrollment-tokens"),
                &json!({}),
                201,
            )
            .await;
        body["token"].as_str().expect("token").to_string()
    }

    pub fn settings(&self) -> Settings {
        Settings {
            data_dir: Some(self.data_dir.path().to_path_buf()),
            ..Settings::default()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self
            .request(Method::POST, "/v1/auth/login")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login as {username} failed");
        let body: Value = response.json().await.expect("token json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn owner_token(&self) -> String {
        self.login(OWNER, OWNER_PASSWORD).await
    }

    /// Creates a site open to loopback for sensitive operations; returns its id.
    pub async fn create_site(&self, token: &str, name: &str) -> Uuid {
        self.create_site_with_networks(token, name, &["127.0.0.0/8", "::1/128"])
            .await
    }

    pub async fn create_site_with_networks(
        &self,
        token: &str,
        name: &str,
        networks: &[&str],
    ) -> Uuid {
        let body = self
            .post_json(
                token,
                "/v1/sites",
                &json!({ "name": name, "timezone": "Europe/London", "allowed_networks": networks }),
                201,
            )
            .await;
        body["id"].as_str().expect("site id").parse().expect("uuid")
    }

    /// Registers a device and returns (id, api_key).
    pub async fn create_device(&self, token: &str, site: Uuid, kind: &str) -> (Uuid, String) {
        let body = self
            .post_json(
                token,
                &format!("/v1/sites/{site}/devices"),
                &json!({ "name": format!("{kind} 1"), "kind": kind }),
                201,
            )
            .await;
        (
            body["id"].as_str().expect("id").parse().expect("uuid"),
            body["api_key"].as_str().expect("api_key").to_string(),
        )
    }

    /// POSTs JSON with a bearer token and asserts the status; returns the body.
    pub async fn post_json(&self, token: &str, path: &str, body: &Value, status: u16) -> Value {
        let response = self
            .request(Method::POST, path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        expect_status(response, status).await
    }

    pub async fn get_json(&self, token: &str, path: &str, status: u16) -> Value {
        let response = self
            .request(Method::GET, path)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        expect_status(response, status).await
    }

    /// Stops the server and waits until it has shut down, keeping its data directory.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

type ServerTask = tokio::task::JoinHandle<anyhow::Result<()>>;

fn spawn_central(
    settings: Settings,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, ServerTask) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(aero_central::launch(settings, listener, async move {
        let _ = rx.await;
    }));
    (tx, task)
}

/// A running, enrolled edge on its own temporary data directory. Dropping it shuts it down.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub data_dir: TempDir,
    pub client: Client,
    pub credential: aero_edge::credential::Credential,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<ServerTask>,
}

impl TestEdge {
    /// Enrolls at `central` with `enrollment_token` and serves on a loopback port. Rate limits
    /// are raised and backoff shortened so bulk writes and outage recovery run at test speed.
    pub async fn start(central: &TestCentral, enrollment_token: &str) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let credential =
            aero_edge::credential::enroll(&central.url(""), enrollment_token, data_dir.path())
                .await
                .expect("enroll the edge");
        let mut settings = aero_edge::config::Settings {
            data_dir: Some(data_dir.path().to_path_buf()),
            ..aero_edge::config::Settings::default()
        };
        settings.limits.requests_per_second = 10_000;
        settings.limits.burst = 10_000;
        settings.sync.backoff_min_ms = 50;
        settings.sync.backoff_max_secs = 1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(aero_edge::launch(settings, listener, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            data_dir,
            client: Client::builder().no_proxy().build().expect("client"),
            credential,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request authenticated with a device's API key.
    pub fn request(&self, method: Method, path: &str, api_key: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-api-key", api_key)
    }

    /// Stops the edge and waits for it, keeping its data directory.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for TestCentral {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates a staff user directly in central's store, as `aero-central user create` does.
pub async fn create_user(
    settings: &Settings,
    username: &str,
    password: &str,
    role: Role,
    sites: Vec<Uuid>,
) {
    let store = aero_central::open_store(settings)
        .await
        .expect("open store");
    let user = UserRecord {
        id: Uuid::now_v7(),
        username: username.to_string(),
        password_hash: hash_password(&SecretString::from(password.to_string())).expect("hash"),
        role,
        site_ids: sites,
        created_at: chrono::Utc::now(),
        disabled_at: None,
    };
    store
        .create_user(&Actor::system("test"), &user)
        .await
        .expect("create user");
}

/// Asserts a response's status and returns its JSON body (`null` when empty); on a mismatch
/// the body is shown.
pub async fn expect_status(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Asserts an error is problem+json with the given status; returns the problem body.
pub async fn expect_problem(response: Response, status: u16) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = expect_status(response, status).await;
    assert!(
        content_type.starts_with("application/problem+json"),
        "expected problem+json, got {content_type}: {body}"
    );
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}

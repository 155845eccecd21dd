//! Test harness: real `aero-central` servers on loopback ports, each on its own temporary data
//! directory, plus an HTTP client that speaks the public contract.

use aero_central::config::Settings;
use aero_central::store::Actor;
use aero_shared::auth::password::hash_password;
use aero_shared::auth::principal::Role;
use aero_shared::wire::{EdgeStatus, UserRecord};
use reqwest::{Client, Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
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
        let (settings, data_dir) = Self::configured(configure);
        create_user(&settings, OWNER, OWNER_PASSWORD, Role::Owner, vec![]).await;
        Self::launch(settings, data_dir).await
    }

    /// Starts central on a database that already exists (e.g. a restored backup, named by
    /// `configure` through `database_url`): no account is created, the database's own log in.
    pub async fn start_existing(configure: impl FnOnce(&mut Settings)) -> Self {
        let (settings, data_dir) = Self::configured(configure);
        Self::launch(settings, data_dir).await
    }

    /// Default settings on a fresh temporary data directory, then `configure`.
    fn configured(configure: impl FnOnce(&mut Settings)) -> (Settings, TempDir) {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            data_dir: Some(data_dir.path().to_path_buf()),
            ..Settings::default()
        };
        configure(&mut settings);
        (settings, data_dir)
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

fn spawn_edge(
    settings: aero_edge::config::Settings,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, ServerTask) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(aero_edge::launch(settings, listener, async move {
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
    /// What it was started with, so a restart runs the same configuration.
    launched: aero_edge::config::Settings,
}

impl TestEdge {
    /// Enrolls at `central` with `enrollment_token` and serves on a loopback port. Rate limits
    /// are raised and backoff shortened so bulk writes and outage recovery run at test speed;
    /// so is the failed-authentication throttle, since every test client shares 127.0.0.1 and
    /// tests poll with keys that are not replicated yet, or revoked.
    pub async fn start(central: &TestCentral, enrollment_token: &str) -> Self {
        Self::start_with(&central.url(""), enrollment_token, |_| {}).await
    }

    /// Enrolls at `central_url` (central itself or a proxy in front of it: the edge keeps
    /// talking to the URL it enrolled with) and serves after `configure` adjusted the test
    /// settings of [`TestEdge::start`].
    pub async fn start_with(
        central_url: &str,
        enrollment_token: &str,
        configure: impl FnOnce(&mut aero_edge::config::Settings),
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        aero_edge::credential::enroll(central_url, enrollment_token, data_dir.path())
            .await
            .expect("enroll the edge");
        Self::serve_existing(data_dir, configure).await
    }

    /// Serves an edge from a data directory that already holds a credential (and maybe a
    /// database): a box restored from a copy, or a cloned VM. Same test settings as
    /// [`TestEdge::start`].
    pub async fn serve_existing(
        data_dir: TempDir,
        configure: impl FnOnce(&mut aero_edge::config::Settings),
    ) -> Self {
        let credential = aero_edge::credential::Credential::load(data_dir.path())
            .expect("read the credential")
            .expect("the data directory holds a credential");
        let mut settings = aero_edge::config::Settings {
            data_dir: Some(data_dir.path().to_path_buf()),
            ..aero_edge::config::Settings::default()
        };
        settings.limits.requests_per_second = 10_000;
        settings.limits.burst = 10_000;
        settings.limits.failed_auth_per_minute = 100_000;
        settings.limits.failed_auth_burst = 100_000;
        settings.sync.backoff_min_ms = 50;
        settings.sync.backoff_max_secs = 1;
        configure(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, task) = spawn_edge(settings.clone(), listener);
        Self {
            addr,
            data_dir,
            client: edge_client(&settings),
            credential,
            shutdown: Some(tx),
            task: Some(task),
            launched: settings,
        }
    }

    /// Stops the edge and starts it again on the same address and data directory, as after a
    /// service restart: everything it knows comes from `edge.db` and the credential file.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the same port again");
        let (tx, task) = spawn_edge(self.launched.clone(), listener);
        self.shutdown = Some(tx);
        self.task = Some(task);
        // Pooled connections went to the old server.
        self.client = edge_client(&self.launched);
    }

    /// The edge's Prometheus metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The edge's `/v1/status` as seen with `api_key`; `None` while the key is not accepted
    /// (or the edge does not answer).
    pub async fn status(&self, api_key: &str) -> Option<EdgeStatus> {
        edge_status(self.request(Method::GET, "/v1/status", api_key)).await
    }

    /// Path of the edge's SQLite database (for tests that inspect or damage it while stopped).
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join(aero_edge::replica::DB_FILE)
    }

    /// `https://…` when the edge was started with `[tls]`, else `http://…`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.launched.tls.enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.addr, path)
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

/// A client for an edge started with `settings`: with `[tls]`, it trusts exactly the edge's
/// certificate (tests make their own, self-signed).
fn edge_client(settings: &aero_edge::config::Settings) -> Client {
    let mut client = Client::builder().no_proxy();
    if let Some(cert) = &settings.tls.cert_path {
        let pem = std::fs::read(cert).expect("read the edge's certificate");
        let cert = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
        client = client.tls_certs_only([cert]);
    }
    client.build().expect("client")
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

/// Copies the files of a stopped service's data directory (databases with their WAL, the
/// credential, secrets) from `from` into `to`, replacing what `to` holds: what restoring a
/// backup, or cloning a VM, does to the disk.
pub fn copy_data_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(to).expect("read target dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    for entry in std::fs::read_dir(from).expect("read source dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
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
        token_version: 0,
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

/// Sends a prepared `GET /v1/status`; `None` unless the edge answers 200 with a status.
async fn edge_status(request: RequestBuilder) -> Option<EdgeStatus> {
    let response = request.send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Waits until `status` shows an edge that central has acknowledged everything from and that
/// pulled without error, and returns its status then.
pub async fn wait_settled<F, Fut>(mut status: F) -> EdgeStatus
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<EdgeStatus>>,
{
    wait_until(
        "the edge to settle with central",
        Duration::from_secs(30),
        || {
            let next = status();
            async move {
                next.await.is_some_and(|s| {
                    s.online
                        && s.pending_ops == 0
                        && s.push_error.is_none()
                        && s.pull_error.is_none()
                })
            }
        },
    )
    .await;
    status().await.expect("status")
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let outcome = tokio::time::timeout(limit, async {
        loop {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "timed out after {limit:?} waiting for {what}"
    );
}

pub use proxy::TcpProxy;

pub mod fuzz;
pub mod load;
pub mod proxy;
pub mod venue;

pub use process::EdgeProcess;

/// The real `aero-edge` and `aero-central` binaries as child processes, for what only a
/// process can show: SIGKILL, SIGTERM and its exit status, systemd notifications.
pub mod process {
    use reqwest::Client;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Output, Stdio};
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// Path of the `aero-edge` binary next to this test binary, built first.
    pub fn edge_binary() -> PathBuf {
        static BINARY: OnceLock<PathBuf> = OnceLock::new();
        BINARY.get_or_init(|| workspace_binary("aero-edge")).clone()
    }

    /// Path of the `aero-central` binary next to this test binary, built first.
    pub fn central_binary() -> PathBuf {
        static BINARY: OnceLock<PathBuf> = OnceLock::new();
        BINARY
            .get_or_init(|| workspace_binary("aero-central"))
            .clone()
    }

    /// Builds `name` and returns its path.
    ///
    /// This package is not the binary's, so Cargo does not hand over `CARGO_BIN_EXE_<name>`:
    /// the binary lives in the target directory, two levels above `deps/<test binary>`. It is
    /// (re)built with the workspace's feature set, which `cargo test --workspace` has already
    /// built (then this is a quick freshness check); otherwise it compiles once.
    fn workspace_binary(name: &str) -> PathBuf {
        // One cargo at a time: two builds in parallel would wait on the target dir's lock.
        static BUILDING: Mutex<()> = Mutex::new(());
        let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--workspace", "--bin", name, "--target-dir"])
            .arg(&target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let output = build.output().expect("run cargo build");
        assert!(
            output.status.success(),
            "building {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    }

    /// Runs `binary --data-dir DIR ARGS...` to completion with `RUST_LOG` at `log_level`;
    /// whatever it exits with is the caller's to judge.
    pub async fn run(
        binary: &Path,
        data_dir: &Path,
        args: &[impl AsRef<std::ffi::OsStr>],
        log_level: &str,
    ) -> Output {
        tokio::process::Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args.iter().map(AsRef::as_ref))
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|err| panic!("running {}: {err}", binary.display()))
    }

    /// `aero-edge --data-dir DIR enroll --central URL --token TOKEN`, run to completion.
    /// Returns its output (it pulls the initial replica and reports on stderr).
    pub async fn enroll(data_dir: &Path, central_url: &str, token: &str) -> Output {
        enroll_logging(data_dir, central_url, token, "warn").await
    }

    /// [`enroll`] with `RUST_LOG` at `log_level`.
    pub async fn enroll_logging(
        data_dir: &Path,
        central_url: &str,
        token: &str,
        log_level: &str,
    ) -> Output {
        let args = ["enroll", "--central", central_url, "--token", token];
        let output = run(&edge_binary(), data_dir, &args, log_level).await;
        assert!(
            output.status.success(),
            "aero-edge enroll failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `aero-edge --data-dir DIR ARGS...` (e.g. `backup PATH`), run to completion; the caller
    /// checks the exit status and output.
    pub async fn edge_command(data_dir: &Path, args: &[&std::ffi::OsStr]) -> Output {
        run(&edge_binary(), data_dir, args, "warn").await
    }

    /// A service binary running as a child process on a loopback port. Dropping it kills the
    /// process.
    #[derive(Debug)]
    pub struct ServiceProcess {
        pub addr: SocketAddr,
        pub client: Client,
        child: Child,
        log: PathBuf,
    }

    /// A running `aero-edge serve`.
    pub type EdgeProcess = ServiceProcess;

    /// A running `aero-central serve`.
    pub type CentralProcess = ServiceProcess;

    impl ServiceProcess {
        /// Starts `aero-edge --data-dir DIR serve` on a free loopback port with rate limits out
        /// of the way and short retry backoff; returns once `/healthz` answers. Its log is
        /// appended to `log`.
        pub async fn serve(data_dir: &Path, log: &Path) -> Self {
            Self::serve_edge_with(data_dir, log, &[]).await
        }

        /// [`ServiceProcess::serve`] with more environment variables (settings, systemd's).
        pub async fn serve_edge_with(data_dir: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
            let mut all = vec![
                ("AERO_LIMITS__REQUESTS_PER_SECOND", "100000"),
                ("AERO_LIMITS__BURST", "100000"),
                ("AERO_LIMITS__FAILED_AUTH_PER_MINUTE", "100000"),
                ("AERO_LIMITS__FAILED_AUTH_BURST", "100000"),
                ("AERO_SYNC__BACKOFF_MIN_MS", "50"),
                ("AERO_SYNC__BACKOFF_MAX_SECS", "1"),
            ];
            all.extend_from_slice(env);
            Self::spawn(edge_binary(), data_dir, log, &all).await
        }

        /// Starts `aero-central --data-dir DIR serve` on a free loopback port (SQLite store in
        /// the data dir) with `env`; returns once `/healthz` answers.
        pub async fn serve_central_with(data_dir: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
            Self::spawn(central_binary(), data_dir, log, env).await
        }

        async fn spawn(binary: PathBuf, data_dir: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
            // A child process needs the port number up front: take a free one from the kernel.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port");
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("service log");
            let child = Command::new(&binary)
                .arg("--data-dir")
                .arg(data_dir)
                .args(["serve", "--listen", &addr.to_string()])
                .env("RUST_LOG", "warn")
                // Plain text: tests search the log.
                .env("NO_COLOR", "1")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|err| panic!("spawn {}: {err}", binary.display()));
            let mut service = Self {
                addr,
                client: Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client"),
                child,
                log: log.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let healthy = service
                    .client
                    .get(service.url("/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if healthy {
                    return service;
                }
                if let Ok(Some(exit)) = service.child.try_wait() {
                    panic!(
                        "{} exited before serving ({exit}); see {}",
                        binary.display(),
                        log.display()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not become healthy; see {}",
                    binary.display(),
                    log.display()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{}", self.addr, path)
        }

        /// What the process logged so far.
        pub fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// A request authenticated with a device's API key.
        pub fn request(
            &self,
            method: reqwest::Method,
            path: &str,
            api_key: &str,
        ) -> reqwest::RequestBuilder {
            self.client
                .request(method, self.url(path))
                .header("x-api-key", api_key)
        }

        /// The edge's `/v1/status` as seen with `api_key`; `None` while the key is not accepted
        /// (or the edge does not answer).
        pub async fn status(&self, api_key: &str) -> Option<aero_shared::wire::EdgeStatus> {
            super::edge_status(self.request(reqwest::Method::GET, "/v1/status", api_key)).await
        }

        /// SIGKILL (what `Child::kill` sends on Unix): no shutdown code runs. Waits for the exit.
        pub fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Sends SIGTERM, as `systemctl stop` does, without waiting.
        pub fn terminate(&self) {
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
            // SAFETY: kill(2) on our own child's pid; it has not been reaped, so the pid is
            // still this process's.
            let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
            assert_eq!(
                sent,
                0,
                "kill -TERM {pid}: {}",
                std::io::Error::last_os_error()
            );
        }

        /// Polls until the process exits; panics if it is still running after `limit`.
        pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "the process did not exit within {limit:?}; see {}",
                    self.log.display()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    impl Drop for ServiceProcess {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// A Unix datagram socket standing in for systemd's notification socket: pass
    /// [`NotifySocket::path`] as `NOTIFY_SOCKET` to a service and read what it says.
    #[derive(Debug)]
    pub struct NotifySocket {
        socket: tokio::net::UnixDatagram,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl NotifySocket {
        pub fn bind() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("notify.sock");
            let socket = tokio::net::UnixDatagram::bind(&path).expect("bind notify socket");
            Self {
                socket,
                path,
                _dir: dir,
            }
        }

        pub fn path(&self) -> &str {
            self.path.to_str().expect("utf-8 path")
        }

        /// The next notification (e.g. `READY=1`); panics when none arrives within `limit`.
        pub async fn recv(&self, limit: Duration) -> String {
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(limit, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no notification within {limit:?}"))
                .expect("recv notification");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }

        /// Reads notifications until one contains `state` (e.g. `STOPPING=1`); returns those
        /// read before it.
        pub async fn recv_until(&self, state: &str, limit: Duration) -> Vec<String> {
            let deadline = Instant::now() + limit;
            let mut before = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let message = self.recv(left).await;
                if message.lines().any(|l| l == state) {
                    return before;
                }
                before.push(message);
            }
        }
    }
}

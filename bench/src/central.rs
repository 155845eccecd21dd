//! Central, run in-process on a loopback port with its own data directory, plus the few HQ
//! admin calls the benchmarks need (site, kiosk key, enrollment token) over its public API.

use aero_central::config::Settings;
use aero_central::store::{Actor, Store};
use aero_shared::auth::password::hash_password;
use aero_shared::auth::principal::Role;
use aero_shared::wire::{CustomerRecord, Entity, OpKind, PushOp, UserRecord, WaiverRecord};
use anyhow::Context;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

const OWNER: &str = "bench-owner";
const OWNER_PASSWORD: &str = "bench owner password, long enough";

type ServerTask = tokio::task::JoinHandle<anyhow::Result<()>>;

pub struct Central {
    pub addr: SocketAddr,
    /// A second handle on central's database, for seeding and reading the change-log head.
    pub store: Arc<dyn Store>,
    settings: Settings,
    http: reqwest::Client,
    token: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<ServerTask>,
}

impl Central {
    /// Creates the owner account, then serves on a fresh loopback port.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let mut settings = Settings {
            data_dir: Some(data_dir.to_path_buf()),
            ..Settings::default()
        };
        // The bench's HQ calls (hundreds of plugs and schedules) are setup, not what is measured.
        settings.limits.requests_per_second = 1_000_000;
        settings.limits.burst = 1_000_000;
        // The hints scenario enrolls hundreds of edges from one address.
        settings.limits.login_per_minute = 1_000_000;
        let store = aero_central::open_store(&settings).await?;
        let owner = UserRecord {
            id: Uuid::now_v7(),
            username: OWNER.into(),
            password_hash: hash_password(&SecretString::from(OWNER_PASSWORD.to_string()))?,
            role: Role::Owner,
            site_ids: Vec::new(),
            created_at: chrono::Utc::now(),
            disabled_at: None,
            token_version: 0,
        };
        store
            .create_user(&Actor::system("aero-bench"), &owner)
            .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, task) = spawn(settings.clone(), listener);
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut central = Self {
            addr,
            store,
            settings,
            http,
            token: String::new(),
            shutdown: Some(shutdown),
            task: Some(task),
        };
        let login = central
            .call(
                reqwest::Method::POST,
                "/v1/auth/login",
                Some(json!({ "username": OWNER, "password": OWNER_PASSWORD })),
                200,
            )
            .await?;
        central.token = login["access_token"]
            .as_str()
            .context("login returned no token")?
            .to_string();
        Ok(central)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (the database stays), as an outage would.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Upgraded websockets (the edges' hint sockets) do not hold up a graceful stop for
            // long; abort if they do.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Serves again on the same address, as an operator restarting the service would.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .context("binding central's port again")?;
        let (shutdown, task) = spawn(self.settings.clone(), listener);
        self.shutdown = Some(shutdown);
        self.task = Some(task);
        Ok(())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        anyhow::ensure!(status == expect, "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_site(&self, name: &str) -> anyhow::Result<Uuid> {
        let body = self
            .call(
                reqwest::Method::POST,
                "/v1/sites",
                Some(json!({
                    "name": name,
                    "timezone": "Europe/London",
                    "allowed_networks": ["127.0.0.0/8", "::1/128"],
                })),
                201,
            )
            .await?;
        Ok(body["id"].as_str().context("site id")?.parse()?)
    }

    /// Registers a device and returns its API key.
    pub async fn create_device(&self, site: Uuid, kind: &str) -> anyhow::Result<String> {
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sites/{site}/devices"),
                Some(json!({ "name": format!("bench {kind}"), "kind": kind })),
                201,
            )
            .await?;
        Ok(body["api_key"].as_str().context("api_key")?.to_string())
    }

    pub async fn enrollment_token(&self, site: Uuid) -> anyhow::Result<String> {
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sites/{site}/enrollment-tokens"),
                Some(json!({})),
                201,
            )
            .await?;
        Ok(body["token"].as_str().context("token")?.to_string())
    }

    /// Enrolls an edge for `site` over the public enrollment route and returns its API key.
    pub async fn enroll_edge(&self, site: Uuid) -> anyhow::Result<String> {
        let token = self.enrollment_token(site).await?;
        let body = self
            .call(
                reqwest::Method::POST,
                "/v1/edge/enroll",
                Some(json!({ "token": token, "name": "bench edge" })),
                200,
            )
            .await?;
        Ok(body["api_key"].as_str().context("api_key")?.to_string())
    }

    /// Renames a site over HQ's API: a change in that venue's scope only.
    pub async fn rename_site(&self, site: Uuid, name: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/v1/sites/{site}"),
            Some(json!({ "name": name })),
            200,
        )
        .await?;
        Ok(())
    }

    /// Configures a plug at `site` over HQ's API (a simulated one on loopback) and returns its
    /// id.
    pub async fn create_plug(&self, site: Uuid, name: &str, port: u16) -> anyhow::Result<Uuid> {
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sites/{site}/plugs"),
                Some(json!({ "name": name, "host": "127.0.0.1", "port": port, "child_id": null })),
                201,
            )
            .await?;
        Ok(body["id"].as_str().context("plug id")?.parse()?)
    }

    /// Gives a plug a power schedule over HQ's API.
    pub async fn create_schedule(&self, plug: Uuid, cron: &str, state: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/plugs/{plug}/schedules"),
            Some(json!({ "cron": cron, "state": state })),
            201,
        )
        .await?;
        Ok(())
    }

    /// Creates a product over HQ's API and returns its id.
    pub async fn create_product(&self, body: Value) -> anyhow::Result<Uuid> {
        let body = self
            .call(reqwest::Method::POST, "/v1/products", Some(body), 201)
            .await?;
        Ok(body["id"].as_str().context("product id")?.parse()?)
    }

    /// Puts `count` customers, each with a valid waiver signed at `site`, into central's change
    /// feed through `Store::push` (continuing `site`'s sequence); returns their ids. They can
    /// buy passes and check in at any venue.
    pub async fn seed_jumpers(&self, site: Uuid, count: u64) -> anyhow::Result<Vec<Uuid>> {
        let now = chrono::Utc::now();
        let birth = chrono::NaiveDate::from_ymd_opt(1990, 1, 1).context("date")?;
        let mut seq = self.store.acked_seq(site).await?;
        let mut ids = Vec::new();
        for first in (0..count).step_by(500) {
            let mut ops = Vec::new();
            for i in first..(first + 500).min(count) {
                let customer = CustomerRecord {
                    id: Uuid::now_v7(),
                    first_name: format!("Jumper{i}"),
                    last_name: "Customer".into(),
                    birth_date: birth,
                    phone: Some(format!("+4488{i:08}")),
                    email: None,
                    guardian_id: None,
                    home_site_id: site,
                    created_at: now,
                };
                let waiver = WaiverRecord {
                    id: Uuid::now_v7(),
                    customer_id: customer.id,
                    site_id: site,
                    signer_name: format!("Jumper{i}"),
                    signed_at: now,
                    expires_at: now + chrono::Duration::days(365),
                    text_version: None,
                };
                ids.push(customer.id);
                for (entity, id, data) in [
                    (
                        Entity::Customer,
                        customer.id,
                        serde_json::value::to_raw_value(&customer)?,
                    ),
                    (
                        Entity::Waiver,
                        waiver.id,
                        serde_json::value::to_raw_value(&waiver)?,
                    ),
                ] {
                    seq += 1;
                    ops.push(PushOp {
                        seq,
                        op_id: Uuid::now_v7(),
                        entity,
                        entity_id: id,
                        kind: OpKind::Upsert,
                        data,
                    });
                }
            }
            let outcome = self.store.push(site, &ops, now).await?;
            anyhow::ensure!(
                outcome.rejected.is_empty() && outcome.acked_seq == seq,
                "seeding was refused: {outcome:?}"
            );
        }
        Ok(ids)
    }

    /// Puts `count` customers into central's change feed as if another venue (`site`) had
    /// registered and pushed them, through the same `Store::push` the sync endpoint uses.
    pub async fn seed_customers(&self, site: Uuid, count: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let now = chrono::Utc::now();
        let birth = chrono::NaiveDate::from_ymd_opt(1990, 1, 1).context("date")?;
        let mut seq = 0i64;
        let mut n = 0u64;
        while n < count {
            let batch = (count - n).min(1000);
            let ops: Vec<PushOp> = (n..n + batch)
                .map(|i| {
                    seq += 1;
                    let customer = CustomerRecord {
                        id: Uuid::now_v7(),
                        first_name: format!("Seeded{i}"),
                        last_name: "Customer".into(),
                        birth_date: birth,
                        phone: Some(seeded_phone(i)),
                        email: Some(format!("seeded{i}@example.com")),
                        guardian_id: None,
                        home_site_id: site,
                        created_at: now,
                    };
                    Ok(PushOp {
                        seq,
                        op_id: Uuid::now_v7(),
                        entity: Entity::Customer,
                        entity_id: customer.id,
                        kind: OpKind::Upsert,
                        data: serde_json::value::to_raw_value(&customer)?,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let outcome = self.store.push(site, &ops, now).await?;
            anyhow::ensure!(
                outcome.rejected.is_empty() && outcome.acked_seq == seq,
                "seeding was refused: {outcome:?}"
            );
            n += batch;
        }
        Ok(started.elapsed())
    }
}

/// The normalised phone number of seeded customer `i` (unique per customer).
///
/// Customers seeded with a waiver ([`Central::seed_jumpers`]) use `+4488...` instead.
pub fn seeded_phone(i: u64) -> String {
    format!("+4477{i:08}")
}

fn spawn(settings: Settings, listener: TcpListener) -> (oneshot::Sender<()>, ServerTask) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(aero_central::launch(settings, listener, async move {
        let _ = rx.await;
    }));
    (tx, task)
}

impl Drop for Central {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

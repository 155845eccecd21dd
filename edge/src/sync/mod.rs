//! Sync with central: push the outbox first, then pull the change feed.
//!
//! [`SyncEngine`] exposes each step ([`SyncEngine::push_all`], [`SyncEngine::pull_all`],
//! [`SyncEngine::run_once`]) so tests can drive it deterministically; [`SyncEngine::run`] loops
//! them with capped, jittered exponential backoff, and [`SyncEngine::listen_for_hints`] keeps a
//! websocket to central that asks for a pull whenever central's change log grows.

use crate::config::SyncSettings;
use crate::credential::Credential;
use crate::outbox::{self, Writer};
use crate::replica::{Replica, apply};
use aero_shared::auth::extract::API_KEY_HEADER;
use aero_shared::wire::{Entity, PullResponse, PushRequest, PushResponse};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Central sends a ping every 20 s; this much silence means the hint socket is dead.
const HINT_SILENCE: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sync round kicked by a local write waits for more writes to join it. A venue
/// taking thousands of writes a second would otherwise start a round (two requests to central
/// and a writer transaction) per write and run into central's rate limit; 25 ms is still far
/// inside "changes reach central in about a second".
const KICK_COALESCE: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Worth retrying soon: network trouble, timeouts, 5xx, 429.
    #[error("central unavailable: {0}")]
    Transient(String),
    /// Central answered and refused (e.g. a revoked key); retried slowly, needs an operator.
    #[error("central refused: {0}")]
    Refused(String),
    /// The edge's own database failed.
    #[error("local error: {0:#}")]
    Local(#[from] anyhow::Error),
}

/// What one push round achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub acked: usize,
    pub rejected: usize,
}

pub struct SyncEngine {
    http: reqwest::Client,
    credential: Credential,
    settings: SyncSettings,
    replica: Arc<Replica>,
    writer: Writer,
    /// Signalled by the hint socket: central has something new.
    pull_wanted: Notify,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("credential", &self.credential)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    pub fn new(
        credential: Credential,
        settings: SyncSettings,
        replica: Arc<Replica>,
        writer: Writer,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            credential,
            settings,
            replica,
            writer,
            pull_wanted: Notify::new(),
        })
    }

    fn backoff(&self) -> backon::ExponentialBackoff {
        let min = Duration::from_millis(self.settings.backoff_min_ms.max(1));
        let max = Duration::from_secs(self.settings.backoff_max_secs.max(1)).max(min);
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.credential.central())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, SyncError> {
        let response = request
            .header(API_KEY_HEADER, self.credential.api_key.expose_secret())
            .send()
            .await
            .map_err(|err| SyncError::Transient(describe(&err)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let message = format!("{status}: {detail}");
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(SyncError::Transient(message))
        } else {
            Err(SyncError::Refused(message))
        }
    }

    /// Sends one batch of pending ops and records central's answer. `Ok(None)` when the outbox
    /// was empty.
    pub async fn push_batch(&self) -> Result<Option<PushSummary>, SyncError> {
        let (max_ops, max_bytes) = (self.settings.push_batch_ops, self.settings.push_batch_bytes);
        let ops = self
            .replica
            .read(move |c| outbox::pending(c, max_ops, max_bytes))
            .await?;
        let Some(first) = ops.first().map(|op| op.seq) else {
            return Ok(None);
        };
        let count = ops.len();
        let response: PushResponse = self
            .send(
                self.http
                    .post(self.url("/v1/sync/push"))
                    .json(&PushRequest { ops }),
            )
            .await?
            .json()
            .await
            .map_err(|err| SyncError::Transient(format!("reading the push answer: {err}")))?;
        let rejected = response.rejected.clone();
        let acked_seq = response.acked_seq;
        let now = Utc::now();
        let lowest = self
            .writer
            .write(move |c| outbox::settle(c, acked_seq, &rejected, now))
            .await?;
        if !response.rejected.is_empty() {
            tracing::warn!(
                count = response.rejected.len(),
                "central rejected ops; moved to dead letters"
            );
        }
        if lowest == Some(first) {
            // Nothing moved. Central wants an earlier seq this edge no longer holds (or answered
            // nonsense): resending would loop forever, so stop and say so.
            let wanted = response.expected_seq.unwrap_or(acked_seq + 1);
            return Err(SyncError::Refused(format!(
                "central expects seq {wanted} but the outbox starts at {first} ({count} ops pending)"
            )));
        }
        let remaining_from = lowest.unwrap_or(i64::MAX);
        Ok(Some(PushSummary {
            acked: ops_below(first, remaining_from, count),
            rejected: response.rejected.len(),
        }))
    }

    /// Pushes until the outbox is empty. Ops written meanwhile are included.
    pub async fn push_all(&self) -> Result<PushSummary, SyncError> {
        let mut total = PushSummary::default();
        while let Some(batch) = self.push_batch().await? {
            total.acked += batch.acked;
            total.rejected += batch.rejected;
        }
        Ok(total)
    }

    /// Pulls pages until central has nothing more; each page and its cursor commit together.
    /// Returns the number of changes applied.
    pub async fn pull_all(&self) -> Result<usize, SyncError> {
        let mut applied = 0;
        loop {
            let cursor: i64 = self
                .replica
                .read(|c| {
                    Ok(
                        c.query_row("SELECT cursor FROM sync_state WHERE id = 1", [], |r| {
                            r.get(0)
                        })?,
                    )
                })
                .await?;
            let page: PullResponse = self
                .send(self.http.get(self.url(&format!(
                    "/v1/sync/pull?after={cursor}&limit={}",
                    self.settings.pull_page_rows.max(1)
                ))))
                .await?
                .json()
                .await
                .map_err(|err| SyncError::Transient(format!("reading a pull page: {err}")))?;
            let more = page.more && page.next_cursor > cursor;
            let now = Utc::now();
            let touches_devices = page.changes.iter().any(|c| c.entity == Entity::Device);
            let outcome = self
                .writer
                .write(move |c| apply::apply_page(c, &page.changes, page.next_cursor, now))
                .await;
            if touches_devices {
                // After the commit (or a failure that may still have committed): cached
                // credentials must be read again, a key may have been revoked.
                self.replica.devices_changed();
            }
            applied += outcome?;
            if !more {
                return Ok(applied);
            }
        }
    }

    /// One full round: push first (so central's copy reflects the venue), then pull.
    pub async fn run_once(&self) -> Result<(), SyncError> {
        self.push_all().await?;
        self.pull_all().await?;
        Ok(())
    }

    async fn record_failure(&self, err: &SyncError) {
        let central_failed = !matches!(err, SyncError::Local(_));
        let message = err.to_string();
        tracing::warn!(error = %message, "sync round failed");
        let result = self
            .writer
            .write(move |c| {
                c.execute(
                    "UPDATE sync_state SET last_error = ?1, online = CASE WHEN ?2 THEN 0 ELSE online END WHERE id = 1",
                    rusqlite::params![message, central_failed],
                )?;
                Ok(())
            })
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "could not record the sync failure");
        }
    }

    /// Loops sync rounds until `shutdown` flips. After success it waits for a local write, a
    /// hint or the pull interval; after a failure for a backoff delay, cut short by a local
    /// write, so a backlog drains on its own once central is back.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let local_writes = self.writer.outbox_notify();
        let mut backoff = self.backoff();
        let interval = Duration::from_secs(self.settings.pull_interval_secs.max(1));
        loop {
            // Shutdown does not wait for a slow central: an interrupted push is simply resent
            // on the next start, and central ignores seqs it already holds.
            let outcome = tokio::select! {
                outcome = self.run_once() => outcome,
                () = stopped(&mut shutdown) => return,
            };
            let wait = match outcome {
                Ok(()) => {
                    backoff = self.backoff();
                    interval
                }
                Err(err) => {
                    self.record_failure(&err).await;
                    backoff.next().unwrap_or(interval)
                }
            };
            let kicked_by_write = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                () = local_writes.notified() => true,
                () = self.pull_wanted.notified() => false,
                () = stopped(&mut shutdown) => return,
            };
            if kicked_by_write {
                // Writes arriving together share one round instead of one round each.
                tokio::select! {
                    () = tokio::time::sleep(KICK_COALESCE) => {}
                    () = stopped(&mut shutdown) => return,
                }
            }
        }
    }

    /// Keeps a websocket to central's `/v1/sync/notify`; every `{"head":N}` asks for a pull.
    /// Reconnects with backoff; the periodic pull covers the time it is down.
    ///
    /// Losing the socket also asks for a sync round, so an idle edge finds out (and says in its
    /// status) that central is gone instead of reporting `online` until the next periodic pull.
    pub async fn listen_for_hints(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = self.backoff();
        let mut link_up = false;
        loop {
            let mut connected = false;
            tokio::select! {
                outcome = self.hint_session(&mut backoff, &mut connected) => {
                    if let Err(err) = outcome {
                        tracing::debug!(error = %err, "change-hint socket closed");
                    }
                }
                () = stopped(&mut shutdown) => return,
            }
            // An established socket ended, or the first reconnect after it failed (a round
            // kicked by the close alone can still reach a central that is shutting down).
            if connected || link_up {
                self.pull_wanted.notify_one();
            }
            link_up = connected;
            let wait = backoff.next().unwrap_or(HINT_SILENCE);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn hint_session(
        &self,
        backoff: &mut backon::ExponentialBackoff,
        connected: &mut bool,
    ) -> anyhow::Result<()> {
        let base = self.credential.central();
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            anyhow::bail!("central URL {base} is neither http nor https");
        };
        let mut request = format!("{ws_base}/v1/sync/notify").into_client_request()?;
        request.headers_mut().insert(
            API_KEY_HEADER,
            HeaderValue::from_str(self.credential.api_key.expose_secret())?,
        );
        let (mut socket, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| anyhow::anyhow!("connecting the hint socket timed out"))??;
        *backoff = self.backoff();
        *connected = true;
        loop {
            let message = tokio::time::timeout(HINT_SILENCE, socket.next())
                .await
                .map_err(|_| anyhow::anyhow!("no message from central for {HINT_SILENCE:?}"))?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    let hint: Option<serde_json::Value> = serde_json::from_str(text.as_str()).ok();
                    if hint
                        .as_ref()
                        .and_then(|h| h.get("head"))
                        .is_some_and(serde_json::Value::is_i64)
                    {
                        self.pull_wanted.notify_one();
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }
}

/// How many of `count` ops starting at `first` are now gone from the outbox.
fn ops_below(first: i64, lowest_remaining: i64, count: usize) -> usize {
    usize::try_from(lowest_remaining.saturating_sub(first))
        .unwrap_or(0)
        .min(count)
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

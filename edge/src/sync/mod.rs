//! Sync with central: push the outbox, pull the change feed.
//!
//! [`SyncEngine`] exposes each step ([`SyncEngine::push_all`], [`SyncEngine::pull_all`],
//! [`SyncEngine::run_once`]) so tests can drive it deterministically; [`SyncEngine::run`] runs a
//! push loop and a pull loop side by side, each with its own capped, jittered exponential
//! backoff, so a push that keeps failing never stops pulls (a revoked key still arrives); and
//! [`SyncEngine::listen_for_hints`] keeps a websocket to central that asks for a pull whenever
//! central's change log grows. What happens when central is not the central the edge left is in
//! [`recovery`]; the whole protocol is in `docs/sync-protocol.md`.

pub mod initial;
pub mod progress;
pub mod recovery;

use crate::config::SyncSettings;
use crate::credential::Credential;
use crate::outbox::settle::{Settled, settle};
use crate::outbox::{self, Writer};
use crate::replica::Replica;
use crate::replica::apply::{self, PageOutcome, PulledPage};
use crate::sync::progress::PullProgress;
use aero_shared::auth::extract::API_KEY_HEADER;
use aero_shared::pipeline::REQUEST_ID_HEADER;
use aero_shared::wire::{ChangeAnchor, Entity, OutboxBacklog, PushRequest, PushResponse};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures_util::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::Instrument;

/// Central sends a ping every 20 s; this much silence means the hint socket is dead.
const HINT_SILENCE: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sync round kicked by a local write waits for more writes to join it. A venue
/// taking thousands of writes a second would otherwise start a round (two requests to central
/// and a writer transaction) per write and run into central's rate limit; 25 ms is still far
/// inside "changes reach central in about a second".
const KICK_COALESCE: Duration = Duration::from_millis(25);
/// After a failed push, the soonest a local write brings the next attempt forward: a venue
/// keeps writing through an outage, and each attempt costs a connection and a log line.
const WRITE_RETRY_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Worth retrying soon: network trouble, timeouts, 5xx, 429.
    #[error("central unavailable: {0}")]
    Transient(String),
    /// Central answered and refused (e.g. a revoked key); retried slowly, needs an operator.
    #[error("central refused: {0}")]
    Refused(String),
    /// Central refused the edge's credential: it was revoked (the site was enrolled on another
    /// box) or central does not know it. The edge stops syncing and taking writes.
    #[error("central refused this edge's credential ({0}); enroll this box again")]
    Fenced(String),
    /// The edge's own database failed.
    #[error("local error: {0:#}")]
    Local(anyhow::Error),
}

impl From<anyhow::Error> for SyncError {
    fn from(err: anyhow::Error) -> Self {
        // Answers from another chain's database are refused in the writer's transaction.
        if err.downcast_ref::<recovery::WrongCentral>().is_some() {
            return Self::Refused(err.to_string());
        }
        Self::Local(err)
    }
}

/// What one push round achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub acked: usize,
    pub rejected: usize,
}

/// Which of the two loops a failure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Push,
    Pull,
}

/// While a push round drains a backlog, central's head moves with every batch and each move
/// asks for a pull. Pulling the batches' echoes one by one would compete with the drain for the
/// writer and for central, so pulls are this far apart while a round runs (a revoked key still
/// arrives within about a second), and one follows the end of the round.
const PULL_SPACING_WHILE_PUSHING: Duration = Duration::from_secs(1);

/// How often the retention window is trimmed (it is bounded by age and count).
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// The most retained ops one writer transaction of a trim drops: a few milliseconds of the
/// writer's time (each op leaves the table and three indexes). A window 100,000 ops over its
/// bound used to be dropped in one transaction that held every terminal's write for half a
/// second.
const TRIM_STEP_OPS: usize = 500;

pub struct SyncEngine {
    http: reqwest::Client,
    credential: Credential,
    settings: SyncSettings,
    replica: Arc<Replica>,
    writer: Writer,
    /// Signalled by the hint socket (central has something new) and after a push central
    /// took (its echo, and rows held back for the pushed ops, are waiting).
    pull_wanted: Notify,
    /// Signalled when a pull found that central lost ops the edge must send again, and when
    /// the hint socket connects (central is back).
    push_wanted: Notify,
    /// True while a push round drains a backlog central is taking (from its first accepted
    /// batch to the round's end): pulls are then spaced out (see [`PULL_SPACING_WHILE_PUSHING`]).
    /// A round that cannot reach central never sets it, so a pull noticing the outage is never
    /// held back.
    pushing: watch::Sender<bool>,
    /// Set once central refused the credential; both loops then stop for good.
    fenced: AtomicBool,
    /// Central's change-log head as the last pull page reported it (a metric).
    central_head: Gauge,
    /// Changes central held past this edge's cursor at the last pull page: 0 once a page said
    /// there is no more, else central's head minus the cursor (an upper bound, as the head
    /// counts other sites' changes too). A metric.
    replica_lag_changes: Gauge,
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
        let fenced = replica.read_now(recovery::fenced)?.is_some();
        Ok(Self {
            http,
            credential,
            settings,
            replica,
            writer,
            pull_wanted: Notify::new(),
            push_wanted: Notify::new(),
            fenced: AtomicBool::new(fenced),
            pushing: watch::Sender::new(false),
            central_head: Gauge::default(),
            replica_lag_changes: Gauge::default(),
        })
    }

    /// Reports central's change-log head and this edge's lag behind it, as each pull page
    /// tells them, into these gauges.
    pub fn with_lag_gauges(mut self, central_head: Gauge, replica_lag_changes: Gauge) -> Self {
        self.central_head = central_head;
        self.replica_lag_changes = replica_lag_changes;
        self
    }

    /// Whether central has fenced this edge.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
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

    /// Sends one request to central with this edge's key and a fresh `x-request-id` (a UUIDv7)
    /// that central keeps for its own log lines: the request's span here carries the same id,
    /// so one id finds the request on both sides.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, SyncError> {
        let request_id = uuid::Uuid::now_v7().to_string();
        let request = request
            .header(API_KEY_HEADER, self.credential.api_key.expose_secret())
            .header(REQUEST_ID_HEADER, &request_id)
            .build()
            .map_err(|err| SyncError::Transient(describe(&err)))?;
        let span = tracing::info_span!(
            "sync_request",
            method = %request.method(),
            path = %request.url().path(),
            request_id = %request_id,
        );
        self.execute(request).instrument(span).await
    }

    async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, SyncError> {
        let started = Instant::now();
        let response = self.http.execute(request).await.map_err(|err| {
            let reason = describe(&err);
            tracing::debug!(error = %reason, "sync request failed before an answer");
            SyncError::Transient(reason)
        })?;
        let status = response.status();
        let elapsed_ms = started.elapsed().as_millis();
        if status.is_success() {
            tracing::debug!(%status, elapsed_ms, "central answered");
            return Ok(response);
        }
        tracing::info!(%status, elapsed_ms, "central answered with an error");
        let detail: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let message = format!("{status}: {detail}");
        if status.as_u16() == 401 {
            return Err(SyncError::Fenced(message));
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(SyncError::Transient(message))
        } else {
            Err(SyncError::Refused(message))
        }
    }

    /// Sends one batch of pending ops and records central's answer. `Ok(None)` when the outbox
    /// was empty.
    pub async fn push_batch(&self) -> Result<Option<Settled>, SyncError> {
        let (max_ops, max_bytes) = (self.settings.push_batch_ops, self.settings.push_batch_bytes);
        let (ops, store_id, known_acked) = self
            .replica
            .read(move |c| {
                Ok((
                    outbox::pending(c, max_ops, max_bytes)?,
                    recovery::bound_store(c)?,
                    recovery::highest_acked(c)?,
                ))
            })
            .await?;
        if ops.is_empty() {
            return Ok(None);
        }
        // The read may have seen ops committed a moment ago whose fsync is still running: none
        // leaves the box before it is durable (see `outbox::durable`).
        self.writer.durable().await.map_err(SyncError::Local)?;
        let batch: Vec<(i64, uuid::Uuid)> = ops.iter().map(|op| (op.seq, op.op_id)).collect();
        let response: PushResponse = self
            .send(
                self.http
                    .post(self.url("/v1/sync/push"))
                    .json(&PushRequest { ops, store_id }),
            )
            .await?
            .json()
            .await
            .map_err(|err| SyncError::Transient(format!("reading the push answer: {err}")))?;
        let wanted = response.expected_seq.unwrap_or(response.acked_seq + 1);
        let settled = self
            .writer
            .write(move |c| settle(c, &batch, known_acked, &response, Utc::now()))
            .await?;
        if settled.rejected > 0 {
            tracing::warn!(
                count = settled.rejected,
                "central rejected ops; moved to dead letters"
            );
        }
        if settled.rolled_back {
            // The replica is pulled again from the start.
            self.pull_wanted.notify_one();
        }
        if !settled.progressed() {
            // Nothing moved and nothing will on a resend: stop and say so.
            return Err(SyncError::Refused(format!(
                "central expects seq {wanted} and took nothing of this batch"
            )));
        }
        Ok(Some(settled))
    }

    /// Pushes until the outbox is empty. Ops written meanwhile are included.
    pub async fn push_all(&self) -> Result<PushSummary, SyncError> {
        let outcome = self.push_batches().await;
        self.pushing.send_replace(false);
        outcome
    }

    async fn push_batches(&self) -> Result<PushSummary, SyncError> {
        let mut total = PushSummary::default();
        while let Some(batch) = self.push_batch().await? {
            // Central is taking a backlog: pulls space out until the round ends.
            self.pushing.send_replace(true);
            total.acked += batch.confirmed;
            total.rejected += batch.rejected;
        }
        Ok(total)
    }

    /// Pulls pages until central has nothing more; each page and its cursor commit together.
    /// Returns the number of changes applied.
    pub async fn pull_all(&self) -> Result<usize, SyncError> {
        self.pull_pages(None).await
    }

    /// [`SyncEngine::pull_all`], reporting each applied page to `progress`.
    pub async fn pull_all_with(&self, progress: &mut PullProgress) -> Result<usize, SyncError> {
        self.pull_pages(Some(progress)).await
    }

    /// Whether the replica has never pulled anything (a new box, or one rebuilt from cursor 0):
    /// its next pull is the initial one, worth showing progress for.
    pub async fn replica_is_empty(&self) -> Result<bool, SyncError> {
        let (cursor, _) = self.replica.read(read_cursor).await?;
        Ok(cursor == 0)
    }

    async fn pull_pages(
        &self,
        mut progress: Option<&mut PullProgress>,
    ) -> Result<usize, SyncError> {
        let mut applied = 0;
        loop {
            let ((cursor, anchor), known_acked, backlog) = self
                .replica
                .read(|c| {
                    Ok((
                        read_cursor(c)?,
                        recovery::highest_acked(c)?,
                        crate::outbox::backlog(c)?,
                    ))
                })
                .await?;
            let page: PulledPage = self
                .send(self.http.get(self.url(&pull_path(
                    cursor,
                    self.settings.pull_page_rows.max(1),
                    &backlog,
                ))))
                .await?
                .json()
                .await
                .map_err(|err| SyncError::Transient(format!("reading a pull page: {err}")))?;
            let more = page.more && page.next_cursor > cursor;
            let (next_cursor, head) = (page.next_cursor, page.head);
            self.central_head.set(page.head);
            self.replica_lag_changes.set(if more {
                (page.head - page.next_cursor).max(0)
            } else {
                0
            });
            let entities = page.entities();
            let touches = |any_of: &[Entity]| any_of.iter().any(|e| entities.contains(e));
            let touches_devices = touches(&[Entity::Device]);
            let touches_plugs = touches(&[
                Entity::Plug,
                Entity::PlugSchedule,
                Entity::PlugOverride,
                Entity::Site,
            ]);
            // HQ's decisions about dead letters queue ops (a retried write, the decision).
            let queues_ops = touches(&[Entity::DeadLetterRequest]);
            let outcome = self
                .writer
                .write(move |c| take_page(c, cursor, anchor, known_acked, &page))
                .await;
            if touches_devices || matches!(outcome, Ok(Taken::Applied(o)) if o.resync_finished) {
                // After the commit (or a failure that may still have committed): cached
                // credentials must be read again, a key may have been revoked.
                self.replica.devices_changed();
            }
            if touches_plugs || matches!(outcome, Ok(Taken::Applied(o)) if o.resync_finished) {
                self.replica.plugs_changed();
            }
            match outcome? {
                Taken::Applied(page) => {
                    if queues_ops {
                        self.push_wanted.notify_one();
                    }
                    applied += page.applied;
                    if let Some(progress) = progress.as_deref_mut() {
                        progress.page(page.applied, next_cursor, head);
                    }
                    if !more {
                        return Ok(applied);
                    }
                }
                Taken::CentralRestored { ops_to_resend } => {
                    if ops_to_resend {
                        self.push_wanted.notify_one();
                    }
                }
            }
        }
    }

    /// One full round: push first (so central's copy reflects the venue), then pull.
    pub async fn run_once(&self) -> Result<(), SyncError> {
        self.push_all().await?;
        self.pull_all().await?;
        Ok(())
    }

    async fn record_failure(&self, direction: Direction, err: &SyncError) {
        if matches!(err, SyncError::Fenced(_)) {
            let reason = err.to_string();
            tracing::error!(%reason, "central fenced this edge: sync and local writes stop");
            let stored = reason.clone();
            if let Err(err) = self
                .writer
                .write(move |c| recovery::fence(c, &stored))
                .await
            {
                tracing::error!(error = %err, "could not record the fence");
            }
            self.fenced.store(true, Ordering::Release);
            return;
        }
        let unreachable = matches!(err, SyncError::Transient(_));
        let message = err.to_string();
        tracing::warn!(error = %message, ?direction, "sync round failed");
        let column = match direction {
            Direction::Push => "push_error",
            Direction::Pull => "pull_error",
        };
        let result = self
            .writer
            .write(move |c| {
                c.execute(
                    &format!("UPDATE sync_state SET last_error = ?1, {column} = ?1, online = CASE WHEN ?2 THEN 0 ELSE online END WHERE id = 1"),
                    rusqlite::params![message, unreachable],
                )?;
                Ok(())
            })
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "could not record the sync failure");
        }
    }

    /// Runs the push loop and the pull loop until `shutdown` flips.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        tokio::join!(
            Arc::clone(&self).run_pushes(shutdown.clone()),
            self.run_pulls(shutdown),
        );
    }

    /// Pushes whenever a local write lands, central asks for ops again, or the interval passes.
    /// After a failure it waits out a backoff delay, which ends early once central is known to
    /// be back (the hint socket reconnects or a pull succeeds), so a backlog drains on its own.
    /// A local write also ends it, but no sooner than [`WRITE_RETRY_SPACING`] after the
    /// failure: a busy venue in an outage would otherwise try central, and log the failure, at
    /// the pace of its writes.
    async fn run_pushes(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let local_writes = self.writer.outbox_notify();
        let mut backoff = self.backoff();
        let interval = Duration::from_secs(self.settings.pull_interval_secs.max(1));
        while !self.is_fenced() {
            // Shutdown does not wait for a slow central: an interrupted push is simply resent
            // on the next start, and central never applies an op id twice.
            let outcome = tokio::select! {
                outcome = self.push_all() => outcome,
                () = stopped(&mut shutdown) => return,
            };
            let (wait, failed) = match outcome {
                Ok(summary) => {
                    backoff = self.backoff();
                    if summary.acked > 0 || summary.rejected > 0 {
                        self.pull_wanted.notify_one();
                    }
                    (interval, false)
                }
                Err(err) => {
                    self.record_failure(Direction::Push, &err).await;
                    (backoff.next().unwrap_or(interval), true)
                }
            };
            let round_ended = tokio::time::Instant::now();
            let due = round_ended + wait;
            let kicked_by_write = tokio::select! {
                () = tokio::time::sleep_until(due) => false,
                () = local_writes.notified() => true,
                () = self.push_wanted.notified() => false,
                () = stopped(&mut shutdown) => return,
            };
            if kicked_by_write {
                // Writes arriving together share one round instead of one round each.
                let hold_until = if failed {
                    due.min(round_ended + WRITE_RETRY_SPACING)
                } else {
                    tokio::time::Instant::now() + KICK_COALESCE
                };
                tokio::select! {
                    () = tokio::time::sleep_until(hold_until) => {}
                    () = self.push_wanted.notified(), if failed => {}
                    () = stopped(&mut shutdown) => return,
                }
            }
        }
        stopped(&mut shutdown).await;
    }

    /// Pulls on a hint, after a push central took, or every pull interval; failures back off on
    /// their own schedule, independent of pushes.
    async fn run_pulls(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = self.backoff();
        let interval = Duration::from_secs(self.settings.pull_interval_secs.max(1));
        let mut last_trim: Option<Instant> = None;
        let mut pushing = self.pushing.subscribe();
        let mut last_pull: Option<Instant> = None;
        let mut failing = false;
        // A first start pulls the whole replica: its progress is shown until it completes.
        let mut initial = match self.replica_is_empty().await {
            Ok(true) => Some(PullProgress::on_stderr()),
            _ => None,
        };
        while !self.is_fenced() {
            if let Some(at) = last_pull.filter(|_| *pushing.borrow()) {
                tokio::select! {
                    () = tokio::time::sleep_until((at + PULL_SPACING_WHILE_PUSHING).into()) => {}
                    _ = pushing.wait_for(|active| !active) => {}
                    () = stopped(&mut shutdown) => return,
                }
            }
            last_pull = Some(Instant::now());
            let outcome = tokio::select! {
                outcome = self.pull_pages(initial.as_mut()) => outcome,
                () = stopped(&mut shutdown) => return,
            };
            let wait = match outcome {
                Ok(_) => {
                    if let Some(mut progress) = initial.take() {
                        progress.finish();
                    }
                    if failing {
                        // Central answers again: pushes waiting out a backoff go now.
                        failing = false;
                        self.push_wanted.notify_one();
                    }
                    backoff = self.backoff();
                    if last_trim.is_none_or(|at| at.elapsed() >= TRIM_EVERY) {
                        last_trim = Some(Instant::now());
                        self.trim_retention().await;
                    }
                    interval
                }
                Err(err) => {
                    failing = true;
                    self.record_failure(Direction::Pull, &err).await;
                    backoff.next().unwrap_or(interval)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.pull_wanted.notified() => {}
                () = stopped(&mut shutdown) => return,
            }
        }
        stopped(&mut shutdown).await;
    }

    /// Trims the retention window in steps of [`TRIM_STEP_OPS`], each a writer transaction of
    /// its own, so terminals' writes never wait behind more than one step.
    async fn trim_retention(&self) {
        let (days, ops) = (
            self.settings.retention_days,
            self.settings.retention_max_ops,
        );
        let mut dropped = 0;
        loop {
            let step = self
                .writer
                .write(move |c| recovery::trim_retention(c, Utc::now(), days, ops, TRIM_STEP_OPS))
                .await;
            match step {
                Ok(n) => {
                    dropped += n;
                    if n < TRIM_STEP_OPS {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not trim the retention window");
                    break;
                }
            }
        }
        if dropped > 0 {
            tracing::debug!(dropped, "trimmed the retention window");
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
        while !self.is_fenced() {
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
        let request_id = uuid::Uuid::now_v7().to_string();
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, HeaderValue::from_str(&request_id)?);
        // HQ's chain overview shows which version each venue runs.
        request.headers_mut().insert(
            "x-aero-edge-version",
            HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        tracing::debug!(%request_id, "opening the change-hint socket");
        let (mut socket, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(
                request,
                Some(hint_socket_config()),
                false,
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting the hint socket timed out"))??;
        *backoff = self.backoff();
        *connected = true;
        // Central is reachable (again): a backlog waiting out a push backoff goes now.
        self.push_wanted.notify_one();
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

/// The hint socket reads in small steps: central sends nothing on it but `{"head":N}` and pings.
fn hint_socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(aero_shared::websocket::READ_BUFFER_BYTES)
}

/// The pull request for the page after `cursor`, telling central what waits in the outbox so
/// HQ sees the venue's backlog.
fn pull_path(cursor: i64, limit: u32, backlog: &OutboxBacklog) -> String {
    let mut path = format!(
        "/v1/sync/pull?after={cursor}&limit={limit}&pending_ops={}",
        backlog.pending_ops
    );
    if let Some(oldest) = backlog.oldest_pending_at {
        // UTC with a `Z`: nothing in it needs escaping in a query string.
        path.push_str("&oldest_pending_at=");
        path.push_str(&aero_shared::timestamp::millis(oldest));
    }
    path
}

fn read_cursor(c: &rusqlite::Connection) -> anyhow::Result<(i64, Option<ChangeAnchor>)> {
    let (cursor, anchor): (i64, Option<String>) = c.query_row(
        "SELECT cursor, cursor_anchor FROM sync_state WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((
        cursor,
        anchor.map(|a| serde_json::from_str(&a)).transpose()?,
    ))
}

/// What the writer did with a pulled page.
enum Taken {
    Applied(PageOutcome),
    /// Central was restored from a backup; the page was not applied and the replica is pulled
    /// again from cursor 0. `ops_to_resend` when acknowledged ops went back to the outbox.
    CentralRestored {
        ops_to_resend: bool,
    },
}

/// Checks a page against what the edge knows of central, then applies it, in one transaction.
/// `cursor`, `anchor` and `known_acked` are what the edge knew when it asked for the page; if
/// the cursor changed meanwhile (a resync started) the page is dropped and the next one asked
/// for afresh.
fn take_page(
    c: &rusqlite::Connection,
    cursor: i64,
    anchor: Option<ChangeAnchor>,
    known_acked: i64,
    page: &PulledPage,
) -> anyhow::Result<Taken> {
    recovery::check_store(c, page.store_id)?;
    if recovery::note_acked(c, page.acked_seq, known_acked)? {
        return Ok(Taken::CentralRestored {
            ops_to_resend: true,
        });
    }
    if read_cursor(c)? != (cursor, anchor) {
        return Ok(Taken::Applied(PageOutcome::default()));
    }
    // The change log central holds at our cursor is not the one we followed: it was restored.
    let restored =
        cursor > 0 && (page.head < cursor || anchor.is_some_and(|a| page.anchor != Some(a)));
    if restored {
        tracing::warn!(
            cursor,
            head = page.head,
            "central's change log does not hold the change this edge applied last: it was \
             restored from a backup; pulling the replica again from the start"
        );
        recovery::start_resync(c)?;
        return Ok(Taken::CentralRestored {
            ops_to_resend: false,
        });
    }
    Ok(Taken::Applied(apply::apply_page(c, page, Utc::now())?))
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! One actor per plug: a task that owns the plug's transport and serves its requests one at a
//! time (plugs answer one connection at a time, and a switch must not race a read), retrying
//! what may succeed on a second try, bounding every request, and publishing the plug's last
//! known state so nobody has to wait on the network to show it.
//!
//! Each plug has its own task and queue, so a dead or slow plug only ever delays requests to
//! itself.

use crate::plugs::kasa::commands::{self, full_child_id};
use crate::plugs::kasa::{Emeter, KasaError, SysInfo, Transport};
use aero_shared::clock::{SharedClock, SystemClock};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How hard a plug's actor tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Tries of one exchange with the plug, the first included, while the error is retryable.
    pub attempts: usize,
    /// The wait before the first retry; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Randomise each wait by up to its own length, so plugs that failed together (a tripped
    /// breaker, a Wi-Fi outage) do not retry in lockstep.
    pub jitter: bool,
    /// The most a caller waits for one request, time spent queued behind others included.
    pub deadline: Duration,
    /// How many requests may wait for the plug behind the one in flight.
    pub queue: usize,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(2),
            jitter: true,
            deadline: Duration::from_secs(10),
            queue: 8,
        }
    }
}

/// Why a request to a plug's actor failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeviceError {
    /// The plug's answer, or the last attempt's failure once retries were spent.
    #[error(transparent)]
    Kasa(#[from] KasaError),
    /// The request did not finish within [`DeviceSettings::deadline`].
    #[error("the plug did not finish the request within {0:?}")]
    Deadline(Duration),
    #[error("the plug's actor has stopped")]
    Stopped,
}

impl DeviceError {
    /// Whether the plug answered in its protocol, so it is reachable despite the error.
    pub fn plug_answered(&self) -> bool {
        matches!(self, Self::Kasa(err) if err.plug_answered())
    }
}

/// A plug's state as read from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlugState {
    pub alias: String,
    pub model: String,
    pub device_id: String,
    /// One entry without an id for a plain plug; one per outlet, in order, for a strip.
    pub outlets: Vec<OutletState>,
}

/// One relay: a plain plug's, or one strip outlet's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutletState {
    /// The strip outlet's full child id; `None` for a plain plug.
    pub id: Option<String>,
    pub alias: String,
    pub on: bool,
    /// The draw, on plugs with an energy meter.
    pub power: Option<Emeter>,
}

impl PlugState {
    /// The outlet `child` names (full child id or two-digit index), or the plain plug's relay
    /// when `child` is `None`.
    pub fn outlet(&self, child: Option<&str>) -> Option<&OutletState> {
        match child {
            None => match self.outlets.as_slice() {
                [only] if only.id.is_none() => Some(only),
                _ => None,
            },
            Some(child) => {
                let wanted = full_child_id(&self.device_id, child);
                self.outlets.iter().find(|outlet| {
                    outlet
                        .id
                        .as_deref()
                        .is_some_and(|id| id.eq_ignore_ascii_case(&wanted))
                })
            }
        }
    }
}

/// What the actor last learned of its plug.
#[derive(Clone, Debug, Default)]
pub struct PlugStatus {
    /// Whether the last exchange got an answer in the protocol. False until the first one.
    pub reachable: bool,
    /// The state last read, kept while the plug is unreachable so it can be shown as last known.
    /// Successful switches are applied to it as they happen.
    pub state: Option<PlugState>,
    /// Why the last request failed; cleared by the next success. A
    /// [`KasaError::Refused`] here is the operator's cue about third-party compatibility.
    pub last_error: Option<DeviceError>,
    /// When the plug last answered.
    pub last_seen: Option<DateTime<Utc>>,
}

/// The way to a plug's actor. Clones share the actor; it stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct DeviceHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<PlugStatus>,
    deadline: Duration,
}

impl DeviceHandle {
    /// Starts the actor for the plug behind `transport` on the current tokio runtime.
    pub fn spawn(transport: impl Transport + 'static, settings: DeviceSettings) -> Self {
        Self::spawn_with_clock(transport, settings, Arc::new(SystemClock))
    }

    /// [`Self::spawn`] with the clock that stamps [`PlugStatus::last_seen`].
    pub fn spawn_with_clock(
        transport: impl Transport + 'static,
        settings: DeviceSettings,
        clock: SharedClock,
    ) -> Self {
        let (requests, inbox) = mpsc::channel(settings.queue.max(1));
        let (status_tx, status) = watch::channel(PlugStatus::default());
        let actor = Actor {
            transport: Retrying::new(Box::new(transport), &settings),
            deadline: settings.deadline,
            status: status_tx,
            sysinfo: None,
            clock,
        };
        tokio::spawn(actor.run(inbox));
        Self {
            requests,
            status,
            deadline: settings.deadline,
        }
    }

    /// Reads the plug: relays, and the draw where it meters energy.
    pub async fn state(&self) -> Result<PlugState, DeviceError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::State {
            deadline: Instant::now() + self.deadline,
            reply,
        })
        .await?;
        answer.await.map_err(|_| DeviceError::Stopped)?
    }

    /// Switches the plain plug (`child` `None`), one strip outlet (`child` its full child id
    /// or two-digit index), or every outlet of a strip (`child` `None` on a strip).
    pub async fn set(&self, child: Option<&str>, on: bool) -> Result<(), DeviceError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Set {
            deadline: Instant::now() + self.deadline,
            child: child.map(str::to_owned),
            on,
            reply,
        })
        .await?;
        answer.await.map_err(|_| DeviceError::Stopped)?
    }

    /// The last known status, without touching the network.
    pub fn status(&self) -> PlugStatus {
        self.status.borrow().clone()
    }

    /// Follows the status as requests complete, e.g. for the live feed.
    pub fn subscribe(&self) -> watch::Receiver<PlugStatus> {
        self.status.clone()
    }

    async fn send(&self, request: Request) -> Result<(), DeviceError> {
        // Everything queued ahead was enqueued earlier with the same deadline length, so the
        // actor reaches this request by its deadline at the latest: waiting for room is bounded.
        self.requests
            .send(request)
            .await
            .map_err(|_| DeviceError::Stopped)
    }
}

enum Request {
    State {
        deadline: Instant,
        reply: oneshot::Sender<Result<PlugState, DeviceError>>,
    },
    Set {
        deadline: Instant,
        child: Option<String>,
        on: bool,
        reply: oneshot::Sender<Result<(), DeviceError>>,
    },
}

struct Actor {
    transport: Retrying,
    deadline: Duration,
    status: watch::Sender<PlugStatus>,
    /// The sysinfo last read: an outlet given by index is addressed by the strip's device id,
    /// and switching a whole strip needs its outlet list.
    sysinfo: Option<SysInfo>,
    clock: SharedClock,
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        while let Some(request) = inbox.recv().await {
            match request {
                Request::State { deadline, reply } => {
                    if reply.is_closed() {
                        continue;
                    }
                    let result = if overdue(deadline) {
                        Err(DeviceError::Deadline(self.deadline))
                    } else {
                        let result = bounded(deadline, self.deadline, self.read_state()).await;
                        self.record(&result, |status, state| status.state = Some(state.clone()));
                        result
                    };
                    let _ = reply.send(result);
                }
                Request::Set {
                    deadline,
                    child,
                    on,
                    reply,
                } => {
                    if reply.is_closed() {
                        continue;
                    }
                    let result = if overdue(deadline) {
                        Err(DeviceError::Deadline(self.deadline))
                    } else {
                        let result =
                            bounded(deadline, self.deadline, self.set(child.as_deref(), on)).await;
                        if result.is_err() {
                            // The address may now hold another plug; learn it afresh.
                            self.sysinfo = None;
                        }
                        self.record(&result, |status, switched| {
                            if let Some(state) = status.state.as_mut() {
                                apply_switch(state, switched, on);
                            }
                        });
                        result.map(|_| ())
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    async fn read_state(&mut self) -> Result<PlugState, KasaError> {
        let info = commands::get_sysinfo(&self.transport).await?;
        self.sysinfo = Some(info.clone());
        let metered = info.has_emeter();
        let mut outlets = Vec::with_capacity(info.outlets.len().max(1));
        if info.outlets.is_empty() {
            outlets.push(OutletState {
                id: None,
                alias: info.alias.clone(),
                on: info.relay_on == Some(true),
                power: self.power(metered, None).await?,
            });
        }
        for outlet in &info.outlets {
            outlets.push(OutletState {
                id: Some(outlet.id.clone()),
                alias: outlet.alias.clone(),
                on: outlet.on,
                power: self.power(metered, Some(&outlet.id)).await?,
            });
        }
        Ok(PlugState {
            alias: info.alias,
            model: info.model,
            device_id: info.device_id,
            outlets,
        })
    }

    async fn power(&self, metered: bool, child: Option<&str>) -> Result<Option<Emeter>, KasaError> {
        if !metered {
            return Ok(None);
        }
        match commands::get_realtime(&self.transport, child).await {
            Ok(reading) => Ok(Some(reading)),
            // A meter that answers with an error leaves the relays readable; only the draw is
            // unknown.
            Err(err) if err.plug_answered() => {
                tracing::debug!(plug = ?self.transport.inner, error = %err, "no emeter reading");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Switches and returns the child ids switched (none for a plain plug).
    async fn set(&mut self, child: Option<&str>, on: bool) -> Result<Vec<String>, KasaError> {
        let info = match &self.sysinfo {
            Some(info) => info.clone(),
            None => {
                let info = commands::get_sysinfo(&self.transport).await?;
                self.sysinfo = Some(info.clone());
                info
            }
        };
        let child_ids = match child {
            Some(child) => vec![info.outlet_id(child)?],
            None => info
                .outlets
                .iter()
                .map(|outlet| outlet.id.clone())
                .collect(),
        };
        commands::set_relay_state(&self.transport, &child_ids, on).await?;
        Ok(child_ids)
    }

    /// Publishes what a request taught about the plug.
    fn record<T>(
        &self,
        result: &Result<T, DeviceError>,
        on_success: impl FnOnce(&mut PlugStatus, &T),
    ) {
        let now = self.clock.now();
        self.status.send_modify(|status| {
            let was_reachable = status.reachable;
            match result {
                Ok(value) => {
                    status.reachable = true;
                    status.last_error = None;
                    status.last_seen = Some(now);
                    on_success(status, value);
                }
                Err(err) => {
                    status.reachable = err.plug_answered();
                    if status.reachable {
                        status.last_seen = Some(now);
                    }
                    status.last_error = Some(err.clone());
                }
            }
            match (was_reachable, status.reachable, &status.last_error) {
                (true, false, Some(err)) => {
                    tracing::warn!(plug = ?self.transport.inner, error = %err, "plug unreachable");
                }
                (false, true, _) => tracing::info!(plug = ?self.transport.inner, "plug reachable"),
                _ => {}
            }
        });
    }
}

/// Whether a request waited in the queue past its deadline. It is answered without contacting
/// the plug and teaches nothing about it.
fn overdue(deadline: Instant) -> bool {
    Instant::now() >= deadline
}

/// Runs `work` until `deadline`.
async fn bounded<T>(
    deadline: Instant,
    limit: Duration,
    work: impl Future<Output = Result<T, KasaError>>,
) -> Result<T, DeviceError> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result.map_err(DeviceError::from),
        Err(_) => Err(DeviceError::Deadline(limit)),
    }
}

fn apply_switch(state: &mut PlugState, switched: &[String], on: bool) {
    for outlet in &mut state.outlets {
        let hit = match &outlet.id {
            None => switched.is_empty(),
            Some(id) => switched.iter().any(|s| s.eq_ignore_ascii_case(id)),
        };
        if hit {
            outlet.on = on;
        }
    }
}

/// A transport that sends each exchange again, with exponential backoff, while its failure is
/// retryable and attempts remain.
#[derive(Debug)]
struct Retrying {
    inner: Box<dyn Transport>,
    backoff: ExponentialBuilder,
}

impl Retrying {
    fn new(inner: Box<dyn Transport>, settings: &DeviceSettings) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(settings.backoff_min)
            .with_max_delay(settings.backoff_max.max(settings.backoff_min))
            .with_max_times(settings.attempts.saturating_sub(1));
        let backoff = if settings.jitter {
            backoff.with_jitter()
        } else {
            backoff
        };
        Self { inner, backoff }
    }
}

#[async_trait]
impl Transport for Retrying {
    async fn request(&self, request: &Value) -> Result<Value, KasaError> {
        (|| self.inner.request(request))
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .when(KasaError::is_retryable)
            .notify(|err, wait| {
                tracing::debug!(plug = ?self.inner, error = %err, ?wait, "retrying a plug request");
            })
            .await
    }
}

//! The venue's plugs driven to what their schedules want: a loop that reads the plugs and their
//! schedules from the replica on every pass (so what HQ adds or changes takes effect without a
//! restart, on the pass the pull that brought it starts), reads each plug back through its
//! actor, switches the ones that differ from their desired state, and publishes what it found
//! for `GET /v1/plugs` and the live feed.
//!
//! Every plug is read on every pass, whatever it is supposed to be doing: a schedule event
//! missed while a plug (or the edge) was down is applied on the first pass that reaches it, and
//! a plug someone switched by hand is switched back. Each plug of a pass is handled by a task of
//! its own, through the plug's own actor, and the loop never waits for them: a dead plug (whose
//! requests time out, retries included, long after the others are done) delays only itself, and
//! is skipped by the passes that come while its task is still running.

use crate::live::{LiveEvent, LiveHub};
use crate::outbox::{Writer, append_op};
use crate::plugs::device::{DeviceHandle, DeviceSettings, PlugStatus};
use crate::plugs::kasa::{Endpoint, TcpTransport, Timeouts};
use crate::plugs::schedule::{Desired, Override, PlugPlan, PlugSchedule};
use crate::replica::Replica;
use crate::replica::venue::site_timezone;
use aero_shared::clock::SharedClock;
use aero_shared::wire::{
    Entity, MAX_PLUG_PROBLEM_CHARS, OpKind, PlugOverrideRecord, PlugRecord, PlugStatusRecord,
    PowerState, ScheduleRecord,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How the edge drives its plugs (the `[plugs]` section of the edge's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlugSettings {
    /// How often every plug is read back and driven to its desired state.
    pub reconcile_every_secs: u64,
    /// Establishing the TCP connection to a plug.
    pub connect_timeout_ms: u64,
    /// Sending a request and receiving the plug's whole reply.
    pub read_timeout_ms: u64,
    /// Tries of one exchange, the first included, while the error is one worth retrying.
    pub attempts: usize,
}

impl Default for PlugSettings {
    fn default() -> Self {
        Self {
            reconcile_every_secs: 10,
            connect_timeout_ms: 3_000,
            read_timeout_ms: 3_000,
            attempts: 3,
        }
    }
}

impl PlugSettings {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms.max(1)),
            read: Duration::from_millis(self.read_timeout_ms.max(1)),
        }
    }

    fn device(&self) -> DeviceSettings {
        let timeouts = self.timeouts();
        let attempts = self.attempts.max(1);
        let defaults = DeviceSettings::default();
        // Room for every attempt to time out, plus the waits between them.
        let per_attempt = timeouts.connect + timeouts.read;
        let deadline = per_attempt * u32::try_from(attempts).unwrap_or(u32::MAX)
            + defaults.backoff_max * u32::try_from(attempts).unwrap_or(u32::MAX);
        DeviceSettings {
            attempts,
            deadline,
            ..defaults
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.reconcile_every_secs.max(1))
    }
}

/// One plug as `GET /v1/plugs` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PlugView {
    pub id: Uuid,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub child_id: Option<String>,
    /// As last read (kept while the plug is unreachable); `None` before the first answer,
    /// shown as `unknown`.
    #[serde(serialize_with = "serialize_state")]
    pub state: Option<PowerState>,
    pub reachable: bool,
    /// When the plug last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// The draw in milliwatts, on plugs with an energy meter.
    pub power_mw: Option<u64>,
    /// What the plug should be doing and why (`unset`, `schedule`, `override`).
    pub desired: Desired,
    /// Why the last exchange failed, for the staff screen (the fix when a plug refuses the
    /// local protocol is in the message).
    pub problem: Option<String>,
}

/// What the passes found of every plug, shared with the routes.
#[derive(Debug, Default)]
pub struct PlugBoard {
    views: RwLock<HashMap<Uuid, PlugView>>,
    /// Wakes the loop for an immediate pass.
    kick: Notify,
}

impl PlugBoard {
    /// The venue's plugs by name, as the passes found them.
    pub fn list(&self) -> Vec<PlugView> {
        let mut views: Vec<PlugView> = self
            .views
            .read()
            .expect("plug board poisoned")
            .values()
            .cloned()
            .collect();
        views.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        views
    }

    /// Asks for a pass now rather than at the end of the period.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Records what a plug's task found; returns the view it replaced.
    fn record(&self, view: PlugView) -> Option<PlugView> {
        self.views
            .write()
            .expect("plug board poisoned")
            .insert(view.id, view)
    }

    /// Forgets the plugs HQ removed.
    fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.views
            .write()
            .expect("plug board poisoned")
            .retain(|id, _| keep(id));
    }
}

/// The plugs of this site and what decides their desired state, as the replica holds them.
struct Config {
    tz: Option<Tz>,
    plugs: Vec<PlugRecord>,
    schedules: HashMap<Uuid, Vec<PlugSchedule>>,
    overrides: HashMap<Uuid, Vec<Override>>,
}

fn load_config(c: &Connection, site_id: Uuid) -> anyhow::Result<Config> {
    let mut plugs: Vec<PlugRecord> = Vec::new();
    let mut schedules: HashMap<Uuid, Vec<PlugSchedule>> = HashMap::new();
    let mut overrides: HashMap<Uuid, Vec<Override>> = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT entity, data FROM other_rows
          WHERE entity IN ('plug', 'plug_schedule', 'plug_override')",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let data = row.get_ref(1)?.as_str()?;
        match row.get_ref(0)?.as_str()? {
            "plug" => {
                let plug: PlugRecord = serde_json::from_str(data)?;
                if plug.site_id == site_id {
                    plugs.push(plug);
                }
            }
            "plug_override" => {
                let set: PlugOverrideRecord = serde_json::from_str(data)?;
                if set.site_id == site_id {
                    overrides.entry(set.plug_id).or_default().push(Override {
                        id: set.id,
                        state: set.state,
                        set_at: set.set_at,
                        until: set.until,
                    });
                }
            }
            _ => {
                let record: ScheduleRecord = serde_json::from_str(data)?;
                if record.site_id != site_id {
                    continue;
                }
                // Central validates expressions; one that still does not parse here (a newer
                // syntax) leaves its plug to its other schedules rather than stopping the loop.
                match PlugSchedule::from_record(&record) {
                    Ok(schedule) => schedules.entry(record.plug_id).or_default().push(schedule),
                    Err(err) => tracing::warn!(
                        schedule = %record.id, plug = %record.plug_id, error = %err,
                        "a plug schedule does not parse; it is ignored"
                    ),
                }
            }
        }
    }
    plugs.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    Ok(Config {
        tz: site_timezone(c, site_id)?,
        plugs,
        schedules,
        overrides,
    })
}

/// One of this site's plugs, as the replica holds it.
pub fn plug(c: &Connection, site_id: Uuid, id: Uuid) -> anyhow::Result<Option<PlugRecord>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM other_rows WHERE entity = 'plug' AND entity_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let plug = data
        .map(|d| serde_json::from_str::<PlugRecord>(&d))
        .transpose()?;
    Ok(plug.filter(|p| p.site_id == site_id))
}

/// Stores an override set at this venue and queues it for central, in the caller's
/// transaction. The next pass applies it.
pub fn set_override(c: &Connection, set: &PlugOverrideRecord) -> anyhow::Result<()> {
    c.prepare_cached(
        "INSERT INTO other_rows (entity, entity_id, data) VALUES ('plug_override', ?1, ?2)",
    )?
    .execute(rusqlite::params![set.id, serde_json::to_string(set)?])?;
    append_op(
        c,
        Entity::PlugOverride,
        set.id,
        OpKind::Upsert,
        set,
        set.set_at,
    )?;
    Ok(())
}

/// The reconcile loop of one edge.
pub struct PlugReconciler {
    replica: Arc<Replica>,
    /// Queues each plug's status for central when its state or reachability changes.
    writer: Writer,
    site_id: Uuid,
    board: Arc<PlugBoard>,
    live: Arc<LiveHub>,
    clock: SharedClock,
    settings: PlugSettings,
    /// One actor per plug address: a strip's outlets share their strip's.
    devices: HashMap<Endpoint, DeviceHandle>,
    /// The plugs whose task from an earlier pass is still running.
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl PlugReconciler {
    pub fn new(
        replica: Arc<Replica>,
        writer: Writer,
        site_id: Uuid,
        board: Arc<PlugBoard>,
        live: Arc<LiveHub>,
        clock: SharedClock,
        settings: PlugSettings,
    ) -> Self {
        Self {
            replica,
            writer,
            site_id,
            board,
            live,
            clock,
            settings,
            devices: HashMap::new(),
            in_flight: Arc::default(),
        }
    }

    /// Passes until `stop` turns true: one every period, or sooner when kicked. The loop
    /// starts each pass's tasks and moves on.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.start_pass().await {
                tracing::warn!(error = %err, "plug reconcile pass failed");
            }
            let (board, replica) = (Arc::clone(&self.board), Arc::clone(&self.replica));
            tokio::select! {
                () = tokio::time::sleep(self.settings.period()) => {}
                () = board.kick.notified() => {}
                // What HQ changed is applied as soon as it is pulled.
                () = replica.plug_change() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One pass, waited for: every plug's task of this pass has finished when it returns what
    /// the board shows.
    pub async fn pass(&mut self) -> anyhow::Result<Vec<PlugView>> {
        for task in self.start_pass().await? {
            task.await?;
        }
        Ok(self.board.list())
    }

    /// Reads the plugs and their schedules and starts a task for each plug that has none
    /// running.
    async fn start_pass(&mut self) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let site_id = self.site_id;
        let config = self.replica.read(move |c| load_config(c, site_id)).await?;
        let now = self.clock.now();
        let configured: HashSet<Uuid> = config.plugs.iter().map(|p| p.id).collect();
        self.board.retain(|id| configured.contains(id));
        self.devices.retain(|endpoint, _| {
            config
                .plugs
                .iter()
                .any(|p| p.host == endpoint.host && p.port == endpoint.port)
        });
        let mut tasks = Vec::with_capacity(config.plugs.len());
        for plug in config.plugs {
            if !self
                .in_flight
                .lock()
                .expect("in-flight set poisoned")
                .insert(plug.id)
            {
                continue;
            }
            let endpoint = Endpoint {
                host: plug.host.clone(),
                port: plug.port,
            };
            let device = self
                .devices
                .entry(endpoint.clone())
                .or_insert_with(|| {
                    DeviceHandle::spawn_with_clock(
                        TcpTransport::new(endpoint, self.settings.timeouts()),
                        self.settings.device(),
                        Arc::clone(&self.clock),
                    )
                })
                .clone();
            let desired = match config.tz {
                Some(tz) => PlugPlan::new(
                    tz,
                    config.schedules.get(&plug.id).cloned().unwrap_or_default(),
                    config.overrides.get(&plug.id).cloned().unwrap_or_default(),
                )
                .desired_at(now),
                // The site row has not arrived yet: its calendar is unknown.
                None => Desired::Unset,
            };
            let (board, live, clock, writer) = (
                Arc::clone(&self.board),
                Arc::clone(&self.live),
                Arc::clone(&self.clock),
                self.writer.clone(),
            );
            let running = InFlight {
                set: Arc::clone(&self.in_flight),
                id: plug.id,
            };
            let site_id = self.site_id;
            tasks.push(tokio::spawn(async move {
                let _running = running;
                let view = reconcile_one(plug, device, desired).await;
                let changed = board
                    .record(view.clone())
                    .is_none_or(|b| b.state != view.state || b.reachable != view.reachable);
                if changed {
                    let now = clock.now();
                    live.publish(
                        LiveEvent::PlugState {
                            plug_id: view.id,
                            state: state_name(view.state).to_string(),
                            reachable: view.reachable,
                        },
                        now,
                    );
                    report(&writer, site_id, &view, now).await;
                }
            }));
        }
        Ok(tasks)
    }
}

/// Queues what the venue now sees of a plug for central (HQ's view of the site's plugs). A
/// fenced edge queues nothing; the plug is driven all the same.
async fn report(writer: &Writer, site_id: Uuid, view: &PlugView, now: DateTime<Utc>) {
    // The operators' alert: in the service's log as well as on the staff screen and at HQ.
    if let Some(problem) = view.problem.as_deref().filter(|_| !view.reachable) {
        tracing::warn!(plug = %view.id, name = %view.name, %problem, "plug unreachable");
    }
    let status = PlugStatusRecord {
        plug_id: view.id,
        site_id,
        state: view.state,
        reachable: view.reachable,
        last_seen: view.last_seen,
        power_mw: view.power_mw,
        problem: view
            .problem
            .as_ref()
            .map(|p| p.chars().take(MAX_PLUG_PROBLEM_CHARS).collect()),
        observed_at: now,
    };
    let queued = writer
        .mutate(move |c| {
            append_op(
                c,
                Entity::PlugStatus,
                status.plug_id,
                OpKind::Event,
                &status,
                now,
            )?;
            Ok(())
        })
        .await;
    if let Err(err) = queued {
        tracing::warn!(plug = %view.id, error = %err, "the plug's status was not queued for central");
    }
}

/// A plug's place in the in-flight set, given back when its task ends however it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<Uuid>>>,
    id: Uuid,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

/// Reads one plug back and switches it if it differs from `desired`.
async fn reconcile_one(plug: PlugRecord, device: DeviceHandle, desired: Desired) -> PlugView {
    let child = plug.child_id.as_deref();
    if let Ok(state) = device.state().await
        && let (Some(want), Some(outlet)) = (desired.state(), state.outlet(child))
    {
        let on = want == PowerState::On;
        if outlet.on != on {
            match device.set(child, on).await {
                Ok(()) => tracing::info!(plug = %plug.id, name = %plug.name, on, "plug switched"),
                Err(err) => {
                    tracing::warn!(plug = %plug.id, name = %plug.name, error = %err, "switching a plug failed");
                }
            }
        }
    }
    view_of(&plug, &device.status(), desired)
}

/// How a plug's state reads on the wire: `on`, `off`, or `unknown` before it first answered.
fn state_name(state: Option<PowerState>) -> &'static str {
    match state {
        Some(PowerState::On) => "on",
        Some(PowerState::Off) => "off",
        None => "unknown",
    }
}

fn serialize_state<S: serde::Serializer>(
    state: &Option<PowerState>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(state_name(*state))
}

fn view_of(plug: &PlugRecord, status: &PlugStatus, desired: Desired) -> PlugView {
    let outlet = status
        .state
        .as_ref()
        .and_then(|s| s.outlet(plug.child_id.as_deref()));
    let problem = match (&status.last_error, outlet, &status.state) {
        (Some(err), _, _) => Some(err.to_string()),
        (None, None, Some(_)) => Some(match &plug.child_id {
            Some(child) => format!("the strip has no outlet {child}"),
            None => "this is a power strip: the plug needs the outlet's child_id".to_string(),
        }),
        _ => None,
    };
    PlugView {
        id: plug.id,
        name: plug.name.clone(),
        host: plug.host.clone(),
        port: plug.port,
        child_id: plug.child_id.clone(),
        state: outlet.map(|o| {
            if o.on {
                PowerState::On
            } else {
                PowerState::Off
            }
        }),
        reachable: status.reachable,
        last_seen: status.last_seen,
        power_mw: outlet.and_then(|o| o.power.map(|p| p.power_mw)),
        desired,
        problem,
    }
}

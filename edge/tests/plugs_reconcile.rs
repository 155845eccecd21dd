//! The reconcile loop against simulated plugs on loopback: schedules from the replica drive the
//! plugs, a schedule added later takes over without a restart, an event missed while a plug was
//! unreachable is applied when it is back, and `GET /v1/plugs` shows what each pass found.
//!
//! Each test runs the loop's passes itself (`PlugReconciler::pass`), so nothing waits on the
//! loop's period; the clock is moved by hand.

mod support;

use aero_edge::plugs::reconcile::{PlugReconciler, PlugSettings, PlugView};
use aero_edge::replica::apply::{PulledChange, PulledPage, apply_page};
use aero_plugsim::Fault;
use aero_plugsim::{Model, SimPlug};
use aero_shared::clock::ManualClock;
use aero_shared::wire::Entity;
use aero_shared::wire::PowerState::{Off, On};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

struct Venue {
    edge: aero_edge::Edge,
    site: Uuid,
    clock: ManualClock,
    /// Tokens of a staff member and a manager of the venue.
    staff: String,
    manager: String,
    /// Taken by a test that runs the loop itself.
    reconciler: Option<PlugReconciler>,
    next_seq: i64,
    _dir: tempfile::TempDir,
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

impl Venue {
    /// A venue in London whose clock reads `start`, with no plugs yet.
    async fn open(start: DateTime<Utc>) -> Self {
        Self::with_settings(
            start,
            PlugSettings {
                connect_timeout_ms: 500,
                read_timeout_ms: 500,
                attempts: 1,
                ..PlugSettings::default()
            },
        )
        .await
    }

    async fn with_settings(start: DateTime<Utc>, plug_settings: PlugSettings) -> Self {
        let clock = ManualClock::new(start);
        let offline = support::offline_edge(&clock);
        let staff = offline.staff_token("sam", "staff").await;
        let manager = offline.staff_token("morgan", "manager").await;
        let support::OfflineEdge { edge, site, dir } = offline;
        let reconciler = PlugReconciler::new(
            Arc::clone(&edge.state.replica),
            edge.state.writer.clone(),
            site,
            Arc::clone(&edge.state.plugs),
            Arc::clone(&edge.state.live),
            Arc::new(clock.clone()),
            plug_settings,
        );
        let mut venue = Self {
            edge,
            site,
            clock,
            staff,
            manager,
            reconciler: Some(reconciler),
            next_seq: 1,
            _dir: dir,
        };
        venue
            .replicate(
                "site",
                site,
                json!({
                    "id": site, "name": "Leeds", "timezone": "Europe/London",
                    "allowed_networks": ["127.0.0.0/8"], "created_at": start,
                }),
            )
            .await;
        venue
    }

    /// Applies one change from central, as a pull would.
    async fn replicate(&mut self, entity: &str, id: Uuid, data: Value) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let page = PulledPage {
            changes: vec![PulledChange::new(
                serde_json::value::to_raw_value(&json!({
                    "seq": seq, "entity": entity, "entity_id": id, "op": "upsert", "site_id": null,
                    "data": data, "changed_at": Utc::now(),
                }))
                .expect("raw change"),
            )],
            next_cursor: seq,
            more: false,
            store_id: Uuid::nil(),
            head: seq,
            acked_seq: 0,
            anchor: None,
        };
        self.edge
            .state
            .writer
            .write(move |c| apply_page(c, &page, Utc::now()))
            .await
            .expect("apply");
    }

    /// A plug HQ configured for `sim` (outlet `child` of a strip).
    async fn add_plug(&mut self, name: &str, sim: &SimPlug, child: Option<String>) -> Uuid {
        let id = Uuid::now_v7();
        let site = self.site;
        self.replicate(
            "plug",
            id,
            json!({
                "id": id, "site_id": site, "name": name, "host": "127.0.0.1",
                "port": sim.addr().port(), "child_id": child, "created_at": Utc::now(),
            }),
        )
        .await;
        id
    }

    async fn add_schedule(&mut self, plug: Uuid, cron: &str, state: &str) {
        let id = Uuid::now_v7();
        let site = self.site;
        self.replicate(
            "plug_schedule",
            id,
            json!({
                "id": id, "plug_id": plug, "site_id": site, "cron": cron, "state": state,
                "created_at": Utc::now(),
            }),
        )
        .await;
    }

    /// The plug statuses queued for central, oldest first.
    async fn plug_reports(&self) -> Vec<Value> {
        self.queued(Entity::PlugStatus).await
    }

    /// The ops of `entity` queued for central, oldest first.
    async fn queued(&self, entity: Entity) -> Vec<Value> {
        let ops = self
            .edge
            .state
            .replica
            .read(|c| aero_edge::outbox::pending(c, 1000, usize::MAX))
            .await
            .expect("outbox");
        ops.into_iter()
            .filter(|op| op.entity == entity)
            .map(|op| serde_json::from_str(op.data.get()).expect("an op's JSON"))
            .collect()
    }

    /// Serves the venue API on a loopback port; returns its base URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(aero_shared::server::serve(
            listener,
            self.edge.router.clone(),
            std::future::pending(),
        ));
        format!("http://{addr}")
    }

    async fn pass(&mut self) -> Vec<PlugView> {
        self.reconciler
            .as_mut()
            .expect("the loop is not running")
            .pass()
            .await
            .expect("reconcile pass")
    }
}

fn view(views: &[PlugView], id: Uuid) -> &PlugView {
    views.iter().find(|v| v.id == id).expect("plug listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_drives_its_plug_and_one_added_later_takes_over_without_a_restart() {
    // 10:00 in London (summer time).
    let mut venue = Venue::open(at("2026-06-01T09:00:00Z")).await;
    let sim = SimPlug::start(Model::Hs103).expect("simulated plug");
    let plug = venue.add_plug("Laser tag", &sim, None).await;
    venue.add_schedule(plug, "0 0 8 * * *", "on").await;

    let views = venue.pass().await;
    assert_eq!(sim.relays(), vec![true], "the 08:00 'on' applies at 10:00");
    let found = view(&views, plug);
    assert_eq!((found.state, found.reachable), (Some(On), true));
    assert!(
        found.last_seen.is_some() && found.problem.is_none(),
        "{found:?}"
    );
    assert_eq!(
        serde_json::to_value(found.desired).expect("json")["source"],
        "schedule"
    );
    // What it found is queued for HQ, once per change.
    let reported = venue.plug_reports().await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["plug_id"], plug.to_string());
    assert_eq!(
        (&reported[0]["state"], &reported[0]["reachable"]),
        (&json!("on"), &json!(true))
    );
    venue.pass().await;
    assert_eq!(venue.plug_reports().await.len(), 1, "nothing changed");

    // HQ adds an 'off' at 09:30: it is the latest event now, so it governs from the next pass.
    venue.add_schedule(plug, "0 30 9 * * *", "off").await;
    venue.pass().await;
    assert_eq!(sim.relays(), vec![false]);

    // Someone switches it on by hand: the next pass switches it back.
    sim.set_relay(0, true);
    let views = venue.pass().await;
    assert_eq!(sim.relays(), vec![false]);
    assert_eq!(view(&views, plug).state, Some(Off));
    sim.wait_closed().await;
    assert_eq!(sim.open_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_missed_while_the_plug_was_unreachable_is_applied_when_it_returns() {
    // 07:50 in London: the 08:00 'on' has not happened yet, and yesterday's 22:00 'off' governs.
    let mut venue = Venue::open(at("2026-06-01T06:50:00Z")).await;
    let sim = SimPlug::start(Model::Kp115).expect("simulated plug");
    sim.set_relay(0, true);
    let plug = venue.add_plug("Arcade", &sim, None).await;
    venue.add_schedule(plug, "0 0 8 * * *", "on").await;
    venue.add_schedule(plug, "0 0 22 * * *", "off").await;
    venue.pass().await;
    assert_eq!(sim.relays(), vec![false]);

    sim.close_port().await;
    venue.clock.advance(Duration::minutes(20));
    let views = venue.pass().await;
    let down = view(&views, plug);
    assert!(!down.reachable, "{down:?}");
    assert_eq!(down.state, Some(Off), "the last known state is kept");
    assert!(down.problem.is_some());
    assert_eq!(sim.relays(), vec![false]);

    sim.open_port().await;
    let views = venue.pass().await;
    assert_eq!(sim.relays(), vec![true], "the missed 08:00 'on' is applied");
    let back = view(&views, plug);
    assert_eq!((back.state, back.reachable), (Some(On), true));
    assert!(back.power_mw.is_some(), "a KP115 meters its draw: {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strip_outlet_follows_its_own_schedule_and_the_board_is_served() {
    let mut venue = Venue::open(at("2026-06-01T09:00:00Z")).await;
    let strip = SimPlug::start(Model::Hs300).expect("simulated strip");
    let outlet = venue
        .add_plug("Ticket printer", &strip, Some("02".into()))
        .await;
    let unscheduled = venue
        .add_plug("Spare outlet", &strip, Some(strip.child_id(4)))
        .await;
    venue.add_schedule(outlet, "0 0 8 * * *", "on").await;
    venue.pass().await;
    assert_eq!(
        strip.relays(),
        vec![false, false, true, false, false, false],
        "only outlet 02 is switched"
    );

    // Staff see the board over HTTP, answered from memory.
    let base = venue.serve().await;
    let board: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{base}/v1/plugs"))
        .bearer_auth(&venue.staff)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let plugs = board["plugs"].as_array().expect("plugs");
    let by_id = |id: Uuid| {
        plugs
            .iter()
            .find(|p| p["id"] == id.to_string())
            .expect("listed")
    };
    assert_eq!(by_id(outlet)["state"], "on");
    assert_eq!(by_id(outlet)["reachable"], true);
    assert_eq!(by_id(unscheduled)["state"], "off");
    assert_eq!(by_id(unscheduled)["desired"]["source"], "unset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_that_never_answers_does_not_hold_up_the_next_passes() {
    // Passes every second; the dead plug's request takes five before it times out.
    let mut venue = Venue::with_settings(
        at("2026-06-01T09:00:00Z"),
        PlugSettings {
            reconcile_every_secs: 1,
            connect_timeout_ms: 5_000,
            read_timeout_ms: 5_000,
            attempts: 1,
        },
    )
    .await;
    let dead = SimPlug::start(Model::Hs103).expect("simulated plug");
    dead.script(std::iter::repeat_n(Fault::NoReply, 100));
    let live = SimPlug::start(Model::Hs103).expect("simulated plug");
    let dead_id = venue.add_plug("Dead", &dead, None).await;
    let live_id = venue.add_plug("Live", &live, None).await;
    for plug in [dead_id, live_id] {
        venue.add_schedule(plug, "0 0 8 * * *", "on").await;
    }
    let board = Arc::clone(&venue.edge.state.plugs);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reconciler = venue.reconciler.take().expect("reconciler");
    let running = tokio::spawn(reconciler.run(stopped));
    let started = std::time::Instant::now();
    let live_on = || live.relays() == vec![true];
    while !live_on() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the live plug waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Switched off by hand: a later pass puts it back while the dead plug's first request is
    // still waiting for its answer.
    live.set_relay(0, false);
    while !live_on() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "the live plug waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        dead.requests(),
        1,
        "one request to the dead plug, still pending"
    );
    assert!(
        board.list().iter().all(|v| v.id != dead_id),
        "the dead plug's pass has not reported yet"
    );
    let _ = stop.send(true);
    running.await.expect("the loop stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managers_override_holds_until_its_time_then_the_schedule_takes_over() {
    // 10:00 in London; no central anywhere.
    let mut venue = Venue::open(at("2026-06-01T09:00:00Z")).await;
    let sim = SimPlug::start(Model::Hs103).expect("simulated plug");
    let plug = venue.add_plug("Laser tag", &sim, None).await;
    venue.add_schedule(plug, "0 0 8 * * *", "on").await;
    venue.pass().await;
    assert_eq!(sim.relays(), vec![true]);

    let base = venue.serve().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let power = |token: &str, body: Value| {
        client
            .post(format!("{base}/v1/plugs/{plug}/power"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let until_1030 = json!({ "on": false, "until": "2026-06-01T09:30:00Z" });
    let refused = power(&venue.staff, until_1030.clone()).await.expect("post");
    assert_eq!(refused.status(), 403, "staff may not switch plugs");
    let past = power(
        &venue.manager,
        json!({ "on": false, "until": "2026-06-01T08:00:00Z" }),
    )
    .await
    .expect("post");
    assert_eq!(past.status(), 422, "an override must end after now");
    let set = power(&venue.manager, until_1030).await.expect("post");
    assert_eq!(set.status(), 201);
    let set: Value = set.json().await.expect("json");
    assert_eq!(
        (&set["state"], &set["set_by"]),
        (&json!("off"), &json!("morgan"))
    );

    let views = venue.pass().await;
    assert_eq!(sim.relays(), vec![false], "the override holds the plug off");
    let shown = serde_json::to_value(view(&views, plug)).expect("json");
    assert_eq!(shown["desired"]["source"], "override");
    // Queued for HQ, to be sent when central is reachable.
    let queued = venue.queued(Entity::PlugOverride).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["id"], set["id"]);

    venue.clock.advance(Duration::minutes(29));
    venue.pass().await;
    assert_eq!(sim.relays(), vec![false], "still within the override");
    venue.clock.advance(Duration::minutes(1));
    let views = venue.pass().await;
    assert_eq!(
        sim.relays(),
        vec![true],
        "the schedule governs again at 10:30"
    );
    let shown = serde_json::to_value(view(&views, plug)).expect("json");
    assert_eq!(shown["desired"]["source"], "schedule");
}

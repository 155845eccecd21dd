//! The plug stack against simulated plugs over real loopback TCP: switching and reading plain
//! plugs, strips and both emeter forms, and the device actor's behaviour under every scripted
//! fault (bounded time, retries counted by the simulator, unreachable reported, recovery).
//!
//! Fault tests run on paused tokio time, so timeouts and backoff are exact and instant; tests
//! about wall-clock concurrency run on real time.

use aero_edge::plugs::device::{DeviceError, DeviceHandle, DeviceSettings, PlugStatus};
use aero_edge::plugs::kasa::{Emeter, KasaError, TcpTransport, Timeouts, Transport};
use aero_plugsim::{Fault, Model, SimPlug, load_mw};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const READ: Duration = Duration::from_secs(3);
const BACKOFF: Duration = Duration::from_millis(100);
/// Paused time moves only by timers; the slack covers nothing but rounding.
const SLACK: Duration = Duration::from_millis(5);

fn settings() -> DeviceSettings {
    DeviceSettings {
        attempts: 3,
        backoff_min: BACKOFF,
        backoff_max: Duration::from_secs(1),
        jitter: false,
        deadline: Duration::from_secs(60),
        queue: 8,
    }
}

fn actor(sim: &SimPlug, settings: DeviceSettings) -> DeviceHandle {
    DeviceHandle::spawn(
        TcpTransport::new(sim.endpoint(), Timeouts::default()),
        settings,
    )
}

fn start(model: Model) -> SimPlug {
    SimPlug::start(model).expect("simulated plug")
}

#[track_caller]
fn assert_took(started: Instant, expected: Duration) {
    let took = started.elapsed();
    assert!(
        took >= expected && took <= expected + SLACK,
        "took {took:?}, expected {expected:?}"
    );
}

#[track_caller]
fn assert_unreachable(status: &PlugStatus) {
    assert!(!status.reachable, "status: {status:?}");
    assert!(status.last_error.is_some(), "status: {status:?}");
}

/// The plug answers again, the actor says so, and the simulator holds no connection.
async fn assert_recovers(sim: &SimPlug, plug: &DeviceHandle) {
    let state = plug.state().await.expect("state once the fault is over");
    assert_eq!(state.device_id, sim.device_id());
    let status = plug.status();
    assert!(status.reachable);
    assert!(status.last_error.is_none());
    assert_eq!(status.state, Some(state));
    sim.wait_closed().await;
    assert_eq!(sim.open_connections(), 0);
}

/// One faulted exchange followed by a good one: the retry hides the fault, and the simulator
/// saw both requests.
async fn retried_once(fault: Fault, expected: Duration) {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    sim.script([fault]);
    let started = Instant::now();
    plug.state().await.expect("the retry succeeds");
    assert_took(started, expected);
    assert_eq!(sim.requests(), 2);
    assert!(plug.status().reachable);
    sim.wait_closed().await;
}

/// Every attempt faulted: the last failure is returned within the bound, the simulator saw one
/// request per attempt, the plug is reported unreachable, and it recovers afterwards.
async fn exhausts_attempts(fault: Fault, expected: Duration) -> KasaError {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    sim.script(vec![fault; 3]);
    let started = Instant::now();
    let err = plug.state().await.expect_err("every attempt fails");
    assert_took(started, expected);
    assert_eq!(sim.requests(), 3);
    assert_unreachable(&plug.status());
    assert_recovers(&sim, &plug).await;
    match err {
        DeviceError::Kasa(err) => err,
        other => panic!("expected the plug's error, got {other:?}"),
    }
}

/// A fault that is the plug's considered answer: returned at once, not retried.
async fn not_retried(fault: Fault) -> (KasaError, PlugStatus) {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    sim.script([fault]);
    let started = Instant::now();
    let err = plug.state().await.expect_err("the fault is returned");
    assert_took(started, Duration::ZERO);
    assert_eq!(sim.requests(), 1);
    let status = plug.status();
    assert_recovers(&sim, &plug).await;
    match err {
        DeviceError::Kasa(err) => (err, status),
        other => panic!("expected the plug's error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_plug_is_read_and_switched() {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    assert!(
        !plug.status().reachable,
        "unknown before the first exchange"
    );
    let state = plug.state().await.expect("state");
    assert_eq!(state.model, "HS103(US)");
    let relay = state.outlet(None).expect("the plug's relay");
    assert!(!relay.on);
    assert_eq!(relay.power, None, "an HS103 has no meter");

    let mut changes = plug.subscribe();
    changes.mark_unchanged();
    plug.set(None, true).await.expect("switch on");
    assert_eq!(sim.relays(), [true]);
    assert!(changes.has_changed().expect("actor alive"));
    let known = plug.status().state.expect("known state");
    assert!(
        known.outlet(None).expect("relay").on,
        "a switch shows without a read"
    );
    assert!(plug.state().await.expect("state").outlets[0].on);
    sim.wait_closed().await;
}

#[tokio::test]
async fn strip_outlets_switch_individually() {
    let sim = start(Model::Hs300);
    let plug = actor(&sim, settings());
    plug.set(Some("02"), true).await.expect("outlet by index");
    plug.set(Some(&sim.child_id(4)), true)
        .await
        .expect("outlet by full id");
    assert_eq!(sim.relays(), [false, false, true, false, true, false]);
    plug.set(Some("02"), false).await.expect("back off");
    assert_eq!(sim.relays(), [false, false, false, false, true, false]);

    let state = plug.state().await.expect("state");
    assert_eq!(state.outlets.len(), 6);
    for (index, outlet) in state.outlets.iter().enumerate() {
        assert_eq!(outlet.id.as_deref(), Some(sim.child_id(index).as_str()));
        assert_eq!(outlet.on, index == 4);
        let draw = outlet.power.expect("each outlet is metered").power_mw;
        assert_eq!(draw, if index == 4 { load_mw(4) } else { 0 });
    }
    assert!(state.outlet(Some("04")).expect("by index").on);
    assert!(state.outlet(None).is_none(), "a strip has no single relay");

    let before = sim.requests();
    let err = plug
        .set(Some("07"), true)
        .await
        .expect_err("no such outlet");
    assert!(matches!(err, DeviceError::Kasa(KasaError::UnknownOutlet(ref c)) if c == "07"));
    assert_eq!(
        sim.requests(),
        before,
        "refused from the strip's known outlets, without contacting it"
    );

    plug.set(None, true).await.expect("the whole strip");
    assert_eq!(sim.relays(), [true; 6]);
    sim.wait_closed().await;
}

#[tokio::test]
async fn both_emeter_reply_forms_read_as_the_same_values() {
    let decimal = start(Model::Hs110V1);
    let milli = start(Model::Kp115);
    let mut readings = Vec::new();
    for sim in [&decimal, &milli] {
        let plug = actor(sim, settings());
        plug.set(None, true).await.expect("switch on");
        let state = plug.state().await.expect("state");
        readings.push(state.outlet(None).expect("relay").power);
    }
    let expected = Emeter {
        power_mw: load_mw(0),
        voltage_mv: 120_500,
        current_ma: load_mw(0) * 1000 / 120_500,
        total_wh: 42,
    };
    assert_eq!(readings, [Some(expected), Some(expected)]);
}

#[tokio::test(start_paused = true)]
async fn a_reply_just_under_the_timeout_is_taken() {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    let delay = READ - Duration::from_millis(1);
    sim.script([Fault::Delay(delay)]);
    let started = Instant::now();
    plug.state().await.expect("a slow reply in time");
    assert_took(started, delay);
    assert_eq!(sim.requests(), 1, "no retry");
}

#[tokio::test(start_paused = true)]
async fn a_reply_just_over_the_timeout_is_retried() {
    retried_once(
        Fault::Delay(READ + Duration::from_millis(1)),
        READ + BACKOFF,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_plug_that_never_replies_times_out_on_every_attempt() {
    let err = exhausts_attempts(Fault::NoReply, 3 * READ + 3 * BACKOFF).await;
    assert!(
        matches!(err, KasaError::ReplyTimeout(t) if t == READ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_header_then_silence_times_out_on_every_attempt() {
    retried_once(Fault::HeaderThenStall, READ + BACKOFF).await;
    let err = exhausts_attempts(Fault::HeaderThenStall, 3 * READ + 3 * BACKOFF).await;
    assert!(matches!(err, KasaError::ReplyTimeout(_)), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reply_cut_short_is_retried() {
    retried_once(Fault::PartialThenClose, BACKOFF).await;
    let err = exhausts_attempts(Fault::PartialThenClose, 3 * BACKOFF).await;
    assert!(
        matches!(err, KasaError::ClosedEarly { received } if received > 4),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reset_connection_is_retried() {
    retried_once(Fault::Reset, BACKOFF).await;
    let err = exhausts_attempts(Fault::Reset, 3 * BACKOFF).await;
    assert!(matches!(err, KasaError::Reset), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn garbage_is_reported_not_retried() {
    let (err, status) = not_retried(Fault::Garbage).await;
    assert!(matches!(err, KasaError::Garbage(_)), "{err:?}");
    assert_unreachable(&status);

    let (err, status) = not_retried(Fault::Oversized).await;
    assert!(
        matches!(err, KasaError::Garbage(ref why) if why.contains("1073741824")),
        "{err:?}"
    );
    assert_unreachable(&status);
}

#[tokio::test(start_paused = true)]
async fn a_non_zero_err_code_is_the_plugs_answer() {
    let (err, status) = not_retried(Fault::ErrCode {
        code: -3,
        message: "invalid argument".into(),
    })
    .await;
    match err {
        KasaError::Device {
            command,
            code,
            message,
        } => {
            assert_eq!(command, "system.get_sysinfo");
            assert_eq!(code, -3);
            assert_eq!(message, "invalid argument");
        }
        other => panic!("expected a device error, got {other:?}"),
    }
    assert!(status.reachable, "the plug answered: it is reachable");
    assert!(status.last_error.is_some());
    assert!(status.last_seen.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_fails_fast_and_names_the_fix() {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    plug.state().await.expect("online at first");
    sim.close_port().await;
    let started = Instant::now();
    let err = plug.state().await.expect_err("refused");
    assert_took(started, Duration::ZERO);
    assert!(
        matches!(err, DeviceError::Kasa(KasaError::Refused)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("third-party compatibility"),
        "{err}"
    );
    let status = plug.status();
    assert_unreachable(&status);
    assert!(status.state.is_some(), "the last known state is kept");
    assert_eq!(sim.requests(), 1);

    sim.open_port().await;
    assert_recovers(&sim, &plug).await;
}

#[tokio::test(start_paused = true)]
async fn a_plug_rebooting_mid_request_is_refused_until_it_is_back() {
    let sim = start(Model::Hs103);
    let plug = actor(&sim, settings());
    plug.state().await.expect("online at first");
    let offline = Duration::from_secs(30);
    sim.script([Fault::Reboot(offline)]);

    let started = Instant::now();
    let err = plug.set(None, true).await.expect_err("the plug went away");
    // The dropped connection is retried once; the retry finds the port closed.
    assert_took(started, BACKOFF);
    assert!(
        matches!(err, DeviceError::Kasa(KasaError::Refused)),
        "{err:?}"
    );
    assert_unreachable(&plug.status());
    assert!(!sim.is_online());

    tokio::time::sleep(offline / 2).await;
    assert!(matches!(
        plug.state().await,
        Err(DeviceError::Kasa(KasaError::Refused))
    ));

    tokio::time::sleep(offline / 2).await;
    sim.wait_online().await;
    assert_recovers(&sim, &plug).await;
    assert_eq!(
        sim.relays(),
        [false],
        "the request that rebooted it was lost"
    );
    plug.set(None, true).await.expect("switch after the reboot");
    assert_eq!(sim.relays(), [true]);
}

#[tokio::test(start_paused = true)]
async fn a_request_is_bounded_by_its_deadline_queue_included() {
    let sim = start(Model::Hs103);
    let deadline = Duration::from_secs(5);
    let plug = actor(
        &sim,
        DeviceSettings {
            deadline,
            ..settings()
        },
    );
    // Attempt 1 ends at 3 s, attempt 2 starts at 3.1 s and is cut by the deadline at 5 s.
    sim.script([Fault::NoReply, Fault::NoReply]);
    let started = Instant::now();
    let (first, queued) = tokio::join!(plug.state(), plug.set(None, true));
    assert_took(started, deadline);
    assert!(
        matches!(first, Err(DeviceError::Deadline(d)) if d == deadline),
        "{first:?}"
    );
    assert!(
        matches!(queued, Err(DeviceError::Deadline(_))),
        "{queued:?}"
    );
    assert_eq!(
        sim.requests(),
        2,
        "the queued request never reached the plug"
    );
    assert_eq!(sim.relays(), [false]);
    let status = plug.status();
    assert_unreachable(&status);
    assert!(matches!(status.last_error, Some(DeviceError::Deadline(_))));
    assert_recovers(&sim, &plug).await;
}

#[tokio::test]
async fn a_dead_plug_never_delays_the_others() {
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
    };
    let settings = DeviceSettings {
        attempts: 2,
        ..settings()
    };
    let sims: Vec<SimPlug> = (0..6).map(|_| start(Model::Hs103)).collect();
    sims[0].script(vec![Fault::NoReply; 8]);
    let plugs: Vec<DeviceHandle> = sims
        .iter()
        .map(|sim| DeviceHandle::spawn(TcpTransport::new(sim.endpoint(), timeouts), settings))
        .collect();

    let started = Instant::now();
    let switches = plugs.iter().map(|plug| async move {
        let result = plug.set(None, true).await;
        (result, started.elapsed())
    });
    let outcomes = futures_util::future::join_all(switches).await;

    let (dead, dead_took) = &outcomes[0];
    assert!(
        matches!(dead, Err(DeviceError::Kasa(KasaError::ReplyTimeout(_)))),
        "{dead:?}"
    );
    let bound = 2 * timeouts.read + BACKOFF;
    assert!(
        *dead_took >= bound && *dead_took < bound + Duration::from_secs(1),
        "{dead_took:?}"
    );
    for ((result, took), sim) in outcomes[1..].iter().zip(&sims[1..]) {
        result.as_ref().expect("a live plug switches");
        assert!(*took < Duration::from_secs(1), "a live plug took {took:?}");
        assert_eq!(sim.relays(), [true]);
    }
    assert_eq!(sims[0].relays(), [false]);
    assert_eq!(sims[0].requests(), 2);
}

#[tokio::test]
async fn a_silent_host_is_bounded_by_the_connect_timeout() {
    // A listener whose accept queue is full drops new SYNs, like a host that is not there.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(err)) => panic!("filler connect failed: {err}"),
            Err(_) => break,
        }
    }
    let connect = Duration::from_millis(300);
    let transport = TcpTransport::new(
        aero_edge::plugs::kasa::Endpoint {
            host: "127.0.0.1".into(),
            port: addr.port(),
        },
        Timeouts {
            connect,
            read: Duration::from_secs(3),
        },
    );
    let started = Instant::now();
    let err = transport
        .request(&json!({"system": {"get_sysinfo": {}}}))
        .await
        .expect_err("nobody answers");
    let took = started.elapsed();
    assert!(
        matches!(err, KasaError::ConnectTimeout(t) if t == connect),
        "{err:?}"
    );
    assert!(
        took >= connect && took < connect + Duration::from_millis(500),
        "{took:?}"
    );
    assert!(err.is_retryable());
}

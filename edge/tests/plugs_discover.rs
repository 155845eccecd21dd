//! Discovery against simulated plugs over real UDP on loopback: each simulated plug answers on a
//! `127.0.0.1` port of its own, so every test sends to those addresses and nothing broadcasts.
//! Plugs and strips are found with their model, alias and outlets, answers that are not the
//! protocol are skipped, each device is listed once, and the wait bounds every call.
//!
//! The tests run on paused tokio time: loopback delivers a datagram before `send_to` returns,
//! and paused time only moves when nothing is ready, so the answers arrive at instant zero and
//! the wait elapses exactly.

use aero_edge::plugs::discover::{DEFAULT_WAIT, Found, MAX_DEVICES, discover, discover_at};
use aero_edge::plugs::kasa::codec;
use aero_plugsim::{Model, SimPlug};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Paused time moves only by timers; the slack covers nothing but rounding.
const SLACK: Duration = Duration::from_millis(5);

fn start(model: Model) -> SimPlug {
    SimPlug::start(model).expect("simulated plug")
}

fn found_at(found: &[Found], addr: SocketAddr) -> &Found {
    found
        .iter()
        .find(|device| device.addr == addr)
        .unwrap_or_else(|| panic!("nothing found at {addr}: {found:?}"))
}

#[track_caller]
fn assert_took(started: Instant, expected: Duration) {
    let took = started.elapsed();
    assert!(
        took >= expected && took <= expected + SLACK,
        "took {took:?}, expected {expected:?}"
    );
}

/// A UDP socket on loopback that answers every datagram it receives with `replies`, in order.
async fn responder(replies: Vec<Vec<u8>>) -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind loopback");
    let addr = socket.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            for reply in &replies {
                let _ = socket.send_to(reply, from).await;
            }
        }
    });
    addr
}

fn encrypted_sysinfo(alias: &str, device_id: &str) -> Vec<u8> {
    let reply = json!({"system": {"get_sysinfo": {
        "alias": alias, "model": "HS105(US)", "deviceId": device_id, "relay_state": 0,
        "err_code": 0
    }}});
    codec::encrypt(reply.to_string().as_bytes())
}

#[tokio::test(start_paused = true)]
async fn three_plugs_are_found_with_their_model_alias_and_outlets() {
    let lamp = start(Model::Hs103);
    lamp.set_relay(0, true);
    let meter = start(Model::Kp115);
    let strip = start(Model::Hs300);
    let targets = [lamp.udp_addr(), meter.udp_addr(), strip.udp_addr()];

    let started = Instant::now();
    let found = discover_at(&targets, DEFAULT_WAIT, MAX_DEVICES)
        .await
        .expect("discovery");
    assert_took(started, DEFAULT_WAIT);

    assert_eq!(found.len(), 3, "{found:?}");
    let by_lamp = found_at(&found, lamp.udp_addr());
    assert_eq!(by_lamp.model, "HS103(US)");
    assert_eq!(by_lamp.alias, lamp.alias());
    assert_eq!(by_lamp.device_id, lamp.device_id());
    assert_eq!(by_lamp.relay_on, Some(true));
    assert!(by_lamp.children.is_empty());

    let by_meter = found_at(&found, meter.udp_addr());
    assert_eq!(by_meter.model, "KP115(US)");
    assert_eq!(by_meter.alias, meter.alias());
    assert_eq!(by_meter.relay_on, Some(false));
    assert!(by_meter.children.is_empty());

    let by_strip = found_at(&found, strip.udp_addr());
    assert_eq!(by_strip.model, "HS300(US)");
    assert_eq!(by_strip.alias, strip.alias());
    assert_eq!(by_strip.device_id, strip.device_id());
    assert_eq!(by_strip.relay_on, None);
    let outlets: Vec<(String, String)> = (0..6)
        .map(|index| (strip.child_id(index), format!("Outlet {}", index + 1)))
        .collect();
    assert_eq!(by_strip.children, outlets);

    // Discovery is no TCP request: the plugs' request counters did not move.
    assert_eq!(lamp.requests() + meter.requests() + strip.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn garbage_answers_are_skipped_and_a_good_one_after_them_still_counts() {
    let plug = start(Model::Hs103);
    let good = encrypted_sysinfo("Party room", "8006FFFF");
    let garbage = vec![
        Vec::new(),
        vec![0xff; 300],
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        br#"{"system":{"get_sysinfo":{"deviceId":"PLAIN","relay_state":0}}}"#.to_vec(),
        codec::frame(br#"{"system":{"get_sysinfo":{"deviceId":"FRAMED","relay_state":0}}}"#),
        codec::encrypt(br#"{"system":{"get_sysinfo":{"err_code":-1,"err_msg":"busy"}}}"#),
        codec::encrypt(br#"{"system":{"get_sysinfo":{"alias":"no id","relay_state":1}}}"#),
        good[..good.len() - 1].to_vec(),
    ];
    let noisy = responder(garbage.clone()).await;
    let mut then_good = garbage;
    then_good.push(good);
    let late = responder(then_good).await;

    let found = discover_at(
        &[noisy, plug.udp_addr(), late],
        Duration::from_secs(1),
        MAX_DEVICES,
    )
    .await
    .expect("discovery");

    let addrs: Vec<SocketAddr> = found.iter().map(|device| device.addr).collect();
    let mut expected = vec![plug.udp_addr(), late];
    expected.sort();
    assert_eq!(addrs, expected);
    let by_late = found_at(&found, late);
    assert_eq!(by_late.alias, "Party room");
    assert_eq!(by_late.device_id, "8006FFFF");
}

#[tokio::test(start_paused = true)]
async fn a_device_answering_more_than_once_is_listed_once_with_its_first_answer() {
    let plug = start(Model::Kp115);
    let twice = responder(vec![
        encrypted_sysinfo("First", "8006AAAA"),
        encrypted_sysinfo("Second", "8006BBBB"),
    ])
    .await;

    let found = discover_at(
        &[plug.udp_addr(), plug.udp_addr(), twice],
        Duration::from_secs(1),
        MAX_DEVICES,
    )
    .await
    .expect("discovery");

    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found_at(&found, plug.udp_addr()).alias, plug.alias());
    assert_eq!(found_at(&found, twice).alias, "First");
}

#[tokio::test(start_paused = true)]
async fn the_wait_bounds_discovery_when_nothing_answers() {
    // Bound and never read: the datagram is delivered, and no answer ever comes.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind loopback");
    let wait = Duration::from_secs(2);

    let started = Instant::now();
    let found = discover(silent.local_addr().expect("address"), wait)
        .await
        .expect("discovery");

    assert!(found.is_empty(), "{found:?}");
    assert_took(started, wait);
}

#[tokio::test(start_paused = true)]
async fn discovery_stops_as_soon_as_the_device_limit_is_reached() {
    let plugs = [
        start(Model::Hs103),
        start(Model::Hs110V1),
        start(Model::Hs300),
    ];
    let targets: Vec<SocketAddr> = plugs.iter().map(SimPlug::udp_addr).collect();

    let started = Instant::now();
    let found = discover_at(&targets, DEFAULT_WAIT, 2)
        .await
        .expect("discovery");

    assert_eq!(found.len(), 2, "{found:?}");
    for device in &found {
        assert!(targets.contains(&device.addr), "{device:?}");
    }
    assert!(started.elapsed() < SLACK, "took {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_rebooting_plug_is_silent_until_it_is_back() {
    let plug = start(Model::Hs103);
    plug.reboot(Duration::from_secs(30)).await;

    let found = discover(plug.udp_addr(), DEFAULT_WAIT)
        .await
        .expect("discovery");
    assert!(found.is_empty(), "{found:?}");

    plug.wait_online().await;
    let found = discover(plug.udp_addr(), DEFAULT_WAIT)
        .await
        .expect("discovery");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].device_id, plug.device_id());
}

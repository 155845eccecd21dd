//! Many requests to one plug leave no connection or file descriptor behind. Alone in its test
//! binary, so no other test's sockets share the process's descriptor table.

use aero_edge::plugs::device::{DeviceHandle, DeviceSettings};
use aero_edge::plugs::kasa::{TcpTransport, Timeouts};
use aero_plugsim::{Model, SimPlug};
use std::time::Duration;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[tokio::test]
async fn a_thousand_requests_leave_no_socket_behind() {
    let sim = SimPlug::start(Model::Hs103).expect("simulated plug");
    let plug = DeviceHandle::spawn(
        TcpTransport::new(sim.endpoint(), Timeouts::default()),
        DeviceSettings::default(),
    );
    // The first request settles whatever the runtime opens once.
    plug.state().await.expect("first state");
    sim.wait_closed().await;
    let before = open_descriptors();

    for round in 0..1_000 {
        if round % 2 == 0 {
            plug.state().await.expect("state");
        } else {
            plug.set(None, round % 4 == 1).await.expect("switch");
        }
    }
    tokio::time::timeout(Duration::from_secs(5), sim.wait_closed())
        .await
        .expect("every connection closed");

    assert_eq!(sim.requests(), 1_001);
    assert_eq!(sim.connections(), 1_001, "one connection per request");
    assert_eq!(sim.open_connections(), 0);
    let after = open_descriptors();
    assert!(
        after <= before + 2,
        "descriptors grew from {before} to {after}"
    );
}

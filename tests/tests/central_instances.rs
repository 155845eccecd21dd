//! Two instances of central on one database, as behind HQ's load balancer: a venue's edge holds
//! its change-hint socket open to one of them, and the chain status of the other still tells
//! whether the venue is online, by the heartbeat the first writes.

use aero_shared::clock::ManualClock;
use aero_tests::{TestCentral, TestEdge, wait_until};
use chrono::{Duration as Span, Utc};
use reqwest::Client;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Another instance of central on `holder`'s database, serving with `clock`.
async fn other_instance(holder: &TestCentral, clock: Arc<ManualClock>) -> SocketAddr {
    let settings = holder.settings();
    let options = settings.server.options();
    let (router, _state) = aero_central::build(settings, clock)
        .await
        .expect("build the other instance");
    // Bind first, then spawn: the port accepts before any request is sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(aero_shared::server::serve_with(
        listener,
        router,
        std::future::pending(),
        options,
    ));
    addr
}

/// The venue's row of `GET /v1/sites/status` at `addr`.
async fn venue_status(addr: SocketAddr, token: &str, site: Uuid) -> Value {
    let body: Value = Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{addr}/v1/sites/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    body["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["site_id"] == site.to_string())
        .expect("the venue")
        .clone()
}

/// Waits until `addr` says the venue is `online` (or not), within `within`.
async fn wait_for_venue(
    what: &str,
    addr: SocketAddr,
    token: &str,
    site: Uuid,
    online: bool,
    within: Duration,
) {
    wait_until(what, within, || async move {
        venue_status(addr, token, site).await["online"] == online
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_without_the_socket_sees_the_venue_online_by_its_heartbeat_and_offline_once_it_closes()
 {
    let holder = TestCentral::start().await;
    let owner = holder.owner_token().await;
    let site = holder.create_site(&owner, "Shared Venue").await;
    let token = holder.enrollment_token(&owner, site).await;
    let mut edge = TestEdge::start(&holder, &token).await;
    let holder_addr: SocketAddr = holder
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    wait_for_venue(
        "the venue online where its socket is",
        holder_addr,
        &owner,
        site,
        true,
        Duration::from_secs(10),
    )
    .await;

    // The other instance's clock runs 30 s ahead: past the 3 s in which a push or pull alone
    // counts as online for as long as this test runs, so only the heartbeat can say so there.
    // The holder may have said online by the socket or a pull before the heartbeat it writes
    // on connecting reached the database, so the other instance is asked until it is there.
    let clock = Arc::new(ManualClock::new(Utc::now() + Span::seconds(30)));
    let other = other_instance(&holder, Arc::clone(&clock)).await;
    wait_for_venue(
        "the venue online on the other instance by its heartbeat",
        other,
        &owner,
        site,
        true,
        Duration::from_secs(10),
    )
    .await;

    // The edge stops: its socket closes on the holder, and the other instance sees it.
    edge.stop().await;
    wait_for_venue(
        "the venue offline on the other instance",
        other,
        &owner,
        site,
        false,
        Duration::from_secs(5),
    )
    .await;
    assert!(!venue_status(other, &owner, site).await["offline_since"].is_null());

    // It comes back: a new socket, heard after the close.
    edge.restart().await;
    wait_for_venue(
        "the venue online again on the other instance",
        other,
        &owner,
        site,
        true,
        Duration::from_secs(10),
    )
    .await;

    // A heartbeat older than 50 s no longer counts there (a holder that died without writing
    // the close), while the holder, with the socket open, still says online.
    clock.advance(Span::seconds(60));
    assert_eq!(venue_status(other, &owner, site).await["online"], false);
    assert_eq!(
        venue_status(holder_addr, &owner, site).await["online"],
        true
    );
}

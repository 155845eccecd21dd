//! The services' lifecycle as systemd drives it, on the real binaries: SIGTERM drains running
//! requests, flushes the edge's writer and makes one last bounded push, then exits 0;
//! `READY=1`, watchdog pings and `STOPPING=1` arrive on the notification socket in order.

use aero_shared::auth::principal::Role;
use aero_tests::load::{Burst, assert_exactly_once, customer_body, edge_customer_phones, phone};
use aero_tests::process::{CentralProcess, EdgeProcess, NotifySocket, enroll};
use aero_tests::{TcpProxy, TestCentral, create_user, expect_status, wait_until};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Comfortably above the edge's default drain deadline (10 s) plus final push (5 s), and below the
/// units' `TimeoutStopSec=30`.
const STOP_LIMIT: Duration = Duration::from_secs(25);

/// A site at `central` whose edge is enrolled (through `central_url`) into `data_dir`, and a
/// tablet key for it.
async fn enrolled_venue(central: &TestCentral, central_url: &str, data_dir: &Path) -> String {
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Stopford").await;
    let token = central.enrollment_token(&owner, site).await;
    enroll(data_dir, central_url, &token).await;
    central.create_device(&owner, site, "tablet").await.1
}

async fn wait_for_key(edge: &EdgeProcess, key: &str) {
    wait_until(
        "the edge to accept the tablet key",
        Duration::from_secs(20),
        || async { edge.status(key).await.is_some() },
    )
    .await;
}

fn pending_ops(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .expect("open edge.db")
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("count pending ops")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_write_load_exits_zero_with_every_acknowledged_write_at_the_edge_and_at_central()
 {
    let central = TestCentral::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let log = dir.path().join("edge.log");
    let tablet = enrolled_venue(&central, &central.url(""), &data_dir).await;
    let mut edge = EdgeProcess::serve_edge_with(&data_dir, &log, &[("RUST_LOG", "info")]).await;
    wait_for_key(&edge, &tablet).await;

    let burst = Burst::new();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = burst.spawn_writers(6, edge.url(""), tablet.clone(), Arc::clone(&stop));
    wait_until("the load to get going", Duration::from_secs(20), || async {
        burst.acknowledged().len() >= 60
    })
    .await;
    edge.terminate();
    let status = edge.wait_exit(STOP_LIMIT).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("a writer got a non-201 answer");
    }
    assert_eq!(status.code(), Some(0), "exit status {status}");

    // Right after the exit, without starting the edge again: what it committed is at central
    // (the last push took whatever the push loop had not), exactly once.
    let db = data_dir.join(aero_edge::replica::DB_FILE);
    let edge_phones = edge_customer_phones(&db);
    let acknowledged = burst.acknowledged();
    assert!(
        acknowledged.iter().all(|p| edge_phones.contains(p)),
        "an acknowledged write is missing from edge.db"
    );
    assert_exactly_once(&central, &acknowledged, &burst.attempted(), &edge_phones).await;
    assert_eq!(pending_ops(&db), 0, "ops left in the outbox");
    let logged = edge.log_text();
    assert!(logged.contains("final push done"), "{logged}");
    assert!(logged.contains("WAL checkpointed"), "{logged}");
    // The final checkpoint folded the WAL into edge.db.
    let wal = std::fs::metadata(data_dir.join("edge.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL still holds {wal} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_central_unreachable_exits_zero_within_the_bound_keeping_the_outbox() {
    let central = TestCentral::start().await;
    let proxy = TcpProxy::start(central.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let log = dir.path().join("edge.log");
    let tablet = enrolled_venue(&central, &proxy.url(), &data_dir).await;
    let mut edge = EdgeProcess::serve_edge_with(
        &data_dir,
        &log,
        &[("RUST_LOG", "info"), ("AERO_SYNC__FINAL_PUSH_SECS", "2")],
    )
    .await;
    wait_for_key(&edge, &tablet).await;

    // The link dies the worst way: connections open, requests hang.
    proxy.stall();
    let mut registered = Vec::new();
    for n in 0..5 {
        let response = edge
            .client
            .post(edge.url("/v1/customers"))
            .header("x-api-key", &tablet)
            .json(&customer_body("Offline", &phone(n)))
            .send()
            .await
            .expect("register");
        expect_status(response, 201).await;
        registered.push(phone(n));
    }

    let started = Instant::now();
    edge.terminate();
    let status = edge.wait_exit(STOP_LIMIT).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // No request was running: the final push's 2 s bound is what the stop waits for.
    assert!(took < Duration::from_secs(6), "stopping took {took:?}");
    let logged = edge.log_text();
    assert!(
        logged.contains("final push did not finish in time"),
        "{logged}"
    );
    let db = data_dir.join(aero_edge::replica::DB_FILE);
    assert_eq!(pending_ops(&db), 5, "the outbox lost ops");
    let phones = edge_customer_phones(&db);
    assert!(registered.iter().all(|p| phones.contains(p)));
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    assert_eq!(store.count_customers().await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_tells_systemd_ready_after_its_port_accepts_then_pings_then_stopping() {
    let central = TestCentral::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let log = dir.path().join("edge.log");
    let tablet = enrolled_venue(&central, &central.url(""), &data_dir).await;
    let notify = NotifySocket::bind();
    let mut edge = EdgeProcess::serve_edge_with(
        &data_dir,
        &log,
        &[
            ("NOTIFY_SOCKET", notify.path()),
            // A 1 s watchdog: a health-checked ping every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .await;
    let first = notify.recv(Duration::from_secs(20)).await;
    assert_eq!(first.trim(), "READY=1");
    // The port accepted before READY was sent (the listener is bound first).
    TcpStream::connect(edge.addr)
        .await
        .expect("connect after READY=1");
    for _ in 0..3 {
        let ping = notify.recv(Duration::from_secs(5)).await;
        assert_eq!(ping.trim(), "WATCHDOG=1");
    }
    wait_for_key(&edge, &tablet).await;
    edge.terminate();
    let before_stopping = notify
        .recv_until("STOPPING=1", Duration::from_secs(10))
        .await;
    assert!(
        before_stopping.iter().all(|m| m.trim() == "WATCHDOG=1"),
        "{before_stopping:?}"
    );
    let status = edge.wait_exit(STOP_LIMIT).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// Sends a login request's head and half its body on a fresh connection: a request the server
/// is running (its handler waits for the rest) until the test sends the other half.
async fn half_sent_login(addr: std::net::SocketAddr) -> (TcpStream, Vec<u8>) {
    let body = format!(
        r#"{{"username":"{}","password":"{}"}}"#,
        aero_tests::OWNER,
        aero_tests::OWNER_PASSWORD
    )
    .into_bytes();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).await.expect("first half");
    (stream, rest.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn central_finishes_running_requests_on_sigterm_closes_the_rest_at_the_drain_deadline_and_exits_zero()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("central");
    let log = dir.path().join("central.log");
    let settings = aero_central::config::Settings {
        data_dir: Some(data_dir.clone()),
        ..aero_central::config::Settings::default()
    };
    create_user(
        &settings,
        aero_tests::OWNER,
        aero_tests::OWNER_PASSWORD,
        Role::Owner,
        vec![],
    )
    .await;
    let notify = NotifySocket::bind();
    let mut central = CentralProcess::serve_central_with(
        &data_dir,
        &log,
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("AERO_SERVER__DRAIN_DEADLINE_SECS", "3"),
        ],
    )
    .await;
    assert_eq!(notify.recv(Duration::from_secs(5)).await.trim(), "READY=1");

    let (mut finished, rest) = half_sent_login(central.addr).await;
    let (_never_finished, _) = half_sent_login(central.addr).await;
    // Both requests reach a handler before the signal: central counts them in flight, next to
    // the scrape that asks.
    wait_until(
        "both logins to be running at central",
        Duration::from_secs(5),
        || async {
            let scrape = central
                .client
                .get(central.url("/metrics"))
                .send()
                .await
                .expect("scrape central");
            let text = scrape.text().await.expect("metrics text");
            text.lines()
                .any(|line| line == "aero_central_http_requests_in_flight 3")
        },
    )
    .await;

    let started = Instant::now();
    central.terminate();
    notify
        .recv_until("STOPPING=1", Duration::from_secs(10))
        .await;
    wait_until(
        "central to stop accepting",
        Duration::from_secs(5),
        || async { TcpStream::connect(central.addr).await.is_err() },
    )
    .await;
    // The running request still completes after shutdown began.
    finished.write_all(&rest).await.expect("second half");
    let mut answer = Vec::new();
    finished
        .read_to_end(&mut answer)
        .await
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");

    // The other never completes: its connection is closed at the 3 s drain deadline, and
    // central exits 0.
    let status = central.wait_exit(STOP_LIMIT).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "stopping took {took:?}"
    );
    let logged = central.log_text();
    assert!(
        logged.contains("drain deadline over") && logged.contains("closing=1"),
        "{logged}"
    );
}

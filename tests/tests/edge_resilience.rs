//! The sync engine under the failures a venue actually sees, end to end over loopback: the
//! `aero-edge` process killed mid-burst, a flapping link, a bootstrap interrupted halfway, an op
//! central refuses for good, a push that skips ahead, and central going away while the edge is
//! idle. Each test states the behaviour it proves; status must tell the truth throughout.

use aero_edge::credential::Credential;
use aero_shared::wire::{
    CustomerRecord, EdgeStatus, Entity, OpKind, PushOp, PushRequest, PushResponse,
};
use aero_tests::load::{Burst, assert_exactly_once, customer_body, edge_customer_phones, phone};
use aero_tests::process::{EdgeProcess, enroll};
use aero_tests::{TcpProxy, TestCentral, TestEdge, expect_status, wait_until};
use reqwest::Method;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn register(edge: &TestEdge, key: &str, first: &str, phone: &str) -> serde_json::Value {
    let response = edge
        .request(Method::POST, "/v1/customers", key)
        .json(&customer_body(first, phone))
        .send()
        .await
        .expect("register request");
    expect_status(response, 201).await
}

/// A site with an enrolled, running edge (talking to `central_url`) and a kiosk key the edge
/// already accepts.
async fn venue_via(
    central: &TestCentral,
    central_url: &str,
    owner: &str,
    name: &str,
    configure: impl FnOnce(&mut aero_edge::config::Settings),
) -> (Uuid, TestEdge, String) {
    let site = central.create_site(owner, name).await;
    let token = central.enrollment_token(owner, site).await;
    let edge = TestEdge::start_with(central_url, &token, configure).await;
    let (_, kiosk) = central.create_device(owner, site, "kiosk").await;
    wait_until(
        "the edge to accept the kiosk key",
        Duration::from_secs(20),
        || async { edge.status(&kiosk).await.is_some() },
    )
    .await;
    (site, edge, kiosk)
}

async fn settled(edge: &TestEdge, key: &str) -> EdgeStatus {
    wait_until(
        "the edge to settle with central",
        Duration::from_secs(30),
        || async {
            edge.status(key)
                .await
                .is_some_and(|s| s.online && s.pending_ops == 0)
        },
    )
    .await;
    edge.status(key).await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_reaches_central_exactly_once_across_twenty_sigkills_of_the_edge_process()
 {
    let started = Instant::now();
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Crashton").await;
    let token = central.enrollment_token(&owner, site).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let log = dir.path().join("edge.log");
    enroll(&data_dir, &central.url(""), &token).await;
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;

    let burst = Burst::new();
    let mut interrupted_rounds = 0;
    for round in 0..20u64 {
        let mut edge = EdgeProcess::serve(&data_dir, &log).await;
        if round == 0 {
            let client = edge.client.clone();
            let url = edge.url("/v1/status");
            wait_until(
                "the edge to accept the kiosk key",
                Duration::from_secs(20),
                || async {
                    client
                        .get(&url)
                        .header("x-api-key", &kiosk)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                },
            )
            .await;
        }
        let acknowledged_before = burst.acknowledged.lock().expect("lock").len();
        let interrupted_before = burst.interrupted.load(Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let writers = burst.spawn_writers(8, edge.url(""), kiosk.clone(), Arc::clone(&stop));
        // Kill at a different point of the burst each round: 20..150 ms after its first
        // acknowledged write (so even a slow start under load gets a burst going).
        wait_until(
            "the round's first acknowledged write",
            Duration::from_secs(10),
            || async { burst.acknowledged.lock().expect("lock").len() > acknowledged_before },
        )
        .await;
        let delay = 20 + (round * 53) % 131;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        edge.kill();
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            writer.await.expect("writer");
        }
        if burst.interrupted.load(Ordering::SeqCst) > interrupted_before {
            interrupted_rounds += 1;
        }
    }
    // The kills really landed mid-burst: writes were in flight when the process died.
    assert!(
        interrupted_rounds >= 18,
        "only {interrupted_rounds} of 20 kills interrupted a write"
    );

    // Started once more, the edge drains everything it committed without any further write.
    let edge = EdgeProcess::serve(&data_dir, &log).await;
    let status_of = || async {
        let response = edge
            .client
            .get(edge.url("/v1/status"))
            .header("x-api-key", &kiosk)
            .send()
            .await
            .ok()?;
        response.json::<EdgeStatus>().await.ok()
    };
    wait_until(
        "the edge to drain its outbox",
        Duration::from_secs(30),
        || async {
            status_of()
                .await
                .is_some_and(|s| s.pending_ops == 0 && s.online)
        },
    )
    .await;
    let status = status_of().await.expect("status");
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    assert!(status.last_push_at.is_some(), "{status:?}");

    let acknowledged = burst.acknowledged();
    let attempted = burst.attempted();
    let edge_phones = edge_customer_phones(&data_dir.join(aero_edge::replica::DB_FILE));
    assert!(
        acknowledged.iter().all(|p| edge_phones.contains(p)),
        "an acknowledged write is missing from edge.db"
    );
    assert_exactly_once(&central, &acknowledged, &attempted, &edge_phones).await;
    eprintln!(
        "{} writes acknowledged, {} committed, {} attempted over 20 kills in {:?}",
        acknowledged.len(),
        edge_phones.len(),
        attempted.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_link_loses_nothing_and_converges_once_it_is_stable() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let proxy = TcpProxy::start(central.addr).await;
    let (_site, edge, kiosk) = venue_via(&central, &proxy.url(), &owner, "Flapford", |_| {}).await;

    let stop = Arc::new(AtomicBool::new(false));
    let burst = Burst::new();
    let writers = burst.spawn_writers(2, edge.url(""), kiosk.clone(), Arc::clone(&stop));
    // Watch what terminals would show while the link flaps.
    let monitor = {
        let (client, url, key, stop) = (
            edge.client.clone(),
            edge.url("/v1/status"),
            kiosk.clone(),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut offline_seen = 0;
            while !stop.load(Ordering::SeqCst) {
                let status: EdgeStatus = client
                    .get(&url)
                    .header("x-api-key", &key)
                    .send()
                    .await
                    .expect("status")
                    .json()
                    .await
                    .expect("status json");
                if !status.online {
                    assert!(
                        status.last_error.is_some(),
                        "offline without a reason: {status:?}"
                    );
                    offline_seen += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            offline_seen
        })
    };
    // About 3 s of a link that drops every connection every 200-400 ms and is down ~100 ms.
    let flapping_until = Instant::now() + Duration::from_secs(3);
    let mut flap = 0u64;
    while Instant::now() < flapping_until {
        tokio::time::sleep(Duration::from_millis(200 + (flap * 67) % 201)).await;
        proxy.cut_all(Duration::from_millis(100));
        flap += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    let offline_seen = monitor.await.expect("monitor");
    assert!(proxy.cuts() >= 8, "only {} cuts", proxy.cuts());
    assert!(proxy.refused() > 0, "no connection was refused while down");
    assert!(
        offline_seen > 0,
        "status never showed the edge offline while the link was down"
    );
    // Local writes never depend on the link: every single one was acknowledged.
    assert_eq!(burst.interrupted.load(Ordering::SeqCst), 0);
    let acknowledged = burst.acknowledged();
    assert!(
        acknowledged.len() > 50,
        "only {} writes",
        acknowledged.len()
    );

    // The link is stable now: everything converges on its own.
    let status = settled(&edge, &kiosk).await;
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    let attempted = burst.attempted();
    assert_eq!(attempted.len(), acknowledged.len());
    let edge_phones = edge_customer_phones(&edge.db_path());
    assert_exactly_once(&central, &acknowledged, &attempted, &edge_phones).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_venue_writing_through_an_outage_tries_central_about_once_a_second_not_at_its_write_pace()
{
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let proxy = TcpProxy::start(central.addr).await;
    let (_site, edge, kiosk) =
        venue_via(&central, &proxy.url(), &owner, "Busy Outage", |_| {}).await;
    settled(&edge, &kiosk).await;

    // Central is unreachable for the whole burst: every connection attempt is refused.
    let before = proxy.refused();
    proxy.cut_all(Duration::from_secs(600));
    let stop = Arc::new(AtomicBool::new(false));
    let burst = Burst::new();
    let writers = burst.spawn_writers(2, edge.url(""), kiosk.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    let attempts = proxy.refused() - before;
    let acknowledged = burst.acknowledged();
    assert!(
        acknowledged.len() > 200,
        "only {} writes",
        acknowledged.len()
    );
    // Writes bring a failed push forward at most once a second; pulls and the hint socket back
    // off from 200 ms: a handful of attempts each in 3 s, however fast the venue writes.
    assert!(
        attempts < 40,
        "{attempts} connection attempts for {} writes during the outage",
        acknowledged.len()
    );

    // The link returns and the backlog drains by itself, without another local write.
    proxy.reopen();
    let status = settled(&edge, &kiosk).await;
    assert_eq!(status.dead_letters, 0, "{status:?}");
    let edge_phones = edge_customer_phones(&edge.db_path());
    assert_exactly_once(&central, &acknowledged, &burst.attempted(), &edge_phones).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_bootstrap_resumes_from_its_checkpoint_not_from_zero() {
    const CUSTOMERS: usize = 3_000;
    const PAGE: usize = 200;
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    // A new venue whose own site and kiosk key come in the first page of its bootstrap.
    let site = central.create_site(&owner, "Newtown").await;
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;
    // Then another venue's customers, already at central (pushed as that venue's edge would).
    let elsewhere = central.create_site(&owner, "Elsewhere").await;
    let now = chrono::Utc::now();
    let ops: Vec<PushOp> = (1..=CUSTOMERS)
        .map(|n| {
            let customer = CustomerRecord {
                id: Uuid::now_v7(),
                first_name: format!("Chain{n}"),
                last_name: "Member".into(),
                birth_date: chrono::NaiveDate::from_ymd_opt(1980, 1, 1).expect("date"),
                phone: Some(phone(n)),
                email: None,
                guardian_id: None,
                home_site_id: elsewhere,
                created_at: now,
            };
            PushOp {
                seq: i64::try_from(n).expect("seq"),
                op_id: Uuid::now_v7(),
                entity: Entity::Customer,
                entity_id: customer.id,
                kind: OpKind::Upsert,
                data: serde_json::value::to_raw_value(&customer).expect("json"),
            }
        })
        .collect();
    for batch in ops.chunks(500) {
        let outcome = store.push(elsewhere, batch, now).await.expect("push");
        assert!(outcome.rejected.is_empty(), "{outcome:?}");
    }

    let token = central.enrollment_token(&owner, site).await;
    let proxy = TcpProxy::start(central.addr).await;
    proxy.hold_pulls_after(4);
    let mut edge = TestEdge::start_with(&proxy.url(), &token, |s| {
        s.sync.pull_page_rows = u32::try_from(PAGE).expect("page");
    })
    .await;
    wait_until(
        "the fifth bootstrap page to be requested",
        Duration::from_secs(20),
        || async { proxy.held_pulls() == 1 },
    )
    .await;
    let head = store.change_head().await.expect("head");
    let midway = edge.status(&kiosk).await.expect("status mid-bootstrap");
    assert!(
        midway.cursor > 0 && midway.cursor < head,
        "cursor {} of {head}",
        midway.cursor
    );
    assert!(
        midway.last_pull_at.is_some() && midway.pending_ops == 0,
        "{midway:?}"
    );
    edge.stop().await;
    let checkpoint: i64 = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .query_row("SELECT cursor FROM sync_state", [], |r| r.get(0))
        .expect("cursor");
    assert_eq!(
        checkpoint, midway.cursor,
        "status reported another cursor than stored"
    );
    let before = proxy.take_pull_afters();
    assert_eq!(before.len(), 4, "pulls before the stop: {before:?}");
    assert_eq!(
        before[0], 0,
        "a new edge bootstraps from cursor 0: {before:?}"
    );

    // Restarted on the same data dir, it asks for what comes after its checkpoint.
    proxy.cut_all(Duration::ZERO);
    proxy.release_pulls();
    edge.restart().await;
    wait_until(
        "the bootstrap to finish",
        Duration::from_secs(30),
        || async { edge.status(&kiosk).await.is_some_and(|s| s.cursor >= head) },
    )
    .await;
    let after = proxy.take_pull_afters();
    assert_eq!(
        after.first(),
        Some(&checkpoint),
        "the first pull after the restart must resume at the checkpoint: {after:?}"
    );
    assert!(
        after.iter().all(|&a| a >= checkpoint),
        "a pull went back before the checkpoint: {after:?}"
    );
    // Fewer pages than a bootstrap from zero would have needed.
    assert!(
        after.len() < CUSTOMERS.div_ceil(PAGE),
        "{} pulls after the restart: {after:?}",
        after.len()
    );

    for n in [1, CUSTOMERS] {
        let response = edge
            .request(
                Method::GET,
                &format!("/v1/customers?phone={}", phone(n).replace('+', "%2B")),
                &kiosk,
            )
            .send()
            .await
            .expect("lookup");
        let body = expect_status(response, 200).await;
        assert_eq!(
            body["customers"].as_array().map(Vec::len),
            Some(1),
            "{body}"
        );
        assert_eq!(body["customers"][0]["first_name"], format!("Chain{n}"));
    }
    assert_eq!(edge_customer_phones(&edge.db_path()).len(), CUSTOMERS);
    let status = edge.status(&kiosk).await.expect("status");
    assert!(status.online && status.last_error.is_none(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_op_central_rejects_for_good_is_dead_lettered_and_later_ops_still_arrive() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let url = central.url("");
    let (_site, mut edge, kiosk) = venue_via(&central, &url, &owner, "Poisonby", |_| {}).await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");

    // Queued while central is down: the op that will be poisoned, and two behind it.
    central.stop().await;
    let poisoned = register(&edge, &kiosk, "Poison", &phone(1)).await;
    register(&edge, &kiosk, "Behind", &phone(2)).await;
    register(&edge, &kiosk, "Behind", &phone(3)).await;
    wait_until(
        "the edge to report the outage",
        Duration::from_secs(10),
        || async {
            edge.status(&kiosk)
                .await
                .is_some_and(|s| !s.online && s.pending_ops == 3 && s.last_error.is_some())
        },
    )
    .await;

    // With the edge stopped, its first queued op turns into one central must refuse: the
    // edge API validates what central does, so only a damaged (or older-version) op gets here.
    edge.stop().await;
    let damaged = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .execute(
            "UPDATE outbox SET data = json_set(data, '$.first_name', '  ') WHERE entity_id = ?1",
            [poisoned["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid")],
        )
        .expect("damage the op");
    assert_eq!(damaged, 1);

    central.restart().await;
    edge.restart().await;
    register(&edge, &kiosk, "After", &phone(4)).await;
    let status = settled(&edge, &kiosk).await;
    assert_eq!(status.dead_letters, 1, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    for n in 2..=4 {
        assert_eq!(
            store
                .customers_by_phone(&phone(n))
                .await
                .expect("query")
                .len(),
            1,
            "customer {n} behind the poisoned op"
        );
    }
    assert!(
        store
            .customers_by_phone(&phone(1))
            .await
            .expect("query")
            .is_empty()
    );
    let reason: String = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .query_row("SELECT reason FROM dead_letters", [], |r| r.get(0))
        .expect("dead letter");
    assert!(reason.contains("name"), "{reason}");
    let metrics = edge.metrics().await;
    assert!(metrics.contains("aero_edge_dead_letters 1"), "{metrics}");
    assert!(
        metrics.contains("aero_edge_outbox_pending_ops 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_that_skips_ahead_is_answered_with_acked_plus_one_and_applies_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Gapwick").await;
    let token = central.enrollment_token(&owner, site).await;
    let dir = tempfile::tempdir().expect("tempdir");
    aero_edge::credential::enroll(&central.url(""), &token, dir.path())
        .await
        .expect("enroll");
    // The key as the edge keeps it: read back from the credential file in its data dir.
    let credential = Credential::load(dir.path())
        .expect("load")
        .expect("enrolled");
    let key = credential.api_key.expose_secret().to_string();
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let op = |seq: i64| {
        let customer = CustomerRecord {
            id: Uuid::now_v7(),
            first_name: format!("Seq{seq}"),
            last_name: "Gap".into(),
            birth_date: chrono::NaiveDate::from_ymd_opt(1970, 7, 7).expect("date"),
            phone: Some(phone(usize::try_from(seq).expect("seq"))),
            email: None,
            guardian_id: None,
            home_site_id: site,
            created_at: chrono::Utc::now(),
        };
        PushOp {
            seq,
            op_id: Uuid::now_v7(),
            entity: Entity::Customer,
            entity_id: customer.id,
            kind: OpKind::Upsert,
            data: serde_json::value::to_raw_value(&customer).expect("json"),
        }
    };
    let push = |ops: Vec<PushOp>| {
        let (central, key) = (&central, &key);
        async move {
            let response = central
                .request(Method::POST, "/v1/sync/push")
                .header("x-api-key", key)
                .json(&PushRequest {
                    ops,
                    store_id: None,
                })
                .send()
                .await
                .expect("push");
            serde_json::from_value::<PushResponse>(expect_status(response, 200).await)
                .expect("answer")
        }
    };

    let first = push(vec![op(1)]).await;
    assert_eq!(
        (first.acked_seq, first.expected_seq),
        (1, None),
        "{first:?}"
    );
    let head = store.change_head().await.expect("head");

    // Starting beyond acked + 1: nothing is applied, and central says which seq it wants.
    let skipped = push(vec![op(3), op(4)]).await;
    assert_eq!(skipped.acked_seq, 1, "{skipped:?}");
    assert_eq!(skipped.expected_seq, Some(2), "{skipped:?}");
    assert!(skipped.rejected.is_empty(), "{skipped:?}");
    assert_eq!(store.change_head().await.expect("head"), head);
    assert!(
        store
            .customers_by_phone(&phone(3))
            .await
            .expect("query")
            .is_empty()
    );

    // A gap inside a batch: the contiguous prefix is applied, the rest is asked for again.
    let partial = push(vec![op(2), op(4)]).await;
    assert_eq!(partial.acked_seq, 2, "{partial:?}");
    assert_eq!(partial.expected_seq, Some(3), "{partial:?}");
    assert_eq!(
        store
            .customers_by_phone(&phone(2))
            .await
            .expect("query")
            .len(),
        1
    );
    assert!(
        store
            .customers_by_phone(&phone(4))
            .await
            .expect("query")
            .is_empty()
    );
    let health = central
        .get_json(&owner, &format!("/v1/sites/{site}/sync"), 200)
        .await;
    assert_eq!(health["acked_seq"], 2, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_whose_outbox_starts_past_what_central_expects_renumbers_it_and_delivers() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let url = central.url("");
    let (_site, mut edge, kiosk) = venue_via(&central, &url, &owner, "Skipton", |_| {}).await;
    // The edge's sequence jumps ahead of central (a restored old backup of another box, say):
    // the seqs in between are lost to central either way, so the edge closes the gap.
    edge.stop().await;
    rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .execute("UPDATE sync_state SET next_seq = next_seq + 10", [])
        .expect("bump seq");
    edge.restart().await;
    register(&edge, &kiosk, "Ahead", &phone(1)).await;
    let status = settled(&edge, &kiosk).await;
    assert!(status.last_error.is_none(), "{status:?}");
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    assert_eq!(
        store
            .customers_by_phone(&phone(1))
            .await
            .expect("query")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_edge_reports_offline_soon_after_central_goes_away_and_online_when_it_returns() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let url = central.url("");
    // Default pull interval (30 s): only the lost hint socket can tell the edge in time.
    let (_site, edge, kiosk) = venue_via(&central, &url, &owner, "Idleham", |_| {}).await;
    settled(&edge, &kiosk).await;

    central.stop().await;
    let stopped = Instant::now();
    wait_until(
        "the idle edge to report offline",
        Duration::from_secs(5),
        || async {
            edge.status(&kiosk)
                .await
                .is_some_and(|s| !s.online && s.last_error.is_some())
        },
    )
    .await;
    let noticed = stopped.elapsed();
    assert!(
        noticed < Duration::from_secs(3),
        "offline reported after {noticed:?}"
    );

    central.restart().await;
    wait_until(
        "the idle edge to report online again",
        Duration::from_secs(10),
        || async {
            edge.status(&kiosk)
                .await
                .is_some_and(|s| s.online && s.last_error.is_none())
        },
    )
    .await;
}

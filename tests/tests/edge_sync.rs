//! The edge against a real central over loopback: enrollment, key replication, customer
//! registration reaching central exactly once, a 1,000-write outage backlog draining on its own
//! after a central restart, replayed pushes, and customers shared between two venues.

use aero_shared::wire::{
    CustomerRecord, Entity, OpKind, PushOp, PushRequest, PushResponse, WaiverRecord,
};
use aero_tests::{TestCentral, TestEdge, expect_status, wait_until};
use futures_util::StreamExt;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Waits until the edge's replica knows `key` (the device was pulled from central).
async fn wait_for_key(edge: &TestEdge, key: &str) {
    wait_until(
        "the edge to accept the device key",
        Duration::from_secs(20),
        || async { edge.status(key).await.is_some() },
    )
    .await;
}

async fn register(edge: &TestEdge, key: &str, first: &str, phone: &str) -> Value {
    let response = edge
        .request(Method::POST, "/v1/customers", key)
        .json(&json!({
            "first_name": first,
            "last_name": "Jumper",
            "birth_date": "1990-04-01",
            "phone": phone,
            "email": format!("{}@example.com", first.to_lowercase()),
        }))
        .send()
        .await
        .expect("register request");
    expect_status(response, 201).await
}

async fn lookup(edge: &TestEdge, key: &str, phone: &str) -> Vec<Value> {
    let response = edge
        .request(
            Method::GET,
            &format!("/v1/customers?phone={}", encode(phone)),
            key,
        )
        .send()
        .await
        .expect("lookup request");
    let body = expect_status(response, 200).await;
    body["customers"].as_array().cloned().unwrap_or_default()
}

/// A site with an enrolled, running edge and a kiosk key the edge already accepts.
async fn venue(central: &TestCentral, owner: &str, name: &str) -> (Uuid, TestEdge, String) {
    let site = central.create_site(owner, name).await;
    let token = central.enrollment_token(owner, site).await;
    let edge = TestEdge::start(central, &token).await;
    assert_eq!(edge.credential.site_id, site);
    let (_, kiosk) = central.create_device(owner, site, "kiosk").await;
    wait_for_key(&edge, &kiosk).await;
    (site, edge, kiosk)
}

/// Percent-encodes what a phone number may contain beyond URL-safe characters.
fn encode(text: &str) -> String {
    text.replace('+', "%2B")
        .replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29")
}

/// Customers registered while central is down.
const OUTAGE_WRITES: usize = 1_000;

fn phone(n: usize) -> String {
    format!("+44 7700 {n:06}")
}

fn normalized(n: usize) -> String {
    format!("+447700{n:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_reach_central_once_and_a_1000_write_outage_backlog_drains_by_itself() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (_site, edge, kiosk) = venue(&central, &owner, "Leeds").await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");

    // One registration, answered locally, then pushed.
    let created = register(&edge, &kiosk, "Ada", &phone(0)).await;
    assert_eq!(created["phone"], normalized(0));
    assert_eq!(created["waiver_valid"], false);
    let id = created["id"].as_str().expect("id").to_string();
    wait_until(
        "the customer at central",
        Duration::from_secs(20),
        || async {
            store
                .customers_by_phone(&normalized(0))
                .await
                .expect("query")
                .len()
                == 1
        },
    )
    .await;

    // A waiver signed at the kiosk makes the lookup say so.
    let response = edge
        .request(Method::POST, &format!("/v1/customers/{id}/waivers"), &kiosk)
        .json(&json!({ "signer_name": "Ada Jumper" }))
        .send()
        .await
        .expect("waiver request");
    let waiver = expect_status(response, 201).await;
    assert!(waiver["expires_at"].is_string(), "{waiver}");
    let found = lookup(&edge, &kiosk, &phone(0)).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    assert_eq!(found[0]["waiver_valid"], true);
    let customer_id: Uuid = id.parse().expect("uuid");
    wait_until("the waiver at central", Duration::from_secs(20), || async {
        store.waivers_for(customer_id).await.expect("query").len() == 1
    })
    .await;
    wait_until("an empty outbox", Duration::from_secs(20), || async {
        edge.status(&kiosk)
            .await
            .is_some_and(|s| s.pending_ops == 0 && s.online)
    })
    .await;

    // Outage: the venue keeps registering customers, 1,000 of them from several terminals at
    // once, every one answered locally.
    central.stop().await;
    futures_util::stream::iter(1..=OUTAGE_WRITES)
        .for_each_concurrent(10, |n| {
            let (edge, kiosk) = (&edge, &kiosk);
            async move {
                register(edge, kiosk, &format!("Guest{n}"), &phone(n)).await;
            }
        })
        .await;
    wait_until(
        "the edge to notice the outage",
        Duration::from_secs(20),
        || async {
            edge.status(&kiosk).await.is_some_and(|s| {
                !s.online && s.pending_ops == i64::try_from(OUTAGE_WRITES).expect("count")
            })
        },
    )
    .await;
    let offline = edge.status(&kiosk).await.expect("status");
    assert!(offline.last_error.is_some(), "{offline:?}");
    assert!(offline.oldest_pending_age_seconds.is_some(), "{offline:?}");
    assert_eq!(offline.dead_letters, 0);
    // Lookups keep working from the replica while central is down.
    assert_eq!(lookup(&edge, &kiosk, &phone(7)).await.len(), 1);

    // Central comes back on the same address and database; no further local write happens.
    central.restart().await;
    let restarted = chrono::Utc::now();
    // Drained, and pulled since: the pull loop spaces its pulls while a push round runs, so the
    // last push can land before the first pull after the restart.
    wait_until("the backlog to drain", Duration::from_secs(30), || async {
        edge.status(&kiosk).await.is_some_and(|s| {
            s.pending_ops == 0 && s.online && s.last_pull_at.is_some_and(|t| t >= restarted)
        })
    })
    .await;
    for n in 0..=OUTAGE_WRITES {
        let at_central = store
            .customers_by_phone(&normalized(n))
            .await
            .expect("query");
        assert_eq!(
            at_central.len(),
            1,
            "customer {n} at central: {at_central:?}"
        );
    }
    assert_eq!(
        store.count_customers().await.expect("count"),
        i64::try_from(OUTAGE_WRITES + 1).expect("count")
    );
    let drained = edge.status(&kiosk).await.expect("status");
    assert_eq!(drained.dead_letters, 0);
    assert!(drained.last_error.is_none(), "{drained:?}");
    assert!(drained.oldest_pending_age_seconds.is_none(), "{drained:?}");
    // The drain is what set these: pushed (and pulled) after central came back.
    assert!(
        drained.last_push_at.is_some_and(|t| t >= restarted),
        "{drained:?}"
    );
    assert!(drained.last_pull_at.is_some_and(|t| t >= restarted));

    // HQ sees the same: everything the edge sent is acknowledged.
    let health = central
        .get_json(
            &owner,
            &format!("/v1/sites/{}/sync", edge.credential.site_id),
            200,
        )
        .await;
    // One customer and one waiver before the outage, then the backlog.
    assert_eq!(health["acked_seq"], OUTAGE_WRITES + 2, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_push_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Replay").await;
    let token = central.enrollment_token(&owner, site).await;
    // Enrolled but not serving: this test speaks the push protocol itself with the edge's key.
    let dir = tempfile::tempdir().expect("tempdir");
    let credential = aero_edge::credential::enroll(&central.url(""), &token, dir.path())
        .await
        .expect("enroll");
    assert_eq!(credential.site_id, site);
    assert_eq!(credential.next_seq, 1);
    let now = chrono::Utc::now();
    let customer = CustomerRecord {
        id: Uuid::now_v7(),
        first_name: "Rita".into(),
        last_name: "Replay".into(),
        birth_date: chrono::NaiveDate::from_ymd_opt(1985, 5, 5).expect("date"),
        phone: Some("+447700999001".into()),
        email: None,
        guardian_id: None,
        home_site_id: site,
        created_at: now,
    };
    let waiver = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: customer.id,
        site_id: site,
        signer_name: "Rita Replay".into(),
        signed_at: now,
        expires_at: now + chrono::Duration::days(365),
        text_version: None,
    };
    let batch = PushRequest {
        ops: vec![
            PushOp {
                seq: 1,
                op_id: Uuid::now_v7(),
                entity: Entity::Customer,
                entity_id: customer.id,
                kind: OpKind::Upsert,
                data: serde_json::value::to_raw_value(&customer).expect("json"),
            },
            PushOp {
                seq: 2,
                op_id: Uuid::now_v7(),
                entity: Entity::Waiver,
                entity_id: waiver.id,
                kind: OpKind::Upsert,
                data: serde_json::value::to_raw_value(&waiver).expect("json"),
            },
        ],
        store_id: None,
    };
    let key = credential.api_key.expose_secret().to_string();
    let push = || async {
        let response = central
            .request(Method::POST, "/v1/sync/push")
            .header("x-api-key", &key)
            .json(&batch)
            .send()
            .await
            .expect("push");
        serde_json::from_value::<PushResponse>(expect_status(response, 200).await).expect("answer")
    };
    let head = || async {
        let response = central
            .request(Method::GET, "/v1/sync/pull?after=0&limit=5000")
            .header("x-api-key", &key)
            .send()
            .await
            .expect("pull");
        expect_status(response, 200).await["changes"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_default()
    };
    let first = push().await;
    assert_eq!(first.acked_seq, 2);
    assert!(
        first.rejected.is_empty() && first.expected_seq.is_none(),
        "{first:?}"
    );
    let changes = head().await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let sync_before = central
        .get_json(&owner, &format!("/v1/sites/{site}/sync"), 200)
        .await;

    let second = push().await;
    assert_eq!(second, first);
    assert_eq!(
        head().await,
        changes,
        "a replay must not add to the change feed"
    );
    assert_eq!(
        store
            .customers_by_phone("+447700999001")
            .await
            .expect("query")
            .len(),
        1
    );
    assert_eq!(
        store.waivers_for(customer.id).await.expect("query").len(),
        1
    );
    let sync_after = central
        .get_json(&owner, &format!("/v1/sites/{site}/sync"), 200)
        .await;
    assert_eq!(sync_after["acked_seq"], sync_before["acked_seq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_registered_at_one_venue_is_found_at_another() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (_a, edge_a, kiosk_a) = venue(&central, &owner, "Leeds").await;
    let (_b, edge_b, kiosk_b) = venue(&central, &owner, "York").await;

    // Each kiosk key is valid only at its own venue.
    assert!(edge_b.status(&kiosk_a).await.is_none());

    let created = register(&edge_a, &kiosk_a, "Grace", "07700 900123").await;
    wait_until(
        "the customer at the other venue",
        Duration::from_secs(20),
        || async { lookup(&edge_b, &kiosk_b, "07700900123").await.len() == 1 },
    )
    .await;
    let found = lookup(&edge_b, &kiosk_b, "07700 900123").await;
    assert_eq!(found[0]["id"], created["id"]);
    assert_eq!(found[0]["first_name"], "Grace");
    assert_eq!(found[0]["waiver_valid"], false);
}

#[tokio::test]
async fn an_unenrolled_edge_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = aero_edge::config::Settings {
        data_dir: Some(dir.path().to_path_buf()),
        ..aero_edge::config::Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = aero_edge::launch(settings, listener, std::future::pending())
        .await
        .expect_err("must refuse");
    assert!(err.to_string().contains("not enrolled"), "{err}");
}

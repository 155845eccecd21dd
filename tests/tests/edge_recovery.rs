//! Recovery from what ops teams do to boxes and databases, end to end over loopback: an edge
//! restored from a copy of its data directory, central restored from a copy of its database, a
//! cloned VM enrolled again, a push that fails for good while pulls go on, dead letters handled
//! by a manager (and mirrored to HQ), central's row held back behind a local edit until that edit
//! is dead-lettered, an entity only a newer version knows kept by the edge, and an edge pointed
//! at another central database. In each, every write a venue acknowledged reaches central
//! exactly once. The protocol is in `docs/sync-protocol.md`.

use aero_shared::auth::principal::Role;
use aero_shared::wire::{EdgeStatus, Entity, OpKind, PushOp, PushRequest, PushResponse};
use aero_tests::{
    TestCentral, TestEdge, copy_data_dir, create_user, expect_problem, expect_status, wait_settled,
    wait_until,
};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn phone(n: usize) -> String {
    format!("+4478{n:08}")
}

async fn register(edge: &TestEdge, key: &str, n: usize) {
    let response = edge
        .request(Method::POST, "/v1/customers", key)
        .json(&json!({
            "first_name": format!("Jumper{n}"),
            "last_name": "Recovery",
            "birth_date": "1991-02-03",
            "phone": phone(n),
            "email": null,
        }))
        .send()
        .await
        .expect("register");
    expect_status(response, 201).await;
}

/// A site with a running edge and a tablet key the edge already accepts.
async fn venue(central: &TestCentral, owner: &str, name: &str) -> (Uuid, TestEdge, String) {
    let site = central.create_site(owner, name).await;
    let token = central.enrollment_token(owner, site).await;
    let edge = TestEdge::start(central, &token).await;
    let (_, tablet) = central.create_device(owner, site, "tablet").await;
    wait_for_key(&edge, &tablet, true).await;
    (site, edge, tablet)
}

/// Waits until the edge accepts (or refuses) `key`; returns how long that took.
async fn wait_for_key(edge: &TestEdge, key: &str, accepted: bool) -> Duration {
    let start = Instant::now();
    wait_until(
        if accepted {
            "the edge to accept the key"
        } else {
            "the edge to refuse the key"
        },
        Duration::from_secs(20),
        || async { edge.status(key).await.is_some() == accepted },
    )
    .await;
    start.elapsed()
}

/// HQ issues a key and revokes `kiosk` (the site's only kiosk): the edge accepts the new key
/// and refuses the old one, each within 3 s.
async fn assert_hq_changes_arrive_within_3s(
    central: &TestCentral,
    owner: &str,
    site: Uuid,
    edge: &TestEdge,
    kiosk: &str,
) {
    let (_, new_key) = central.create_device(owner, site, "pos").await;
    let took = wait_for_key(edge, &new_key, true).await;
    assert!(took < Duration::from_secs(3), "a new key took {took:?}");
    let devices = central
        .get_json(owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;
    let kiosk_id = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["kind"] == "kiosk")
        .and_then(|d| d["id"].as_str())
        .expect("kiosk id")
        .to_string();
    let revoked = central
        .request(Method::DELETE, &format!("/v1/devices/{kiosk_id}"))
        .bearer_auth(owner)
        .send()
        .await
        .expect("revoke");
    expect_status(revoked, 204).await;
    let took = wait_for_key(edge, kiosk, false).await;
    assert!(took < Duration::from_secs(3), "a revocation took {took:?}");
}

/// Waits until the edge has pushed everything and pulled without error.
async fn settled(edge: &TestEdge, key: &str) -> EdgeStatus {
    wait_settled(|| edge.status(key)).await
}

/// Asserts central holds exactly the customers `phones` (each once) and nothing else.
async fn assert_central_holds_exactly(central: &TestCentral, phones: impl Iterator<Item = usize>) {
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let mut expected = 0;
    for n in phones {
        let found = store.customers_by_phone(&phone(n)).await.expect("query");
        assert_eq!(
            found.len(),
            1,
            "customer {n} is at central {} times",
            found.len()
        );
        expected += 1;
    }
    assert_eq!(store.count_customers().await.expect("count"), expected);
}

/// How many times central applied an op to a customer: one change-log entry per application.
fn central_changes(central: &TestCentral) -> i64 {
    rusqlite::Connection::open(central.data_dir.path().join("central.db"))
        .expect("open central.db")
        .query_row(
            "SELECT COUNT(*) FROM change_log WHERE entity = 'customer'",
            [],
            |r| r.get(0),
        )
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_restored_from_a_copy_of_its_data_dir_delivers_every_later_write_exactly_once() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (_site, mut edge, tablet) = venue(&central, &owner, "Restoreham").await;
    for n in 0..5 {
        register(&edge, &tablet, n).await;
    }
    settled(&edge, &tablet).await;

    edge.stop().await;
    let backup = tempfile::tempdir().expect("backup dir");
    copy_data_dir(edge.data_dir.path(), backup.path());
    edge.restart().await;
    for n in 5..55 {
        register(&edge, &tablet, n).await;
    }
    settled(&edge, &tablet).await;

    // The box is re-imaged from the copy: it has forgotten 50 writes central holds, and its
    // next seqs are ones central already holds under other ops.
    edge.stop().await;
    copy_data_dir(backup.path(), edge.data_dir.path());
    edge.restart().await;
    for n in 55..85 {
        register(&edge, &tablet, n).await;
    }
    let status = settled(&edge, &tablet).await;
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    assert_central_holds_exactly(&central, 0..85).await;
    assert_eq!(central_changes(&central), 85, "an op was applied twice");
    // The restored box learns the 50 customers it had forgotten from central's feed.
    wait_until(
        "the restored box to catch up",
        Duration::from_secs(10),
        || async {
            edge.request(
                Method::GET,
                &format!("/v1/customers?phone={}", phone(30).replace('+', "%2B")),
                &tablet,
            )
            .send()
            .await
            .expect("lookup")
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|b| b["customers"].as_array().is_some_and(|c| c.len() == 1))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_central_restored_from_a_copy_gets_back_what_it_lost_and_keeps_the_venue_in_sync() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (site, edge, tablet) = venue(&central, &owner, "Rollbackton").await;
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;
    wait_for_key(&edge, &kiosk, true).await;
    for n in 0..5 {
        register(&edge, &tablet, n).await;
    }
    settled(&edge, &tablet).await;

    central.stop().await;
    let backup = tempfile::tempdir().expect("backup dir");
    copy_data_dir(central.data_dir.path(), backup.path());
    central.restart().await;
    for n in 5..55 {
        register(&edge, &tablet, n).await;
    }
    settled(&edge, &tablet).await;
    assert_central_holds_exactly(&central, 0..55).await;

    // Last night's backup goes back in: central forgets 50 venue writes and its change log is
    // shorter than the edge's cursor.
    central.stop().await;
    copy_data_dir(backup.path(), central.data_dir.path());
    central.restart().await;
    let owner = central.owner_token().await;

    for n in 55..85 {
        register(&edge, &tablet, n).await;
    }
    // HQ keeps working on the restored database, and the venue sees it within seconds.
    assert_hq_changes_arrive_within_3s(&central, &owner, site, &edge, &kiosk).await;

    let status = settled(&edge, &tablet).await;
    assert!(status.last_error.is_none(), "{status:?}");
    assert_eq!(status.dead_letters, 0, "{status:?}");
    // What central lost came back from the edge's retention window, once each.
    assert_central_holds_exactly(&central, 0..85).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloned_box_is_fenced_once_the_other_enrolls_again_and_nothing_is_lost_or_doubled() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (site, mut first, tablet) = venue(&central, &owner, "Clonebury").await;
    for n in 0..5 {
        register(&first, &tablet, n).await;
    }
    settled(&first, &tablet).await;

    // The VM is cloned: two boxes with one credential, both taking writes.
    first.stop().await;
    let clone_dir = tempfile::tempdir().expect("clone dir");
    copy_data_dir(first.data_dir.path(), clone_dir.path());
    first.restart().await;
    let mut second = TestEdge::serve_existing(clone_dir, |_| {}).await;
    wait_for_key(&second, &tablet, true).await;
    for n in 5..15 {
        register(&first, &tablet, n).await;
        register(&second, &tablet, n + 100).await;
    }
    settled(&first, &tablet).await;
    settled(&second, &tablet).await;

    // Ops enroll the clone as the venue's box: the first box is fenced.
    second.stop().await;
    let token = central.enrollment_token(&owner, site).await;
    aero_edge::credential::enroll_again(&central.url(""), &token, second.data_dir.path())
        .await
        .expect("enroll again");
    second.restart().await;
    wait_until(
        "the old box to be fenced",
        Duration::from_secs(10),
        || async {
            first
                .status(&tablet)
                .await
                .is_some_and(|s| s.fenced.is_some())
        },
    )
    .await;
    let refused = first
        .request(Method::POST, "/v1/customers", &tablet)
        .json(&json!({ "first_name": "Late", "last_name": "Write", "birth_date": "1990-01-01" }))
        .send()
        .await
        .expect("request");
    let problem = expect_problem(refused, 503).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("enroll")),
        "{problem}"
    );

    for n in 15..20 {
        register(&second, &tablet, n + 100).await;
    }
    settled(&second, &tablet).await;
    assert_central_holds_exactly(&central, (0..15).chain(105..120)).await;
    assert_eq!(central_changes(&central), 30, "an op was applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_failing_for_good_never_stops_pulls_and_hq_sees_the_stuck_op() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (site, mut edge, tablet) = venue(&central, &owner, "Stuckford").await;
    settled(&edge, &tablet).await;

    // An op larger than central accepts heads the queue (an older version wrote it, say):
    // every push is refused with 413.
    edge.stop().await;
    rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .execute(
            "INSERT INTO outbox (seq, op_id, entity, entity_id, kind, data, created_at)
             SELECT next_seq, ?1, 'customer', ?2, 'upsert', json_object('pad', ?3), '2026-01-01T00:00:00.000Z'
               FROM sync_state",
            rusqlite::params![Uuid::now_v7(), Uuid::now_v7(), "x".repeat(2 * 1024 * 1024)],
        )
        .expect("queue an oversized op");
    edge.restart().await;
    wait_until("the push to fail", Duration::from_secs(10), || async {
        edge.status(&tablet)
            .await
            .is_some_and(|s| s.push_error.as_deref().is_some_and(|e| e.contains("413")))
    })
    .await;

    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;
    wait_for_key(&edge, &kiosk, true).await;
    assert_hq_changes_arrive_within_3s(&central, &owner, site, &edge, &kiosk).await;
    let status = edge.status(&tablet).await.expect("status");
    assert_eq!(status.pending_ops, 1, "{status:?}");
    assert!(status.pull_error.is_none(), "{status:?}");
    assert!(status.push_error.is_some(), "{status:?}");

    // Each pull tells central what waits in the outbox: HQ sees the stuck op and its age.
    let venue_status = || async {
        let chain = central.get_json(&owner, "/v1/sites/status", 200).await;
        chain["sites"]
            .as_array()
            .and_then(|sites| sites.iter().find(|s| s["site_id"] == site.to_string()))
            .cloned()
            .expect("the venue in the chain status")
    };
    wait_until(
        "HQ to see the pending op",
        Duration::from_secs(5),
        || async { venue_status().await["pending_ops"] == 1 },
    )
    .await;
    let seen = venue_status().await;
    let age = seen["oldest_pending_age_seconds"].as_i64().expect("an age");
    assert!(age > 86_400, "the op was written on 2026-01-01: {seen}");
    let sync = central
        .get_json(&owner, &format!("/v1/sites/{site}/sync"), 200)
        .await;
    assert_eq!(sync["outbox"]["pending_ops"], 1, "{sync}");
    assert_eq!(
        sync["outbox"]["oldest_pending_at"], "2026-01-01T00:00:00Z",
        "{sync}"
    );
}

/// Another venue as central sees it: a box enrolled for its own site whose ops the test pushes
/// itself, for writes that reach central from elsewhere while a venue under test is busy.
struct OtherVenue {
    site: Uuid,
    key: String,
    next_seq: i64,
    client: reqwest::Client,
    push_url: String,
}

impl OtherVenue {
    async fn enroll(central: &TestCentral, owner: &str, name: &str) -> Self {
        let site = central.create_site(owner, name).await;
        let token = central.enrollment_token(owner, site).await;
        let dir = tempfile::tempdir().expect("credential dir");
        let credential = aero_edge::credential::enroll(&central.url(""), &token, dir.path())
            .await
            .expect("enroll the other venue");
        Self {
            site,
            key: credential.api_key.expose_secret().to_string(),
            next_seq: credential.next_seq,
            client: central.client.clone(),
            push_url: central.url("/v1/sync/push"),
        }
    }

    /// Pushes one customer record, as the other venue's edge would after a local edit, and
    /// asserts central took it.
    async fn push_customer(&mut self, customer: &serde_json::Value) {
        let op = PushOp {
            seq: self.next_seq,
            op_id: Uuid::now_v7(),
            entity: Entity::Customer,
            entity_id: customer["id"].as_str().expect("id").parse().expect("uuid"),
            kind: OpKind::Upsert,
            data: serde_json::value::to_raw_value(customer).expect("json"),
        };
        let response = self
            .client
            .post(&self.push_url)
            .header("x-api-key", &self.key)
            .json(&PushRequest {
                ops: vec![op],
                store_id: None,
            })
            .send()
            .await
            .expect("push");
        let answer: PushResponse =
            serde_json::from_value(expect_status(response, 200).await).expect("push answer");
        assert!(answer.rejected.is_empty(), "{answer:?}");
        assert_eq!(answer.acked_seq, self.next_seq, "{answer:?}");
        self.next_seq += 1;
    }
}

/// Queues an op in a stopped edge's outbox, as a local write would; returns its op id.
fn queue_op(
    conn: &rusqlite::Connection,
    entity: &str,
    entity_id: Uuid,
    data: &serde_json::Value,
) -> Uuid {
    let op_id = Uuid::now_v7();
    conn.execute("UPDATE sync_state SET next_seq = next_seq + 1", [])
        .expect("take a seq");
    conn.execute(
        "INSERT INTO outbox (seq, op_id, entity, entity_id, kind, data, created_at)
         SELECT next_seq - 1, ?1, ?2, ?3, 'upsert', ?4, '2026-01-01T00:00:00.000Z' FROM sync_state",
        rusqlite::params![op_id, entity, entity_id, data.to_string()],
    )
    .expect("queue");
    op_id
}

/// A customer record as edges push it.
fn customer_record(id: Uuid, home: Uuid, first_name: &str, n: usize) -> serde_json::Value {
    json!({
        "id": id, "first_name": first_name, "last_name": "Recovery", "birth_date": "1991-02-03",
        "phone": phone(n), "email": null, "guardian_id": null, "home_site_id": home,
        "created_at": "2026-01-01T00:00:00Z",
    })
}

/// The site's dead letters at HQ in `state` (`open`, `resolved` or `all`).
async fn hq_dead_letters(
    central: &TestCentral,
    owner: &str,
    site: Uuid,
    state: &str,
) -> Vec<serde_json::Value> {
    central
        .get_json(
            owner,
            &format!("/v1/sites/{site}/dead-letters?state={state}"),
            200,
        )
        .await["dead_letters"]
        .as_array()
        .expect("dead letters")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_retried_and_discarded_by_a_manager_and_seen_at_hq() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (site, mut edge, tablet) = venue(&central, &owner, "Letterkenny").await;
    create_user(
        &central.settings(),
        "venue-manager",
        "manager password 1",
        Role::Manager,
        vec![site],
    )
    .await;
    settled(&edge, &tablet).await;
    // Settled says nothing is pending; the new user arrives with the next pull.
    wait_until(
        "the manager to reach the edge",
        Duration::from_secs(10),
        || async {
            edge.client
                .post(edge.url("/v1/auth/login"))
                .json(&json!({ "username": "venue-manager", "password": "manager password 1" }))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let mut home = OtherVenue::enroll(&central, &owner, "Homeville").await;

    // Three ops central must refuse: two waivers claiming another venue took them, and an edit
    // of a customer whose home venue has not registered them at central yet.
    let visitor_id = Uuid::now_v7();
    let visitor = customer_record(visitor_id, home.site, "Visiting", 7);
    edge.stop().await;
    {
        let conn = rusqlite::Connection::open(edge.db_path()).expect("open edge.db");
        for _ in 0..2 {
            let id = Uuid::now_v7();
            let waiver = json!({
                "id": id, "customer_id": Uuid::now_v7(), "site_id": Uuid::now_v7(),
                "signer_name": "Elsewhere", "signed_at": "2026-01-01T00:00:00Z",
                "expires_at": "2027-01-01T00:00:00Z",
            });
            queue_op(&conn, "waiver", id, &waiver);
        }
        queue_op(&conn, "customer", visitor_id, &visitor);
    }
    edge.restart().await;
    let status = settled(&edge, &tablet).await;
    assert_eq!(status.dead_letters, 3, "{status:?}");

    // The manager logs in at the edge (replicated user) and handles them.
    let login = edge
        .client
        .post(edge.url("/v1/auth/login"))
        .json(&json!({ "username": "venue-manager", "password": "manager password 1" }))
        .send()
        .await
        .expect("login");
    let token = expect_status(login, 200).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let forbidden = edge
        .request(Method::GET, "/v1/dead-letters", &tablet)
        .send()
        .await
        .expect("list");
    expect_problem(forbidden, 403).await;
    let list = |token: String| {
        let edge = &edge;
        async move {
            let response = edge
                .client
                .get(edge.url("/v1/dead-letters"))
                .bearer_auth(token)
                .send()
                .await
                .expect("list");
            expect_status(response, 200).await["dead_letters"]
                .as_array()
                .expect("array")
                .clone()
        }
    };
    let post = |path: String| {
        let (edge, token) = (&edge, token.clone());
        async move {
            edge.client
                .post(edge.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .expect("post")
        }
    };
    let letters = list(token.clone()).await;
    assert_eq!(letters.len(), 3);
    let waivers: Vec<&serde_json::Value> =
        letters.iter().filter(|l| l["entity"] == "waiver").collect();
    assert_eq!(waivers.len(), 2, "{letters:?}");
    assert!(
        waivers[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("site")),
        "{letters:?}"
    );
    let visit = letters
        .iter()
        .find(|l| l["entity"] == "customer")
        .and_then(|l| l["op_id"].as_str())
        .expect("the refused edit")
        .to_string();
    let open = hq_dead_letters(&central, &owner, site, "open").await;
    assert_eq!(open.len(), 3, "{open:?}");
    assert!(open.iter().all(|l| l["state"] == "open"), "{open:?}");
    // Open is what HQ sees by default.
    let default = central
        .get_json(&owner, &format!("/v1/sites/{site}/dead-letters"), 200)
        .await;
    assert_eq!(default["dead_letters"].as_array().map(Vec::len), Some(3));
    assert!(
        hq_dead_letters(&central, &owner, site, "resolved")
            .await
            .is_empty()
    );
    let bad_state = central
        .request(
            Method::GET,
            &format!("/v1/sites/{site}/dead-letters?state=closed"),
        )
        .bearer_auth(&owner)
        .send()
        .await
        .expect("list");
    expect_problem(bad_state, 422).await;

    // Retried: sent again as a new op (still invalid, so refused again under its new id).
    let first = waivers[0]["op_id"].as_str().expect("op id").to_string();
    let second = waivers[1]["op_id"].as_str().expect("op id").to_string();
    let retried = expect_status(post(format!("/v1/dead-letters/{first}/retry")).await, 200).await;
    let new_id = retried["op_id"].as_str().expect("new op id").to_string();
    assert_ne!(new_id, first);
    wait_until(
        "the retried op to be judged again",
        Duration::from_secs(10),
        || async {
            let letters = list(token.clone()).await;
            letters.len() == 3 && letters.iter().any(|l| l["op_id"] == new_id.as_str())
        },
    )
    .await;

    // Discarded: gone at the edge, audited.
    expect_status(
        post(format!("/v1/dead-letters/{new_id}/discard")).await,
        204,
    )
    .await;
    assert_eq!(list(token.clone()).await.len(), 2);
    expect_problem(
        post(format!("/v1/dead-letters/{new_id}/discard")).await,
        404,
    )
    .await;

    // The edit is retried once its home venue registered the customer: the same write under a
    // new op id, which central now applies.
    home.push_customer(&customer_record(visitor_id, home.site, "Registered", 7))
        .await;
    let retried_visit =
        expect_status(post(format!("/v1/dead-letters/{visit}/retry")).await, 200).await;
    let visit_again = retried_visit["op_id"]
        .as_str()
        .expect("new op id")
        .to_string();
    let status = settled(&edge, &tablet).await;
    assert_eq!(status.dead_letters, 1, "{status:?}");
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let stored = store
        .get_customer(visitor_id)
        .await
        .expect("read")
        .expect("the retried edit reached central");
    assert_eq!(stored.first_name, "Visiting");
    assert_eq!(stored.home_site_id, home.site);

    // HQ sees each decision on the refused op: who, when, how, and what it was retried as.
    wait_until(
        "HQ to see the venue's decisions",
        Duration::from_secs(10),
        || async {
            hq_dead_letters(&central, &owner, site, "resolved")
                .await
                .len()
                == 3
        },
    )
    .await;
    let resolved = hq_dead_letters(&central, &owner, site, "resolved").await;
    let decision = |op_id: &str| {
        resolved
            .iter()
            .find(|l| l["op_id"] == op_id)
            .unwrap_or_else(|| panic!("{op_id} is not resolved at HQ: {resolved:?}"))
    };
    for (op_id, how, retried_as) in [
        (first.as_str(), "retried", json!(new_id)),
        (new_id.as_str(), "discarded", json!(null)),
        (visit.as_str(), "retried", json!(visit_again)),
    ] {
        let letter = decision(op_id);
        assert_eq!(letter["state"], "resolved", "{letter}");
        assert_eq!(letter["resolution"]["how"], how, "{letter}");
        assert_eq!(letter["resolution"]["retried_as"], retried_as, "{letter}");
        assert_eq!(letter["resolution"]["by"], "venue-manager", "{letter}");
        assert!(letter["resolution"]["at"].is_string(), "{letter}");
        assert!(letter["resolution"]["recorded_at"].is_string(), "{letter}");
    }
    let open = hq_dead_letters(&central, &owner, site, "open").await;
    assert_eq!(
        open.iter().map(|l| l["op_id"].clone()).collect::<Vec<_>>(),
        [json!(second)],
        "only the waiver left alone is open"
    );
    assert_eq!(
        hq_dead_letters(&central, &owner, site, "all").await.len(),
        4
    );

    let audited: Vec<String> = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .prepare("SELECT action FROM audit_log ORDER BY at, action")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        audited,
        [
            "dead_letter.retry",
            "dead_letter.discard",
            "dead_letter.retry"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_pointed_at_another_central_database_is_refused_and_merges_nothing() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (_site, mut edge, tablet) = venue(&central, &owner, "Wrongway").await;
    settled(&edge, &tablet).await;

    // Another database that knows this venue's credentials (a copy re-initialised as a
    // separate chain, say) is served where the edge's central was.
    central.stop().await;
    edge.stop().await;
    {
        let conn = rusqlite::Connection::open(central.data_dir.path().join("central.db"))
            .expect("open central.db");
        conn.execute("UPDATE store_meta SET store_id = randomblob(16)", [])
            .expect("another database");
    }
    central.restart().await;
    edge.restart().await;
    register(&edge, &tablet, 1).await;
    let owner = central.owner_token().await;
    central
        .post_json(
            &owner,
            "/v1/products",
            &json!({ "sku": "WRONG1", "name": "Not for this venue", "kind": "addon",
                     "price_cents": 100, "duration_minutes": null }),
            201,
        )
        .await;
    wait_until(
        "the edge to refuse the database",
        Duration::from_secs(10),
        || async {
            edge.status(&tablet).await.is_some_and(|s| {
                s.pull_error
                    .as_deref()
                    .is_some_and(|e| e.contains("bound to database"))
                    && s.push_error
                        .as_deref()
                        .is_some_and(|e| e.contains("bound to database"))
            })
        },
    )
    .await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    assert_eq!(store.count_customers().await.expect("count"), 0);
    let products: i64 = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .query_row(
            "SELECT COUNT(*) FROM products WHERE sku = 'WRONG1'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(products, 0, "nothing from another database is merged");
    assert_eq!(edge.status(&tablet).await.expect("status").pending_ops, 1);
}

/// The customers the edge's kiosk lookup finds by `phone(n)`.
async fn kiosk_lookup(edge: &TestEdge, key: &str, n: usize) -> Vec<serde_json::Value> {
    let response = edge
        .request(
            Method::GET,
            &format!("/v1/customers?phone={}", phone(n).replace('+', "%2B")),
            key,
        )
        .send()
        .await
        .expect("lookup");
    expect_status(response, 200).await["customers"]
        .as_array()
        .expect("customers")
        .clone()
}

/// Opens a running edge's database read-only, to look at what the replica holds.
fn edge_db(edge: &TestEdge) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        edge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open edge.db read-only")
}

/// The change held back for `id` (its seq), if any.
fn held_change(edge: &TestEdge, id: Uuid) -> Option<i64> {
    use rusqlite::OptionalExtension;
    edge_db(edge)
        .query_row(
            "SELECT seq FROM held_changes WHERE entity = 'customer' AND entity_id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
        .expect("read held changes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn central_row_held_back_behind_a_local_edit_is_applied_once_that_edit_is_dead_lettered() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (_site, mut edge, tablet) = venue(&central, &owner, "Holdbury").await;
    register(&edge, &tablet, 1).await;
    settled(&edge, &tablet).await;
    let registered = kiosk_lookup(&edge, &tablet, 1).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    let id: Uuid = registered[0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let record = rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .query_row("SELECT data FROM customers WHERE id = ?1", [id], |r| {
            r.get::<_, String>(0)
        })
        .expect("the customer row");
    let record: serde_json::Value = serde_json::from_str(&record).expect("customer json");

    // At the venue, a local edit of the customer central will refuse (a last name longer than
    // central takes), queued behind an op that makes every push fail for now (larger than
    // central accepts), so the edit stays pending while pulls go on.
    edge.stop().await;
    let mut local = record.clone();
    local["last_name"] = json!("Local".repeat(30));
    let blocker = {
        let conn = rusqlite::Connection::open(edge.db_path()).expect("open edge.db");
        conn.execute(
            "UPDATE customers SET data = ?2 WHERE id = ?1",
            rusqlite::params![id, local.to_string()],
        )
        .expect("edit locally");
        let blocker = queue_op(
            &conn,
            "customer",
            Uuid::now_v7(),
            &json!({ "pad": "x".repeat(2 * 1024 * 1024) }),
        );
        queue_op(&conn, "customer", id, &local);
        blocker
    };
    // Meanwhile another venue edits the same customer at central.
    let mut elsewhere = OtherVenue::enroll(&central, &owner, "Elsewhere").await;
    let mut central_version = record.clone();
    central_version["first_name"] = json!("Centralised");
    elsewhere.push_customer(&central_version).await;

    // Central's row is held back, not applied over the pending edit; the cursor passes it.
    edge.restart().await;
    wait_until(
        "central's row to be held back behind the pending edit",
        Duration::from_secs(20),
        || async {
            let Some(held) = held_change(&edge, id) else {
                return false;
            };
            edge.status(&tablet).await.is_some_and(|s| {
                s.cursor >= held && s.push_error.as_deref().is_some_and(|e| e.contains("413"))
            })
        },
    )
    .await;
    let held = held_change(&edge, id).expect("held");
    let status = edge.status(&tablet).await.expect("status");
    assert_eq!(status.pending_ops, 2, "{status:?}");
    assert_eq!(status.dead_letters, 0, "{status:?}");
    let shown = kiosk_lookup(&edge, &tablet, 1).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["last_name"], local["last_name"], "{shown:?}");
    assert_eq!(shown[0]["first_name"], record["first_name"], "{shown:?}");

    // The blocking op is replaced by one central refuses outright: both ops are dead-lettered,
    // and the edge applies central's row it held back.
    edge.stop().await;
    rusqlite::Connection::open(edge.db_path())
        .expect("open edge.db")
        .execute(
            "UPDATE outbox SET data = '{\"pad\":\"x\"}' WHERE op_id = ?1",
            [blocker],
        )
        .expect("shrink the blocker");
    edge.restart().await;
    let status = settled(&edge, &tablet).await;
    assert_eq!(status.dead_letters, 2, "{status:?}");
    assert!(status.cursor >= held, "{status:?}");
    let shown = kiosk_lookup(&edge, &tablet, 1).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["first_name"], "Centralised", "{shown:?}");
    assert_eq!(shown[0]["last_name"], record["last_name"], "{shown:?}");
    assert_eq!(held_change(&edge, id), None, "nothing stays held");
    let reasons: Vec<String> = edge_db(&edge)
        .prepare("SELECT reason FROM dead_letters WHERE entity_id = ?1")
        .expect("prepare")
        .query_map([id], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("at most 100 characters"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_of_an_entity_only_a_newer_version_knows_is_kept_and_passed() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let (site, edge, tablet) = venue(&central, &owner, "Futureton").await;
    settled(&edge, &tablet).await;

    // A newer central instance behind the same load balancer logs a row of an entity this
    // version does not know.
    let thing = Uuid::now_v7();
    let logged: i64 = rusqlite::Connection::open(central.data_dir.path().join("central.db"))
        .expect("open central.db")
        .query_row(
            "INSERT INTO change_log (entity, entity_id, op, site_id, data, changed_at)
             VALUES ('future_thing', ?1, 'upsert', NULL, ?2, ?3) RETURNING seq",
            rusqlite::params![
                thing,
                json!({ "id": thing, "shape": "round" }).to_string(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ],
            |r| r.get(0),
        )
        .expect("log a future entity");

    // Central hints, the edge pulls: the row is kept as it is and the cursor moves past it.
    wait_until(
        "the edge to pull past the unknown entity",
        Duration::from_secs(10),
        || async {
            edge.status(&tablet)
                .await
                .is_some_and(|s| s.cursor >= logged)
        },
    )
    .await;
    let kept: String = edge_db(&edge)
        .query_row(
            "SELECT data FROM other_rows WHERE entity = 'future_thing' AND entity_id = ?1",
            [thing],
            |r| r.get(0),
        )
        .expect("the row is kept");
    let kept: serde_json::Value = serde_json::from_str(&kept).expect("json");
    assert_eq!(kept["shape"], "round");
    let status = edge.status(&tablet).await.expect("status");
    assert_eq!(status.skipped_changes, 0, "{status:?}");
    assert!(status.pull_error.is_none(), "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");

    // Later changes keep flowing.
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;
    wait_for_key(&edge, &kiosk, true).await;
}

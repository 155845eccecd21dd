//! The venue API beyond the sync path: revocation replicating to the edge, staff login at the
//! edge (also during an outage), idempotent POSTs, metrics, and the sync engine's step functions
//! driven deterministically (dead letters never block the queue).

use aero_edge::outbox::append_op;
use aero_shared::wire::{CustomerRecord, EdgeStatus, Entity, OpKind, WaiverRecord};
use aero_tests::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn status_code(edge: &TestEdge, key: &str) -> u16 {
    edge.request(Method::GET, "/v1/status", key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn customer_body(first: &str, phone: &str) -> serde_json::Value {
    json!({
        "first_name": first,
        "last_name": "Jumper",
        "birth_date": "2001-02-03",
        "phone": phone,
        "email": null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_login_idempotency_and_metrics_at_the_edge() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(&central, &token).await;
    let (kiosk_id, kiosk) = central.create_device(&owner, site, "kiosk").await;
    let (_, tablet) = central.create_device(&owner, site, "tablet").await;
    wait_until("both keys at the edge", Duration::from_secs(20), || async {
        status_code(&edge, &kiosk).await == 200 && status_code(&edge, &tablet).await == 200
    })
    .await;

    // A key revoked at HQ stops working at the online venue within 2 s (change hint, then
    // pull), and the venue never asks central per request.
    let revoking = Instant::now();
    let response = central
        .request(Method::DELETE, &format!("/v1/devices/{kiosk_id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke");
    expect_status(response, 204).await;
    wait_until(
        "the revocation at the edge",
        Duration::from_secs(20),
        || async { status_code(&edge, &kiosk).await == 401 },
    )
    .await;
    let took = revoking.elapsed();
    eprintln!("the revocation reached the edge in {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the revoked key still worked at the edge for {took:?}"
    );
    let response = edge
        .request(Method::GET, "/v1/status", &kiosk)
        .send()
        .await
        .expect("status");
    expect_problem(response, 401).await;

    // Venue staff created at HQ log in at the edge, even while central is down.
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({ "username": "sam", "password": "a long venue password", "role": "staff", "site_ids": [site] }),
            201,
        )
        .await;
    let login = |password: &'static str| {
        let edge = &edge;
        async move {
            edge.client
                .post(edge.url("/v1/auth/login"))
                .json(&json!({ "username": "sam", "password": password }))
                .send()
                .await
                .expect("login")
        }
    };
    wait_until("the user at the edge", Duration::from_secs(20), || async {
        login("a long venue password").await.status() == 200
    })
    .await;
    central.stop().await;
    let body = expect_status(login("a long venue password").await, 200).await;
    let bearer = body["access_token"].as_str().expect("token").to_string();
    expect_problem(login("wrong password").await, 401).await;
    let response = edge
        .client
        .get(edge.url("/v1/status"))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("status as staff");
    let status: EdgeStatus =
        serde_json::from_value(expect_status(response, 200).await).expect("status");
    assert_eq!(status.pending_ops, 0);
    // Central's tokens are not valid at the edge (different secret and audience).
    let response = edge
        .client
        .get(edge.url("/v1/status"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("status with central token");
    expect_problem(response, 401).await;

    // An Idempotency-Key retry gets the first answer and queues nothing new.
    let post = || async {
        edge.request(Method::POST, "/v1/customers", &tablet)
            .header("idempotency-key", "tablet-retry-1")
            .json(&customer_body("Ida", "0113 496 0001"))
            .send()
            .await
            .expect("register")
    };
    let first = expect_status(post().await, 201).await;
    let replay = post().await;
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let second = expect_status(replay, 201).await;
    assert_eq!(first["id"], second["id"]);

    // Tablets register and look up customers but may not read the catalog.
    let response = edge
        .request(Method::GET, "/v1/products", &tablet)
        .send()
        .await
        .expect("products");
    expect_problem(response, 403).await;
    let response = edge
        .request(Method::POST, "/v1/customers", &tablet)
        .json(&json!({ "first_name": "", "last_name": "X", "birth_date": "2001-02-03", "phone": "12" }))
        .send()
        .await
        .expect("invalid");
    let problem = expect_problem(response, 422).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["first_name", "phone"], "{problem}");
    let response = edge
        .request(
            Method::POST,
            &format!("/v1/customers/{}/waivers", Uuid::now_v7()),
            &tablet,
        )
        .json(&json!({ "signer_name": "Nobody" }))
        .send()
        .await
        .expect("waiver for unknown customer");
    expect_problem(response, 404).await;

    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("aero_edge_outbox_pending_ops 1"),
        "{metrics}"
    );
    assert!(metrics.contains("aero_edge_central_online 0"), "{metrics}");
    assert!(metrics.contains("aero_edge_dead_letters 0"), "{metrics}");
    let last_pull: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aero_edge_last_pull_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no last pull gauge in {metrics}"));
    assert!(
        last_pull > 1_700_000_000,
        "the edge pulled before central went away: {last_pull}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_functions_push_dead_letter_rejections_and_pull() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Harrogate").await;
    let token = central.enrollment_token(&owner, site).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let credential = aero_edge::credential::enroll(&central.url(""), &token, dir.path())
        .await
        .expect("enroll");
    let settings = aero_edge::config::Settings {
        data_dir: Some(dir.path().to_path_buf()),
        sync: aero_edge::config::SyncSettings {
            push_batch_ops: 2,
            ..aero_edge::config::SyncSettings::default()
        },
        ..aero_edge::config::Settings::default()
    };
    // Built but not launched: nothing runs unless the test calls it.
    let edge = aero_edge::build(&settings, credential).expect("build");
    let now = chrono::Utc::now();
    let good = |n: u8| CustomerRecord {
        id: Uuid::now_v7(),
        first_name: format!("Good{n}"),
        last_name: "Op".into(),
        birth_date: chrono::NaiveDate::from_ymd_opt(1999, 9, 9).expect("date"),
        phone: Some(format!("+4477009000{n:02}")),
        email: None,
        guardian_id: None,
        home_site_id: site,
        created_at: now,
    };
    // Central refuses a waiver claiming another site: a permanent rejection.
    let bad = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        site_id: Uuid::now_v7(),
        signer_name: "Mallory".into(),
        signed_at: now,
        expires_at: now + chrono::Duration::days(1),
        text_version: None,
    };
    let records = (good(1), bad, good(2));
    edge.state
        .writer
        .mutate(move |c| {
            let (a, b, d) = &records;
            append_op(c, Entity::Customer, a.id, OpKind::Upsert, a, now)?;
            append_op(c, Entity::Waiver, b.id, OpKind::Upsert, b, now)?;
            append_op(c, Entity::Customer, d.id, OpKind::Upsert, d, now)?;
            Ok(())
        })
        .await
        .expect("queue ops");

    let pushed = edge.engine.push_all().await.expect("push");
    assert_eq!(pushed.rejected, 1);
    assert_eq!(pushed.acked, 2, "the two good ops are acknowledged");
    let status = edge
        .state
        .replica
        .status(chrono::Utc::now())
        .await
        .expect("status");
    assert_eq!(
        (status.pending_ops, status.dead_letters),
        (0, 1),
        "{status:?}"
    );
    assert!(status.online && status.last_push_at.is_some());
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    assert_eq!(
        store
            .customers_by_phone("+447700900002")
            .await
            .expect("query")
            .len(),
        1
    );

    // Pull bootstraps the replica from cursor 0: the site and both customers arrive.
    let applied = edge.engine.pull_all().await.expect("pull");
    assert!(applied >= 3, "applied {applied}");
    let status = edge
        .state
        .replica
        .status(chrono::Utc::now())
        .await
        .expect("status");
    assert!(
        status.cursor > 0 && status.last_pull_at.is_some(),
        "{status:?}"
    );
    let found = edge
        .state
        .replica
        .customers_by_phone("+447700900001".into(), None, 2, chrono::Utc::now())
        .await
        .expect("lookup");
    assert_eq!(found.len(), 1);
    // Nothing left to do: another round is a no-op.
    assert_eq!(edge.engine.push_all().await.expect("push").acked, 0);
    assert_eq!(edge.engine.pull_all().await.expect("pull"), 0);
}

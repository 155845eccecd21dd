//! HQ retries and discards a venue's dead letters from central: the request travels in the
//! venue's change feed, the venue acts on it when it pulls (as a manager there would), and its
//! decision comes back through the outbox. Managers may only ask about their own venues.

use aero_central::store::AuditFilter;
use aero_edge::outbox::append_op;
use aero_shared::auth::principal::Role;
use aero_shared::wire::{CustomerRecord, Entity, OpKind, PushOp, WaiverRecord};
use aero_tests::{TestCentral, create_user, expect_problem};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

fn customer(home_site_id: Uuid, first_name: &str) -> CustomerRecord {
    CustomerRecord {
        id: Uuid::now_v7(),
        first_name: first_name.into(),
        last_name: "Visitor".into(),
        birth_date: chrono::NaiveDate::from_ymd_opt(1990, 1, 2).expect("date"),
        phone: Some("+447700900555".into()),
        email: None,
        guardian_id: None,
        home_site_id,
        created_at: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_retries_and_discards_a_venues_dead_letters_through_its_change_feed() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let venue = central.create_site(&owner, "York").await;
    let home = central.create_site(&owner, "Hull").await;
    let token = central.enrollment_token(&owner, venue).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let credential = aero_edge::credential::enroll(&central.url(""), &token, dir.path())
        .await
        .expect("enroll");
    let settings = aero_edge::config::Settings {
        data_dir: Some(dir.path().to_path_buf()),
        ..aero_edge::config::Settings::default()
    };
    // Built but not launched: the test drives push and pull itself.
    let edge = aero_edge::build(&settings, credential).expect("build");

    // The venue edits a customer whose home venue has not pushed it yet (refused until it has),
    // and takes a waiver naming another site (refused for good).
    let visitor = customer(home, "Grace");
    let stray = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: visitor.id,
        site_id: home,
        signer_name: "Mallory".into(),
        signed_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::days(1),
        text_version: None,
    };
    let queued = (visitor.clone(), stray.clone());
    edge.state
        .writer
        .mutate(move |c| {
            let now = Utc::now();
            append_op(
                c,
                Entity::Customer,
                queued.0.id,
                OpKind::Upsert,
                &queued.0,
                now,
            )?;
            append_op(
                c,
                Entity::Waiver,
                queued.1.id,
                OpKind::Upsert,
                &queued.1,
                now,
            )?;
            Ok(())
        })
        .await
        .expect("queue ops");
    let pushed = edge.engine.push_all().await.expect("push");
    assert_eq!((pushed.acked, pushed.rejected), (0, 2));
    let path = format!("/v1/sites/{venue}/dead-letters");
    let open = central.get_json(&owner, &path, 200).await;
    assert_eq!(open["dead_letters"].as_array().map(Vec::len), Some(2));
    let op_of = |seq: i64| -> Uuid {
        open["dead_letters"]
            .as_array()
            .expect("list")
            .iter()
            .find(|d| d["seq"] == seq)
            .and_then(|d| d["op_id"].as_str())
            .expect("op")
            .parse()
            .expect("uuid")
    };
    let (edit_op, waiver_op) = (op_of(1), op_of(2));

    // The home venue registers the customer, so the edit can now be taken.
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let registered = PushOp {
        seq: 1,
        op_id: Uuid::now_v7(),
        entity: Entity::Customer,
        entity_id: visitor.id,
        kind: OpKind::Upsert,
        data: serde_json::value::to_raw_value(&CustomerRecord {
            first_name: "Gracie".into(),
            ..visitor.clone()
        })
        .expect("json"),
    };
    let taken = store
        .push(home, &[registered], Utc::now())
        .await
        .expect("home push");
    assert!(taken.rejected.is_empty(), "{:?}", taken.rejected);

    // A manager of another venue may not ask; an unknown op is 404; nothing is written.
    create_user(
        &central.settings(),
        "hull-manager",
        "hull-manager-password",
        Role::Manager,
        vec![home],
    )
    .await;
    let manager = central.login("hull-manager", "hull-manager-password").await;
    let retry = format!("/v1/sites/{venue}/dead-letters/{edit_op}/retry");
    let discard = format!("/v1/sites/{venue}/dead-letters/{waiver_op}/discard");
    let head = store.change_head().await.expect("head");
    for (path, by) in [(&retry, &manager), (&discard, &manager)] {
        let refused = central
            .request(reqwest::Method::POST, path)
            .bearer_auth(by)
            .send()
            .await
            .expect("request");
        expect_problem(refused, 403).await;
    }
    let unknown = central
        .request(
            reqwest::Method::POST,
            &format!("/v1/sites/{venue}/dead-letters/{}/retry", Uuid::now_v7()),
        )
        .bearer_auth(&owner)
        .send()
        .await
        .expect("request");
    expect_problem(unknown, 404).await;
    assert_eq!(store.change_head().await.expect("head"), head);

    // HQ asks: 202, and the request shows with the open dead letters.
    let asked = central.post_json(&owner, &retry, &json!({}), 202).await;
    assert_eq!(
        (asked["action"].as_str(), asked["requested_by"].as_str()),
        (Some("retry"), Some("owner"))
    );
    central.post_json(&owner, &discard, &json!({}), 202).await;
    let listed = central.get_json(&owner, &path, 200).await;
    let requests: Vec<&str> = listed["dead_letters"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["request"]["action"].as_str().expect("a request"))
        .collect();
    assert_eq!(requests, ["discard", "retry"]);

    // The venue acts on both when it pulls, and its decisions (and the retried write) reach
    // central with the next push.
    edge.engine.pull_all().await.expect("pull");
    let status = edge.state.replica.status(Utc::now()).await.expect("status");
    assert_eq!((status.dead_letters, status.pending_ops), (0, 3));
    let pushed = edge.engine.push_all().await.expect("push");
    assert_eq!((pushed.acked, pushed.rejected), (3, 0));
    let edited = store
        .get_customer(visitor.id)
        .await
        .expect("read")
        .expect("customer");
    assert_eq!(edited.first_name, "Grace", "the retried edit applied");
    let resolved = central
        .get_json(&owner, &format!("{path}?state=resolved"), 200)
        .await;
    let decisions: Vec<(String, String, String)> = resolved["dead_letters"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["op_id"].as_str().expect("op").to_string(),
                d["resolution"]["how"].as_str().expect("how").to_string(),
                d["resolution"]["by"].as_str().expect("by").to_string(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (waiver_op.to_string(), "discarded".into(), "owner".into()),
            (edit_op.to_string(), "retried".into(), "owner".into()),
        ]
    );

    // Resolved: asking again is a conflict, and the venue's audit names HQ's request.
    let again = central
        .request(reqwest::Method::POST, &retry)
        .bearer_auth(&owner)
        .send()
        .await
        .expect("request");
    expect_problem(again, 409).await;
    let audited: Vec<(String, String, String)> = edge
        .state
        .replica
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT actor_kind, actor_name, action FROM audit_log ORDER BY action")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("audit");
    assert_eq!(
        audited,
        [
            ("hq".into(), "owner".into(), "dead_letter.discard".into()),
            ("hq".into(), "owner".into(), "dead_letter.retry".into()),
        ]
    );
    let central_audit = store
        .list_audit(&AuditFilter::site(venue), 2)
        .await
        .expect("audit");
    let actions: Vec<&str> = central_audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "dead_letter.discard_requested",
            "dead_letter.retry_requested"
        ]
    );
}

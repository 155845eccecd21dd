//! Smart plugs end to end: a plug and its schedules created at HQ drive a simulated plug at the
//! venue without restarting anything, venue staff see its state on `GET /v1/plugs`, HQ sees
//! what the venue reported on `GET /v1/sites/{id}/plugs`, and overrides set at HQ or by a venue
//! manager reach the other side.

use aero_plugsim::{Model, SimPlug};
use aero_tests::{TcpProxy, TestCentral, TestEdge, expect_status, wait_until};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_venue_follows_hqs_schedules_and_overrides_and_hq_sees_its_plugs() {
    // HQ is polled while the venue catches up: its rate limit stays out of the way.
    let central = TestCentral::start_with(|settings| {
        settings.limits.requests_per_second = 10_000;
        settings.limits.burst = 10_000;
    })
    .await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    // The venue reaches HQ through a link the test can cut.
    let link = TcpProxy::start(central.addr).await;
    let edge = TestEdge::start_with(&link.url(), &token, |_| {}).await;
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({
                "username": "sam", "password": "sam's staff password", "role": "staff",
                "site_ids": [site],
            }),
            201,
        )
        .await;
    let sim = SimPlug::start(Model::Hs103).expect("simulated plug");
    let plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{site}/plugs"),
            &json!({
                "name": "Laser tag", "host": "127.0.0.1", "port": sim.addr().port(),
                "child_id": null,
            }),
            201,
        )
        .await;
    let plug_id = plug["id"].as_str().expect("plug id").to_string();
    let schedules = format!("/v1/plugs/{plug_id}/schedules");
    // A crontab line (no seconds) is refused with what to write instead.
    let refused = central
        .post_json(
            &owner,
            &schedules,
            &json!({ "cron": "0 9 * * *", "state": "on" }),
            422,
        )
        .await;
    assert_eq!(refused["errors"][0]["field"], "cron");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a crontab line needs a seconds field")),
        "{refused}"
    );
    // Every second: whatever the time, the latest event is this one.
    central
        .post_json(
            &owner,
            &schedules,
            &json!({ "cron": "* * * * * *", "state": "on" }),
            201,
        )
        .await;
    wait_until("the plug switched on", Duration::from_secs(10), || async {
        sim.relays() == vec![true]
    })
    .await;

    // A second schedule firing at the same instants: "off" wins a tie, on the running edge.
    central
        .post_json(
            &owner,
            &schedules,
            &json!({ "cron": "* * * * * *", "state": "off" }),
            201,
        )
        .await;
    wait_until("the plug switched off", Duration::from_secs(10), || async {
        sim.relays() == vec![false]
    })
    .await;

    // Staff see it, from what the edge last read.
    let staff = log_in_at_the_edge(&edge, "sam", "sam's staff password").await;
    let board = expect_status(
        edge.client
            .request(Method::GET, edge.url("/v1/plugs"))
            .bearer_auth(&staff)
            .send()
            .await
            .expect("plugs"),
        200,
    )
    .await;
    let shown = &board["plugs"][0];
    assert_eq!(shown["id"], plug_id);
    assert_eq!(shown["state"], "off");
    assert_eq!(shown["reachable"], true);
    assert_eq!(shown["desired"]["source"], "schedule");
    assert_eq!(shown["desired"]["state"], "off");

    // HQ sees what the venue reported, once the push landed.
    let hq_plugs = format!("/v1/sites/{site}/plugs");
    wait_until("HQ sees the plug off", Duration::from_secs(10), || async {
        let plugs = central.get_json(&owner, &hq_plugs, 200).await;
        plugs["plugs"][0]["status"]["state"] == "off"
    })
    .await;
    let plugs = central.get_json(&owner, &hq_plugs, 200).await;
    let status = &plugs["plugs"][0]["status"];
    assert_eq!(plugs["plugs"][0]["id"], plug_id);
    assert_eq!(status["reachable"], true);
    assert!(status["last_seen"].is_string(), "{status}");

    // HQ switches it on for an hour against the schedules: the running edge applies it.
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    let overrides = format!("/v1/plugs/{plug_id}/overrides");
    central
        .post_json(
            &owner,
            &overrides,
            &json!({ "on": true, "until": until }),
            201,
        )
        .await;
    wait_until("HQ's override applied", Duration::from_secs(10), || async {
        sim.relays() == vec![true]
    })
    .await;

    // With the link to HQ down, a venue manager switches it off again: the override holds at
    // the venue, and HQ sees it, the newest of the two, once the link is back.
    central
        .post_json(
            &owner,
            "/v1/users",
            &json!({
                "username": "morgan", "password": "morgan's manager password",
                "role": "manager", "site_ids": [site],
            }),
            201,
        )
        .await;
    let manager = log_in_at_the_edge(&edge, "morgan", "morgan's manager password").await;
    link.cut_all(Duration::from_secs(3));
    let set = expect_status(
        edge.client
            .post(edge.url(&format!("/v1/plugs/{plug_id}/power")))
            .bearer_auth(&manager)
            .json(&json!({ "on": false, "until": until }))
            .send()
            .await
            .expect("power"),
        201,
    )
    .await;
    wait_until(
        "the manager's override applied",
        Duration::from_secs(10),
        || async { sim.relays() == vec![false] },
    )
    .await;
    let before = central.get_json(&owner, &overrides, 200).await;
    assert_eq!(
        before["overrides"].as_array().map(Vec::len),
        Some(1),
        "the link is down: HQ has only its own"
    );
    wait_until(
        "HQ sees the venue's override",
        Duration::from_secs(20),
        || async {
            let listed = central.get_json(&owner, &overrides, 200).await;
            listed["overrides"][0]["id"] == set["id"]
        },
    )
    .await;
    let listed = central.get_json(&owner, &overrides, 200).await;
    assert_eq!(listed["overrides"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["overrides"][0]["set_by"], "morgan");
}

/// Logs in at the edge once the user has replicated there; returns the access token.
async fn log_in_at_the_edge(edge: &TestEdge, username: &str, password: &str) -> String {
    let login = json!({ "username": username, "password": password });
    let log_in = || {
        edge.client
            .post(edge.url("/v1/auth/login"))
            .json(&login)
            .send()
    };
    wait_until(
        "the user can log in at the edge",
        Duration::from_secs(10),
        || async { log_in().await.is_ok_and(|r| r.status() == 200) },
    )
    .await;
    let session = expect_status(log_in().await.expect("login"), 200).await;
    session["access_token"].as_str().expect("token").to_string()
}

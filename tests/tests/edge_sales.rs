//! Selling and checking in at the edge against a real central over loopback: orders priced from
//! the replicated catalog and paid exactly, stored value and credits as ledger entries, passes
//! and membership visits at the gate, refunds (bounded, audited, network-restricted), retried
//! purchases charged once, the venue's own daily figures, and the queue draining to central.

use aero_tests::venue::Venue;
use aero_tests::{expect_problem, expect_status, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

fn field_of(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_are_priced_from_the_catalog_and_paid_exactly() {
    let venue = Venue::open().await;
    let (jump, socks) = (venue.product("JUMP60"), venue.product("SOCKS"));

    // Two passes and socks, 3300, paid with 40.00 in cash: 7.00 change.
    let order = venue
        .order(
            json!({
                "lines": [{ "product_id": jump, "quantity": 2 }, { "product_id": socks, "quantity": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 3300, "received_cents": 4000 }],
            }),
            201,
        )
        .await;
    assert_eq!(order["total_cents"], 3300);
    assert_eq!(order["change_cents"], 700);
    assert_eq!(order["lines"][0]["unit_price_cents"], 1500);
    assert_eq!(order["lines"][0]["total_cents"], 3000);
    assert_eq!(order["lines"][1]["sku"], "SOCKS");
    assert_eq!(order["tenders"][0]["change_cents"], 700);
    let id = order["id"].as_str().expect("id");

    // A client's price is refused, not ignored.
    let problem = venue
        .order(
            json!({
                "lines": [{ "product_id": jump, "quantity": 1, "unit_price_cents": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 1 }],
            }),
            422,
        )
        .await;
    assert_eq!(field_of(&problem), "lines[0].unit_price_cents", "{problem}");
    // Tenders pay the total exactly: neither short nor over.
    for amount in [1499, 1501] {
        let problem = venue
            .order(
                json!({
                    "lines": [{ "product_id": jump, "quantity": 1 }],
                    "tenders": [{ "kind": "card", "amount_cents": amount, "reference": "T-9" }],
                }),
                422,
            )
            .await;
        assert_eq!(field_of(&problem), "tenders", "{problem}");
    }
    // A card tender names the terminal's reference; an unknown product is named by its line.
    let problem = venue
        .order(
            json!({
                "lines": [{ "product_id": jump, "quantity": 1 }],
                "tenders": [{ "kind": "card", "amount_cents": 1500 }],
            }),
            422,
        )
        .await;
    assert_eq!(field_of(&problem), "tenders[0].reference", "{problem}");
    let problem = venue
        .order(
            json!({
                "lines": [{ "product_id": jump, "quantity": 1 }, { "product_id": Uuid::now_v7(), "quantity": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 1500 }],
            }),
            422,
        )
        .await;
    assert_eq!(field_of(&problem), "lines[1].product_id", "{problem}");

    // Scoreboards and game stations do not sell.
    let cash = json!({
        "lines": [{ "product_id": socks, "quantity": 1 }],
        "tenders": [{ "kind": "cash", "amount_cents": 300 }],
    });
    for key in [&venue.scoreboard, &venue.game] {
        expect_problem(venue.post(key, "/v1/orders", cash.clone()).await, 403).await;
    }

    // The receipt, and the day's orders at the till (not at a self-service kiosk).
    let receipt = expect_status(
        venue.get(&venue.kiosk, &format!("/v1/orders/{id}")).await,
        200,
    )
    .await;
    assert_eq!(
        (&receipt["total_cents"], &receipt["refunds"]),
        (&json!(3300), &json!([]))
    );
    let day = expect_status(venue.get(&venue.pos, "/v1/orders").await, 200).await;
    let ids: Vec<&str> = day["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(ids, [id], "only the one accepted order was recorded");
    expect_problem(venue.get(&venue.kiosk, "/v1/orders").await, 403).await;
    let missing = format!("/v1/orders/{}", Uuid::now_v7());
    expect_problem(venue.get(&venue.pos, &missing).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_value_and_credits_are_ledger_entries_spent_once() {
    let venue = Venue::open().await;
    let ada = venue.customer("Ada", "+447700900101", true).await;
    let (topup, credits) = (venue.product("TOPUP50"), venue.product("CRED100"));

    // Loading 50.00 of stored value, then buying 100 credits with 20.00 of it.
    venue.sell(ada, "TOPUP50", 1, 5000).await;
    venue
        .order(
            json!({
                "customer_id": ada,
                "lines": [{ "product_id": credits, "quantity": 1 }],
                "tenders": [{ "kind": "stored_value", "amount_cents": 2000 }],
            }),
            201,
        )
        .await;
    assert_eq!(
        venue.balances(ada).await,
        json!({ "stored_value": 3000, "arcade_credits": 100, "visits": 0 })
    );

    // More stored value than the customer holds, stored value without a customer, and a credit
    // pack without one to credit: refused, and no balance moves.
    let problem = venue
        .order(
            json!({
                "customer_id": ada,
                "lines": [{ "product_id": topup, "quantity": 1 }],
                "tenders": [{ "kind": "stored_value", "amount_cents": 5000 }],
            }),
            422,
        )
        .await;
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("3000 cents of stored value"),
        "{problem}"
    );
    venue
        .order(
            json!({
                "lines": [{ "product_id": venue.product("SOCKS"), "quantity": 1 }],
                "tenders": [{ "kind": "stored_value", "amount_cents": 300 }],
            }),
            422,
        )
        .await;
    let problem = venue
        .order(
            json!({
                "lines": [{ "product_id": credits, "quantity": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 2000 }],
            }),
            422,
        )
        .await;
    assert_eq!(field_of(&problem), "lines[0].product_id", "{problem}");
    assert_eq!(venue.balances(ada).await["stored_value"], 3000);

    // A game station spends credits, never beyond the balance; a scoreboard cannot.
    let spend = format!("/v1/customers/{ada}/balances/spend");
    let spent = expect_status(
        venue
            .post(
                &venue.game,
                &spend,
                json!({ "account": "arcade_credits", "amount": 30, "reason": "Laser maze" }),
            )
            .await,
        201,
    )
    .await;
    assert_eq!(spent["entry"]["delta"], -30);
    assert_eq!(spent["balances"]["arcade_credits"], 70);
    let problem = expect_problem(
        venue
            .post(
                &venue.game,
                &spend,
                json!({ "account": "arcade_credits", "amount": 71 }),
            )
            .await,
        422,
    )
    .await;
    assert_eq!(field_of(&problem), "amount");
    expect_problem(
        venue
            .post(
                &venue.scoreboard,
                &spend,
                json!({ "account": "arcade_credits", "amount": 1 }),
            )
            .await,
        403,
    )
    .await;
    // A manager's correction is an entry too; a POS may not make one.
    let adjust = format!("/v1/customers/{ada}/balances/adjust");
    let body = json!({ "account": "arcade_credits", "delta": 5, "reason": "machine ate a coin" });
    expect_problem(venue.post(&venue.pos, &adjust, body.clone()).await, 403).await;
    // Out-of-range corrections are refused by name, the extremes of an i64 included.
    for delta in [i64::MIN, i64::MAX, -100_000_001, 0] {
        let wild = json!({ "account": "arcade_credits", "delta": delta, "reason": "" });
        let problem = expect_problem(venue.manager_post(&adjust, wild).await, 422).await;
        assert_eq!(field_of(&problem), "delta", "delta {delta}");
    }
    let adjusted = expect_status(venue.manager_post(&adjust, body).await, 201).await;
    assert_eq!(adjusted["balances"]["arcade_credits"], 75);

    // A purchase retried with the same Idempotency-Key is taken (and charged) once.
    let purchase = json!({
        "customer_id": ada,
        "lines": [{ "product_id": venue.product("SOCKS"), "quantity": 2 }],
        "tenders": [{ "kind": "stored_value", "amount_cents": 600 }],
    });
    let buy = || async {
        venue
            .edge
            .request(Method::POST, "/v1/orders", &venue.pos)
            .header("idempotency-key", "pos-1-sale-42")
            .json(&purchase)
            .send()
            .await
            .expect("order")
    };
    let first = expect_status(buy().await, 201).await;
    let retry = buy().await;
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(expect_status(retry, 201).await["id"], first["id"]);
    assert_eq!(venue.balances(ada).await["stored_value"], 2400);
    let day = expect_status(venue.get(&venue.pos, "/v1/orders").await, 200).await;
    let with_socks = day["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter(|o| o["id"] == first["id"])
        .count();
    assert_eq!(with_socks, 1);

    // The kiosk lookup carries the balances.
    let found = venue.lookup("+447700900101").await;
    assert_eq!(found["id"], ada.to_string());
    assert_eq!(found["waiver_valid"], true);
    assert_eq!(
        found["balances"],
        json!({ "stored_value": 2400, "arcade_credits": 75, "visits": 0 })
    );
    assert_eq!(found["active_sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_needs_a_waiver_and_a_pass_or_a_visit() {
    let venue = Venue::open().await;

    // No waiver, no jump, even with a paid pass.
    let bo = venue.customer("Bo", "+447700900201", false).await;
    venue.sell(bo, "JUMP60", 1, 1500).await;
    let problem = expect_problem(venue.check_in(bo, "WB-1", "JUMP60").await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("waiver"),
        "{problem}"
    );
    venue.sign_waiver(bo, "Bo Jumper").await;

    // One pass, one session: the same pass is not used twice.
    let session = expect_status(venue.check_in(bo, "WB-1", "JUMP60").await, 201).await;
    let starts: chrono::DateTime<chrono::Utc> = session["starts_at"]
        .as_str()
        .expect("starts")
        .parse()
        .expect("time");
    let ends: chrono::DateTime<chrono::Utc> = session["ends_at"]
        .as_str()
        .expect("ends")
        .parse()
        .expect("time");
    assert_eq!(ends - starts, chrono::Duration::minutes(60));
    assert!(session["order_id"].is_string());
    let problem = expect_problem(venue.check_in(bo, "WB-2", "JUMP60").await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("no paid, unused"),
        "{problem}"
    );

    // A wristband already jumping is not given to someone else.
    let cy = venue.customer("Cy", "+447700900202", true).await;
    venue.sell(cy, "JUMP60", 1, 1500).await;
    expect_problem(venue.check_in(cy, "WB-1", "JUMP60").await, 409).await;
    // A customer who never bought a pass is refused.
    let di = venue.customer("Di", "+447700900203", true).await;
    expect_problem(venue.check_in(di, "WB-3", "JUMP60").await, 422).await;
    // A fully refunded pass is no pass.
    let refunded = venue.sell(di, "JUMP60", 1, 1500).await;
    let path = format!("/v1/orders/{}/refund", refunded["id"].as_str().expect("id"));
    let body =
        json!({ "tenders": [{ "kind": "cash", "amount_cents": 1500 }], "reason": "changed mind" });
    expect_status(venue.manager_post(&path, body).await, 201).await;
    expect_problem(venue.check_in(di, "WB-3", "JUMP60").await, 422).await;

    // A minor jumps on their guardian's waiver.
    let family = venue
        .post(
            &venue.tablet,
            "/v1/customers",
            json!({
                "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09",
                "phone": "+447700900204",
                "minors": [{ "first_name": "Ada", "last_name": "Hopper", "birth_date": "2016-03-01" }],
            }),
        )
        .await;
    let family = expect_status(family, 201).await;
    let guardian: Uuid = family["id"].as_str().expect("id").parse().expect("uuid");
    let minor: Uuid = family["minors"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    venue.sell(minor, "JUMP60", 1, 1500).await;
    expect_problem(venue.check_in(minor, "WB-4", "JUMP60").await, 422).await;
    venue.sign_waiver(guardian, "Grace Hopper").await;
    expect_status(venue.check_in(minor, "WB-4", "JUMP60").await, 201).await;

    // A membership visit: refused without visits, spent once bought.
    let ed = venue.customer("Ed", "+447700900205", true).await;
    let problem = expect_problem(venue.check_in(ed, "WB-5", "MEMBER").await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("visits"),
        "{problem}"
    );
    venue.sell(ed, "MEMBER", 1, 9900).await;
    assert_eq!(venue.balances(ed).await["visits"], 1);
    let visit = expect_status(venue.check_in(ed, "WB-5", "MEMBER").await, 201).await;
    assert!(visit["ledger_entry_id"].is_string() && visit["order_id"].is_null());
    assert_eq!(venue.balances(ed).await["visits"], 0);
    expect_problem(venue.check_in(ed, "WB-6", "MEMBER").await, 422).await;

    // The lookup shows who is jumping; staff, kiosks and scoreboards see every session.
    let found = venue.lookup("+447700900201").await;
    assert_eq!(found["active_sessions"][0]["wristband"], "WB-1");
    assert_eq!(found["active_sessions"][0]["id"], session["id"]);
    let active = expect_status(
        venue.get(&venue.scoreboard, "/v1/sessions/active").await,
        200,
    )
    .await;
    let mut bands: Vec<&str> = active["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["wristband"].as_str())
        .collect();
    bands.sort_unstable();
    assert_eq!(bands, ["WB-1", "WB-4", "WB-5"]);
    expect_problem(venue.get(&venue.tablet, "/v1/sessions/active").await, 403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_are_bounded_by_what_was_paid_and_audited() {
    let venue = Venue::open().await;
    let fay = venue.customer("Fay", "+447700900301", true).await;
    venue.sell(fay, "TOPUP50", 1, 5000).await;
    // 2 passes and socks (3300): 1000 cash, 1500 card, 800 stored value.
    let order = venue
        .order(
            json!({
                "customer_id": fay,
                "lines": [{ "product_id": venue.product("JUMP60"), "quantity": 2 },
                          { "product_id": venue.product("SOCKS"), "quantity": 1 }],
                "tenders": [
                    { "kind": "cash", "amount_cents": 1000 },
                    { "kind": "card", "amount_cents": 1500, "reference": "T-77" },
                    { "kind": "stored_value", "amount_cents": 800 },
                ],
            }),
            201,
        )
        .await;
    assert_eq!(venue.balances(fay).await["stored_value"], 4200);
    let path = format!("/v1/orders/{}/refund", order["id"].as_str().expect("id"));
    let refund = |kind: &str, amount: i64| json!({ "tenders": [{ "kind": kind, "amount_cents": amount }], "reason": "socks too small" });

    // Venue devices and staff do not refund.
    expect_problem(
        venue.post(&venue.pos, &path, refund("cash", 100)).await,
        403,
    )
    .await;
    // Per tender kind, never more than paid less earlier refunds.
    let first = expect_status(venue.manager_post(&path, refund("card", 600)).await, 201).await;
    assert_eq!(first["total_cents"], 600);
    assert_eq!(
        first["refunded_by"].as_str().expect("by").split(':').next(),
        Some("user")
    );
    let problem = expect_problem(venue.manager_post(&path, refund("card", 901)).await, 422).await;
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("900 cents left"),
        "{problem}"
    );
    expect_problem(venue.manager_post(&path, refund("cash", 1001)).await, 422).await;
    expect_status(venue.manager_post(&path, refund("card", 900)).await, 201).await;
    // Stored value goes back onto the customer's balance.
    expect_status(
        venue.manager_post(&path, refund("stored_value", 800)).await,
        201,
    )
    .await;
    assert_eq!(venue.balances(fay).await["stored_value"], 5000);
    expect_problem(
        venue.manager_post(&path, refund("stored_value", 1)).await,
        422,
    )
    .await;
    let missing = format!("/v1/orders/{}/refund", Uuid::now_v7());
    expect_problem(venue.manager_post(&missing, refund("cash", 1)).await, 404).await;

    let receipt = expect_status(
        venue
            .get(
                &venue.pos,
                &format!("/v1/orders/{}", order["id"].as_str().expect("id")),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(receipt["refunds"].as_array().expect("refunds").len(), 3);
    assert_eq!(receipt["net_cents"], 3300 - 600 - 900 - 800);

    // Every refund taken is in the edge's audit trail, with who and from where.
    let db = rusqlite::Connection::open_with_flags(
        venue.edge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the edge database");
    let audited: Vec<(String, String, String)> = db
        .prepare("SELECT action, actor_name, ip FROM audit_log ORDER BY at, id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(audited.len(), 3, "{audited:?}");
    for (action, actor, ip) in &audited {
        assert_eq!(
            (action.as_str(), actor.as_str(), ip.as_str()),
            ("order.refund", "morgan", "127.0.0.1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_and_corrections_only_from_the_venue_networks() {
    // This venue's trusted network is its LAN, not loopback: the test client is outside it.
    let venue = Venue::open_with_networks(&["10.20.0.0/16"]).await;
    let gus = venue.customer("Gus", "+447700900401", true).await;
    let order = venue.sell(gus, "JUMP60", 1, 1500).await;
    let path = format!("/v1/orders/{}/refund", order["id"].as_str().expect("id"));
    let body = json!({ "tenders": [{ "kind": "cash", "amount_cents": 1500 }], "reason": "rain" });
    let problem = expect_problem(venue.manager_post(&path, body).await, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("trusted networks"),
        "{problem}"
    );
    let adjust = format!("/v1/customers/{gus}/balances/adjust");
    let body = json!({ "account": "visits", "delta": 1, "reason": "goodwill" });
    expect_problem(venue.manager_post(&adjust, body).await, 403).await;
    // Nothing was refunded or credited; selling (not sensitive) works from anywhere on the LAN.
    let receipt = expect_status(
        venue
            .get(
                &venue.pos,
                &format!("/v1/orders/{}", order["id"].as_str().expect("id")),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(receipt["refunds"], json!([]));
    assert_eq!(venue.balances(gus).await["visits"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_reports_its_day_and_its_queue_drains_to_central() {
    let venue = Venue::open().await;
    let hal = venue.customer("Hal", "+447700900501", true).await;
    let ivy = venue.customer("Ivy", "+447700900502", true).await;
    let first = venue
        .order(
            json!({
                "customer_id": hal,
                "lines": [{ "product_id": venue.product("JUMP60"), "quantity": 2 },
                          { "product_id": venue.product("SOCKS"), "quantity": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 3300 }],
            }),
            201,
        )
        .await;
    venue.sell(ivy, "SOCKS", 3, 300).await;
    venue.sell(ivy, "CRED100", 1, 2000).await;
    let path = format!("/v1/orders/{}/refund", first["id"].as_str().expect("id"));
    let body =
        json!({ "tenders": [{ "kind": "cash", "amount_cents": 300 }], "reason": "no socks" });
    expect_status(venue.manager_post(&path, body).await, 201).await;
    expect_status(venue.check_in(hal, "WB-10", "JUMP60").await, 201).await;

    // The day the first sale was made on, in the site's timezone (Europe/London).
    let sold_at: chrono::DateTime<chrono::Utc> = first["created_at"]
        .as_str()
        .expect("created_at")
        .parse()
        .expect("time");
    let date = aero_shared::clock::local_date(chrono_tz::Europe::London, sold_at);
    let report = expect_status(
        venue
            .manager_get(&format!("/v1/reports/daily?date={date}"))
            .await,
        200,
    )
    .await;
    assert_eq!(
        report,
        json!({
            "site_id": venue.site, "date": date.to_string(), "orders": 3,
            "revenue_cents": 3300 + 900 + 2000 - 300, "gross_sales_cents": 6200,
            "refunds_cents": 300, "checkins": 1, "new_customers": 2,
        })
    );
    let sales = expect_status(
        venue
            .manager_get(&format!("/v1/reports/sales-by-product?date={date}"))
            .await,
        200,
    )
    .await;
    let rows: Vec<(String, i64, i64)> = sales["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| {
            (
                p["sku"].as_str().expect("sku").to_string(),
                p["quantity"].as_i64().expect("quantity"),
                p["sales_cents"].as_i64().expect("sales"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("CRED100".to_string(), 1, 2000),
            ("JUMP60".to_string(), 2, 3000),
            ("SOCKS".to_string(), 4, 1200),
        ]
    );
    expect_problem(venue.get(&venue.pos, "/v1/reports/daily").await, 403).await;

    // Every order, refund, check-in and ledger entry was queued, and the queue drains to
    // central on its own.
    let status = venue.edge.status(&venue.pos).await.expect("status");
    assert!(status.online, "{status:?}");
    wait_until("the outbox to drain", Duration::from_secs(20), || async {
        venue
            .edge
            .status(&venue.pos)
            .await
            .is_some_and(|s| s.pending_ops == 0)
    })
    .await;
    let sync = venue
        .central
        .get_json(
            &venue.central.owner_token().await,
            &format!("/v1/sites/{}/sync", venue.site),
            200,
        )
        .await;
    // 2 customers, 2 waivers, 3 orders, 1 credit grant, 1 refund, 1 check-in: central holds
    // every one of them, and refused none.
    assert_eq!(sync["acked_seq"], 10, "{sync}");
    let status = venue.edge.status(&venue.pos).await.expect("status");
    assert_eq!(status.dead_letters, 0, "{status:?}");

    // HQ's figures for the venue's day are the venue's own.
    let owner = venue.central.owner_token().await;
    let central_report = venue
        .central
        .get_json(
            &owner,
            &format!("/v1/reports/daily?site_id={}&date={date}", venue.site),
            200,
        )
        .await;
    for field in [
        "orders",
        "revenue_cents",
        "gross_sales_cents",
        "refunds_cents",
        "checkins",
        "new_customers",
    ] {
        assert_eq!(
            central_report[field], report[field],
            "{field}: {central_report}"
        );
    }
    let central_sales = venue
        .central
        .get_json(
            &owner,
            &format!(
                "/v1/reports/sales-by-product?site_id={}&date={date}",
                venue.site
            ),
            200,
        )
        .await;
    assert_eq!(
        central_sales["products"], sales["products"],
        "{central_sales}"
    );
}

//! A whole venue day at an edge whose central is down: registrations (one family with a minor),
//! waivers, sales in every tender, check-ins, scores and refunds all succeed locally and queue.
//! Once central is back the queue drains exactly once, and HQ's daily report and sales by
//! product for the venue's day are the venue's own figures, which are also the figures the day's
//! takings add up to.

use aero_tests::venue::Venue;
use aero_tests::{expect_status, wait_until};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// What the day does at the venue beyond the shared venue's helpers.
trait Day {
    async fn refund(&self, order: &Value, kind: &str, amount: i64) -> Value;
    async fn register(&self, body: Value) -> Value;
    async fn score(&self, who: Value, score: i64);
    async fn acked_seq(&self) -> Value;
    async fn edge_figures(&self, date: &str) -> (Value, Value);
    async fn central_figures(&self, date: &str) -> (Value, Value);
}

impl Day for Venue {
    async fn refund(&self, order: &Value, kind: &str, amount: i64) -> Value {
        let path = format!("/v1/orders/{}/refund", order["id"].as_str().expect("id"));
        let response = self
            .edge
            .client
            .post(self.edge.url(&path))
            .bearer_auth(&self.manager)
            .json(&json!({ "tenders": [{ "kind": kind, "amount_cents": amount }], "reason": "customer asked" }))
            .send()
            .await
            .expect("refund");
        expect_status(response, 201).await
    }

    async fn register(&self, body: Value) -> Value {
        expect_status(self.post(&self.tablet, "/v1/customers", body).await, 201).await
    }

    async fn score(&self, who: Value, score: i64) {
        let mut body = who;
        body["game_id"] = json!(self.game_id);
        body["score"] = json!(score);
        expect_status(self.post(&self.game, "/v1/scores", body).await, 201).await;
    }

    async fn acked_seq(&self) -> Value {
        let owner = self.central.owner_token().await;
        let sync = self
            .central
            .get_json(&owner, &format!("/v1/sites/{}/sync", self.site), 200)
            .await;
        sync["acked_seq"].clone()
    }

    /// The edge's (daily report, sales-by-product) for `date`.
    async fn edge_figures(&self, date: &str) -> (Value, Value) {
        (
            expect_status(
                self.manager_get(&format!("/v1/reports/daily?date={date}"))
                    .await,
                200,
            )
            .await,
            expect_status(
                self.manager_get(&format!("/v1/reports/sales-by-product?date={date}"))
                    .await,
                200,
            )
            .await,
        )
    }

    /// Central's (daily report, sales-by-product) for this site and `date`.
    async fn central_figures(&self, date: &str) -> (Value, Value) {
        let owner = self.central.owner_token().await;
        let site = self.site;
        (
            self.central
                .get_json(
                    &owner,
                    &format!("/v1/reports/daily?site_id={site}&date={date}"),
                    200,
                )
                .await,
            self.central
                .get_json(
                    &owner,
                    &format!("/v1/reports/sales-by-product?site_id={site}&date={date}"),
                    200,
                )
                .await,
        )
    }
}

fn id_of(body: &Value) -> Uuid {
    body["id"].as_str().expect("id").parse().expect("uuid")
}

const REPORT_FIELDS: [&str; 6] = [
    "orders",
    "revenue_cents",
    "gross_sales_cents",
    "refunds_cents",
    "checkins",
    "new_customers",
];

fn sales_rows(sales: &Value) -> Vec<(String, i64, i64)> {
    sales["products"]
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
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_venue_day_while_central_is_down_reaches_hq_exactly_once() {
    let mut venue = Venue::open().await;
    wait_until("the edge to settle online", WAIT, || async {
        venue
            .edge
            .status(&venue.pos)
            .await
            .is_some_and(|s| s.online && s.pending_ops == 0)
    })
    .await;
    // The venue has written nothing yet.
    assert_eq!(venue.acked_seq().await, json!(0));

    // HQ goes away; the venue notices and keeps trading.
    venue.central.stop().await;
    wait_until("the edge to report offline", WAIT, || async {
        venue
            .edge
            .status(&venue.pos)
            .await
            .is_some_and(|s| !s.online)
    })
    .await;

    // Registrations: two adults, and a guardian with a minor, each with a waiver (the minor
    // jumps on the guardian's).
    let hal = id_of(
        &venue
            .register(json!({ "first_name": "Hal", "last_name": "Jumper", "birth_date": "1990-04-01", "phone": "+447700900601" }))
            .await,
    );
    let family = venue
        .register(json!({
            "first_name": "Grace", "last_name": "Hopper", "birth_date": "1985-12-09", "phone": "+447700900602",
            "minors": [{ "first_name": "Ada", "last_name": "Hopper", "birth_date": "2016-03-01" }],
        }))
        .await;
    let grace = id_of(&family);
    let minor = id_of(&family["minors"][0]);
    let ivy = id_of(
        &venue
            .register(json!({ "first_name": "Ivy", "last_name": "Jumper", "birth_date": "1993-07-15", "phone": "+447700900603" }))
            .await,
    );
    venue.sign_waiver(hal, "Hal Jumper").await;
    venue.sign_waiver(grace, "Grace Hopper").await;
    venue.sign_waiver(ivy, "Ivy Jumper").await;

    // Sales in every tender.
    // Two passes and socks (3300) for cash, 40.00 handed over: 7.00 change.
    let cash_sale = venue
        .order(
            json!({
                "customer_id": hal,
                "lines": [{ "product_id": venue.product("JUMP60"), "quantity": 2 },
                          { "product_id": venue.product("SOCKS"), "quantity": 1 }],
                "tenders": [{ "kind": "cash", "amount_cents": 3300, "received_cents": 4000 }],
            }),
            201,
        )
        .await;
    assert_eq!(cash_sale["total_cents"], 3300);
    assert_eq!(cash_sale["change_cents"], 700);
    // The minor's pass (1500) by card.
    venue
        .order(
            json!({
                "customer_id": minor,
                "lines": [{ "product_id": venue.product("JUMP60"), "quantity": 1 }],
                "tenders": [{ "kind": "card", "amount_cents": 1500, "reference": "T-1001" }],
            }),
            201,
        )
        .await;
    // 50.00 of stored value (5000) by card, then a pass and socks (1800) paid from it.
    venue
        .order(
            json!({
                "customer_id": ivy,
                "lines": [{ "product_id": venue.product("TOPUP50"), "quantity": 1 }],
                "tenders": [{ "kind": "card", "amount_cents": 5000, "reference": "T-1002" }],
            }),
            201,
        )
        .await;
    venue
        .order(
            json!({
                "customer_id": ivy,
                "lines": [{ "product_id": venue.product("JUMP60"), "quantity": 1 },
                          { "product_id": venue.product("SOCKS"), "quantity": 1 }],
                "tenders": [{ "kind": "stored_value", "amount_cents": 1800 }],
            }),
            201,
        )
        .await;
    assert_eq!(venue.balances(ivy).await["stored_value"], 5000 - 1800);
    // Two pairs of socks (600) for cash, later refunded in full.
    let returned = venue
        .order(
            json!({
                "customer_id": hal,
                "lines": [{ "product_id": venue.product("SOCKS"), "quantity": 2 }],
                "tenders": [{ "kind": "cash", "amount_cents": 600 }],
            }),
            201,
        )
        .await;

    // Check-ins, then scores by customer and by wristband.
    expect_status(venue.check_in(hal, "WB-1", "JUMP60").await, 201).await;
    expect_status(venue.check_in(minor, "WB-2", "JUMP60").await, 201).await;
    expect_status(venue.check_in(ivy, "WB-3", "JUMP60").await, 201).await;
    venue.score(json!({ "customer_id": hal }), 1200).await;
    venue.score(json!({ "wristband": "WB-3" }), 1500).await;

    // A partial refund (the socks of the first sale) and a full one.
    let partial = venue.refund(&cash_sale, "cash", 300).await;
    assert_eq!(partial["total_cents"], 300);
    let full = venue.refund(&returned, "cash", 600).await;
    assert_eq!(full["total_cents"], 600);

    // 4 customers (the minor is one), 3 waivers, 5 orders, 1 stored-value grant, 1 stored-value
    // spend, 3 check-ins, 2 scores, 2 refunds: all queued, none sent.
    const OPS: i64 = 4 + 3 + 5 + 1 + 1 + 3 + 2 + 2;
    let status = venue.edge.status(&venue.pos).await.expect("status");
    assert!(!status.online, "{status:?}");
    assert_eq!(status.pending_ops, OPS, "{status:?}");

    // The venue's own figures for the day the first sale was made on (site timezone).
    let sold_at: chrono::DateTime<chrono::Utc> = cash_sale["created_at"]
        .as_str()
        .expect("created_at")
        .parse()
        .expect("time");
    let date = aero_shared::clock::local_date(chrono_tz::Europe::London, sold_at).to_string();
    let (report, sales) = venue.edge_figures(&date).await;
    let gross = 3300 + 1500 + 5000 + 1800 + 600;
    let refunds = 300 + 600;
    assert_eq!(
        report,
        json!({
            "site_id": venue.site, "date": date, "orders": 5,
            "revenue_cents": gross - refunds, "gross_sales_cents": gross,
            "refunds_cents": refunds, "checkins": 3, "new_customers": 4,
        })
    );
    let expected_rows = vec![
        ("JUMP60".to_string(), 2 + 1 + 1, 6000),
        ("SOCKS".to_string(), 1 + 1 + 2, 1200),
        ("TOPUP50".to_string(), 1, 5000),
    ];
    assert_eq!(sales_rows(&sales), expected_rows);

    // HQ is back: the queue drains on its own, and central refused nothing.
    venue.central.restart().await;
    wait_until("the outbox to drain to central", WAIT, || async {
        venue
            .edge
            .status(&venue.pos)
            .await
            .is_some_and(|s| s.online && s.pending_ops == 0)
    })
    .await;
    let status = venue.edge.status(&venue.pos).await.expect("status");
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert_eq!(venue.acked_seq().await, json!(OPS));

    // HQ's figures for the venue's day are the venue's own, and what the day added up to.
    let check_central = |(central_report, central_sales): (Value, Value)| {
        for field in REPORT_FIELDS {
            assert_eq!(
                central_report[field], report[field],
                "{field}: {central_report}"
            );
        }
        assert_eq!(
            central_sales["products"], sales["products"],
            "{central_sales}"
        );
        assert_eq!(sales_rows(&central_sales), expected_rows);
        assert_eq!(central_report["orders"], 5);
        assert_eq!(central_report["gross_sales_cents"], gross);
        assert_eq!(central_report["refunds_cents"], refunds);
        assert_eq!(central_report["revenue_cents"], gross - refunds);
        assert_eq!(central_report["checkins"], 3);
        assert_eq!(central_report["new_customers"], 4);
    };
    check_central(venue.central_figures(&date).await);

    // Nothing is sent or applied twice: an edge restart finds nothing left to push, and both
    // sides still hold the same figures.
    venue.edge.restart().await;
    wait_until("the restarted edge to settle online", WAIT, || async {
        venue
            .edge
            .status(&venue.pos)
            .await
            .is_some_and(|s| s.online && s.pending_ops == 0)
    })
    .await;
    let status = venue.edge.status(&venue.pos).await.expect("status");
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert_eq!(venue.acked_seq().await, json!(OPS));
    assert_eq!(
        venue.edge_figures(&date).await,
        (report.clone(), sales.clone())
    );
    check_central(venue.central_figures(&date).await);
    assert_eq!(venue.balances(ivy).await["stored_value"], 5000 - 1800);
}

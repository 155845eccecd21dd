//! One stored-value balance spent at two venues while both are cut off from central: each venue
//! takes the spend it can see room for, nothing overwrites anything, and once central is back
//! it holds both deltas, every venue shows their sum, and HQ sees the negative balance.

use aero_tests::{TestCentral, TestEdge, expect_status, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

struct Venue {
    edge: TestEdge,
    pos: String,
}

impl Venue {
    async fn open(central: &TestCentral, owner: &str, name: &str) -> Self {
        let site = central.create_site(owner, name).await;
        let token = central.enrollment_token(owner, site).await;
        let edge = TestEdge::start(central, &token).await;
        let (_, pos) = central.create_device(owner, site, "pos").await;
        Self { edge, pos }
    }

    async fn post(&self, path: &str, body: Value, status: u16) -> Value {
        let response = self
            .edge
            .request(Method::POST, path, &self.pos)
            .json(&body)
            .send()
            .await
            .expect("request");
        expect_status(response, status).await
    }

    /// The balances this venue knows, `None` while it does not know the customer yet.
    async fn balances(&self, customer: Uuid) -> Option<Value> {
        let response = self
            .edge
            .request(
                Method::GET,
                &format!("/v1/customers/{customer}/balances"),
                &self.pos,
            )
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn stored_value(&self, customer: Uuid) -> Option<i64> {
        self.balances(customer).await?["stored_value"].as_i64()
    }

    /// Sells one unit of `product` paid entirely from the customer's stored value.
    async fn spend(&self, customer: Uuid, product: Uuid, cents: i64, status: u16) -> Value {
        self.post(
            "/v1/orders",
            json!({
                "customer_id": customer,
                "lines": [{ "product_id": product, "quantity": 1 }],
                "tenders": [{ "kind": "stored_value", "amount_cents": cents }],
            }),
            status,
        )
        .await
    }

    async fn pending_ops(&self) -> i64 {
        self.edge
            .status(&self.pos)
            .await
            .map_or(i64::MAX, |s| s.pending_ops)
    }
}

async fn product(central: &TestCentral, owner: &str, body: Value) -> Uuid {
    let created = central.post_json(owner, "/v1/products", &body, 201).await;
    created["id"].as_str().expect("id").parse().expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_venues_spending_one_balance_offline_converge_to_the_sum_and_hq_sees_it_negative() {
    let mut central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let top_up = product(
        &central,
        &owner,
        json!({ "sku": "TOPUP50", "name": "50 on the card", "kind": "credits", "price_cents": 5000,
                "duration_minutes": null, "grant": { "account": "stored_value", "amount": 5000 } }),
    )
    .await;
    let party = product(
        &central,
        &owner,
        json!({ "sku": "PARTY", "name": "Party room", "kind": "addon", "price_cents": 4000, "duration_minutes": null }),
    )
    .await;
    let cake = product(
        &central,
        &owner,
        json!({ "sku": "CAKE", "name": "Birthday cake", "kind": "addon", "price_cents": 3000, "duration_minutes": null }),
    )
    .await;
    let leeds = Venue::open(&central, &owner, "Leeds").await;
    let york = Venue::open(&central, &owner, "York").await;

    // A customer of Leeds loads 50.00 there; York learns of the customer and the balance.
    let phone = "+447700900555";
    let customer: Uuid = wait_for_catalog_then(&leeds, || async {
        leeds
            .post(
                "/v1/customers",
                json!({ "first_name": "Bea", "last_name": "Bounce", "birth_date": "1988-02-03", "phone": phone }),
                201,
            )
            .await
    })
    .await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    leeds
        .post(
            "/v1/orders",
            json!({
                "customer_id": customer,
                "lines": [{ "product_id": top_up, "quantity": 1 }],
                "tenders": [{ "kind": "card", "amount_cents": 5000, "reference": "AUTH-1" }],
            }),
            201,
        )
        .await;
    wait_until(
        "York to see the loaded balance",
        Duration::from_secs(20),
        || async { york.stored_value(customer).await == Some(5000) },
    )
    .await;

    // Central goes down. Each venue spends what it sees room for; neither can know of the other.
    central.stop().await;
    leeds.spend(customer, party, 4000, 201).await;
    york.spend(customer, cake, 3000, 201).await;
    assert_eq!(leeds.stored_value(customer).await, Some(1000));
    assert_eq!(york.stored_value(customer).await, Some(2000));
    // A venue refuses a spend beyond the balance it knows.
    york.spend(customer, party, 4000, 422).await;
    assert_eq!(york.stored_value(customer).await, Some(2000));

    // Central is back: both deltas land, and every venue converges to their sum.
    central.restart().await;
    for venue in [&leeds, &york] {
        wait_until(
            "the venue's outbox to drain",
            Duration::from_secs(30),
            || async { venue.pending_ops().await == 0 },
        )
        .await;
    }
    for venue in [&leeds, &york] {
        wait_until(
            "both spends at every venue",
            Duration::from_secs(30),
            || async { venue.stored_value(customer).await == Some(5000 - 4000 - 3000) },
        )
        .await;
        let status = venue.edge.status(&venue.pos).await.expect("status");
        assert_eq!(status.dead_letters, 0, "{status:?}");
    }

    // Central holds both deltas (and nothing twice): HQ's lookup sums to -20.00, and the
    // negative-balance report names the customer.
    let owner = central.owner_token().await;
    let found = central
        .get_json(
            &owner,
            &format!("/v1/customers?phone={}", phone.replace('+', "%2B")),
            200,
        )
        .await;
    let balances = &found["customers"][0]["balances"];
    let stored_value = balances
        .as_array()
        .expect("balances")
        .iter()
        .find(|b| b["account"] == "stored_value")
        .expect("stored value");
    assert_eq!(stored_value["balance"], -2000, "{found}");
    let negative = central
        .get_json(&owner, "/v1/reports/negative-balances", 200)
        .await;
    let listed: Vec<&Value> = negative["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .filter(|b| b["customer_id"] == json!(customer))
        .collect();
    assert_eq!(listed.len(), 1, "{negative}");
    assert_eq!(listed[0]["account"], "stored_value");
    assert_eq!(listed[0]["balance"], -2000);
}

/// Runs `register` once the venue has the catalog and its POS key (both replicated from
/// central after enrollment).
async fn wait_for_catalog_then<F, Fut>(venue: &Venue, register: F) -> Value
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    wait_until(
        "the catalog and the POS key at the venue",
        Duration::from_secs(20),
        || async {
            let Ok(response) = venue
                .edge
                .request(Method::GET, "/v1/products", &venue.pos)
                .send()
                .await
            else {
                return false;
            };
            let body: Value = response.json().await.unwrap_or_default();
            body["products"].as_array().is_some_and(|p| p.len() == 3)
        },
    )
    .await;
    register().await
}

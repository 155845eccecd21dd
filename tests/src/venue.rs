//! A venue for end-to-end tests of what it sells and runs: central with a catalog (a pass, an
//! addon, arcade credits, a stored-value top-up, a membership) and a game, an enrolled edge that
//! has replicated them, one device of each kind, and a manager logged in at the edge.

use crate::{TestCentral, TestEdge, expect_problem, expect_status, wait_until};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

pub const MANAGER_PASSWORD: &str = "a long manager password";

/// A venue with an enrolled edge, one device of each kind, a manager logged in at the edge,
/// and a catalog (by SKU) the edge has replicated.
pub struct Venue {
    pub central: TestCentral,
    pub edge: TestEdge,
    pub site: Uuid,
    pub pos: String,
    pub kiosk: String,
    pub tablet: String,
    pub game: String,
    pub scoreboard: String,
    /// A manager's token issued by the edge.
    pub manager: String,
    pub products: HashMap<&'static str, Uuid>,
    /// A game defined at HQ (highest score wins), replicated to the edge.
    pub game_id: Uuid,
}

/// (sku, product body) of the test catalog.
pub fn catalog() -> Vec<(&'static str, Value)> {
    vec![
        (
            "JUMP60",
            json!({ "sku": "JUMP60", "name": "Jump 60", "kind": "pass", "price_cents": 1500, "duration_minutes": 60 }),
        ),
        (
            "SOCKS",
            json!({ "sku": "SOCKS", "name": "Grip socks", "kind": "addon", "price_cents": 300, "duration_minutes": null }),
        ),
        (
            "CRED100",
            json!({ "sku": "CRED100", "name": "100 arcade credits", "kind": "credits", "price_cents": 2000,
                    "duration_minutes": null, "grant": { "account": "arcade_credits", "amount": 100 } }),
        ),
        (
            "TOPUP50",
            json!({ "sku": "TOPUP50", "name": "50 on the card", "kind": "credits", "price_cents": 5000,
                    "duration_minutes": null, "grant": { "account": "stored_value", "amount": 5000 } }),
        ),
        (
            "MEMBER",
            json!({ "sku": "MEMBER", "name": "Member visit", "kind": "membership", "price_cents": 9900,
                    "duration_minutes": 120, "grant": { "account": "visits", "amount": 1 } }),
        ),
    ]
}

impl Venue {
    pub async fn open() -> Self {
        Self::open_with_networks(&["127.0.0.0/8", "::1/128"]).await
    }

    pub async fn open_with_networks(networks: &[&str]) -> Self {
        let central = TestCentral::start().await;
        let owner = central.owner_token().await;
        let site = central
            .create_site_with_networks(&owner, "Leeds", networks)
            .await;
        let mut products = HashMap::new();
        for (sku, body) in catalog() {
            let created = central.post_json(&owner, "/v1/products", &body, 201).await;
            products.insert(
                sku,
                created["id"].as_str().expect("id").parse().expect("uuid"),
            );
        }
        let game_id: Uuid = central
            .post_json(
                &owner,
                "/v1/games",
                &json!({ "name": "Laser maze", "score_order": "highest_wins" }),
                201,
            )
            .await["id"]
            .as_str()
            .expect("game id")
            .parse()
            .expect("uuid");
        central
            .post_json(
                &owner,
                "/v1/users",
                &json!({ "username": "morgan", "password": MANAGER_PASSWORD, "role": "manager", "site_ids": [site] }),
                201,
            )
            .await;
        let token = central.enrollment_token(&owner, site).await;
        let edge = TestEdge::start(&central, &token).await;
        let mut keys = Vec::new();
        for kind in ["pos", "kiosk", "tablet", "game", "scoreboard"] {
            keys.push(central.create_device(&owner, site, kind).await.1);
        }
        let [pos, kiosk, tablet, game, scoreboard] = <[String; 5]>::try_from(keys).expect("keys");
        let all_keys = [&pos, &kiosk, &tablet, &game, &scoreboard];
        wait_until(
            "the keys and the catalog at the edge",
            Duration::from_secs(20),
            || async {
                for key in all_keys {
                    if edge.status(key).await.is_none() {
                        return false;
                    }
                }
                let Ok(response) = edge.request(Method::GET, "/v1/products", &pos).send().await
                else {
                    return false;
                };
                let body: Value = response.json().await.unwrap_or_default();
                if body["products"].as_array().is_none_or(|p| p.len() != 5) {
                    return false;
                }
                let leaderboard = format!("/v1/leaderboards/{game_id}?period=today");
                edge.request(Method::GET, &leaderboard, &game)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
        let login = || async {
            edge.client
                .post(edge.url("/v1/auth/login"))
                .json(&json!({ "username": "morgan", "password": MANAGER_PASSWORD }))
                .send()
                .await
                .expect("login")
        };
        wait_until(
            "the manager at the edge",
            Duration::from_secs(20),
            || async { login().await.status() == 200 },
        )
        .await;
        let manager = expect_status(login().await, 200).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        Self {
            central,
            edge,
            site,
            pos,
            kiosk,
            tablet,
            game,
            scoreboard,
            manager,
            products,
            game_id,
        }
    }

    pub fn product(&self, sku: &str) -> Uuid {
        self.products[sku]
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> Response {
        self.edge
            .request(Method::POST, path, key)
            .json(&body)
            .send()
            .await
            .expect("post")
    }

    pub async fn get(&self, key: &str, path: &str) -> Response {
        self.edge
            .request(Method::GET, path, key)
            .send()
            .await
            .expect("get")
    }

    pub async fn manager_post(&self, path: &str, body: Value) -> Response {
        self.edge
            .client
            .post(self.edge.url(path))
            .bearer_auth(&self.manager)
            .json(&body)
            .send()
            .await
            .expect("post as manager")
    }

    pub async fn manager_get(&self, path: &str) -> Response {
        self.edge
            .client
            .get(self.edge.url(path))
            .bearer_auth(&self.manager)
            .send()
            .await
            .expect("get as manager")
    }

    /// Registers a customer at the tablet (with a valid waiver when `waiver`); returns the id.
    pub async fn customer(&self, first: &str, phone: &str, waiver: bool) -> Uuid {
        let body = json!({
            "first_name": first, "last_name": "Jumper", "birth_date": "1990-04-01", "phone": phone,
        });
        let created =
            expect_status(self.post(&self.tablet, "/v1/customers", body).await, 201).await;
        let id: Uuid = created["id"].as_str().expect("id").parse().expect("uuid");
        if waiver {
            self.sign_waiver(id, first).await;
        }
        id
    }

    pub async fn sign_waiver(&self, id: Uuid, signer: &str) {
        let path = format!("/v1/customers/{id}/waivers");
        let body = json!({ "signer_name": signer });
        expect_status(self.post(&self.tablet, &path, body).await, 201).await;
    }

    /// Sells at the POS and expects `status`; returns the body.
    pub async fn order(&self, body: Value, status: u16) -> Value {
        let response = self.post(&self.pos, "/v1/orders", body).await;
        if status >= 400 {
            expect_problem(response, status).await
        } else {
            expect_status(response, status).await
        }
    }

    /// Sells `quantity` of `sku` to `customer` for cash.
    pub async fn sell(&self, customer: Uuid, sku: &str, quantity: i64, price: i64) -> Value {
        self.order(
            json!({
                "customer_id": customer,
                "lines": [{ "product_id": self.product(sku), "quantity": quantity }],
                "tenders": [{ "kind": "cash", "amount_cents": price * quantity }],
            }),
            201,
        )
        .await
    }

    pub async fn balances(&self, customer: Uuid) -> Value {
        let path = format!("/v1/customers/{customer}/balances");
        expect_status(self.get(&self.pos, &path).await, 200).await
    }

    pub async fn check_in(&self, customer: Uuid, wristband: &str, sku: &str) -> Response {
        let body = json!({ "customer_id": customer, "wristband": wristband, "product_id": self.product(sku) });
        self.post(&self.kiosk, "/v1/checkins", body).await
    }

    pub async fn lookup(&self, phone: &str) -> Value {
        let path = format!("/v1/customers?phone={}", phone.replace('+', "%2B"));
        let body = expect_status(self.get(&self.kiosk, &path).await, 200).await;
        body["customers"][0].clone()
    }
}

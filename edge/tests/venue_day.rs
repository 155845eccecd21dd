//! A venue's day on a clock the test moves: jump sessions ending, the local day a report covers
//! across a daylight-saving change, retired products, and the outbox ops each sale queues.
//!
//! The edge is built on a replica seeded directly (no central): its routes are served on a
//! loopback port, and its sync engine never runs, so every op it queues stays in the outbox.

mod support;

use aero_edge::outbox::pending;
use aero_edge::replica::apply::{PulledChange, PulledPage, apply_page};
use aero_shared::auth::api_key::KeyHash;
use aero_shared::clock::{Clock, ManualClock};
use aero_shared::wire::{Entity, OpKind, PushOp};
use chrono::{DateTime, Duration, Utc};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use uuid::Uuid;

const POS_KEY: &str = "aero_pos_key_for_the_venue_day_tests_00000000";
const KIOSK_KEY: &str = "aero_kiosk_key_for_the_venue_day_tests_000000";

/// The products seeded into the replica.
struct Catalog {
    pass: Uuid,
    membership: Uuid,
    socks: Uuid,
    retired: Uuid,
}

struct Venue {
    addr: SocketAddr,
    client: Client,
    clock: ManualClock,
    edge: aero_edge::Edge,
    catalog: Catalog,
    /// A customer with a valid waiver.
    jumper: Uuid,
    manager: String,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

fn change(seq: i64, entity: &str, id: Uuid, data: Value) -> Value {
    json!({
        "seq": seq, "entity": entity, "entity_id": id, "op": "upsert", "site_id": null,
        "data": data, "changed_at": Utc::now(),
    })
}

impl Venue {
    /// A venue in London whose clock reads `start`.
    async fn open(start: DateTime<Utc>) -> Self {
        let clock = ManualClock::new(start);
        let offline = support::offline_edge(&clock);
        let manager = offline.staff_token("morgan", "manager").await;
        let support::OfflineEdge { edge, site, dir } = offline;
        let catalog = Catalog {
            pass: Uuid::now_v7(),
            membership: Uuid::now_v7(),
            socks: Uuid::now_v7(),
            retired: Uuid::now_v7(),
        };
        let jumper = Uuid::now_v7();
        let created = start - Duration::days(30);
        let product = |id: Uuid,
                       sku: &str,
                       kind: &str,
                       price: i64,
                       minutes: Option<i32>,
                       grant: Value,
                       active: bool| {
            json!({
                "id": id, "sku": sku, "name": format!("{sku} product"), "kind": kind,
                "price_cents": price, "duration_minutes": minutes, "grant": grant,
                "active": active, "created_at": created,
            })
        };
        let device = |key: &str, kind: &str| {
            let id = Uuid::now_v7();
            (
                id,
                json!({
                    "id": id, "site_id": site, "name": kind, "kind": kind, "allowed_networks": [],
                    "key_hash": KeyHash::of(key).as_str(), "created_at": created, "revoked_at": null,
                }),
            )
        };
        let (pos_id, pos) = device(POS_KEY, "pos");
        let (kiosk_id, kiosk) = device(KIOSK_KEY, "kiosk");
        let waiver = Uuid::now_v7();
        let changes = vec![
            change(
                1,
                "site",
                site,
                json!({
                    "id": site, "name": "Leeds", "timezone": "Europe/London",
                    "allowed_networks": ["127.0.0.0/8"], "created_at": created,
                }),
            ),
            change(2, "device", pos_id, pos),
            change(3, "device", kiosk_id, kiosk),
            change(
                4,
                "product",
                catalog.pass,
                product(
                    catalog.pass,
                    "JUMP60",
                    "pass",
                    1500,
                    Some(60),
                    Value::Null,
                    true,
                ),
            ),
            change(
                5,
                "product",
                catalog.membership,
                product(
                    catalog.membership,
                    "MEMBER",
                    "membership",
                    9900,
                    Some(90),
                    json!({"account": "visits", "amount": 2, "per": "month"}),
                    true,
                ),
            ),
            change(
                6,
                "product",
                catalog.socks,
                product(
                    catalog.socks,
                    "SOCKS",
                    "addon",
                    300,
                    None,
                    Value::Null,
                    true,
                ),
            ),
            change(
                7,
                "product",
                catalog.retired,
                product(
                    catalog.retired,
                    "OLD",
                    "pass",
                    900,
                    Some(30),
                    Value::Null,
                    false,
                ),
            ),
            change(
                8,
                "customer",
                jumper,
                json!({
                    "id": jumper, "first_name": "Jo", "last_name": "Jumper", "birth_date": "1990-01-01",
                    "phone": "+447700900001", "email": null, "guardian_id": null,
                    "home_site_id": Uuid::now_v7(), "created_at": created,
                }),
            ),
            change(
                9,
                "waiver",
                waiver,
                json!({
                    "id": waiver, "customer_id": jumper, "site_id": site, "signer_name": "Jo Jumper",
                    "signed_at": created, "expires_at": start + Duration::days(300),
                }),
            ),
        ];
        let page = PulledPage {
            changes: changes
                .iter()
                .map(|change| {
                    PulledChange::new(serde_json::value::to_raw_value(change).expect("raw change"))
                })
                .collect(),
            next_cursor: 9,
            more: false,
            store_id: Uuid::nil(),
            head: 9,
            acked_seq: 0,
            anchor: None,
        };
        edge.state
            .writer
            .write(move |c| apply_page(c, &page, Utc::now()))
            .await
            .expect("seed the replica");
        edge.state.replica.devices_changed();
        // Bound before serving: the port accepts before the first request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(aero_shared::server::serve(
            listener,
            edge.router.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            client: Client::builder().no_proxy().build().expect("client"),
            clock,
            edge,
            catalog,
            jumper,
            manager,
            _dir: dir,
            _stop: stop,
        }
    }

    fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client
            .request(method, format!("http://{}{path}", self.addr))
            .header("x-api-key", key)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.request(Method::POST, path, key)
            .json(&body)
            .send()
            .await
            .expect("post")
    }

    async fn get(&self, path: &str, key: &str) -> Response {
        self.request(Method::GET, path, key)
            .send()
            .await
            .expect("get")
    }

    async fn report(&self, date: &str) -> Value {
        let response = self
            .client
            .get(format!("http://{}/v1/reports/daily?date={date}", self.addr))
            .bearer_auth(&self.manager)
            .send()
            .await
            .expect("report");
        body(response, 200).await
    }

    /// Sells one JUMP60 pass to the jumper for cash.
    async fn sell_pass(&self) -> Value {
        let response = self
            .post(
                "/v1/orders",
                POS_KEY,
                json!({
                    "customer_id": self.jumper,
                    "lines": [{ "product_id": self.catalog.pass, "quantity": 1 }],
                    "tenders": [{ "kind": "cash", "amount_cents": 1500 }],
                }),
            )
            .await;
        body(response, 201).await
    }

    /// Sells the jumper one membership (two visits a month), paid by card.
    async fn sell_membership(&self) -> Value {
        let order = json!({
            "customer_id": self.jumper,
            "lines": [{ "product_id": self.catalog.membership, "quantity": 1 }],
            "tenders": [{ "kind": "card", "amount_cents": 9900, "reference": "T-1" }],
        });
        body(self.post("/v1/orders", POS_KEY, order).await, 201).await
    }

    /// The kiosk lookup of the jumper by phone.
    async fn lookup_jumper(&self) -> Value {
        let path = "/v1/customers?phone=%2B447700900001";
        body(self.get(path, KIOSK_KEY).await, 200).await
    }

    /// A check-in of the jumper on their membership.
    fn membership_checkin(&self, wristband: &str) -> Value {
        json!({
            "customer_id": self.jumper, "wristband": wristband,
            "product_id": self.catalog.membership,
        })
    }

    /// Checks the jumper in on their membership, expecting `status`.
    async fn check_in_member(&self, wristband: &str, status: u16) -> Value {
        let checkin = self.membership_checkin(wristband);
        body(self.post("/v1/checkins", KIOSK_KEY, checkin).await, status).await
    }

    async fn outbox(&self) -> Vec<PushOp> {
        self.edge
            .state
            .replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("outbox")
    }
}

async fn body(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_on_time_and_frees_its_wristband() {
    let venue = Venue::open(at("2026-06-01T10:00:00Z")).await;
    venue.sell_membership().await;
    let checkin = venue.membership_checkin("WB-7");
    let session = body(
        venue.post("/v1/checkins", KIOSK_KEY, checkin.clone()).await,
        201,
    )
    .await;
    assert_eq!(session["ends_at"], "2026-06-01T11:30:00Z");
    assert!(session["ledger_entry_id"].is_string() && session["order_id"].is_null());

    venue.clock.advance(Duration::minutes(89));
    let busy = venue.post("/v1/checkins", KIOSK_KEY, checkin.clone()).await;
    assert_eq!(busy.status(), 409, "the wristband is still in its session");
    let active = body(venue.get("/v1/sessions/active", KIOSK_KEY).await, 200).await;
    assert_eq!(active["sessions"].as_array().expect("sessions").len(), 1);
    let lookup = venue.lookup_jumper().await;
    let found = &lookup["customers"][0];
    assert_eq!(found["waiver_valid"], true);
    assert_eq!(found["balances"]["visits"], 1);
    assert_eq!(found["active_sessions"][0]["wristband"], "WB-7");

    // At its end the session is over: the wristband takes the second visit.
    venue.clock.advance(Duration::minutes(1));
    let active = body(venue.get("/v1/sessions/active", KIOSK_KEY).await, 200).await;
    assert_eq!(active["sessions"], json!([]));
    let lookup = venue.lookup_jumper().await;
    assert_eq!(lookup["customers"][0]["active_sessions"], json!([]));
    body(
        venue.post("/v1/checkins", KIOSK_KEY, checkin.clone()).await,
        201,
    )
    .await;
    venue.clock.advance(Duration::minutes(90));
    let spent = venue.post("/v1/checkins", KIOSK_KEY, checkin).await;
    let problem = body(spent, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("no membership visits"),
        "{problem}"
    );

    // The sale queued the order and its grant; each check-in its session and the visit spent.
    let ops: Vec<(Entity, OpKind)> = venue
        .outbox()
        .await
        .iter()
        .map(|op| (op.entity, op.kind))
        .collect();
    assert_eq!(
        ops,
        [
            (Entity::Order, OpKind::Upsert),
            (Entity::LedgerEntry, OpKind::LedgerAppend),
            (Entity::Checkin, OpKind::Upsert),
            (Entity::LedgerEntry, OpKind::LedgerAppend),
            (Entity::Checkin, OpKind::Upsert),
            (Entity::LedgerEntry, OpKind::LedgerAppend),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_covers_the_local_day_across_a_clock_change() {
    // London goes from GMT to BST at 01:00 GMT on 29 March 2026: that day is 23 hours long,
    // from 00:00 GMT to 23:00 GMT.
    let venue = Venue::open(at("2026-03-28T23:59:59.999Z")).await;
    venue.sell_pass().await; // 28 March, local 23:59:59.999
    venue.clock.advance(Duration::milliseconds(1));
    let first = venue.sell_pass().await; // 29 March, local 00:00
    venue
        .clock
        .advance(Duration::hours(22) + Duration::minutes(59));
    venue.sell_pass().await; // 29 March, local 23:59 BST
    venue.clock.advance(Duration::minutes(1));
    venue.sell_pass().await; // 30 March, local 00:00 BST
    let refund = venue
        .client
        .post(format!(
            "http://{}/v1/orders/{}/refund",
            venue.addr,
            first["id"].as_str().expect("id")
        ))
        .bearer_auth(&venue.manager)
        .json(&json!({ "tenders": [{ "kind": "cash", "amount_cents": 400 }], "reason": "late" }))
        .send()
        .await
        .expect("refund");
    body(refund, 201).await; // taken 30 March: counts that day, not the order's

    let day = venue.report("2026-03-29").await;
    assert_eq!(
        (
            &day["orders"],
            &day["gross_sales_cents"],
            &day["refunds_cents"],
            &day["revenue_cents"]
        ),
        (&json!(2), &json!(3000), &json!(0), &json!(3000)),
        "{day}"
    );
    let next = venue.report("2026-03-30").await;
    assert_eq!(
        (
            &next["orders"],
            &next["refunds_cents"],
            &next["revenue_cents"]
        ),
        (&json!(1), &json!(400), &json!(1100)),
        "{next}"
    );
    // Without a date: today, in London.
    let today = venue
        .client
        .get(format!("http://{}/v1/reports/daily", venue.addr))
        .bearer_auth(&venue.manager)
        .send()
        .await
        .expect("report");
    assert_eq!(body(today, 200).await["date"], "2026-03-30");
    let orders = body(venue.get("/v1/orders?date=2026-03-29", POS_KEY).await, 200).await;
    assert_eq!(orders["orders"].as_array().expect("orders").len(), 2);
    let bad = venue.get("/v1/orders?date=29-03-2026", POS_KEY).await;
    assert_eq!(body(bad, 422).await["errors"][0]["field"], "date");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sales_queue_nothing() {
    let venue = Venue::open(at("2026-06-01T10:00:00Z")).await;
    let retired = venue
        .post(
            "/v1/orders",
            POS_KEY,
            json!({
                "lines": [
                    { "product_id": venue.catalog.socks, "quantity": 1 },
                    { "product_id": venue.catalog.retired, "quantity": 1 },
                ],
                "tenders": [{ "kind": "cash", "amount_cents": 1200 }],
            }),
        )
        .await;
    let problem = body(retired, 422).await;
    assert_eq!(
        problem["errors"][0]["field"], "lines[1].product_id",
        "{problem}"
    );
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("no longer sold"),
        "{problem}"
    );
    // A pass the jumper never bought, a membership without visits: refused, nothing queued.
    for product in [venue.catalog.pass, venue.catalog.membership] {
        let refused = venue
            .post(
                "/v1/checkins",
                KIOSK_KEY,
                json!({ "customer_id": venue.jumper, "wristband": "WB-1", "product_id": product }),
            )
            .await;
        body(refused, 422).await;
    }
    assert!(venue.outbox().await.is_empty());
}

async fn visits_of_the_jumper(venue: &Venue) -> Value {
    let path = format!("/v1/customers/{}/balances", venue.jumper);
    body(venue.get(&path, KIOSK_KEY).await, 200).await["visits"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_gives_its_visits_for_a_month_and_unused_ones_lapse() {
    // Sold on March 20th in London: the visits last until local midnight starting April 20th
    // (23:00 UTC on the 19th, summer time by then).
    let venue = Venue::open(at("2026-03-20T10:00:00Z")).await;
    venue.sell_membership().await;
    venue.check_in_member("WB-1", 201).await;
    assert_eq!(visits_of_the_jumper(&venue).await, 1);

    venue
        .clock
        .advance(Duration::days(30) + Duration::hours(12) + Duration::minutes(59));
    assert_eq!(venue.clock.now(), at("2026-04-19T22:59:00Z"));
    assert_eq!(
        visits_of_the_jumper(&venue).await,
        1,
        "the month has a minute left"
    );
    venue.clock.advance(Duration::minutes(2));
    assert_eq!(
        visits_of_the_jumper(&venue).await,
        0,
        "the unused visit lapsed"
    );
    let problem = venue.check_in_member("WB-2", 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no membership visits left")),
        "{problem}"
    );
    let lookup = venue.lookup_jumper().await;
    assert_eq!(lookup["customers"][0]["balances"]["visits"], 0);

    // The next month's sale brings its own two: nothing rolled over.
    venue.sell_membership().await;
    assert_eq!(visits_of_the_jumper(&venue).await, 2);
    venue.check_in_member("WB-2", 201).await;
    assert_eq!(visits_of_the_jumper(&venue).await, 1);
}

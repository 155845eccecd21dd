//! OWASP API5:2023 (broken function-level authorization), as a matrix: every staff role and
//! every device kind against every protected operation of the edge and of central. Each
//! operation lists exactly who may call it (from `../shared/DESIGN.md` sections 4 and 5: HQ
//! roles manage the chain, managers refund, adjust, switch plugs and read reports, staff and
//! devices do their own job); everyone else must get 403 problem+json. A failure prints the
//! whole matrix with the cells that differ.
//!
//! Callers reach each operation with an id that does not exist or a body that does not
//! validate, so an allowed call answers 404/422 (or 200 for a read) and nothing changes.

use aero_tests::venue::Venue;
use aero_tests::{expect_status, wait_until};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;
use uuid::Uuid;

const STAFF_PASSWORD: &str = "a long enough staff password";

/// Who calls: a staff role with a bearer token, or a device kind with its key.
struct Caller {
    name: &'static str,
    credential: Credential,
}

enum Credential {
    Bearer(String),
    Key(String),
}

impl Caller {
    fn sign(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Key(key) => request.header("x-api-key", key),
        }
    }
}

/// One operation and exactly the callers allowed to perform it.
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    allowed: &'static [&'static str],
}

fn op(method: Method, path: String, allowed: &'static [&'static str]) -> Operation {
    let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
    Operation {
        method,
        path,
        body,
        allowed,
    }
}

const HQ: &[&str] = &["owner", "admin"];
const MANAGERS: &[&str] = &["owner", "admin", "manager"];
const ALL_STAFF: &[&str] = &["owner", "admin", "manager", "staff"];

/// Runs every operation as every caller; panics with the matrix if any cell is wrong.
async fn check_matrix(
    service: &str,
    names: &[(String, &str)],
    url: impl Fn(&str) -> String,
    client: &reqwest::Client,
    callers: &[Caller],
    operations: &[Operation],
) {
    let mut grid = String::new();
    let _ = write!(grid, "{:<56}", format!("{service} operation"));
    for caller in callers {
        let _ = write!(grid, "{:>11}", caller.name);
    }
    grid.push('\n');
    let mut wrong = Vec::new();
    for operation in operations {
        let mut label = format!("{} {}", operation.method, operation.path);
        for (id, name) in names {
            label = label.replace(id.as_str(), name);
        }
        let _ = write!(grid, "{:<56}", truncate(&label, 55));
        for caller in callers {
            let mut request = client.request(operation.method.clone(), url(&operation.path));
            if let Some(body) = &operation.body {
                request = request.json(body);
            }
            let response = caller.sign(request).send().await.expect("request");
            let status = response.status().as_u16();
            let problem = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
            let expected_allowed = operation.allowed.contains(&caller.name);
            let ok = if expected_allowed {
                !matches!(status, 401 | 403 | 405 | 429) && status < 500
            } else {
                status == 403 && problem
            };
            let cell = match (ok, expected_allowed) {
                (true, true) => format!("{status}"),
                (true, false) => "403".to_string(),
                (false, true) => format!("!{status}(allow)"),
                (false, false) => format!("!{status}(deny)"),
            };
            let _ = write!(grid, "{cell:>11}");
            if !ok {
                wrong.push(format!(
                    "{label} as {}: got {status}, expected {}",
                    caller.name,
                    if expected_allowed { "allowed" } else { "403" }
                ));
            }
        }
        grid.push('\n');
    }
    assert!(
        wrong.is_empty(),
        "{} wrong cell(s):\n  {}\n\n{grid}",
        wrong.len(),
        wrong.join("\n  ")
    );
}

fn truncate(text: &str, len: usize) -> String {
    text.chars().take(len).collect()
}

/// Creates HQ and venue staff at central for `venue`'s site (an admin and a staff member; the
/// owner and the manager exist already).
async fn add_staff(venue: &Venue) {
    let owner = venue.central.owner_token().await;
    for (username, role, sites) in [
        ("ali", "admin", json!([])),
        ("sam", "staff", json!([venue.site])),
    ] {
        venue
            .central
            .post_json(
                &owner,
                "/v1/users",
                &json!({ "username": username, "password": STAFF_PASSWORD, "role": role, "site_ids": sites }),
                201,
            )
            .await;
    }
}

async fn edge_login(venue: &Venue, username: &str, password: &str) -> String {
    let login = || async {
        venue
            .edge
            .client
            .post(venue.edge.url("/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login")
    };
    wait_until(
        "the account at the edge",
        Duration::from_secs(20),
        || async { login().await.status() == 200 },
    )
    .await;
    expect_status(login().await, 200).await["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

fn device_callers(venue: &Venue) -> Vec<Caller> {
    [
        ("kiosk", &venue.kiosk),
        ("pos", &venue.pos),
        ("tablet", &venue.tablet),
        ("game", &venue.game),
        ("scoreboard", &venue.scoreboard),
    ]
    .into_iter()
    .map(|(name, key)| Caller {
        name,
        credential: Credential::Key(key.clone()),
    })
    .collect()
}

#[tokio::test]
async fn every_role_and_device_kind_gets_exactly_its_edge_operations() {
    let venue = Venue::open().await;
    add_staff(&venue).await;
    let mut callers = vec![
        Caller {
            name: "owner",
            credential: Credential::Bearer(
                edge_login(&venue, aero_tests::OWNER, aero_tests::OWNER_PASSWORD).await,
            ),
        },
        Caller {
            name: "admin",
            credential: Credential::Bearer(edge_login(&venue, "ali", STAFF_PASSWORD).await),
        },
        Caller {
            name: "manager",
            credential: Credential::Bearer(venue.manager.clone()),
        },
        Caller {
            name: "staff",
            credential: Credential::Bearer(edge_login(&venue, "sam", STAFF_PASSWORD).await),
        },
    ];
    callers.extend(device_callers(&venue));

    let nobody = Uuid::now_v7();
    let game = venue.game_id;
    use Method as M;
    let operations = [
        op(
            M::GET,
            "/v1/status".into(),
            &[
                "owner",
                "admin",
                "manager",
                "staff",
                "kiosk",
                "pos",
                "tablet",
                "game",
                "scoreboard",
            ],
        ),
        op(
            M::GET,
            "/v1/products".into(),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(
            M::GET,
            "/v1/customers?phone=%2B447700900999".into(),
            &[
                "owner", "admin", "manager", "staff", "kiosk", "pos", "tablet",
            ],
        ),
        op(
            M::POST,
            "/v1/customers".into(),
            &[
                "owner", "admin", "manager", "staff", "kiosk", "pos", "tablet",
            ],
        ),
        op(
            M::POST,
            format!("/v1/customers/{nobody}/waivers"),
            &["owner", "admin", "manager", "staff", "kiosk", "tablet"],
        ),
        op(
            M::GET,
            format!("/v1/customers/{nobody}/balances"),
            &["owner", "admin", "manager", "staff", "kiosk", "pos", "game"],
        ),
        op(
            M::POST,
            format!("/v1/customers/{nobody}/balances/spend"),
            &["owner", "admin", "manager", "staff", "kiosk", "pos", "game"],
        ),
        op(
            M::POST,
            format!("/v1/customers/{nobody}/balances/adjust"),
            MANAGERS,
        ),
        op(
            M::GET,
            "/v1/orders".into(),
            &["owner", "admin", "manager", "staff", "pos"],
        ),
        op(
            M::POST,
            "/v1/orders".into(),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(
            M::GET,
            format!("/v1/orders/{nobody}"),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(M::POST, format!("/v1/orders/{nobody}/refund"), MANAGERS),
        op(
            M::POST,
            "/v1/checkins".into(),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(
            M::GET,
            "/v1/sessions/active".into(),
            &[
                "owner",
                "admin",
                "manager",
                "staff",
                "kiosk",
                "pos",
                "scoreboard",
            ],
        ),
        op(
            M::POST,
            "/v1/scores".into(),
            &["owner", "admin", "manager", "staff", "game"],
        ),
        op(
            M::GET,
            format!("/v1/leaderboards/{game}"),
            &["owner", "admin", "manager", "staff", "game", "scoreboard"],
        ),
        op(
            M::GET,
            "/v1/waiver-texts/current".into(),
            &[
                "owner",
                "admin",
                "manager",
                "staff",
                "kiosk",
                "pos",
                "tablet",
                "game",
                "scoreboard",
            ],
        ),
        op(M::GET, "/v1/plugs".into(), ALL_STAFF),
        op(M::POST, format!("/v1/plugs/{nobody}/power"), MANAGERS),
        op(M::GET, "/v1/reports/daily".into(), MANAGERS),
        op(M::GET, "/v1/reports/sales-by-product".into(), MANAGERS),
        op(M::GET, "/v1/dead-letters".into(), MANAGERS),
        op(
            M::POST,
            format!("/v1/dead-letters/{nobody}/retry"),
            MANAGERS,
        ),
        op(
            M::POST,
            format!("/v1/dead-letters/{nobody}/discard"),
            MANAGERS,
        ),
        op(
            M::GET,
            "/v1/live".into(),
            &[
                "owner",
                "admin",
                "manager",
                "staff",
                "kiosk",
                "pos",
                "tablet",
                "game",
                "scoreboard",
            ],
        ),
    ];
    let edge = &venue.edge;
    let names = [
        (nobody.to_string(), "{unknown}"),
        (game.to_string(), "{game}"),
    ];
    check_matrix(
        "edge",
        &names,
        |path| edge.url(path),
        &edge.client,
        &callers,
        &operations,
    )
    .await;

    // Nothing the allowed callers reached changed the venue.
    let day = expect_status(venue.get(&venue.pos, "/v1/orders").await, 200).await;
    assert_eq!(day["orders"], json!([]), "{day}");
    let found = expect_status(
        venue
            .get(&venue.kiosk, "/v1/customers?phone=%2B447700900999")
            .await,
        200,
    )
    .await;
    assert_eq!(found["customers"], json!([]), "{found}");
}

#[tokio::test]
async fn every_role_and_device_kind_gets_exactly_its_central_operations() {
    let venue = Venue::open().await;
    add_staff(&venue).await;
    let central = &venue.central;
    let owner = central.owner_token().await;
    let site = venue.site;
    let plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{site}/plugs"),
            &json!({ "name": "Laser room", "host": "127.0.0.1", "port": 9, "child_id": null }),
            201,
        )
        .await["id"]
        .as_str()
        .expect("plug id")
        .to_string();
    let edge_key = {
        use secrecy::ExposeSecret as _;
        venue.edge.credential.api_key.expose_secret().to_string()
    };
    let mut callers = vec![
        Caller {
            name: "owner",
            credential: Credential::Bearer(owner.clone()),
        },
        Caller {
            name: "admin",
            credential: Credential::Bearer(central.login("ali", STAFF_PASSWORD).await),
        },
        Caller {
            name: "manager",
            credential: Credential::Bearer(
                central
                    .login("morgan", aero_tests::venue::MANAGER_PASSWORD)
                    .await,
            ),
        },
        Caller {
            name: "staff",
            credential: Credential::Bearer(central.login("sam", STAFF_PASSWORD).await),
        },
    ];
    callers.extend(device_callers(&venue));
    callers.push(Caller {
        name: "edge",
        credential: Credential::Key(edge_key),
    });
    let users_before = central.get_json(&owner, "/v1/users", 200).await;
    let devices_before = central
        .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;

    let nobody = Uuid::now_v7();
    let game = venue.game_id;
    let date = chrono::Utc::now().date_naive();
    use Method as M;
    let mut operations = vec![
        op(M::GET, "/v1/sites".into(), ALL_STAFF),
        op(M::POST, "/v1/sites".into(), HQ),
        op(M::GET, format!("/v1/sites/{site}"), ALL_STAFF),
        op(M::PATCH, format!("/v1/sites/{site}"), HQ),
        op(M::POST, format!("/v1/sites/{site}/enrollment-tokens"), HQ),
        op(M::GET, format!("/v1/sites/{site}/sync"), MANAGERS),
        op(M::GET, format!("/v1/sites/{site}/dead-letters"), MANAGERS),
        op(M::GET, format!("/v1/sites/{site}/devices"), ALL_STAFF),
        op(M::POST, format!("/v1/sites/{site}/devices"), HQ),
        op(M::DELETE, format!("/v1/devices/{nobody}"), HQ),
        op(M::GET, "/v1/users".into(), HQ),
        op(M::POST, "/v1/users".into(), HQ),
        op(M::DELETE, format!("/v1/users/{nobody}"), HQ),
        op(
            M::GET,
            "/v1/products".into(),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(M::POST, "/v1/products".into(), HQ),
        op(M::POST, format!("/v1/products/{nobody}/retire"), HQ),
        op(
            M::GET,
            "/v1/games".into(),
            &["owner", "admin", "manager", "staff", "kiosk", "pos"],
        ),
        op(M::POST, "/v1/games".into(), HQ),
        op(M::GET, "/v1/waiver-texts".into(), MANAGERS),
        op(M::POST, "/v1/waiver-texts".into(), HQ),
        op(M::GET, format!("/v1/sites/{site}/plugs"), ALL_STAFF),
        op(M::POST, format!("/v1/sites/{site}/plugs"), HQ),
        op(M::GET, format!("/v1/plugs/{plug}/schedules"), ALL_STAFF),
        op(M::POST, format!("/v1/plugs/{plug}/schedules"), HQ),
        op(M::GET, format!("/v1/plugs/{plug}/overrides"), ALL_STAFF),
        op(M::POST, format!("/v1/plugs/{plug}/overrides"), MANAGERS),
        op(M::GET, format!("/v1/audit?site_id={site}"), MANAGERS),
        op(
            M::GET,
            "/v1/customers?phone=%2B447700900999".into(),
            MANAGERS,
        ),
        op(
            M::GET,
            format!("/v1/leaderboards/{game}"),
            &["owner", "admin", "manager", "staff", "game", "scoreboard"],
        ),
        op(M::POST, "/v1/sync/push".into(), &["edge"]),
        op(M::GET, "/v1/sync/pull?after=0&limit=1".into(), &["edge"]),
        op(M::GET, "/v1/sync/notify".into(), &["edge"]),
    ];
    for report in [
        "daily",
        "sales-by-product",
        "checkins-by-hour",
        "negative-balances",
    ] {
        operations.push(op(
            M::GET,
            format!("/v1/reports/{report}?site_id={site}&date={date}"),
            MANAGERS,
        ));
    }
    let names = [
        (nobody.to_string(), "{unknown}"),
        (game.to_string(), "{game}"),
        (site.to_string(), "{site}"),
        (plug.clone(), "{plug}"),
    ];
    check_matrix(
        "central",
        &names,
        |path| central.url(path),
        &central.client,
        &callers,
        &operations,
    )
    .await;

    let users_after = central.get_json(&owner, "/v1/users", 200).await;
    assert_eq!(users_before, users_after);
    let devices_after = central
        .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;
    assert_eq!(devices_before, devices_after);
}

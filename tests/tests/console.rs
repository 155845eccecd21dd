//! The HQ console's server side over real HTTP: the session cookie's attributes, CSRF on
//! every form, the API's permissions showing through (a manager sees only their venues),
//! escaping of user-provided text, the chain status it polls, and its page headers.

use aero_shared::auth::principal::Role;
use aero_tests::{OWNER, OWNER_PASSWORD, TestCentral, TestEdge, create_user, wait_until};
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE,
};
use reqwest::{Client, Response, redirect};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// A browser-like client: no redirects followed, cookies sent by hand so the test sees them.
struct Browser<'a> {
    central: &'a TestCentral,
    client: Client,
    session: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(central: &'a TestCentral) -> Self {
        Self {
            central,
            client: Client::builder()
                .no_proxy()
                .redirect(redirect::Policy::none())
                .build()
                .expect("client"),
            session: None,
        }
    }

    async fn get(&self, path: &str) -> Response {
        let mut request = self.client.get(self.central.url(path));
        if let Some(session) = &self.session {
            request = request.header(COOKIE, format!("aero_console={session}"));
        }
        request.send().await.expect("GET")
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .post(self.central.url(path))
            .header(CONTENT_TYPE, FORM)
            .body(encode(form));
        if let Some(session) = &self.session {
            request = request.header(COOKIE, format!("aero_console={session}"));
        }
        request.send().await.expect("POST")
    }

    /// Signs in through the login form; returns the session cookie's full `Set-Cookie` line.
    async fn sign_in(&mut self, username: &str, password: &str) -> String {
        let form = self
            .client
            .get(self.central.url("/console/login"))
            .send()
            .await
            .expect("login form");
        assert_eq!(form.status(), 200);
        let nonce_cookie = set_cookie(&form, "aero_console_login").expect("login csrf cookie");
        let nonce = cookie_value(&nonce_cookie);
        let page = form.text().await.expect("form");
        assert!(
            page.contains(&format!("value=\"{nonce}\"")),
            "the form carries the nonce"
        );
        let answer = self
            .client
            .post(self.central.url("/console/login"))
            .header(COOKIE, format!("aero_console_login={nonce}"))
            .header(CONTENT_TYPE, FORM)
            .body(encode(&[
                ("username", username),
                ("password", password),
                ("csrf", &nonce),
            ]))
            .send()
            .await
            .expect("sign in");
        assert_eq!(answer.status(), 303, "signed in and sent on");
        assert_eq!(answer.headers()[LOCATION], "/console");
        let line = set_cookie(&answer, "aero_console").expect("session cookie");
        self.session = Some(cookie_value(&line));
        line
    }

    /// The CSRF token the page's forms carry.
    async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await.text().await.expect("page");
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).expect("a form with a csrf field") + marker.len();
        page[start..start + 64].to_string()
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form body as a browser encodes it.
fn encode(fields: &[(&str, &str)]) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(line: &str) -> String {
    let pair = line.split(';').next().expect("pair");
    pair.split_once('=').expect("name=value").1.to_string()
}

async fn sites(central: &TestCentral, token: &str) -> Vec<Value> {
    central.get_json(token, "/v1/sites", 200).await["sites"]
        .as_array()
        .expect("sites")
        .clone()
}

#[tokio::test]
async fn signing_in_sets_an_httponly_samesite_cookie_and_signing_out_clears_it() {
    let central = TestCentral::start().await;
    let mut browser = Browser::new(&central);
    assert_eq!(
        browser.get("/console").await.headers()[LOCATION],
        "/console/login"
    );
    let line = browser.sign_in(OWNER, OWNER_PASSWORD).await;
    assert!(line.contains("HttpOnly"), "{line}");
    assert!(line.contains("SameSite=Strict"), "{line}");
    assert!(line.contains("Path=/console"), "{line}");
    assert!(!line.contains("Secure"), "plain HTTP on loopback: {line}");

    let page = browser.get("/console").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()[CACHE_CONTROL], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Chain overview"));
    assert!(!html.contains("<script>"), "no inline script");

    let asset = browser.get("/console/assets/htmx.min.js").await;
    assert_eq!(asset.status(), 200);
    assert!(
        asset.headers()[CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age")
    );

    // A wrong password is refused with the form again, and no session.
    let mut stranger = Browser::new(&central);
    let form = stranger
        .client
        .get(central.url("/console/login"))
        .send()
        .await
        .unwrap();
    let nonce = cookie_value(&set_cookie(&form, "aero_console_login").unwrap());
    let refused = stranger
        .client
        .post(central.url("/console/login"))
        .header(COOKIE, format!("aero_console_login={nonce}"))
        .header(CONTENT_TYPE, FORM)
        .body(encode(&[
            ("username", OWNER),
            ("password", "wrong"),
            ("csrf", &nonce),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(set_cookie(&refused, "aero_console").is_none());
    assert!(refused.text().await.unwrap().contains("password is wrong"));
    // A login form posted without its double-submit cookie (cross-site) is refused.
    let forged = stranger
        .client
        .post(central.url("/console/login"))
        .header(CONTENT_TYPE, FORM)
        .body(encode(&[
            ("username", OWNER),
            ("password", OWNER_PASSWORD),
            ("csrf", &nonce),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    stranger.session = None;

    let csrf = browser.csrf("/console").await;
    let out = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    let cleared = set_cookie(&out, "aero_console").expect("cleared cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn a_form_without_the_right_csrf_token_is_refused_and_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let venue = [
        ("name", "Forged Venue"),
        ("timezone", "UTC"),
        ("allowed_networks", ""),
    ];

    let missing = browser.post("/console/venues", &venue).await;
    assert_eq!(missing.status(), 403);
    let mut wrong = venue.to_vec();
    let bogus = "0".repeat(64);
    wrong.push(("csrf", &bogus));
    assert_eq!(browser.post("/console/venues", &wrong).await.status(), 403);
    // Another session's token does not fit this one.
    let mut other = Browser::new(&central);
    other.sign_in(OWNER, OWNER_PASSWORD).await;
    let theirs = other.csrf("/console").await;
    let mut crossed = venue.to_vec();
    crossed.push(("csrf", &theirs));
    if other.session != browser.session {
        assert_eq!(
            browser.post("/console/venues", &crossed).await.status(),
            403
        );
    }
    assert!(
        sites(&central, &owner).await.is_empty(),
        "no venue was created"
    );

    let site = central.create_site(&owner, "Real Venue").await;
    let (device, _) = central.create_device(&owner, site, "kiosk").await;
    let revoke = format!("/console/devices/{device}/revoke");
    let site_text = site.to_string();
    assert_eq!(
        browser
            .post(&revoke, &[("site_id", &site_text)])
            .await
            .status(),
        403
    );
    let devices = central
        .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;
    assert!(
        devices["devices"][0]["revoked_at"].is_null(),
        "the key still works"
    );

    // With its token, the same form does what it says.
    let csrf = browser.csrf("/console").await;
    let mut good = venue.to_vec();
    good.push(("csrf", &csrf));
    let created = browser.post("/console/venues", &good).await;
    assert_eq!(created.status(), 303);
    let revoked = browser
        .post(&revoke, &[("site_id", &site_text), ("csrf", &csrf)])
        .await;
    assert_eq!(revoked.status(), 303);
    let devices = central
        .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;
    assert!(!devices["devices"][0]["revoked_at"].is_null());
}

#[tokio::test]
async fn a_manager_sees_only_their_venues() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let mine = central.create_site(&owner, "Managed Venue").await;
    let other = central.create_site(&owner, "Someone Else's Venue").await;
    create_user(
        &central.settings(),
        "manager",
        "a long manager password",
        Role::Manager,
        vec![mine],
    )
    .await;

    let mut browser = Browser::new(&central);
    browser.sign_in("manager", "a long manager password").await;
    let table = browser
        .get("/console/overview/table")
        .await
        .text()
        .await
        .unwrap();
    assert!(table.contains("Managed Venue"), "{table}");
    assert!(!table.contains("Someone Else"), "{table}");
    let page = browser.get(&format!("/console/venues/{mine}")).await;
    assert_eq!(page.status(), 200);
    let refused = browser.get(&format!("/console/venues/{other}")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let html = refused.text().await.unwrap();
    assert!(html.contains("Not permitted"), "{html}");
    assert!(!html.contains("Someone Else"));
}

#[tokio::test]
async fn user_provided_text_is_escaped() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let name = "<script>alert('x')</script> & \"Co\"";
    let site = central
        .post_json(
            &owner,
            "/v1/sites",
            &json!({"name": name, "timezone": "UTC", "allowed_networks": ["127.0.0.0/8"]}),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    central
        .post_json(
            &owner,
            &format!("/v1/sites/{site}/devices"),
            &json!({"name": "<img src=x onerror=alert(1)>", "kind": "kiosk"}),
            201,
        )
        .await;
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    for path in ["/console".to_string(), format!("/console/venues/{site}")] {
        let html = browser.get(&path).await.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(html.contains("&lt;script&gt;alert"), "{path}");
    }
}

#[tokio::test]
async fn issuing_a_key_shows_it_once_and_it_works() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Key Venue").await;
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let path = format!("/console/venues/{site}");
    let csrf = browser.csrf(&path).await;
    let answer = browser
        .post(
            &format!("{path}/devices"),
            &[
                ("csrf", &csrf),
                ("name", "Front kiosk"),
                ("kind", "kiosk"),
                ("allowed_networks", ""),
            ],
        )
        .await;
    assert_eq!(answer.status(), 201);
    let html = answer.text().await.unwrap();
    let marker = "id=\"secret-value\" type=\"text\" readonly value=\"";
    let start = html.find(marker).expect("the key is shown") + marker.len();
    let key = &html[start..start + html[start..].find('"').unwrap()];
    let listed = central
        .get_json(&owner, &format!("/v1/sites/{site}/devices"), 200)
        .await;
    assert_eq!(listed["devices"][0]["name"], "Front kiosk");
    // Shown once: the page read again does not have it.
    let again = browser.get(&path).await.text().await.unwrap();
    assert!(!again.contains(key));
    assert!(again.contains("Front kiosk"));
}

#[tokio::test]
async fn the_chain_status_follows_the_edge_hint_socket() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Live Venue").await;
    let status = |token: String| {
        let central = &central;
        async move {
            let body = central.get_json(&token, "/v1/sites/status", 200).await;
            body["sites"][0].clone()
        }
    };
    let before = status(owner.clone()).await;
    assert_eq!(before["online"], false);
    assert!(before["offline_since"].is_null(), "never connected");

    let token = central.enrollment_token(&owner, site).await;
    let mut edge = TestEdge::start(&central, &token).await;
    wait_until("the venue online", Duration::from_secs(10), || {
        let owner = owner.clone();
        let status = &status;
        async move { status(owner).await["online"] == true }
    })
    .await;
    let online = status(owner.clone()).await;
    assert_eq!(online["edge_version"], env!("CARGO_PKG_VERSION"));

    edge.stop().await;
    wait_until("the venue offline", Duration::from_secs(5), || {
        let owner = owner.clone();
        let status = &status;
        async move { status(owner).await["online"] == false }
    })
    .await;
    assert!(!status(owner.clone()).await["offline_since"].is_null());

    // The manager of another venue does not see this one.
    let elsewhere = central.create_site(&owner, "Elsewhere").await;
    create_user(
        &central.settings(),
        "mgr",
        "a long manager password",
        Role::Manager,
        vec![elsewhere],
    )
    .await;
    let manager = central.login("mgr", "a long manager password").await;
    let seen = central.get_json(&manager, "/v1/sites/status", 200).await;
    let names: Vec<&str> = seen["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Elsewhere"]);
}

#[tokio::test]
async fn a_plug_override_is_set_in_the_venue_timezone_and_needs_the_csrf_token() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central
        .post_json(
            &owner,
            "/v1/sites",
            &json!({"name": "Plug Venue", "timezone": "Europe/London", "allowed_networks": ["127.0.0.0/8"]}),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plug = central
        .post_json(
            &owner,
            &format!("/v1/sites/{site}/plugs"),
            &json!({"name": "Laser room", "host": "127.0.0.1", "port": 9999, "child_id": null}),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let page = format!("/console/venues/{site}");
    assert!(
        browser
            .get(&page)
            .await
            .text()
            .await
            .unwrap()
            .contains("Laser room")
    );
    let until = (chrono::Utc::now() + chrono::Duration::hours(2))
        .with_timezone(&chrono_tz::Europe::London)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let path = format!("/console/plugs/{plug}/override");
    let fields = [
        ("site_id", site.as_str()),
        ("on", "true"),
        ("until", until.as_str()),
    ];
    assert_eq!(browser.post(&path, &fields).await.status(), 403);
    let overrides = format!("/v1/plugs/{plug}/overrides");
    assert_eq!(
        central.get_json(&owner, &overrides, 200).await["overrides"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let csrf = browser.csrf(&page).await;
    let mut signed = fields.to_vec();
    signed.push(("csrf", &csrf));
    let set = browser.post(&path, &signed).await;
    assert_eq!(set.status(), 303);
    let listed = central.get_json(&owner, &overrides, 200).await;
    assert_eq!(listed["overrides"][0]["state"], "on");
    let stored: chrono::DateTime<chrono::Utc> = listed["overrides"][0]["until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let local = stored
        .with_timezone(&chrono_tz::Europe::London)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert_eq!(local, until);

    // A time that is not one changes nothing.
    let mut bad = signed.clone();
    bad[2] = ("until", "soon");
    assert_eq!(browser.post(&path, &bad).await.status(), 422);
    assert_eq!(
        central.get_json(&owner, &overrides, 200).await["overrides"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn hq_asks_a_venue_to_retry_a_dead_letter_from_its_page() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Dead Letter Venue").await;
    // The venue pushed a customer without a last name: refused for good, a dead letter.
    let customer = aero_shared::wire::CustomerRecord {
        id: Uuid::now_v7(),
        first_name: "Ada".into(),
        last_name: String::new(),
        birth_date: chrono::NaiveDate::from_ymd_opt(1990, 1, 2).unwrap(),
        phone: None,
        email: None,
        guardian_id: None,
        home_site_id: site,
        created_at: chrono::Utc::now(),
    };
    let op = aero_shared::wire::PushOp {
        seq: 1,
        op_id: Uuid::now_v7(),
        entity: aero_shared::wire::Entity::Customer,
        entity_id: customer.id,
        kind: aero_shared::wire::OpKind::Upsert,
        data: serde_json::value::to_raw_value(&customer).unwrap(),
    };
    let store = aero_central::open_store(&central.settings()).await.unwrap();
    let pushed = store
        .push(site, std::slice::from_ref(&op), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(pushed.rejected.len(), 1);

    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let page = format!("/console/venues/{site}");
    let action = format!("/console/venues/{site}/dead-letters/{}", op.op_id);
    let html = browser.get(&page).await.text().await.unwrap();
    assert!(html.contains(&action), "the dead letter has its actions");
    assert!(html.contains("Retry dead letter 1"));

    let listed = format!("/v1/sites/{site}/dead-letters");
    let request_of = |list: &Value| list["dead_letters"][0]["request"].clone();
    assert_eq!(
        browser.post(&action, &[("action", "retry")]).await.status(),
        403
    );
    assert_eq!(
        request_of(&central.get_json(&owner, &listed, 200).await),
        Value::Null,
        "refused without the CSRF token: nothing asked"
    );
    let csrf = browser.csrf(&page).await;
    assert_eq!(
        browser
            .post(&action, &[("action", "resend"), ("csrf", &csrf)])
            .await
            .status(),
        422
    );
    let asked = browser
        .post(&action, &[("action", "retry"), ("csrf", &csrf)])
        .await;
    assert_eq!(asked.status(), 303);
    assert_eq!(
        asked.headers()[LOCATION],
        format!("/console/venues/{site}?done=retry-requested").as_str()
    );
    let request = request_of(&central.get_json(&owner, &listed, 200).await);
    assert_eq!(
        (request["action"].as_str(), request["requested_by"].as_str()),
        (Some("retry"), Some(OWNER))
    );
    let html = browser
        .get(&format!("{page}?done=retry-requested"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("The venue was asked to retry it"));
    assert!(html.contains(&format!("retry by {OWNER}")));
}

#[tokio::test]
async fn the_venue_page_shows_its_leaderboards_by_period() {
    let venue = aero_tests::venue::Venue::open().await;
    let ada = venue.customer("Ada", "+447700900611", true).await;
    let bo = venue.customer("Bo", "+447700900612", true).await;
    for (customer, score) in [(ada, 1200), (bo, 1500), (ada, 900)] {
        let body = json!({ "game_id": venue.game_id, "customer_id": customer, "score": score });
        aero_tests::expect_status(venue.post(&venue.game, "/v1/scores", body).await, 201).await;
    }
    let owner = venue.central.owner_token().await;
    let board = format!(
        "/v1/leaderboards/{}?site_id={}&period=all",
        venue.game_id, venue.site
    );
    aero_tests::wait_until(
        "the scores to reach central",
        Duration::from_secs(10),
        || async {
            venue.central.get_json(&owner, &board, 200).await["entries"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        },
    )
    .await;

    let mut browser = Browser::new(&venue.central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let page = format!("/console/venues/{}", venue.site);
    let html = browser.get(&page).await.text().await.unwrap();
    assert!(html.contains("Leaderboards"), "{html}");
    let rows = |html: &str| {
        html.split("<tr>")
            .filter_map(|row| {
                let name = ["Ada", "Bo"]
                    .into_iter()
                    .find(|n| row.contains(&format!(">{n}<")))?;
                let score = ["1500", "1200", "900"]
                    .into_iter()
                    .find(|s| row.contains(&format!(">{s}<")))?;
                Some((name, score))
            })
            .collect::<Vec<_>>()
    };
    // Today by default: each player's best, best first.
    assert_eq!(rows(&html), [("Bo", "1500"), ("Ada", "1200")], "{html}");
    assert!(html.contains(r#"aria-current="true">Today<"#), "{html}");
    let all = browser
        .get(&format!("{page}?board=all"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&all), [("Bo", "1500"), ("Ada", "1200")]);
    assert!(all.contains(r#"aria-current="true">All time<"#), "{all}");
    // An unknown period is refused, not guessed.
    assert_eq!(
        browser.get(&format!("{page}?board=year")).await.status(),
        400
    );
}

#[tokio::test]
async fn the_catalogue_lists_products_and_games_and_adds_and_retires_a_product() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    central
        .post_json(
            &owner,
            "/v1/games",
            &json!({"name": "Laser Maze", "score_order": "lowest_wins"}),
            201,
        )
        .await;
    let products = || async {
        central.get_json(&owner, "/v1/products", 200).await["products"]
            .as_array()
            .expect("products")
            .clone()
    };
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let page = "/console/catalogue";
    let html = browser.get(page).await.text().await.unwrap();
    assert!(html.contains("No products yet."), "{html}");
    assert!(html.contains("Laser Maze") && html.contains("Lowest score wins"));

    let jump = [
        ("sku", "JUMP-90"),
        ("name", "Jump 90"),
        ("kind", "pass"),
        ("price", "14.50"),
        ("duration_minutes", "90"),
        ("grant_account", ""),
        ("grant_amount", ""),
        ("grant_per", ""),
    ];
    let add = "/console/catalogue/products";
    assert_eq!(browser.post(add, &jump).await.status(), 403);
    assert!(
        products().await.is_empty(),
        "refused without the CSRF token"
    );

    let csrf = browser.csrf(page).await;
    let mut signed = jump.to_vec();
    signed.push(("csrf", &csrf));
    let added = browser.post(add, &signed).await;
    assert_eq!(added.status(), 303);
    assert_eq!(
        added.headers()[LOCATION],
        "/console/catalogue?done=product-added"
    );
    let html = browser
        .get("/console/catalogue?done=product-added")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("The product was added"), "{html}");
    assert!(html.contains("data-sku=\"JUMP-90\" data-active=\"true\""));
    assert!(html.contains("Jump 90") && html.contains("14.50"));
    assert!(html.contains("1 h 30 min of jumping"));

    // What the API refuses comes back with its reason, the form filled as it was.
    let membership = [
        ("sku", "MEMBER-M"),
        ("name", "Monthly membership"),
        ("kind", "membership"),
        ("price", "49"),
        ("duration_minutes", ""),
        ("grant_account", "visits"),
        ("grant_amount", "8"),
        ("grant_per", "month"),
        ("csrf", &csrf),
    ];
    let refused = browser.post(add, &membership).await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("duration_minutes"), "{html}");
    assert!(html.contains("value=\"MEMBER-M\""), "the form is refilled");
    assert_eq!(products().await.len(), 1);

    let id = products().await[0]["id"].as_str().unwrap().to_string();
    let retire = format!("/console/catalogue/products/{id}/retire");
    assert_eq!(browser.post(&retire, &[]).await.status(), 403);
    assert_eq!(products().await[0]["active"], true, "still sold");
    let retired = browser.post(&retire, &[("csrf", &csrf)]).await;
    assert_eq!(retired.status(), 303);
    assert_eq!(products().await[0]["active"], false);
    let html = browser.get(page).await.text().await.unwrap();
    assert!(html.contains("data-sku=\"JUMP-90\" data-active=\"false\""));
    assert!(html.contains("Retired") && html.contains("No longer sold"));

    let game = browser
        .post(
            "/console/catalogue/games",
            &[
                ("name", "Dodge Dash"),
                ("score_order", "highest_wins"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(game.status(), 303);
    let games = central.get_json(&owner, "/v1/games", 200).await;
    assert!(
        games["games"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "Dodge Dash")
    );

    // A venue manager reads the catalogue; the API refuses them a new product, and says so.
    let venue = central.create_site(&owner, "Catalogue Venue").await;
    create_user(
        &central.settings(),
        "manager",
        "a long manager password",
        Role::Manager,
        vec![venue],
    )
    .await;
    let mut manager = Browser::new(&central);
    manager.sign_in("manager", "a long manager password").await;
    let theirs = manager.csrf(page).await;
    let mut again = jump.to_vec();
    again[0] = ("sku", "JUMP-120");
    again.push(("csrf", &theirs));
    let forbidden = manager.post(add, &again).await;
    assert_eq!(forbidden.status(), 403);
    let html = forbidden.text().await.unwrap();
    assert!(html.contains("role=\"alert\""), "{html}");
    assert!(html.contains("Jump 90"), "the list is still shown");
    assert_eq!(products().await.len(), 1);
}

#[tokio::test]
async fn the_audit_log_filters_by_venue_user_and_action() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let north = central.create_site(&owner, "North Venue").await;
    let south = central.create_site(&owner, "South Venue").await;
    central.create_device(&owner, north, "kiosk").await;
    let rows =
        |html: &str, action: &str| html.matches(&format!("data-action=\"{action}\"")).count();

    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let all = browser.get("/console/audit").await;
    assert_eq!(all.status(), 200);
    let html = all.text().await.unwrap();
    assert_eq!(
        (rows(&html, "site.create"), rows(&html, "device.create")),
        (2, 1)
    );

    let html = browser
        .get("/console/audit?site_id=&actor=&action=device.create")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        (rows(&html, "site.create"), rows(&html, "device.create")),
        (0, 1)
    );
    let html = browser
        .get(&format!("/console/audit?site_id={south}&actor=&action="))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        (rows(&html, "site.create"), rows(&html, "device.create")),
        (1, 0)
    );
    let by_user = format!(
        "/console/audit?site_id={north}&actor={}&action=site.create",
        OWNER.to_uppercase()
    );
    let html = browser.get(&by_user).await.text().await.unwrap();
    assert_eq!(
        (rows(&html, "site.create"), rows(&html, "device.create")),
        (1, 0)
    );
    let html = browser
        .get("/console/audit?actor=nobody")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No entries match."), "{html}");

    // A manager reads their own venue's log and nothing of another's.
    create_user(
        &central.settings(),
        "manager",
        "a long manager password",
        Role::Manager,
        vec![north],
    )
    .await;
    let mut manager = Browser::new(&central);
    manager.sign_in("manager", "a long manager password").await;
    let own = manager.get("/console/audit").await;
    assert_eq!(own.status(), 200);
    let html = own.text().await.unwrap();
    assert!(html.contains("showing North Venue"), "{html}");
    assert_eq!(
        (rows(&html, "site.create"), rows(&html, "device.create")),
        (1, 1)
    );
    let other = manager
        .get(&format!("/console/audit?site_id={south}"))
        .await;
    assert_eq!(other.status(), 403);
    let html = other.text().await.unwrap();
    assert_eq!(rows(&html, "site.create"), 0);
    assert!(!html.contains("South Venue"), "{html}");
}

#[tokio::test]
async fn the_catalogue_publishes_waiver_text_versions_and_shows_each_in_full() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let page = "/console/catalogue";
    let html = browser.get(page).await.text().await.unwrap();
    assert!(html.contains("No waiver text is published yet"), "{html}");
    let action = "/console/catalogue/waiver-texts";
    let first = [
        ("title", "Jump safely"),
        ("body", "I accept the risks.\nNo shoes."),
    ];
    assert_eq!(browser.post(action, &first).await.status(), 403);
    let texts = || async { central.get_json(&owner, "/v1/waiver-texts", 200).await };
    assert_eq!(
        texts().await["waiver_texts"],
        json!([]),
        "no CSRF: nothing published"
    );

    let csrf = browser.csrf(page).await;
    let published = browser
        .post(action, &[first[0], first[1], ("csrf", &csrf)])
        .await;
    assert_eq!(published.status(), 303);
    assert_eq!(
        published.headers()[LOCATION],
        "/console/catalogue?done=waiver-published"
    );
    let second = browser
        .post(
            action,
            &[
                ("title", "Jump safely <2>"),
                ("body", "I accept."),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(second.status(), 303);
    let listed = texts().await;
    let versions: Vec<i64> = listed["waiver_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(
        listed["waiver_texts"][1]["body"],
        "I accept the risks.\nNo shoes."
    );

    let html = browser.get(page).await.text().await.unwrap();
    assert!(
        html.contains("Venues show version <strong>2</strong>"),
        "{html}"
    );
    assert!(html.contains("Jump safely &lt;2&gt;"), "titles are escaped");
    assert!(
        html.contains("I accept the risks.\nNo shoes."),
        "the whole wording"
    );
    assert!(html.find("data-version=\"2\"") < html.find("data-version=\"1\""));

    // A blank title is the API's 422, shown with the form refilled; nothing is published.
    let refused = browser
        .post(
            action,
            &[
                ("title", " "),
                ("body", "Kept for the retry"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("title"), "{html}");
    assert!(html.contains(">Kept for the retry</textarea>"), "{html}");
    assert_eq!(texts().await["waiver_texts"].as_array().unwrap().len(), 2);
}

/// The status of `POST /v1/auth/login` as `username`.
async fn login_status(central: &TestCentral, username: &str, password: &str) -> u16 {
    central
        .request(reqwest::Method::POST, "/v1/auth/login")
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_venue_page_adds_staff_and_disables_and_enables_them() {
    let central =
        TestCentral::start_with(|settings| settings.limits.login_per_minute = 1_000).await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Staffed Venue").await;
    let other = central.create_site(&owner, "Other Venue").await;
    let mut browser = Browser::new(&central);
    browser.sign_in(OWNER, OWNER_PASSWORD).await;
    let path = format!("/console/venues/{site}");
    let csrf = browser.csrf(&path).await;
    let add = |username: &'static str, role: &'static str, password: &'static str| {
        let (browser, csrf, path) = (&browser, csrf.clone(), path.clone());
        async move {
            browser
                .post(
                    &format!("{path}/staff"),
                    &[
                        ("csrf", &csrf),
                        ("username", username),
                        ("role", role),
                        ("password", password),
                    ],
                )
                .await
        }
    };
    let users = || async {
        central.get_json(&owner, "/v1/users", 200).await["users"]
            .as_array()
            .expect("users")
            .clone()
    };

    // Refused: a short password (the API's rule) and a chain-wide role; nothing is created.
    let short = add("jo-desk", "staff", "too short").await;
    assert_eq!(short.status(), 422);
    let html = short.text().await.unwrap();
    assert!(html.contains("must be 12 to 128 characters"), "{html}");
    let owner_role = add("jo-desk", "owner", "a long enough password").await;
    assert_eq!(owner_role.status(), 422);
    assert!(
        owner_role
            .text()
            .await
            .unwrap()
            .contains("Choose staff or manager.")
    );
    assert_eq!(users().await.len(), 1, "only the owner");

    let added = add("jo-desk", "staff", "a long enough password").await;
    assert_eq!(added.status(), 201);
    let html = added.text().await.unwrap();
    assert!(
        html.contains("Added jo-desk as staff of this venue"),
        "{html}"
    );
    assert!(html.contains("aria-label=\"Disable jo-desk\""), "{html}");
    let jo = users()
        .await
        .into_iter()
        .find(|u| u["username"] == "jo-desk")
        .expect("jo-desk listed");
    assert_eq!(jo["role"], "staff");
    assert_eq!(jo["site_ids"], json!([site]));
    assert_eq!(
        login_status(&central, "jo-desk", "a long enough password").await,
        200
    );
    let jo_id = jo["id"].as_str().unwrap().to_string();

    let access = |action: &'static str, on: Uuid| {
        let (browser, csrf, jo_id) = (&browser, csrf.clone(), jo_id.clone());
        async move {
            browser
                .post(
                    &format!("/console/users/{jo_id}/access"),
                    &[
                        ("csrf", &csrf),
                        ("site_id", &on.to_string()),
                        ("action", action),
                    ],
                )
                .await
        }
    };
    let disabled = access("disable", site).await;
    assert_eq!(disabled.status(), 303);
    assert_eq!(
        disabled.headers()[LOCATION],
        format!("/console/venues/{site}?done=staff-disabled").as_str()
    );
    assert_eq!(
        login_status(&central, "jo-desk", "a long enough password").await,
        401
    );
    let page = browser.get(&path).await.text().await.unwrap();
    assert!(page.contains("aria-label=\"Enable jo-desk\""), "{page}");

    let enabled = access("enable", site).await;
    assert_eq!(enabled.status(), 303);
    assert_eq!(
        login_status(&central, "jo-desk", "a long enough password").await,
        200
    );

    // Without the form's token nothing changes.
    let forged = browser
        .post(
            &format!("/console/users/{jo_id}/access"),
            &[
                ("csrf", "0"),
                ("site_id", &site.to_string()),
                ("action", "disable"),
            ],
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        login_status(&central, "jo-desk", "a long enough password").await,
        200
    );

    // A manager of another venue can neither add staff here nor disable this venue's staff.
    create_user(
        &central.settings(),
        "other-manager",
        "a long manager password",
        Role::Manager,
        vec![other],
    )
    .await;
    let mut manager = Browser::new(&central);
    manager
        .sign_in("other-manager", "a long manager password")
        .await;
    let manager_csrf = manager.csrf(&format!("/console/venues/{other}")).await;
    let refused = manager
        .post(
            &format!("/console/users/{jo_id}/access"),
            &[
                ("csrf", &manager_csrf),
                ("site_id", &other.to_string()),
                ("action", "disable"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 403);
    let refused = manager
        .post(
            &format!("{path}/staff"),
            &[
                ("csrf", &manager_csrf),
                ("username", "sneaky"),
                ("role", "staff"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        login_status(&central, "jo-desk", "a long enough password").await,
        200
    );
    assert!(users().await.iter().all(|u| u["username"] != "sneaky"));
}

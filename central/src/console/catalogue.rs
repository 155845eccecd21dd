//! The catalogue: the chain's products with their prices and what each grants, the games
//! venues score (every page of `GET /v1/products` and `GET /v1/games`) and the waiver texts
//! (their own module); the forms that add a product or a game, and retire a product.

use super::api::{Api, ApiFailure, signed_out};
use super::layout::{self, Section, money};
use super::session::{CSRF_FIELD, Session};
use super::waiver_texts::NewWaiverText;
use super::{Console, csrf_refused};
use aero_shared::wire::{Account, GameRecord, Grant, ProductKind, ProductRecord, ScoreOrder};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
struct ProductPage {
    products: Vec<ProductRecord>,
    next_after: Option<String>,
}

#[derive(Deserialize)]
struct GamePage {
    games: Vec<GameRecord>,
    next_after: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    done: Option<String>,
}

/// What a form's answer adds to the page: its outcome, and the form refilled after an error.
#[derive(Default)]
pub(super) struct Extras {
    pub(super) status: Option<StatusCode>,
    pub(super) error: Option<String>,
    pub(super) done: Option<&'static str>,
    pub(super) product: NewProduct,
    pub(super) game: NewGame,
    pub(super) waiver: NewWaiverText,
}

/// `GET /console/catalogue`.
pub async fn page(session: Session, api: Api, Query(query): Query<PageQuery>) -> Response {
    let done = match query.done.as_deref() {
        Some("product-added") => {
            Some("The product was added; venues can sell it once their edges pull the change.")
        }
        Some("product-retired") => Some(
            "The product was retired; venues stop selling it once their edges pull the change.",
        ),
        Some("game-added") => Some("The game was added."),
        Some("waiver-published") => Some(
            "The waiver text was published; venues show it to signers once their edges pull it.",
        ),
        _ => None,
    };
    render(
        &session,
        &api,
        Extras {
            done,
            ..Extras::default()
        },
    )
    .await
}

pub(super) async fn render(session: &Session, api: &Api, extras: Extras) -> Response {
    let token = session.token.as_str();
    let products = api
        .every(token, "/v1/products", |p: ProductPage| {
            (p.products, p.next_after)
        })
        .await;
    let games = api
        .every(token, "/v1/games", |p: GamePage| (p.games, p.next_after))
        .await;
    if matches!(products, Err(ApiFailure::SignedOut)) || matches!(games, Err(ApiFailure::SignedOut))
    {
        return signed_out();
    }
    let Ok(waiver_texts) =
        super::waiver_texts::section(session, api, chrono::Utc::now(), &extras.waiver).await
    else {
        return signed_out();
    };
    let content = html! {
        h1 { "Catalogue" }
        (layout::notice(extras.error.as_deref(), extras.done))
        p.hint { "Products and games are the same at every venue: a change reaches a venue when its edge next pulls." }
        section aria-labelledby="products-heading" {
            h2 id="products-heading" { "Products and prices" }
            @match &products {
                Ok(products) => { (product_table(session, products)) }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
            h3 id="add-product" { "Add a product" }
            (product_form(session, &extras.product))
        }
        section aria-labelledby="games-heading" {
            h2 id="games-heading" { "Games" }
            @match &games {
                Ok(games) => { (game_table(games)) }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
            h3 id="add-game" { "Add a game" }
            form.stack method="post" action="/console/catalogue/games" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="game-name" { "Name" }
                input id="game-name" name="name" type="text" required maxlength="100" value=(extras.game.name);
                label for="game-order" { "Score order" }
                select id="game-order" name="score_order" {
                    @for order in [ScoreOrder::HighestWins, ScoreOrder::LowestWins] {
                        option value=(order_value(order)) selected[extras.game.score_order == order_value(order)] { (order_words(order)) }
                    }
                }
                button type="submit" { "Add game" }
            }
        }
        section aria-labelledby="waiver-texts-heading" {
            h2 id="waiver-texts-heading" { "Waiver texts" }
            (waiver_texts)
        }
    };
    layout::respond(
        extras.status.unwrap_or(StatusCode::OK),
        layout::page("Catalogue", Section::Catalogue, Some(session), content),
    )
}

fn product_table(session: &Session, products: &[ProductRecord]) -> Markup {
    html! {
        @if products.is_empty() {
            p { "No products yet." }
        } @else {
            div.scroll { table.products {
                caption.sr-only { "Products, their prices and what each grants" }
                thead { tr {
                    th scope="col" { "SKU" } th scope="col" { "Product" } th scope="col" { "Kind" }
                    th scope="col" { "Price" } th scope="col" { "Grants" } th scope="col" { "Status" }
                    th scope="col" { "Action" }
                } }
                tbody {
                    @for p in products {
                        tr data-sku=(p.sku) data-active=(p.active) {
                            td { (p.sku) }
                            th scope="row" { (p.name) }
                            td { (kind_words(p.kind)) }
                            td { (money(p.price_cents)) }
                            td { (grants(p)) }
                            td {
                                @if p.active {
                                    span.badge.ok { span aria-hidden="true" { "● " } "Active" }
                                } @else {
                                    span.badge.off { span aria-hidden="true" { "✕ " } "Retired" }
                                }
                            }
                            td {
                                @if p.active {
                                    form.inline method="post" action=(format!("/console/catalogue/products/{}/retire", p.id)) data-confirm=(format!("Retire {}? Venues stop selling it.", p.name)) {
                                        input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                        button.danger type="submit" aria-label=(format!("Retire {}", p.name)) { "Retire" }
                                    }
                                } @else {
                                    "No longer sold"
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn product_form(session: &Session, product: &NewProduct) -> Markup {
    let kinds = [
        ProductKind::Pass,
        ProductKind::Addon,
        ProductKind::Credits,
        ProductKind::Membership,
    ];
    html! {
        form.stack method="post" action="/console/catalogue/products" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
            label for="product-sku" { "SKU" }
            input id="product-sku" name="sku" type="text" required maxlength="40" value=(product.sku);
            label for="product-name" { "Name" }
            input id="product-name" name="name" type="text" required maxlength="100" value=(product.name);
            label for="product-kind" { "Kind" }
            select id="product-kind" name="kind" {
                @for kind in kinds {
                    option value=(kind.as_str()) selected[product.kind == kind.as_str()] { (kind_words(kind)) }
                }
            }
            label for="product-price" { "Price (e.g. 12.50)" }
            input id="product-price" name="price" type="text" inputmode="decimal" required value=(product.price);
            label for="product-duration" { "Jump session in minutes (passes and memberships; optional otherwise)" }
            input id="product-duration" name="duration_minutes" type="number" min="1" step="1" value=(product.duration_minutes);
            fieldset {
                legend { "What one unit adds (credit packs and memberships only)" }
                label for="product-account" { "Balance" }
                select id="product-account" name="grant_account" {
                    option value="" selected[product.grant_account.is_empty()] { "Nothing" }
                    @for account in Account::ALL {
                        option value=(account.as_str()) selected[product.grant_account == account.as_str()] { (account_words(account)) }
                    }
                }
                label for="product-amount" { "Amount (visits, credits, or cents of stored value)" }
                input id="product-amount" name="grant_amount" type="number" min="1" step="1" value=(product.grant_amount);
                label for="product-per" { "A membership's visits lapse after" }
                select id="product-per" name="grant_per" {
                    option value="" selected[product.grant_per.is_empty()] { "Never" }
                    @for (value, words) in [("day", "A day"), ("week", "A week"), ("month", "A month")] {
                        option value=(value) selected[product.grant_per == value] { (words) }
                    }
                }
            }
            button type="submit" { "Add product" }
        }
    }
}

fn game_table(games: &[GameRecord]) -> Markup {
    html! {
        @if games.is_empty() {
            p { "No games yet." }
        } @else {
            div.scroll { table.games {
                caption.sr-only { "Games and how their scores rank" }
                thead { tr { th scope="col" { "Game" } th scope="col" { "Score order" } th scope="col" { "Added" } } }
                tbody {
                    @for g in games {
                        tr {
                            th scope="row" { (g.name) }
                            td { (order_words(g.score_order)) }
                            td { (g.created_at.format("%Y-%m-%d")) }
                        }
                    }
                }
            } }
        }
    }
}

fn kind_words(kind: ProductKind) -> &'static str {
    match kind {
        ProductKind::Pass => "Jump pass",
        ProductKind::Addon => "Add-on",
        ProductKind::Credits => "Credit pack",
        ProductKind::Membership => "Membership",
    }
}

fn account_words(account: Account) -> &'static str {
    match account {
        Account::StoredValue => "Stored value",
        Account::ArcadeCredits => "Arcade credits",
        Account::Visits => "Membership visits",
    }
}

fn order_value(order: ScoreOrder) -> &'static str {
    match order {
        ScoreOrder::HighestWins => "highest_wins",
        ScoreOrder::LowestWins => "lowest_wins",
    }
}

fn order_words(order: ScoreOrder) -> &'static str {
    match order {
        ScoreOrder::HighestWins => "Highest score wins",
        ScoreOrder::LowestWins => "Lowest score wins (e.g. a time)",
    }
}

/// What selling one unit gives the buyer, in words: the jump session, and what it adds to
/// their balances.
fn grants(product: &ProductRecord) -> String {
    let session = product.duration_minutes.map(|minutes| match product.kind {
        ProductKind::Membership => format!("{} of jumping per visit", span(minutes)),
        _ => format!("{} of jumping", span(minutes)),
    });
    let balance = product.grant.map(grant_words);
    let parts: Vec<String> = [session, balance].into_iter().flatten().collect();
    if parts.is_empty() {
        "Nothing to track".into()
    } else {
        parts.join("; ")
    }
}

fn grant_words(grant: Grant) -> String {
    let amount = match grant.account {
        Account::StoredValue => format!("{} stored value", money(grant.amount)),
        Account::ArcadeCredits => format!("{} arcade credits", grant.amount),
        Account::Visits => format!("{} visits", grant.amount),
    };
    match grant.per {
        Some(per) => format!("{amount} per {}", per.as_str()),
        None => amount,
    }
}

/// Minutes the way people say them: `45 min`, `1 h 30 min`, `1 d`.
fn span(minutes: i32) -> String {
    let parts = [
        (minutes / 1440, "d"),
        (minutes % 1440 / 60, "h"),
        (minutes % 60, "min"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An amount of money as typed (`12`, `12.5`, `12.50`), in cents.
fn cents(text: &str) -> Option<i64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction)
}

/// The add-a-product form's fields as typed, kept to fill the form again after an error.
#[derive(Deserialize, Default)]
pub struct NewProduct {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sku: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    duration_minutes: String,
    #[serde(default)]
    grant_account: String,
    #[serde(default)]
    grant_amount: String,
    #[serde(default)]
    grant_per: String,
}

impl NewProduct {
    /// The body of `POST /v1/products`, or what is wrong with the fields the API would not
    /// understand (it checks the rest).
    fn body(&self) -> Result<serde_json::Value, String> {
        let mut problems = Vec::new();
        let price = cents(&self.price);
        if price.is_none() {
            problems.push("Give the price as an amount like 12.50.");
        }
        let whole = |text: &str| -> Result<Option<i64>, ()> {
            match text.trim() {
                "" => Ok(None),
                text => text.parse().map(Some).map_err(|_| ()),
            }
        };
        let duration = whole(&self.duration_minutes).unwrap_or_else(|()| {
            problems.push("Give the jump session in whole minutes.");
            None
        });
        let amount = whole(&self.grant_amount).unwrap_or_else(|()| {
            problems.push("Give the amount it adds as a whole number.");
            None
        });
        let grant = match (self.grant_account.as_str(), amount) {
            ("", None) => None,
            ("", Some(_)) => {
                problems.push("Choose the balance the amount is added to.");
                None
            }
            (_, None) => {
                problems.push("Give the amount it adds to the balance.");
                None
            }
            (account, Some(amount)) => Some(serde_json::json!({
                "account": account,
                "amount": amount,
                "per": (!self.grant_per.is_empty()).then_some(self.grant_per.as_str()),
            })),
        };
        if !problems.is_empty() {
            return Err(problems.join(" "));
        }
        Ok(serde_json::json!({
            "sku": self.sku,
            "name": self.name,
            "kind": self.kind,
            "price_cents": price,
            "duration_minutes": duration,
            "grant": grant,
        }))
    }
}

/// `POST /console/catalogue/products`: `POST /v1/products`, then the catalogue.
pub async fn add_product(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Form(form): Form<NewProduct>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let answer = match form.body() {
        Ok(body) => {
            api.act(&session.token, Method::POST, "/v1/products", Some(&body))
                .await
        }
        Err(problem) => Err(ApiFailure::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: problem,
            errors: Vec::new(),
        }),
    };
    match answer {
        Ok(()) => Redirect::to("/console/catalogue?done=product-added").into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            let extras = Extras {
                status: Some(failure.status()),
                error: Some(failure.message()),
                product: form,
                ..Extras::default()
            };
            render(&session, &api, extras).await
        }
    }
}

#[derive(Deserialize)]
pub struct Retire {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/catalogue/products/{id}/retire`: `POST /v1/products/{id}/retire`.
pub async fn retire_product(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Path(id): Path<Uuid>,
    Form(form): Form<Retire>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let path = format!("/v1/products/{id}/retire");
    match api.act(&session.token, Method::POST, &path, None).await {
        Ok(()) => Redirect::to("/console/catalogue?done=product-retired").into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            let extras = Extras {
                status: Some(failure.status()),
                error: Some(failure.message()),
                ..Extras::default()
            };
            render(&session, &api, extras).await
        }
    }
}

/// The add-a-game form's fields, kept to fill the form again after an error.
#[derive(Deserialize, Default)]
pub struct NewGame {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    score_order: String,
}

/// `POST /console/catalogue/games`: `POST /v1/games`, then the catalogue.
pub async fn add_game(
    State(console): State<Console>,
    session: Session,
    api: Api,
    Form(form): Form<NewGame>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return csrf_refused();
    }
    let body = serde_json::json!({"name": form.name, "score_order": form.score_order});
    match api
        .act(&session.token, Method::POST, "/v1/games", Some(&body))
        .await
    {
        Ok(()) => Redirect::to("/console/catalogue?done=game-added").into_response(),
        Err(ApiFailure::SignedOut) => signed_out(),
        Err(failure) => {
            let extras = Extras {
                status: Some(failure.status()),
                error: Some(failure.message()),
                game: form,
                ..Extras::default()
            };
            render(&session, &api, extras).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::wire::Period;

    #[test]
    fn prices_are_read_as_typed_and_durations_said_naturally() {
        assert_eq!(cents("12.50"), Some(1250));
        assert_eq!(cents(" 12.5 "), Some(1250));
        assert_eq!(cents("7"), Some(700));
        assert_eq!(cents("7."), Some(700));
        assert_eq!(cents("0.05"), Some(5));
        for wrong in ["", "12.505", "-3", "1,50", ".5", "abc"] {
            assert_eq!(cents(wrong), None, "{wrong:?}");
        }
        assert_eq!(span(45), "45 min");
        assert_eq!(span(90), "1 h 30 min");
        assert_eq!(span(1440), "1 d");
    }

    #[test]
    fn a_membership_says_its_session_and_its_visits_per_period() {
        let monthly = ProductRecord {
            id: Uuid::now_v7(),
            sku: "MEMBER-M".into(),
            name: "Monthly".into(),
            kind: ProductKind::Membership,
            price_cents: 4900,
            duration_minutes: Some(90),
            grant: Some(Grant {
                account: Account::Visits,
                amount: 8,
                per: Some(Period::Month),
            }),
            active: true,
            created_at: chrono::Utc::now(),
        };
        assert_eq!(
            grants(&monthly),
            "1 h 30 min of jumping per visit; 8 visits per month"
        );
        let form = NewProduct {
            price: "49".into(),
            grant_account: "visits".into(),
            grant_amount: "8".into(),
            grant_per: "month".into(),
            ..NewProduct::default()
        };
        let body = form.body().expect("a body");
        assert_eq!(body["price_cents"], 4900);
        assert_eq!(body["grant"]["per"], "month");
        let wrong = NewProduct {
            price: "a lot".into(),
            grant_amount: "8".into(),
            ..NewProduct::default()
        };
        assert!(wrong.body().unwrap_err().contains("12.50"));
    }
}

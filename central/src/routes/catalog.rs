//! The chain-wide catalog: products with prices (retired, not deleted, when no longer sold),
//! and the games venues score.

use crate::state::{AppState, actor};
use crate::store::NameKey;
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::{Answer, answering};
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{Account, GameRecord, Grant, ProductKind, ProductRecord, ScoreOrder};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadCatalog, routes!(list_products)))
        .routes(guarded(Permission::ManageCatalog, routes!(create_product)))
        .routes(guarded(Permission::ManageCatalog, routes!(retire_product)))
        .routes(guarded(Permission::ReadCatalog, routes!(list_games)))
        .routes(guarded(Permission::ManageCatalog, routes!(create_game)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    sku: String,
    name: String,
    kind: ProductKind,
    price_cents: i64,
    duration_minutes: Option<i32>,
    /// What one unit adds to the buyer's balances; required for credit packs and memberships.
    /// A membership's `per` (day, week, month) makes its visits lapse one period after the sale.
    #[serde(default)]
    grant: Option<Grant>,
}

impl Validate for NewProduct {
    fn validate(&self, v: &mut Validator) {
        v.text("sku", &self.sku, 40);
        v.text("name", &self.name, 100);
        v.check(
            (0..=100_000_000).contains(&self.price_cents),
            "price_cents",
            "must be between 0 and 100000000",
        );
        match (self.kind, self.duration_minutes) {
            (ProductKind::Pass, None) => v.error("duration_minutes", "a pass needs a duration"),
            (_, Some(minutes)) if !(1..=24 * 60 * 366).contains(&minutes) => {
                v.error("duration_minutes", "must be between 1 and 527040")
            }
            _ => {}
        }
        match (self.kind, self.grant) {
            (ProductKind::Credits | ProductKind::Membership, None) => v.error(
                "grant",
                "credit packs and memberships say what they add: {\"account\",\"amount\"}",
            ),
            (ProductKind::Pass | ProductKind::Addon, Some(_)) => {
                v.error("grant", "only credit packs and memberships add to balances")
            }
            (ProductKind::Membership, Some(grant)) if grant.account != Account::Visits => {
                v.error("grant.account", "a membership adds visits")
            }
            (ProductKind::Credits, Some(grant)) if grant.per.is_some() => v.error(
                "grant.per",
                "only a membership's visits lapse; credits stay until spent",
            ),
            (ProductKind::Membership, _) if self.duration_minutes.is_none() => v.error(
                "duration_minutes",
                "a membership needs the duration of the jump session a visit gives",
            ),
            (_, Some(grant)) if !(1..=100_000_000).contains(&grant.amount) => {
                v.error("grant.amount", "must be between 1 and 100000000")
            }
            _ => {}
        }
    }
}

#[utoipa::path(post, path = "/v1/products", tag = "catalog", summary = "Create a product", request_body = NewProduct, responses((status = 201, description = "Created", body = ProductRecord)))]
async fn create_product(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewProduct>,
) -> Result<Answer, ApiError> {
    let product = ProductRecord {
        id: Uuid::now_v7(),
        sku: body.sku.trim().to_string(),
        name: body.name.trim().to_string(),
        kind: body.kind,
        price_cents: body.price_cents,
        duration_minutes: body.duration_minutes,
        grant: body.grant,
        active: true,
        created_at: state.clock.now(),
    };
    let answer = Answer::json(StatusCode::CREATED, &product)?;
    answering(&answer, state.store.create_product(&actor(&auth), &product)).await?;
    Ok(answer)
}

/// `POST /v1/products/{id}/retire`: the product is no longer sold (venues stop selling it once
/// the change reaches them); it stays listed with `active: false`. Retiring it again is a no-op.
#[utoipa::path(post, path = "/v1/products/{id}/retire", tag = "catalog", params(("id" = Uuid, Path)), responses((status = 200, description = "OK", body = ProductRecord)))]
async fn retire_product(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<Json<ProductRecord>, ApiError> {
    let product = state
        .store
        .retire_product(&actor(&auth), id, state.clock.now())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::NotFound("no such product"),
            other => other.into(),
        })?;
    Ok(Json(product))
}

#[derive(Serialize, utoipa::ToSchema)]
struct ProductList {
    products: Vec<ProductRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/products", tag = "catalog", summary = "List products, by SKU", params(PageQuery), responses((status = 200, description = "OK", body = ProductList)))]
async fn list_products(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let products = state
        .store
        .list_products(page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(products, |p| (p.sku.clone(), p.id));
    Ok(Json(ProductList {
        products: paged.rows,
        next_after: paged.next_after,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGame {
    name: String,
    #[serde(default = "highest_wins")]
    score_order: ScoreOrder,
}

fn highest_wins() -> ScoreOrder {
    ScoreOrder::HighestWins
}

impl Validate for NewGame {
    fn validate(&self, v: &mut Validator) {
        v.text("name", &self.name, 100);
    }
}

#[utoipa::path(post, path = "/v1/games", tag = "catalog", summary = "Create a game", request_body = NewGame, responses((status = 201, description = "Created", body = GameRecord)))]
async fn create_game(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewGame>,
) -> Result<Answer, ApiError> {
    let game = GameRecord {
        id: Uuid::now_v7(),
        name: body.name.trim().to_string(),
        score_order: body.score_order,
        created_at: state.clock.now(),
    };
    let answer = Answer::json(StatusCode::CREATED, &game)?;
    answering(&answer, state.store.create_game(&actor(&auth), &game)).await?;
    Ok(answer)
}

#[derive(Serialize, utoipa::ToSchema)]
struct GameList {
    games: Vec<GameRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/games", tag = "catalog", summary = "List games, by name", params(PageQuery), responses((status = 200, description = "OK", body = GameList)))]
async fn list_games(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<GameList>, ApiError> {
    let page = paging.page::<NameKey>()?;
    let games = state
        .store
        .list_games(page.after.as_ref(), page.fetch())
        .await?;
    let paged = page.finish(games, |g| (g.name.clone(), g.id));
    Ok(Json(GameList {
        games: paged.rows,
        next_after: paged.next_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::validate::Validator;

    fn refusals(body: serde_json::Value) -> Vec<String> {
        let product: NewProduct = serde_json::from_value(body).expect("body");
        let mut v = Validator::new();
        product.validate(&mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(ApiError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn only_a_memberships_visits_lapse() {
        let monthly = serde_json::json!({
            "sku": "MEMBER-M", "name": "Monthly membership", "kind": "membership",
            "price_cents": 4900, "duration_minutes": 90,
            "grant": { "account": "visits", "amount": 8, "per": "month" },
        });
        assert!(refusals(monthly).is_empty());
        let lapsing_credits = serde_json::json!({
            "sku": "CRED", "name": "Credits", "kind": "credits", "price_cents": 1000,
            "duration_minutes": null,
            "grant": { "account": "arcade_credits", "amount": 100, "per": "week" },
        });
        assert_eq!(refusals(lapsing_credits), vec!["grant.per".to_string()]);
    }
}

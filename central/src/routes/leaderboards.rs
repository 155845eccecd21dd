//! Chain-wide leaderboards: each customer's best score at a game, ranked by the game's score
//! order, over today, this ISO week or all time; optionally one site's scores only.
//!
//! "Today" and "this week" are UTC days at central, or the site's local days when a site is
//! named. Leaderboards are shown on every venue's scoreboards, so any site may be named.

use super::local_time::{self, site_timezone};
use crate::state::AppState;
use crate::store::{LeaderboardQuery, listing};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::wire::GameRecord;
use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// How many lines a leaderboard shows.
const LEADERBOARD_SIZE: u32 = 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(Permission::ReadLeaderboards, routes!(leaderboard)))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LeaderboardPeriod)]
enum Period {
    Today,
    Week,
    #[default]
    All,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LeaderboardParams {
    #[serde(default)]
    period: Period,
    site_id: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LeaderboardView {
    game_id: Uuid,
    period: Period,
    entries: Vec<EntryView>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EntryView {
    rank: usize,
    customer_id: Uuid,
    first_name: String,
    score: i64,
    site_id: Uuid,
    at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/v1/leaderboards/{game_id}", tag = "leaderboards", summary = "Best score per customer, top 20 (?period=today|week|all&site_id=)", params(("game_id" = Uuid, Path), LeaderboardParams), responses((status = 200, description = "OK", body = LeaderboardView)))]
async fn leaderboard(
    State(state): State<AppState>,
    _auth: Auth,
    Path(game_id): Path<Uuid>,
    Query(params): Query<LeaderboardParams>,
) -> Result<Json<LeaderboardView>, ApiError> {
    let store = &state.store;
    let games = listing::every(
        |after, limit| async move { store.list_games(after.as_ref(), limit).await },
        |g: &GameRecord| (g.name.clone(), g.id),
    )
    .await?;
    let game = games
        .into_iter()
        .find(|g| g.id == game_id)
        .ok_or(ApiError::NotFound("no such game"))?;
    let tz = match params.site_id {
        Some(site_id) => {
            let site = state
                .store
                .get_site(site_id)
                .await?
                .ok_or(ApiError::NotFound("no such site"))?;
            site_timezone(&site.timezone)?
        }
        None => Tz::UTC,
    };
    let today = state.clock.now().with_timezone(&tz).date_naive();
    let window = match params.period {
        Period::Today => Some(local_time::day(tz, today)?),
        Period::Week => Some(local_time::week(tz, today)?),
        Period::All => None,
    };
    let entries = state
        .store
        .leaderboard(&LeaderboardQuery {
            game_id,
            score_order: game.score_order,
            site_id: params.site_id,
            window,
            limit: LEADERBOARD_SIZE,
        })
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, e)| EntryView {
            rank: i + 1,
            customer_id: e.customer_id,
            first_name: e.first_name,
            score: e.score,
            site_id: e.site_id,
            at: e.at,
        })
        .collect();
    Ok(Json(LeaderboardView {
        game_id,
        period: params.period,
        entries,
    }))
}

//! Scores posted by game stations (row + outbox op in one transaction, then a live `score`
//! event) and the leaderboards scoreboards poll, ranked in the site's own days and weeks.

use super::AppState;
use crate::live::LiveEvent;
use crate::outbox::write_and_queue;
use crate::replica::scores::{self, LeaderboardEntry};
use crate::replica::{customer, site};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::{Permission, Principal};
use aero_shared::clock::start_of_local_day;
use aero_shared::json::{JsonText, ValidJson};
use aero_shared::openapi::guarded;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{ScoreOrder, ScoreRecord};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Days, SubsecRound, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The highest score a game station may post.
const MAX_SCORE: i64 = 1_000_000_000_000;
/// Leaderboard lines unless `limit` says otherwise, and the most it may ask for.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::PostScores, routes!(post_score)))
        .routes(guarded(Permission::ReadLeaderboards, routes!(leaderboard)))
}

/// A score for a customer, named directly or by the wristband of their running session.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScore {
    pub game_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub wristband: Option<String>,
    pub score: i64,
}

impl Validate for NewScore {
    fn validate(&self, v: &mut Validator) {
        match (&self.customer_id, &self.wristband) {
            (Some(_), None) => {}
            (None, Some(wristband)) => v.text("wristband", wristband, 64),
            _ => v.error(
                "customer_id",
                "give exactly one of customer_id or wristband",
            ),
        }
        v.check(
            (0..=MAX_SCORE).contains(&self.score),
            "score",
            "must be between 0 and 10^12",
        );
    }
}

/// What a valid-looking score named that the venue does not know.
enum Unknown {
    Game,
    Customer,
    Wristband,
}

impl From<Unknown> for ApiError {
    fn from(unknown: Unknown) -> Self {
        match unknown {
            Unknown::Game => ApiError::field("game_id", "no such game"),
            Unknown::Customer => ApiError::field("customer_id", "no such customer"),
            Unknown::Wristband => {
                ApiError::field("wristband", "no running jump session wears this wristband")
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/scores", tag = "scores", request_body = NewScore, responses((status = 201, description = "Created", body = ScoreRecord)))]
async fn post_score(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewScore>,
) -> Result<(StatusCode, JsonText<ScoreRecord>), ApiError> {
    // Milliseconds, as central stores them, so the row central echoes back is identical.
    let now = Utc::now().trunc_subsecs(3);
    let device_id = match auth.principal {
        Principal::Device { device_id, .. } => Some(device_id),
        Principal::Staff { .. } => None,
    };
    let site_id = state.site_id;
    // The game, the wristband and the customer are checked on the writer, in the transaction
    // that records the score.
    let taken = state
        .writer
        .mutate(move |c| {
            if scores::game(c, body.game_id)?.is_none() {
                return Ok(Err(Unknown::Game));
            }
            let customer_id = match (body.customer_id, body.wristband.as_deref()) {
                (Some(id), _) => id,
                (None, Some(wristband)) => {
                    match scores::wristband_holder(c, wristband.trim(), now)? {
                        Some(id) => id,
                        None => return Ok(Err(Unknown::Wristband)),
                    }
                }
                (None, None) => return Ok(Err(Unknown::Customer)),
            };
            let Some(customer) = customer(c, customer_id)? else {
                return Ok(Err(Unknown::Customer));
            };
            let record = ScoreRecord {
                id: Uuid::now_v7(),
                site_id,
                game_id: body.game_id,
                customer_id,
                score: body.score,
                device_id,
                created_at: now,
            };
            let answer = write_and_queue(c, &record, now)?;
            Ok(Ok((record, customer.first_name, answer)))
        })
        .await
        .map_err(super::write_error)?;
    let (record, first_name, answer) = taken?;
    state.live.publish(
        LiveEvent::Score {
            score_id: record.id,
            game_id: record.game_id,
            customer_id: record.customer_id,
            first_name: Some(first_name),
            score: record.score,
        },
        now,
    );
    Ok((StatusCode::CREATED, answer))
}

/// Which scores a leaderboard ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LeaderboardPeriod)]
pub enum Period {
    /// The site's current local day.
    Today,
    /// The site's current ISO week (Monday to Sunday, local).
    Week,
    All,
}

impl Period {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "today" => Some(Self::Today),
            "week" => Some(Self::Week),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// The instants `[from, until)` the period covers at `now` in `tz`; `None` for all time.
    pub fn window(self, tz: Tz, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let today = now.with_timezone(&tz).date_naive();
        let (first, days) = match self {
            Self::All => return None,
            Self::Today => (today, 1),
            Self::Week => (
                today - Days::new(u64::from(today.weekday().num_days_from_monday())),
                7,
            ),
        };
        Some((
            start_of_local_day(tz, first),
            start_of_local_day(tz, first + Days::new(days)),
        ))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LeaderboardQuery {
    period: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Leaderboard {
    game_id: Uuid,
    period: Period,
    score_order: ScoreOrder,
    /// The scores ranked were set in `[from, until)`; both null for all time.
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    entries: Vec<LeaderboardEntry>,
}

enum Board {
    Ready(Leaderboard),
    NoGame,
    NoSite,
}

#[utoipa::path(get, path = "/v1/leaderboards/{game_id}", tag = "scores", summary = "Best score per customer at this venue (?period=today|week|all&limit=)", params(("game_id" = Uuid, Path), LeaderboardQuery), responses((status = 200, description = "OK", body = Leaderboard)))]
async fn leaderboard(
    State(state): State<AppState>,
    _auth: Auth,
    Path(game_id): Path<Uuid>,
    Query(query): Query<LeaderboardQuery>,
) -> Result<Json<Leaderboard>, ApiError> {
    let period = match query.period.as_deref() {
        None => Period::Today,
        Some(text) => Period::parse(text)
            .ok_or_else(|| ApiError::field("period", "must be today, week or all"))?,
    };
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::field("limit", "must be between 1 and 100")),
    };
    let now = Utc::now();
    let site_id = state.site_id;
    let board = state
        .replica
        .read(move |c| {
            let Some(game) = scores::game(c, game_id)? else {
                return Ok(Board::NoGame);
            };
            let window = match period {
                Period::All => None,
                _ => {
                    let Some(site) = site(c, site_id)? else {
                        return Ok(Board::NoSite);
                    };
                    let tz: Tz = site.timezone.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "site {site_id} has an invalid timezone {:?}",
                            site.timezone
                        )
                    })?;
                    period.window(tz, now)
                }
            };
            let entries = scores::leaderboard(c, game_id, game.score_order, window, limit)?;
            Ok(Board::Ready(Leaderboard {
                game_id,
                period,
                score_order: game.score_order,
                from: window.map(|w| w.0),
                until: window.map(|w| w.1),
                entries,
            }))
        })
        .await?;
    match board {
        Board::Ready(board) => Ok(Json(board)),
        Board::NoGame => Err(ApiError::NotFound("no such game")),
        Board::NoSite => Err(ApiError::Unavailable(
            "the replica has not received this site from central yet".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn days_and_weeks_follow_the_site_clock_across_dst() {
        let london: Tz = "Europe/London".parse().unwrap();
        // The spring-forward Sunday is 23 hours long; its week ends at the next local midnight.
        let sunday = utc("2025-03-30T12:00:00Z");
        assert_eq!(
            Period::Today.window(london, sunday),
            Some((utc("2025-03-30T00:00:00Z"), utc("2025-03-30T23:00:00Z")))
        );
        assert_eq!(
            Period::Week.window(london, sunday),
            Some((utc("2025-03-24T00:00:00Z"), utc("2025-03-30T23:00:00Z")))
        );
        // The fall-back Sunday is 25 hours long.
        assert_eq!(
            Period::Today.window(london, utc("2025-10-26T23:30:00Z")),
            Some((utc("2025-10-25T23:00:00Z"), utc("2025-10-27T00:00:00Z")))
        );
        // Late evening in New York is already tomorrow in UTC, still today at the site.
        let new_york: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            Period::Today.window(new_york, utc("2025-06-11T02:00:00Z")),
            Some((utc("2025-06-10T04:00:00Z"), utc("2025-06-11T04:00:00Z")))
        );
        assert_eq!(Period::All.window(london, sunday), None);
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_the_clocks_resume() {
        // Chile springs forward at midnight: 2024-09-08 starts at 01:00 local (UTC-3).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 9, 8).unwrap();
        assert_eq!(
            start_of_local_day(santiago, day),
            utc("2024-09-08T04:00:00Z")
        );
        // Samoa skipped 2011-12-30 entirely: that day "starts" when the 31st does.
        let apia: Tz = "Pacific/Apia".parse().unwrap();
        let skipped = NaiveDate::from_ymd_opt(2011, 12, 30).unwrap();
        assert_eq!(
            start_of_local_day(apia, skipped),
            start_of_local_day(apia, skipped.succ_opt().unwrap())
        );
    }
}

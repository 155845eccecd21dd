//! The venue page's leaderboards: for each game, the best score of each customer at this venue
//! today, this week or of all time (`GET /v1/leaderboards/{game_id}?site_id=&period=`), in the
//! venue's timezone.

use super::api::{Api, ApiFailure};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

/// The periods a leaderboard covers, as `GET /v1/leaderboards` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Today,
    Week,
    All,
}

impl Period {
    const ALL: [Self; 3] = [Self::Today, Self::Week, Self::All];

    fn as_str(self) -> &'static str {
        match self {
            Self::Today => "today",
            Self::Week => "week",
            Self::All => "all",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Today => "Today",
            Self::Week => "This week",
            Self::All => "All time",
        }
    }
}

#[derive(Deserialize)]
struct GameList {
    games: Vec<Game>,
}

#[derive(Deserialize)]
struct Game {
    id: Uuid,
    name: String,
    score_order: String,
}

#[derive(Deserialize)]
struct Leaderboard {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    rank: usize,
    first_name: String,
    score: i64,
}

/// The leaderboards section: a period switch (a plain link per period, so it works without
/// script) and one ranked table per game.
pub async fn section(
    token: &str,
    api: &Api,
    site_id: Uuid,
    period: Period,
) -> Result<Markup, ApiFailure> {
    let games: GameList = match api.get(token, "/v1/games").await {
        Ok(games) => games,
        Err(ApiFailure::SignedOut) => return Err(ApiFailure::SignedOut),
        Err(failure) => return Ok(html! { p.notice.error { (failure.message()) } }),
    };
    let mut boards = Vec::with_capacity(games.games.len());
    for game in &games.games {
        let board: Result<Leaderboard, _> = api
            .get(
                token,
                &format!(
                    "/v1/leaderboards/{}?site_id={site_id}&period={}",
                    game.id,
                    period.as_str()
                ),
            )
            .await;
        if let Err(ApiFailure::SignedOut) = board {
            return Err(ApiFailure::SignedOut);
        }
        boards.push(board);
    }
    Ok(html! {
        nav.periods aria-label="Leaderboard period" {
            ul {
                @for p in Period::ALL {
                    li {
                        a href=(format!("/console/venues/{site_id}?board={}#leaderboards-heading", p.as_str()))
                          aria-current=[(p == period).then_some("true")] { (p.label()) }
                    }
                }
            }
        }
        @if games.games.is_empty() {
            p { "No games are defined yet." }
        }
        @for (game, board) in games.games.iter().zip(&boards) {
            h3 { (game.name) }
            @match board {
                Ok(board) if board.entries.is_empty() => {
                    p { "No scores " (period.label().to_lowercase()) "." }
                }
                Ok(board) => {
                    div.scroll { table {
                        caption.sr-only {
                            (game.name) ", " (period.label().to_lowercase()) ", "
                            @if game.score_order == "lowest_wins" { "lowest score first" } @else { "highest score first" }
                        }
                        thead { tr { th scope="col" { "Rank" } th scope="col" { "Player" } th scope="col" { "Score" } } }
                        tbody {
                            @for e in &board.entries {
                                tr { td { (e.rank) } th scope="row" { (e.first_name) } td { (e.score) } }
                            }
                        }
                    } }
                }
                Err(failure) => { p.notice.error { (failure.message()) } }
            }
        }
    })
}

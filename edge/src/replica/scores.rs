//! Game scores as the venue reads them: games, who wears a wristband right now, and the best
//! score per customer (leaderboards). Scoreboards poll leaderboards, so every read here walks an
//! index.

use super::{parse_ts, ts};
use aero_shared::wire::{GameRecord, ScoreOrder};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

pub fn game(c: &Connection, id: Uuid) -> anyhow::Result<Option<GameRecord>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM games WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

/// The customer of the session running at `now` on this wristband (the latest, if a wristband
/// was reissued before its previous session ended).
pub fn wristband_holder(
    c: &Connection,
    wristband: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Uuid>> {
    Ok(c.prepare_cached(
        "SELECT customer_id FROM checkins
         WHERE wristband = ?1 AND ends_at > ?2 AND starts_at <= ?2
         ORDER BY ends_at DESC LIMIT 1",
    )?
    .query_row(params![wristband, ts(now)], |r| r.get(0))
    .optional()?)
}

/// One line of a leaderboard: a customer's best score and when they set it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LeaderboardEntry {
    pub rank: u32,
    pub customer_id: Uuid,
    /// First name only: leaderboards are shown on public screens.
    pub first_name: Option<String>,
    pub score: i64,
    pub at: DateTime<Utc>,
}

/// The best score of each customer for `game_id`, best first (ties: who set it first), at
/// most `limit` customers; only scores set in `[from, until)` when a window is given.
///
/// A window (a day, a week) holds few scores: they are read through `(game_id, created_at)` and
/// ranked by SQLite. All-time reads walk `(game_id, score)` in score order and stop at the
/// `limit`-th customer, so a game's long history is never read in full for a top 20.
pub fn leaderboard(
    c: &Connection,
    game_id: Uuid,
    order: ScoreOrder,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    limit: usize,
) -> anyhow::Result<Vec<LeaderboardEntry>> {
    // A constant per score order, never request input.
    let direction = match order {
        ScoreOrder::HighestWins => "DESC",
        ScoreOrder::LowestWins => "ASC",
    };
    let best: Vec<(Uuid, i64, String)> = match window {
        Some((from, until)) => {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT customer_id, score, created_at FROM (
                    SELECT customer_id, score, created_at, id,
                           ROW_NUMBER() OVER (PARTITION BY customer_id
                                              ORDER BY score {direction}, created_at, id) AS place
                    FROM scores INDEXED BY scores_game_created
                    WHERE game_id = ?1 AND created_at >= ?2 AND created_at < ?3)
                 WHERE place = 1
                 ORDER BY score {direction}, created_at, id
                 LIMIT ?4"
            ))?;
            let rows = stmt
                .query_map(params![game_id, ts(from), ts(until), limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            rows.collect::<Result<_, _>>()?
        }
        None => {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT customer_id, score, created_at FROM scores INDEXED BY scores_game_score
                 WHERE game_id = ?1 ORDER BY score {direction}, created_at, id"
            ))?;
            let mut rows = stmt.query([game_id])?;
            let mut seen = HashSet::new();
            let mut best = Vec::with_capacity(limit);
            // Rows come best first, so a customer's first row is their best.
            while best.len() < limit {
                let Some(row) = rows.next()? else { break };
                let customer_id: Uuid = row.get(0)?;
                if seen.insert(customer_id) {
                    best.push((customer_id, row.get(1)?, row.get(2)?));
                }
            }
            best
        }
    };
    let mut name =
        c.prepare_cached("SELECT json_extract(data, '$.first_name') FROM customers WHERE id = ?1")?;
    best.into_iter()
        .enumerate()
        .map(|(place, (customer_id, score, at))| {
            Ok(LeaderboardEntry {
                rank: place as u32 + 1,
                customer_id,
                first_name: name
                    .query_row([customer_id], |r| r.get(0))
                    .optional()?
                    .flatten(),
                score,
                at: parse_ts(&at)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Replica;
    use crate::replica::venue::insert_score;
    use aero_shared::query_plan::query_plan;
    use aero_shared::wire::ScoreRecord;
    use chrono::TimeZone;

    fn score(game: Uuid, customer: Uuid, points: i64, at: DateTime<Utc>) -> ScoreRecord {
        ScoreRecord {
            id: Uuid::now_v7(),
            site_id: Uuid::nil(),
            game_id: game,
            customer_id: customer,
            score: points,
            device_id: None,
            created_at: at,
        }
    }

    #[test]
    fn best_per_customer_in_score_order_ties_to_the_earliest() {
        let dir = tempfile::tempdir().unwrap();
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        let game = Uuid::now_v7();
        let t = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
        let minute = chrono::Duration::minutes(1);
        let (ann, bob, cat) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for record in [
            score(game, ann, 50, t),
            score(game, ann, 90, t + minute),
            score(game, bob, 90, t + minute * 2),
            score(game, cat, 10, t + minute * 3),
            score(game, cat, 70, t + minute * 4),
            score(Uuid::now_v7(), bob, 1000, t),
        ] {
            insert_score(&conn, &record).unwrap();
        }
        let ranked = |order, window, limit| -> Vec<(u32, Uuid, i64)> {
            leaderboard(&conn, game, order, window, limit)
                .unwrap()
                .into_iter()
                .map(|e| (e.rank, e.customer_id, e.score))
                .collect()
        };
        let all = Some((t - minute, t + minute * 60));
        for window in [None, all] {
            assert_eq!(
                ranked(ScoreOrder::HighestWins, window, 20),
                [(1, ann, 90), (2, bob, 90), (3, cat, 70)]
            );
            assert_eq!(
                ranked(ScoreOrder::LowestWins, window, 20),
                [(1, cat, 10), (2, ann, 50), (3, bob, 90)]
            );
            assert_eq!(ranked(ScoreOrder::HighestWins, window, 1), [(1, ann, 90)]);
        }
        // From the third minute on, ann's scores are out of the window and bob leads.
        let late = Some((t + minute * 2, t + minute * 60));
        assert_eq!(
            ranked(ScoreOrder::HighestWins, late, 20),
            [(1, bob, 90), (2, cat, 70)]
        );
        let first_minute = Some((t, t + minute));
        assert_eq!(
            ranked(ScoreOrder::HighestWins, first_minute, 20),
            [(1, ann, 50)]
        );
    }

    #[test]
    fn leaderboards_stream_from_an_index_without_sorting_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        let plan = |sql: &str| query_plan(&conn, sql).unwrap();
        for direction in ["DESC", "ASC"] {
            let all_time = plan(&format!(
                "SELECT customer_id, score, created_at FROM scores INDEXED BY scores_game_score
                 WHERE game_id = x'00' ORDER BY score {direction}, created_at, id"
            ));
            assert!(
                all_time.contains("USING INDEX scores_game_score"),
                "{all_time}"
            );
            // Ties are sorted within one score at a time, never the whole history.
            assert!(
                !all_time.contains("USE TEMP B-TREE FOR ORDER BY"),
                "{all_time}"
            );
        }
    }
}

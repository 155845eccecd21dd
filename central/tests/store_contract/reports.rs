//! HQ's figures: the daily report in each site's local day, and leaderboards.

use aero_central::store::{LeaderboardQuery, Store};
use aero_shared::etag::IfMatch;
use aero_shared::wire::{Entity, GameRecord, ScoreOrder, SiteRecord, TenderKind};
use chrono::{Duration, Utc};
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

async fn new_site_in(store: &Arc<dyn Store>, timezone: &str) -> SiteRecord {
    let site = SiteRecord {
        timezone: timezone.into(),
        ..new_site(store).await
    };
    store
        .update_site(&actor(), site.id, &all_of(&site), &IfMatch::Absent, now())
        .await
        .unwrap();
    site
}

pub(crate) async fn daily_figures_follow_the_sites_local_day(store: Arc<dyn Store>) {
    use chrono::TimeZone as _;
    let site = new_site_in(&store, "America/New_York").await;
    let tz = chrono_tz::America::New_York;
    let midnight = |d: u32| {
        tz.with_ymd_and_hms(2026, 3, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    // 2026-03-10 starts at 04:00 UTC (EDT); an order a minute either side of it.
    let (day, next) = (midnight(10), midnight(11));
    assert_eq!(day.to_rfc3339(), "2026-03-10T04:00:00+00:00");
    let (jump, socks) = (Uuid::now_v7(), Uuid::now_v7());
    let late = order_record(
        site.id,
        day - Duration::minutes(1),
        &[(jump, "JUMP60", 1, 1000)],
        &[(TenderKind::Cash, 1000)],
    );
    let early = order_record(
        site.id,
        day + Duration::minutes(1),
        &[(socks, "SOCKS", 2, 500), (jump, "JUMP60", 1, 1500)],
        &[(TenderKind::Card, 2500)],
    );
    // Yesterday's order refunded today: today's revenue, not yesterday's, and no product's sales.
    let refund = refund_record(&late, TenderKind::Cash, 400, day + Duration::minutes(30));
    let customer = customer_record(site.id, "Ed");
    let before = checkin_record(site.id, customer.id, day - Duration::minutes(1));
    let after = checkin_record(site.id, customer.id, day + Duration::minutes(61));
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Order, late.id, &late),
                venue_op(2, Entity::Order, early.id, &early),
                venue_op(3, Entity::Refund, refund.id, &refund),
                venue_op(4, Entity::Customer, customer.id, &customer),
                venue_op(5, Entity::Checkin, before.id, &before),
                venue_op(6, Entity::Checkin, after.id, &after),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(rejections(&outcome), vec![]);

    let report = store.daily_report(site.id, day, next).await.unwrap();
    assert_eq!(
        (
            report.orders,
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents,
            report.checkins
        ),
        (1, 2500, 400, 2100, 1)
    );
    let yesterday = store.daily_report(site.id, midnight(9), day).await.unwrap();
    assert_eq!(
        (
            yesterday.orders,
            yesterday.gross_sales_cents,
            yesterday.refunds_cents,
            yesterday.revenue_cents,
            yesterday.checkins
        ),
        (1, 1000, 0, 1000, 1)
    );

    let sales = store.sales_by_product(site.id, day, next).await.unwrap();
    let figures: Vec<(&str, i64, i64)> = sales
        .iter()
        .map(|s| (s.sku.as_str(), s.quantity, s.sales_cents))
        .collect();
    assert_eq!(figures, vec![("JUMP60", 1, 1500), ("SOCKS", 2, 1000)]);
    let sales = store
        .sales_by_product(site.id, midnight(9), day)
        .await
        .unwrap();
    assert_eq!(sales.len(), 1);
    assert_eq!((sales[0].product_id, sales[0].sales_cents), (jump, 1000));

    let hours = [
        day - Duration::hours(1),
        day,
        day + Duration::hours(1),
        day + Duration::hours(2),
    ];
    assert_eq!(
        store.checkins_between(site.id, &hours).await.unwrap(),
        vec![1, 0, 1]
    );
    assert!(
        store
            .checkins_between(site.id, &hours[..1])
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn leaderboards_rank_each_customers_best_by_the_games_score_order(
    store: Arc<dyn Store>,
) {
    let a = new_site(&store).await;
    let b = new_site(&store).await;
    let high = new_game(&store, ScoreOrder::HighestWins).await;
    let low = new_game(&store, ScoreOrder::LowestWins).await;
    let (ann, bob) = (customer_record(a.id, "Ann"), customer_record(a.id, "Bob"));
    let cat = customer_record(b.id, "Cat");
    let t = now() - Duration::hours(3);
    let at = |minutes: i64| t + Duration::minutes(minutes);
    let scores_a = [
        score_record(a.id, high.id, ann.id, 50, at(0)),
        score_record(a.id, high.id, ann.id, 80, at(10)),
        score_record(a.id, high.id, bob.id, 80, at(20)),
        score_record(a.id, low.id, ann.id, 50, at(0)),
        score_record(a.id, low.id, ann.id, 70, at(5)),
        score_record(a.id, low.id, bob.id, 40, at(30)),
    ];
    let mut ops = vec![
        venue_op(1, Entity::Customer, ann.id, &ann),
        venue_op(2, Entity::Customer, bob.id, &bob),
    ];
    ops.extend(
        scores_a
            .iter()
            .zip(3..)
            .map(|(s, seq)| venue_op(seq, Entity::Score, s.id, s)),
    );
    assert_eq!(
        rejections(&store.push(a.id, &ops, now()).await.unwrap()),
        vec![]
    );
    let cat_score = score_record(b.id, high.id, cat.id, 90, at(40));
    let outcome = store
        .push(
            b.id,
            &[
                venue_op(1, Entity::Customer, cat.id, &cat),
                venue_op(2, Entity::Score, cat_score.id, &cat_score),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(rejections(&outcome), vec![]);

    let board = |game: &GameRecord, site_id, window, limit| {
        let query = LeaderboardQuery {
            game_id: game.id,
            score_order: game.score_order,
            site_id,
            window,
            limit,
        };
        let store = store.clone();
        async move {
            store
                .leaderboard(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.first_name, e.score, e.site_id, e.at))
                .collect::<Vec<_>>()
        }
    };
    let name = |s: &str| s.to_string();
    // Highest first, one line per customer; of equal scores the earlier one ranks first.
    assert_eq!(
        board(&high, None, None, 20).await,
        vec![
            (name("Cat"), 90, b.id, at(40)),
            (name("Ann"), 80, a.id, at(10)),
            (name("Bob"), 80, a.id, at(20)),
        ]
    );
    assert_eq!(board(&high, None, None, 2).await.len(), 2);
    assert_eq!(
        board(&high, Some(a.id), None, 20).await,
        vec![
            (name("Ann"), 80, a.id, at(10)),
            (name("Bob"), 80, a.id, at(20)),
        ]
    );
    // Only the window's scores count: Ann's 80 falls outside it.
    assert_eq!(
        board(&high, Some(a.id), Some((at(0), at(10))), 20).await,
        vec![(name("Ann"), 50, a.id, at(0))]
    );
    // Lowest first.
    assert_eq!(
        board(&low, None, None, 20).await,
        vec![
            (name("Bob"), 40, a.id, at(30)),
            (name("Ann"), 50, a.id, at(0)),
        ]
    );
}

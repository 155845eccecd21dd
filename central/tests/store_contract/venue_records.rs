//! What venues sell and run, pushed to central: orders, refunds, the ledger, check-ins and customers.

use aero_central::store::{
    self, CustomerSearch, DeadLetterState, LeaderboardQuery, NegativeBalance, ProductSales, Store,
};
use aero_shared::wire::{
    Account, ChangeEntity, CustomerRecord, Entity, LedgerEntry, OpKind, PushOp, ScoreOrder,
    SiteRecord, TenderKind,
};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn venue_records_are_applied_once_and_published_to_their_scope(
    store: Arc<dyn Store>,
) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let game = new_game(&store, ScoreOrder::HighestWins).await;
    let customer = customer_record(site.id, "Ada");
    let jump = Uuid::now_v7();
    let order = order_record(
        site.id,
        now(),
        &[(jump, "JUMP60", 2, 1500)],
        &[(TenderKind::Card, 3000)],
    );
    let refund = refund_record(&order, TenderKind::Card, 1000, now());
    let entry = ledger_record(site.id, customer.id, Account::ArcadeCredits, 50);
    let checkin = checkin_record(site.id, customer.id, now());
    let score = score_record(site.id, game.id, customer.id, 1234, now());
    let ops = vec![
        venue_op(1, Entity::Customer, customer.id, &customer),
        venue_op(2, Entity::Order, order.id, &order),
        venue_op(3, Entity::Refund, refund.id, &refund),
        venue_op(4, Entity::LedgerEntry, entry.id, &entry),
        venue_op(5, Entity::Checkin, checkin.id, &checkin),
        venue_op(6, Entity::Score, score.id, &score),
    ];
    let head = store.change_head().await.unwrap();
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 6);
    assert_eq!(rejections(&outcome), vec![]);

    // The site pulls its own history back; every site pulls the ledger entry (and customer).
    let own: Vec<(ChangeEntity, Uuid)> = pull_all(&store, site.id, head)
        .await
        .iter()
        .map(|c| (c.entity.clone(), c.entity_id))
        .collect();
    for (entity, id) in [
        (Entity::Order, order.id),
        (Entity::Refund, refund.id),
        (Entity::LedgerEntry, entry.id),
        (Entity::Checkin, checkin.id),
        (Entity::Score, score.id),
    ] {
        assert_eq!(
            own.iter().filter(|c| c.0 == entity && c.1 == id).count(),
            1,
            "{entity:?} once in the site's feed: {own:?}"
        );
    }
    let elsewhere = pull_all(&store, other.id, head).await;
    let seen: Vec<ChangeEntity> = elsewhere
        .iter()
        .filter(|c| {
            [
                customer.id,
                order.id,
                refund.id,
                entry.id,
                checkin.id,
                score.id,
            ]
            .contains(&c.entity_id)
        })
        .map(|c| c.entity.clone())
        .collect();
    assert_eq!(
        seen,
        vec![
            ChangeEntity::Known(Entity::Customer),
            ChangeEntity::Known(Entity::LedgerEntry)
        ]
    );
    let published = elsewhere.iter().find(|c| c.entity_id == entry.id).unwrap();
    assert_eq!(published.site_id, None, "ledger entries are chain-wide");
    let replicated: LedgerEntry = serde_json::from_value(published.data.clone()).unwrap();
    assert_eq!(replicated, entry);

    // A replayed batch, and the same records again under new op ids (a dead letter retried),
    // write nothing and publish nothing.
    let before = store.change_head().await.unwrap();
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((replay.acked_seq, replay.rejected.len()), (6, 0));
    let again: Vec<PushOp> = ops
        .iter()
        .skip(1)
        .zip(7..)
        .map(|(op, seq)| PushOp {
            seq,
            op_id: Uuid::now_v7(),
            ..op.clone()
        })
        .collect();
    let outcome = store.push(site.id, &again, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 11);
    assert_eq!(rejections(&outcome), vec![]);
    assert_eq!(store.change_head().await.unwrap(), before);

    let (from, to) = today();
    let report = store.daily_report(site.id, from, to).await.unwrap();
    assert_eq!(
        (
            report.orders,
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents,
            report.checkins,
            report.new_customers
        ),
        (1, 3000, 1000, 2000, 1, 1)
    );
    let sales = store.sales_by_product(site.id, from, to).await.unwrap();
    assert_eq!(
        sales,
        vec![ProductSales {
            product_id: jump,
            sku: "JUMP60".into(),
            name: "JUMP60 name".into(),
            quantity: 2,
            sales_cents: 3000,
        }]
    );
}

pub(crate) async fn references_must_exist_at_central(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let game = new_game(&store, ScoreOrder::HighestWins).await;
    let stranger = Uuid::now_v7();
    let customer = customer_record(site.id, "Bea");
    let checkin = checkin_record(site.id, stranger, now());
    let entry = ledger_record(site.id, stranger, Account::StoredValue, 100);
    let no_game = score_record(site.id, Uuid::now_v7(), customer.id, 5, now());
    let foreign = checkin_record(other.id, customer.id, now());
    let mut wrong_kind = venue_op(6, Entity::Score, no_game.id, &no_game);
    wrong_kind.kind = OpKind::LedgerAppend;
    // A customer pushed earlier in the same batch counts.
    let good = score_record(site.id, game.id, customer.id, 7, now());
    let ops = vec![
        venue_op(1, Entity::Checkin, checkin.id, &checkin),
        venue_op(2, Entity::LedgerEntry, entry.id, &entry),
        venue_op(3, Entity::Customer, customer.id, &customer),
        venue_op(4, Entity::Score, no_game.id, &no_game),
        venue_op(5, Entity::Checkin, foreign.id, &foreign),
        wrong_kind,
        venue_op(7, Entity::Score, good.id, &good),
    ];
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 7);
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6],
        "{rejected:?}"
    );
    assert!(rejected[0].1.contains("customer"), "{rejected:?}");
    assert!(rejected[2].1.contains("game"), "{rejected:?}");
    assert!(rejected[3].1.contains("site"), "{rejected:?}");
    let (from, to) = today();
    assert_eq!(
        store
            .daily_report(site.id, from, to)
            .await
            .unwrap()
            .checkins,
        0
    );
    let board = store
        .leaderboard(&LeaderboardQuery {
            game_id: game.id,
            score_order: game.score_order,
            site_id: None,
            window: None,
            limit: 20,
        })
        .await
        .unwrap();
    assert_eq!(board.len(), 1);
    assert_eq!((board[0].customer_id, board[0].score), (customer.id, 7));
}

pub(crate) async fn refunds_are_checked_against_their_order_and_earlier_refunds(
    store: Arc<dyn Store>,
) {
    let site = new_site(&store).await;
    let order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 2, 1500)],
        &[(TenderKind::Cash, 1000), (TenderKind::Card, 2000)],
    );
    let first = refund_record(&order, TenderKind::Card, 1500, now());
    let too_much = refund_record(&order, TenderKind::Card, 600, now());
    let unknown_order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 1, 100)],
        &[(TenderKind::Cash, 100)],
    );
    let orphan = refund_record(&unknown_order, TenderKind::Cash, 100, now());
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Order, order.id, &order),
                venue_op(2, Entity::Refund, first.id, &first),
                venue_op(3, Entity::Refund, too_much.id, &too_much),
                venue_op(4, Entity::Refund, orphan.id, &orphan),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 4);
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(
        rejected[0].1.contains("more than the 500 cents left"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.contains("does not hold"), "{rejected:?}");

    // A later batch: the earlier refund is loaded from what central holds.
    let rest = refund_record(&order, TenderKind::Card, 500, now());
    let beyond = refund_record(&order, TenderKind::Card, 1, now());
    let cash = refund_record(&order, TenderKind::Cash, 1000, now());
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(5, Entity::Refund, rest.id, &rest),
                venue_op(6, Entity::Refund, beyond.id, &beyond),
                venue_op(7, Entity::Refund, cash.id, &cash),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        rejections(&outcome)
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        vec![6]
    );
    let listed = store
        .rejected_ops(site.id, DeadLetterState::All, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![6, 4, 3]
    );
    let (from, to) = today();
    let report = store.daily_report(site.id, from, to).await.unwrap();
    assert_eq!(
        (
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents
        ),
        (3000, 3000, 0)
    );
}

pub(crate) async fn ledger_entries_from_two_sites_are_kept_and_negative_balances_reported(
    store: Arc<dyn Store>,
) {
    let home = new_site(&store).await;
    let away = new_site(&store).await;
    let customer = customer_record(home.id, "Cy");
    let loaded = ledger_record(home.id, customer.id, Account::StoredValue, 500);
    let spent_home = ledger_record(home.id, customer.id, Account::StoredValue, -400);
    let credits = ledger_record(home.id, customer.id, Account::ArcadeCredits, 30);
    // The other venue spent the same balance while offline: both land.
    let spent_away = ledger_record(away.id, customer.id, Account::StoredValue, -300);
    push_from_two_venues(
        &store,
        (&home, &[&loaded, &spent_home, &credits]),
        (&away, &spent_away),
        &customer,
    )
    .await;

    let negative: Vec<NegativeBalance> = store
        .negative_balances(now())
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.customer_id == customer.id)
        .collect();
    assert_eq!(
        negative,
        vec![NegativeBalance {
            customer_id: customer.id,
            first_name: "Cy".into(),
            last_name: customer.last_name.clone(),
            account: Account::StoredValue,
            balance: -200,
        }]
    );
    let found = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let balances: Vec<(Account, i64)> = found[0]
        .balances
        .iter()
        .map(|b| (b.account, b.balance))
        .collect();
    assert_eq!(
        balances,
        vec![
            (Account::StoredValue, -200),
            (Account::ArcadeCredits, 30),
            (Account::Visits, 0)
        ]
    );
}

/// The customer and its home venue's ledger entries pushed from home, then one entry from the
/// other venue (spent there while offline): every op lands.
async fn push_from_two_venues(
    store: &Arc<dyn Store>,
    (home, home_entries): (&SiteRecord, &[&LedgerEntry]),
    (away, away_entry): (&SiteRecord, &LedgerEntry),
    customer: &CustomerRecord,
) {
    let mut ops = vec![venue_op(1, Entity::Customer, customer.id, customer)];
    for (seq, entry) in (2..).zip(home_entries) {
        ops.push(venue_op(seq, Entity::LedgerEntry, entry.id, *entry));
    }
    let outcome = store.push(home.id, &ops, now()).await.unwrap();
    assert_eq!(rejections(&outcome), vec![]);
    let away_op = venue_op(1, Entity::LedgerEntry, away_entry.id, away_entry);
    let outcome = store.push(away.id, &[away_op], now()).await.unwrap();
    assert_eq!(rejections(&outcome), vec![]);
}

pub(crate) async fn lapsed_visits_do_not_hide_an_overspent_membership(store: Arc<dyn Store>) {
    let home = new_site(&store).await;
    let away = new_site(&store).await;
    let customer = customer_record(home.id, "Ed");
    let at = now();
    let entry = |site: Uuid, delta: i64, days_ago: i64, lapses_in_days: Option<i64>| LedgerEntry {
        created_at: at - Duration::days(days_ago),
        expires_at: lapses_in_days.map(|d| at + Duration::days(d)),
        ..ledger_record(site, customer.id, Account::Visits, delta)
    };
    // Last month's three visits went unused and lapsed; this month's one was spent at both
    // venues while they were offline.
    let last_month = entry(home.id, 3, 40, Some(-10));
    let this_month = entry(home.id, 1, 5, Some(25));
    let spent_home = entry(home.id, -1, 1, None);
    let spent_away = entry(away.id, -1, 1, None);
    push_from_two_venues(
        &store,
        (&home, &[&last_month, &this_month, &spent_home]),
        (&away, &spent_away),
        &customer,
    )
    .await;

    // The plain sum would be 2: the lapsed visits must not cover the second spend.
    let negative: Vec<(Account, i64)> = store
        .negative_balances(at)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.customer_id == customer.id)
        .map(|b| (b.account, b.balance))
        .collect();
    assert_eq!(negative, vec![(Account::Visits, -1)]);
    let found = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            at,
        )
        .await
        .unwrap();
    let visits = found[0]
        .balances
        .iter()
        .find(|b| b.account == Account::Visits)
        .map(|b| b.balance);
    assert_eq!(visits, Some(-1));
    // Forty days earlier, last month's visits were all still there.
    let then = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            at - Duration::days(39),
        )
        .await
        .unwrap();
    assert_eq!(
        then[0]
            .balances
            .iter()
            .find(|b| b.account == Account::Visits)
            .map(|b| b.balance),
        Some(3)
    );
}

pub(crate) async fn customers_are_found_by_phone_email_and_name(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let customer = CustomerRecord {
        email: Some(format!("{}@Example.com", unique("Fay"))),
        ..customer_record(site.id, "Fay")
    };
    store
        .push(
            site.id,
            &[venue_op(1, Entity::Customer, customer.id, &customer)],
            now(),
        )
        .await
        .unwrap();
    let ids = |found: Vec<store::CustomerBalances>| -> Vec<Uuid> {
        found.into_iter().map(|c| c.customer.id).collect()
    };
    let email = customer.email.clone().unwrap().to_lowercase();
    let last = customer.last_name.to_lowercase();
    for search in [
        CustomerSearch::Phone(customer.phone.clone().unwrap()),
        CustomerSearch::Email(email),
        CustomerSearch::Name(last.clone()),
        CustomerSearch::Name(last[..last.len() - 3].to_string()),
        CustomerSearch::Name(format!("fay {last}")),
    ] {
        let found = store
            .search_customers(&search, None, 50, now())
            .await
            .unwrap();
        assert_eq!(ids(found), vec![customer.id], "{search:?}");
    }
    for search in [
        CustomerSearch::Email("nobody@example.com".into()),
        CustomerSearch::Name(format!("{last}x")),
        // Wildcards match themselves.
        CustomerSearch::Name(format!("{}%", &last[..6])),
        CustomerSearch::Name(format!("{}_", &last[..6])),
    ] {
        let found = store
            .search_customers(&search, None, 50, now())
            .await
            .unwrap();
        assert!(!ids(found).contains(&customer.id), "{search:?}");
    }
}

//! The sync protocol's rules: push applies once, seqs and forks, rejections, the change feed and its scopes, anchors, the store id, backlogs and hint sockets.

use aero_central::store::{self, DeadLetterState, HintSocketEvent, Store};
use aero_shared::wire::{
    Account, Entity, LedgerEntry, OpKind, OutboxBacklog, PushOp, TenderKind, WaiverRecord,
};
use chrono::Duration;
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn pull_is_scoped_to_the_site_and_chain_wide_rows(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let a = new_site(&store).await;
    let b = new_site(&store).await;
    let device_b = device(b.id, &unique("hash"));
    store.create_device(&actor(), &device_b).await.unwrap();
    let p = product(&unique("SKU"));
    store.create_product(&actor(), &p).await.unwrap();
    let seen_by_a: BTreeSet<Uuid> = pull_all(&store, a.id, head)
        .await
        .iter()
        .map(|c| c.entity_id)
        .collect();
    assert!(seen_by_a.contains(&a.id));
    assert!(
        seen_by_a.contains(&p.id),
        "chain-wide products reach every site"
    );
    assert!(
        !seen_by_a.contains(&b.id),
        "another site's row must not leak"
    );
    assert!(
        !seen_by_a.contains(&device_b.id),
        "another site's device must not leak"
    );
    // Paging by count returns a prefix in seq order.
    let page = store.pull(a.id, head, 1, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 1);
    // Paging by bytes still makes progress with one row.
    let tiny = store.pull(a.id, head, 100, 1).await.unwrap();
    assert_eq!(tiny.len(), 1);
}

pub(crate) async fn push_applies_once_and_replays_are_no_ops(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let ops: Vec<PushOp> = (1..=3).map(|seq| customer_op(site.id, seq)).collect();
    let first = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((first.acked_seq, first.expected_seq), (3, None));
    assert!(first.rejected.is_empty());
    let before = store.count_customers().await.unwrap();
    let head = store.change_head().await.unwrap();
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(replay.acked_seq, 3);
    assert!(replay.rejected.is_empty());
    assert_eq!(
        store.count_customers().await.unwrap(),
        before,
        "a replay writes nothing"
    );
    assert_eq!(
        store.change_head().await.unwrap(),
        head,
        "a replay appends no change"
    );
    let first = data_of(&ops[0]);
    let phone = first["phone"].as_str().unwrap();
    let found = store.customers_by_phone(phone).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ops[0].entity_id);
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(sync.acked_seq, 3);
    assert!(sync.last_push_at.is_some());
}

pub(crate) async fn push_with_a_gap_answers_the_expected_seq(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    store
        .push(site.id, &[customer_op(site.id, 1)], now())
        .await
        .unwrap();
    let gap = store
        .push(site.id, &[customer_op(site.id, 3)], now())
        .await
        .unwrap();
    assert_eq!((gap.acked_seq, gap.expected_seq), (1, Some(2)));
}

pub(crate) async fn rejected_ops_are_reported_and_do_not_block(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let mut poison = customer_op(site.id, 1);
    edit_data(&mut poison, |d| d["first_name"] = serde_json::json!(""));
    let mut hq_owned = customer_op(site.id, 2);
    hq_owned.entity = Entity::Product;
    let good = customer_op(site.id, 3);
    let ops = vec![poison.clone(), hq_owned.clone(), good.clone()];
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);
    let rejected: Vec<i64> = outcome.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(rejected, vec![1, 2]);
    assert!(store.get_customer(good.entity_id).await.unwrap().is_some());
    assert!(
        store
            .get_customer(poison.entity_id)
            .await
            .unwrap()
            .is_none()
    );
    // A replay reports the same rejections, so an edge that lost the answer still learns them.
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(
        replay.rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Waivers only from the site that took them.
    let waiver = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: good.entity_id,
        site_id: Uuid::now_v7(),
        signer_name: "Ada".into(),
        signed_at: now(),
        expires_at: now() + Duration::days(365),
        text_version: None,
    };
    let op = PushOp {
        seq: 4,
        op_id: Uuid::now_v7(),
        entity: Entity::Waiver,
        entity_id: waiver.id,
        kind: OpKind::Upsert,
        data: serde_json::value::to_raw_value(&waiver).unwrap(),
    };
    let outcome = store.push(site.id, &[op], now()).await.unwrap();
    assert_eq!((outcome.acked_seq, outcome.rejected.len()), (4, 1));
}

/// Many writers commit changes while a reader follows the feed with a cursor; afterwards the
/// reader must have seen every change, each once, in increasing seq order.
pub(crate) async fn concurrent_writers_never_make_a_reader_skip_a_change(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let site = new_site(&store).await;
    let start = store.change_head().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.pull(site.id, cursor, 7, usize::MAX).await.unwrap();
                for change in &page {
                    assert!(change.seq > cursor, "seq order");
                    cursor = change.seq;
                    if change.entity == Entity::Product {
                        seen.push(change.entity_id);
                    }
                }
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..PER_WRITER {
                    let p = product(&unique("SKU"));
                    store.create_product(&actor(), &p).await.unwrap();
                    ids.push(p.id);
                }
                ids
            })
        })
        .collect();
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let seen_set: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(seen.len(), seen_set.len(), "no change delivered twice");
    let missing: Vec<_> = written.difference(&seen_set).collect();
    assert!(
        missing.is_empty(),
        "the reader skipped {} committed changes",
        missing.len()
    );
}

/// Customers registered by `site` around now, counted per site (the SQL Server contract shares
/// one database between tests running at once, so a global count would race).
async fn customers_of(store: &Arc<dyn Store>, site: Uuid) -> i64 {
    store
        .daily_report(site, now() - Duration::days(1), now() + Duration::days(1))
        .await
        .expect("daily report")
        .new_customers
}

/// How many changes in `site`'s feed after `head` are about `entity_id`.
async fn changes_for(store: &Arc<dyn Store>, site: Uuid, head: i64, entity_id: Uuid) -> usize {
    pull_all(store, site, head)
        .await
        .iter()
        .filter(|c| c.entity_id == entity_id)
        .count()
}

pub(crate) async fn a_seq_held_under_another_op_id_is_a_fork_and_applies_nothing(
    store: Arc<dyn Store>,
) {
    let site = new_site(&store).await;
    let ops: Vec<PushOp> = (1..=3).map(|seq| customer_op(site.id, seq)).collect();
    let first = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((first.acked_seq, first.forked_at), (3, None));
    let before = customers_of(&store, site.id).await;
    assert_eq!(before, 3);

    // A box restored from a backup: seq 1 is the op central holds, seq 2 onwards are new ops.
    let forked = vec![
        ops[0].clone(),
        customer_op(site.id, 2),
        customer_op(site.id, 3),
        customer_op(site.id, 4),
    ];
    let outcome = store.push(site.id, &forked, now()).await.unwrap();
    assert_eq!(outcome.forked_at, Some(2));
    assert_eq!((outcome.acked_seq, outcome.expected_seq), (3, None));
    assert!(outcome.rejected.is_empty());
    assert_eq!(
        customers_of(&store, site.id).await,
        before,
        "nothing applied"
    );
    for op in &forked[1..] {
        assert_eq!(store.get_customer(op.entity_id).await.unwrap(), None);
    }
    assert_eq!(store.acked_seq(site.id).await.unwrap(), 3);
    assert_eq!(store.site_sync(site.id).await.unwrap().acked_seq, 3);
    assert!(
        store
            .rejected_ops(site.id, DeadLetterState::All, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn an_op_renumbered_after_a_fork_is_acknowledged_and_never_applied_twice(
    store: Arc<dyn Store>,
) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let x = customer_op(site.id, 1);
    assert_eq!(
        store
            .push(site.id, std::slice::from_ref(&x), now())
            .await
            .unwrap()
            .acked_seq,
        1
    );
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);

    // After a fork the edge renumbered its pending ops after acked_seq, keeping their op ids:
    // X (which central already holds) now sits at seq 2. Its payload is changed here only so
    // that a second application would show in the stored row.
    let mut renumbered = PushOp {
        seq: 2,
        ..x.clone()
    };
    edit_data(&mut renumbered, |d| {
        d["first_name"] = serde_json::json!("Twice")
    });
    let y = customer_op(site.id, 3);
    let batch = vec![renumbered, y.clone()];
    let outcome = store.push(site.id, &batch, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);
    assert_eq!((outcome.expected_seq, outcome.forked_at), (None, None));
    assert!(outcome.rejected.is_empty());
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);
    assert_eq!(
        store
            .get_customer(x.entity_id)
            .await
            .unwrap()
            .unwrap()
            .first_name,
        "Ada",
        "X is applied once"
    );
    assert!(store.get_customer(y.entity_id).await.unwrap().is_some());
    assert_eq!(changes_for(&store, site.id, head, y.entity_id).await, 1);

    // A replay of the whole history changes nothing.
    let feed = store.change_head().await.unwrap();
    let all = vec![x.clone(), batch[0].clone(), y.clone()];
    let replay = store.push(site.id, &all, now()).await.unwrap();
    assert_eq!(replay.acked_seq, 3);
    assert_eq!((replay.expected_seq, replay.forked_at), (None, None));
    assert!(replay.rejected.is_empty());
    assert!(
        pull_all(&store, site.id, feed).await.is_empty(),
        "no change"
    );
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);
    assert_eq!(changes_for(&store, site.id, head, y.entity_id).await, 1);
    assert_eq!(customers_of(&store, site.id).await, 2);
}

pub(crate) async fn the_store_id_is_stable_across_reopen(store: Arc<dyn Store>) {
    // Reopening is a SQLite matter (see `sqlite_store_id_survives_reopen`); every backend has
    // one non-nil id that does not change while it is open.
    let id = store.store_id();
    assert!(!id.is_nil());
    assert_eq!(store.store_id(), id);
}

#[tokio::test]
async fn sqlite_store_id_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = store::open(None, dir.path())
        .await
        .expect("open")
        .store_id();
    let again = store::open(None, dir.path())
        .await
        .expect("reopen")
        .store_id();
    assert_eq!(first, again, "the same database keeps its id");
    let other = tempfile::tempdir().expect("temp dir");
    let fresh = store::open(None, other.path())
        .await
        .expect("open")
        .store_id();
    assert_ne!(first, fresh, "another database has another id");
}

pub(crate) async fn change_anchor_identifies_the_entry_at_a_seq(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    store
        .push(site.id, &[customer_op(site.id, 1)], now())
        .await
        .unwrap();
    let changes = pull_all(&store, site.id, head).await;
    assert!(changes.len() >= 2, "the site's row and its customer");
    for change in &changes {
        assert_eq!(
            store.change_anchor(site.id, change.seq).await.unwrap(),
            Some(change.anchor())
        );
    }
    // The site's own row is outside another site's scope.
    let own = changes
        .iter()
        .find(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .unwrap();
    assert_eq!(store.change_anchor(other.id, own.seq).await.unwrap(), None);
    // Nothing is held beyond the head, nor at 0.
    let head = store.change_head().await.unwrap();
    assert_eq!(store.change_anchor(site.id, head + 1).await.unwrap(), None);
    assert_eq!(store.change_anchor(site.id, 0).await.unwrap(), None);
}

pub(crate) async fn change_scopes_name_each_change_with_its_venue(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let sku = product(&unique("SKU"));
    store.create_product(&actor(), &sku).await.unwrap();
    let changes = pull_all(&store, site.id, head).await;
    let seq_of = |id: Uuid| changes.iter().find(|c| c.entity_id == id).unwrap().seq;
    let scopes = store.change_scopes(head, 10_000).await.unwrap();
    assert!(scopes.contains(&store::ChangeScope {
        seq: seq_of(site.id),
        site_id: Some(site.id)
    }));
    assert!(scopes.contains(&store::ChangeScope {
        seq: seq_of(sku.id),
        site_id: None
    }));
    assert!(
        scopes.windows(2).all(|w| w[0].seq < w[1].seq),
        "in seq order"
    );
    assert!(
        scopes.iter().all(|s| s.seq > head),
        "only after the given seq"
    );
    let first = store.change_scopes(head, 1).await.unwrap();
    assert_eq!(first, scopes[..1], "at most the limit, from the start");
}

pub(crate) async fn rejected_ops_are_listed_newest_first(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let mut first = customer_op(site.id, 1);
    edit_data(&mut first, |d| d["first_name"] = serde_json::json!(""));
    let good = customer_op(site.id, 2);
    let mut third = customer_op(site.id, 3);
    third.entity = Entity::Product;
    let at = now();
    let ops = vec![first.clone(), good, third.clone()];
    let outcome = store.push(site.id, &ops, at).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);

    let listed = store
        .rejected_ops(site.id, DeadLetterState::All, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| (r.seq, r.op_id)).collect::<Vec<_>>(),
        vec![(3, third.op_id), (1, first.op_id)]
    );
    for (record, answered) in listed.iter().zip(outcome.rejected.iter().rev()) {
        assert_eq!(record.reason, answered.reason);
        assert!(!record.reason.is_empty());
        assert_eq!(record.rejected_at, at);
    }
    let newest = store
        .rejected_ops(site.id, DeadLetterState::All, None, 1)
        .await
        .unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    assert!(
        store
            .rejected_ops(other.id, DeadLetterState::All, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn a_new_customer_from_another_home_site_is_rejected(store: Arc<dyn Store>) {
    let home = new_site(&store).await;
    let visitor = new_site(&store).await;
    let registered = customer_op(home.id, 1);

    // The visiting venue pushes a customer homed elsewhere that central does not know.
    let early = PushOp {
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    let outcome = store
        .push(visitor.id, std::slice::from_ref(&early), now())
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 1);
    assert_eq!(
        outcome.rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        store.get_customer(registered.entity_id).await.unwrap(),
        None
    );

    // Once the home site registered it, any venue's edit is taken.
    let outcome = store
        .push(home.id, std::slice::from_ref(&registered), now())
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    let mut edit = PushOp {
        seq: 2,
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    edit_data(&mut edit, |d| d["first_name"] = serde_json::json!("Grace"));
    edit_data(&mut edit, |d| {
        d["home_site_id"] = serde_json::json!(visitor.id)
    });
    let outcome = store
        .push(visitor.id, std::slice::from_ref(&edit), now())
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 2);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let stored = store
        .get_customer(registered.entity_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.first_name, "Grace");
    assert_eq!(stored.home_site_id, home.id, "the home site never changes");
}

pub(crate) async fn a_record_pushed_again_with_other_content_is_rejected(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let customer = customer_record(site.id, "Di");
    let order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 1, 1500)],
        &[(TenderKind::Cash, 1500)],
    );
    let entry = ledger_record(site.id, customer.id, Account::Visits, 10);
    store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Customer, customer.id, &customer),
                venue_op(2, Entity::Order, order.id, &order),
                venue_op(3, Entity::LedgerEntry, entry.id, &entry),
            ],
            now(),
        )
        .await
        .unwrap();
    let head = store.change_head().await.unwrap();
    let mut dearer = order.clone();
    dearer.lines[0].unit_price_cents = 2000;
    dearer.lines[0].total_cents = 2000;
    dearer.total_cents = 2000;
    dearer.tenders[0].amount_cents = 2000;
    let bigger = LedgerEntry {
        delta: 11,
        ..entry.clone()
    };
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(4, Entity::Order, order.id, &dearer),
                venue_op(5, Entity::LedgerEntry, entry.id, &bigger),
                venue_op(6, Entity::Order, order.id, &order),
            ],
            now(),
        )
        .await
        .unwrap();
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(rejected[0].1.contains("never changed"), "{rejected:?}");
    assert_eq!(store.change_head().await.unwrap(), head);
    let (from, to) = today();
    assert_eq!(
        store
            .daily_report(site.id, from, to)
            .await
            .unwrap()
            .gross_sales_cents,
        1500
    );
}

pub(crate) async fn a_pull_keeps_the_outbox_backlog_the_edge_reported(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    assert_eq!(store.site_sync(site.id).await.unwrap().outbox, None);

    let oldest = now() - chrono::Duration::minutes(42);
    let backlog = OutboxBacklog {
        pending_ops: 17,
        oldest_pending_at: Some(oldest),
    };
    let at = now();
    store
        .record_pull(site.id, 5, at, Some(backlog))
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.pull_cursor, sync.last_pull_at), (5, Some(at)));
    assert_eq!(sync.outbox, Some(backlog));

    // A pull that says nothing of the outbox leaves the last report as it was.
    store.record_pull(site.id, 6, now(), None).await.unwrap();
    assert_eq!(
        store.site_sync(site.id).await.unwrap().outbox,
        Some(backlog)
    );

    let empty = OutboxBacklog {
        pending_ops: 0,
        oldest_pending_at: None,
    };
    store
        .record_pull(site.id, 7, now(), Some(empty))
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.pull_cursor, sync.outbox), (7, Some(empty)));
}

pub(crate) async fn hint_socket_heartbeats_only_move_forward_and_closes_are_kept(
    store: Arc<dyn Store>,
) {
    let site = new_site(&store).await;
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.hint_seen_at, sync.hint_closed_at), (None, None));

    let heard = now();
    store
        .record_hint_socket(site.id, HintSocketEvent::Heard, heard)
        .await
        .unwrap();
    // A heartbeat written late by another instance, older than the one kept, changes nothing.
    store
        .record_hint_socket(
            site.id,
            HintSocketEvent::Heard,
            heard - chrono::Duration::seconds(20),
        )
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(heard), None)
    );

    let closed = heard + chrono::Duration::seconds(5);
    store
        .record_hint_socket(site.id, HintSocketEvent::Closed, closed)
        .await
        .unwrap();
    let later = closed + chrono::Duration::seconds(7);
    store
        .record_hint_socket(site.id, HintSocketEvent::Heard, later)
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(later), Some(closed))
    );
    // Pulls and pushes leave them alone.
    store.record_pull(site.id, 3, now(), None).await.unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(later), Some(closed))
    );
}

//! Fuzzing central's push-batch decoder and rules through the store: batches of one venue's
//! records, each broken one field at a time or replaced by arbitrary JSON, under any entity and
//! kind. Whatever a venue sends, central answers with each op taken or refused for good (so the
//! venue's outbox never stalls), and the same batch again changes nothing.
//!
//! Bounded for CI; `PROPTEST_CASES=5000 cargo test -p aero-tests --test fuzz_push_batch` runs a
//! longer campaign.

use aero_central::store::{self, Actor, Store};
use aero_shared::wire::{
    GameRecord, OpKind, ProductKind, ProductRecord, PushOp, ScoreOrder, SiteRecord,
};
use aero_tests::fuzz::{Mutation, mutation, venue_day};
use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// What a case does to one op of the day, beyond its record.
#[derive(Clone, Debug)]
enum OpChange {
    Keep,
    /// The op names another kind than its entity takes.
    Kind(OpKind),
    /// The op's entity id is not the record's.
    ForeignId,
}

fn op_change() -> impl Strategy<Value = OpChange> {
    prop_oneof![
        8 => Just(OpChange::Keep),
        1 => prop::sample::select(vec![OpKind::Upsert, OpKind::Delete, OpKind::LedgerAppend, OpKind::Event])
            .prop_map(OpChange::Kind),
        1 => Just(OpChange::ForeignId),
    ]
}

struct Chain {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    game_id: Uuid,
    product_id: Uuid,
    _dir: tempfile::TempDir,
}

impl Chain {
    fn open() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = runtime
            .block_on(store::open(None, dir.path()))
            .expect("open the store");
        let actor = Actor::system("fuzz");
        let game = GameRecord {
            id: Uuid::now_v7(),
            name: "Laser maze".into(),
            score_order: ScoreOrder::HighestWins,
            created_at: Utc::now(),
        };
        let product = ProductRecord {
            id: Uuid::now_v7(),
            sku: "JUMP-60".into(),
            name: "Jump 60 minutes".into(),
            kind: ProductKind::Pass,
            price_cents: 1500,
            duration_minutes: Some(60),
            grant: None,
            active: true,
            created_at: Utc::now(),
        };
        runtime.block_on(async {
            store.create_game(&actor, &game).await.expect("game");
            store
                .create_product(&actor, &product)
                .await
                .expect("product");
        });
        Self {
            runtime,
            store,
            game_id: game.id,
            product_id: product.id,
            _dir: dir,
        }
    }

    fn new_site(&self) -> Uuid {
        let site = SiteRecord {
            id: Uuid::now_v7(),
            name: format!("site-{}", Uuid::now_v7().simple()),
            timezone: "Europe/London".into(),
            allowed_networks: vec![],
            created_at: Utc::now(),
        };
        self.runtime
            .block_on(self.store.create_site(&Actor::system("fuzz"), &site))
            .expect("site");
        site.id
    }
}

#[test]
fn any_batch_is_taken_or_refused_op_by_op_and_a_replay_changes_nothing() {
    let chain = Chain::open();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let day_len = venue_day(Uuid::nil(), Uuid::nil(), Uuid::nil()).len();
    let strategy = prop::collection::vec((mutation(), op_change()), day_len);
    let (taken, refused) = (Cell::new(0usize), Cell::new(0usize));
    runner
        .run(&strategy, |changes| {
            let site = chain.new_site();
            let ops = batch(&chain, site, &changes);
            let last = ops.len() as i64;
            let (first, head_after, replay, head_replayed) = chain.runtime.block_on(async {
                let first = chain.store.push(site, &ops, Utc::now()).await;
                let head_after = chain.store.change_head().await.expect("head");
                let replay = chain.store.push(site, &ops, Utc::now()).await;
                let head_replayed = chain.store.change_head().await.expect("head");
                (first, head_after, replay, head_replayed)
            });
            let first = first.map_err(|err| {
                TestCaseError::fail(format!("the push failed instead of refusing ops: {err}"))
            })?;
            prop_assert_eq!(
                first.acked_seq,
                last,
                "every op is taken or refused for good"
            );
            prop_assert_eq!(first.expected_seq, None);
            prop_assert_eq!(first.forked_at, None);
            for rejected in &first.rejected {
                prop_assert!((1..=last).contains(&rejected.seq));
                prop_assert!(!rejected.reason.trim().is_empty(), "a refusal says why");
            }
            let replay = replay.map_err(|err| TestCaseError::fail(format!("replay: {err}")))?;
            prop_assert_eq!(replay.acked_seq, last);
            let seqs =
                |o: &store::PushOutcome| o.rejected.iter().map(|r| r.seq).collect::<BTreeSet<_>>();
            prop_assert_eq!(
                seqs(&replay),
                seqs(&first),
                "a replay reports the same refusals"
            );
            prop_assert_eq!(head_replayed, head_after, "a replay appends no change");
            refused.set(refused.get() + first.rejected.len());
            taken.set(taken.get() + ops.len() - first.rejected.len());
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    // The campaign reached both paths: ops taken, and ops refused.
    assert!(
        taken.get() > 0 && refused.get() > 0,
        "taken {} refused {}",
        taken.get(),
        refused.get()
    );
}

/// The day's records for `site`, mutated as the case says, as a dense batch from seq 1.
fn batch(chain: &Chain, site: Uuid, changes: &[(Mutation, OpChange)]) -> Vec<PushOp> {
    let day = venue_day(site, chain.game_id, chain.product_id);
    day.iter()
        .zip(changes)
        .enumerate()
        .map(|(index, (sample, (mutation, op_change)))| {
            let sample = mutation.apply(sample);
            let default_kind = match sample.entity {
                aero_shared::wire::Entity::LedgerEntry => OpKind::LedgerAppend,
                _ => OpKind::Upsert,
            };
            let (kind, entity_id) = match op_change {
                OpChange::Keep => (default_kind, sample.id),
                OpChange::Kind(kind) => (*kind, sample.id),
                OpChange::ForeignId => (default_kind, Uuid::now_v7()),
            };
            PushOp {
                seq: index as i64 + 1,
                op_id: Uuid::now_v7(),
                entity: sample.entity,
                entity_id,
                kind,
                data: serde_json::value::to_raw_value(&sample.data).expect("raw data"),
            }
        })
        .collect()
}

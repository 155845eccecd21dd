//! The rules of a push, decided once for both backends: which ops of a batch central applies,
//! which it rejects, which it already holds (a replay) and where a batch forks from what
//! central holds. A backend loads [`Held`] for the batch (what [`Lookup`] names), calls
//! [`plan`], and carries out the [`Step`]s in its own transaction.
//!
//! An op's identity is its `op_id`; its `seq` is only its place in the site's sequence:
//! - an op central holds (same `op_id`, at any seq) is never applied again;
//! - a seq central holds under another `op_id` is a fork (a box restored from a backup, a cloned
//!   VM): central stops there and says so, and the edge renumbers its pending ops after
//!   `acked_seq`;
//! - a seq beyond `acked_seq + 1` is a gap: central stops there and names the seq it expects.
//!
//! Ops are applied in seq order, and what an op takes counts for the ops after it in the same
//! batch: a customer registered at seq 5 is known to a check-in at seq 6, an order pushed at
//! seq 7 can be refunded at seq 8, and an op refused at seq 9 can be resolved (retried or
//! discarded at the venue) by a dead-letter resolution at seq 10.

use super::{PushOutcome, VenueWrite};
use aero_shared::wire::{
    CheckinRecord, Entity, LedgerEntry, OrderRecord, PlugOverrideRecord, PushOp, RefundRecord,
    RejectedOp, ScoreRecord,
};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// One op central already holds for the site.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOp {
    pub seq: i64,
    pub op_id: Uuid,
    /// The reason, when central refused it for good.
    pub rejected: Option<String>,
}

/// What the rules of a pushed write look at besides the write itself: what central holds of
/// what the batch touches (loaded by the backend, see [`Lookup`]), plus what earlier ops of the
/// same batch took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Known {
    /// The customers central holds, of those the batch pushes or refers to.
    pub customers: HashSet<Uuid>,
    /// The games central holds, of those the batch's scores are for.
    pub games: HashSet<Uuid>,
    /// The orders central holds, of those the batch pushes or refunds.
    pub orders: HashMap<Uuid, OrderRecord>,
    /// The refunds central holds, of those the batch pushes, and every refund of the orders
    /// the batch refunds.
    pub refunds: HashMap<Uuid, RefundRecord>,
    /// The ledger entries, check-ins and scores central holds under the batch's ids.
    pub ledger_entries: HashMap<Uuid, LedgerEntry>,
    pub checkins: HashMap<Uuid, CheckinRecord>,
    pub scores: HashMap<Uuid, ScoreRecord>,
    /// The site of each plug central holds, of those the batch's plug statuses and overrides
    /// are about.
    pub plugs: HashMap<Uuid, Uuid>,
    /// The plug overrides central holds under the batch's ids.
    pub plug_overrides: HashMap<Uuid, PlugOverrideRecord>,
    /// The ops central refused for good from the site, of those the batch's dead-letter
    /// resolutions name (and those the batch itself refuses).
    pub rejected_ops: HashSet<Uuid>,
}

impl Known {
    /// Notes a write the batch takes, for the ops after it. A venue record already held stays
    /// as held (the write was a no-op).
    pub fn take(&mut self, write: &VenueWrite) {
        match write {
            VenueWrite::Customer(c) => {
                self.customers.insert(c.id);
            }
            VenueWrite::Waiver(_) => {}
            VenueWrite::Order(o) => {
                self.orders.entry(o.id).or_insert_with(|| o.clone());
            }
            VenueWrite::Refund(r) => {
                self.refunds.entry(r.id).or_insert_with(|| r.clone());
            }
            VenueWrite::LedgerEntry(e) => {
                self.ledger_entries.entry(e.id).or_insert_with(|| e.clone());
            }
            VenueWrite::Checkin(c) => {
                self.checkins.entry(c.id).or_insert_with(|| c.clone());
            }
            VenueWrite::Score(s) => {
                self.scores.entry(s.id).or_insert_with(|| s.clone());
            }
            VenueWrite::PlugOverride(o) => {
                self.plug_overrides.entry(o.id).or_insert_with(|| o.clone());
            }
            VenueWrite::DeadLetterResolved { .. } | VenueWrite::PlugStatus(_) => {}
        }
    }

    /// The refunds taken from `order_id` other than `except`, oldest first.
    pub fn refunds_of(&self, order_id: Uuid, except: Uuid) -> Vec<RefundRecord> {
        let mut refunds: Vec<RefundRecord> = self
            .refunds
            .values()
            .filter(|r| r.order_id == order_id && r.id != except)
            .cloned()
            .collect();
        refunds.sort_by_key(|r| (r.created_at, r.id));
        refunds
    }
}

/// What central holds that a batch could touch, loaded by the backend inside the push's
/// transaction (after it locked the site's sync row).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Held {
    /// The highest contiguous seq central holds for the site.
    pub acked_seq: i64,
    /// The ops held at the batch's seqs that are `<= acked_seq`, by seq.
    pub by_seq: HashMap<i64, HeldOp>,
    /// The ops held under the batch's op ids, by op id.
    pub by_op_id: HashMap<Uuid, HeldOp>,
    /// The rows the batch's writes are checked against (see [`Lookup`] for which).
    pub known: Known,
}

impl Held {
    pub fn new(
        acked_seq: i64,
        held: impl IntoIterator<Item = HeldOp>,
        known_customers: impl IntoIterator<Item = Uuid>,
    ) -> Self {
        let mut this = Self {
            acked_seq,
            known: Known {
                customers: known_customers.into_iter().collect(),
                ..Known::default()
            },
            ..Self::default()
        };
        for op in held {
            this.by_op_id.insert(op.op_id, op.clone());
            this.by_seq.insert(op.seq, op);
        }
        this
    }
}

/// What a backend must look up to build [`Held`] for a batch. Every id list is sorted and
/// holds each id once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lookup {
    /// Held ops with `first_seq <= seq <= last_seq` (only those up to `acked_seq` exist).
    pub first_seq: i64,
    pub last_seq: i64,
    /// Held ops with these op ids, at any seq.
    pub op_ids: Vec<Uuid>,
    /// Which of these customers central holds: the batch's customers, and the customers its
    /// check-ins, scores and ledger entries are for.
    pub customer_ids: Vec<Uuid>,
    /// Which of these games central holds: the games the batch's scores are for.
    pub game_ids: Vec<Uuid>,
    /// The orders central holds with these ids: the batch's orders and the orders it refunds.
    pub order_ids: Vec<Uuid>,
    /// Every refund central holds of these orders: the orders the batch refunds.
    pub refunded_order_ids: Vec<Uuid>,
    /// The refunds, ledger entries, check-ins and scores central holds with these ids.
    pub refund_ids: Vec<Uuid>,
    pub ledger_entry_ids: Vec<Uuid>,
    pub checkin_ids: Vec<Uuid>,
    pub score_ids: Vec<Uuid>,
    /// Which of these plugs central holds, and at which site: those the batch's statuses and
    /// overrides are about.
    pub plug_ids: Vec<Uuid>,
    /// The plug overrides central holds with these ids.
    pub plug_override_ids: Vec<Uuid>,
    /// Which of these ops (named by dead-letter resolutions) central refused from the site.
    pub resolved_op_ids: Vec<Uuid>,
}

/// The references a venue record's rules check, read from an op's data without decoding the
/// whole record (an op that does not decode is refused later, by `VenueWrite::decode`).
#[derive(Default, Deserialize)]
struct Refs {
    #[serde(default)]
    customer_id: Option<Uuid>,
    #[serde(default)]
    game_id: Option<Uuid>,
    #[serde(default)]
    order_id: Option<Uuid>,
    #[serde(default)]
    plug_id: Option<Uuid>,
}

impl Lookup {
    pub fn of(ops: &[PushOp]) -> Self {
        let mut customers = BTreeSet::new();
        let mut games = BTreeSet::new();
        let mut orders = BTreeSet::new();
        let mut refunded = BTreeSet::new();
        let mut refunds = BTreeSet::new();
        let mut ledger_entries = BTreeSet::new();
        let mut checkins = BTreeSet::new();
        let mut scores = BTreeSet::new();
        let mut plugs = BTreeSet::new();
        let mut plug_overrides = BTreeSet::new();
        for op in ops {
            let refs = || serde_json::from_str::<Refs>(op.data.get()).unwrap_or_default();
            match op.entity {
                Entity::Customer => {
                    customers.insert(op.entity_id);
                }
                Entity::Order => {
                    orders.insert(op.entity_id);
                }
                Entity::Refund => {
                    refunds.insert(op.entity_id);
                    if let Some(order) = refs().order_id {
                        orders.insert(order);
                        refunded.insert(order);
                    }
                }
                Entity::LedgerEntry => {
                    ledger_entries.insert(op.entity_id);
                    customers.extend(refs().customer_id);
                }
                Entity::Checkin => {
                    checkins.insert(op.entity_id);
                    customers.extend(refs().customer_id);
                }
                Entity::Score => {
                    scores.insert(op.entity_id);
                    let refs = refs();
                    customers.extend(refs.customer_id);
                    games.extend(refs.game_id);
                }
                Entity::PlugStatus => {
                    plugs.insert(op.entity_id);
                }
                Entity::PlugOverride => {
                    plug_overrides.insert(op.entity_id);
                    plugs.extend(refs().plug_id);
                }
                _ => {}
            }
        }
        Self {
            first_seq: ops.iter().map(|op| op.seq).min().unwrap_or(0),
            last_seq: ops.iter().map(|op| op.seq).max().unwrap_or(0),
            op_ids: ops
                .iter()
                .map(|op| op.op_id)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            customer_ids: customers.into_iter().collect(),
            game_ids: games.into_iter().collect(),
            order_ids: orders.into_iter().collect(),
            refunded_order_ids: refunded.into_iter().collect(),
            refund_ids: refunds.into_iter().collect(),
            ledger_entry_ids: ledger_entries.into_iter().collect(),
            checkin_ids: checkins.into_iter().collect(),
            score_ids: scores.into_iter().collect(),
            plug_ids: plugs.into_iter().collect(),
            plug_override_ids: plug_overrides.into_iter().collect(),
            resolved_op_ids: ops
                .iter()
                .filter(|op| op.entity == Entity::DeadLetter)
                .map(|op| op.entity_id)
                .collect(),
        }
    }
}

/// What a backend does for one op, in order, inside the push's transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Apply the write and record `(seq, op_id)` as applied.
    Apply {
        seq: i64,
        op_id: Uuid,
        write: VenueWrite,
    },
    /// Record `(seq, op_id)` as refused for good; nothing is applied.
    Reject {
        seq: i64,
        op_id: Uuid,
        reason: String,
    },
    /// The op is already held at another seq (the edge renumbered it after a fork): record
    /// `(seq, op_id)` so the sequence stays dense, and apply nothing.
    Alias {
        seq: i64,
        op_id: Uuid,
        rejected: Option<String>,
    },
}

/// The outcome of [`plan`]: the steps to carry out and the answer to give.
#[derive(Clone, Debug, PartialEq)]
pub struct PushPlan {
    pub steps: Vec<Step>,
    pub outcome: PushOutcome,
}

/// Decides a batch pushed by `site_id`. `check` may refuse a decoded write a backend cannot
/// store (a permanent rejection with its reason).
pub fn plan(
    site_id: Uuid,
    ops: &[PushOp],
    held: &Held,
    mut check: impl FnMut(&VenueWrite) -> Result<(), String>,
) -> PushPlan {
    let mut sorted: Vec<&PushOp> = ops.iter().collect();
    sorted.sort_by_key(|op| op.seq);
    let mut acked = held.acked_seq;
    let mut steps = Vec::new();
    let mut rejected = Vec::new();
    let mut expected_seq = None;
    let mut forked_at = None;
    // Ops this batch takes, so an op id repeated inside the batch is an alias too.
    let mut taken: HashMap<Uuid, Option<String>> = HashMap::new();
    // What central holds, plus what this batch has taken so far.
    let mut known = held.known.clone();
    let mut reject = |seq: i64, op_id: Uuid, reason: &str| {
        rejected.push(RejectedOp {
            seq,
            op_id,
            reason: reason.to_string(),
        });
    };
    for op in sorted {
        let already = held
            .by_op_id
            .get(&op.op_id)
            .map(|h| h.rejected.clone())
            .or_else(|| taken.get(&op.op_id).cloned());
        if op.seq <= acked {
            match held.by_seq.get(&op.seq) {
                Some(h) if h.op_id == op.op_id => {
                    // A replay: answered as the first time, applied never again.
                    if let Some(reason) = &h.rejected {
                        reject(op.seq, op.op_id, reason);
                    }
                }
                _ => match already {
                    // Held at another seq: nothing to do, the edge may let it go.
                    Some(reason) => {
                        if let Some(reason) = reason {
                            reject(op.seq, op.op_id, &reason);
                        }
                    }
                    // Central holds this seq under another op: the edge's sequence forked.
                    None => {
                        forked_at = Some(op.seq);
                        break;
                    }
                },
            }
            continue;
        }
        if op.seq != acked + 1 {
            expected_seq = Some(acked + 1);
            break;
        }
        match already {
            Some(reason) => {
                if let Some(reason) = &reason {
                    reject(op.seq, op.op_id, reason);
                }
                steps.push(Step::Alias {
                    seq: op.seq,
                    op_id: op.op_id,
                    rejected: reason,
                });
            }
            None => {
                match VenueWrite::decode(site_id, op, &known)
                    .and_then(|write| check(&write).map(|()| write))
                {
                    Ok(write) => {
                        known.take(&write);
                        taken.insert(op.op_id, None);
                        steps.push(Step::Apply {
                            seq: op.seq,
                            op_id: op.op_id,
                            write,
                        });
                    }
                    Err(reason) => {
                        reject(op.seq, op.op_id, &reason);
                        known.rejected_ops.insert(op.op_id);
                        taken.insert(op.op_id, Some(reason.clone()));
                        steps.push(Step::Reject {
                            seq: op.seq,
                            op_id: op.op_id,
                            reason,
                        });
                    }
                }
            }
        }
        acked = op.seq;
    }
    PushPlan {
        steps,
        outcome: PushOutcome {
            acked_seq: acked,
            expected_seq,
            rejected,
            forked_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    /// Edits the op's record: the tree `edit` leaves is what the op sends.
    fn edit_data(op: &mut PushOp, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut data: serde_json::Value = serde_json::from_str(op.data.get()).unwrap();
        edit(&mut data);
        op.data = raw(data);
    }
    use aero_shared::wire::{Entity, OpKind};

    fn op(seq: i64, op_id: Uuid) -> PushOp {
        PushOp {
            seq,
            op_id,
            entity: Entity::Customer,
            entity_id: Uuid::now_v7(),
            kind: OpKind::Upsert,
            data: raw(serde_json::Value::Null),
        }
    }

    fn held(seq: i64, op_id: Uuid, rejected: Option<&str>) -> HeldOp {
        HeldOp {
            seq,
            op_id,
            rejected: rejected.map(str::to_string),
        }
    }

    fn any(_: &VenueWrite) -> Result<(), String> {
        Ok(())
    }

    fn kinds(plan: &PushPlan) -> Vec<(&'static str, i64)> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Apply { seq, .. } => ("apply", *seq),
                Step::Reject { seq, .. } => ("reject", *seq),
                Step::Alias { seq, .. } => ("alias", *seq),
            })
            .collect()
    }

    #[test]
    fn a_replayed_batch_applies_nothing_and_repeats_its_rejections() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let state = Held::new(2, [held(1, a, None), held(2, b, Some("bad"))], []);
        let plan = plan(SITE, &[op(1, a), op(2, b)], &state, |_| {
            panic!("never decoded")
        });
        assert!(plan.steps.is_empty());
        assert_eq!(plan.outcome.acked_seq, 2);
        assert_eq!(plan.outcome.rejected.len(), 1);
        assert_eq!(plan.outcome.forked_at, None);
    }

    #[test]
    fn a_held_seq_under_another_op_id_is_a_fork_not_a_replay() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let state = Held::new(2, [held(1, a, None), held(2, b, None)], []);
        let plan = plan(
            SITE,
            &[op(1, a), op(2, c), op(3, Uuid::now_v7())],
            &state,
            any,
        );
        assert!(plan.steps.is_empty(), "nothing after a fork is taken");
        assert_eq!(plan.outcome.forked_at, Some(2));
        assert_eq!(plan.outcome.acked_seq, 2);
    }

    #[test]
    fn an_op_held_at_another_seq_is_recorded_as_an_alias_and_never_applied_again() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let state = Held::new(1, [held(1, a, None)], []);
        // `a` renumbered to 2 after a fork; `b` repeated inside the batch; an invalid op last.
        let mut broken = op(5, Uuid::now_v7());
        broken.data = raw(serde_json::json!({ "not": "a customer" }));
        let plan = plan(
            SITE,
            &[op(2, a), customer_op(3, b), customer_op(4, b), broken],
            &state,
            any,
        );
        assert_eq!(
            kinds(&plan),
            [("alias", 2), ("apply", 3), ("alias", 4), ("reject", 5)]
        );
        assert_eq!(plan.outcome.acked_seq, 5);
    }

    #[test]
    fn a_gap_names_the_seq_central_expects() {
        let plan = plan(SITE, &[op(5, Uuid::now_v7())], &Held::new(3, [], []), any);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.outcome.expected_seq, Some(4));
        assert_eq!(plan.outcome.acked_seq, 3);
    }

    #[test]
    fn a_new_customer_is_taken_only_from_its_home_site_but_a_known_one_from_any() {
        let elsewhere = Uuid::from_u128(2);
        let mut foreign = customer_op(1, Uuid::now_v7());
        edit_data(&mut foreign, |d| {
            d["home_site_id"] = serde_json::json!(elsewhere)
        });
        let refused = plan(SITE, std::slice::from_ref(&foreign), &Held::default(), any);
        assert_eq!(kinds(&refused), [("reject", 1)]);
        let known = Held::new(0, [], [foreign.entity_id]);
        let taken = plan(SITE, &[foreign], &known, any);
        assert_eq!(kinds(&taken), [("apply", 1)]);
    }

    fn venue_op(
        seq: i64,
        entity: Entity,
        kind: OpKind,
        id: Uuid,
        data: impl serde::Serialize,
    ) -> PushOp {
        PushOp {
            seq,
            op_id: Uuid::now_v7(),
            entity,
            entity_id: id,
            kind,
            data: serde_json::value::to_raw_value(&data).unwrap(),
        }
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        "2026-05-01T12:00:00Z".parse().unwrap()
    }

    fn order_record(paid_cash: i64, paid_card: i64) -> OrderRecord {
        use aero_shared::wire::{OrderLine, ProductKind, Tender, TenderKind};
        let tender = |kind, amount_cents| Tender {
            kind,
            amount_cents,
            received_cents: None,
            change_cents: 0,
            reference: None,
        };
        let total = paid_cash + paid_card;
        OrderRecord {
            id: Uuid::now_v7(),
            site_id: SITE,
            customer_id: None,
            lines: vec![OrderLine {
                product_id: Uuid::now_v7(),
                sku: "JUMP60".into(),
                name: "Jump 60".into(),
                kind: ProductKind::Pass,
                quantity: 1,
                unit_price_cents: total,
                total_cents: total,
            }],
            tenders: [(TenderKind::Cash, paid_cash), (TenderKind::Card, paid_card)]
                .into_iter()
                .filter(|(_, amount)| *amount > 0)
                .map(|(kind, amount)| tender(kind, amount))
                .collect(),
            total_cents: total,
            change_cents: 0,
            sold_by: "device:x".into(),
            created_at: at(),
        }
    }

    fn refund_record(order: &OrderRecord, cash: i64) -> RefundRecord {
        use aero_shared::wire::{RefundTender, TenderKind};
        RefundRecord {
            id: Uuid::now_v7(),
            order_id: order.id,
            site_id: order.site_id,
            tenders: vec![RefundTender {
                kind: TenderKind::Cash,
                amount_cents: cash,
            }],
            total_cents: cash,
            reason: "broken".into(),
            refunded_by: "user:x".into(),
            created_at: at(),
        }
    }

    fn checkin_record(customer_id: Uuid) -> CheckinRecord {
        CheckinRecord {
            id: Uuid::now_v7(),
            site_id: SITE,
            customer_id,
            wristband: "W-1".into(),
            product_id: Uuid::now_v7(),
            order_id: Some(Uuid::now_v7()),
            ledger_entry_id: None,
            starts_at: at(),
            ends_at: at() + chrono::Duration::hours(1),
            created_at: at(),
        }
    }

    fn reasons(plan: &PushPlan) -> Vec<(i64, String)> {
        plan.outcome
            .rejected
            .iter()
            .map(|r| (r.seq, r.reason.clone()))
            .collect()
    }

    #[test]
    fn a_checkin_needs_its_customer_which_counts_once_registered_earlier_in_the_batch() {
        let registered = customer_op(1, Uuid::now_v7());
        let ok = checkin_record(registered.entity_id);
        let stranger = checkin_record(Uuid::now_v7());
        let ops = [
            registered,
            venue_op(2, Entity::Checkin, OpKind::Upsert, ok.id, &ok),
            venue_op(3, Entity::Checkin, OpKind::Upsert, stranger.id, &stranger),
        ];
        let plan = plan(SITE, &ops, &Held::default(), any);
        assert_eq!(kinds(&plan), [("apply", 1), ("apply", 2), ("reject", 3)]);
        assert!(reasons(&plan)[0].1.contains("does not hold"), "{plan:?}");
    }

    #[test]
    fn a_refund_is_checked_against_its_order_and_the_refunds_before_it() {
        let order = order_record(1000, 2000);
        let first = refund_record(&order, 600);
        let too_much = refund_record(&order, 500);
        let rest = refund_record(&order, 400);
        let unknown = refund_record(&order_record(100, 0), 50);
        let ops = [
            venue_op(1, Entity::Order, OpKind::Upsert, order.id, &order),
            venue_op(2, Entity::Refund, OpKind::Upsert, first.id, &first),
            venue_op(3, Entity::Refund, OpKind::Upsert, too_much.id, &too_much),
            venue_op(4, Entity::Refund, OpKind::Upsert, rest.id, &rest),
            venue_op(5, Entity::Refund, OpKind::Upsert, unknown.id, &unknown),
        ];
        let taken = plan(SITE, &ops, &Held::default(), any);
        assert_eq!(
            kinds(&taken),
            [
                ("apply", 1),
                ("apply", 2),
                ("reject", 3),
                ("apply", 4),
                ("reject", 5)
            ]
        );
        let reasons = reasons(&taken);
        assert!(reasons[0].1.contains("400 cents left"), "{reasons:?}");
        assert!(reasons[1].1.contains("does not hold"), "{reasons:?}");

        // The same refunds against what central already holds.
        let mut held = Held::default();
        held.known.orders.insert(order.id, order.clone());
        held.known.refunds.insert(first.id, first.clone());
        let later = refund_record(&order, 401);
        let plan = plan(
            SITE,
            &[venue_op(
                1,
                Entity::Refund,
                OpKind::Upsert,
                later.id,
                &later,
            )],
            &held,
            any,
        );
        assert_eq!(kinds(&plan), [("reject", 1)]);
    }

    #[test]
    fn a_venue_record_is_written_once_and_never_changed() {
        let order = order_record(1500, 0);
        let mut held = Held::default();
        held.known.orders.insert(order.id, order.clone());
        let mut changed = order.clone();
        changed.sold_by = "device:y".into();
        let ops = [
            venue_op(1, Entity::Order, OpKind::Upsert, order.id, &order),
            venue_op(2, Entity::Order, OpKind::Upsert, order.id, &changed),
        ];
        let plan = plan(SITE, &ops, &held, any);
        assert_eq!(kinds(&plan), [("apply", 1), ("reject", 2)]);
        assert!(reasons(&plan)[0].1.contains("never changed"), "{plan:?}");
    }

    #[test]
    fn venue_records_come_from_their_own_site_under_their_own_id_and_kind() {
        use aero_shared::wire::{Account, LedgerEntry, LedgerReason};
        let customer = Uuid::now_v7();
        let entry = LedgerEntry {
            id: Uuid::now_v7(),
            customer_id: customer,
            account: Account::ArcadeCredits,
            delta: -5,
            reason: LedgerReason::Spend,
            ref_id: None,
            site_id: SITE,
            created_at: at(),
            expires_at: None,
        };
        let foreign = LedgerEntry {
            id: Uuid::now_v7(),
            site_id: Uuid::from_u128(9),
            ..entry.clone()
        };
        let order = order_record(100, 0);
        let ops = [
            venue_op(
                1,
                Entity::LedgerEntry,
                OpKind::LedgerAppend,
                entry.id,
                &entry,
            ),
            venue_op(2, Entity::LedgerEntry, OpKind::Upsert, entry.id, &entry),
            venue_op(
                3,
                Entity::LedgerEntry,
                OpKind::LedgerAppend,
                foreign.id,
                &foreign,
            ),
            venue_op(4, Entity::Order, OpKind::LedgerAppend, order.id, &order),
            venue_op(5, Entity::Order, OpKind::Upsert, Uuid::now_v7(), &order),
        ];
        let plan = plan(SITE, &ops, &Held::new(0, [], [customer]), any);
        assert_eq!(
            kinds(&plan),
            [
                ("apply", 1),
                ("reject", 2),
                ("reject", 3),
                ("reject", 4),
                ("reject", 5)
            ]
        );
    }

    #[test]
    fn a_score_needs_its_game_and_its_customer() {
        let customer = Uuid::now_v7();
        let game = Uuid::now_v7();
        let score = |game_id| ScoreRecord {
            id: Uuid::now_v7(),
            site_id: SITE,
            game_id,
            customer_id: customer,
            score: 42,
            device_id: None,
            created_at: at(),
        };
        let (good, no_game) = (score(game), score(Uuid::now_v7()));
        let mut held = Held::new(0, [], [customer]);
        held.known.games.insert(game);
        let ops = [
            venue_op(1, Entity::Score, OpKind::Upsert, good.id, &good),
            venue_op(2, Entity::Score, OpKind::Upsert, no_game.id, &no_game),
        ];
        let plan = plan(SITE, &ops, &held, any);
        assert_eq!(kinds(&plan), [("apply", 1), ("reject", 2)]);
        assert!(reasons(&plan)[0].1.contains("game"), "{plan:?}");
    }

    #[test]
    fn a_lookup_names_what_the_rules_check() {
        let order = order_record(100, 0);
        let refund = refund_record(&order, 50);
        let checkin = checkin_record(Uuid::now_v7());
        let ops = [
            venue_op(1, Entity::Refund, OpKind::Upsert, refund.id, &refund),
            venue_op(2, Entity::Checkin, OpKind::Upsert, checkin.id, &checkin),
        ];
        let lookup = Lookup::of(&ops);
        assert_eq!(lookup.order_ids, [order.id]);
        assert_eq!(lookup.refunded_order_ids, [order.id]);
        assert_eq!(lookup.refund_ids, [refund.id]);
        assert_eq!(lookup.checkin_ids, [checkin.id]);
        assert_eq!(lookup.customer_ids, [checkin.customer_id]);
        assert!(lookup.game_ids.is_empty());
    }

    const SITE: Uuid = Uuid::from_u128(1);

    fn customer_op(seq: i64, op_id: Uuid) -> PushOp {
        let id = Uuid::now_v7();
        PushOp {
            entity_id: id,
            data: raw(serde_json::json!({
                "id": id, "first_name": "Ana", "last_name": "Lee", "birth_date": "1990-01-01",
                "phone": null, "email": null, "guardian_id": null, "home_site_id": SITE,
                "created_at": "2026-01-01T00:00:00Z",
            })),
            ..op(seq, op_id)
        }
    }

    fn resolution_op(seq: i64, resolved: Uuid, retried_as: Option<Uuid>) -> PushOp {
        PushOp {
            seq,
            op_id: Uuid::now_v7(),
            entity: Entity::DeadLetter,
            entity_id: resolved,
            kind: OpKind::Event,
            data: raw(serde_json::json!({
                "op_id": resolved,
                "resolution": if retried_as.is_some() { "retried" } else { "discarded" },
                "retried_as": retried_as, "by": "venue-manager", "at": "2026-01-02T03:04:05Z",
            })),
        }
    }

    #[test]
    fn a_resolution_is_taken_only_for_an_op_central_refused_from_the_site() {
        let (refused, applied, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut state = Held::new(
            2,
            [held(1, refused, Some("bad")), held(2, applied, None)],
            [],
        );
        state.known.rejected_ops.insert(refused);
        let plan = plan(
            SITE,
            &[
                resolution_op(3, refused, Some(Uuid::now_v7())),
                resolution_op(4, applied, None),
                resolution_op(5, unknown, None),
            ],
            &state,
            any,
        );
        assert_eq!(kinds(&plan), [("apply", 3), ("reject", 4), ("reject", 5)]);
        match &plan.steps[0] {
            Step::Apply {
                write:
                    VenueWrite::DeadLetterResolved {
                        site_id,
                        resolution,
                    },
                ..
            } => {
                assert_eq!(*site_id, SITE);
                assert_eq!(resolution.op_id, refused);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            plan.outcome.rejected[0]
                .reason
                .contains("not an op central refused")
        );
    }

    #[test]
    fn a_resolution_of_an_op_refused_earlier_in_the_same_batch_is_taken() {
        let broken = Uuid::now_v7();
        let plan = plan(
            SITE,
            &[op(1, broken), resolution_op(2, broken, None)],
            &Held::default(),
            any,
        );
        assert_eq!(kinds(&plan), [("reject", 1), ("apply", 2)]);
    }

    #[test]
    fn a_resolution_must_say_who_decided_and_what_became_of_the_op() {
        let refused = Uuid::now_v7();
        let mut state = Held::default();
        state.known.rejected_ops.insert(refused);
        let mut no_new_op = resolution_op(1, refused, Some(Uuid::now_v7()));
        edit_data(&mut no_new_op, |d| {
            d["retried_as"] = serde_json::Value::Null
        });
        let mut discarded_into_an_op = resolution_op(2, refused, None);
        edit_data(&mut discarded_into_an_op, |d| {
            d["retried_as"] = serde_json::json!(Uuid::now_v7())
        });
        let as_itself = resolution_op(3, refused, Some(refused));
        let mut nobody = resolution_op(4, refused, None);
        edit_data(&mut nobody, |d| d["by"] = serde_json::json!("  "));
        let mut other_op = resolution_op(5, refused, None);
        other_op.entity_id = Uuid::now_v7();
        let mut not_an_event = resolution_op(6, refused, None);
        not_an_event.kind = OpKind::Upsert;
        let ops = [
            no_new_op,
            discarded_into_an_op,
            as_itself,
            nobody,
            other_op,
            not_an_event,
        ];
        let plan = plan(SITE, &ops, &state, any);
        assert!(
            plan.steps.iter().all(|s| matches!(s, Step::Reject { .. })),
            "{:?}",
            plan.steps
        );
        assert_eq!(plan.outcome.rejected.len(), ops.len());
    }
}

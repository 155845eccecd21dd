//! The rules of a push, decided once for both backends: which ops of a batch central applies,
//! which it rejects, which it already holds (a replay) and where a batch forks from what
//! central holds. A backend loads [`Held`] for the batch, calls [`plan`], and carries out the
//! [`Step`]s in its own transaction.
//!
//! An op's identity is its `op_id`; its `seq` is only its place in the site's sequence:
//! - an op central holds (same `op_id`, at any seq) is never applied again;
//! - a seq central holds under another `op_id` is a fork (a box restored from a backup, a cloned
//!   VM): central stops there and says so, and the edge renumbers its pending ops after
//!   `acked_seq`;
//! - a seq beyond `acked_seq + 1` is a gap: central stops there and names the seq it expects.
//!
//! What makes an op valid is decided by [`VenueWrite::decode`] from what central holds: whether
//! it knows the customer an op is about, and whether the op a dead-letter resolution names is
//! one it refused from the pushing site (earlier, or in this very batch).

use super::{Known, PushOutcome, VenueWrite};
use aero_shared::wire::Entity;
use aero_shared::wire::{PushOp, RejectedOp};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One op central already holds for the site.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOp {
    pub seq: i64,
    pub op_id: Uuid,
    /// The reason, when central refused it for good.
    pub rejected: Option<String>,
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
    /// The customers of the batch that central already holds.
    pub known_customers: HashSet<Uuid>,
    /// The ops named by the batch's dead-letter resolutions that central refused from the site.
    pub rejected_ops: HashSet<Uuid>,
}

impl Held {
    pub fn new(
        acked_seq: i64,
        held: impl IntoIterator<Item = HeldOp>,
        known_customers: impl IntoIterator<Item = Uuid>,
    ) -> Self {
        let mut this = Self {
            acked_seq,
            known_customers: known_customers.into_iter().collect(),
            ..Self::default()
        };
        for op in held {
            this.by_op_id.insert(op.op_id, op.clone());
            this.by_seq.insert(op.seq, op);
        }
        this
    }
}

/// What a backend must look up to build [`Held`] for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// Held ops with `first_seq <= seq <= last_seq` (only those up to `acked_seq` exist).
    pub first_seq: i64,
    pub last_seq: i64,
    /// Held ops with these op ids, at any seq.
    pub op_ids: Vec<Uuid>,
    /// Which of these customers central holds.
    pub customer_ids: Vec<Uuid>,
    /// Which of these ops (named by dead-letter resolutions) central refused from the site.
    pub resolved_op_ids: Vec<Uuid>,
}

impl Lookup {
    pub fn of(ops: &[PushOp]) -> Self {
        Self {
            first_seq: ops.iter().map(|op| op.seq).min().unwrap_or(0),
            last_seq: ops.iter().map(|op| op.seq).max().unwrap_or(0),
            op_ids: ops.iter().map(|op| op.op_id).collect(),
            customer_ids: ops
                .iter()
                .filter(|op| op.entity == Entity::Customer)
                .map(|op| op.entity_id)
                .collect(),
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
                let known = Known {
                    customer: held.known_customers.contains(&op.entity_id),
                    rejected_op: held.rejected_ops.contains(&op.entity_id)
                        || taken.get(&op.entity_id).is_some_and(Option::is_some),
                };
                match VenueWrite::decode(site_id, op, known)
                    .and_then(|write| check(&write).map(|()| write))
                {
                    Ok(write) => {
                        taken.insert(op.op_id, None);
                        steps.push(Step::Apply {
                            seq: op.seq,
                            op_id: op.op_id,
                            write,
                        });
                    }
                    Err(reason) => {
                        reject(op.seq, op.op_id, &reason);
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
    use aero_shared::wire::{Entity, OpKind};

    fn op(seq: i64, op_id: Uuid) -> PushOp {
        PushOp {
            seq,
            op_id,
            entity: Entity::Customer,
            entity_id: Uuid::now_v7(),
            kind: OpKind::Upsert,
            data: serde_json::Value::Null,
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
        broken.data = serde_json::json!({ "not": "a customer" });
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
        foreign.data["home_site_id"] = serde_json::json!(elsewhere);
        let refused = plan(SITE, std::slice::from_ref(&foreign), &Held::default(), any);
        assert_eq!(kinds(&refused), [("reject", 1)]);
        let known = Held::new(0, [], [foreign.entity_id]);
        let taken = plan(SITE, &[foreign], &known, any);
        assert_eq!(kinds(&taken), [("apply", 1)]);
    }

    fn resolution_op(seq: i64, resolved: Uuid, retried_as: Option<Uuid>) -> PushOp {
        PushOp {
            seq,
            op_id: Uuid::now_v7(),
            entity: Entity::DeadLetter,
            entity_id: resolved,
            kind: OpKind::Event,
            data: serde_json::json!({
                "op_id": resolved,
                "resolution": if retried_as.is_some() { "retried" } else { "discarded" },
                "retried_as": retried_as, "by": "venue-manager", "at": "2026-01-02T03:04:05Z",
            }),
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
        state.rejected_ops.insert(refused);
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
        state.rejected_ops.insert(refused);
        let mut no_new_op = resolution_op(1, refused, Some(Uuid::now_v7()));
        no_new_op.data["retried_as"] = serde_json::Value::Null;
        let mut discarded_into_an_op = resolution_op(2, refused, None);
        discarded_into_an_op.data["retried_as"] = serde_json::json!(Uuid::now_v7());
        let as_itself = resolution_op(3, refused, Some(refused));
        let mut nobody = resolution_op(4, refused, None);
        nobody.data["by"] = serde_json::json!("  ");
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

    const SITE: Uuid = Uuid::from_u128(1);

    fn customer_op(seq: i64, op_id: Uuid) -> PushOp {
        let id = Uuid::now_v7();
        PushOp {
            entity_id: id,
            data: serde_json::json!({
                "id": id, "first_name": "Ana", "last_name": "Lee", "birth_date": "1990-01-01",
                "phone": null, "email": null, "guardian_id": null, "home_site_id": SITE,
                "created_at": "2026-01-01T00:00:00Z",
            }),
            ..op(seq, op_id)
        }
    }
}

//! Dead letters: HQ's requests to a venue and the venue's resolutions.

use aero_central::store::{AuditFilter, DeadLetterState, Store, StoreError};
use aero_shared::wire::{
    ChangeEntity, DeadLetterAction, DeadLetterRequest, DeadLetterResolution, Entity, OpKind,
    PushOp, Resolution,
};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

/// The `dead_letter` event op an edge queues when a manager retries or discards a dead letter.
fn resolution_op(seq: i64, resolved: Uuid, retried_as: Option<Uuid>, by: &str) -> PushOp {
    let resolution = DeadLetterResolution {
        op_id: resolved,
        resolution: if retried_as.is_some() {
            Resolution::Retried
        } else {
            Resolution::Discarded
        },
        retried_as,
        by: by.into(),
        at: now() - Duration::seconds(5),
    };
    PushOp {
        seq,
        op_id: Uuid::now_v7(),
        entity: Entity::DeadLetter,
        entity_id: resolved,
        kind: OpKind::Event,
        data: serde_json::value::to_raw_value(&resolution).unwrap(),
    }
}

async fn seqs_in(store: &Arc<dyn Store>, site: Uuid, state: DeadLetterState) -> Vec<i64> {
    store
        .rejected_ops(site, state, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

pub(crate) async fn hq_dead_letter_requests_reach_only_their_site_and_stop_once_resolved(
    store: Arc<dyn Store>,
) {
    let venue = new_site(&store).await;
    let other = new_site(&store).await;
    let mut broken = customer_op(venue.id, 1);
    edit_data(&mut broken, |d| d["last_name"] = serde_json::json!(""));
    let outcome = store
        .push(venue.id, std::slice::from_ref(&broken), now())
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    let head = store.change_head().await.unwrap();
    let request = |site_id, op_id, action| DeadLetterRequest {
        op_id,
        site_id,
        action,
        requested_by: "hq-admin".into(),
        requested_at: now(),
    };

    // Only an op central refused from that very site can be asked about.
    for unknown in [
        request(venue.id, Uuid::now_v7(), DeadLetterAction::Retry),
        request(other.id, broken.op_id, DeadLetterAction::Retry),
    ] {
        let refused = store.request_dead_letter_action(&actor(), &unknown).await;
        assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    }
    assert_eq!(store.change_head().await.unwrap(), head, "nothing written");

    // A request is listed with the open dead letter, audited, and published to the site alone;
    // a later request replaces it.
    let retry = request(venue.id, broken.op_id, DeadLetterAction::Retry);
    store
        .request_dead_letter_action(&actor(), &retry)
        .await
        .unwrap();
    let discard = request(venue.id, broken.op_id, DeadLetterAction::Discard);
    store
        .request_dead_letter_action(&actor(), &discard)
        .await
        .unwrap();
    let open = store
        .rejected_ops(venue.id, DeadLetterState::Open, None, 10)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].request.as_ref(), Some(&discard));
    let published: Vec<DeadLetterRequest> = pull_all(&store, venue.id, head)
        .await
        .into_iter()
        .filter(|c| c.entity == ChangeEntity::Known(Entity::DeadLetterRequest))
        .map(|c| {
            assert_eq!(c.entity_id, broken.op_id);
            serde_json::from_value(c.data).unwrap()
        })
        .collect();
    assert_eq!(published, [retry.clone(), discard.clone()]);
    assert!(
        pull_all(&store, other.id, head)
            .await
            .iter()
            .all(|c| c.entity != ChangeEntity::Known(Entity::DeadLetterRequest)),
        "another venue never sees the request"
    );
    let audited: Vec<String> = store
        .list_audit(&AuditFilter::site(venue.id), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        audited,
        [
            "dead_letter.discard_requested",
            "dead_letter.retry_requested"
        ]
    );

    // Once the venue's decision arrives, the dead letter is resolved and HQ's request stays
    // with it; asking again is a conflict that writes nothing.
    let decided = store
        .push(
            venue.id,
            &[resolution_op(2, broken.op_id, None, "hq-admin")],
            now(),
        )
        .await
        .unwrap();
    assert!(decided.rejected.is_empty(), "{:?}", decided.rejected);
    let resolved = store
        .rejected_ops(venue.id, DeadLetterState::Resolved, None, 10)
        .await
        .unwrap();
    assert_eq!(resolved[0].request.as_ref(), Some(&discard));
    let head = store.change_head().await.unwrap();
    let late = store.request_dead_letter_action(&actor(), &retry).await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    assert_eq!(store.change_head().await.unwrap(), head, "nothing written");
}

pub(crate) async fn dead_letter_resolutions_are_recorded_once_and_only_for_refused_ops(
    store: Arc<dyn Store>,
) {
    let home = new_site(&store).await;
    let visitor = new_site(&store).await;
    let registered = customer_op(home.id, 1);

    // The visiting venue edits a customer central does not know yet (its home venue has not
    // pushed it), and pushes a broken record: both refused.
    let mut edit = PushOp {
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    edit_data(&mut edit, |d| d["first_name"] = serde_json::json!("Grace"));
    let mut broken = customer_op(visitor.id, 2);
    edit_data(&mut broken, |d| d["last_name"] = serde_json::json!(""));
    let outcome = store
        .push(visitor.id, &[edit.clone(), broken.clone()], now())
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 2);
    assert_eq!(
        seqs_in(&store, visitor.id, DeadLetterState::Open).await,
        [2, 1]
    );
    assert!(
        seqs_in(&store, visitor.id, DeadLetterState::Resolved)
            .await
            .is_empty()
    );

    // Once the home venue registered the customer, the visitor's manager retries the edit: the
    // same write under a new op id, which central now applies, then the decision itself. The
    // broken record is discarded. The resolutions name the refused ops.
    store
        .push(home.id, std::slice::from_ref(&registered), now())
        .await
        .unwrap();
    let retry = PushOp {
        seq: 3,
        op_id: Uuid::now_v7(),
        ..edit.clone()
    };
    let retried = resolution_op(4, edit.op_id, Some(retry.op_id), "venue-manager");
    let discarded = resolution_op(5, broken.op_id, None, "venue-manager");
    let recorded_at = now();
    let batch = [retry.clone(), retried.clone(), discarded.clone()];
    let outcome = store.push(visitor.id, &batch, recorded_at).await.unwrap();
    assert_eq!(outcome.acked_seq, 5);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let customer = store
        .get_customer(registered.entity_id)
        .await
        .unwrap()
        .expect("the retried edit applied");
    assert_eq!(customer.first_name, "Grace");

    assert!(
        seqs_in(&store, visitor.id, DeadLetterState::Open)
            .await
            .is_empty()
    );
    let resolved = store
        .rejected_ops(visitor.id, DeadLetterState::Resolved, None, 100)
        .await
        .unwrap();
    assert_eq!(
        resolved.iter().map(|r| r.op_id).collect::<Vec<_>>(),
        [broken.op_id, edit.op_id]
    );
    let first = resolved[1].resolution.as_ref().expect("resolution");
    assert_eq!(first.how, Resolution::Retried);
    assert_eq!(first.retried_as, Some(retry.op_id));
    assert_eq!(first.by, "venue-manager");
    assert_eq!(
        first.at,
        serde_json::from_str::<DeadLetterResolution>(retried.data.get())
            .unwrap()
            .at
    );
    assert_eq!(first.resolution_op_id, retried.op_id);
    assert_eq!(first.recorded_at, recorded_at);
    let second = resolved[0].resolution.as_ref().expect("resolution");
    assert_eq!(
        (second.how, second.retried_as),
        (Resolution::Discarded, None)
    );

    // Replayed (a lost answer) and renumbered after a fork: recorded once, never again.
    let later = recorded_at + Duration::minutes(5);
    let replay = store.push(visitor.id, &batch, later).await.unwrap();
    assert_eq!((replay.acked_seq, replay.rejected.len()), (5, 0));
    let renumbered = PushOp {
        seq: 6,
        ..retried.clone()
    };
    let outcome = store.push(visitor.id, &[renumbered], later).await.unwrap();
    assert_eq!((outcome.acked_seq, outcome.rejected.len()), (6, 0));
    let again = store
        .rejected_ops(visitor.id, DeadLetterState::Resolved, None, 100)
        .await
        .unwrap();
    assert_eq!(again, resolved, "a replayed resolution is applied once");

    // A resolution for an op central never refused from that site is itself refused: an op it
    // applied, an op it does not know, and another site's refused op.
    let outcome = store
        .push(
            visitor.id,
            &[
                resolution_op(7, retry.op_id, None, "venue-manager"),
                resolution_op(8, Uuid::now_v7(), None, "venue-manager"),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [7, 8]
    );
    let outcome = store
        .push(
            home.id,
            &[resolution_op(2, broken.op_id, None, "elsewhere")],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(seqs_in(&store, home.id, DeadLetterState::Open).await, [2]);
    assert_eq!(
        seqs_in(&store, visitor.id, DeadLetterState::Open).await,
        [8, 7]
    );
    assert_eq!(
        seqs_in(&store, visitor.id, DeadLetterState::All).await,
        [8, 7, 2, 1]
    );

    // A box restored from a backup may decide again about the same op: the last one stands.
    let decided_again = resolution_op(9, broken.op_id, None, "night-manager");
    store
        .push(visitor.id, std::slice::from_ref(&decided_again), now())
        .await
        .unwrap();
    let resolved = store
        .rejected_ops(visitor.id, DeadLetterState::Resolved, None, 100)
        .await
        .unwrap();
    let latest = resolved[0].resolution.as_ref().expect("resolution");
    assert_eq!(
        (
            resolved[0].op_id,
            latest.by.as_str(),
            latest.resolution_op_id
        ),
        (broken.op_id, "night-manager", decided_again.op_id)
    );
}

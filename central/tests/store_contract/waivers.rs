//! Waiver texts: published versions, and the version each signed waiver keeps.

use aero_central::store::{AuditFilter, Store, WaiverTextDraft};
use aero_shared::wire::{Entity, WaiverRecord, WaiverTextRecord};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

fn waiver_text_draft(title: &str) -> WaiverTextDraft {
    WaiverTextDraft {
        id: Uuid::now_v7(),
        title: title.into(),
        body: "I understand that trampolining carries a risk of injury.\n\tSigned below.".into(),
        published_at: now(),
        published_by: "hq-owner".into(),
    }
}

/// Versions count up from the highest the store holds (1 and 2 on a fresh database); each
/// publication is audited and replicated chain-wide; concurrent publications never share one.
pub(crate) async fn waiver_texts_are_published_as_the_next_version_newest_first(
    store: Arc<dyn Store>,
) {
    let site = new_site(&store).await;
    let base = store
        .list_waiver_texts(None, 1)
        .await
        .unwrap()
        .first()
        .map_or(0, |t| t.version);
    let head = store.change_head().await.unwrap();
    let first = store
        .publish_waiver_text(&actor(), &waiver_text_draft("Waiver 2025"))
        .await
        .unwrap();
    let draft = waiver_text_draft("Waiver 2026");
    let second = store.publish_waiver_text(&actor(), &draft).await.unwrap();
    assert_eq!((first.version, second.version), (base + 1, base + 2));
    assert_eq!(second, draft.published_as(base + 2));

    let listed = store.list_waiver_texts(None, 500).await.unwrap();
    assert_eq!(listed[..2], [second.clone(), first.clone()]);
    assert!(listed.windows(2).all(|w| w[0].version > w[1].version));
    // A page resumes below the last version it showed.
    assert_eq!(
        store
            .list_waiver_texts(Some(second.version), 1)
            .await
            .unwrap(),
        std::slice::from_ref(&first)
    );

    let changes: Vec<_> = pull_all(&store, site.id, head)
        .await
        .into_iter()
        .filter(|c| c.entity == Entity::WaiverText)
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    for (change, text) in changes.iter().zip([&first, &second]) {
        assert_eq!((change.entity_id, change.site_id), (text.id, None));
        assert_eq!(
            &serde_json::from_value::<WaiverTextRecord>(change.data.clone()).unwrap(),
            text
        );
    }
    let published = AuditFilter {
        action: Some("waiver_text.published".into()),
        ..AuditFilter::default()
    };
    let audited = store.list_audit(&published, 50).await.unwrap();
    for text in [&first, &second] {
        assert!(
            audited.iter().any(|e| e.action == "waiver_text.published"
                && e.target == Some(text.id.to_string())
                && e.actor_name == "contract-test"
                && e.site_id.is_none()),
            "{audited:?}"
        );
    }

    // Publications racing each other each take a version of their own, with no gap.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .publish_waiver_text(&actor(), &waiver_text_draft(&format!("Racing {i}")))
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in racing {
        versions.push(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, ((base + 3)..=(base + 10)).collect::<Vec<_>>());
}

/// A pushed waiver keeps the version of the text its signer was shown, in the store and in the
/// change feed; one queued by an edge that predates texts has none; a version below 1 is
/// refused.
pub(crate) async fn a_waiver_keeps_the_text_version_it_was_signed_under(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let customer = customer_record(site.id, "Wanda");
    let waiver = |text_version| WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: customer.id,
        site_id: site.id,
        signer_name: "Wanda".into(),
        signed_at: now(),
        expires_at: now() + Duration::days(365),
        text_version,
    };
    let (signed, old) = (waiver(Some(2)), waiver(None));
    let mut old_op = venue_op(3, Entity::Waiver, old.id, &old);
    edit_data(&mut old_op, |data| {
        data.as_object_mut()
            .unwrap()
            .remove("text_version")
            .expect("the field");
    });
    let zero = waiver(Some(0));
    let head = store.change_head().await.unwrap();
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Customer, customer.id, &customer),
                venue_op(2, Entity::Waiver, signed.id, &signed),
                old_op,
                venue_op(4, Entity::Waiver, zero.id, &zero),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 4);
    let rejected: Vec<i64> = outcome.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(rejected, [4], "{:?}", outcome.rejected);

    let mut held = store.waivers_for(customer.id).await.unwrap();
    held.sort_by_key(|w| w.id);
    assert_eq!(held, [signed.clone(), old.clone()]);
    let replicated: Vec<WaiverRecord> = pull_all(&store, site.id, head)
        .await
        .into_iter()
        .filter(|c| c.entity == Entity::Waiver)
        .map(|c| serde_json::from_value(c.data).unwrap())
        .collect();
    assert_eq!(replicated, [signed, old]);
}

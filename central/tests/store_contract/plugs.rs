//! Smart plugs: status reports from venues and overrides from HQ and venues.

use aero_central::store::Store;
use aero_shared::wire::{
    ChangeEntity, Entity, OpKind, PlugOverrideRecord, PlugRecord, PlugStatusRecord, PowerState,
    PushOp, SiteRecord,
};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

/// A site with a plug, and a plug of another site.
async fn plugs_at_two_sites(store: &Arc<dyn Store>) -> (SiteRecord, PlugRecord, PlugRecord) {
    let site = new_site(store).await;
    let other = new_site(store).await;
    let plug_at = |site_id: Uuid| PlugRecord {
        id: Uuid::now_v7(),
        site_id,
        name: unique("Plug"),
        host: "192.0.2.10".into(),
        port: 9999,
        child_id: None,
        created_at: now(),
    };
    let (ours, theirs) = (plug_at(site.id), plug_at(other.id));
    for plug in [&ours, &theirs] {
        store.create_plug(&actor(), plug).await.unwrap();
    }
    (site, ours, theirs)
}

pub(crate) async fn a_venue_reports_its_own_plugs_status_and_the_latest_is_kept(
    store: Arc<dyn Store>,
) {
    let (site, ours, theirs) = plugs_at_two_sites(&store).await;
    let status = |plug_id: Uuid, state: Option<PowerState>, reachable: bool| PlugStatusRecord {
        plug_id,
        site_id: site.id,
        state,
        reachable,
        last_seen: reachable.then(now),
        power_mw: Some(1_250),
        problem: (!reachable).then(|| "the plug did not answer within 3s".to_string()),
        observed_at: now(),
    };
    let event = |seq: i64, status: &PlugStatusRecord| PushOp {
        kind: OpKind::Event,
        ..venue_op(seq, Entity::PlugStatus, status.plug_id, status)
    };
    let on = status(ours.id, Some(PowerState::On), true);
    let lost = status(ours.id, Some(PowerState::On), false);
    let not_ours = status(theirs.id, None, true);
    let unknown = status(Uuid::now_v7(), None, true);
    let outcome = store
        .push(
            site.id,
            &[
                event(1, &on),
                event(2, &lost),
                event(3, &not_ours),
                event(4, &unknown),
            ],
            now(),
        )
        .await
        .unwrap();
    let refused: Vec<i64> = rejections(&outcome)
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(refused, vec![3, 4], "{:?}", rejections(&outcome));
    // The later report replaced the earlier one; nothing is kept for another site's plug.
    assert_eq!(store.plug_statuses(site.id).await.unwrap(), vec![lost]);
    assert_eq!(store.plug_statuses(theirs.site_id).await.unwrap(), vec![]);
}

pub(crate) async fn plug_overrides_from_hq_and_the_venue_are_kept_once_and_replicated(
    store: Arc<dyn Store>,
) {
    let (site, ours, theirs) = plugs_at_two_sites(&store).await;
    let set = |plug: &PlugRecord, on: bool, by: &str| PlugOverrideRecord {
        id: Uuid::now_v7(),
        plug_id: plug.id,
        site_id: site.id,
        state: if on { PowerState::On } else { PowerState::Off },
        set_at: now(),
        until: now() + Duration::hours(2),
        set_by: by.into(),
    };
    let from_hq = set(&ours, true, "ana");
    store
        .create_plug_override(&actor(), &from_hq)
        .await
        .unwrap();
    let from_venue = set(&ours, false, "morgan");
    let altered = PlugOverrideRecord {
        set_by: "someone else".into(),
        ..from_venue.clone()
    };
    let not_ours = set(&theirs, false, "morgan");
    let head = store.change_head().await.unwrap();
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::PlugOverride, from_venue.id, &from_venue),
                venue_op(2, Entity::PlugOverride, from_venue.id, &from_venue),
                venue_op(3, Entity::PlugOverride, altered.id, &altered),
                venue_op(4, Entity::PlugOverride, not_ours.id, &not_ours),
            ],
            now(),
        )
        .await
        .unwrap();
    let refused: Vec<i64> = rejections(&outcome)
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(refused, vec![3, 4], "{:?}", rejections(&outcome));
    let listed: Vec<Uuid> = store
        .plug_overrides(ours.id, None, 500)
        .await
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        listed,
        vec![from_venue.id, from_hq.id],
        "newest first, each once"
    );
    // The venue's override goes back to its site (a rebuilt box gets it again), once.
    let replicated: Vec<Uuid> = pull_all(&store, site.id, head)
        .await
        .into_iter()
        .filter(|c| c.entity == ChangeEntity::Known(Entity::PlugOverride))
        .map(|c| c.entity_id)
        .collect();
    assert_eq!(replicated, vec![from_venue.id]);
}

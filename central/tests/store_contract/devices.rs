//! Devices and enrollment: API keys, single-use tokens, and one live credential per edge.

use aero_central::store::{AuditFilter, EnrollmentToken, Redeemed, Store};
use aero_shared::auth::principal::DeviceKind;
use aero_shared::wire::{DeviceRecord, Entity};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn device_keys_resolve_until_revoked(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let hash = unique("hash");
    let d = device(site.id, &hash);
    store.create_device(&actor(), &d).await.unwrap();
    assert_eq!(
        store.device_by_key_hash(&hash).await.unwrap().map(|x| x.id),
        Some(d.id)
    );
    assert!(store.revoke_device(&actor(), d.id, now()).await.unwrap());
    assert!(
        !store.revoke_device(&actor(), d.id, now()).await.unwrap(),
        "second revoke is a no-op"
    );
    assert_eq!(store.device_by_key_hash(&hash).await.unwrap(), None);
    let stored = store.get_device(d.id).await.unwrap().unwrap();
    assert!(stored.revoked_at.is_some());
    // The revocation replicates: the newest change for the device carries revoked_at.
    let last = pull_all(&store, site.id, head)
        .await
        .into_iter()
        .rfind(|c| c.entity_id == d.id)
        .unwrap();
    assert!(last.data["revoked_at"].is_string());
}

pub(crate) async fn enrollment_tokens_are_single_use_and_expire(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let token = EnrollmentToken {
        id: Uuid::now_v7(),
        site_id: site.id,
        token_hash: unique("token"),
        created_at: now(),
        expires_at: now() + Duration::hours(1),
    };
    store
        .create_enrollment_token(&actor(), &token)
        .await
        .unwrap();
    let edge = DeviceRecord {
        kind: DeviceKind::Edge,
        ..device(Uuid::nil(), &unique("edge"))
    };
    match store
        .redeem_enrollment_token(&token.token_hash, now(), &edge)
        .await
        .unwrap()
    {
        Redeemed::Enrolled {
            site: enrolled,
            acked_seq,
        } => {
            assert_eq!(enrolled.id, site.id);
            assert_eq!(acked_seq, 0);
        }
        Redeemed::Refused => panic!("a fresh token must enroll"),
    }
    let resolved = store
        .device_by_key_hash(&edge.key_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resolved.site_id, resolved.kind),
        (site.id, DeviceKind::Edge)
    );
    let again = DeviceRecord {
        id: Uuid::now_v7(),
        key_hash: unique("edge"),
        ..edge.clone()
    };
    assert_eq!(
        store
            .redeem_enrollment_token(&token.token_hash, now(), &again)
            .await
            .unwrap(),
        Redeemed::Refused
    );
    let expired = EnrollmentToken {
        id: Uuid::now_v7(),
        token_hash: unique("token"),
        expires_at: now() - Duration::seconds(1),
        ..token
    };
    store
        .create_enrollment_token(&actor(), &expired)
        .await
        .unwrap();
    assert_eq!(
        store
            .redeem_enrollment_token(&expired.token_hash, now(), &again)
            .await
            .unwrap(),
        Redeemed::Refused
    );
}

async fn new_token(store: &Arc<dyn Store>, site_id: Uuid) -> EnrollmentToken {
    let token = EnrollmentToken {
        id: Uuid::now_v7(),
        site_id,
        token_hash: unique("token"),
        created_at: now(),
        expires_at: now() + Duration::hours(1),
    };
    store
        .create_enrollment_token(&actor(), &token)
        .await
        .unwrap();
    token
}

fn edge_device() -> DeviceRecord {
    DeviceRecord {
        kind: DeviceKind::Edge,
        name: "edge".into(),
        ..device(Uuid::nil(), &unique("edge"))
    }
}

pub(crate) async fn a_new_enrollment_revokes_the_previous_edge_credential(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let elsewhere = new_site(&store).await;
    let kiosk = device(site.id, &unique("hash"));
    store.create_device(&actor(), &kiosk).await.unwrap();

    let (a, b, c) = (edge_device(), edge_device(), edge_device());
    for (edge, site_id) in [(&a, site.id), (&c, elsewhere.id)] {
        let token = new_token(&store, site_id).await;
        let redeemed = store
            .redeem_enrollment_token(&token.token_hash, now(), edge)
            .await
            .unwrap();
        assert!(matches!(redeemed, Redeemed::Enrolled { .. }));
    }
    assert!(
        store
            .device_by_key_hash(&a.key_hash)
            .await
            .unwrap()
            .is_some()
    );

    let token = new_token(&store, site.id).await;
    let redeemed = store
        .redeem_enrollment_token(&token.token_hash, now(), &b)
        .await
        .unwrap();
    assert!(matches!(redeemed, Redeemed::Enrolled { .. }));
    assert_eq!(store.device_by_key_hash(&a.key_hash).await.unwrap(), None);
    assert_eq!(
        store
            .device_by_key_hash(&b.key_hash)
            .await
            .unwrap()
            .map(|d| d.id),
        Some(b.id)
    );
    assert!(
        store
            .get_device(a.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    // Only the site's edges are fenced: its kiosk and another site's edge keep working.
    assert!(
        store
            .device_by_key_hash(&kiosk.key_hash)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .device_by_key_hash(&c.key_hash)
            .await
            .unwrap()
            .is_some()
    );

    // The revocation replicates to the site, before the new edge's own row.
    let feed = pull_all(&store, site.id, head).await;
    let revoked = feed
        .iter()
        .rfind(|ch| ch.entity == Entity::Device && ch.entity_id == a.id)
        .expect("A's revocation in the site's feed");
    assert_eq!(revoked.site_id, Some(site.id));
    assert!(revoked.data["revoked_at"].is_string(), "{}", revoked.data);
    let enrolled = feed
        .iter()
        .rfind(|ch| ch.entity == Entity::Device && ch.entity_id == b.id)
        .expect("B's enrollment in the site's feed");
    assert!(revoked.seq < enrolled.seq);
    assert!(enrolled.data["revoked_at"].is_null());
    assert!(
        !pull_all(&store, elsewhere.id, head)
            .await
            .iter()
            .any(|ch| ch.entity_id == a.id || ch.entity_id == b.id)
    );
    let entries = store
        .list_audit(&AuditFilter::site(site.id), 10)
        .await
        .unwrap();
    let fence = entries
        .iter()
        .find(|e| e.action == "edge.fence")
        .expect("the fence is audited");
    assert_eq!(fence.target, Some(a.id.to_string()));
    assert_eq!(fence.actor_id, Some(b.id));
}

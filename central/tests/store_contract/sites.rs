//! Sites: their records, updates and concurrency control, and how they replicate.

use aero_central::store::{self, AuditFilter, SiteChanges, Store, StoreError};
use aero_shared::etag::IfMatch;
use aero_shared::wire::{Entity, SiteRecord};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn sites_round_trip_and_appear_in_the_change_feed(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    assert_eq!(store.get_site(site.id).await.unwrap(), Some(site.clone()));
    assert!(store.list_sites(None, 500).await.unwrap().contains(&site));
    let changes = pull_all(&store, site.id, head).await;
    let change = changes
        .iter()
        .find(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .expect("the site's own change");
    assert_eq!(change.site_id, Some(site.id));
    let replicated: SiteRecord = serde_json::from_value(change.data.clone()).unwrap();
    assert_eq!(replicated, site);
}

pub(crate) async fn site_updates_round_trip_and_replicate_to_the_site(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let head = store.change_head().await.unwrap();
    let at = now() + Duration::seconds(5);
    let edited = SiteRecord {
        name: unique("renamed"),
        timezone: "America/New_York".into(),
        allowed_networks: vec![
            "10.20.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        // Ignored: a site's creation time never changes.
        created_at: now() + Duration::days(1),
        ..site.clone()
    };
    store
        .update_site(&actor(), site.id, &all_of(&edited), &IfMatch::Absent, at)
        .await
        .unwrap();
    let expected = SiteRecord {
        created_at: site.created_at,
        ..edited.clone()
    };
    assert_eq!(
        store.get_site(site.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.get_site(other.id).await.unwrap(),
        Some(other.clone()),
        "other sites are untouched"
    );

    // The stored row replicates to the site itself, and to no other site.
    let changes = pull_all(&store, site.id, head).await;
    let last = changes
        .iter()
        .rfind(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .expect("a change for the updated site");
    assert_eq!(last.site_id, Some(site.id));
    let replicated: SiteRecord = serde_json::from_value(last.data.clone()).unwrap();
    assert_eq!(replicated, expected);
    assert!(
        !pull_all(&store, other.id, head)
            .await
            .iter()
            .any(|c| c.entity_id == site.id),
        "a site's settings must not leak to another site"
    );
    let entries = store
        .list_audit(&AuditFilter::site(site.id), 1)
        .await
        .unwrap();
    assert_eq!(entries[0].action, "site.update");
    assert_eq!(entries[0].target, Some(site.id.to_string()));
    assert_eq!(entries[0].at, at);

    // Writing what is already stored changes nothing and appends nothing.
    let head = store.change_head().await.unwrap();
    store
        .update_site(
            &actor(),
            site.id,
            &all_of(&expected),
            &IfMatch::Absent,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.change_head().await.unwrap(), head);
    // A rename that only changes case is a change (whatever the database's collation).
    let shouted = SiteRecord {
        name: expected.name.to_uppercase(),
        ..expected.clone()
    };
    store
        .update_site(
            &actor(),
            site.id,
            &all_of(&shouted),
            &IfMatch::Absent,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.get_site(site.id).await.unwrap(), Some(shouted));
    assert!(store.change_head().await.unwrap() > head);

    let unknown = SiteRecord {
        id: Uuid::now_v7(),
        ..expected
    };
    let err = store
        .update_site(
            &actor(),
            unknown.id,
            &all_of(&unknown),
            &IfMatch::Absent,
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.get_site(unknown.id).await.unwrap(), None);
}

pub(crate) async fn concurrent_site_updates_of_different_fields_both_land(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let name = unique("renamed");
    let rename = SiteChanges {
        name: Some(name.clone()),
        ..SiteChanges::default()
    };
    let move_zone = SiteChanges {
        timezone: Some("Europe/Dublin".into()),
        ..SiteChanges::default()
    };
    let who = actor();
    let (a, b) = tokio::join!(
        store.update_site(&who, site.id, &rename, &IfMatch::Absent, now()),
        store.update_site(&who, site.id, &move_zone, &IfMatch::Absent, now()),
    );
    a.unwrap();
    b.unwrap();
    let expected = SiteRecord {
        name,
        timezone: "Europe/Dublin".into(),
        ..site.clone()
    };
    assert_eq!(
        store.get_site(site.id).await.unwrap(),
        Some(expected.clone())
    );

    // The feed's last entry for the site is the stored row, both edits included.
    let last = pull_all(&store, site.id, 0)
        .await
        .into_iter()
        .rfind(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .expect("a change for the site");
    let replicated: SiteRecord = serde_json::from_value(last.data).unwrap();
    assert_eq!(replicated, expected);
}

pub(crate) async fn a_site_update_with_a_stale_entity_tag_writes_nothing(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let read = store::site_etag(&site);
    let renamed = store
        .update_site(
            &actor(),
            site.id,
            &SiteChanges {
                name: Some(unique("first")),
                ..SiteChanges::default()
            },
            &IfMatch::Tags(vec![read.clone()]),
            now(),
        )
        .await
        .unwrap();
    assert_ne!(store::site_etag(&renamed), read);

    // A second edit based on the first read is refused, and nothing of it is written.
    let head = store.change_head().await.unwrap();
    let err = store
        .update_site(
            &actor(),
            site.id,
            &SiteChanges {
                timezone: Some("Asia/Tokyo".into()),
                ..SiteChanges::default()
            },
            &IfMatch::Tags(vec![read]),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "{err:?}");
    assert_eq!(
        store.get_site(site.id).await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(store.change_head().await.unwrap(), head);

    // Based on the current tag, or on any (`*`), it goes ahead.
    let zoned = store
        .update_site(
            &actor(),
            site.id,
            &SiteChanges {
                timezone: Some("Asia/Tokyo".into()),
                ..SiteChanges::default()
            },
            &IfMatch::Tags(vec![store::site_etag(&renamed)]),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(zoned.timezone, "Asia/Tokyo");
    assert_eq!(zoned.name, renamed.name);
    let err = store
        .update_site(
            &actor(),
            Uuid::now_v7(),
            &all_of(&site),
            &IfMatch::Any,
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

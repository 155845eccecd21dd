//! Staff users: disabling them, their token versions, and where their changes replicate.

use aero_central::store::{AuditFilter, Store, StoreError, UserChanges};
use aero_shared::auth::principal::Role;
use aero_shared::wire::{Entity, UserRecord};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn disabling_a_user_is_idempotent_keeps_the_row_and_replicates(
    store: Arc<dyn Store>,
) {
    let a = new_site(&store).await;
    let b = new_site(&store).await;
    let elsewhere = new_site(&store).await;
    let mut sites = vec![a.id, b.id];
    sites.sort();
    let staff = user(Role::Staff, sites.clone());
    store.create_user(&actor(), &staff).await.unwrap();
    assert_eq!(store.get_user(staff.id).await.unwrap(), Some(staff.clone()));
    let head = store.change_head().await.unwrap();

    let at = now() + Duration::seconds(5);
    assert!(store.disable_user(&actor(), staff.id, at).await.unwrap());
    let after_first = store.change_head().await.unwrap();
    assert!(
        !store.disable_user(&actor(), staff.id, now()).await.unwrap(),
        "a second disable is a no-op"
    );
    assert_eq!(
        store.change_head().await.unwrap(),
        after_first,
        "a second disable appends nothing"
    );

    // The row stays, with the first disable's time and its token version bumped once.
    let disabled = UserRecord {
        disabled_at: Some(at),
        token_version: staff.token_version + 1,
        ..staff.clone()
    };
    assert_eq!(
        store.get_user(staff.id).await.unwrap(),
        Some(disabled.clone())
    );
    assert_eq!(
        store.user_by_username(&staff.username).await.unwrap(),
        Some(disabled.clone())
    );
    assert!(
        store
            .list_users(None, 500)
            .await
            .unwrap()
            .contains(&disabled)
    );

    // Each of the user's sites pulls the disabled record; other sites do not.
    for site in [a.id, b.id] {
        let last = pull_all(&store, site, head)
            .await
            .into_iter()
            .rfind(|c| c.entity == Entity::User && c.entity_id == staff.id)
            .expect("the disable replicates to each of the user's sites");
        assert_eq!(last.site_id, Some(site));
        assert!(last.data["disabled_at"].is_string(), "{}", last.data);
        let replicated: UserRecord = serde_json::from_value(last.data).unwrap();
        assert_eq!(replicated, disabled);
    }
    assert!(
        !pull_all(&store, elsewhere.id, head)
            .await
            .iter()
            .any(|c| c.entity_id == staff.id)
    );
    let entries = store
        .list_audit(&AuditFilter::site(sites[0]), 1)
        .await
        .unwrap();
    assert_eq!(entries[0].action, "user.disable");
    assert_eq!(entries[0].target, Some(staff.id.to_string()));

    // A chain-wide user's disable replicates chain-wide.
    let admin = user(Role::Admin, vec![]);
    store.create_user(&actor(), &admin).await.unwrap();
    let head = store.change_head().await.unwrap();
    assert!(store.disable_user(&actor(), admin.id, now()).await.unwrap());
    let last = pull_all(&store, elsewhere.id, head)
        .await
        .into_iter()
        .rfind(|c| c.entity_id == admin.id)
        .expect("an admin's disable reaches every site");
    assert_eq!(last.site_id, None);
    assert!(last.data["disabled_at"].is_string(), "{}", last.data);

    // Unknown users: nothing to disable, nothing written.
    let head = store.change_head().await.unwrap();
    let nobody = Uuid::now_v7();
    assert!(!store.disable_user(&actor(), nobody, now()).await.unwrap());
    assert_eq!(store.get_user(nobody).await.unwrap(), None);
    assert_eq!(store.change_head().await.unwrap(), head);
}

/// The last replicated record of `user` that `site` pulls after `head`, with the scope it had.
async fn last_user_change(
    store: &Arc<dyn Store>,
    site: Uuid,
    head: i64,
    user: Uuid,
) -> Option<(Option<Uuid>, UserRecord)> {
    pull_all(store, site, head)
        .await
        .into_iter()
        .rfind(|c| c.entity == Entity::User && c.entity_id == user)
        .map(|c| (c.site_id, serde_json::from_value(c.data).unwrap()))
}

pub(crate) async fn a_user_change_bumps_its_token_version_and_reaches_old_and_new_sites(
    store: Arc<dyn Store>,
) {
    let (a, b, c) = (
        new_site(&store).await,
        new_site(&store).await,
        new_site(&store).await,
    );
    let elsewhere = new_site(&store).await;
    let mut sites = vec![a.id, b.id];
    sites.sort();
    let staff = user(Role::Staff, sites);
    store.create_user(&actor(), &staff).await.unwrap();
    assert_eq!(store.user_token_version(staff.id).await.unwrap(), Some(0));
    let head = store.change_head().await.unwrap();

    // Moved from a and b to b and c, and promoted: only what was sent changes.
    let at = now();
    let changes = UserChanges {
        role: Some(Role::Manager),
        site_ids: Some(vec![c.id, b.id, c.id]),
        ..UserChanges::default()
    };
    let updated = store
        .update_user(&actor(), staff.id, 0, &changes, at)
        .await
        .unwrap();
    let mut expected_sites = vec![b.id, c.id];
    expected_sites.sort();
    let expected = UserRecord {
        role: Role::Manager,
        site_ids: expected_sites,
        token_version: 1,
        ..staff.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(
        store.get_user(staff.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(store.user_token_version(staff.id).await.unwrap(), Some(1));

    // The site it was removed from learns so too; a site it never had does not.
    for site in [a.id, b.id, c.id] {
        let (scope, replicated) = last_user_change(&store, site, head, staff.id)
            .await
            .expect("the change reaches every site the user had or has");
        assert_eq!(scope, Some(site));
        assert_eq!(replicated, expected);
    }
    assert!(
        last_user_change(&store, elsewhere.id, head, staff.id)
            .await
            .is_none()
    );
    let entries = store
        .list_audit(&AuditFilter::site(expected.site_ids[0]), 1)
        .await
        .unwrap();
    assert_eq!(entries[0].action, "user.update");
    assert_eq!(entries[0].target, Some(staff.id.to_string()));

    // The same change again changes nothing and writes nothing.
    let head = store.change_head().await.unwrap();
    let again = store
        .update_user(&actor(), staff.id, 1, &changes, now())
        .await
        .unwrap();
    assert_eq!(again, expected);
    assert_eq!(store.change_head().await.unwrap(), head);

    // A new password bumps the version too.
    let rehashed = store
        .update_user(
            &actor(),
            staff.id,
            1,
            &UserChanges {
                password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$new$hash".into()),
                ..UserChanges::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        rehashed.password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$new$hash"
    );
    assert_eq!(rehashed.token_version, 2);

    // Made chain-wide, the account drops its sites and replicates everywhere.
    let head = store.change_head().await.unwrap();
    let admin = store
        .update_user(
            &actor(),
            staff.id,
            2,
            &UserChanges {
                role: Some(Role::Admin),
                ..UserChanges::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!((admin.role, admin.site_ids.len()), (Role::Admin, 0));
    assert_eq!(admin.token_version, 3);
    let (scope, replicated) = last_user_change(&store, elsewhere.id, head, staff.id)
        .await
        .expect("a chain-wide account reaches every site");
    assert_eq!((scope, replicated), (None, admin));
}

pub(crate) async fn a_user_change_based_on_a_stale_version_writes_nothing(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let staff = user(Role::Staff, vec![site.id]);
    store.create_user(&actor(), &staff).await.unwrap();
    let demote = UserChanges {
        disabled: Some(true),
        ..UserChanges::default()
    };
    store
        .update_user(&actor(), staff.id, 0, &demote, now())
        .await
        .unwrap();
    let head = store.change_head().await.unwrap();
    let err = store
        .update_user(
            &actor(),
            staff.id,
            0,
            &UserChanges {
                role: Some(Role::Manager),
                ..UserChanges::default()
            },
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed), "{err:?}");
    assert_eq!(store.change_head().await.unwrap(), head);
    let stored = store.get_user(staff.id).await.unwrap().unwrap();
    assert_eq!((stored.role, stored.token_version), (Role::Staff, 1));

    let err = store
        .update_user(&actor(), Uuid::now_v7(), 0, &demote, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.change_head().await.unwrap(), head);
}

pub(crate) async fn token_versions_are_none_for_disabled_and_unknown_users(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let staff = user(Role::Staff, vec![site.id]);
    store.create_user(&actor(), &staff).await.unwrap();
    assert_eq!(
        store.user_token_version(Uuid::now_v7()).await.unwrap(),
        None
    );

    let at = now();
    let disabled = store
        .update_user(
            &actor(),
            staff.id,
            0,
            &UserChanges {
                disabled: Some(true),
                ..UserChanges::default()
            },
            at,
        )
        .await
        .unwrap();
    assert_eq!(disabled.disabled_at, Some(at));
    assert_eq!(store.user_token_version(staff.id).await.unwrap(), None);

    // Enabled again, under a version no earlier token carries.
    let enabled = store
        .update_user(
            &actor(),
            staff.id,
            1,
            &UserChanges {
                disabled: Some(false),
                ..UserChanges::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(enabled.disabled_at, None);
    assert_eq!(store.user_token_version(staff.id).await.unwrap(), Some(2));

    // `disable_user` bumps the version as well.
    assert!(store.disable_user(&actor(), staff.id, now()).await.unwrap());
    let stored = store.get_user(staff.id).await.unwrap().unwrap();
    assert_eq!(stored.token_version, 3);
    assert_eq!(store.user_token_version(staff.id).await.unwrap(), None);
}

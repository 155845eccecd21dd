//! Products: what they grant, unique SKUs, retirement and paging.

use aero_central::store::{AuditFilter, Store, StoreError};
use aero_shared::auth::principal::Role;
use aero_shared::wire::{Account, Grant, Period, ProductKind, ProductRecord, UserRecord};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn a_product_keeps_what_it_grants(store: Arc<dyn Store>) {
    let pack = ProductRecord {
        kind: ProductKind::Credits,
        duration_minutes: None,
        grant: Some(Grant {
            account: Account::ArcadeCredits,
            amount: 250,
            per: None,
        }),
        ..product(&unique("CREDITS"))
    };
    let membership = ProductRecord {
        kind: ProductKind::Membership,
        grant: Some(Grant {
            account: Account::Visits,
            amount: 8,
            per: Some(Period::Month),
        }),
        ..product(&unique("MEMBER"))
    };
    let pass = product(&unique("PASS"));
    for p in [&pack, &membership, &pass] {
        store.create_product(&actor(), p).await.unwrap();
    }
    let listed = store.list_products(None, 500).await.unwrap();
    let find = |id: Uuid| listed.iter().find(|p| p.id == id).cloned().unwrap();
    assert_eq!(find(pack.id), pack);
    assert_eq!(find(membership.id), membership);
    assert_eq!(find(pass.id).grant, None);
}

pub(crate) async fn usernames_and_skus_are_unique(store: Arc<dyn Store>) {
    let sku = unique("SKU");
    store
        .create_product(&actor(), &product(&sku))
        .await
        .unwrap();
    let err = store
        .create_product(&actor(), &product(&sku))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let username = unique("user");
    let user = UserRecord {
        id: Uuid::now_v7(),
        username: username.clone(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        role: Role::Admin,
        site_ids: vec![],
        created_at: now(),
        disabled_at: None,
        token_version: 0,
    };
    store.create_user(&actor(), &user).await.unwrap();
    let again = UserRecord {
        id: Uuid::now_v7(),
        username: username.to_uppercase(),
        ..user.clone()
    };
    let err = store.create_user(&actor(), &again).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "usernames are case-insensitive: {err:?}"
    );
    assert_eq!(
        store
            .user_by_username(&username)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(user.id)
    );
}

pub(crate) async fn a_retired_product_stays_listed_inactive_and_replicates(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let p = product(&unique("SKU"));
    store.create_product(&actor(), &p).await.unwrap();
    let head = store.change_head().await.unwrap();
    let at = now() + Duration::seconds(3);
    let retired = store.retire_product(&actor(), p.id, at).await.unwrap();
    let expected = ProductRecord {
        active: false,
        ..p.clone()
    };
    assert_eq!(retired, expected);
    assert!(
        store
            .list_products(None, 500)
            .await
            .unwrap()
            .contains(&expected)
    );
    let change = pull_all(&store, site.id, head)
        .await
        .into_iter()
        .rfind(|c| c.entity_id == p.id)
        .expect("the retirement replicates");
    assert_eq!(change.site_id, None);
    assert_eq!(
        serde_json::from_value::<ProductRecord>(change.data).unwrap(),
        expected
    );
    let audited = store.list_audit(&AuditFilter::default(), 50).await.unwrap();
    assert!(
        audited.iter().any(|e| e.action == "product.retire"
            && e.target == Some(p.id.to_string())
            && e.at == at),
        "{audited:?}"
    );

    // Retiring it again changes nothing; an unknown product is not found.
    let head = store.change_head().await.unwrap();
    assert_eq!(
        store.retire_product(&actor(), p.id, now()).await.unwrap(),
        expected
    );
    assert_eq!(store.change_head().await.unwrap(), head);
    let err = store
        .retire_product(&actor(), Uuid::now_v7(), now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub(crate) async fn product_pages_resume_after_their_last_key(store: Arc<dyn Store>) {
    for _ in 0..5 {
        store
            .create_product(&actor(), &product(&unique("PAGE")))
            .await
            .unwrap();
    }
    let all = store.list_products(None, 500).await.unwrap();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_products(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        after = page.last().map(|p| (p.sku.clone(), p.id));
        let done = page.len() < 2;
        paged.extend(page);
        if done {
            break;
        }
    }
    assert_eq!(paged, all, "every product once, in SKU order");
}

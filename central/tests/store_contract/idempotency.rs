//! Idempotency keys: replays, mismatches, and answers that commit with their write.

use aero_central::store::{Store, StoreError};
use aero_shared::auth::principal::Role;
use aero_shared::idempotency::{Answer, Begin, StoredResponse, answering, serving};
use aero_shared::wire::{SiteRecord, UserRecord};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) async fn idempotency_keys_replay_and_detect_mismatch(store: Arc<dyn Store>) {
    let (scope, key) = (unique("scope"), unique("key"));
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp1", now())
            .await
            .unwrap(),
        Begin::Started
    );
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp1", now())
            .await
            .unwrap(),
        Begin::InProgress
    );
    let response = StoredResponse {
        status: 201,
        content_type: Some("application/json".into()),
        body: b"{\"id\":1}".to_vec(),
    };
    store
        .idempotency_complete(&scope, &key, &response)
        .await
        .unwrap();
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp1", now())
            .await
            .unwrap(),
        Begin::Replay(response)
    );
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp2", now())
            .await
            .unwrap(),
        Begin::Mismatch
    );
    let other = unique("key");
    assert_eq!(
        store
            .idempotency_begin(&scope, &other, "fp", now())
            .await
            .unwrap(),
        Begin::Started
    );
    store.idempotency_release(&scope, &other).await.unwrap();
    assert_eq!(
        store
            .idempotency_begin(&scope, &other, "fp", now())
            .await
            .unwrap(),
        Begin::Started
    );
}

/// The key of an idempotent request is marked in the transaction of the request's write, so a
/// crash (or a cancellation) between the write and its recorded answer never lets a retry apply
/// the write a second time; a request abandoned before it wrote anything may run again.
pub(crate) async fn a_request_whose_write_committed_is_never_run_again(store: Arc<dyn Store>) {
    let (scope, key) = (unique("scope"), unique("key"));
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp", now())
            .await
            .unwrap(),
        Begin::Started
    );
    let site =
        aero_shared::idempotency::serving(scope.clone(), key.clone(), new_site(&store)).await;
    // The answer was never recorded: the middleware's release must not free the key.
    store.idempotency_release(&scope, &key).await.unwrap();
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp", now())
            .await
            .unwrap(),
        Begin::CommittedWithoutAnswer
    );
    assert!(store.get_site(site.id).await.unwrap().is_some());

    // Abandoned before writing: blocked while it may still run, free once it cannot be.
    let abandoned = unique("key");
    let long_ago = now() - Duration::minutes(10);
    assert_eq!(
        store
            .idempotency_begin(&scope, &abandoned, "fp", long_ago)
            .await
            .unwrap(),
        Begin::Started
    );
    assert_eq!(
        store
            .idempotency_begin(&scope, &abandoned, "fp", long_ago)
            .await
            .unwrap(),
        Begin::InProgress
    );
    assert_eq!(
        store
            .idempotency_begin(&scope, &abandoned, "fp", now())
            .await
            .unwrap(),
        Begin::Started
    );
    assert!(
        store
            .idempotency_purge(now() + Duration::hours(1))
            .await
            .unwrap()
            >= 2
    );
    assert_eq!(
        store
            .idempotency_begin(&scope, &key, "fp", now())
            .await
            .unwrap(),
        Begin::Started,
        "a purged key is forgotten"
    );
}

/// The answer a route declares for a write is stored in the write's transaction: a retry after
/// the answer was lost (the middleware never completed the key) gets it replayed, and the
/// middleware's own answer never replaces it. A write that fails stores no answer.
pub(crate) async fn the_answer_of_a_request_commits_with_its_write(store: Arc<dyn Store>) {
    let (scope, key) = (unique("scope"), unique("key"));
    let begin = |key: String| {
        let (store, scope) = (Arc::clone(&store), scope.clone());
        async move {
            store
                .idempotency_begin(&scope, &key, "fp", now())
                .await
                .unwrap()
        }
    };
    assert_eq!(begin(key.clone()).await, Begin::Started);
    let site = SiteRecord {
        id: Uuid::now_v7(),
        name: unique("site"),
        timezone: "Europe/London".into(),
        allowed_networks: Vec::new(),
        created_at: now(),
    };
    let answer = Answer::json(axum::http::StatusCode::CREATED, &site).unwrap();
    serving(
        scope.clone(),
        key.clone(),
        answering(&answer, store.create_site(&actor(), &site)),
    )
    .await
    .unwrap();
    // The process stops before the middleware completes the key.
    assert_eq!(begin(key.clone()).await, Begin::Replay(answer.to_stored()));
    store.idempotency_release(&scope, &key).await.unwrap();
    let other = StoredResponse {
        status: 409,
        content_type: None,
        body: Vec::new(),
    };
    store
        .idempotency_complete(&scope, &key, &other)
        .await
        .unwrap();
    assert_eq!(begin(key.clone()).await, Begin::Replay(answer.to_stored()));
    assert_eq!(store.get_site(site.id).await.unwrap(), Some(site.clone()));

    // A write that fails (the username is taken) rolls back with everything it would record.
    let taken = user(Role::Staff, vec![site.id]);
    store.create_user(&actor(), &taken).await.unwrap();
    let failing = unique("key");
    assert_eq!(begin(failing.clone()).await, Begin::Started);
    let again = UserRecord {
        id: Uuid::now_v7(),
        ..taken.clone()
    };
    let answer = Answer::json(axum::http::StatusCode::CREATED, &again.id).unwrap();
    let outcome = serving(
        scope.clone(),
        failing.clone(),
        answering(&answer, store.create_user(&actor(), &again)),
    )
    .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(begin(failing.clone()).await, Begin::InProgress);
    store.idempotency_release(&scope, &failing).await.unwrap();
    assert_eq!(begin(failing).await, Begin::Started);
    assert_eq!(store.get_user(again.id).await.unwrap(), None);
}

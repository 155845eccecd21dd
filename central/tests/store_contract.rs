//! One contract for every central store backend. It always runs on SQLite; on SQL Server when
//! `AERO_TEST_MSSQL_URL` holds an ADO.NET connection string (and says loudly when it skips).

use aero_central::store::{self, Actor, EnrollmentToken, Redeemed, Store, StoreError};
use aero_shared::auth::principal::{DeviceKind, Role};
use aero_shared::idempotency::{Answer, Begin, StoredResponse, answering, serving};
use aero_shared::wire::{
    CustomerRecord, DeviceRecord, Entity, OpKind, ProductKind, ProductRecord, PushOp, SiteRecord,
    UserRecord, WaiverRecord,
};
use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// A store under test and whatever must outlive it (the SQLite temp dir).
struct Backend {
    store: Arc<dyn Store>,
    _guard: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open(None, dir.path()).await.expect("open sqlite");
    Backend {
        store,
        _guard: Some(dir),
    }
}

async fn mssql() -> Option<Backend> {
    let Ok(url) = std::env::var("AERO_TEST_MSSQL_URL") else {
        eprintln!(
            "SKIPPED: SQL Server contract test (set AERO_TEST_MSSQL_URL to an ADO.NET connection string to run it)"
        );
        return None;
    };
    let store = store::open(Some(&url), std::path::Path::new("."))
        .await
        .expect("open SQL Server");
    Some(Backend {
        store,
        _guard: None,
    })
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::sqlite().await;
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
        mod mssql_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(backend) = super::mssql().await {
                        super::$name(backend.store.clone()).await;
                    }
                }
            )*
        }
    };
}

contract!(
    sites_round_trip_and_appear_in_the_change_feed,
    device_keys_resolve_until_revoked,
    usernames_and_skus_are_unique,
    enrollment_tokens_are_single_use_and_expire,
    pull_is_scoped_to_the_site_and_chain_wide_rows,
    push_applies_once_and_replays_are_no_ops,
    push_with_a_gap_answers_the_expected_seq,
    rejected_ops_are_reported_and_do_not_block,
    idempotency_keys_replay_and_detect_mismatch,
    hq_writes_are_audited,
    concurrent_writers_never_make_a_reader_skip_a_change,
    site_updates_round_trip_and_replicate_to_the_site,
    disabling_a_user_is_idempotent_keeps_the_row_and_replicates,
    a_seq_held_under_another_op_id_is_a_fork_and_applies_nothing,
    an_op_renumbered_after_a_fork_is_acknowledged_and_never_applied_twice,
    the_store_id_is_stable_across_reopen,
    change_anchor_identifies_the_entry_at_a_seq,
    a_new_enrollment_revokes_the_previous_edge_credential,
    rejected_ops_are_listed_newest_first,
    a_new_customer_from_another_home_site_is_rejected,
    a_request_whose_write_committed_is_never_run_again,
    the_answer_of_a_request_commits_with_its_write,
);

fn now() -> DateTime<Utc> {
    // Both backends keep milliseconds.
    Utc::now().trunc_subsecs(3)
}

fn actor() -> Actor {
    Actor::system("contract-test")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

async fn new_site(store: &Arc<dyn Store>) -> SiteRecord {
    let site = SiteRecord {
        id: Uuid::now_v7(),
        name: unique("site"),
        timezone: "Europe/London".into(),
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        created_at: now(),
    };
    store
        .create_site(&actor(), &site)
        .await
        .expect("create site");
    site
}

fn device(site_id: Uuid, key_hash: &str) -> DeviceRecord {
    DeviceRecord {
        id: Uuid::now_v7(),
        site_id,
        name: "kiosk".into(),
        kind: DeviceKind::Kiosk,
        allowed_networks: vec![],
        key_hash: key_hash.to_string(),
        created_at: now(),
        revoked_at: None,
    }
}

fn user(role: Role, site_ids: Vec<Uuid>) -> UserRecord {
    UserRecord {
        id: Uuid::now_v7(),
        username: unique("user"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        role,
        site_ids,
        created_at: now(),
        disabled_at: None,
    }
}

fn product(sku: &str) -> ProductRecord {
    ProductRecord {
        id: Uuid::now_v7(),
        sku: sku.to_string(),
        name: "Jump 60".into(),
        kind: ProductKind::Pass,
        price_cents: 1500,
        duration_minutes: Some(60),
        active: true,
        created_at: now(),
    }
}

fn customer_op(site_id: Uuid, seq: i64) -> PushOp {
    let customer = CustomerRecord {
        id: Uuid::now_v7(),
        first_name: "Ada".into(),
        last_name: unique("Lovelace"),
        birth_date: NaiveDate::from_ymd_opt(2010, 5, 1).unwrap(),
        phone: Some(format!("+44{}", 7_000_000_000i64 + seq)),
        email: None,
        guardian_id: None,
        home_site_id: site_id,
        created_at: now(),
    };
    PushOp {
        seq,
        op_id: Uuid::now_v7(),
        entity: Entity::Customer,
        entity_id: customer.id,
        kind: OpKind::Upsert,
        data: serde_json::to_value(&customer).unwrap(),
    }
}

async fn pull_all(
    store: &Arc<dyn Store>,
    site: Uuid,
    after: i64,
) -> Vec<aero_shared::wire::Change> {
    store
        .pull(site, after, 10_000, usize::MAX)
        .await
        .expect("pull")
}

async fn sites_round_trip_and_appear_in_the_change_feed(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    assert_eq!(store.get_site(site.id).await.unwrap(), Some(site.clone()));
    assert!(store.list_sites().await.unwrap().contains(&site));
    let changes = pull_all(&store, site.id, head).await;
    let change = changes
        .iter()
        .find(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .expect("the site's own change");
    assert_eq!(change.site_id, Some(site.id));
    let replicated: SiteRecord = serde_json::from_value(change.data.clone()).unwrap();
    assert_eq!(replicated, site);
}

async fn device_keys_resolve_until_revoked(store: Arc<dyn Store>) {
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

async fn usernames_and_skus_are_unique(store: Arc<dyn Store>) {
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

async fn enrollment_tokens_are_single_use_and_expire(store: Arc<dyn Store>) {
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

async fn pull_is_scoped_to_the_site_and_chain_wide_rows(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let a = new_site(&store).await;
    let b = new_site(&store).await;
    let device_b = device(b.id, &unique("hash"));
    store.create_device(&actor(), &device_b).await.unwrap();
    let p = product(&unique("SKU"));
    store.create_product(&actor(), &p).await.unwrap();
    let seen_by_a: BTreeSet<Uuid> = pull_all(&store, a.id, head)
        .await
        .iter()
        .map(|c| c.entity_id)
        .collect();
    assert!(seen_by_a.contains(&a.id));
    assert!(
        seen_by_a.contains(&p.id),
        "chain-wide products reach every site"
    );
    assert!(
        !seen_by_a.contains(&b.id),
        "another site's row must not leak"
    );
    assert!(
        !seen_by_a.contains(&device_b.id),
        "another site's device must not leak"
    );
    // Paging by count returns a prefix in seq order.
    let page = store.pull(a.id, head, 1, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 1);
    // Paging by bytes still makes progress with one row.
    let tiny = store.pull(a.id, head, 100, 1).await.unwrap();
    assert_eq!(tiny.len(), 1);
}

async fn push_applies_once_and_replays_are_no_ops(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let ops: Vec<PushOp> = (1..=3).map(|seq| customer_op(site.id, seq)).collect();
    let first = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((first.acked_seq, first.expected_seq), (3, None));
    assert!(first.rejected.is_empty());
    let before = store.count_customers().await.unwrap();
    let head = store.change_head().await.unwrap();
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(replay.acked_seq, 3);
    assert!(replay.rejected.is_empty());
    assert_eq!(
        store.count_customers().await.unwrap(),
        before,
        "a replay writes nothing"
    );
    assert_eq!(
        store.change_head().await.unwrap(),
        head,
        "a replay appends no change"
    );
    let phone = ops[0].data["phone"].as_str().unwrap();
    let found = store.customers_by_phone(phone).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ops[0].entity_id);
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(sync.acked_seq, 3);
    assert!(sync.last_push_at.is_some());
}

async fn push_with_a_gap_answers_the_expected_seq(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    store
        .push(site.id, &[customer_op(site.id, 1)], now())
        .await
        .unwrap();
    let gap = store
        .push(site.id, &[customer_op(site.id, 3)], now())
        .await
        .unwrap();
    assert_eq!((gap.acked_seq, gap.expected_seq), (1, Some(2)));
}

async fn rejected_ops_are_reported_and_do_not_block(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let mut poison = customer_op(site.id, 1);
    poison.data["first_name"] = serde_json::json!("");
    let mut hq_owned = customer_op(site.id, 2);
    hq_owned.entity = Entity::Product;
    let good = customer_op(site.id, 3);
    let ops = vec![poison.clone(), hq_owned.clone(), good.clone()];
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);
    let rejected: Vec<i64> = outcome.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(rejected, vec![1, 2]);
    assert!(store.get_customer(good.entity_id).await.unwrap().is_some());
    assert!(
        store
            .get_customer(poison.entity_id)
            .await
            .unwrap()
            .is_none()
    );
    // A replay reports the same rejections, so an edge that lost the answer still learns them.
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(
        replay.rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Waivers only from the site that took them.
    let waiver = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: good.entity_id,
        site_id: Uuid::now_v7(),
        signer_name: "Ada".into(),
        signed_at: now(),
        expires_at: now() + Duration::days(365),
    };
    let op = PushOp {
        seq: 4,
        op_id: Uuid::now_v7(),
        entity: Entity::Waiver,
        entity_id: waiver.id,
        kind: OpKind::Upsert,
        data: serde_json::to_value(&waiver).unwrap(),
    };
    let outcome = store.push(site.id, &[op], now()).await.unwrap();
    assert_eq!((outcome.acked_seq, outcome.rejected.len()), (4, 1));
}

async fn idempotency_keys_replay_and_detect_mismatch(store: Arc<dyn Store>) {
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

async fn hq_writes_are_audited(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let d = device(site.id, &unique("hash"));
    store.create_device(&actor(), &d).await.unwrap();
    store.revoke_device(&actor(), d.id, now()).await.unwrap();
    let entries = store.list_audit(Some(site.id), 10).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["device.revoke", "device.create", "site.create"]
    );
    assert!(entries.iter().all(|e| e.actor_name == "contract-test"));
}

/// Many writers commit changes while a reader follows the feed with a cursor; afterwards the
/// reader must have seen every change, each once, in increasing seq order.
async fn concurrent_writers_never_make_a_reader_skip_a_change(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let site = new_site(&store).await;
    let start = store.change_head().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.pull(site.id, cursor, 7, usize::MAX).await.unwrap();
                for change in &page {
                    assert!(change.seq > cursor, "seq order");
                    cursor = change.seq;
                    if change.entity == Entity::Product {
                        seen.push(change.entity_id);
                    }
                }
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..PER_WRITER {
                    let p = product(&unique("SKU"));
                    store.create_product(&actor(), &p).await.unwrap();
                    ids.push(p.id);
                }
                ids
            })
        })
        .collect();
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let seen_set: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(seen.len(), seen_set.len(), "no change delivered twice");
    let missing: Vec<_> = written.difference(&seen_set).collect();
    assert!(
        missing.is_empty(),
        "the reader skipped {} committed changes",
        missing.len()
    );
}

async fn site_updates_round_trip_and_replicate_to_the_site(store: Arc<dyn Store>) {
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
    store.update_site(&actor(), &edited, at).await.unwrap();
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
    let entries = store.list_audit(Some(site.id), 1).await.unwrap();
    assert_eq!(entries[0].action, "site.update");
    assert_eq!(entries[0].target, Some(site.id.to_string()));
    assert_eq!(entries[0].at, at);

    // Writing what is already stored changes nothing and appends nothing.
    let head = store.change_head().await.unwrap();
    store.update_site(&actor(), &expected, now()).await.unwrap();
    assert_eq!(store.change_head().await.unwrap(), head);
    // A rename that only changes case is a change (whatever the database's collation).
    let shouted = SiteRecord {
        name: expected.name.to_uppercase(),
        ..expected.clone()
    };
    store.update_site(&actor(), &shouted, now()).await.unwrap();
    assert_eq!(store.get_site(site.id).await.unwrap(), Some(shouted));
    assert!(store.change_head().await.unwrap() > head);

    let unknown = SiteRecord {
        id: Uuid::now_v7(),
        ..expected
    };
    let err = store
        .update_site(&actor(), &unknown, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.get_site(unknown.id).await.unwrap(), None);
}

async fn disabling_a_user_is_idempotent_keeps_the_row_and_replicates(store: Arc<dyn Store>) {
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

    // The row stays, with the first disable's time.
    let disabled = UserRecord {
        disabled_at: Some(at),
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
    assert!(store.list_users().await.unwrap().contains(&disabled));

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
    let entries = store.list_audit(Some(sites[0]), 1).await.unwrap();
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

/// Customers registered by `site` around now, counted per site (the SQL Server contract shares
/// one database between tests running at once, so a global count would race).
async fn customers_of(store: &Arc<dyn Store>, site: Uuid) -> i64 {
    store
        .daily_report(site, now() - Duration::days(1), now() + Duration::days(1))
        .await
        .expect("daily report")
        .new_customers
}

/// How many changes in `site`'s feed after `head` are about `entity_id`.
async fn changes_for(store: &Arc<dyn Store>, site: Uuid, head: i64, entity_id: Uuid) -> usize {
    pull_all(store, site, head)
        .await
        .iter()
        .filter(|c| c.entity_id == entity_id)
        .count()
}

async fn a_seq_held_under_another_op_id_is_a_fork_and_applies_nothing(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let ops: Vec<PushOp> = (1..=3).map(|seq| customer_op(site.id, seq)).collect();
    let first = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((first.acked_seq, first.forked_at), (3, None));
    let before = customers_of(&store, site.id).await;
    assert_eq!(before, 3);

    // A box restored from a backup: seq 1 is the op central holds, seq 2 onwards are new ops.
    let forked = vec![
        ops[0].clone(),
        customer_op(site.id, 2),
        customer_op(site.id, 3),
        customer_op(site.id, 4),
    ];
    let outcome = store.push(site.id, &forked, now()).await.unwrap();
    assert_eq!(outcome.forked_at, Some(2));
    assert_eq!((outcome.acked_seq, outcome.expected_seq), (3, None));
    assert!(outcome.rejected.is_empty());
    assert_eq!(
        customers_of(&store, site.id).await,
        before,
        "nothing applied"
    );
    for op in &forked[1..] {
        assert_eq!(store.get_customer(op.entity_id).await.unwrap(), None);
    }
    assert_eq!(store.acked_seq(site.id).await.unwrap(), 3);
    assert_eq!(store.site_sync(site.id).await.unwrap().acked_seq, 3);
    assert!(store.rejected_ops(site.id, 10).await.unwrap().is_empty());
}

async fn an_op_renumbered_after_a_fork_is_acknowledged_and_never_applied_twice(
    store: Arc<dyn Store>,
) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let x = customer_op(site.id, 1);
    assert_eq!(
        store
            .push(site.id, std::slice::from_ref(&x), now())
            .await
            .unwrap()
            .acked_seq,
        1
    );
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);

    // After a fork the edge renumbered its pending ops after acked_seq, keeping their op ids:
    // X (which central already holds) now sits at seq 2. Its payload is changed here only so
    // that a second application would show in the stored row.
    let mut renumbered = PushOp {
        seq: 2,
        ..x.clone()
    };
    renumbered.data["first_name"] = serde_json::json!("Twice");
    let y = customer_op(site.id, 3);
    let batch = vec![renumbered, y.clone()];
    let outcome = store.push(site.id, &batch, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);
    assert_eq!((outcome.expected_seq, outcome.forked_at), (None, None));
    assert!(outcome.rejected.is_empty());
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);
    assert_eq!(
        store
            .get_customer(x.entity_id)
            .await
            .unwrap()
            .unwrap()
            .first_name,
        "Ada",
        "X is applied once"
    );
    assert!(store.get_customer(y.entity_id).await.unwrap().is_some());
    assert_eq!(changes_for(&store, site.id, head, y.entity_id).await, 1);

    // A replay of the whole history changes nothing.
    let feed = store.change_head().await.unwrap();
    let all = vec![x.clone(), batch[0].clone(), y.clone()];
    let replay = store.push(site.id, &all, now()).await.unwrap();
    assert_eq!(replay.acked_seq, 3);
    assert_eq!((replay.expected_seq, replay.forked_at), (None, None));
    assert!(replay.rejected.is_empty());
    assert!(
        pull_all(&store, site.id, feed).await.is_empty(),
        "no change"
    );
    assert_eq!(changes_for(&store, site.id, head, x.entity_id).await, 1);
    assert_eq!(changes_for(&store, site.id, head, y.entity_id).await, 1);
    assert_eq!(customers_of(&store, site.id).await, 2);
}

async fn the_store_id_is_stable_across_reopen(store: Arc<dyn Store>) {
    // Reopening is a SQLite matter (see `sqlite_store_id_survives_reopen`); every backend has
    // one non-nil id that does not change while it is open.
    let id = store.store_id();
    assert!(!id.is_nil());
    assert_eq!(store.store_id(), id);
}

#[tokio::test]
async fn sqlite_store_id_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = store::open(None, dir.path())
        .await
        .expect("open")
        .store_id();
    let again = store::open(None, dir.path())
        .await
        .expect("reopen")
        .store_id();
    assert_eq!(first, again, "the same database keeps its id");
    let other = tempfile::tempdir().expect("temp dir");
    let fresh = store::open(None, other.path())
        .await
        .expect("open")
        .store_id();
    assert_ne!(first, fresh, "another database has another id");
}

async fn change_anchor_identifies_the_entry_at_a_seq(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    store
        .push(site.id, &[customer_op(site.id, 1)], now())
        .await
        .unwrap();
    let changes = pull_all(&store, site.id, head).await;
    assert!(changes.len() >= 2, "the site's row and its customer");
    for change in &changes {
        assert_eq!(
            store.change_anchor(site.id, change.seq).await.unwrap(),
            Some(change.anchor())
        );
    }
    // The site's own row is outside another site's scope.
    let own = changes
        .iter()
        .find(|c| c.entity == Entity::Site && c.entity_id == site.id)
        .unwrap();
    assert_eq!(store.change_anchor(other.id, own.seq).await.unwrap(), None);
    // Nothing is held beyond the head, nor at 0.
    let head = store.change_head().await.unwrap();
    assert_eq!(store.change_anchor(site.id, head + 1).await.unwrap(), None);
    assert_eq!(store.change_anchor(site.id, 0).await.unwrap(), None);
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

async fn a_new_enrollment_revokes_the_previous_edge_credential(store: Arc<dyn Store>) {
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
    let entries = store.list_audit(Some(site.id), 10).await.unwrap();
    let fence = entries
        .iter()
        .find(|e| e.action == "edge.fence")
        .expect("the fence is audited");
    assert_eq!(fence.target, Some(a.id.to_string()));
    assert_eq!(fence.actor_id, Some(b.id));
}

async fn rejected_ops_are_listed_newest_first(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let mut first = customer_op(site.id, 1);
    first.data["first_name"] = serde_json::json!("");
    let good = customer_op(site.id, 2);
    let mut third = customer_op(site.id, 3);
    third.entity = Entity::Product;
    let at = now();
    let ops = vec![first.clone(), good, third.clone()];
    let outcome = store.push(site.id, &ops, at).await.unwrap();
    assert_eq!(outcome.acked_seq, 3);

    let listed = store.rejected_ops(site.id, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| (r.seq, r.op_id)).collect::<Vec<_>>(),
        vec![(3, third.op_id), (1, first.op_id)]
    );
    for (record, answered) in listed.iter().zip(outcome.rejected.iter().rev()) {
        assert_eq!(record.reason, answered.reason);
        assert!(!record.reason.is_empty());
        assert_eq!(record.rejected_at, at);
    }
    let newest = store.rejected_ops(site.id, 1).await.unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    assert!(store.rejected_ops(other.id, 10).await.unwrap().is_empty());
}

async fn a_new_customer_from_another_home_site_is_rejected(store: Arc<dyn Store>) {
    let home = new_site(&store).await;
    let visitor = new_site(&store).await;
    let registered = customer_op(home.id, 1);

    // The visiting venue pushes a customer homed elsewhere that central does not know.
    let early = PushOp {
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    let outcome = store
        .push(visitor.id, std::slice::from_ref(&early), now())
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 1);
    assert_eq!(
        outcome.rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        store.get_customer(registered.entity_id).await.unwrap(),
        None
    );

    // Once the home site registered it, any venue's edit is taken.
    let outcome = store
        .push(home.id, std::slice::from_ref(&registered), now())
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    let mut edit = PushOp {
        seq: 2,
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    edit.data["first_name"] = serde_json::json!("Grace");
    edit.data["home_site_id"] = serde_json::json!(visitor.id);
    let outcome = store
        .push(visitor.id, std::slice::from_ref(&edit), now())
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 2);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let stored = store
        .get_customer(registered.entity_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.first_name, "Grace");
    assert_eq!(stored.home_site_id, home.id, "the home site never changes");
}

/// The key of an idempotent request is marked in the transaction of the request's write, so a
/// crash (or a cancellation) between the write and its recorded answer never lets a retry apply
/// the write a second time; a request abandoned before it wrote anything may run again.
async fn a_request_whose_write_committed_is_never_run_again(store: Arc<dyn Store>) {
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
async fn the_answer_of_a_request_commits_with_its_write(store: Arc<dyn Store>) {
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

//! One contract for every central store backend. It always runs on SQLite; on SQL Server when
//! `AERO_TEST_MSSQL_URL` holds an ADO.NET connection string (and says loudly when it skips).

use aero_central::store::{
    self, Actor, AuditActor, AuditFilter, CustomerSearch, DeadLetterState, EnrollmentToken,
    HintSocketEvent, LeaderboardQuery, NegativeBalance, ProductSales, Redeemed, SiteChanges, Store,
    StoreError, UserChanges, WaiverTextDraft,
};
use aero_shared::auth::principal::{DeviceKind, Role};
use aero_shared::etag::IfMatch;
use aero_shared::idempotency::{Answer, Begin, StoredResponse, answering, serving};
use aero_shared::wire::{
    Account, ChangeEntity, CheckinRecord, CustomerRecord, DeadLetterAction, DeadLetterRequest,
    DeadLetterResolution, DeviceRecord, Entity, GameRecord, Grant, LedgerEntry, LedgerReason,
    OpKind, OrderLine, OrderRecord, OutboxBacklog, Period, PlugOverrideRecord, PlugRecord,
    PlugStatusRecord, PowerState, ProductKind, ProductRecord, PushOp, RefundRecord, RefundTender,
    Resolution, ScoreOrder, ScoreRecord, SiteRecord, Tender, TenderKind, UserRecord, WaiverRecord,
    WaiverTextRecord,
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
    a_product_keeps_what_it_grants,
    product_pages_resume_after_their_last_key,
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
    the_audit_log_filters_by_venue_actor_and_action,
    concurrent_writers_never_make_a_reader_skip_a_change,
    site_updates_round_trip_and_replicate_to_the_site,
    disabling_a_user_is_idempotent_keeps_the_row_and_replicates,
    a_seq_held_under_another_op_id_is_a_fork_and_applies_nothing,
    an_op_renumbered_after_a_fork_is_acknowledged_and_never_applied_twice,
    the_store_id_is_stable_across_reopen,
    change_anchor_identifies_the_entry_at_a_seq,
    change_scopes_name_each_change_with_its_venue,
    a_new_enrollment_revokes_the_previous_edge_credential,
    rejected_ops_are_listed_newest_first,
    a_new_customer_from_another_home_site_is_rejected,
    a_request_whose_write_committed_is_never_run_again,
    dead_letter_resolutions_are_recorded_once_and_only_for_refused_ops,
    hq_dead_letter_requests_reach_only_their_site_and_stop_once_resolved,
    the_answer_of_a_request_commits_with_its_write,
    venue_records_are_applied_once_and_published_to_their_scope,
    references_must_exist_at_central,
    refunds_are_checked_against_their_order_and_earlier_refunds,
    ledger_entries_from_two_sites_are_kept_and_negative_balances_reported,
    lapsed_visits_do_not_hide_an_overspent_membership,
    a_venue_reports_its_own_plugs_status_and_the_latest_is_kept,
    plug_overrides_from_hq_and_the_venue_are_kept_once_and_replicated,
    a_record_pushed_again_with_other_content_is_rejected,
    daily_figures_follow_the_sites_local_day,
    leaderboards_rank_each_customers_best_by_the_games_score_order,
    a_retired_product_stays_listed_inactive_and_replicates,
    customers_are_found_by_phone_email_and_name,
    a_user_change_bumps_its_token_version_and_reaches_old_and_new_sites,
    a_user_change_based_on_a_stale_version_writes_nothing,
    token_versions_are_none_for_disabled_and_unknown_users,
    concurrent_site_updates_of_different_fields_both_land,
    a_site_update_with_a_stale_entity_tag_writes_nothing,
    a_pull_keeps_the_outbox_backlog_the_edge_reported,
    hint_socket_heartbeats_only_move_forward_and_closes_are_kept,
    waiver_texts_are_published_as_the_next_version_newest_first,
    a_waiver_keeps_the_text_version_it_was_signed_under,
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
        token_version: 0,
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
        grant: None,
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

async fn a_product_keeps_what_it_grants(store: Arc<dyn Store>) {
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
        text_version: None,
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
    let entries = store
        .list_audit(&AuditFilter::site(site.id), 10)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["device.revoke", "device.create", "site.create"]
    );
    assert!(entries.iter().all(|e| e.actor_name == "contract-test"));
}

/// The audit log narrows to a venue, an actor (by id, or by name ignoring case) and an action,
/// each alone or together.
async fn the_audit_log_filters_by_venue_actor_and_action(store: Arc<dyn Store>) {
    let person = |name: &str| Actor {
        kind: "user",
        id: Some(Uuid::now_v7()),
        name: unique(name),
        ip: None,
        request_id: None,
    };
    let (ada, bob) = (person("Ada"), person("Bob"));
    let mut sites = Vec::new();
    for who in [&ada, &bob] {
        let site = SiteRecord {
            id: Uuid::now_v7(),
            name: unique("site"),
            timezone: "UTC".into(),
            allowed_networks: vec![],
            created_at: now(),
        };
        store.create_site(who, &site).await.unwrap();
        sites.push(site.id);
    }
    // Bob registers a device at Ada's venue.
    store
        .create_device(&bob, &device(sites[0], &unique("hash")))
        .await
        .unwrap();
    let listed = |filter: AuditFilter| {
        let store = Arc::clone(&store);
        async move {
            let mut rows: Vec<(String, String, Option<Uuid>)> = store
                .list_audit(&filter, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.action, e.actor_name, e.site_id))
                .collect();
            rows.sort();
            rows
        }
    };
    let row =
        |action: &str, who: &Actor, site: Uuid| (action.to_string(), who.name.clone(), Some(site));

    assert_eq!(
        listed(AuditFilter::site(sites[0])).await,
        [
            row("device.create", &bob, sites[0]),
            row("site.create", &ada, sites[0])
        ]
    );
    assert_eq!(
        listed(AuditFilter::new(
            Some(sites[0]),
            None,
            Some("device.create")
        ))
        .await,
        [row("device.create", &bob, sites[0])]
    );
    let shouted = ada.name.to_uppercase();
    assert_eq!(
        listed(AuditFilter::new(None, Some(&shouted), None)).await,
        [row("site.create", &ada, sites[0])],
        "a name matches ignoring case"
    );
    let bob_id = bob.id.unwrap().to_string();
    assert_eq!(
        AuditFilter::new(None, Some(&bob_id), None).actor,
        Some(AuditActor::Id(bob.id.unwrap()))
    );
    assert_eq!(
        listed(AuditFilter::new(None, Some(&bob_id), None)).await,
        [
            row("device.create", &bob, sites[0]),
            row("site.create", &bob, sites[1])
        ]
    );
    assert_eq!(
        listed(AuditFilter::new(None, Some(&bob_id), Some("Site.Create"))).await,
        [row("site.create", &bob, sites[1])],
        "actions are named in lower case"
    );
    assert!(
        listed(AuditFilter::new(Some(sites[1]), Some(&ada.name), None))
            .await
            .is_empty()
    );
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

/// Every editable field of `site`, as a change.
fn all_of(site: &SiteRecord) -> SiteChanges {
    SiteChanges {
        name: Some(site.name.clone()),
        timezone: Some(site.timezone.clone()),
        allowed_networks: Some(site.allowed_networks.clone()),
    }
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
    assert!(
        store
            .rejected_ops(site.id, DeadLetterState::All, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
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

async fn change_scopes_name_each_change_with_its_venue(store: Arc<dyn Store>) {
    let head = store.change_head().await.unwrap();
    let site = new_site(&store).await;
    let sku = product(&unique("SKU"));
    store.create_product(&actor(), &sku).await.unwrap();
    let changes = pull_all(&store, site.id, head).await;
    let seq_of = |id: Uuid| changes.iter().find(|c| c.entity_id == id).unwrap().seq;
    let scopes = store.change_scopes(head, 10_000).await.unwrap();
    assert!(scopes.contains(&store::ChangeScope {
        seq: seq_of(site.id),
        site_id: Some(site.id)
    }));
    assert!(scopes.contains(&store::ChangeScope {
        seq: seq_of(sku.id),
        site_id: None
    }));
    assert!(
        scopes.windows(2).all(|w| w[0].seq < w[1].seq),
        "in seq order"
    );
    assert!(
        scopes.iter().all(|s| s.seq > head),
        "only after the given seq"
    );
    let first = store.change_scopes(head, 1).await.unwrap();
    assert_eq!(first, scopes[..1], "at most the limit, from the start");
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

    let listed = store
        .rejected_ops(site.id, DeadLetterState::All, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| (r.seq, r.op_id)).collect::<Vec<_>>(),
        vec![(3, third.op_id), (1, first.op_id)]
    );
    for (record, answered) in listed.iter().zip(outcome.rejected.iter().rev()) {
        assert_eq!(record.reason, answered.reason);
        assert!(!record.reason.is_empty());
        assert_eq!(record.rejected_at, at);
    }
    let newest = store
        .rejected_ops(site.id, DeadLetterState::All, None, 1)
        .await
        .unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    assert!(
        store
            .rejected_ops(other.id, DeadLetterState::All, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
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
        data: serde_json::to_value(&resolution).unwrap(),
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

async fn hq_dead_letter_requests_reach_only_their_site_and_stop_once_resolved(
    store: Arc<dyn Store>,
) {
    let venue = new_site(&store).await;
    let other = new_site(&store).await;
    let mut broken = customer_op(venue.id, 1);
    broken.data["last_name"] = serde_json::json!("");
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

async fn dead_letter_resolutions_are_recorded_once_and_only_for_refused_ops(store: Arc<dyn Store>) {
    let home = new_site(&store).await;
    let visitor = new_site(&store).await;
    let registered = customer_op(home.id, 1);

    // The visiting venue edits a customer central does not know yet (its home venue has not
    // pushed it), and pushes a broken record: both refused.
    let mut edit = PushOp {
        op_id: Uuid::now_v7(),
        ..registered.clone()
    };
    edit.data["first_name"] = serde_json::json!("Grace");
    let mut broken = customer_op(visitor.id, 2);
    broken.data["last_name"] = serde_json::json!("");
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
        serde_json::from_value::<DeadLetterResolution>(retried.data.clone())
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

// ---------------------------------------------------------------------------------------------
// Venue operations: orders, refunds, the ledger, check-ins and scores pushed by edges; HQ's
// reports over them.
// ---------------------------------------------------------------------------------------------

/// An op carrying a venue record, of the kind the record travels as.
fn venue_op<T: serde::Serialize>(seq: i64, entity: Entity, id: Uuid, record: &T) -> PushOp {
    PushOp {
        seq,
        op_id: Uuid::now_v7(),
        entity,
        entity_id: id,
        kind: if entity == Entity::LedgerEntry {
            OpKind::LedgerAppend
        } else {
            OpKind::Upsert
        },
        data: serde_json::to_value(record).unwrap(),
    }
}

fn customer_record(site_id: Uuid, first_name: &str) -> CustomerRecord {
    CustomerRecord {
        id: Uuid::now_v7(),
        first_name: first_name.into(),
        last_name: unique("Venue"),
        birth_date: NaiveDate::from_ymd_opt(2012, 3, 4).unwrap(),
        phone: Some(format!(
            "+1555{}",
            Uuid::now_v7().as_u128() % 10_000_000_000
        )),
        email: None,
        guardian_id: None,
        home_site_id: site_id,
        created_at: now(),
    }
}

/// A product line of an order: (product id, sku, quantity, unit price).
type Line = (Uuid, &'static str, i32, i64);

fn order_record(
    site_id: Uuid,
    created_at: DateTime<Utc>,
    lines: &[Line],
    tenders: &[(TenderKind, i64)],
) -> OrderRecord {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|&(product_id, sku, quantity, unit)| OrderLine {
            product_id,
            sku: sku.into(),
            name: format!("{sku} name"),
            kind: ProductKind::Pass,
            quantity,
            unit_price_cents: unit,
            total_cents: unit * i64::from(quantity),
        })
        .collect();
    OrderRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id: None,
        total_cents: lines.iter().map(|l| l.total_cents).sum(),
        lines,
        tenders: tenders
            .iter()
            .map(|&(kind, amount_cents)| Tender {
                kind,
                amount_cents,
                received_cents: None,
                change_cents: 0,
                reference: None,
            })
            .collect(),
        change_cents: 0,
        sold_by: "device:pos".into(),
        created_at,
    }
}

fn refund_record(
    order: &OrderRecord,
    kind: TenderKind,
    amount_cents: i64,
    created_at: DateTime<Utc>,
) -> RefundRecord {
    RefundRecord {
        id: Uuid::now_v7(),
        order_id: order.id,
        site_id: order.site_id,
        tenders: vec![RefundTender { kind, amount_cents }],
        total_cents: amount_cents,
        reason: "the trampoline was closed".into(),
        refunded_by: "user:manager".into(),
        created_at,
    }
}

fn ledger_record(site_id: Uuid, customer_id: Uuid, account: Account, delta: i64) -> LedgerEntry {
    LedgerEntry {
        id: Uuid::now_v7(),
        customer_id,
        account,
        delta,
        reason: if delta > 0 {
            LedgerReason::Purchase
        } else {
            LedgerReason::Spend
        },
        ref_id: None,
        site_id,
        created_at: now(),
        expires_at: None,
    }
}

fn checkin_record(site_id: Uuid, customer_id: Uuid, created_at: DateTime<Utc>) -> CheckinRecord {
    CheckinRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id,
        wristband: unique("W"),
        product_id: Uuid::now_v7(),
        order_id: Some(Uuid::now_v7()),
        ledger_entry_id: None,
        starts_at: created_at,
        ends_at: created_at + Duration::hours(1),
        created_at,
    }
}

fn score_record(
    site_id: Uuid,
    game_id: Uuid,
    customer_id: Uuid,
    score: i64,
    created_at: DateTime<Utc>,
) -> ScoreRecord {
    ScoreRecord {
        id: Uuid::now_v7(),
        site_id,
        game_id,
        customer_id,
        score,
        device_id: None,
        created_at,
    }
}

async fn new_game(store: &Arc<dyn Store>, score_order: ScoreOrder) -> GameRecord {
    let game = GameRecord {
        id: Uuid::now_v7(),
        name: unique("game"),
        score_order,
        created_at: now(),
    };
    store.create_game(&actor(), &game).await.unwrap();
    game
}

async fn new_site_in(store: &Arc<dyn Store>, timezone: &str) -> SiteRecord {
    let site = SiteRecord {
        timezone: timezone.into(),
        ..new_site(store).await
    };
    store
        .update_site(&actor(), site.id, &all_of(&site), &IfMatch::Absent, now())
        .await
        .unwrap();
    site
}

fn rejections(outcome: &store::PushOutcome) -> Vec<(i64, String)> {
    outcome
        .rejected
        .iter()
        .map(|r| (r.seq, r.reason.clone()))
        .collect()
}

/// Around now: wide enough for every record these tests create "now".
fn today() -> (DateTime<Utc>, DateTime<Utc>) {
    (now() - Duration::days(1), now() + Duration::days(1))
}

async fn venue_records_are_applied_once_and_published_to_their_scope(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let game = new_game(&store, ScoreOrder::HighestWins).await;
    let customer = customer_record(site.id, "Ada");
    let jump = Uuid::now_v7();
    let order = order_record(
        site.id,
        now(),
        &[(jump, "JUMP60", 2, 1500)],
        &[(TenderKind::Card, 3000)],
    );
    let refund = refund_record(&order, TenderKind::Card, 1000, now());
    let entry = ledger_record(site.id, customer.id, Account::ArcadeCredits, 50);
    let checkin = checkin_record(site.id, customer.id, now());
    let score = score_record(site.id, game.id, customer.id, 1234, now());
    let ops = vec![
        venue_op(1, Entity::Customer, customer.id, &customer),
        venue_op(2, Entity::Order, order.id, &order),
        venue_op(3, Entity::Refund, refund.id, &refund),
        venue_op(4, Entity::LedgerEntry, entry.id, &entry),
        venue_op(5, Entity::Checkin, checkin.id, &checkin),
        venue_op(6, Entity::Score, score.id, &score),
    ];
    let head = store.change_head().await.unwrap();
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 6);
    assert_eq!(rejections(&outcome), vec![]);

    // The site pulls its own history back; every site pulls the ledger entry (and customer).
    let own: Vec<(ChangeEntity, Uuid)> = pull_all(&store, site.id, head)
        .await
        .iter()
        .map(|c| (c.entity.clone(), c.entity_id))
        .collect();
    for (entity, id) in [
        (Entity::Order, order.id),
        (Entity::Refund, refund.id),
        (Entity::LedgerEntry, entry.id),
        (Entity::Checkin, checkin.id),
        (Entity::Score, score.id),
    ] {
        assert_eq!(
            own.iter().filter(|c| c.0 == entity && c.1 == id).count(),
            1,
            "{entity:?} once in the site's feed: {own:?}"
        );
    }
    let elsewhere = pull_all(&store, other.id, head).await;
    let seen: Vec<ChangeEntity> = elsewhere
        .iter()
        .filter(|c| {
            [
                customer.id,
                order.id,
                refund.id,
                entry.id,
                checkin.id,
                score.id,
            ]
            .contains(&c.entity_id)
        })
        .map(|c| c.entity.clone())
        .collect();
    assert_eq!(
        seen,
        vec![
            ChangeEntity::Known(Entity::Customer),
            ChangeEntity::Known(Entity::LedgerEntry)
        ]
    );
    let published = elsewhere.iter().find(|c| c.entity_id == entry.id).unwrap();
    assert_eq!(published.site_id, None, "ledger entries are chain-wide");
    let replicated: LedgerEntry = serde_json::from_value(published.data.clone()).unwrap();
    assert_eq!(replicated, entry);

    // A replayed batch, and the same records again under new op ids (a dead letter retried),
    // write nothing and publish nothing.
    let before = store.change_head().await.unwrap();
    let replay = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!((replay.acked_seq, replay.rejected.len()), (6, 0));
    let again: Vec<PushOp> = ops
        .iter()
        .skip(1)
        .zip(7..)
        .map(|(op, seq)| PushOp {
            seq,
            op_id: Uuid::now_v7(),
            ..op.clone()
        })
        .collect();
    let outcome = store.push(site.id, &again, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 11);
    assert_eq!(rejections(&outcome), vec![]);
    assert_eq!(store.change_head().await.unwrap(), before);

    let (from, to) = today();
    let report = store.daily_report(site.id, from, to).await.unwrap();
    assert_eq!(
        (
            report.orders,
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents,
            report.checkins,
            report.new_customers
        ),
        (1, 3000, 1000, 2000, 1, 1)
    );
    let sales = store.sales_by_product(site.id, from, to).await.unwrap();
    assert_eq!(
        sales,
        vec![ProductSales {
            product_id: jump,
            sku: "JUMP60".into(),
            name: "JUMP60 name".into(),
            quantity: 2,
            sales_cents: 3000,
        }]
    );
}

async fn references_must_exist_at_central(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let other = new_site(&store).await;
    let game = new_game(&store, ScoreOrder::HighestWins).await;
    let stranger = Uuid::now_v7();
    let customer = customer_record(site.id, "Bea");
    let checkin = checkin_record(site.id, stranger, now());
    let entry = ledger_record(site.id, stranger, Account::StoredValue, 100);
    let no_game = score_record(site.id, Uuid::now_v7(), customer.id, 5, now());
    let foreign = checkin_record(other.id, customer.id, now());
    let mut wrong_kind = venue_op(6, Entity::Score, no_game.id, &no_game);
    wrong_kind.kind = OpKind::LedgerAppend;
    // A customer pushed earlier in the same batch counts.
    let good = score_record(site.id, game.id, customer.id, 7, now());
    let ops = vec![
        venue_op(1, Entity::Checkin, checkin.id, &checkin),
        venue_op(2, Entity::LedgerEntry, entry.id, &entry),
        venue_op(3, Entity::Customer, customer.id, &customer),
        venue_op(4, Entity::Score, no_game.id, &no_game),
        venue_op(5, Entity::Checkin, foreign.id, &foreign),
        wrong_kind,
        venue_op(7, Entity::Score, good.id, &good),
    ];
    let outcome = store.push(site.id, &ops, now()).await.unwrap();
    assert_eq!(outcome.acked_seq, 7);
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6],
        "{rejected:?}"
    );
    assert!(rejected[0].1.contains("customer"), "{rejected:?}");
    assert!(rejected[2].1.contains("game"), "{rejected:?}");
    assert!(rejected[3].1.contains("site"), "{rejected:?}");
    let (from, to) = today();
    assert_eq!(
        store
            .daily_report(site.id, from, to)
            .await
            .unwrap()
            .checkins,
        0
    );
    let board = store
        .leaderboard(&LeaderboardQuery {
            game_id: game.id,
            score_order: game.score_order,
            site_id: None,
            window: None,
            limit: 20,
        })
        .await
        .unwrap();
    assert_eq!(board.len(), 1);
    assert_eq!((board[0].customer_id, board[0].score), (customer.id, 7));
}

async fn refunds_are_checked_against_their_order_and_earlier_refunds(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 2, 1500)],
        &[(TenderKind::Cash, 1000), (TenderKind::Card, 2000)],
    );
    let first = refund_record(&order, TenderKind::Card, 1500, now());
    let too_much = refund_record(&order, TenderKind::Card, 600, now());
    let unknown_order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 1, 100)],
        &[(TenderKind::Cash, 100)],
    );
    let orphan = refund_record(&unknown_order, TenderKind::Cash, 100, now());
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Order, order.id, &order),
                venue_op(2, Entity::Refund, first.id, &first),
                venue_op(3, Entity::Refund, too_much.id, &too_much),
                venue_op(4, Entity::Refund, orphan.id, &orphan),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.acked_seq, 4);
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(
        rejected[0].1.contains("more than the 500 cents left"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.contains("does not hold"), "{rejected:?}");

    // A later batch: the earlier refund is loaded from what central holds.
    let rest = refund_record(&order, TenderKind::Card, 500, now());
    let beyond = refund_record(&order, TenderKind::Card, 1, now());
    let cash = refund_record(&order, TenderKind::Cash, 1000, now());
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(5, Entity::Refund, rest.id, &rest),
                venue_op(6, Entity::Refund, beyond.id, &beyond),
                venue_op(7, Entity::Refund, cash.id, &cash),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        rejections(&outcome)
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        vec![6]
    );
    let listed = store
        .rejected_ops(site.id, DeadLetterState::All, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![6, 4, 3]
    );
    let (from, to) = today();
    let report = store.daily_report(site.id, from, to).await.unwrap();
    assert_eq!(
        (
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents
        ),
        (3000, 3000, 0)
    );
}

async fn ledger_entries_from_two_sites_are_kept_and_negative_balances_reported(
    store: Arc<dyn Store>,
) {
    let home = new_site(&store).await;
    let away = new_site(&store).await;
    let customer = customer_record(home.id, "Cy");
    let loaded = ledger_record(home.id, customer.id, Account::StoredValue, 500);
    let spent_home = ledger_record(home.id, customer.id, Account::StoredValue, -400);
    let credits = ledger_record(home.id, customer.id, Account::ArcadeCredits, 30);
    // The other venue spent the same balance while offline: both land.
    let spent_away = ledger_record(away.id, customer.id, Account::StoredValue, -300);
    push_from_two_venues(
        &store,
        (&home, &[&loaded, &spent_home, &credits]),
        (&away, &spent_away),
        &customer,
    )
    .await;

    let negative: Vec<NegativeBalance> = store
        .negative_balances(now())
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.customer_id == customer.id)
        .collect();
    assert_eq!(
        negative,
        vec![NegativeBalance {
            customer_id: customer.id,
            first_name: "Cy".into(),
            last_name: customer.last_name.clone(),
            account: Account::StoredValue,
            balance: -200,
        }]
    );
    let found = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let balances: Vec<(Account, i64)> = found[0]
        .balances
        .iter()
        .map(|b| (b.account, b.balance))
        .collect();
    assert_eq!(
        balances,
        vec![
            (Account::StoredValue, -200),
            (Account::ArcadeCredits, 30),
            (Account::Visits, 0)
        ]
    );
}

/// The customer and its home venue's ledger entries pushed from home, then one entry from the
/// other venue (spent there while offline): every op lands.
async fn push_from_two_venues(
    store: &Arc<dyn Store>,
    (home, home_entries): (&SiteRecord, &[&LedgerEntry]),
    (away, away_entry): (&SiteRecord, &LedgerEntry),
    customer: &CustomerRecord,
) {
    let mut ops = vec![venue_op(1, Entity::Customer, customer.id, customer)];
    for (seq, entry) in (2..).zip(home_entries) {
        ops.push(venue_op(seq, Entity::LedgerEntry, entry.id, *entry));
    }
    let outcome = store.push(home.id, &ops, now()).await.unwrap();
    assert_eq!(rejections(&outcome), vec![]);
    let away_op = venue_op(1, Entity::LedgerEntry, away_entry.id, away_entry);
    let outcome = store.push(away.id, &[away_op], now()).await.unwrap();
    assert_eq!(rejections(&outcome), vec![]);
}

async fn lapsed_visits_do_not_hide_an_overspent_membership(store: Arc<dyn Store>) {
    let home = new_site(&store).await;
    let away = new_site(&store).await;
    let customer = customer_record(home.id, "Ed");
    let at = now();
    let entry = |site: Uuid, delta: i64, days_ago: i64, lapses_in_days: Option<i64>| LedgerEntry {
        created_at: at - Duration::days(days_ago),
        expires_at: lapses_in_days.map(|d| at + Duration::days(d)),
        ..ledger_record(site, customer.id, Account::Visits, delta)
    };
    // Last month's three visits went unused and lapsed; this month's one was spent at both
    // venues while they were offline.
    let last_month = entry(home.id, 3, 40, Some(-10));
    let this_month = entry(home.id, 1, 5, Some(25));
    let spent_home = entry(home.id, -1, 1, None);
    let spent_away = entry(away.id, -1, 1, None);
    push_from_two_venues(
        &store,
        (&home, &[&last_month, &this_month, &spent_home]),
        (&away, &spent_away),
        &customer,
    )
    .await;

    // The plain sum would be 2: the lapsed visits must not cover the second spend.
    let negative: Vec<(Account, i64)> = store
        .negative_balances(at)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.customer_id == customer.id)
        .map(|b| (b.account, b.balance))
        .collect();
    assert_eq!(negative, vec![(Account::Visits, -1)]);
    let found = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            at,
        )
        .await
        .unwrap();
    let visits = found[0]
        .balances
        .iter()
        .find(|b| b.account == Account::Visits)
        .map(|b| b.balance);
    assert_eq!(visits, Some(-1));
    // Forty days earlier, last month's visits were all still there.
    let then = store
        .search_customers(
            &CustomerSearch::Phone(customer.phone.clone().unwrap()),
            None,
            10,
            at - Duration::days(39),
        )
        .await
        .unwrap();
    assert_eq!(
        then[0]
            .balances
            .iter()
            .find(|b| b.account == Account::Visits)
            .map(|b| b.balance),
        Some(3)
    );
}

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

async fn a_venue_reports_its_own_plugs_status_and_the_latest_is_kept(store: Arc<dyn Store>) {
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

async fn plug_overrides_from_hq_and_the_venue_are_kept_once_and_replicated(store: Arc<dyn Store>) {
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

async fn a_record_pushed_again_with_other_content_is_rejected(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let customer = customer_record(site.id, "Di");
    let order = order_record(
        site.id,
        now(),
        &[(Uuid::now_v7(), "JUMP60", 1, 1500)],
        &[(TenderKind::Cash, 1500)],
    );
    let entry = ledger_record(site.id, customer.id, Account::Visits, 10);
    store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Customer, customer.id, &customer),
                venue_op(2, Entity::Order, order.id, &order),
                venue_op(3, Entity::LedgerEntry, entry.id, &entry),
            ],
            now(),
        )
        .await
        .unwrap();
    let head = store.change_head().await.unwrap();
    let mut dearer = order.clone();
    dearer.lines[0].unit_price_cents = 2000;
    dearer.lines[0].total_cents = 2000;
    dearer.total_cents = 2000;
    dearer.tenders[0].amount_cents = 2000;
    let bigger = LedgerEntry {
        delta: 11,
        ..entry.clone()
    };
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(4, Entity::Order, order.id, &dearer),
                venue_op(5, Entity::LedgerEntry, entry.id, &bigger),
                venue_op(6, Entity::Order, order.id, &order),
            ],
            now(),
        )
        .await
        .unwrap();
    let rejected = rejections(&outcome);
    assert_eq!(
        rejected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(rejected[0].1.contains("never changed"), "{rejected:?}");
    assert_eq!(store.change_head().await.unwrap(), head);
    let (from, to) = today();
    assert_eq!(
        store
            .daily_report(site.id, from, to)
            .await
            .unwrap()
            .gross_sales_cents,
        1500
    );
}

async fn daily_figures_follow_the_sites_local_day(store: Arc<dyn Store>) {
    use chrono::TimeZone as _;
    let site = new_site_in(&store, "America/New_York").await;
    let tz = chrono_tz::America::New_York;
    let midnight = |d: u32| {
        tz.with_ymd_and_hms(2026, 3, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    // 2026-03-10 starts at 04:00 UTC (EDT); an order a minute either side of it.
    let (day, next) = (midnight(10), midnight(11));
    assert_eq!(day.to_rfc3339(), "2026-03-10T04:00:00+00:00");
    let (jump, socks) = (Uuid::now_v7(), Uuid::now_v7());
    let late = order_record(
        site.id,
        day - Duration::minutes(1),
        &[(jump, "JUMP60", 1, 1000)],
        &[(TenderKind::Cash, 1000)],
    );
    let early = order_record(
        site.id,
        day + Duration::minutes(1),
        &[(socks, "SOCKS", 2, 500), (jump, "JUMP60", 1, 1500)],
        &[(TenderKind::Card, 2500)],
    );
    // Yesterday's order refunded today: today's revenue, not yesterday's, and no product's sales.
    let refund = refund_record(&late, TenderKind::Cash, 400, day + Duration::minutes(30));
    let customer = customer_record(site.id, "Ed");
    let before = checkin_record(site.id, customer.id, day - Duration::minutes(1));
    let after = checkin_record(site.id, customer.id, day + Duration::minutes(61));
    let outcome = store
        .push(
            site.id,
            &[
                venue_op(1, Entity::Order, late.id, &late),
                venue_op(2, Entity::Order, early.id, &early),
                venue_op(3, Entity::Refund, refund.id, &refund),
                venue_op(4, Entity::Customer, customer.id, &customer),
                venue_op(5, Entity::Checkin, before.id, &before),
                venue_op(6, Entity::Checkin, after.id, &after),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(rejections(&outcome), vec![]);

    let report = store.daily_report(site.id, day, next).await.unwrap();
    assert_eq!(
        (
            report.orders,
            report.gross_sales_cents,
            report.refunds_cents,
            report.revenue_cents,
            report.checkins
        ),
        (1, 2500, 400, 2100, 1)
    );
    let yesterday = store.daily_report(site.id, midnight(9), day).await.unwrap();
    assert_eq!(
        (
            yesterday.orders,
            yesterday.gross_sales_cents,
            yesterday.refunds_cents,
            yesterday.revenue_cents,
            yesterday.checkins
        ),
        (1, 1000, 0, 1000, 1)
    );

    let sales = store.sales_by_product(site.id, day, next).await.unwrap();
    let figures: Vec<(&str, i64, i64)> = sales
        .iter()
        .map(|s| (s.sku.as_str(), s.quantity, s.sales_cents))
        .collect();
    assert_eq!(figures, vec![("JUMP60", 1, 1500), ("SOCKS", 2, 1000)]);
    let sales = store
        .sales_by_product(site.id, midnight(9), day)
        .await
        .unwrap();
    assert_eq!(sales.len(), 1);
    assert_eq!((sales[0].product_id, sales[0].sales_cents), (jump, 1000));

    let hours = [
        day - Duration::hours(1),
        day,
        day + Duration::hours(1),
        day + Duration::hours(2),
    ];
    assert_eq!(
        store.checkins_between(site.id, &hours).await.unwrap(),
        vec![1, 0, 1]
    );
    assert!(
        store
            .checkins_between(site.id, &hours[..1])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn leaderboards_rank_each_customers_best_by_the_games_score_order(store: Arc<dyn Store>) {
    let a = new_site(&store).await;
    let b = new_site(&store).await;
    let high = new_game(&store, ScoreOrder::HighestWins).await;
    let low = new_game(&store, ScoreOrder::LowestWins).await;
    let (ann, bob) = (customer_record(a.id, "Ann"), customer_record(a.id, "Bob"));
    let cat = customer_record(b.id, "Cat");
    let t = now() - Duration::hours(3);
    let at = |minutes: i64| t + Duration::minutes(minutes);
    let scores_a = [
        score_record(a.id, high.id, ann.id, 50, at(0)),
        score_record(a.id, high.id, ann.id, 80, at(10)),
        score_record(a.id, high.id, bob.id, 80, at(20)),
        score_record(a.id, low.id, ann.id, 50, at(0)),
        score_record(a.id, low.id, ann.id, 70, at(5)),
        score_record(a.id, low.id, bob.id, 40, at(30)),
    ];
    let mut ops = vec![
        venue_op(1, Entity::Customer, ann.id, &ann),
        venue_op(2, Entity::Customer, bob.id, &bob),
    ];
    ops.extend(
        scores_a
            .iter()
            .zip(3..)
            .map(|(s, seq)| venue_op(seq, Entity::Score, s.id, s)),
    );
    assert_eq!(
        rejections(&store.push(a.id, &ops, now()).await.unwrap()),
        vec![]
    );
    let cat_score = score_record(b.id, high.id, cat.id, 90, at(40));
    let outcome = store
        .push(
            b.id,
            &[
                venue_op(1, Entity::Customer, cat.id, &cat),
                venue_op(2, Entity::Score, cat_score.id, &cat_score),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(rejections(&outcome), vec![]);

    let board = |game: &GameRecord, site_id, window, limit| {
        let query = LeaderboardQuery {
            game_id: game.id,
            score_order: game.score_order,
            site_id,
            window,
            limit,
        };
        let store = store.clone();
        async move {
            store
                .leaderboard(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.first_name, e.score, e.site_id, e.at))
                .collect::<Vec<_>>()
        }
    };
    let name = |s: &str| s.to_string();
    // Highest first, one line per customer; of equal scores the earlier one ranks first.
    assert_eq!(
        board(&high, None, None, 20).await,
        vec![
            (name("Cat"), 90, b.id, at(40)),
            (name("Ann"), 80, a.id, at(10)),
            (name("Bob"), 80, a.id, at(20)),
        ]
    );
    assert_eq!(board(&high, None, None, 2).await.len(), 2);
    assert_eq!(
        board(&high, Some(a.id), None, 20).await,
        vec![
            (name("Ann"), 80, a.id, at(10)),
            (name("Bob"), 80, a.id, at(20)),
        ]
    );
    // Only the window's scores count: Ann's 80 falls outside it.
    assert_eq!(
        board(&high, Some(a.id), Some((at(0), at(10))), 20).await,
        vec![(name("Ann"), 50, a.id, at(0))]
    );
    // Lowest first.
    assert_eq!(
        board(&low, None, None, 20).await,
        vec![
            (name("Bob"), 40, a.id, at(30)),
            (name("Ann"), 50, a.id, at(0)),
        ]
    );
}

async fn a_retired_product_stays_listed_inactive_and_replicates(store: Arc<dyn Store>) {
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

async fn customers_are_found_by_phone_email_and_name(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let customer = CustomerRecord {
        email: Some(format!("{}@Example.com", unique("Fay"))),
        ..customer_record(site.id, "Fay")
    };
    store
        .push(
            site.id,
            &[venue_op(1, Entity::Customer, customer.id, &customer)],
            now(),
        )
        .await
        .unwrap();
    let ids = |found: Vec<store::CustomerBalances>| -> Vec<Uuid> {
        found.into_iter().map(|c| c.customer.id).collect()
    };
    let email = customer.email.clone().unwrap().to_lowercase();
    let last = customer.last_name.to_lowercase();
    for search in [
        CustomerSearch::Phone(customer.phone.clone().unwrap()),
        CustomerSearch::Email(email),
        CustomerSearch::Name(last.clone()),
        CustomerSearch::Name(last[..last.len() - 3].to_string()),
        CustomerSearch::Name(format!("fay {last}")),
    ] {
        let found = store
            .search_customers(&search, None, 50, now())
            .await
            .unwrap();
        assert_eq!(ids(found), vec![customer.id], "{search:?}");
    }
    for search in [
        CustomerSearch::Email("nobody@example.com".into()),
        CustomerSearch::Name(format!("{last}x")),
        // Wildcards match themselves.
        CustomerSearch::Name(format!("{}%", &last[..6])),
        CustomerSearch::Name(format!("{}_", &last[..6])),
    ] {
        let found = store
            .search_customers(&search, None, 50, now())
            .await
            .unwrap();
        assert!(!ids(found).contains(&customer.id), "{search:?}");
    }
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

async fn a_user_change_bumps_its_token_version_and_reaches_old_and_new_sites(
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

async fn a_user_change_based_on_a_stale_version_writes_nothing(store: Arc<dyn Store>) {
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

async fn token_versions_are_none_for_disabled_and_unknown_users(store: Arc<dyn Store>) {
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

async fn concurrent_site_updates_of_different_fields_both_land(store: Arc<dyn Store>) {
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

async fn a_site_update_with_a_stale_entity_tag_writes_nothing(store: Arc<dyn Store>) {
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

async fn product_pages_resume_after_their_last_key(store: Arc<dyn Store>) {
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

async fn a_pull_keeps_the_outbox_backlog_the_edge_reported(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    assert_eq!(store.site_sync(site.id).await.unwrap().outbox, None);

    let oldest = now() - chrono::Duration::minutes(42);
    let backlog = OutboxBacklog {
        pending_ops: 17,
        oldest_pending_at: Some(oldest),
    };
    let at = now();
    store
        .record_pull(site.id, 5, at, Some(backlog))
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.pull_cursor, sync.last_pull_at), (5, Some(at)));
    assert_eq!(sync.outbox, Some(backlog));

    // A pull that says nothing of the outbox leaves the last report as it was.
    store.record_pull(site.id, 6, now(), None).await.unwrap();
    assert_eq!(
        store.site_sync(site.id).await.unwrap().outbox,
        Some(backlog)
    );

    let empty = OutboxBacklog {
        pending_ops: 0,
        oldest_pending_at: None,
    };
    store
        .record_pull(site.id, 7, now(), Some(empty))
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.pull_cursor, sync.outbox), (7, Some(empty)));
}

async fn hint_socket_heartbeats_only_move_forward_and_closes_are_kept(store: Arc<dyn Store>) {
    let site = new_site(&store).await;
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!((sync.hint_seen_at, sync.hint_closed_at), (None, None));

    let heard = now();
    store
        .record_hint_socket(site.id, HintSocketEvent::Heard, heard)
        .await
        .unwrap();
    // A heartbeat written late by another instance, older than the one kept, changes nothing.
    store
        .record_hint_socket(
            site.id,
            HintSocketEvent::Heard,
            heard - chrono::Duration::seconds(20),
        )
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(heard), None)
    );

    let closed = heard + chrono::Duration::seconds(5);
    store
        .record_hint_socket(site.id, HintSocketEvent::Closed, closed)
        .await
        .unwrap();
    let later = closed + chrono::Duration::seconds(7);
    store
        .record_hint_socket(site.id, HintSocketEvent::Heard, later)
        .await
        .unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(later), Some(closed))
    );
    // Pulls and pushes leave them alone.
    store.record_pull(site.id, 3, now(), None).await.unwrap();
    let sync = store.site_sync(site.id).await.unwrap();
    assert_eq!(
        (sync.hint_seen_at, sync.hint_closed_at),
        (Some(later), Some(closed))
    );
}

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
async fn waiver_texts_are_published_as_the_next_version_newest_first(store: Arc<dyn Store>) {
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
async fn a_waiver_keeps_the_text_version_it_was_signed_under(store: Arc<dyn Store>) {
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
    old_op
        .data
        .as_object_mut()
        .unwrap()
        .remove("text_version")
        .expect("the field");
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

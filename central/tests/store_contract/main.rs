//! One contract for every central store backend. It always runs on SQLite; on SQL Server when
//! `AERO_TEST_MSSQL_URL` holds an ADO.NET connection string (and says loudly when it skips).
//!
//! Each module holds the contract of one concern; `contract!` below runs every test named there
//! against both backends, as `sqlite_backend::<test>` and `mssql_backend::<test>`.

mod audit;
mod catalog;
mod dead_letters;
mod devices;
mod helpers;
mod idempotency;
mod plugs;
mod reports;
mod sites;
mod sync;
mod users;
mod venue_records;
mod waivers;

use aero_central::store::{self, Store};
use std::sync::Arc;

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
    ($($module:ident: [$($name:ident),* $(,)?]),* $(,)?) => {
        mod sqlite_backend {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::sqlite().await;
                    super::$module::$name(backend.store.clone()).await;
                }
            )*)*
        }
        mod mssql_backend {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(backend) = super::mssql().await {
                        super::$module::$name(backend.store.clone()).await;
                    }
                }
            )*)*
        }
    };
}

contract! {
    catalog: [
        a_product_keeps_what_it_grants,
        usernames_and_skus_are_unique,
        a_retired_product_stays_listed_inactive_and_replicates,
        product_pages_resume_after_their_last_key,
    ],
    sites: [
        sites_round_trip_and_appear_in_the_change_feed,
        site_updates_round_trip_and_replicate_to_the_site,
        concurrent_site_updates_of_different_fields_both_land,
        a_site_update_with_a_stale_entity_tag_writes_nothing,
    ],
    users: [
        disabling_a_user_is_idempotent_keeps_the_row_and_replicates,
        a_user_change_bumps_its_token_version_and_reaches_old_and_new_sites,
        a_user_change_based_on_a_stale_version_writes_nothing,
        token_versions_are_none_for_disabled_and_unknown_users,
    ],
    devices: [
        device_keys_resolve_until_revoked,
        enrollment_tokens_are_single_use_and_expire,
        a_new_enrollment_revokes_the_previous_edge_credential,
    ],
    audit: [
        hq_writes_are_audited,
        the_audit_log_filters_by_venue_actor_and_action,
    ],
    sync: [
        pull_is_scoped_to_the_site_and_chain_wide_rows,
        push_applies_once_and_replays_are_no_ops,
        push_with_a_gap_answers_the_expected_seq,
        rejected_ops_are_reported_and_do_not_block,
        concurrent_writers_never_make_a_reader_skip_a_change,
        a_seq_held_under_another_op_id_is_a_fork_and_applies_nothing,
        an_op_renumbered_after_a_fork_is_acknowledged_and_never_applied_twice,
        the_store_id_is_stable_across_reopen,
        change_anchor_identifies_the_entry_at_a_seq,
        change_scopes_name_each_change_with_its_venue,
        rejected_ops_are_listed_newest_first,
        a_new_customer_from_another_home_site_is_rejected,
        a_record_pushed_again_with_other_content_is_rejected,
        a_pull_keeps_the_outbox_backlog_the_edge_reported,
        hint_socket_heartbeats_only_move_forward_and_closes_are_kept,
    ],
    idempotency: [
        idempotency_keys_replay_and_detect_mismatch,
        a_request_whose_write_committed_is_never_run_again,
        the_answer_of_a_request_commits_with_its_write,
    ],
    dead_letters: [
        hq_dead_letter_requests_reach_only_their_site_and_stop_once_resolved,
        dead_letter_resolutions_are_recorded_once_and_only_for_refused_ops,
    ],
    venue_records: [
        venue_records_are_applied_once_and_published_to_their_scope,
        references_must_exist_at_central,
        refunds_are_checked_against_their_order_and_earlier_refunds,
        ledger_entries_from_two_sites_are_kept_and_negative_balances_reported,
        lapsed_visits_do_not_hide_an_overspent_membership,
        customers_are_found_by_phone_email_and_name,
    ],
    reports: [
        daily_figures_follow_the_sites_local_day,
        leaderboards_rank_each_customers_best_by_the_games_score_order,
    ],
    plugs: [
        a_venue_reports_its_own_plugs_status_and_the_latest_is_kept,
        plug_overrides_from_hq_and_the_venue_are_kept_once_and_replicated,
    ],
    waivers: [
        waiver_texts_are_published_as_the_next_version_newest_first,
        a_waiver_keeps_the_text_version_it_was_signed_under,
    ],
}

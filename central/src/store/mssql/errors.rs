//! Errors and retries: what a SQL Server error means to the store (a conflict, a missing
//! reference, a transient failure, or anything else), and retrying the transient ones with
//! jittered exponential backoff within a deadline.

use crate::store::{StoreError, StoreResult};
use backon::{ExponentialBuilder, Retryable as _};
use std::future::Future;
use std::time::{Duration, Instant};

/// A transient error met after this long is returned to the caller instead of retried.
const RETRY_DEADLINE: Duration = Duration::from_secs(10);

/// Server errors worth retrying: deadlock victim, lock timeout and lock resources, snapshot
/// update conflict, memory pressure, and the connection/failover errors Azure SQL documents as
/// transient (Babelfish maps PostgreSQL deadlocks and lock timeouts to 1205 and 1222).
const TRANSIENT_SERVER_ERRORS: &[u32] = &[
    1204, 1205, 1222, 3960, 8645, 8651, 64, 233, 4060, 4221, 10053, 10054, 10060, 10928, 10929,
    40143, 40197, 40501, 40540, 40613, 49918, 49919, 49920,
];

/// What a duplicate waiver text version is called (a publication that lost a race).
pub(super) const VERSION_TAKEN: &str = "waiver text version";

/// Named unique constraints and primary keys (see the migration), and what a duplicate means.
/// No name is a substring of another, so a message matches at most one.
pub(super) const DUPLICATES: &[(&str, &str)] = &[
    ("uq_users_username", "username"),
    ("uq_waiver_texts_version", VERSION_TAKEN),
    ("uq_products_sku", "sku"),
    ("uq_games_name", "game name"),
    ("uq_plugs_site_name", "plug name"),
    ("uq_devices_key_hash", "device key"),
    ("uq_enrollment_tokens_token_hash", "enrollment token"),
    ("uq_applied_ops_op_id", "op"),
    ("pk_sites", "site"),
    ("pk_enrollment_tokens", "enrollment token"),
    ("pk_devices", "device"),
    ("pk_users", "user"),
    ("pk_user_sites", "site assignment"),
    ("pk_products", "product"),
    ("pk_games", "game"),
    ("pk_plugs", "plug"),
    ("pk_plug_schedules", "schedule"),
    ("pk_customers", "customer"),
    ("pk_waivers", "waiver"),
    ("pk_orders", "order"),
    ("pk_checkins", "check-in"),
    ("pk_order_lines", "order line"),
    ("pk_refunds", "refund"),
    ("pk_ledger_entries", "ledger entry"),
    ("pk_scores", "score"),
    ("pk_change_log", "change"),
    ("pk_site_sync", "site sync state"),
    ("pk_store_meta", "store identity"),
    ("pk_applied_ops", "op"),
    ("pk_audit_log", "audit entry"),
    ("pk_idempotency_keys", "idempotency key"),
    ("pk_dead_letter_resolutions", "dead-letter resolution"),
    ("pk_dead_letter_requests", "dead-letter request"),
    ("pk_plug_status", "plug status"),
    ("pk_plug_overrides", "plug override"),
    ("pk_waiver_texts", "waiver text"),
];

pub(super) fn classify(err: tiberius::error::Error) -> StoreError {
    use tiberius::error::Error;
    match &err {
        Error::Server(token) => {
            classify_server(token.code(), token.message()).unwrap_or_else(|| {
                StoreError::Other(anyhow::Error::new(err).context("SQL Server error"))
            })
        }
        // Refused, reset or timed-out connections: a fresh connection may well succeed.
        Error::Io { .. } | Error::Routing { .. } => StoreError::Transient(err.to_string()),
        _ => StoreError::Other(anyhow::Error::new(err).context("SQL Server client error")),
    }
}

/// The store error a server error number stands for, if it is one the store handles.
fn classify_server(code: u32, message: &str) -> Option<StoreError> {
    let lower = message.to_ascii_lowercase();
    if code == 2627 || code == 2601 {
        // SQL Server quotes the constraint name in the message; Babelfish passes on
        // PostgreSQL's, which names it too.
        let what = DUPLICATES
            .iter()
            .find(|(name, _)| lower.contains(name))
            .map_or("record", |(_, what)| what);
        Some(StoreError::Conflict(format!("{what} already exists")))
    } else if code == 547 && lower.contains("foreign key") {
        // A reference to a row that does not exist (a site, user or plug).
        Some(StoreError::NotFound)
    } else if TRANSIENT_SERVER_ERRORS.contains(&code) {
        Some(StoreError::Transient(format!(
            "SQL Server error {code}: {message}"
        )))
    } else {
        None
    }
}

/// For units of work whose only possible duplicate is a concurrent twin (two deliveries of one
/// push batch, two first uses of one idempotency key, two first pulls of a site): the loser
/// retries and then finds the winner's row.
pub(super) fn race_is_transient(err: StoreError) -> StoreError {
    match err {
        StoreError::Conflict(what) => StoreError::Transient(format!("concurrent write: {what}")),
        other => other,
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .with_max_times(8)
        .with_total_delay(Some(RETRY_DEADLINE))
}

/// Runs `work` until it succeeds, fails for good, or stays transient past the deadline.
/// Every attempt is a whole unit of work (its own connection checkout and transaction), so a
/// retry never continues a half-done one. Ids are chosen by callers, so a retry after a commit
/// whose acknowledgement was lost cannot duplicate anything; it reports the row as existing.
pub(super) async fn retrying<T, F, Fut>(work: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let started = Instant::now();
    work.retry(backoff())
        .when(move |err: &StoreError| {
            matches!(err, StoreError::Transient(_)) && started.elapsed() < RETRY_DEADLINE
        })
        .notify(|err: &StoreError, delay: Duration| {
            tracing::debug!(error = %err, ?delay, "retrying after a transient SQL Server error");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_map_to_store_errors() {
        let conflict = |code, message| match classify_server(code, message) {
            Some(StoreError::Conflict(what)) => what,
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(
            conflict(
                2627,
                "Violation of UNIQUE KEY constraint 'uq_users_username'. Cannot insert duplicate key in object 'dbo.users'. The duplicate key value is (bob)."
            ),
            "username already exists"
        );
        assert_eq!(
            conflict(
                2627,
                "duplicate key value violates unique constraint \"uq_plugs_site_name\""
            ),
            "plug name already exists"
        );
        assert_eq!(
            conflict(2627, "Violation of PRIMARY KEY constraint 'PK_Sites'."),
            "site already exists"
        );
        assert_eq!(
            conflict(2601, "Cannot insert duplicate key row in object 'dbo.x'"),
            "record already exists"
        );
        assert!(matches!(
            classify_server(
                547,
                "The INSERT statement conflicted with the FOREIGN KEY constraint \"fk_plugs_site\"."
            ),
            Some(StoreError::NotFound)
        ));
        for code in [1205, 1222, 40613] {
            assert!(
                matches!(
                    classify_server(code, "busy"),
                    Some(StoreError::Transient(_))
                ),
                "{code}"
            );
        }
        assert!(
            classify_server(
                547,
                "The INSERT statement conflicted with the CHECK constraint"
            )
            .is_none()
        );
        assert!(classify_server(208, "Invalid object name 'nope'.").is_none());
    }
}

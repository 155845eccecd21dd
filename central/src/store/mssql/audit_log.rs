//! Reading the audit log, newest first (entries are written by `changelog::audit`).

use super::MssqlStore;
use super::codec::{audit_columns, audit_from};
use crate::store::{AuditEntry, StoreResult};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn list(
    store: &MssqlStore,
    site_id: Option<Uuid>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                // Two statements rather than `@P2 IS NULL OR site_id = @P2`, so each gets its own
                // plan.
                let mut q = match site_id {
                    None => Query::new(concat!(
                        "SELECT TOP (@P1) ",
                        audit_columns!(),
                        " FROM audit_log ",
                        "ORDER BY [at] DESC, CONVERT(CHAR(36), id) DESC"
                    )),
                    Some(_) => Query::new(concat!(
                        "SELECT TOP (@P1) ",
                        audit_columns!(),
                        " FROM audit_log WHERE site_id = @P2 ",
                        "ORDER BY [at] DESC, CONVERT(CHAR(36), id) DESC"
                    )),
                };
                q.bind(i64::from(limit));
                if let Some(site_id) = site_id {
                    q.bind(site_id);
                }
                conn.rows(q).await?.iter().map(audit_from).collect()
            })
        })
        .await
}

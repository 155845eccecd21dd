//! Reading the audit log, newest first (entries are written by `changelog::audit`).

use super::MssqlStore;
use super::codec::{audit_columns, audit_from};
use crate::store::audit::{AuditValue, Dialect};
use crate::store::{AuditEntry, AuditFilter, StoreResult};
use tiberius::Query;

/// How the audit log's filter is spelled here. Names compare ignoring case whatever the
/// database's default collation, as usernames do (their column's collation, V1).
const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("@P{n}"),
    ignore_case: " COLLATE SQL_Latin1_General_CP1_CI_AS",
};

pub(super) async fn list(
    store: &MssqlStore,
    filter: &AuditFilter,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    // The filter's parts become the statement's conditions (not `@P2 IS NULL OR ...`), so each
    // combination gets its own plan.
    let (condition, values) = filter.sql(2, &DIALECT);
    let sql = format!(
        concat!(
            "SELECT TOP (@P1) ",
            audit_columns!(),
            " FROM audit_log {} ",
            "ORDER BY [at] DESC, CONVERT(CHAR(36), id) DESC"
        ),
        condition
    );
    let (sql, values) = (sql.as_str(), values.as_slice());
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                for value in values {
                    match value {
                        AuditValue::Id(id) => q.bind(*id),
                        AuditValue::Text(text) => q.bind(*text),
                    }
                }
                conn.rows(q).await?.iter().map(audit_from).collect()
            })
        })
        .await
}

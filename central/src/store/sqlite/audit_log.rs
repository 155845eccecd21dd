//! Reading the audit log, newest first (entries are written by `changelog::audit`).

use super::SqliteStore;
use super::codec::parse_ts;
use crate::store::audit::{AuditValue, Dialect};
use crate::store::{AuditEntry, AuditFilter, StoreResult};
use rusqlite::ToSql;

/// How the audit log's filter is spelled here: usernames compare ignoring case like the
/// `users.username` column.
const AUDIT_DIALECT: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    ignore_case: " COLLATE NOCASE",
};

pub(super) async fn list(
    store: &SqliteStore,
    filter: &AuditFilter,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let filter = filter.clone();
    store.read(move |c| {
        let (condition, values) = filter.sql(2, &AUDIT_DIALECT);
        let mut stmt = c.prepare_cached(&format!(
            "SELECT id, at, actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id FROM audit_log
                 {condition} ORDER BY at DESC, id DESC LIMIT ?1"
        ))?;
        let mut params: Vec<&dyn ToSql> = vec![&limit];
        params.extend(values.iter().map(|value| match value {
            AuditValue::Id(id) => id as &dyn ToSql,
            AuditValue::Text(text) => text as &dyn ToSql,
        }));
        Ok(stmt
            .query_map(params.as_slice(), |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: parse_ts(&r.get::<_, String>(1)?)?,
                    actor_kind: r.get(2)?,
                    actor_id: r.get(3)?,
                    actor_name: r.get(4)?,
                    ip: r.get(5)?,
                    request_id: r.get(6)?,
                    action: r.get(7)?,
                    target: r.get(8)?,
                    site_id: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    })
    .await
}

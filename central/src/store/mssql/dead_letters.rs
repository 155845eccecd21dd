//! A venue's refused ops as HQ sees them, with the venue's decision and HQ's request about
//! each, and HQ's requests themselves.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{decode_error, opt_text, rejected_op_from, ts};
use super::errors::race_is_transient;
use crate::store::dead_letters::{admit_request, request_audit_action, state_filter};
use crate::store::{Actor, AuditEvent, DeadLetterState, RejectedOpRecord, StoreResult};
use aero_shared::wire::{DeadLetterRequest, Entity, Resolution};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn rejected_ops(
    store: &MssqlStore,
    site_id: Uuid,
    state: DeadLetterState,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<RejectedOpRecord>> {
    let filter = state_filter(state);
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(format!(
                    "SELECT TOP (@P2) a.seq, a.op_id, a.rejected, a.applied_at, \
                            r.resolution, r.retried_as, r.resolved_by, r.resolved_at, \
                            r.resolution_op_id, r.recorded_at, \
                            q.action, q.requested_by, q.requested_at \
                       FROM applied_ops a \
                       LEFT JOIN dead_letter_resolutions r ON r.site_id = a.site_id AND r.op_id = a.op_id \
                       LEFT JOIN dead_letter_requests q ON q.site_id = a.site_id AND q.op_id = a.op_id \
                     WHERE a.site_id = @P1 AND a.rejected IS NOT NULL \
                       AND NOT EXISTS (SELECT 1 FROM applied_ops b \
                                        WHERE b.site_id = a.site_id AND b.op_id = a.op_id AND b.seq < a.seq) \
                       AND a.seq < @P3 \
                       {filter} \
                     ORDER BY a.seq DESC"
                ));
                q.bind(site_id);
                q.bind(i64::from(limit));
                q.bind(before.unwrap_or(i64::MAX));
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| rejected_op_from(row, site_id))
                    .collect()
            })
        })
        .await
}

pub(super) async fn request_action(
    store: &MssqlStore,
    actor: &Actor,
    request: &DeadLetterRequest,
) -> StoreResult<()> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT TOP (1) r.resolution \
                       FROM applied_ops a \
                       LEFT JOIN dead_letter_resolutions r ON r.site_id = a.site_id AND r.op_id = a.op_id \
                      WHERE a.site_id = @P1 AND a.op_id = @P2 AND a.rejected IS NOT NULL",
                );
                q.bind(request.site_id);
                q.bind(request.op_id);
                let refused = match conn.row(q).await? {
                    None => None,
                    Some(row) => Some(match opt_text(&row, 0)? {
                        None => None,
                        Some(done) => Some(Resolution::parse(&done).ok_or_else(|| {
                            decode_error(0, format!("unknown resolution {done:?}"))
                        })?),
                    }),
                };
                admit_request(refused)?;
                // Last request wins. The key-range lock makes a concurrent request for the same
                // op wait; where hints are ignored (Babelfish) the loser's duplicate key is
                // retried as a whole, and then finds the winner's row to update.
                let mut q = Query::new(
                    "UPDATE dead_letter_requests WITH (UPDLOCK, SERIALIZABLE) \
                        SET action = @P3, requested_by = @P4, requested_at = @P5 \
                      WHERE site_id = @P1 AND op_id = @P2; \
                     IF @@ROWCOUNT = 0 \
                         INSERT INTO dead_letter_requests (site_id, op_id, action, requested_by, requested_at) \
                         VALUES (@P1, @P2, @P3, @P4, @P5);",
                );
                q.bind(request.site_id);
                q.bind(request.op_id);
                q.bind(request.action.as_str());
                q.bind(request.requested_by.as_str());
                q.bind(ts(request.requested_at));
                conn.exec(q).await.map_err(race_is_transient)?;
                let event = AuditEvent {
                    action: request_audit_action(request),
                    target: Some(request.op_id.to_string()),
                    site_id: Some(request.site_id),
                };
                audit(conn, actor, event, request.requested_at).await?;
                let change = NewChange::upsert(
                    Entity::DeadLetterRequest,
                    request.op_id,
                    Some(request.site_id),
                    request,
                    request.requested_at,
                )?;
                append_changes(conn, &[change]).await
            })
        })
        .await
}

//! A venue's refused ops as HQ sees them, with the venue's decision and HQ's request about
//! each, and HQ's requests themselves.

use super::changelog::{append_change, audit};
use super::codec::{parse_enum, parse_ts, ts};
use super::conn::exec;
use crate::store::dead_letters::{admit_request, request_audit_action, state_filter};
use crate::store::{
    Actor, AuditEvent, DeadLetterState, RejectedOpRecord, ResolutionRecord, StoreResult,
};
use aero_shared::wire::{DeadLetterRequest, Entity, Resolution};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

pub(super) fn rejected_ops(
    c: &Connection,
    site_id: Uuid,
    state: DeadLetterState,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<RejectedOpRecord>> {
    let filter = state_filter(state);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT a.seq, a.op_id, a.rejected, a.applied_at,
                r.resolution, r.retried_as, r.resolved_by, r.resolved_at,
                r.resolution_op_id, r.recorded_at,
                q.action, q.requested_by, q.requested_at
           FROM applied_ops a
           LEFT JOIN dead_letter_resolutions r ON r.site_id = a.site_id AND r.op_id = a.op_id
           LEFT JOIN dead_letter_requests q ON q.site_id = a.site_id AND q.op_id = a.op_id
         WHERE a.site_id = ?1 AND a.rejected IS NOT NULL
           -- an alias (the same op at a later seq, after a fork) is one refusal, not two
           AND NOT EXISTS (SELECT 1 FROM applied_ops b
                            WHERE b.site_id = a.site_id AND b.op_id = a.op_id AND b.seq < a.seq)
           AND a.seq < ?3
           {filter}
         ORDER BY a.seq DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![site_id, limit, before.unwrap_or(i64::MAX)], |r| {
        let op_id: Uuid = r.get(1)?;
        let resolution = match r.get::<_, Option<String>>(4)? {
            None => None,
            Some(how) => Some(ResolutionRecord {
                how: parse_enum(&how)?,
                retried_as: r.get(5)?,
                by: r.get(6)?,
                at: parse_ts(&r.get::<_, String>(7)?)?,
                resolution_op_id: r.get(8)?,
                recorded_at: parse_ts(&r.get::<_, String>(9)?)?,
            }),
        };
        let request = match r.get::<_, Option<String>>(10)? {
            None => None,
            Some(action) => Some(DeadLetterRequest {
                op_id,
                site_id,
                action: parse_enum(&action)?,
                requested_by: r.get(11)?,
                requested_at: parse_ts(&r.get::<_, String>(12)?)?,
            }),
        };
        Ok(RejectedOpRecord {
            seq: r.get(0)?,
            op_id,
            reason: r.get(2)?,
            rejected_at: parse_ts(&r.get::<_, String>(3)?)?,
            resolution,
            request,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn request_action(
    tx: &Transaction<'_>,
    actor: &Actor,
    request: &DeadLetterRequest,
) -> StoreResult<()> {
    let refused: Option<Option<String>> = tx
        .query_row(
            "SELECT r.resolution
               FROM applied_ops a
               LEFT JOIN dead_letter_resolutions r ON r.site_id = a.site_id AND r.op_id = a.op_id
              WHERE a.site_id = ?1 AND a.op_id = ?2 AND a.rejected IS NOT NULL
              LIMIT 1",
            params![request.site_id, request.op_id],
            |r| r.get(0),
        )
        .optional()?;
    let refused = refused
        .map(|done| done.as_deref().map(parse_enum::<Resolution>).transpose())
        .transpose()?;
    admit_request(refused)?;
    exec(
        tx,
        "INSERT INTO dead_letter_requests (site_id, op_id, action, requested_by, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (site_id, op_id) DO UPDATE SET action = excluded.action,
            requested_by = excluded.requested_by, requested_at = excluded.requested_at",
        params![
            request.site_id,
            request.op_id,
            request.action.as_str(),
            request.requested_by,
            ts(request.requested_at)
        ],
    )?;
    audit(
        tx,
        actor,
        AuditEvent {
            action: request_audit_action(request),
            target: Some(request.op_id.to_string()),
            site_id: Some(request.site_id),
        },
        request.requested_at,
    )?;
    append_change(
        tx,
        Entity::DeadLetterRequest,
        request.op_id,
        Some(request.site_id),
        request,
        request.requested_at,
    )
}

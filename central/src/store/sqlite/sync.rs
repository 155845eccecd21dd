//! The sync protocol: applying a site's pushed batch (by the rules of `push_rules`, in one
//! transaction), recording its pulls, serving the change feed and what an edge checks its
//! place in it against (anchors, its acked seq), and the per-site sync status HQ shows.

use super::SqliteStore;
use super::changelog::append_change;
use super::codec::{CUSTOMER_COLUMNS, customer_from_row, parse_opt_ts, parse_ts, ts};
use super::conn::exec;
use super::venue;
use crate::store::push_rules::{self, Held, HeldOp, Lookup, Step};
use crate::store::{
    ChangeScope, HintSocketEvent, PushOutcome, StoreError, StoreResult, VenueWrite,
};
use aero_shared::wire::{
    Change, ChangeAnchor, ChangeEntity, ChangeOp, Entity, OutboxBacklog, PushOp, SiteSyncStatus,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

/// Applies one accepted venue write, carried by the op `op_id`.
fn apply_venue_write(
    tx: &Transaction<'_>,
    op_id: Uuid,
    write: &VenueWrite,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    match write {
        VenueWrite::Customer(c) => {
            // Last arrival wins: central is the authority on a customer's final state.
            exec(
                tx,
                "INSERT INTO customers (id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name,
                    last_name = excluded.last_name, birth_date = excluded.birth_date,
                    phone = excluded.phone, email = excluded.email, guardian_id = excluded.guardian_id",
                params![c.id, c.first_name, c.last_name, c.birth_date, c.phone, c.email, c.guardian_id, c.home_site_id, ts(c.created_at)],
            )?;
            let stored = tx.query_row(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"),
                [c.id],
                customer_from_row,
            )?;
            append_change(tx, Entity::Customer, c.id, None, &stored, at)
        }
        VenueWrite::Waiver(w) => {
            let inserted = exec(
                tx,
                "INSERT INTO waivers (id, customer_id, site_id, signer_name, signed_at, expires_at, text_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    w.id,
                    w.customer_id,
                    w.site_id,
                    w.signer_name,
                    ts(w.signed_at),
                    ts(w.expires_at),
                    w.text_version
                ],
            )?;
            if inserted == 1 {
                append_change(tx, Entity::Waiver, w.id, None, w, at)?;
            }
            Ok(())
        }
        VenueWrite::DeadLetterResolved {
            site_id,
            resolution: r,
        } => {
            // Last arrival wins: a box restored from a backup may decide again about the same op.
            tx.prepare_cached(
                "INSERT INTO dead_letter_resolutions (site_id, op_id, resolution, retried_as,
                    resolved_by, resolved_at, resolution_op_id, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (site_id, op_id) DO UPDATE SET resolution = excluded.resolution,
                    retried_as = excluded.retried_as, resolved_by = excluded.resolved_by,
                    resolved_at = excluded.resolved_at, resolution_op_id = excluded.resolution_op_id,
                    recorded_at = excluded.recorded_at",
            )?
            .execute(params![
                site_id,
                r.op_id,
                r.resolution.as_str(),
                r.retried_as,
                r.by.trim(),
                ts(r.at),
                op_id,
                ts(at)
            ])?;
            Ok(())
        }
        VenueWrite::PlugStatus(s) => {
            // Last arrival wins: the venue pushes a plug's statuses in the order it saw them.
            tx.prepare_cached(
                "INSERT INTO plug_status (plug_id, site_id, observed_at, recorded_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (plug_id) DO UPDATE SET site_id = excluded.site_id,
                    observed_at = excluded.observed_at, recorded_at = excluded.recorded_at,
                    data = excluded.data",
            )?
            .execute(params![
                s.plug_id,
                s.site_id,
                ts(s.observed_at),
                ts(at),
                serde_json::to_string(s).map_err(anyhow::Error::from)?
            ])?;
            Ok(())
        }
        VenueWrite::PlugOverride(o) => venue::plug_override(tx, o, at),
        VenueWrite::Order(o) => venue::order(tx, o, at),
        VenueWrite::Refund(r) => venue::refund(tx, r, at),
        VenueWrite::LedgerEntry(e) => venue::ledger_entry(tx, e, at),
        VenueWrite::Checkin(c) => venue::checkin(tx, c, at),
        VenueWrite::Score(s) => venue::score(tx, s, at),
    }
}

/// Loads what central holds for a batch (see [`push_rules::Lookup`]).
fn held_for(tx: &Transaction<'_>, site_id: Uuid, ops: &[PushOp]) -> StoreResult<Held> {
    let acked: i64 = tx.query_row(
        "SELECT acked_seq FROM site_sync WHERE site_id = ?1",
        [site_id],
        |r| r.get(0),
    )?;
    let lookup = Lookup::of(ops);
    let mut held = Vec::new();
    let row_to_held = |r: &Row<'_>| {
        Ok(HeldOp {
            seq: r.get(0)?,
            op_id: r.get(1)?,
            rejected: r.get(2)?,
        })
    };
    let mut by_seq = tx.prepare_cached(
        "SELECT seq, op_id, rejected FROM applied_ops WHERE site_id = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    for op in by_seq.query_map(
        params![site_id, lookup.first_seq, lookup.last_seq],
        row_to_held,
    )? {
        held.push(op?);
    }
    // Through the op_id index: with `ORDER BY seq` the planner would walk the site's whole
    // history in key order instead. The lowest seq (the original, not an alias) is chosen here.
    let mut by_id = tx.prepare_cached(
        "SELECT seq, op_id, rejected FROM applied_ops INDEXED BY applied_ops_op_id
          WHERE op_id = ?2 AND site_id = ?1",
    )?;
    let mut by_op_id = Vec::new();
    for op_id in &lookup.op_ids {
        let mut found: Option<HeldOp> = None;
        for op in by_id.query_map(params![site_id, op_id], row_to_held)? {
            let op = op?;
            if found.as_ref().is_none_or(|f| op.seq < f.seq) {
                found = Some(op);
            }
        }
        by_op_id.extend(found);
    }
    let mut known = Vec::new();
    let mut customer =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)")?;
    for id in &lookup.customer_ids {
        if customer.query_row([id], |r| r.get::<_, bool>(0))? {
            known.push(*id);
        }
    }
    let mut refused = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM applied_ops INDEXED BY applied_ops_op_id
                         WHERE op_id = ?2 AND site_id = ?1 AND rejected IS NOT NULL)",
    )?;
    let mut rejected_ops = Vec::new();
    for &op_id in &lookup.resolved_op_ids {
        if refused.query_row(params![site_id, op_id], |r| r.get::<_, bool>(0))? {
            rejected_ops.push(op_id);
        }
    }
    let mut held = Held::new(acked, held, known);
    held.known.rejected_ops.extend(rejected_ops);
    venue::load_known(tx, &lookup, &mut held.known)?;
    // An op's original (lowest) seq is what identifies it; aliases are found by seq above.
    for op in by_op_id {
        held.by_op_id.insert(op.op_id, op);
    }
    Ok(held)
}

fn push_batch(
    tx: &Transaction<'_>,
    site_id: Uuid,
    ops: &[PushOp],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    exec(
        tx,
        "INSERT INTO site_sync (site_id) VALUES (?1) ON CONFLICT (site_id) DO NOTHING",
        [site_id],
    )?;
    let held = held_for(tx, site_id, ops)?;
    let plan = push_rules::plan(site_id, ops, &held, |_| Ok(()));
    for step in &plan.steps {
        let (seq, op_id, rejected) = match step {
            Step::Apply { seq, op_id, write } => {
                apply_venue_write(tx, *op_id, write, at)?;
                (*seq, *op_id, None)
            }
            Step::Reject { seq, op_id, reason } => (*seq, *op_id, Some(reason.as_str())),
            Step::Alias {
                seq,
                op_id,
                rejected,
            } => (*seq, *op_id, rejected.as_deref()),
        };
        tx.prepare_cached(
            "INSERT INTO applied_ops (site_id, seq, op_id, rejected, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![site_id, seq, op_id, rejected, ts(at)])?;
    }
    exec(
        tx,
        "UPDATE site_sync SET acked_seq = ?2, last_push_at = ?3 WHERE site_id = ?1",
        params![site_id, plan.outcome.acked_seq, ts(at)],
    )?;
    Ok(plan.outcome)
}

pub(super) async fn pull(
    store: &SqliteStore,
    site_id: Uuid,
    after: i64,
    limit: u32,
    max_bytes: usize,
) -> StoreResult<Vec<Change>> {
    store
        .read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, entity, entity_id, op, site_id, data, changed_at FROM change_log
                 WHERE seq > ?1 AND (site_id IS NULL OR site_id = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![after, site_id, limit])?;
            let mut changes = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let data: String = row.get(5)?;
                if !changes.is_empty() && bytes + data.len() > max_bytes {
                    break;
                }
                bytes += data.len();
                let entity: String = row.get(1)?;
                let op: String = row.get(3)?;
                changes.push(Change {
                    seq: row.get(0)?,
                    entity: ChangeEntity::parse(&entity),
                    entity_id: row.get(2)?,
                    op: ChangeOp::parse(&op).with_context(|| format!("unknown op {op}"))?,
                    site_id: row.get(4)?,
                    data: serde_json::from_str(&data).map_err(|e| StoreError::Other(e.into()))?,
                    changed_at: parse_ts(&row.get::<_, String>(6)?)?,
                });
            }
            Ok(changes)
        })
        .await
}

pub(super) async fn change_head(store: &SqliteStore) -> StoreResult<i64> {
    store
        .read(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
}

pub(super) async fn change_scopes(
    store: &SqliteStore,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<ChangeScope>> {
    store
        .read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, site_id FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let scopes = stmt
                .query_map(params![after, limit], |r| {
                    Ok(ChangeScope {
                        seq: r.get(0)?,
                        site_id: r.get(1)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(scopes)
        })
        .await
}

pub(super) async fn change_anchor(
    store: &SqliteStore,
    site_id: Uuid,
    seq: i64,
) -> StoreResult<Option<ChangeAnchor>> {
    store
        .read(move |c| {
            let row: Option<(Uuid, String)> = c
                .prepare_cached(
                    "SELECT entity_id, changed_at FROM change_log
                     WHERE seq = ?1 AND (site_id IS NULL OR site_id = ?2)",
                )?
                .query_row(params![seq, site_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(entity_id, at)| {
                Ok(ChangeAnchor {
                    seq,
                    entity_id,
                    changed_at: parse_ts(&at)?,
                })
            })
            .transpose()
        })
        .await
}

pub(super) async fn acked_seq(store: &SqliteStore, site_id: Uuid) -> StoreResult<i64> {
    store
        .read(move |c| {
            Ok(
                c.prepare_cached("SELECT acked_seq FROM site_sync WHERE site_id = ?1")?
                    .query_row([site_id], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
            )
        })
        .await
}

pub(super) async fn record_pull(
    store: &SqliteStore,
    site_id: Uuid,
    cursor: i64,
    at: DateTime<Utc>,
    outbox: Option<OutboxBacklog>,
) -> StoreResult<()> {
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO site_sync (site_id, pull_cursor, last_pull_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site_id) DO UPDATE SET pull_cursor = excluded.pull_cursor, last_pull_at = excluded.last_pull_at",
            params![site_id, cursor, ts(at)],
        )?;
        if let Some(outbox) = outbox {
            exec(
                tx,
                "UPDATE site_sync SET pending_ops = ?2, oldest_pending_at = ?3 WHERE site_id = ?1",
                params![site_id, outbox.pending_ops, outbox.oldest_pending_at.map(ts)],
            )?;
        }
        Ok(())
    })
    .await
}

pub(super) async fn push(
    store: &SqliteStore,
    site_id: Uuid,
    ops: &[PushOp],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    let ops = ops.to_vec();
    store
        .write(move |tx| push_batch(tx, site_id, &ops, at))
        .await
}

pub(super) async fn site_sync(store: &SqliteStore, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
    store
        .read(move |c| {
            type Times = (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            type Row = (i64, i64, Option<i64>, Option<String>, Times);
            let row: Option<Row> = c
                .query_row(
                    "SELECT acked_seq, pull_cursor, pending_ops, oldest_pending_at,
                            last_push_at, last_pull_at, hint_seen_at, hint_closed_at
                       FROM site_sync WHERE site_id = ?1",
                    [site_id],
                    |r| {
                        let times = (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, times))
                    },
                )
                .optional()?;
            let (acked_seq, pull_cursor, pending_ops, oldest, (push, pull, seen, closed)) =
                row.unwrap_or((0, 0, None, None, (None, None, None, None)));
            let oldest_pending_at = parse_opt_ts(oldest)?;
            let pull_lag = c.query_row(
                "SELECT COUNT(*) FROM change_log WHERE seq > ?1 AND (site_id IS NULL OR site_id = ?2)",
                params![pull_cursor, site_id],
                |r| r.get(0),
            )?;
            Ok(SiteSyncStatus {
                site_id,
                last_push_at: parse_opt_ts(push)?,
                last_pull_at: parse_opt_ts(pull)?,
                acked_seq,
                pull_cursor,
                pull_lag,
                outbox: pending_ops.map(|pending_ops| OutboxBacklog {
                    pending_ops,
                    oldest_pending_at,
                }),
                hint_seen_at: parse_opt_ts(seen)?,
                hint_closed_at: parse_opt_ts(closed)?,
            })
        })
        .await
}

pub(super) async fn record_hint_socket(
    store: &SqliteStore,
    site_id: Uuid,
    event: HintSocketEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    // Timestamps are written in one fixed-width format, so they compare as text.
    let sql = match event {
        HintSocketEvent::Heard => {
            "UPDATE site_sync SET hint_seen_at = ?2
                  WHERE site_id = ?1 AND (hint_seen_at IS NULL OR hint_seen_at < ?2)"
        }
        HintSocketEvent::Closed => "UPDATE site_sync SET hint_closed_at = ?2 WHERE site_id = ?1",
    };
    store
        .write(move |tx| {
            exec(tx, sql, params![site_id, ts(at)])?;
            Ok(())
        })
        .await
}

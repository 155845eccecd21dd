//! Recording central's answer to a push, in one writer transaction: rejected ops become dead
//! letters, confirmed ops move to the retention window, and the outbox is realigned with
//! central's sequence when central forked, skipped ahead or was restored from a backup.

use crate::replica::{apply, ts};
use crate::sync::recovery;
use aero_shared::wire::PushResponse;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

/// What one answer changed at the edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Ops central confirmed, now in the retention window.
    pub confirmed: usize,
    /// Ops central refused for good, now dead letters.
    pub rejected: usize,
    /// The outbox was renumbered to continue central's sequence.
    pub realigned: bool,
    /// Central had been restored from a backup (it acknowledged less than before).
    pub rolled_back: bool,
}

impl Settled {
    /// Whether the next push can differ from this one.
    pub fn progressed(&self) -> bool {
        self.confirmed > 0 || self.rejected > 0 || self.realigned || self.rolled_back
    }
}

/// Records `response` to the push of `batch` (each op's seq and op id as sent), sent when the
/// highest seq central had acknowledged was `known_acked`. Ops are matched by op id, never by
/// seq alone: the outbox may have been renumbered while the push was out.
pub fn settle(
    conn: &Connection,
    batch: &[(i64, Uuid)],
    known_acked: i64,
    response: &PushResponse,
    now: DateTime<Utc>,
) -> anyhow::Result<Settled> {
    recovery::check_store(conn, response.store_id)?;
    let mut settled = Settled::default();
    let at = ts(now);
    for op in &response.rejected {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO dead_letters (op_id, seq, entity, entity_id, kind, data, reason, rejected_at, created_at)
             SELECT op_id, seq, entity, entity_id, kind, data, ?2, ?3, created_at FROM outbox WHERE op_id = ?1",
        )?
        .execute(params![op.op_id, op.reason, at])?;
        settled.rejected += conn
            .prepare_cached("DELETE FROM outbox WHERE op_id = ?1")?
            .execute([op.op_id])?;
    }
    // Everything central took before the first seq it holds under another op id.
    let confirmed_through = response
        .forked_at
        .map_or(response.acked_seq, |seq| seq - 1)
        .min(response.acked_seq);
    let refused: std::collections::HashSet<Uuid> =
        response.rejected.iter().map(|op| op.op_id).collect();
    let confirmed: Vec<(i64, Uuid)> = batch
        .iter()
        .filter(|(seq, op_id)| *seq <= confirmed_through && !refused.contains(op_id))
        .copied()
        .collect();
    settled.confirmed = recovery::retain(conn, &confirmed, now)?;
    settled.rolled_back = recovery::note_acked(conn, response.acked_seq, known_acked)?;
    let first: Option<i64> = conn
        .prepare_cached("SELECT MIN(seq) FROM outbox")?
        .query_row([], |r| r.get(0))?;
    if !settled.rolled_back && first.is_some_and(|seq| seq != response.acked_seq + 1) {
        let (restored, pending) = recovery::realign(conn, response.acked_seq)?;
        tracing::warn!(
            acked_seq = response.acked_seq,
            forked_at = response.forked_at,
            expected_seq = response.expected_seq,
            restored,
            pending,
            "the outbox did not continue central's sequence; renumbered it after central's ack"
        );
        settled.realigned = true;
    }
    apply::release_held(conn, now)?;
    conn.prepare_cached(
        "UPDATE sync_state SET last_push_at = ?1, online = 1, push_error = NULL, last_error = NULL WHERE id = 1",
    )?
    .execute([at])?;
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{append_op, pending};
    use crate::replica::Replica;
    use aero_shared::wire::{Entity, OpKind, RejectedOp};

    fn answer(acked_seq: i64, forked_at: Option<i64>, store_id: Uuid) -> PushResponse {
        PushResponse {
            acked_seq,
            expected_seq: None,
            rejected: Vec::new(),
            forked_at,
            store_id,
            head: 0,
        }
    }

    fn queue(conn: &Connection, n: usize) -> Vec<(i64, Uuid)> {
        for i in 0..n {
            append_op(
                conn,
                Entity::Customer,
                Uuid::now_v7(),
                OpKind::Upsert,
                &i,
                Utc::now(),
            )
            .expect("op");
        }
        pending(conn, 1000, usize::MAX)
            .expect("pending")
            .into_iter()
            .map(|op| (op.seq, op.op_id))
            .collect()
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn confirmed_ops_are_retained_and_rejected_ones_dead_lettered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let batch = queue(&conn, 10);
        let mut response = answer(8, None, Uuid::now_v7());
        response.rejected.push(RejectedOp {
            seq: 3,
            op_id: batch[2].1,
            reason: "bad".into(),
        });
        let settled = settle(&conn, &batch[..9], 0, &response, Utc::now()).expect("settle");
        assert_eq!((settled.confirmed, settled.rejected), (7, 1));
        assert!(!settled.realigned);
        assert_eq!(count(&conn, "outbox"), 2);
        assert_eq!(count(&conn, "acked_ops"), 7);
        assert_eq!(count(&conn, "dead_letters"), 1);
    }

    #[test]
    fn a_fork_keeps_every_unconfirmed_op_and_renumbers_it_after_centrals_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 45).expect("open");
        let batch = queue(&conn, 36); // 45..=80
        // Central holds 45..=50 from this box (before its backup) and 51..=100 from the box
        // that kept running.
        let settled = settle(
            &conn,
            &batch,
            0,
            &answer(100, Some(51), Uuid::now_v7()),
            Utc::now(),
        )
        .expect("settle");
        assert_eq!(settled.confirmed, 6);
        assert!(settled.realigned);
        let after = pending(&conn, 1000, usize::MAX).expect("pending");
        assert_eq!(after.len(), 30);
        assert_eq!(after.first().map(|op| op.seq), Some(101));
        assert_eq!(
            after.iter().map(|op| op.op_id).collect::<Vec<_>>(),
            batch[6..].iter().map(|(_, id)| *id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_gap_past_the_retention_window_is_closed_instead_of_stalling_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 151).expect("open");
        let batch = queue(&conn, 5); // 151..=155
        let mut response = answer(100, None, Uuid::now_v7());
        response.expected_seq = Some(101);
        let settled = settle(&conn, &batch, 0, &response, Utc::now()).expect("settle");
        assert!(settled.progressed());
        let after = pending(&conn, 1000, usize::MAX).expect("pending");
        assert_eq!(after.first().map(|op| op.seq), Some(101));
        assert_eq!(after.len(), 5);
    }
}

//! What the edge does when central is not the central it left: another database (refused), a
//! database restored from a backup (acknowledged ops re-sent from the retention window, the
//! replica pulled again), or a sequence that forked from what central holds (pending ops
//! renumbered after central's acknowledged seq). Every function runs on the writer's connection,
//! inside its transaction. The protocol is described in `docs/sync-protocol.md`.

use crate::replica::ts;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

/// Central answered from a database other than the one this edge is bound to.
#[derive(Debug, thiserror::Error)]
#[error(
    "central answered from database {answered}, but this edge is bound to database {bound}: \
     refusing to sync (is the central URL pointing at another chain's server?)"
)]
pub struct WrongCentral {
    pub bound: Uuid,
    pub answered: Uuid,
}

/// The central database this edge is bound to (`None` until the first contact).
pub fn bound_store(conn: &Connection) -> anyhow::Result<Option<Uuid>> {
    Ok(conn
        .prepare_cached("SELECT central_store_id FROM sync_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Binds the edge to `store_id` on first contact; afterwards only that database is accepted.
pub fn check_store(conn: &Connection, store_id: Uuid) -> anyhow::Result<()> {
    match bound_store(conn)? {
        Some(bound) if bound != store_id => Err(WrongCentral {
            bound,
            answered: store_id,
        }
        .into()),
        Some(_) => Ok(()),
        None => {
            conn.execute(
                "UPDATE sync_state SET central_store_id = ?1 WHERE id = 1",
                [store_id],
            )?;
            Ok(())
        }
    }
}

/// The highest seq central ever acknowledged to this edge.
pub fn highest_acked(conn: &Connection) -> anyhow::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT highest_acked_seq FROM sync_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Records central's acknowledged seq from an answer to a request sent when the edge knew
/// `known_before` (read before sending: answers to pushes and pulls in flight at once may arrive
/// in any order, but none can be below what central had already said before it was asked). A
/// value below that means central lost acknowledged ops (restored from a backup): the retained
/// ops it lost are queued again, pending ops renumbered after them, and the replica
/// resynchronised. Returns true then.
pub fn note_acked(conn: &Connection, acked_seq: i64, known_before: i64) -> anyhow::Result<bool> {
    let highest = highest_acked(conn)?;
    if acked_seq >= known_before {
        if acked_seq > highest {
            conn.prepare_cached("UPDATE sync_state SET highest_acked_seq = ?1 WHERE id = 1")?
                .execute([acked_seq])?;
        }
        return Ok(false);
    }
    let (restored, renumbered) = realign(conn, acked_seq)?;
    start_resync(conn)?;
    conn.execute(
        "UPDATE sync_state SET highest_acked_seq = ?1 WHERE id = 1",
        [acked_seq],
    )?;
    tracing::warn!(
        acked_seq,
        highest_seen = highest,
        restored,
        renumbered,
        "central acknowledges less than it once did: it was restored from a backup; re-sending \
         the ops it lost and resynchronising the replica"
    );
    Ok(true)
}

/// Makes the outbox continue central's sequence: queues again the retained ops with a seq after
/// `acked_seq` (central does not hold them), then numbers every pending op densely from
/// `acked_seq + 1` in its current order, keeping op ids (central deduplicates by op id).
/// Returns (ops restored from the retention window, ops pending afterwards).
pub fn realign(conn: &Connection, acked_seq: i64) -> anyhow::Result<(usize, usize)> {
    // Negative seqs first, so no renumbered op collides with one not yet moved.
    conn.execute("UPDATE outbox SET seq = -seq", [])?;
    let restored = conn.execute(
        "INSERT INTO outbox (seq, op_id, entity, entity_id, kind, data, created_at)
         SELECT -seq, op_id, entity, entity_id, kind, data, created_at FROM acked_ops a
          WHERE a.seq > ?1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.op_id = a.op_id)
            AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.seq = -a.seq)",
        [acked_seq],
    )?;
    conn.execute(
        "DELETE FROM acked_ops WHERE op_id IN (SELECT op_id FROM outbox)",
        [],
    )?;
    // Retained ops are older than pending ones, so ascending original seq is the right order.
    let old: Vec<i64> = conn
        .prepare("SELECT seq FROM outbox ORDER BY seq DESC")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut renumber = conn.prepare("UPDATE outbox SET seq = ?1 WHERE seq = ?2")?;
    for (i, seq) in old.iter().enumerate() {
        let new = acked_seq + 1 + i64::try_from(i)?;
        renumber.execute(params![new, seq])?;
    }
    let pending = old.len();
    conn.execute(
        "UPDATE sync_state SET next_seq = ?1 WHERE id = 1",
        [acked_seq + 1 + i64::try_from(pending)?],
    )?;
    Ok((restored, pending))
}

/// Starts pulling the replica again from cursor 0. Rows are overwritten as they arrive (rows
/// with pending ops excepted, as always); HQ rows not seen again by the end are removed then.
pub fn start_resync(conn: &Connection) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE sync_state SET cursor = 0, cursor_anchor = NULL, resyncing = 1 WHERE id = 1",
        [],
    )?;
    conn.execute("DELETE FROM resync_seen", [])?;
    Ok(())
}

/// Moves the ops central confirmed (`(seq, op_id)` as sent, in seq order) from the outbox to
/// the retention window.
pub fn retain(
    conn: &Connection,
    confirmed: &[(i64, Uuid)],
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let (Some(first), Some(last)) = (confirmed.first(), confirmed.last()) else {
        return Ok(0);
    };
    // The usual case: the outbox was not renumbered while the push was out, so the confirmed
    // ops are exactly the seqs first..=last (same ends, same count; renumbering keeps the order
    // and only appends after): two range statements instead of two per op.
    let at_seq = |seq: i64| -> anyhow::Result<Option<Uuid>> {
        Ok(conn
            .prepare_cached("SELECT op_id FROM outbox WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))
            .optional()?)
    };
    let in_range: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE seq BETWEEN ?1 AND ?2")?
        .query_row([first.0, last.0], |r| r.get(0))?;
    if at_seq(first.0)? == Some(first.1)
        && at_seq(last.0)? == Some(last.1)
        && usize::try_from(in_range).ok() == Some(confirmed.len())
    {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO acked_ops (op_id, seq, entity, entity_id, kind, data, created_at, acked_at)
             SELECT op_id, seq, entity, entity_id, kind, data, created_at, ?3 FROM outbox WHERE seq BETWEEN ?1 AND ?2",
        )?
        .execute(params![first.0, last.0, ts(now)])?;
        return Ok(conn
            .prepare_cached("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2")?
            .execute([first.0, last.0])?);
    }
    let op_ids: Vec<Uuid> = confirmed.iter().map(|(_, op_id)| *op_id).collect();
    let mut moved = 0;
    let mut copy = conn.prepare_cached(
        "INSERT OR REPLACE INTO acked_ops (op_id, seq, entity, entity_id, kind, data, created_at, acked_at)
         SELECT op_id, seq, entity, entity_id, kind, data, created_at, ?2 FROM outbox WHERE op_id = ?1",
    )?;
    let mut delete = conn.prepare_cached("DELETE FROM outbox WHERE op_id = ?1")?;
    let at = ts(now);
    for op_id in &op_ids {
        copy.execute(params![op_id, at])?;
        moved += delete.execute([op_id])?;
    }
    Ok(moved)
}

/// Bounds the retention window by age and by count, dropping at most `max_ops` of the ops
/// beyond it (oldest first) in the caller's transaction; the caller repeats, each time in a
/// transaction of its own, until fewer are dropped. A window far over its bounds (the first trim
/// after a busy day, or after a large backlog drained) is thus cut back in short steps that
/// terminals' writes queue between, instead of in one long transaction they all wait behind.
/// The count bound keeps the ops of the last `keep_ops` seqs: the same as the last `keep_ops`
/// ops, or fewer where ops between them were dead-lettered, and found from the highest seq in a
/// single index lookup rather than by counting the window. Returns how many ops were dropped.
pub fn trim_retention(
    conn: &Connection,
    now: DateTime<Utc>,
    keep_days: u32,
    keep_ops: u64,
    max_ops: usize,
) -> anyhow::Result<usize> {
    let limit = i64::try_from(max_ops).unwrap_or(i64::MAX);
    let cutoff = ts(now - chrono::Duration::days(i64::from(keep_days)));
    let mut dropped = conn
        .prepare_cached(
            "DELETE FROM acked_ops WHERE rowid IN
               (SELECT rowid FROM acked_ops WHERE acked_at < ?1 ORDER BY acked_at LIMIT ?2)",
        )?
        .execute(params![cutoff, limit])?;
    if dropped == max_ops {
        return Ok(dropped);
    }
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM acked_ops")?
        .query_row([], |r| r.get(0))?;
    let keep = i64::try_from(keep_ops).unwrap_or(i64::MAX);
    if let Some(boundary) = newest.and_then(|newest| newest.checked_sub(keep)) {
        dropped += conn
            .prepare_cached(
                "DELETE FROM acked_ops WHERE rowid IN
                   (SELECT rowid FROM acked_ops WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
            )?
            .execute(params![boundary, limit - i64::try_from(dropped)?])?;
    }
    Ok(dropped)
}

/// Marks the edge fenced: central refused its credential. Writes and sync stop.
pub fn fence(conn: &Connection, reason: &str) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE sync_state SET fenced = ?1, online = 0, last_error = ?1 WHERE id = 1",
        [reason],
    )?;
    Ok(())
}

/// Why the edge is fenced, if it is.
pub fn fenced(conn: &Connection) -> anyhow::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT fenced FROM sync_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{append_op, pending};
    use crate::replica::Replica;
    use aero_shared::wire::{Entity, OpKind};

    fn ops(conn: &Connection) -> Vec<(i64, Uuid)> {
        pending(conn, 1000, usize::MAX)
            .expect("pending")
            .into_iter()
            .map(|op| (op.seq, op.op_id))
            .collect()
    }

    #[test]
    fn realign_restores_what_central_lost_and_numbers_everything_after_its_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let now = Utc::now();
        for i in 0..6 {
            append_op(
                &conn,
                Entity::Customer,
                Uuid::now_v7(),
                OpKind::Upsert,
                &i,
                now,
            )
            .expect("op");
        }
        let all = ops(&conn);
        // Central acknowledged 1..=4; the edge keeps them in the retention window.
        assert_eq!(retain(&conn, &all[..4], now).expect("retain"), 4);
        assert!(!note_acked(&conn, 4, 0).expect("ack"));
        // An answer older than the one above arrives late: not a rollback.
        assert!(!note_acked(&conn, 3, 0).expect("late answer"));
        // Central is restored to a backup that held only 1..=2.
        assert!(note_acked(&conn, 2, 4).expect("rollback"));
        let after = ops(&conn);
        let ids: Vec<Uuid> = after.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, all[2..].iter().map(|(_, id)| *id).collect::<Vec<_>>());
        let seqs: Vec<i64> = after.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [3, 4, 5, 6]);
        let (next, resyncing): (i64, bool) = conn
            .query_row("SELECT next_seq, resyncing FROM sync_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("state");
        assert_eq!((next, resyncing), (7, true));
    }

    #[test]
    fn a_fork_renumbers_pending_ops_after_centrals_ack_keeping_their_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 51).expect("open");
        let now = Utc::now();
        for i in 0..3 {
            append_op(
                &conn,
                Entity::Customer,
                Uuid::now_v7(),
                OpKind::Upsert,
                &i,
                now,
            )
            .expect("op");
        }
        let before = ops(&conn);
        assert_eq!(realign(&conn, 100).expect("realign"), (0, 3));
        let after = ops(&conn);
        assert_eq!(
            after.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [101, 102, 103]
        );
        assert_eq!(
            after.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            before.iter().map(|(_, id)| *id).collect::<Vec<_>>()
        );
        let seq = append_op(
            &conn,
            Entity::Customer,
            Uuid::now_v7(),
            OpKind::Upsert,
            &9,
            now,
        )
        .expect("op");
        assert_eq!(seq, 104);
    }

    #[test]
    fn another_central_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let ours = Uuid::now_v7();
        check_store(&conn, ours).expect("bind");
        check_store(&conn, ours).expect("same");
        let err = check_store(&conn, Uuid::now_v7()).expect_err("refused");
        assert!(err.downcast_ref::<WrongCentral>().is_some());
    }

    /// Queues ten ops (seqs 1-10) and returns them, in seq order.
    fn ten_ops(conn: &Connection, now: DateTime<Utc>) -> Vec<(i64, Uuid)> {
        for i in 0..10 {
            append_op(
                conn,
                Entity::Customer,
                Uuid::now_v7(),
                OpKind::Upsert,
                &i,
                now,
            )
            .expect("op");
        }
        ops(conn)
    }

    fn retained_seqs(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT seq FROM acked_ops ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn retention_is_bounded_by_count_and_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let old = Utc::now() - chrono::Duration::days(10);
        let now = Utc::now();
        let all = ten_ops(&conn, now);
        retain(&conn, &all[..2], old).expect("old");
        // Out of order with the outbox (as after a renumbering): the op-by-op path.
        let mut rest = all[2..].to_vec();
        rest.swap(0, 1);
        retain(&conn, &rest, now).expect("new");
        assert_eq!(trim_retention(&conn, now, 7, 5, 100).expect("trim"), 2 + 3);
        assert_eq!(retained_seqs(&conn), [6, 7, 8, 9, 10]);
    }

    #[test]
    fn a_window_far_over_its_bounds_is_trimmed_one_step_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let old = Utc::now() - chrono::Duration::days(10);
        let now = Utc::now();
        let all = ten_ops(&conn, now);
        retain(&conn, &all[..4], old).expect("old");
        retain(&conn, &all[4..], now).expect("new");
        // Seqs 1-4 are past the age bound, and only the last 3 seqs (8-10) are within the count.
        let steps: Vec<usize> = (0..4)
            .map(|_| trim_retention(&conn, now, 7, 3, 3).expect("trim"))
            .collect();
        assert_eq!(steps, [3, 3, 1, 0]);
        assert_eq!(retained_seqs(&conn), [8, 9, 10]);
    }
}

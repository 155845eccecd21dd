//! The sync protocol: applying a site's pushed batch (once per seq, in one transaction),
//! recording its pulls, serving the change feed, and the per-site sync status HQ shows.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes};
use super::codec::{
    change_from, customer_columns, customer_from, int, opt_time, req, text, ts, waiver_columns,
};
use super::conn::Conn;
use super::errors::race_is_transient;
use crate::store::{PushOutcome, StoreError, StoreResult, VenueWrite};
use aero_shared::wire::{Change, Entity, PushOp, RejectedOp, SiteSyncStatus};
use chrono::{DateTime, Datelike as _, Utc};
use std::collections::HashMap;
use tiberius::Query;
use uuid::Uuid;

/// Everything in a pushed write must be storable, or the op would fail the whole batch on every
/// retry and block the site's queue. DATE and DATETIME2 hold years 1 to 9999 only.
fn check_representable(write: &VenueWrite) -> Result<(), String> {
    let fits = |year: i32| (1..=9999).contains(&year);
    let ok = match write {
        VenueWrite::Customer(c) => fits(c.birth_date.year()) && fits(c.created_at.year()),
        VenueWrite::Waiver(w) => fits(w.signed_at.year()) && fits(w.expires_at.year()),
    };
    if ok {
        Ok(())
    } else {
        Err("a date is outside the years 1 to 9999".into())
    }
}

/// Applies one accepted venue write; returns its change-log row (none for a waiver that was
/// already stored: waivers are immutable).
async fn apply_venue_write(
    conn: &mut Conn,
    write: &VenueWrite,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    match write {
        VenueWrite::Customer(c) => {
            // Last arrival wins: central is the authority on a customer's final state. UPDATE
            // first, INSERT when nothing matched; UPDLOCK + SERIALIZABLE hold the key range so a
            // concurrent first insert of the same id waits instead of racing. Home site and
            // creation time never change once stored. The stored row is what replicates.
            let mut q = Query::new(concat!(
                "UPDATE customers WITH (UPDLOCK, SERIALIZABLE) ",
                "SET first_name = @P2, last_name = @P3, birth_date = @P4, phone = @P5, email = @P6, guardian_id = @P7 ",
                "WHERE id = @P1; ",
                "IF @@ROWCOUNT = 0 ",
                "INSERT INTO customers (",
                customer_columns!(),
                ") ",
                "VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9); ",
                "SELECT ",
                customer_columns!(),
                " FROM customers WHERE id = @P1;"
            ));
            q.bind(c.id);
            q.bind(c.first_name.as_str());
            q.bind(c.last_name.as_str());
            q.bind(c.birth_date);
            q.bind(c.phone.as_deref());
            q.bind(c.email.as_deref());
            q.bind(c.guardian_id);
            q.bind(c.home_site_id);
            q.bind(ts(c.created_at));
            let row = conn.row(q).await?.ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("customer {} vanished after upsert", c.id))
            })?;
            let stored = customer_from(&row)?;
            Ok(Some(NewChange::upsert(
                Entity::Customer,
                c.id,
                None,
                &stored,
                at,
            )?))
        }
        VenueWrite::Waiver(w) => {
            let mut q = Query::new(concat!(
                "INSERT INTO waivers (",
                waiver_columns!(),
                ") ",
                "SELECT @P1, @P2, @P3, @P4, @P5, @P6 ",
                "WHERE NOT EXISTS (SELECT 1 FROM waivers WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); ",
                "SELECT @@ROWCOUNT;"
            ));
            q.bind(w.id);
            q.bind(w.customer_id);
            q.bind(w.site_id);
            q.bind(w.signer_name.as_str());
            q.bind(ts(w.signed_at));
            q.bind(ts(w.expires_at));
            let inserted = match conn.row(q).await? {
                Some(row) => int(&row, 0)?,
                None => 0,
            };
            if inserted == 1 {
                Ok(Some(NewChange::upsert(Entity::Waiver, w.id, None, w, at)?))
            } else {
                Ok(None)
            }
        }
    }
}

/// Applies one pushed batch (sorted by seq, each op with its decoded write or rejection).
async fn push_tx(
    conn: &mut Conn,
    site_id: Uuid,
    ops: &[(&PushOp, Result<VenueWrite, String>)],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    // Serialise pushes of one site on its sync row, creating it on first use. The hinted
    // SELECT is the lock on SQL Server; Babelfish ignores table hints by default, so the no-op
    // UPDATE takes the row lock there (and is harmless here).
    let mut q = Query::new(
        "INSERT INTO site_sync (site_id, acked_seq, pull_cursor) \
         SELECT @P1, 0, 0 \
          WHERE NOT EXISTS (SELECT 1 FROM site_sync WITH (UPDLOCK, HOLDLOCK) WHERE site_id = @P1); \
         UPDATE site_sync SET acked_seq = acked_seq WHERE site_id = @P1; \
         SELECT acked_seq FROM site_sync WITH (UPDLOCK, HOLDLOCK) WHERE site_id = @P1;",
    );
    q.bind(site_id);
    let row = conn
        .row(q)
        .await?
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("site_sync row missing for {site_id}")))?;
    let mut acked = int(&row, 0)?;

    // Reasons already recorded for seqs this batch replays, fetched in one round trip, so a
    // replayed batch reports the same rejections again.
    let mut reasons: HashMap<i64, String> = HashMap::new();
    if let Some((first, _)) = ops.first().filter(|(op, _)| op.seq <= acked) {
        let mut q = Query::new(
            "SELECT seq, rejected FROM applied_ops \
             WHERE site_id = @P1 AND seq >= @P2 AND seq <= @P3 AND rejected IS NOT NULL",
        );
        q.bind(site_id);
        q.bind(first.seq);
        q.bind(acked);
        for row in conn.rows(q).await? {
            reasons.insert(int(&row, 0)?, text(&row, 1)?);
        }
    }

    let mut rejected = Vec::new();
    let mut expected_seq = None;
    let mut changes = Vec::new();
    for (op, decoded) in ops {
        if op.seq <= acked {
            if let Some(reason) = reasons.get(&op.seq) {
                rejected.push(RejectedOp {
                    seq: op.seq,
                    op_id: op.op_id,
                    reason: reason.clone(),
                });
            }
            continue;
        }
        if op.seq != acked + 1 {
            expected_seq = Some(acked + 1);
            break;
        }
        let mut q = Query::new("SELECT TOP (1) seq FROM applied_ops WHERE op_id = @P1");
        q.bind(op.op_id);
        let seen = conn.row(q).await?.is_some();
        let outcome = if seen {
            Err("duplicate op_id".to_string())
        } else {
            decoded.clone()
        };
        let reason = match outcome {
            Ok(write) => {
                changes.extend(apply_venue_write(conn, &write, at).await?);
                None
            }
            Err(reason) => Some(reason),
        };
        // A duplicate op_id cannot be stored again under its own id; keep the reason only.
        let stored_op_id = if seen { Uuid::now_v7() } else { op.op_id };
        let mut q = Query::new(
            "INSERT INTO applied_ops (site_id, seq, op_id, rejected, applied_at) VALUES (@P1, @P2, @P3, @P4, @P5)",
        );
        q.bind(site_id);
        q.bind(op.seq);
        q.bind(stored_op_id);
        q.bind(reason.as_deref());
        q.bind(ts(at));
        conn.exec(q).await?;
        if let Some(reason) = reason {
            reasons.insert(op.seq, reason.clone());
            rejected.push(RejectedOp {
                seq: op.seq,
                op_id: op.op_id,
                reason,
            });
        }
        acked = op.seq;
    }

    let mut q =
        Query::new("UPDATE site_sync SET acked_seq = @P2, last_push_at = @P3 WHERE site_id = @P1");
    q.bind(site_id);
    q.bind(acked);
    q.bind(ts(at));
    conn.exec(q).await?;
    // Last, so the change-log lock is held only for these inserts and the commit.
    append_changes(conn, &changes).await?;
    Ok(PushOutcome {
        acked_seq: acked,
        expected_seq,
        rejected,
    })
}

async fn record_pull_tx(
    conn: &mut Conn,
    site_id: Uuid,
    cursor: i64,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut q = Query::new(
        "UPDATE site_sync WITH (UPDLOCK, SERIALIZABLE) SET pull_cursor = @P2, last_pull_at = @P3 \
          WHERE site_id = @P1; \
         IF @@ROWCOUNT = 0 \
             INSERT INTO site_sync (site_id, acked_seq, pull_cursor, last_pull_at) VALUES (@P1, 0, @P2, @P3);",
    );
    q.bind(site_id);
    q.bind(cursor);
    q.bind(ts(at));
    conn.exec(q).await
}

pub(super) async fn pull(
    store: &MssqlStore,
    site_id: Uuid,
    after: i64,
    limit: u32,
    max_bytes: usize,
) -> StoreResult<Vec<Change>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT TOP (@P1) seq, entity, entity_id, op, site_id, data FROM change_log \
                     WHERE seq > @P2 AND (site_id IS NULL OR site_id = @P3) ORDER BY seq",
                );
                q.bind(i64::from(limit));
                q.bind(after);
                q.bind(site_id);
                let rows = conn.rows(q).await?;
                let mut changes = Vec::new();
                let mut bytes = 0usize;
                for row in &rows {
                    // Sized like the SQLite store: the JSON text's UTF-8 length.
                    let size = req::<&str>(row, 5)?.len();
                    if !changes.is_empty() && bytes + size > max_bytes {
                        break;
                    }
                    bytes += size;
                    changes.push(change_from(row)?);
                }
                Ok(changes)
            })
        })
        .await
}

pub(super) async fn change_head(store: &MssqlStore) -> StoreResult<i64> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                match conn
                    .row(Query::new("SELECT ISNULL(MAX(seq), 0) FROM change_log"))
                    .await?
                {
                    Some(row) => int(&row, 0),
                    None => Ok(0),
                }
            })
        })
        .await
}

pub(super) async fn record_pull(
    store: &MssqlStore,
    site_id: Uuid,
    cursor: i64,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                record_pull_tx(conn, site_id, cursor, at)
                    .await
                    .map_err(race_is_transient)
            })
        })
        .await
}

pub(super) async fn push(
    store: &MssqlStore,
    site_id: Uuid,
    ops: &[PushOp],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    // Decoding is pure, so it is done once, outside the retried transaction. The storage
    // check rejects what VenueWrite accepts but SQL Server cannot hold.
    let mut sorted: Vec<&PushOp> = ops.iter().collect();
    sorted.sort_by_key(|op| op.seq);
    let decoded: Vec<(&PushOp, Result<VenueWrite, String>)> = sorted
        .into_iter()
        .map(|op| {
            let write =
                VenueWrite::decode(site_id, op).and_then(|w| check_representable(&w).map(|()| w));
            (op, write)
        })
        .collect();
    let decoded = decoded.as_slice();
    store
        .transaction(|conn| {
            Box::pin(async move {
                // Within a push a duplicate key can only come from a concurrent writer of the same
                // row (a second delivery of this batch, or the same customer, waiver or op_id
                // arriving at once from elsewhere): retry, and the next attempt sees the winner's.
                push_tx(conn, site_id, decoded, at)
                    .await
                    .map_err(race_is_transient)
            })
        })
        .await
}

pub(super) async fn site_sync(store: &MssqlStore, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT acked_seq, pull_cursor, last_push_at, last_pull_at FROM site_sync WHERE site_id = @P1; \
                     SELECT COUNT_BIG(*) FROM change_log \
                      WHERE seq > ISNULL((SELECT pull_cursor FROM site_sync WHERE site_id = @P1), 0) \
                        AND (site_id IS NULL OR site_id = @P1);",
                );
                q.bind(site_id);
                let mut sets = conn.results(q).await?.into_iter();
                let sync = sets.next().unwrap_or_default();
                let lag = sets.next().unwrap_or_default();
                let (acked_seq, pull_cursor, last_push_at, last_pull_at) = match sync.first() {
                    Some(row) => (int(row, 0)?, int(row, 1)?, opt_time(row, 2)?, opt_time(row, 3)?),
                    None => (0, 0, None, None),
                };
                let pull_lag = match lag.first() {
                    Some(row) => int(row, 0)?,
                    None => 0,
                };
                Ok(SiteSyncStatus {
                    site_id,
                    last_push_at,
                    last_pull_at,
                    acked_seq,
                    pull_cursor,
                    pull_lag,
                })
            })
        })
        .await
}

//! The sync protocol: applying a site's pushed batch (by the rules of `push_rules`, in one
//! transaction), recording its pulls, serving the change feed and what an edge checks its
//! place in it against (anchors, its acked seq), and the per-site sync status and dead letters
//! HQ shows.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes};
use super::codec::{
    change_from, customer_columns, customer_from, get, int, opt_int, opt_text, opt_time, req, time,
    ts, uuid, waiver_columns,
};
use super::conn::Conn;
use super::errors::race_is_transient;
use super::venue;
use crate::store::push_rules::{self, Held, HeldOp, Lookup, Step};
use crate::store::{
    ChangeScope, HintSocketEvent, PushOutcome, StoreError, StoreResult, VenueWrite,
};
use aero_shared::wire::{Change, ChangeAnchor, Entity, OutboxBacklog, PushOp, SiteSyncStatus};
use chrono::{DateTime, Datelike as _, Utc};
use std::collections::HashMap;
use tiberius::{Query, Row};
use uuid::Uuid;

/// Everything in a pushed write must be storable, or the op would fail the whole batch on every
/// retry and block the site's queue. DATE and DATETIME2 hold years 1 to 9999 only.
fn check_representable(write: &VenueWrite) -> Result<(), String> {
    let fits = |year: i32| (1..=9999).contains(&year);
    let ok = match write {
        VenueWrite::Customer(c) => fits(c.birth_date.year()) && fits(c.created_at.year()),
        VenueWrite::Waiver(w) => fits(w.signed_at.year()) && fits(w.expires_at.year()),
        VenueWrite::DeadLetterResolved { resolution, .. } => fits(resolution.at.year()),
        VenueWrite::Order(o) => fits(o.created_at.year()),
        VenueWrite::Refund(r) => fits(r.created_at.year()),
        VenueWrite::LedgerEntry(e) => fits(e.created_at.year()),
        VenueWrite::Checkin(c) => {
            fits(c.starts_at.year()) && fits(c.ends_at.year()) && fits(c.created_at.year())
        }
        VenueWrite::Score(s) => fits(s.created_at.year()),
        VenueWrite::PlugStatus(s) => {
            fits(s.observed_at.year()) && s.last_seen.is_none_or(|at| fits(at.year()))
        }
        VenueWrite::PlugOverride(o) => fits(o.set_at.year()) && fits(o.until.year()),
    };
    if ok {
        Ok(())
    } else {
        Err("a date is outside the years 1 to 9999".into())
    }
}

/// Applies one accepted venue write, carried by the op `op_id`; returns its change-log row
/// (none for a waiver or venue record that was already stored, as they are immutable, and
/// none for a dead-letter resolution, which is central's own bookkeeping).
async fn apply_venue_write(
    conn: &mut Conn,
    op_id: Uuid,
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
                "SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7 ",
                "WHERE NOT EXISTS (SELECT 1 FROM waivers WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); ",
                "SELECT @@ROWCOUNT;"
            ));
            q.bind(w.id);
            q.bind(w.customer_id);
            q.bind(w.site_id);
            q.bind(w.signer_name.as_str());
            q.bind(ts(w.signed_at));
            q.bind(ts(w.expires_at));
            q.bind(w.text_version);
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
        VenueWrite::DeadLetterResolved {
            site_id,
            resolution: r,
        } => {
            // Last arrival wins: a box restored from a backup may decide again about the same
            // op. Pushes of one site are serialised on its sync row, so the UPDATE-then-INSERT
            // cannot race another push of the same resolution.
            let mut q = Query::new(
                "UPDATE dead_letter_resolutions WITH (UPDLOCK, SERIALIZABLE) \
                    SET resolution = @P3, retried_as = @P4, resolved_by = @P5, resolved_at = @P6, \
                        resolution_op_id = @P7, recorded_at = @P8 \
                  WHERE site_id = @P1 AND op_id = @P2; \
                 IF @@ROWCOUNT = 0 \
                     INSERT INTO dead_letter_resolutions (site_id, op_id, resolution, retried_as, \
                         resolved_by, resolved_at, resolution_op_id, recorded_at) \
                     VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8);",
            );
            q.bind(*site_id);
            q.bind(r.op_id);
            q.bind(r.resolution.as_str());
            q.bind(r.retried_as);
            q.bind(r.by.trim().to_string());
            q.bind(ts(r.at));
            q.bind(op_id);
            q.bind(ts(at));
            conn.exec(q).await?;
            Ok(None)
        }
        VenueWrite::PlugStatus(s) => {
            // Last arrival wins: the venue pushes a plug's statuses in the order it saw them.
            // Pushes of one site are serialised on its sync row, and a plug belongs to one
            // site, so the UPDATE-then-INSERT cannot race another push for the same plug.
            let data = serde_json::to_string(s)
                .map_err(|e| StoreError::Other(anyhow::anyhow!("encoding a plug status: {e}")))?;
            let mut q = Query::new(
                "UPDATE plug_status WITH (UPDLOCK, SERIALIZABLE) \
                    SET site_id = @P2, observed_at = @P3, recorded_at = @P4, data = @P5 \
                  WHERE plug_id = @P1; \
                 IF @@ROWCOUNT = 0 \
                     INSERT INTO plug_status (plug_id, site_id, observed_at, recorded_at, data) \
                     VALUES (@P1, @P2, @P3, @P4, @P5);",
            );
            q.bind(s.plug_id);
            q.bind(s.site_id);
            q.bind(ts(s.observed_at));
            q.bind(ts(at));
            q.bind(data);
            conn.exec(q).await?;
            Ok(None)
        }
        VenueWrite::PlugOverride(o) => venue::plug_override(conn, o, at).await,
        VenueWrite::Order(o) => venue::order(conn, o, at).await,
        VenueWrite::Refund(r) => venue::refund(conn, r, at).await,
        VenueWrite::LedgerEntry(e) => venue::ledger_entry(conn, e, at).await,
        VenueWrite::Checkin(c) => venue::checkin(conn, c, at).await,
        VenueWrite::Score(s) => venue::score(conn, s, at).await,
    }
}

/// At most this many parameters are bound to one request: SQL Server takes 2,100, so a large
/// batch's lookups are split over a few round trips (one for a batch of the edge's default size).
pub(super) const MAX_PARAMS: usize = 2_000;

/// `@P{first}, @P{first + 1}, ...`: `n` placeholders for an `IN (...)` list. SQL text is built
/// from placeholder numbers only; the values are bound.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("@P{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn held_op(row: &Row) -> StoreResult<HeldOp> {
    Ok(HeldOp {
        seq: int(row, 0)?,
        op_id: uuid(row, 1)?,
        rejected: opt_text(row, 2)?,
    })
}

/// One round trip of `held_for`: its statements and what they bind, in this order. Each
/// statement answers with its own result set, in the same order, empty ones included.
#[derive(Debug)]
struct HeldRoundTrip<'a> {
    sql: String,
    /// The site as `@P1`, when the round trip reads `applied_ops`.
    site: bool,
    /// Held ops in the batch's seq range (`@P2`, `@P3`): the first round trip only.
    seqs: Option<(i64, i64)>,
    /// Held ops under these op ids, at any seq.
    op_ids: &'a [Uuid],
    /// Which of these customers central holds.
    customer_ids: &'a [Uuid],
}

/// Splits a batch's lookups (`op_ids` and `customer_ids` without repeats) into as few round
/// trips as `MAX_PARAMS` allows.
fn held_round_trips<'a>(
    lookup: &Lookup,
    mut op_ids: &'a [Uuid],
    mut customer_ids: &'a [Uuid],
) -> Vec<HeldRoundTrip<'a>> {
    let mut trips = Vec::new();
    let mut seqs = (!op_ids.is_empty()).then_some((lookup.first_seq, lookup.last_seq));
    while seqs.is_some() || !op_ids.is_empty() || !customer_ids.is_empty() {
        // @P1 is the site when an `applied_ops` statement needs it (op ids are all asked for
        // before any customer); the placeholders after it are numbered as the statements need
        // them.
        let site = seqs.is_some() || !op_ids.is_empty();
        let mut sql = String::new();
        let mut next = if site { 2 } else { 1 };
        let seqs = seqs.take();
        if seqs.is_some() {
            sql.push_str(
                "SELECT seq, op_id, rejected FROM applied_ops \
                 WHERE site_id = @P1 AND seq >= @P2 AND seq <= @P3; ",
            );
            next += 2;
        }
        let (ids, rest) = op_ids.split_at(op_ids.len().min(MAX_PARAMS + 1 - next));
        op_ids = rest;
        if !ids.is_empty() {
            sql.push_str(
                "SELECT seq, op_id, rejected FROM applied_ops WHERE site_id = @P1 AND op_id IN (",
            );
            sql.push_str(&placeholders(next, ids.len()));
            sql.push_str("); ");
            next += ids.len();
        }
        let (customers, rest) =
            customer_ids.split_at(customer_ids.len().min(MAX_PARAMS + 1 - next));
        customer_ids = rest;
        if !customers.is_empty() {
            sql.push_str("SELECT id FROM customers WHERE id IN (");
            sql.push_str(&placeholders(next, customers.len()));
            sql.push_str("); ");
        }
        trips.push(HeldRoundTrip {
            sql,
            site,
            seqs,
            op_ids: ids,
            customer_ids: customers,
        });
    }
    trips
}

/// Loads what central holds for a batch (see [`Lookup`]), inside the push's transaction and
/// after the site's sync row is locked, so no other push of the site can change it meanwhile:
/// the ops held at the batch's seqs, the op held under each of its op ids at the lowest seq
/// (an op's original seq; later ones are aliases), and which of its customers central knows.
/// One round trip for a batch of the edge's default size (500 ops).
async fn held_for(
    conn: &mut Conn,
    site_id: Uuid,
    acked_seq: i64,
    ops: &[PushOp],
) -> StoreResult<Held> {
    let lookup = Lookup::of(ops);
    let mut op_ids = lookup.op_ids.clone();
    op_ids.sort_unstable();
    op_ids.dedup();
    let mut customer_ids = lookup.customer_ids.clone();
    customer_ids.sort_unstable();
    customer_ids.dedup();

    let mut held = Vec::new();
    let mut first_by_op_id: HashMap<Uuid, HeldOp> = HashMap::new();
    let mut known = Vec::new();
    for trip in held_round_trips(&lookup, &op_ids, &customer_ids) {
        let mut q = Query::new(trip.sql);
        if trip.site {
            q.bind(site_id);
        }
        if let Some((first, last)) = trip.seqs {
            q.bind(first);
            q.bind(last);
        }
        for id in trip.op_ids.iter().chain(trip.customer_ids) {
            q.bind(*id);
        }
        let mut sets = conn.results(q).await?.into_iter();
        if trip.seqs.is_some() {
            for row in sets.next().unwrap_or_default() {
                held.push(held_op(&row)?);
            }
        }
        if !trip.op_ids.is_empty() {
            for row in sets.next().unwrap_or_default() {
                let op = held_op(&row)?;
                match first_by_op_id.get(&op.op_id) {
                    Some(first) if first.seq <= op.seq => {}
                    _ => {
                        first_by_op_id.insert(op.op_id, op);
                    }
                }
            }
        }
        if !trip.customer_ids.is_empty() {
            for row in sets.next().unwrap_or_default() {
                known.push(uuid(&row, 0)?);
            }
        }
    }

    let mut held = Held::new(acked_seq, held, known);
    // An op's original (lowest) seq is what identifies it; aliases are found by seq above.
    held.by_op_id.extend(first_by_op_id);
    held.known
        .rejected_ops
        .extend(refused_among(conn, site_id, &lookup.resolved_op_ids).await?);
    venue::load_known(conn, &lookup, &mut held.known).await?;
    Ok(held)
}

/// Which of `op_ids` (named by a batch's dead-letter resolutions) central refused from the site.
/// Resolutions are rare, so they get their own round trip only when a batch carries some.
async fn refused_among(conn: &mut Conn, site_id: Uuid, op_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    let mut op_ids = op_ids.to_vec();
    op_ids.sort_unstable();
    op_ids.dedup();
    let mut refused = Vec::new();
    for chunk in op_ids.chunks(MAX_PARAMS - 1) {
        let mut q = Query::new(format!(
            "SELECT DISTINCT op_id FROM applied_ops \
              WHERE site_id = @P1 AND rejected IS NOT NULL AND op_id IN ({})",
            placeholders(2, chunk.len())
        ));
        q.bind(site_id);
        for id in chunk {
            q.bind(*id);
        }
        for row in conn.rows(q).await? {
            refused.push(uuid(&row, 0)?);
        }
    }
    Ok(refused)
}

/// Applies one pushed batch by the rules of [`push_rules`]: loads what central holds, plans,
/// then carries out the plan's steps.
async fn push_tx(
    conn: &mut Conn,
    site_id: Uuid,
    ops: &[PushOp],
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
    let acked_seq = int(&row, 0)?;

    let held = held_for(conn, site_id, acked_seq, ops).await?;
    // The storage check refuses what VenueWrite accepts but SQL Server cannot hold.
    let plan = push_rules::plan(site_id, ops, &held, check_representable);

    let mut changes = Vec::new();
    for step in &plan.steps {
        let (seq, op_id, rejected) = match step {
            Step::Apply { seq, op_id, write } => {
                changes.extend(apply_venue_write(conn, *op_id, write, at).await?);
                (*seq, *op_id, None)
            }
            Step::Reject { seq, op_id, reason } => (*seq, *op_id, Some(reason.as_str())),
            Step::Alias {
                seq,
                op_id,
                rejected,
            } => (*seq, *op_id, rejected.as_deref()),
        };
        let mut q = Query::new(
            "INSERT INTO applied_ops (site_id, seq, op_id, rejected, applied_at) VALUES (@P1, @P2, @P3, @P4, @P5)",
        );
        q.bind(site_id);
        q.bind(seq);
        q.bind(op_id);
        q.bind(rejected);
        q.bind(ts(at));
        conn.exec(q).await?;
    }

    let mut q =
        Query::new("UPDATE site_sync SET acked_seq = @P2, last_push_at = @P3 WHERE site_id = @P1");
    q.bind(site_id);
    q.bind(plan.outcome.acked_seq);
    q.bind(ts(at));
    conn.exec(q).await?;
    // Last, so the change-log lock is held only for these inserts and the commit.
    append_changes(conn, &changes).await?;
    Ok(plan.outcome)
}

async fn record_pull_tx(
    conn: &mut Conn,
    site_id: Uuid,
    cursor: i64,
    at: DateTime<Utc>,
    outbox: Option<OutboxBacklog>,
) -> StoreResult<()> {
    let mut q = Query::new(
        "UPDATE site_sync WITH (UPDLOCK, SERIALIZABLE) SET pull_cursor = @P2, last_pull_at = @P3 \
          WHERE site_id = @P1; \
         IF @@ROWCOUNT = 0 \
             INSERT INTO site_sync (site_id, acked_seq, pull_cursor, last_pull_at) VALUES (@P1, 0, @P2, @P3); \
         IF @P4 = 1 \
             UPDATE site_sync SET pending_ops = @P5, oldest_pending_at = @P6 WHERE site_id = @P1;",
    );
    q.bind(site_id);
    q.bind(cursor);
    q.bind(ts(at));
    q.bind(i32::from(outbox.is_some()));
    q.bind(outbox.map(|o| o.pending_ops));
    q.bind(outbox.and_then(|o| o.oldest_pending_at).map(ts));
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
                    "SELECT TOP (@P1) seq, entity, entity_id, op, site_id, data, changed_at \
                       FROM change_log \
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

pub(super) async fn change_scopes(
    store: &MssqlStore,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<ChangeScope>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT TOP (@P1) seq, site_id FROM change_log WHERE seq > @P2 ORDER BY seq",
                );
                q.bind(i64::from(limit));
                q.bind(after);
                conn.rows(q)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(ChangeScope {
                            seq: int(row, 0)?,
                            site_id: get(row, 1)?,
                        })
                    })
                    .collect()
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
    outbox: Option<OutboxBacklog>,
) -> StoreResult<()> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                record_pull_tx(conn, site_id, cursor, at, outbox)
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
    store
        .transaction(|conn| {
            Box::pin(async move {
                // Within a push a duplicate key can only come from a concurrent writer of the same
                // row (a second delivery of this batch, or the same customer or waiver arriving at
                // once from elsewhere): retry, and the next attempt sees the winner's.
                push_tx(conn, site_id, ops, at)
                    .await
                    .map_err(race_is_transient)
            })
        })
        .await
}

pub(super) async fn change_anchor(
    store: &MssqlStore,
    site_id: Uuid,
    seq: i64,
) -> StoreResult<Option<ChangeAnchor>> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT entity_id, changed_at FROM change_log \
                     WHERE seq = @P1 AND (site_id IS NULL OR site_id = @P2)",
                );
                q.bind(seq);
                q.bind(site_id);
                conn.row(q)
                    .await?
                    .map(|row| {
                        Ok(ChangeAnchor {
                            seq,
                            entity_id: uuid(&row, 0)?,
                            changed_at: time(&row, 1)?,
                        })
                    })
                    .transpose()
            })
        })
        .await
}

pub(super) async fn acked_seq(store: &MssqlStore, site_id: Uuid) -> StoreResult<i64> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new("SELECT acked_seq FROM site_sync WHERE site_id = @P1");
                q.bind(site_id);
                match conn.row(q).await? {
                    Some(row) => int(&row, 0),
                    None => Ok(0),
                }
            })
        })
        .await
}

pub(super) async fn site_sync(store: &MssqlStore, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "SELECT acked_seq, pull_cursor, last_push_at, last_pull_at, pending_ops, oldest_pending_at, \
                            hint_seen_at, hint_closed_at \
                       FROM site_sync WHERE site_id = @P1; \
                     SELECT COUNT_BIG(*) FROM change_log \
                      WHERE seq > ISNULL((SELECT pull_cursor FROM site_sync WHERE site_id = @P1), 0) \
                        AND (site_id IS NULL OR site_id = @P1);",
                );
                q.bind(site_id);
                let mut sets = conn.results(q).await?.into_iter();
                let sync = sets.next().unwrap_or_default();
                let lag = sets.next().unwrap_or_default();
                let (acked_seq, pull_cursor, last_push_at, last_pull_at, outbox) = match sync.first() {
                    Some(row) => (
                        int(row, 0)?,
                        int(row, 1)?,
                        opt_time(row, 2)?,
                        opt_time(row, 3)?,
                        match opt_int(row, 4)? {
                            Some(pending_ops) => Some(OutboxBacklog {
                                pending_ops,
                                oldest_pending_at: opt_time(row, 5)?,
                            }),
                            None => None,
                        },
                    ),
                    None => (0, 0, None, None, None),
                };
                let (hint_seen_at, hint_closed_at) = match sync.first() {
                    Some(row) => (opt_time(row, 6)?, opt_time(row, 7)?),
                    None => (None, None),
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
                    outbox,
                    hint_seen_at,
                    hint_closed_at,
                })
            })
        })
        .await
}

pub(super) async fn record_hint_socket(
    store: &MssqlStore,
    site_id: Uuid,
    event: HintSocketEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = match event {
        HintSocketEvent::Heard => {
            "UPDATE site_sync SET hint_seen_at = @P2 \
              WHERE site_id = @P1 AND (hint_seen_at IS NULL OR hint_seen_at < @P2);"
        }
        HintSocketEvent::Closed => "UPDATE site_sync SET hint_closed_at = @P2 WHERE site_id = @P1;",
    };
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(site_id);
                q.bind(ts(at));
                conn.exec(q).await
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::wire::MAX_PUSH_OPS;

    /// The `@Pn` numbers in `sql`, in order of appearance.
    fn placeholder_numbers(sql: &str) -> Vec<usize> {
        sql.split("@P")
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect()
    }

    /// How many values a round trip binds: the site, the seq range, then one per id.
    fn bound(trip: &HeldRoundTrip<'_>) -> usize {
        usize::from(trip.site)
            + if trip.seqs.is_some() { 2 } else { 0 }
            + trip.op_ids.len()
            + trip.customer_ids.len()
    }

    fn lookup(ops: usize, customers: usize) -> (Lookup, Vec<Uuid>, Vec<Uuid>) {
        let op_ids: Vec<Uuid> = (0..ops).map(|_| Uuid::now_v7()).collect();
        let customer_ids: Vec<Uuid> = (0..customers).map(|_| Uuid::now_v7()).collect();
        let lookup = Lookup {
            first_seq: 7,
            last_seq: 6 + ops as i64,
            op_ids: op_ids.clone(),
            customer_ids: customer_ids.clone(),
            ..Lookup::default()
        };
        (lookup, op_ids, customer_ids)
    }

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(4, 3), "@P4, @P5, @P6");
        assert_eq!(placeholders(2, 1), "@P2");
    }

    #[test]
    fn a_batch_of_the_edges_default_size_is_looked_up_in_one_round_trip() {
        let (lookup, op_ids, customer_ids) = lookup(500, 500);
        let trips = held_round_trips(&lookup, &op_ids, &customer_ids);
        assert_eq!(trips.len(), 1);
        let trip = &trips[0];
        assert_eq!(trip.seqs, Some((7, 506)));
        assert_eq!((trip.op_ids.len(), trip.customer_ids.len()), (500, 500));
        assert_eq!(trip.sql.matches("SELECT").count(), 3);
        // Every bound value has its placeholder, numbered in binding order.
        let mut used = placeholder_numbers(&trip.sql);
        used.sort_unstable();
        used.dedup();
        assert_eq!(used, (1..=bound(trip)).collect::<Vec<_>>());
    }

    #[test]
    fn the_largest_batch_stays_within_sql_servers_parameter_limit() {
        let (lookup, op_ids, customer_ids) = lookup(MAX_PUSH_OPS, MAX_PUSH_OPS);
        let trips = held_round_trips(&lookup, &op_ids, &customer_ids);
        assert!(trips.len() > 1);
        for (i, trip) in trips.iter().enumerate() {
            assert!(bound(trip) <= MAX_PARAMS && MAX_PARAMS < 2_100);
            assert_eq!(trip.seqs.is_some(), i == 0, "the seq range once, first");
            let mut used = placeholder_numbers(&trip.sql);
            used.sort_unstable();
            used.dedup();
            assert_eq!(
                used,
                (1..=bound(trip)).collect::<Vec<_>>(),
                "round trip {i}"
            );
            assert_eq!(
                trip.site,
                trip.sql.contains("applied_ops"),
                "round trip {i}"
            );
            // Statements answer in order: seqs, op ids, customers, each only when asked.
            let expected = usize::from(trip.seqs.is_some())
                + usize::from(!trip.op_ids.is_empty())
                + usize::from(!trip.customer_ids.is_empty());
            assert_eq!(trip.sql.matches("SELECT").count(), expected);
        }
        let looked_up: Vec<Uuid> = trips.iter().flat_map(|t| t.op_ids.to_vec()).collect();
        assert_eq!(looked_up, op_ids, "every op id once, in order");
        let looked_up: Vec<Uuid> = trips.iter().flat_map(|t| t.customer_ids.to_vec()).collect();
        assert_eq!(looked_up, customer_ids);
    }

    #[test]
    fn an_empty_batch_looks_nothing_up() {
        let (lookup, op_ids, customer_ids) = lookup(0, 0);
        assert!(held_round_trips(&lookup, &op_ids, &customer_ids).is_empty());
    }

    #[test]
    fn a_batch_without_customers_asks_for_none() {
        let (lookup, op_ids, customer_ids) = lookup(3, 0);
        let trips = held_round_trips(&lookup, &op_ids, &customer_ids);
        assert_eq!(trips.len(), 1);
        assert!(!trips[0].sql.contains("customers"));
    }
}

//! The single writer of `edge.db` and the transactional outbox.
//!
//! All writes go through one dedicated thread that owns the write connection. It drains every
//! queued request, runs them one after the other inside one transaction and commits once: under
//! load many terminals' writes share one fsync (group commit). Each request is answered only
//! after the commit is durable; that fsync runs on a thread of its own while the writer goes on
//! with the next group (see [`durable`]).
//!
//! A failing request takes back only its own writes. Most failures are refusals decided before
//! anything is written, which leave nothing to take back, so requests run without a savepoint of
//! their own: a savepoint copies every page the request changes into the statement journal
//! first, which was the largest single cost of a busy venue's writes. When a request fails
//! after it changed rows (or panics), the writer rolls the whole group back and runs it again,
//! this time each request in its own SAVEPOINT, so the others commit as if it had never run.
//! Requests are therefore closures the writer may call more than once; nothing is answered
//! before the commit, so a first run that was rolled back is never seen.
//!
//! Every local mutation writes its rows and one outbox op in the same request (see [`append_op`]),
//! so a sale is either recorded and queued for central, or neither. A mutation serving an
//! idempotent request records that request, with its answer, in the same savepoint (see
//! `aero_shared::idempotency`).

mod durable;
pub mod settle;

use crate::replica::venue::VenueRecord;
use crate::replica::{parse_ts, ts};
use aero_shared::idempotency::{Answer, KeyedRequest, current_request};
use aero_shared::json::JsonText;
use aero_shared::wire::{Entity, OpKind, OutboxBacklog, PushOp};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

/// Most requests committed together; bounds how long one transaction holds the write lock.
const MAX_GROUP: usize = 256;

/// How a request's run left the group's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    /// It succeeded, or failed without changing anything.
    Clean,
    /// It failed after changing rows, outside a savepoint: only rolling back the transaction
    /// takes those changes back.
    Dirty,
}

trait Job: Send {
    /// Runs the request in the group's transaction, in a savepoint of its own when `guarded`,
    /// and keeps its outcome for [`Job::complete`]. May be called again after the transaction
    /// was rolled back; the later outcome replaces the earlier one.
    fn run(&mut self, conn: &Connection, guarded: bool) -> Ran;
    /// Gives up on the request without running it (the transaction could not start, or was
    /// rolled back under it).
    fn fail(&mut self, reason: String);
    /// Answers the request with its outcome and the group commit's.
    fn complete(self: Box<Self>, commit: Result<(), String>);
    /// Whether this request queued an outbox op the push loop should be told about.
    fn is_local_mutation(&self) -> bool;
}

struct Request<F, T> {
    work: F,
    reply: oneshot::Sender<anyhow::Result<T>>,
    local: bool,
    /// The idempotent request this write serves: recorded committed together with the write,
    /// with its answer when there is one, so it is never run again.
    idempotent: Option<KeyedRequest>,
    /// The request's answer among what the write returns, if the write makes it.
    answer_of: fn(&T) -> Option<&Answer>,
    /// What its latest run returned; `None` until it runs.
    outcome: Option<anyhow::Result<T>>,
}

impl<F, T> Job for Request<F, T>
where
    F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(&mut self, conn: &Connection, guarded: bool) -> Ran {
        let Request {
            work,
            idempotent,
            answer_of,
            ..
        } = self;
        let mut request = |c: &Connection| {
            let value = work(c)?;
            if let Some(request) = idempotent.as_ref() {
                let answer = answer_of(&value).or(request.answer.as_ref());
                record_request(c, request, answer)?;
            }
            Ok(value)
        };
        let (outcome, ran) = if guarded {
            (in_savepoint(conn, request), Ran::Clean)
        } else {
            let before = conn.total_changes();
            let outcome = catching_panics(|| request(conn));
            let ran = if outcome.is_err() && conn.total_changes() != before {
                Ran::Dirty
            } else {
                Ran::Clean
            };
            (outcome, ran)
        };
        self.outcome = Some(outcome);
        ran
    }

    fn fail(&mut self, reason: String) {
        self.outcome = Some(Err(anyhow::anyhow!(reason)));
    }

    fn complete(self: Box<Self>, commit: Result<(), String>) {
        let answer = match (self.outcome, commit) {
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(_)), Err(reason)) => Err(anyhow::anyhow!("commit failed: {reason}")),
            (None, _) => Err(anyhow::anyhow!("the write was never run")),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(answer);
    }

    fn is_local_mutation(&self) -> bool {
        self.local
    }
}

/// Marks an idempotent request committed and stores its answer, if it has one, in the caller's
/// savepoint: a retry replays that answer (or, without one, is refused rather than run again).
fn record_request(
    conn: &Connection,
    request: &KeyedRequest,
    answer: Option<&Answer>,
) -> anyhow::Result<()> {
    let now = ts(Utc::now());
    match answer {
        Some(answer) => conn
            .prepare_cached(
                "UPDATE idempotency_keys SET committed_at = ?3, status = ?4, content_type = ?5, body = ?6 WHERE scope = ?1 AND key = ?2",
            )?
            .execute(params![
                request.scope,
                request.key,
                now,
                answer.status().as_u16(),
                answer.content_type(),
                answer.body()
            ])?,
        None => conn
            .prepare_cached(
                "UPDATE idempotency_keys SET committed_at = ?3 WHERE scope = ?1 AND key = ?2",
            )?
            .execute(params![request.scope, request.key, now])?,
    };
    Ok(())
}

fn no_answer<T>(_: &T) -> Option<&Answer> {
    None
}

fn itself(answer: &Answer) -> Option<&Answer> {
    Some(answer)
}

/// A panicking request must not take the writer thread (and every later write) down with it.
fn catching_panics<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("write request panicked")))
}

fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // Cached statements: these run several times per request on the busiest thread there is.
    conn.prepare_cached("SAVEPOINT request")?.execute([])?;
    let outcome = catching_panics(|| work(conn));
    if outcome.is_err() {
        conn.prepare_cached("ROLLBACK TO request")?.execute([])?;
    }
    conn.prepare_cached("RELEASE request")?.execute([])?;
    outcome
}

/// What the writer thread is sent: a request to run, or the order to finish.
enum Message {
    Job(Box<dyn Job>),
    /// Everything queued before it is committed and answered, the WAL is checkpointed into the
    /// database file, then the thread ends and reports how the checkpoint went.
    Close(oneshot::Sender<Result<(), String>>),
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Message>,
    /// Signalled after a commit that queued outbox ops is durable: wakes the push loop.
    pushed: Arc<Notify>,
    horizon: durable::Horizon,
    /// The writer thread, joined by [`Writer::close`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on `conn`. The thread ends on [`Writer::close`], or when every
    /// `Writer` is dropped.
    pub fn start(conn: Connection) -> anyhow::Result<Self> {
        Self::start_with(conn, WalBudget::default(), None)
    }

    /// `sync` makes the WAL durable; by default, the fsync of the connection's WAL file.
    fn start_with(
        conn: Connection,
        budget: WalBudget,
        sync: Option<durable::SyncWal>,
    ) -> anyhow::Result<Self> {
        let (queue, rx) = mpsc::unbounded_channel();
        let pushed = Arc::new(Notify::new());
        let horizon = durable::Horizon::new();
        // Commits are made durable by the sync thread, not inside COMMIT (see `durable`).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let sync = match (sync, conn.path()) {
            (Some(sync), _) => sync,
            (None, Some(path)) if !path.is_empty() => durable::wal_of(Path::new(path)),
            // An in-memory database has nothing to make durable.
            (None, _) => Box::new(|| Ok(())),
        };
        let (to_sync, committed) = std::sync::mpsc::channel();
        let syncer = {
            let (horizon, pushed) = (horizon.clone(), Arc::clone(&pushed));
            std::thread::Builder::new()
                .name("edge-db-sync".into())
                .spawn(move || durable::sync_loop(committed, sync, &horizon, &pushed))?
        };
        // Checkpoints run beside the writer, not inside its commits (see `checkpoint_loop`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A WAL that grew past this (a busy day's backlog of frames) is cut back to it when the
        // log starts over.
        conn.pragma_update(None, "journal_size_limit", budget.size_limit_bytes())?;
        let checkpointer = match conn.path() {
            Some(path) if !path.is_empty() => {
                Some(crate::replica::open_connection(Path::new(path))?)
            }
            _ => None,
        };
        let running = Arc::new(AtomicBool::new(true));
        let restart_due = Arc::new(AtomicBool::new(false));
        if let Some(checkpointer) = checkpointer {
            let running = Arc::clone(&running);
            let restart_due = Arc::clone(&restart_due);
            std::thread::Builder::new()
                .name("edge-db-checkpoint".into())
                .spawn(move || checkpoint_loop(&checkpointer, &running, &restart_due, budget))?;
        }
        let thread = {
            let horizon = horizon.clone();
            std::thread::Builder::new()
                .name("edge-db-writer".into())
                .spawn(move || {
                    let syncing = Syncing {
                        to_sync,
                        syncer,
                        horizon,
                    };
                    writer_loop(conn, rx, syncing, &restart_due);
                    running.store(false, Ordering::Relaxed);
                })?
        };
        Ok(Self {
            queue,
            pushed,
            horizon,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Resolves once every commit begun so far is durable: what a reader saw before the call may
    /// then be sent off the box. Fails once the database could not make a commit durable.
    pub async fn durable(&self) -> anyhow::Result<()> {
        self.horizon.reached().await
    }

    /// Resolves once every write queued before it is committed and answered.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.write(|_| Ok(())).await
    }

    /// Shuts the writer down for good: every write queued before this is committed and
    /// answered, the WAL is checkpointed into the database file (so a copy of `edge.db` alone
    /// is complete), and the thread is joined. Later writes are refused with an error, never
    /// acknowledged. Returns the checkpoint's failure, if any.
    pub async fn close(&self) -> anyhow::Result<()> {
        let (done, finished) = oneshot::channel();
        let checkpoint = match self.queue.send(Message::Close(done)) {
            Ok(()) => finished
                .await
                .unwrap_or_else(|_| Err("the database writer ended without closing".into())),
            Err(_) => Err("the database writer had already stopped".into()),
        };
        let thread = self.thread.lock().expect("writer thread handle").take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the database writer thread panicked"))?;
        }
        checkpoint.map_err(|reason| anyhow::anyhow!(reason))
    }

    /// Notified after every durable commit that queued outbox ops.
    pub fn outbox_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.pushed)
    }

    /// Runs `work` in the writer's transaction (sync bookkeeping, idempotency keys).
    pub async fn write<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(work, false, no_answer).await
    }

    /// Runs a local mutation that appends outbox ops; the push loop is woken after commit. An
    /// idempotent request it serves is marked committed with it (answered with what the route
    /// declared with `aero_shared::idempotency::answering`, if anything).
    pub async fn mutate<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(work, true, no_answer).await
    }

    /// Runs a local mutation that returns the request's answer (the push loop is woken after
    /// commit, as for [`Writer::mutate`]): for an idempotent request the answer commits with the
    /// write, so a retry gets it replayed even if it never reached the client. A refusal decided inside the write is an `Err` (an [`aero_shared::ApiError`]
    /// such as `NotFound`), which rolls the write back and records nothing.
    pub async fn mutate_answering<F>(&self, work: F) -> anyhow::Result<Answer>
    where
        F: FnMut(&Connection) -> anyhow::Result<Answer> + Send + 'static,
    {
        self.submit(work, true, itself).await
    }

    async fn submit<T, F>(
        &self,
        work: F,
        local: bool,
        answer_of: fn(&T) -> Option<&Answer>,
    ) -> anyhow::Result<T>
    where
        F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // Only local mutations are business writes; sync bookkeeping never records a request.
        let idempotent = local.then(current_request).flatten();
        self.queue
            .send(Message::Job(Box::new(Request {
                work,
                reply,
                local,
                idempotent,
                answer_of,
                outcome: None,
            })))
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the database writer dropped the request"))?
    }
}

/// When the WAL is copied back into the database file, and how long it may grow.
#[derive(Clone, Copy, Debug)]
struct WalBudget {
    /// How often the checkpoint thread copies committed frames into the database file.
    checkpoint_every: Duration,
    /// A WAL holding more frames than this is started over by the writer itself (see
    /// `checkpoint_loop`).
    restart_at_frames: i64,
}

impl Default for WalBudget {
    fn default() -> Self {
        Self {
            checkpoint_every: Duration::from_millis(200),
            // 65,536 pages of 4 KiB: 256 MiB, started over every few seconds at the busiest.
            restart_at_frames: 65_536,
        }
    }
}

impl WalBudget {
    fn size_limit_bytes(self) -> i64 {
        // Room for the frames plus their headers, with slack for one large transaction.
        self.restart_at_frames * 2 * 4_096
    }
}

/// Copies committed WAL frames into the database file from its own connection and thread.
/// SQLite's automatic checkpoint would run inside whichever commit crosses the threshold, making
/// that group of terminals wait for the copy and the database file's fsync; a passive checkpoint
/// here never blocks the writer or readers, and durability is unchanged (each commit is already
/// fsync'd in the WAL).
///
/// The WAL starts over only when a write begins with every frame copied, which never happens
/// while terminals keep the writer busy: each checkpoint copies the frames committed before it
/// started, and more have been committed by the time it ends. The log would then grow by every
/// page written (gigabytes in an hour of sales, each frame landing in newly allocated file
/// blocks). So once it holds more than the budget, the writer is asked to run one checkpoint
/// itself between two groups (see `writer_loop`): with nothing committed meanwhile, that one
/// copies the few frames left and the next group starts the log over.
fn checkpoint_loop(
    conn: &Connection,
    running: &AtomicBool,
    restart_due: &AtomicBool,
    budget: WalBudget,
) {
    while running.load(Ordering::Relaxed) {
        std::thread::sleep(budget.checkpoint_every);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames > budget.restart_at_frames => {
                restart_due.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
        }
    }
}

/// The writer's side of the sync thread: where committed groups go to be made durable.
struct Syncing {
    to_sync: std::sync::mpsc::Sender<durable::Committed>,
    syncer: std::thread::JoinHandle<()>,
    horizon: durable::Horizon,
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Message>,
    syncing: Syncing,
    restart_due: &AtomicBool,
) {
    let mut closing = None;
    while closing.is_none() {
        let Some(message) = rx.blocking_recv() else {
            return;
        };
        let first = match message {
            Message::Job(job) => job,
            Message::Close(done) => {
                closing = Some(done);
                break;
            }
        };
        if restart_due.swap(false, Ordering::Relaxed)
            && let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %err, "WAL checkpoint before starting the log over failed");
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Message::Job(job)) => jobs.push(job),
                Ok(Message::Close(done)) => {
                    // This group is the last: it commits, then the writer closes.
                    closing = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        let commit = match syncing.horizon.refusal() {
            // Nothing may commit after rows readers saw were possibly lost (see `durable`).
            Some(refusal) => {
                for job in &mut jobs {
                    job.fail(refusal.clone());
                }
                Err(refusal)
            }
            None => run_group(&conn, &mut jobs, &syncing.horizon),
        };
        let committed = durable::Committed {
            group: syncing.horizon.latest(),
            jobs,
            commit,
        };
        if syncing.to_sync.send(committed).is_err() {
            tracing::error!("the sync thread has stopped; the group's requests are dropped");
        }
    }
    // Requests that raced the close are refused (their reply is dropped), never run.
    rx.close();
    // Every group committed is answered before the writer reports the close.
    let Syncing {
        to_sync, syncer, ..
    } = syncing;
    drop(to_sync);
    if syncer.join().is_err() {
        tracing::error!("the sync thread panicked");
    }
    let checkpoint = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .map_err(|err| format!("final WAL checkpoint failed: {err}"))
        .and_then(|(busy, log, copied)| {
            if busy != 0 || log != copied {
                Err(format!(
                    "final WAL checkpoint incomplete: {copied} of {log} frames copied (a reader held the log)"
                ))
            } else {
                Ok(())
            }
        });
    if let Some(done) = closing {
        let _ = done.send(checkpoint);
    }
}

/// Runs one group of requests in one transaction and commits it; every request's outcome is
/// kept in it. The requests first run without savepoints; if one fails after changing rows, the
/// transaction is rolled back and the group runs again with each request in a savepoint of its
/// own (see the module's documentation).
fn run_group(
    conn: &Connection,
    jobs: &mut [Box<dyn Job>],
    horizon: &durable::Horizon,
) -> Result<(), String> {
    let mut guarded = false;
    'attempt: loop {
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            let reason = format!("could not start a write transaction: {err}");
            tracing::error!(%reason);
            for job in jobs.iter_mut() {
                job.fail(reason.clone());
            }
            return Err(reason);
        }
        for job in jobs.iter_mut() {
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction; later
            // requests must then not run in autocommit mode, where they would be half-applied.
            if conn.is_autocommit() {
                job.fail("the write transaction was rolled back".into());
                continue;
            }
            if job.run(conn, guarded) == Ran::Dirty {
                if !conn.is_autocommit()
                    && let Err(err) = conn.execute_batch("ROLLBACK")
                {
                    // Still inside the transaction: committing now would keep the failed
                    // request's writes, so nothing of this group may commit.
                    let reason = format!("could not roll back a failed request: {err}");
                    tracing::error!(%reason);
                    for job in jobs.iter_mut() {
                        job.fail(reason.clone());
                    }
                    return Err(reason);
                }
                guarded = true;
                continue 'attempt;
            }
        }
        break;
    }
    if conn.is_autocommit() {
        return Err("the write transaction was rolled back".to_string());
    }
    horizon.begin_commit();
    conn.execute_batch("COMMIT").map_err(|err| {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %err, "group commit failed");
        err.to_string()
    })
}

/// A local write refused because central fenced this edge: nothing it queued could ever reach
/// central, so nothing is acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("this edge no longer syncs with central ({0}); enroll it again to take writes")]
pub struct Fenced(pub String);

/// Appends one outbox op in the caller's transaction. Seqs are dense per site: the counter in
/// `sync_state` (seeded from enrollment) survives the outbox being emptied by acks. Refused with
/// [`Fenced`] once central has fenced this edge.
pub fn append_op<T: Serialize>(
    conn: &Connection,
    entity: Entity,
    entity_id: Uuid,
    kind: OpKind,
    record: &T,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    append_json(
        conn,
        entity,
        entity_id,
        kind,
        &serde_json::to_string(record)?,
        now,
    )
}

/// Takes a venue record where it happened: writes it to the replica and queues its op, in the
/// caller's transaction, from one serialization. Returns that JSON, for the answer.
pub fn write_and_queue<R: VenueRecord>(
    conn: &Connection,
    record: &R,
    now: DateTime<Utc>,
) -> anyhow::Result<JsonText<R>> {
    let data = JsonText::new(record)?;
    record.insert_json(conn, data.as_str())?;
    append_json(conn, R::ENTITY, record.id(), R::KIND, data.as_str(), now)?;
    Ok(data)
}

/// [`append_op`] with the record already serialized to `data`.
fn append_json(
    conn: &Connection,
    entity: Entity,
    entity_id: Uuid,
    kind: OpKind,
    data: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    // The fence check rides on the counter's UPDATE. The new value is read back with a point
    // read rather than `RETURNING`, which SQLite runs through a temporary table: about 12 us per
    // op against under 1 us for the two statements.
    let bumped = conn
        .prepare_cached(
            "UPDATE sync_state SET next_seq = next_seq + 1 WHERE id = 1 AND fenced IS NULL",
        )?
        .execute([])?;
    if bumped == 0 {
        let reason = crate::sync::recovery::fenced(conn)?.unwrap_or_default();
        return Err(Fenced(reason).into());
    }
    let seq: i64 = conn
        .prepare_cached("SELECT next_seq - 1 FROM sync_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO outbox (seq, op_id, entity, entity_id, kind, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(
        params![
            seq,
            Uuid::now_v7(),
            entity.as_str(),
            entity_id,
            kind_str(kind),
            data,
            ts(now)
        ],
    )?;
    Ok(seq)
}

fn kind_str(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Upsert => "upsert",
        OpKind::Delete => "delete",
        OpKind::LedgerAppend => "ledger_append",
        OpKind::Event => "event",
    }
}

pub(crate) fn parse_kind(text: &str) -> anyhow::Result<OpKind> {
    Ok(match text {
        "upsert" => OpKind::Upsert,
        "delete" => OpKind::Delete,
        "ledger_append" => OpKind::LedgerAppend,
        "event" => OpKind::Event,
        other => anyhow::bail!("unknown op kind {other:?}"),
    })
}

/// How many ops wait to be pushed and when the oldest was written. Terminals poll the status
/// this feeds and a venue offline for days holds a long outbox: the count walks the small entity
/// index, not the ops' data, and the oldest op is the first by seq (seqs follow creation order,
/// renumbering included).
pub fn backlog(conn: &Connection) -> anyhow::Result<OutboxBacklog> {
    let pending_ops: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox INDEXED BY outbox_entity")?
        .query_row([], |r| r.get(0))?;
    let oldest: Option<String> = conn
        .prepare_cached("SELECT created_at FROM outbox ORDER BY seq LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(OutboxBacklog {
        pending_ops,
        oldest_pending_at: oldest.map(|t| parse_ts(&t)).transpose()?,
    })
}

/// Upper bound of one op's JSON besides its data (seq, two UUIDs, entity, kind, keys), so a
/// batch sized by `push_batch_bytes` stays inside central's request body limit.
const OP_ENVELOPE_BYTES: usize = 200;
/// The `{"ops":[...]}` around a batch.
const BATCH_ENVELOPE_BYTES: usize = 16;

/// The oldest pending ops in seq order: at most `max_ops` (and never more than central accepts
/// in one push), and a request body of at most about `max_bytes` (always at least one op, so an
/// oversized op still gets sent and judged).
pub fn pending(conn: &Connection, max_ops: usize, max_bytes: usize) -> anyhow::Result<Vec<PushOp>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, op_id, entity, entity_id, kind, data FROM outbox ORDER BY seq LIMIT ?1",
    )?;
    let max_ops = max_ops.clamp(1, aero_shared::wire::MAX_PUSH_OPS);
    let limit = i64::try_from(max_ops).unwrap_or(i64::MAX);
    let mut rows = stmt.query([limit])?;
    let mut ops = Vec::new();
    let mut bytes = BATCH_ENVELOPE_BYTES;
    while let Some(row) = rows.next()? {
        let data: String = row.get(5)?;
        let size = data.len() + OP_ENVELOPE_BYTES;
        if !ops.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        let entity: String = row.get(2)?;
        let kind: String = row.get(4)?;
        ops.push(PushOp {
            seq: row.get(0)?,
            op_id: row.get(1)?,
            entity: Entity::parse(&entity)
                .ok_or_else(|| anyhow::anyhow!("unknown entity {entity:?}"))?,
            entity_id: row.get(3)?,
            kind: parse_kind(&kind)?,
            data: serde_json::value::RawValue::from_string(data)?,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Replica;

    #[tokio::test]
    async fn group_commit_isolates_a_failing_request_and_keeps_seqs_dense() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 5).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let now = Utc::now();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer
                    .mutate(move |c| {
                        let seq = append_op(
                            c,
                            Entity::Customer,
                            Uuid::now_v7(),
                            OpKind::Upsert,
                            &i,
                            now,
                        )?;
                        // Every tenth request fails after writing: its op must vanish with it.
                        anyhow::ensure!(i % 10 != 3, "refused");
                        Ok(seq)
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            if task.await.expect("join").is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 45);
        let ops = replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("pending");
        assert_eq!(ops.len(), 45);
        assert_eq!(ops.first().map(|o| o.seq), Some(5));
        let seqs: Vec<i64> = ops.iter().map(|o| o.seq).collect();
        // Failed requests roll back their seq too, so the sequence has no holes.
        assert_eq!(seqs, (5..50).collect::<Vec<_>>());
    }

    /// Queues `count` requests behind a write that holds the writer, so they commit as one
    /// group once it lets go; each appends one op, and `fails` decides how request `i` ends
    /// (`None`: it succeeds). Returns each request's outcome, in order.
    async fn one_group(
        writer: &Writer,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
        count: usize,
        fails: fn(usize) -> Option<Failure>,
    ) -> Vec<anyhow::Result<i64>> {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (entered, mut held) = mpsc::unbounded_channel::<()>();
        let holder = writer.clone();
        let holding = tokio::spawn(async move {
            holder
                .write(move |_| {
                    let _ = entered.send(());
                    let _ = hold.recv();
                    Ok(())
                })
                .await
        });
        held.recv().await.expect("the writer is held");
        let now = Utc::now();
        let requests: Vec<_> = (0..count)
            .map(|i| {
                let (writer, runs) = (writer.clone(), Arc::clone(runs));
                tokio::spawn(async move {
                    writer
                        .mutate(move |c| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            if fails(i) == Some(Failure::BeforeWriting) {
                                anyhow::bail!("refused before writing");
                            }
                            let seq = append_op(
                                c,
                                Entity::Customer,
                                Uuid::now_v7(),
                                OpKind::Upsert,
                                &i,
                                now,
                            )?;
                            match fails(i) {
                                Some(Failure::AfterWriting) => {
                                    anyhow::bail!("refused after writing")
                                }
                                Some(Failure::Panic) => {
                                    panic!("request {i} panicked after writing")
                                }
                                _ => Ok(seq),
                            }
                        })
                        .await
                })
            })
            .collect();
        for _ in 0..count {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release");
        holding.await.expect("join").expect("the holding write");
        let mut outcomes = Vec::new();
        for request in requests {
            outcomes.push(request.await.expect("join"));
        }
        outcomes
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Failure {
        BeforeWriting,
        AfterWriting,
        Panic,
    }

    #[tokio::test]
    async fn requests_refused_before_writing_run_once_and_leave_the_others_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let outcomes = one_group(&writer, &runs, 20, |i| {
            (i % 5 == 2).then_some(Failure::BeforeWriting)
        })
        .await;
        let refused: Vec<usize> = (0..20).filter(|i| outcomes[*i].is_err()).collect();
        assert_eq!(refused, vec![2, 7, 12, 17]);
        // Nothing to take back: no request ran a second time.
        assert_eq!(runs.load(Ordering::SeqCst), 20);
        let ops = replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("pending");
        assert_eq!(
            ops.iter().map(|o| o.seq).collect::<Vec<_>>(),
            (1..=16).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_request_failing_or_panicking_after_writing_takes_back_only_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let outcomes = one_group(&writer, &runs, 12, |i| match i {
            3 => Some(Failure::AfterWriting),
            8 => Some(Failure::Panic),
            _ => None,
        })
        .await;
        let failed: Vec<usize> = (0..12).filter(|i| outcomes[*i].is_err()).collect();
        assert_eq!(failed, vec![3, 8]);
        // Taking their writes back meant running requests again, each in a savepoint.
        assert!(runs.load(Ordering::SeqCst) > 12);
        let ops = replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("pending");
        let committed: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().copied())
            .collect();
        assert_eq!(ops.iter().map(|o| o.seq).collect::<Vec<_>>(), committed);
        assert_eq!(committed, (1..=10).collect::<Vec<_>>());
        let payloads: Vec<serde_json::Value> = ops
            .iter()
            .map(|o| serde_json::from_str(o.data.get()).expect("an op's JSON"))
            .collect();
        let expected: Vec<serde_json::Value> = (0..12)
            .filter(|i| *i != 3 && *i != 8)
            .map(|i| serde_json::json!(i))
            .collect();
        assert_eq!(payloads, expected);
        // The writer carries on.
        writer.flush().await.expect("a later write commits");
    }

    #[tokio::test]
    async fn close_commits_every_queued_write_checkpoints_and_refuses_later_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let now = Utc::now();
        // Queued, not yet answered, when the close is sent behind them.
        let queued: Vec<_> = (0..20)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .mutate(move |c| {
                            append_op(c, Entity::Customer, Uuid::now_v7(), OpKind::Upsert, &i, now)
                        })
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        writer.flush().await.expect("flush");
        writer
            .close()
            .await
            .expect("close with a complete checkpoint");
        for write in queued {
            write
                .await
                .expect("join")
                .expect("a queued write is committed");
        }
        let wal = std::fs::metadata(dir.path().join("edge.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the final checkpoint left {wal} bytes in the WAL");
        let ops = replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("pending");
        assert_eq!(ops.len(), 20);
        let late = writer.write(|_| Ok(())).await;
        assert!(late.is_err(), "a write after close must be refused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_writes_never_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let budget = WalBudget {
            checkpoint_every: Duration::from_millis(5),
            restart_at_frames: 256,
        };
        let writer = Writer::start_with(conn, budget, None).expect("writer");
        // Terminals that always have a write queued: without the writer's own checkpoint the
        // log never starts over and grows by every page written (about 40 MiB here).
        let mut terminals = Vec::new();
        for _ in 0..16 {
            let writer = writer.clone();
            terminals.push(tokio::spawn(async move {
                for _ in 0..160 {
                    writer
                        .write(|c| {
                            c.execute(
                                "INSERT INTO other_rows (entity, entity_id, data) VALUES ('bulk', ?1, ?2)",
                                params![Uuid::now_v7(), "x".repeat(16_000)],
                            )?;
                            Ok(())
                        })
                        .await
                        .expect("write");
                }
            }));
        }
        for terminal in terminals {
            terminal.await.expect("join");
        }
        let wal = std::fs::metadata(dir.path().join("edge.db-wal"))
            .expect("wal")
            .len();
        assert!(
            wal <= 2 * budget.size_limit_bytes() as u64,
            "the WAL grew to {wal} bytes"
        );
    }

    #[tokio::test]
    async fn batches_respect_the_op_and_byte_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let writer = Writer::start(conn).expect("writer");
        let now = Utc::now();
        writer
            .mutate(move |c| {
                for _ in 0..10 {
                    append_op(
                        c,
                        Entity::Customer,
                        Uuid::now_v7(),
                        OpKind::Upsert,
                        &"x".repeat(1000),
                        now,
                    )?;
                }
                Ok(())
            })
            .await
            .expect("queue");
        let by_count = replica
            .read(|c| pending(c, 3, usize::MAX))
            .await
            .expect("read");
        assert_eq!(by_count.len(), 3);
        let by_bytes = replica
            .read(|c| pending(c, 100, 3 * 1300))
            .await
            .expect("read");
        assert_eq!(by_bytes.len(), 3);
        // An op larger than the budget still goes out alone rather than blocking the queue.
        let oversized = replica.read(|c| pending(c, 100, 10)).await.expect("read");
        assert_eq!(oversized.len(), 1);
    }
}

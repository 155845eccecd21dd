//! Making the writer's commits durable beside it: the fsync of one group overlaps the next
//! group's work.
//!
//! The writer's connection commits with `synchronous=NORMAL`: COMMIT appends the group's frames
//! to the WAL and returns without an fsync. The writer hands the committed group to the sync
//! thread and goes on with the next one. The sync thread takes every group committed so far,
//! fsyncs the WAL file once, and only then answers their requests. With the fsync inside COMMIT
//! (`synchronous=FULL`), the writer sat idle for it on every group.
//!
//! An answer still means what it meant with `FULL`. SQLite appends a transaction's frames to
//! the WAL in commit order, and after a power cut it keeps the longest run of valid frames from
//! the start of the log, up to the last complete commit in it. An fsync that returns has put on
//! disk every frame written before it was called; it is called after the group's COMMIT
//! returned, so the group's frames, and those of every group before it, survive.
//!
//! Readers see a group once it is committed, up to one fsync before it is durable: a terminal
//! can see a sale whose own POST is still waiting for its answer. Nothing leaves the box before
//! it is durable: every answer comes from here, and the push loop waits for [`Horizon::reached`]
//! before sending ops it read, so central never holds an op this box could lose.
//!
//! An fsync that fails may have lost pages of commits that readers already saw, and a later
//! fsync can succeed without bringing them back. After one failure, nothing more is
//! acknowledged: the groups waiting are refused, the writer refuses every later write, and the
//! push loop stops, until the edge is restarted and SQLite recovers the log.

use super::Job;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, watch};

/// Makes every frame written to the WAL so far durable.
pub(super) type SyncWal = Box<dyn FnMut() -> io::Result<()> + Send>;

/// The fsync of a database's WAL file (`<database>-wal`).
pub(super) fn wal_of(database: &Path) -> SyncWal {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    let mut wal = WalFile {
        path: PathBuf::from(name),
        file: None,
    };
    Box::new(move || wal.sync())
}

struct WalFile {
    path: PathBuf,
    /// Opened at the first sync, after the first commit: the log exists by then, and it stays
    /// the same file while the writer's connection is open.
    file: Option<File>,
}

impl WalFile {
    fn sync(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = File::open(&self.path)?;
                // The log's directory entry too, in case it was created since the database
                // last synced its directory.
                let dir = match self.path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                File::open(dir)?.sync_all()?;
                self.file.insert(file)
            }
        };
        file.sync_data()
    }
}

/// A group the writer committed (or failed to), on its way to its answers.
pub(super) struct Committed {
    /// Its number, from [`Horizon::begin_commit`]; a group that never reached its COMMIT
    /// carries the number of the one before.
    pub group: u64,
    pub jobs: Vec<Box<dyn Job>>,
    pub commit: Result<(), String>,
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Every group up to this one is durable and answered.
    durable: u64,
    /// Why an fsync failed; nothing is acknowledged after it.
    failure: Option<Arc<str>>,
}

/// How far the writer's commits have gone: begun, and durable.
#[derive(Clone, Debug)]
pub(super) struct Horizon {
    /// The latest group whose COMMIT has begun, so whose rows readers may see.
    begun: Arc<AtomicU64>,
    progress: Arc<watch::Sender<Progress>>,
}

impl Horizon {
    pub fn new() -> Self {
        Self {
            begun: Arc::new(AtomicU64::new(0)),
            progress: Arc::new(watch::Sender::new(Progress::default())),
        }
    }

    /// Numbers the group about to commit (see [`Horizon::latest`]). Called before its COMMIT
    /// starts, so a reader that sees its rows finds this number (or a later one) in
    /// [`Horizon::reached`].
    pub fn begin_commit(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
    }

    /// The latest group numbered so far.
    pub fn latest(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// Once an fsync failed, why nothing more is acknowledged: what refused writes and the
    /// push loop are told.
    pub fn refusal(&self) -> Option<String> {
        refusal(self.progress.borrow().failure.as_deref())
    }

    /// Resolves once every commit begun before this call is durable: whatever a reader saw
    /// before calling it may then leave the box. Fails once an fsync failed.
    pub async fn reached(&self) -> anyhow::Result<()> {
        let target = self.latest();
        let mut progress = self.progress.subscribe();
        let progress = progress
            .wait_for(|p| p.durable >= target || p.failure.is_some())
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        match refusal(progress.failure.as_deref()) {
            Some(refusal) => Err(anyhow::anyhow!(refusal)),
            None => Ok(()),
        }
    }

    fn advance(&self, group: u64) {
        self.progress
            .send_modify(|p| p.durable = p.durable.max(group));
    }

    fn fail(&self, reason: &str) {
        self.progress
            .send_modify(|p| p.failure = Some(Arc::from(reason)));
    }
}

fn refusal(failure: Option<&str>) -> Option<String> {
    failure.map(|failure| {
        format!("the database could not make a commit durable ({failure}); restart the edge")
    })
}

/// The sync thread: each round takes every group committed so far, makes them durable with one
/// fsync, answers their requests and wakes the push loop if they queued ops.
pub(super) fn sync_loop(
    committed: std::sync::mpsc::Receiver<Committed>,
    mut sync: SyncWal,
    horizon: &Horizon,
    pushed: &Notify,
) {
    while let Ok(first) = committed.recv() {
        let mut groups = vec![first];
        groups.extend(committed.try_iter());
        let outcome = match horizon.refusal() {
            Some(refusal) => Err(refusal),
            // Groups that failed to commit wrote nothing to make durable.
            None if groups.iter().all(|g| g.commit.is_err()) => Ok(()),
            None => sync().map_err(|err| {
                let reason = format!("fsync of the write-ahead log failed: {err}");
                tracing::error!(%reason, "no write is acknowledged until the edge restarts");
                horizon.fail(&reason);
                reason
            }),
        };
        if outcome.is_ok() {
            horizon.advance(groups.last().map_or(0, |g| g.group));
        }
        let mut local = false;
        for group in groups {
            let commit = match (&outcome, group.commit) {
                (Ok(()), commit) => commit,
                (Err(reason), Ok(())) => Err(format!("the commit is not durable: {reason}")),
                (Err(_), Err(reason)) => Err(reason),
            };
            local |= commit.is_ok() && group.jobs.iter().any(|j| j.is_local_mutation());
            for job in group.jobs {
                job.complete(commit.clone());
            }
        }
        if local {
            pushed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{WalBudget, Writer, append_op, pending};
    use super::*;
    use crate::config::SyncSettings;
    use crate::credential::Credential;
    use crate::replica::Replica;
    use crate::sync::SyncEngine;
    use aero_shared::wire::{Entity, OpKind, PushRequest, PushResponse};
    use chrono::Utc;
    use tokio::sync::mpsc;
    use uuid::Uuid;

    /// A WAL sync the test holds: it reports each call, then waits to be let go before making the
    /// log durable for real.
    struct HeldSync {
        calls: mpsc::UnboundedReceiver<()>,
        release: std::sync::mpsc::Sender<io::Result<()>>,
    }

    fn held_sync(database: &Path) -> (SyncWal, HeldSync) {
        let (called, calls) = mpsc::unbounded_channel();
        let (release, released) = std::sync::mpsc::channel::<io::Result<()>>();
        let mut wal = wal_of(database);
        let sync: SyncWal = Box::new(move || {
            let _ = called.send(());
            released
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the test ended")))?;
            wal()
        });
        (sync, HeldSync { calls, release })
    }

    fn append(writer: &Writer, n: i32) -> tokio::task::JoinHandle<anyhow::Result<i64>> {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .mutate(move |c| {
                    append_op(
                        c,
                        Entity::Customer,
                        Uuid::now_v7(),
                        OpKind::Upsert,
                        &n,
                        Utc::now(),
                    )
                })
                .await
        })
    }

    fn start(dir: &Path) -> (Arc<Replica>, Writer, HeldSync) {
        let (replica, conn) = Replica::open(dir, Uuid::now_v7(), 1).expect("open");
        let (sync, held) = held_sync(&dir.join("edge.db"));
        let writer = Writer::start_with(conn, WalBudget::default(), Some(sync)).expect("writer");
        (replica, writer, held)
    }

    async fn pending_count(replica: &Arc<Replica>) -> usize {
        replica
            .read(|c| pending(c, 1000, usize::MAX))
            .await
            .expect("pending")
            .len()
    }

    #[tokio::test]
    async fn a_write_is_answered_and_may_leave_the_box_only_once_its_commit_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, writer, mut held) = start(dir.path());
        assert!(
            dir.path().join("edge.db-wal").exists(),
            "the replica runs in WAL mode"
        );
        let sale = append(&writer, 1);
        held.calls
            .recv()
            .await
            .expect("the sync thread syncs the group");
        // Committed, so readers see it; not yet durable, so not answered or pushed.
        assert_eq!(pending_count(&replica).await, 1);
        let durable = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.durable().await })
        };
        tokio::task::yield_now().await;
        assert!(!sale.is_finished(), "answered before its fsync");
        assert!(!durable.is_finished(), "cleared to push before its fsync");
        held.release.send(Ok(())).expect("release");
        assert_eq!(sale.await.expect("join").expect("the sale"), 1);
        durable.await.expect("join").expect("durable");
    }

    /// A stand-in for central's push endpoint on loopback: reports the seqs of each batch it is
    /// sent and acknowledges them all.
    async fn central_taking_pushes() -> (String, mpsc::UnboundedReceiver<Vec<i64>>) {
        let (received, pushes) = mpsc::unbounded_channel();
        let store_id = Uuid::now_v7();
        let take = move |axum::Json(batch): axum::Json<PushRequest>| {
            let seqs: Vec<i64> = batch.ops.iter().map(|op| op.seq).collect();
            let acked_seq = seqs.last().copied().unwrap_or(0);
            let _ = received.send(seqs);
            std::future::ready(axum::Json(PushResponse {
                acked_seq,
                expected_seq: None,
                rejected: Vec::new(),
                forked_at: None,
                store_id,
                head: acked_seq,
            }))
        };
        let app = axum::Router::new().route("/v1/sync/push", axum::routing::post(take));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, pushes)
    }

    #[tokio::test]
    async fn the_push_sends_an_op_it_read_only_once_the_ops_commit_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, writer, mut held) = start(dir.path());
        let (central_url, mut pushes) = central_taking_pushes().await;
        let credential = Credential {
            central_url,
            site_id: Uuid::now_v7(),
            device_id: Uuid::now_v7(),
            api_key: String::from("aero_test-key").into(),
            next_seq: 1,
            store_id: None,
        };
        let engine = SyncEngine::new(
            credential,
            SyncSettings::default(),
            Arc::clone(&replica),
            writer.clone(),
        )
        .expect("sync engine");
        let sale = append(&writer, 1);
        held.calls
            .recv()
            .await
            .expect("the sale's group is syncing");
        let push = tokio::spawn(async move {
            let settled = engine.push_batch().await.expect("push");
            settled.map(|settled| settled.confirmed)
        });
        // The op is committed, so the push reads it; it then waits for the fsync (a subscriber
        // to the writer's progress) instead of sending the op to central.
        let waiting = async {
            while writer.horizon.progress.receiver_count() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            () = waiting => {}
            seqs = pushes.recv() => panic!("ops {seqs:?} left the box before their commit was durable"),
        }
        assert!(!push.is_finished());
        held.release.send(Ok(())).expect("release the sale's fsync");
        assert_eq!(pushes.recv().await.expect("pushed once durable"), [1]);
        // Recording central's acknowledgement is a write of its own, made durable in turn.
        held.calls
            .recv()
            .await
            .expect("the settle's group is syncing");
        held.release
            .send(Ok(()))
            .expect("release the settle's fsync");
        assert_eq!(push.await.expect("join"), Some(1));
        assert_eq!(sale.await.expect("join").expect("the sale"), 1);
    }

    #[tokio::test]
    async fn the_writer_commits_the_next_group_while_the_last_ones_fsync_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, writer, mut held) = start(dir.path());
        let first = append(&writer, 1);
        held.calls.recv().await.expect("the first group is syncing");
        let second = append(&writer, 2);
        // The second group commits while the first one's fsync is held.
        while pending_count(&replica).await < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!first.is_finished() && !second.is_finished());
        held.release.send(Ok(())).expect("release the first fsync");
        assert_eq!(first.await.expect("join").expect("first"), 1);
        held.calls
            .recv()
            .await
            .expect("the second group is syncing");
        assert!(
            !second.is_finished(),
            "answered by the fsync before its commit"
        );
        held.release.send(Ok(())).expect("release the second fsync");
        assert_eq!(second.await.expect("join").expect("second"), 2);
    }

    #[tokio::test]
    async fn after_a_failed_fsync_nothing_more_is_acknowledged_written_or_pushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, writer, mut held) = start(dir.path());
        let sale = append(&writer, 1);
        held.calls.recv().await.expect("syncing");
        held.release
            .send(Err(io::Error::other("the disk went away")))
            .expect("fail the fsync");
        let refused = sale.await.expect("join").expect_err("not durable");
        assert!(
            format!("{refused:#}").contains("the disk went away"),
            "{refused:#}"
        );
        let later = append(&writer, 2)
            .await
            .expect("join")
            .expect_err("refused");
        assert!(
            format!("{later:#}").contains("restart the edge"),
            "{later:#}"
        );
        // The first op was committed before its fsync failed; the later one never ran.
        assert_eq!(pending_count(&replica).await, 1);
        let push = writer
            .durable()
            .await
            .expect_err("no push after a failed fsync");
        assert!(format!("{push:#}").contains("restart the edge"), "{push:#}");
    }
}

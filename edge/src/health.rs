//! The edge's health: a round trip through the database writer and a replica read. It feeds
//! the systemd watchdog and answers `/healthz`, so both tell the same truth.

use crate::outbox::Writer;
use crate::replica::Replica;
use aero_shared::systemd::HealthCheck;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// How long `/healthz` waits for the check before calling the edge unhealthy.
pub const HTTP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks what every venue request needs: the writer thread commits, and the replica reads.
#[derive(Clone, Debug)]
pub struct EdgeHealth {
    pub writer: Writer,
    pub replica: Arc<Replica>,
}

#[async_trait]
impl HealthCheck for EdgeHealth {
    async fn check(&self) -> anyhow::Result<()> {
        // Queued behind every pending write: a wedged or stopped writer never answers this.
        self.writer
            .write(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map_err(|err| anyhow::anyhow!("database writer: {err:#}"))?;
        self.replica
            .read(|c| {
                Ok(
                    c.query_row("SELECT next_seq FROM sync_state WHERE id = 1", [], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            })
            .await
            .map_err(|err| anyhow::anyhow!("replica read: {err:#}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::systemd::beat;
    use uuid::Uuid;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn open(dir: &std::path::Path) -> EdgeHealth {
        let (replica, conn) = Replica::open(dir, Uuid::now_v7(), 1).expect("open");
        EdgeHealth {
            writer: Writer::start(conn).expect("writer"),
            replica,
        }
    }

    async fn pings(health: &EdgeHealth) -> (usize, Result<(), String>) {
        let mut pinged = 0;
        let outcome = beat(health, TIMEOUT, || pinged += 1).await;
        (pinged, outcome)
    }

    #[tokio::test]
    async fn a_working_writer_and_replica_feed_the_watchdog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = open(dir.path());
        assert_eq!(pings(&health).await, (1, Ok(())));
    }

    #[tokio::test]
    async fn a_hung_writer_fails_the_check_and_skips_the_ping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = open(dir.path());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (entered, mut wedged) = tokio::sync::mpsc::unbounded_channel::<()>();
        // A write that never returns until released: the writer thread is wedged behind it.
        let stuck = tokio::spawn({
            let writer = health.writer.clone();
            async move {
                writer
                    .write(move |_| {
                        let _ = entered.send(());
                        let _ = hold.recv();
                        Ok(())
                    })
                    .await
            }
        });
        wedged
            .recv()
            .await
            .expect("the writer runs the stuck write");
        let (pinged, outcome) = pings(&health).await;
        assert_eq!(pinged, 0);
        let reason = outcome.expect_err("a hung writer must fail the check");
        assert!(reason.contains("no answer"), "{reason}");
        release.send(()).expect("release");
        stuck.await.expect("join").expect("the held write commits");
        assert_eq!(pings(&health).await, (1, Ok(())));
    }

    #[tokio::test]
    async fn a_closed_writer_fails_the_check_and_skips_the_ping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = open(dir.path());
        health.writer.close().await.expect("close");
        let (pinged, outcome) = pings(&health).await;
        assert_eq!(pinged, 0);
        let reason = outcome.expect_err("a stopped writer must fail the check");
        assert!(reason.contains("database writer"), "{reason}");
    }
}

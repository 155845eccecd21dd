//! Registrations while central is down, then the time the edge takes to drain that backlog.

use crate::central::Central;
use crate::edge::EdgeProcess;
use crate::load::Stop;
use crate::measure::{measure, print_table};
use crate::procfs::{self, CpuSnapshot};
use crate::writes::register_request;
use crate::{Cli, flush};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

pub(crate) async fn run(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    kiosk: &str,
    central: &mut Central,
) -> anyhow::Result<()> {
    println!(
        "## Backlog drain: {} registrations while central is down, then central back\n",
        cli.backlog
    );
    // Whatever the writes scenario queued goes first, so the backlog is exactly ours.
    edge.wait_outbox_empty(kiosk, Duration::from_millis(50), Duration::from_secs(300))
        .await?;
    central.stop().await;
    let measured = measure(
        cli,
        load,
        edge,
        "POST /v1/customers, central offline",
        Stop::Count(cli.backlog),
        register_request(edge, kiosk, 2),
        201,
    )
    .await?;
    print_table(&[&measured]);
    let status = edge.status(kiosk).await?.unwrap_or_default();
    let backlog = status["pending_ops"].as_i64().unwrap_or(0);
    println!("\nBacklog at the edge: {backlog} pending ops.\n");
    flush();

    let before = CpuSnapshot::take(Some(edge.pid));
    let started = Instant::now();
    central.restart().await?;
    let first_ack = Arc::new(AtomicU64::new(0));
    let status = {
        let first_ack = Arc::clone(&first_ack);
        edge.wait_status(
            kiosk,
            Duration::from_millis(50),
            Duration::from_secs(600),
            move |s| {
                let pending = s["pending_ops"].as_i64().unwrap_or(i64::MAX);
                if pending < backlog && first_ack.load(Ordering::Relaxed) == 0 {
                    first_ack.store(
                        started.elapsed().as_millis().max(1) as u64,
                        Ordering::Relaxed,
                    );
                }
                pending == 0
            },
        )
        .await?
    };
    let drained = started.elapsed();
    let cpu = procfs::cpu_between(&before, &CpuSnapshot::take(Some(edge.pid)));
    let first = Duration::from_millis(first_ack.load(Ordering::Relaxed));
    println!("| measure | value |\n|---|---|");
    println!(
        "| central restart to pending_ops = 0 | **{:.2} s** (target <= 20 s) |",
        drained.as_secs_f64()
    );
    println!(
        "| central restart to the first acknowledged batch seen | {:.2} s |",
        first.as_secs_f64()
    );
    println!(
        "| drain rate after the first ack | {:.0} ops/s |",
        backlog as f64 / (drained - first).as_secs_f64().max(0.001)
    );
    println!(
        "| CPU during the drain: edge / central (in-process) | {:.2} s / {:.2} s |",
        cpu.edge, cpu.central
    );
    println!("| edge status after | `{status}` |");
    println!();
    flush();
    Ok(())
}

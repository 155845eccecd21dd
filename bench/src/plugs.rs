//! Simulated smart plugs scheduled "on" at HQ: the time until the edge has switched every live one,
//! then its CPU and memory while it keeps reconciling them.

use crate::central::Central;
use crate::edge::EdgeProcess;
use crate::procfs::{self, CpuSnapshot};
use crate::{Cli, flush, mib};
use aero_plugsim::{Fault, Model, SimPlug};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The edge's reconcile period (its default), which the plugs scenario measures against.
pub(crate) const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    cli: &Cli,
    central: &Central,
    site: Uuid,
    edge: &EdgeProcess,
) -> anyhow::Result<()> {
    let count = cli.plugs.max(2);
    println!(
        "## Smart plugs: {count} simulated HS103 plugs on loopback, one of which never answers\n"
    );
    // The simulators run on the bench's own runtime (counted as "central" CPU below).
    let sims = (0..count)
        .map(|_| SimPlug::start(Model::Hs103))
        .collect::<std::io::Result<Vec<_>>>()?;
    sims[0].script(std::iter::repeat_n(Fault::NoReply, 1_000_000));
    let live = &sims[1..];
    let before = CpuSnapshot::take(Some(edge.pid));
    let started = Instant::now();
    for (i, sim) in sims.iter().enumerate() {
        let plug = central
            .create_plug(site, &format!("Plug {i:03}"), sim.addr().port())
            .await?;
        // Every minute at second 0: the latest event is always "on".
        central.create_schedule(plug, "0 * * * * *", "on").await?;
    }
    let configured = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let all_on = loop {
        if live.iter().all(|s| s.relays() == vec![true]) {
            break started.elapsed() - configured;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the live plugs were not all switched on within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu_until_on = procfs::cpu_between(&before, &CpuSnapshot::take(Some(edge.pid)));
    // Steady state: three reconcile periods of reading every plug back.
    let steady_before = CpuSnapshot::take(Some(edge.pid));
    let requests_before: usize = sims.iter().map(SimPlug::requests).sum();
    tokio::time::sleep(RECONCILE_PERIOD * 3).await;
    let steady = procfs::cpu_between(&steady_before, &CpuSnapshot::take(Some(edge.pid)));
    let requests = sims.iter().map(SimPlug::requests).sum::<usize>() - requests_before;
    let rss = procfs::rss(edge.pid)?;
    // A pass may be under way right now: let its requests finish before counting.
    for sim in live {
        let _ = tokio::time::timeout(Duration::from_secs(10), sim.wait_closed()).await;
    }
    let open: usize = sims.iter().map(SimPlug::open_connections).sum();
    println!("| measure | value |\n|---|---|");
    println!(
        "| {count} plugs and schedules created over HQ's API | {:.2} s |",
        configured.as_secs_f64()
    );
    println!(
        "| last schedule created to all {} live plugs on | **{:.2} s** (target: within one reconcile period, {} s) |",
        live.len(),
        all_on.as_secs_f64(),
        RECONCILE_PERIOD.as_secs()
    );
    println!(
        "| edge CPU from the first plug created to all on | {:.2} s |",
        cpu_until_on.edge
    );
    println!(
        "| steady state over {} s: plug requests / edge CPU | {requests} / {:.3} cores ({:.0} µs per request) |",
        (RECONCILE_PERIOD * 3).as_secs(),
        steady.edge / (RECONCILE_PERIOD * 3).as_secs_f64(),
        steady.edge * 1e6 / requests.max(1) as f64
    );
    println!(
        "| edge RSS now / peak | {} / {} |",
        mib(rss.current_kib),
        mib(rss.peak_kib)
    );
    println!(
        "| connections left open at the plugs (the dead one's pending request aside) | {open} |"
    );
    println!();
    flush();
    Ok(())
}

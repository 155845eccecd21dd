//! One timed load on the load generator, with the edge's CPU and memory around it, and its row in
//! the results table.

use crate::edge::EdgeProcess;
use crate::load::{self, Expect, MakeRequest, Outcome, Stop};
use crate::procfs::{self, CpuSnapshot, CpuUse, Rss};
use crate::{Cli, mib};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;

/// The figures of one printed row that a comparison of edge builds sets side by side.
#[derive(Clone, Debug)]
pub(crate) struct Figures {
    pub(crate) load: String,
    pub(crate) per_second: f64,
    pub(crate) p99_ms: f64,
    pub(crate) edge_us: f64,
}

/// Every row printed since the last [`take_printed`], in order.
static PRINTED: Mutex<Vec<Figures>> = Mutex::new(Vec::new());

/// The rows printed by the run that just ended (see [`crate::compare`]).
pub(crate) fn take_printed() -> Vec<Figures> {
    std::mem::take(
        &mut *PRINTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

pub(crate) struct Measured {
    /// The load as its table row names it.
    pub(crate) label: &'static str,
    pub(crate) outcome: Outcome,
    pub(crate) cpu: CpuUse,
    pub(crate) rss_max_kib: u64,
    pub(crate) rss: Rss,
}

/// Runs one load on the load generator's runtime while sampling the edge's RSS and the CPU
/// time of the edge, the load generator and central over the measurement window. Its start is
/// announced on stderr, so a profiler can be pointed at the edge during one load: the tables
/// are printed only once a scenario's loads are all done.
pub(crate) async fn measure(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    label: &'static str,
    stop: Stop,
    make: MakeRequest,
    expect: u16,
) -> anyhow::Result<Measured> {
    let pid = edge.pid;
    match stop {
        Stop::Timed { warmup, measure } => eprintln!(
            "aero-bench: {label}: {:.0} s of warm-up, then {:.0} s measured (edge pid {pid})",
            warmup.as_secs_f64(),
            measure.as_secs_f64()
        ),
        Stop::Count(requests) => {
            eprintln!("aero-bench: {label}: {requests} requests (edge pid {pid})");
        }
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, rss_max) = (Arc::clone(&sampling), Arc::clone(&rss_max));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(rss) = procfs::rss(pid) {
                    rss_max.fetch_max(rss.current_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // CPU is counted over the recorded window only, not the warm-up.
    let before = match stop {
        Stop::Timed { warmup, .. } => tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            CpuSnapshot::take(Some(pid))
        }),
        Stop::Count(_) => {
            let snapshot = CpuSnapshot::take(Some(pid));
            tokio::spawn(async move { snapshot })
        }
    };
    let outcome = load
        .spawn(load::run(
            edge.addr,
            cli.connections,
            stop,
            make,
            Expect::Status(expect),
        ))
        .await??;
    let after = CpuSnapshot::take(Some(pid));
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let cpu = procfs::cpu_between(&before.await?, &after);
    Ok(Measured {
        label,
        outcome,
        cpu,
        rss_max_kib: rss_max.load(Ordering::Relaxed),
        rss: procfs::rss(pid)?,
    })
}

pub(crate) fn print_table(rows: &[&Measured]) {
    println!(
        "| load | answered | per second | p50 ms | p99 ms | p99.9 ms | max ms | other answers | edge CPU (cores) | load generator CPU (cores) | central CPU (cores) | rest of machine (cores) | machine busy | edge CPU µs/request | edge RSS max during / VmHWM |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in rows {
        let (name, o) = (m.label, &m.outcome);
        let secs = o.window.as_secs_f64();
        let edge_us = m.cpu.edge / o.ok.max(1) as f64 * 1e6;
        PRINTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Figures {
                load: name.to_string(),
                per_second: o.rate(),
                p99_ms: o.quantile_ms(0.99),
                edge_us,
            });
        let other: Vec<String> = o
            .unexpected
            .iter()
            .map(|(s, n)| format!("{n}x{s}"))
            .chain((o.failures > 0).then(|| format!("{} failed", o.failures)))
            .collect();
        println!(
            "| {name} | {} in {:.1} s | **{:.0}** | {:.2} | **{:.2}** | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% | {:.1} | {} / {} |",
            o.ok,
            secs,
            o.rate(),
            o.quantile_ms(0.50),
            o.quantile_ms(0.99),
            o.quantile_ms(0.999),
            o.max_ms(),
            if other.is_empty() {
                "none".into()
            } else {
                other.join(", ")
            },
            m.cpu.edge / secs,
            m.cpu.loadgen / secs,
            m.cpu.central / secs,
            m.cpu.rest / secs,
            m.cpu.machine_busy * 100.0,
            edge_us,
            mib(m.rss_max_kib),
            mib(m.rss.peak_kib),
        );
    }
}

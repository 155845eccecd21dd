//! `aero-bench`: measures the edge against the targets in BENCHMARKS.md.
//!
//! Central runs in this process on a loopback port; the edge under test is the release
//! `aero-edge` binary run as a separate process, so its RSS and CPU are its own. Every scenario
//! starts from scratch in a temporary directory: central with 100,000 customers pushed by
//! another venue, and a fresh edge whose bootstrap pulls them (the bootstrap measurement).
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p aero-bench -- all [--seconds 10]
//! cargo run --release -p aero-bench -- sales --edge old/aero-edge --edge new/aero-edge --rounds 3
//! ```

mod central;
mod compare;
mod drain;
mod edge;
mod hints;
mod load;
mod lookup;
mod measure;
mod plugs;
mod probes;
mod procfs;
// The end-to-end tests' link proxy, compiled in from their crate rather than copied: it needs
// only tokio, and the soak uses a part of what the tests use.
#[allow(dead_code)]
#[path = "../../tests/src/proxy.rs"]
mod proxy;
mod sales;
mod soak;
mod writes;
mod wrk_floor;

use crate::central::Central;
use crate::edge::EdgeProcess;
use crate::procfs::CpuSnapshot;
use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every scenario below, in this order, on one central and one edge.
    All,
    /// Bootstrap of a new edge from a central holding the customers.
    Bootstrap,
    /// Kiosk lookups `GET /v1/customers?phone=` with an API key.
    Lookup,
    /// Durable registrations `POST /v1/customers`, central online (the push loop runs).
    Writes,
    /// Durable orders `POST /v1/orders` and check-ins `POST /v1/checkins` at the POS, central
    /// online, then the same with central down.
    Sales,
    /// Simulated smart plugs (one never answers) scheduled "on" at HQ: the time until the edge
    /// has switched every live one, then its CPU and memory while it keeps reconciling them.
    Plugs,
    /// Registrations while central is down, then the time to drain that backlog.
    Drain,
    /// Central alone: `--venues` simulated edges on the change-hint socket, pulling when
    /// hinted, while one venue's data changes per second (not part of `all`).
    Hints,
    /// `--minutes` of mixed venue traffic at half the measured maximum while the link to
    /// central flaps; errors, latency and memory over time, then nothing lost or doubled at
    /// central (not part of `all`).
    Soak,
}

#[derive(Parser, Debug)]
#[command(name = "aero-bench", about = "Benchmarks of the AeroSports edge")]
struct Cli {
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Measured seconds of each timed load (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unrecorded warm-up seconds before each timed load.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent keep-alive connections (one client task each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Customers seeded at central and bootstrapped into the edge's replica.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// Registrations written while central is down, then drained.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Customers with a waiver who buy passes and check in (sales scenario).
    #[arg(long, default_value_t = 2_000)]
    jumpers: u64,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Simulated plugs for the plugs scenario (one of them never answers).
    #[arg(long, default_value_t = 200)]
    plugs: usize,
    /// Simulated edges on central's change-hint socket (hints scenario).
    #[arg(long, default_value_t = 500)]
    venues: usize,
    /// Also run `wrk` (if installed) against the lookup, for comparison.
    #[arg(long)]
    wrk: bool,
    /// Threads of that `wrk` run.
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Soak: minutes of open-loop traffic.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Soak: requests per second (default: half of what a closed-loop calibration answers).
    #[arg(long)]
    rate: Option<f64>,
    /// Soak: seconds of the closed-loop calibration that measures the maximum.
    #[arg(long, default_value_t = 15)]
    calibrate_seconds: u64,
    /// Soak: seconds the link to central stays up between cuts.
    #[arg(long, default_value_t = 45)]
    link_up_seconds: u64,
    /// Soak: seconds each cut of the link to central lasts.
    #[arg(long, default_value_t = 30)]
    link_down_seconds: u64,
    /// Soak: seconds between two sample rows.
    #[arg(long, default_value_t = 10)]
    sample_seconds: u64,
    /// Where the temporary data directories go (default: the system temp dir). Use a real
    /// disk: on tmpfs an fsync costs nothing and the write numbers mean nothing.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The `aero-edge` binary to measure (default: the one next to aero-bench). Given twice or
    /// more, the builds are compared: each round runs the scenario once per build, in turn,
    /// and a table sets their figures side by side.
    #[arg(long = "edge", value_name = "PATH")]
    edges: Vec<PathBuf>,
    /// Rounds of the scenario per build (see `--edge`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

impl Cli {
    /// The edge builds to run, checked to exist; none for the scenario without an edge.
    fn edge_binaries(&self) -> anyhow::Result<Vec<PathBuf>> {
        if self.scenario == Scenario::Hints {
            anyhow::ensure!(
                self.edges.is_empty() && self.rounds == 1,
                "the hints scenario runs no edge: --edge and --rounds do not apply"
            );
            return Ok(Vec::new());
        }
        if self.edges.is_empty() {
            return Ok(vec![edge::binary()?]);
        }
        anyhow::ensure!(
            self.edges.len() <= compare::MAX_BUILDS,
            "at most {} builds can be compared",
            compare::MAX_BUILDS
        );
        anyhow::ensure!(
            self.scenario != Scenario::Soak || (self.edges.len() == 1 && self.rounds == 1),
            "the soak runs one build once: compare builds with the timed scenarios"
        );
        for edge in &self.edges {
            anyhow::ensure!(edge.is_file(), "{} is not a file", edge.display());
        }
        Ok(self.edges.clone())
    }

    /// The window of a timed load: the unrecorded warm-up, then the measured seconds.
    fn timed(&self) -> load::Stop {
        load::Stop::Timed {
            warmup: Duration::from_secs(self.warmup),
            measure: Duration::from_secs(self.seconds),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Central and the orchestration share one runtime, the load generator has its own; their
    // threads are named so their CPU time can be told apart in /proc/self/task.
    let central_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("central")
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let result = run_all(&cli, &central_rt, load_rt.handle());
    load_rt.shutdown_timeout(Duration::from_secs(1));
    central_rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs the scenario once per build and round, alternating builds within each round (see
/// [`compare::order`]), then compares the builds when there is more than one run.
fn run_all(cli: &Cli, central_rt: &tokio::runtime::Runtime, load: &Handle) -> anyhow::Result<()> {
    let edges = cli.edge_binaries()?;
    if edges.is_empty() {
        return central_rt.block_on(run(cli, load.clone(), None));
    }
    let comparing = edges.len() > 1 || cli.rounds > 1;
    let mut runs = Vec::new();
    for round in 1..=cli.rounds {
        for build in compare::order(round, edges.len()) {
            let edge = &edges[build];
            if comparing {
                println!(
                    "# Round {round} of {}, build {} (`{}`)\n",
                    cli.rounds,
                    compare::letter(build),
                    edge.display()
                );
            }
            central_rt.block_on(run(cli, load.clone(), Some(edge)))?;
            runs.push(compare::Run {
                build,
                rows: measure::take_printed(),
            });
        }
    }
    if comparing {
        compare::print(&edges, &runs);
    }
    Ok(())
}

/// One run of the scenario: the machine and its probes, central seeded, the edge `edge_binary`
/// bootstrapped from it, then the timed loads.
async fn run(cli: &Cli, load: Handle, edge_binary: Option<&Path>) -> anyhow::Result<()> {
    let work_root = cli.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_root)?;
    let work = tempfile::Builder::new()
        .prefix("aero-bench-")
        .tempdir_in(&work_root)?;

    println!("## Machine\n");
    println!("| fact | value |\n|---|---|");
    for (what, value) in procfs::machine_description() {
        println!("| {what} | {value} |");
    }
    let fsync = probes::fsync(work.path())?;
    println!(
        "| fdatasync of a 4 KiB overwrite in the work dir | median {:.2} ms, p99 {:.2} ms |",
        fsync.median, fsync.p99
    );
    let round_trip = probes::loopback_round_trip()?;
    println!(
        "| loopback TCP round trip of 64 bytes (one thread each side) | median {:.1} µs, p99 {:.1} µs |",
        round_trip.median, round_trip.p99
    );
    let json = probes::json_round_trip()?;
    println!(
        "| JSON encode and decode of a customer-sized record, one thread | median {:.2} µs, slowest of 20 batches {:.2} µs |",
        json.median, json.p99
    );
    println!(
        "| load | {} connections, {} s measured after {} s warm-up, load generator on {} thread(s) |",
        cli.connections, cli.seconds, cli.warmup, cli.client_threads
    );
    println!();

    if cli.scenario == Scenario::Hints {
        let central = Central::start(&work.path().join("central")).await?;
        return hints::run(&central, &load, cli.venues, cli.seconds).await;
    }
    let edge_binary = edge_binary.context("every scenario but hints runs an edge")?;

    // Central: one venue under test with a kiosk, and another venue whose customers fill the
    // chain-wide customer list the kiosk searches.
    let mut central = Central::start(&work.path().join("central")).await?;
    let site = central.create_site("Bench venue").await?;
    let other = central.create_site("Seeding venue").await?;
    let kiosk = central.create_device(site, "kiosk").await?;
    let pos = central.create_device(site, "pos").await?;
    let token = central.enrollment_token(site).await?;
    let seeding = central.seed_customers(other, cli.customers).await?;
    let catalog = sales::SalesCatalog::create(&central).await?;
    let jumpers = central.seed_jumpers(other, cli.jumpers).await?;
    let head = central.store.change_head().await?;
    println!(
        "Seeded {} customers into central in {:.1} s (change-log head {head}).\n",
        cli.customers,
        seeding.as_secs_f64()
    );
    flush();

    // Bootstrap: a new edge pulls everything from cursor 0. The soak's edge reaches central
    // through a link it can cut.
    let link = match cli.scenario {
        Scenario::Soak => Some(proxy::TcpProxy::start(central.addr).await),
        _ => None,
    };
    let central_url = link
        .as_ref()
        .map_or_else(|| central.url(), proxy::TcpProxy::url);
    let edge_dir = work.path().join("edge");
    let enroll = edge::enroll(edge_binary, &edge_dir, &central_url, &token)?;
    let started = Instant::now();
    let before = CpuSnapshot::take(None);
    let edge = EdgeProcess::serve(edge_binary, &edge_dir).await?;
    let serving = started.elapsed();
    eprintln!("aero-bench: edge pid {} on {}", edge.pid, edge.addr);
    let status = edge
        .wait_status(
            &kiosk,
            Duration::from_millis(20),
            Duration::from_secs(600),
            |s| s["cursor"].as_i64().is_some_and(|c| c >= head),
        )
        .await?;
    let bootstrap = started.elapsed();
    let cpu = procfs::cpu_between(&before, &CpuSnapshot::take(Some(edge.pid)));
    let rss = procfs::rss(edge.pid)?;
    println!("## Bootstrap of a new edge ({} customers)\n", cli.customers);
    println!("| measure | value |\n|---|---|");
    println!("| `aero-edge enroll` | {:.2} s |", enroll.as_secs_f64());
    println!(
        "| start of `aero-edge serve` to listening | {:.2} s |",
        serving.as_secs_f64()
    );
    println!(
        "| start of `aero-edge serve` to cursor = central head ({head}) | **{:.2} s** (target <= 30 s) |",
        bootstrap.as_secs_f64()
    );
    println!(
        "| edge CPU during bootstrap (whole process lifetime) | {:.2} s |",
        procfs::process_cpu(edge.pid)?
    );
    println!("| central CPU during bootstrap | {:.2} s |", cpu.central);
    println!(
        "| edge RSS after bootstrap / peak | {} / {} |",
        mib(rss.current_kib),
        mib(rss.peak_kib)
    );
    println!("| edge status | `{status}` |");
    println!();
    flush();
    if cli.scenario == Scenario::Bootstrap {
        edge.stop();
        return Ok(());
    }
    if let Some(link) = &link {
        let tablet = central.create_device(site, "tablet").await?;
        let venue = soak::Venue {
            central: &central,
            site,
            edge: &edge,
            kiosk: &kiosk,
            pos: &pos,
            tablet: &tablet,
            catalog: &catalog,
            jumpers: &jumpers,
        };
        soak::run(cli, &load, &venue, link).await?;
        print_edge_log_warnings(&edge);
        edge.stop();
        return Ok(());
    }

    if matches!(cli.scenario, Scenario::All | Scenario::Lookup) {
        lookup::run(cli, &load, &edge, &kiosk).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Writes) {
        writes::run(cli, &load, &edge, &kiosk).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Sales) {
        sales::run(cli, &load, &edge, &pos, &catalog, &jumpers, &mut central).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Plugs) {
        plugs::run(cli, &central, site, &edge).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Drain) {
        drain::run(cli, &load, &edge, &kiosk, &mut central).await?;
    }
    print_edge_log_warnings(&edge);
    edge.stop();
    central.stop().await;
    Ok(())
}

fn print_edge_log_warnings(edge: &EdgeProcess) {
    let text = std::fs::read_to_string(&edge.log).unwrap_or_default();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if !warnings.is_empty() {
        println!(
            "Edge log: {} warning/error lines; the first ones:\n\n```text",
            warnings.len()
        );
        for line in warnings.iter().take(5) {
            println!("{line}");
        }
        println!("```\n");
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn flush() {
    let _ = std::io::stdout().flush();
}

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
//! ```

mod central;
mod edge;
mod hints;
mod load;
mod probes;
mod procfs;
// The end-to-end tests' link proxy, compiled in from their crate rather than copied: it needs
// only tokio, and the soak uses a part of what the tests use.
#[allow(dead_code)]
#[path = "../../tests/src/proxy.rs"]
mod proxy;
mod soak;

use crate::central::{Central, seeded_phone};
use crate::edge::EdgeProcess;
use crate::load::{Expect, MakeRequest, Outcome, Stop};
use crate::procfs::{CpuSnapshot, CpuUse, Rss};
use aero_plugsim::{Fault, Model, SimPlug};
use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::Full;
use hyper::Request;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use uuid::Uuid;

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
    let result = central_rt.block_on(run(&cli, load_rt.handle().clone()));
    load_rt.shutdown_timeout(Duration::from_secs(1));
    central_rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(cli: &Cli, load: Handle) -> anyhow::Result<()> {
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
        "| JSON encode and decode of a customer-sized record, one thread | median {:.2} µs, p99 {:.2} µs |",
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

    // Central: one venue under test with a kiosk, and another venue whose customers fill the
    // chain-wide customer list the kiosk searches.
    let mut central = Central::start(&work.path().join("central")).await?;
    let site = central.create_site("Bench venue").await?;
    let other = central.create_site("Seeding venue").await?;
    let kiosk = central.create_device(site, "kiosk").await?;
    let pos = central.create_device(site, "pos").await?;
    let token = central.enrollment_token(site).await?;
    let seeding = central.seed_customers(other, cli.customers).await?;
    let catalog = SalesCatalog::create(&central).await?;
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
    let enroll = edge::enroll(&edge_dir, &central_url, &token)?;
    let started = Instant::now();
    let before = CpuSnapshot::take(None);
    let edge = EdgeProcess::serve(&edge_dir).await?;
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
        lookup(cli, &load, &edge, &kiosk).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Writes) {
        println!("## Durable writes, central online\n");
        let measured = measure(
            cli,
            &load,
            &edge,
            Stop::Timed {
                warmup: Duration::from_secs(cli.warmup),
                measure: Duration::from_secs(cli.seconds),
            },
            register_request(&edge, &kiosk, 1),
            201,
        )
        .await?;
        print_table(&[("POST /v1/customers, central online", &measured)]);
        let status = edge.status(&kiosk).await?.unwrap_or_default();
        println!(
            "\nOutbox right after the load: {} pending ops (the push loop ran alongside).\n",
            status["pending_ops"]
        );
        flush();
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Sales) {
        sales(cli, &load, &edge, &pos, &catalog, &jumpers, &mut central).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Plugs) {
        plugs(cli, &central, site, &edge).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Drain) {
        drain(cli, &load, &edge, &kiosk, &mut central).await?;
    }
    print_edge_log_warnings(&edge);
    edge.stop();
    Ok(())
}

async fn lookup(cli: &Cli, load: &Handle, edge: &EdgeProcess, kiosk: &str) -> anyhow::Result<()> {
    // The lookup finds what it should before it is timed.
    let probe = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!(
            "http://{}/v1/customers?phone=%2B{}",
            edge.addr,
            &seeded_phone(cli.customers / 2)[1..]
        ))
        .header("x-api-key", kiosk)
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    anyhow::ensure!(
        probe["customers"].as_array().map(Vec::len) == Some(1),
        "the lookup did not find the seeded customer: {probe}"
    );
    println!(
        "## Kiosk lookup, {} customers in the replica\n",
        cli.customers
    );
    let customers = cli.customers.max(1);
    let host = edge.addr.to_string();
    let key = kiosk.to_string();
    let make: MakeRequest = Arc::new(move |r| lookup_request(&host, &key, r % customers));
    let measured = measure(
        cli,
        load,
        edge,
        Stop::Timed {
            warmup: Duration::from_secs(cli.warmup),
            measure: Duration::from_secs(cli.seconds),
        },
        make,
        200,
    )
    .await?;
    print_table(&[("GET /v1/customers?phone=", &measured)]);
    println!();
    if cli.wrk {
        run_wrk(cli, edge, kiosk).await?;
    }
    flush();
    Ok(())
}

/// A kiosk lookup of seeded customer `i` by phone.
fn lookup_request(host: &str, key: &str, i: u64) -> Request<Full<Bytes>> {
    // `%2B` is the `+`; a literal `+` in a query string decodes as a space.
    let phone = &seeded_phone(i)[1..];
    Request::get(format!("/v1/customers?phone=%2B{phone}"))
        .header("host", host)
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// The edge's reconcile period (its default), which the plugs scenario measures against.
const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

async fn plugs(cli: &Cli, central: &Central, site: Uuid, edge: &EdgeProcess) -> anyhow::Result<()> {
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

async fn drain(
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
        Stop::Count(cli.backlog),
        register_request(edge, kiosk, 2),
        201,
    )
    .await?;
    print_table(&[("POST /v1/customers, central offline", &measured)]);
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

/// The products the sales scenario sells.
struct SalesCatalog {
    pass: Uuid,
    socks: Uuid,
}

/// Passes each jumper buys before the check-ins are timed.
const PASSES_PER_JUMPER: u64 = 100;

impl SalesCatalog {
    async fn create(central: &Central) -> anyhow::Result<Self> {
        Ok(Self {
            pass: central
                .create_product(serde_json::json!({
                    "sku": "BENCH-JUMP60", "name": "Jump 60", "kind": "pass",
                    "price_cents": 1500, "duration_minutes": 60,
                }))
                .await?,
            socks: central
                .create_product(serde_json::json!({
                    "sku": "BENCH-SOCKS", "name": "Grip socks", "kind": "addon",
                    "price_cents": 300, "duration_minutes": null,
                }))
                .await?,
        })
    }
}

/// Durable orders and check-ins at the POS. Untimed first: every jumper buys
/// [`PASSES_PER_JUMPER`] passes in one order. Then timed: orders of two passes and a pair of
/// socks paid in cash with change (a random jumper each), and check-ins of a fresh wristband
/// each, round robin over the jumpers (each spends one of their passes).
async fn sales(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    pos: &str,
    catalog: &SalesCatalog,
    jumpers: &[Uuid],
    central: &mut Central,
) -> anyhow::Result<()> {
    println!(
        "## Durable orders and check-ins, central online then offline ({} jumpers with a waiver)\n",
        jumpers.len()
    );
    let seeded = sell_passes(cli, load, edge, pos, catalog, jumpers).await?;
    let jumpers: Arc<Vec<Uuid>> = Arc::new(jumpers.to_vec());
    let post = poster(edge, pos);

    let orders = {
        let (jumpers, post) = (Arc::clone(&jumpers), post.clone());
        let (pass, socks) = (catalog.pass, catalog.socks);
        Arc::new(move |r: u64| {
            let customer = jumpers[(r % jumpers.len() as u64) as usize];
            post("/v1/orders", order_body(customer, pass, socks))
        }) as MakeRequest
    };
    let timed = Stop::Timed {
        warmup: Duration::from_secs(cli.warmup),
        measure: Duration::from_secs(cli.seconds),
    };
    // Wristbands are numbered across both runs: each starts a session of its own.
    let next = Arc::new(AtomicU64::new(0));
    let checkins = {
        let (jumpers, post, pass) = (Arc::clone(&jumpers), post.clone(), catalog.pass);
        Arc::new(move |_| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let customer = jumpers[(n % jumpers.len() as u64) as usize];
            post(
                "/v1/checkins",
                checkin_body(customer, &format!("BENCH-{n}"), pass),
            )
        }) as MakeRequest
    };
    let online_orders = measure(cli, load, edge, timed, Arc::clone(&orders), 201).await?;
    let online_checkins = measure(cli, load, edge, timed, Arc::clone(&checkins), 201).await?;

    // The same sales during an outage: no push, no pull, only the venue's own work.
    edge.wait_outbox_empty(pos, Duration::from_millis(50), Duration::from_secs(300))
        .await?;
    central.stop().await;
    let offline_orders = measure(cli, load, edge, timed, orders, 201).await?;
    let offline_checkins = measure(cli, load, edge, timed, checkins, 201).await?;
    central.restart().await?;
    print_table(&[
        (
            "POST /v1/orders (100 passes per jumper, untimed setup)",
            &seeded,
        ),
        ("POST /v1/orders, central online", &online_orders),
        ("POST /v1/checkins, central online", &online_checkins),
        ("POST /v1/orders, central offline", &offline_orders),
        ("POST /v1/checkins, central offline", &offline_checkins),
    ]);
    println!();
    flush();
    Ok(())
}

/// Builds JSON POSTs to `path` from the device holding `key`.
fn poster(
    edge: &EdgeProcess,
    key: &str,
) -> impl Fn(&str, String) -> Request<Full<Bytes>> + Clone + Send + Sync + 'static {
    let (host, key) = (edge.addr.to_string(), key.to_string());
    move |path: &str, body: String| {
        Request::post(path)
            .header("host", &host)
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    }
}

/// An order of two passes and a pair of socks, paid in cash with change.
fn order_body(customer: Uuid, pass: Uuid, socks: Uuid) -> String {
    format!(
        r#"{{"customer_id":"{customer}","lines":[{{"product_id":"{pass}","quantity":2}},{{"product_id":"{socks}","quantity":1}}],"tenders":[{{"kind":"cash","amount_cents":3300,"received_cents":4000}}]}}"#
    )
}

/// A check-in of `wristband` (unused: one at a time per wristband) spending one pass.
fn checkin_body(customer: Uuid, wristband: &str, pass: Uuid) -> String {
    format!(r#"{{"customer_id":"{customer}","wristband":"{wristband}","product_id":"{pass}"}}"#)
}

/// Untimed: waits until the edge holds the jumpers (and their waivers), then sells each
/// [`PASSES_PER_JUMPER`] passes in one order at the POS, so that they can check in.
async fn sell_passes(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    pos: &str,
    catalog: &SalesCatalog,
    jumpers: &[Uuid],
) -> anyhow::Result<Measured> {
    let jumpers: Arc<Vec<Uuid>> = Arc::new(jumpers.to_vec());
    let post = poster(edge, pos);
    // The edge must hold the jumpers (and their waivers) before it can sell to them.
    let last = *jumpers.last().context("no jumpers")?;
    let probe = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/v1/customers/{last}/balances", edge.addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !probe
        .get(&url)
        .header("x-api-key", pos)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the jumpers never reached the edge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let next = Arc::new(AtomicU64::new(0));
    let passes = {
        let (jumpers, next, post, pass) = (
            Arc::clone(&jumpers),
            Arc::clone(&next),
            post.clone(),
            catalog.pass,
        );
        let amount = 1500 * PASSES_PER_JUMPER;
        Arc::new(move |_| {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize % jumpers.len();
            post(
                "/v1/orders",
                format!(
                    r#"{{"customer_id":"{}","lines":[{{"product_id":"{pass}","quantity":{PASSES_PER_JUMPER}}}],"tenders":[{{"kind":"card","amount_cents":{amount},"reference":"BENCH"}}]}}"#,
                    jumpers[i]
                ),
            )
        }) as MakeRequest
    };
    let seeded = measure(
        cli,
        load,
        edge,
        Stop::Count(jumpers.len() as u64),
        passes,
        201,
    )
    .await?;
    anyhow::ensure!(
        seeded.outcome.ok == jumpers.len() as u64,
        "selling the passes failed: {:?}",
        seeded.outcome.unexpected
    );
    Ok(seeded)
}

/// A registration with a fresh name and phone per request; `tag` keeps scenarios apart.
fn register_request(edge: &EdgeProcess, kiosk: &str, tag: u8) -> MakeRequest {
    let host = edge.addr.to_string();
    let key = kiosk.to_string();
    Arc::new(move |r| {
        let body = register_body(tag, r % 100_000_000);
        Request::post("/v1/customers")
            .header("host", &host)
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    })
}

/// A new customer whose name and phone are unique for each `n` below 10^8 within a `tag`.
fn register_body(tag: u8, n: u64) -> String {
    format!(
        r#"{{"first_name":"Bench","last_name":"Writer{tag}x{n}","birth_date":"1990-01-01","phone":"+44{tag}8{n:08}","email":null}}"#
    )
}

struct Measured {
    outcome: Outcome,
    cpu: CpuUse,
    rss_max_kib: u64,
    rss: Rss,
}

/// Runs one load on the load generator's runtime while sampling the edge's RSS and the CPU
/// time of the edge, the load generator and central over the measurement window.
async fn measure(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    stop: Stop,
    make: MakeRequest,
    expect: u16,
) -> anyhow::Result<Measured> {
    let pid = edge.pid;
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
        outcome,
        cpu,
        rss_max_kib: rss_max.load(Ordering::Relaxed),
        rss: procfs::rss(pid)?,
    })
}

fn print_table(rows: &[(&str, &Measured)]) {
    println!(
        "| load | answered | per second | p50 ms | p99 ms | p99.9 ms | max ms | other answers | edge CPU (cores) | load generator CPU (cores) | central CPU (cores) | rest of machine (cores) | machine busy | edge CPU µs/request | edge RSS max during / VmHWM |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, m) in rows {
        let o = &m.outcome;
        let secs = o.window.as_secs_f64();
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
            m.cpu.edge / o.ok.max(1) as f64 * 1e6,
            mib(m.rss_max_kib),
            mib(m.rss.peak_kib),
        );
    }
}

async fn run_wrk(cli: &Cli, edge: &EdgeProcess, kiosk: &str) -> anyhow::Result<()> {
    let Ok(path) = which("wrk") else {
        println!("(wrk is not installed: `apt-get install -y wrk` to compare.)\n");
        return Ok(());
    };
    let script = edge.log.with_file_name("lookup.lua");
    std::fs::write(
        &script,
        format!(
            r#"math.randomseed(os.time())
request = function()
  local path = string.format("/v1/customers?phone=%%2B4477%08d", math.random(0, {max}))
  return wrk.format("GET", path, {{["x-api-key"] = "{kiosk}"}})
end
"#,
            max = cli.customers.max(1) - 1
        ),
    )?;
    let pid = edge.pid;
    let before = CpuSnapshot::take(Some(pid));
    let output = tokio::process::Command::new(path)
        .args([
            format!("-t{}", cli.wrk_threads),
            format!("-c{}", cli.connections),
            format!("-d{}s", cli.seconds),
            "--latency".to_string(),
            "-s".to_string(),
            script.display().to_string(),
            format!("http://{}/", edge.addr),
        ])
        .output()
        .await?;
    let cpu = procfs::cpu_between(&before, &CpuSnapshot::take(Some(pid)));
    let rss = procfs::rss(pid)?;
    println!(
        "`wrk -t{} -c{} -d{}s --latency` (random seeded phones), same edge; edge CPU {:.2} cores, wrk and the rest of the machine {:.2} cores, machine busy {:.0}%, edge VmHWM {}:\n",
        cli.wrk_threads,
        cli.connections,
        cli.seconds,
        cpu.edge / cli.seconds as f64,
        cpu.rest / cli.seconds as f64,
        cpu.machine_busy * 100.0,
        mib(rss.peak_kib)
    );
    println!("```text\n{}```\n", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found"))
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

//! Kiosk lookups `GET /v1/customers?phone=` with an API key, and the same load from `wrk` when it
//! is installed.

use crate::central::seeded_phone;
use crate::edge::EdgeProcess;
use crate::load::MakeRequest;
use crate::measure::{measure, print_table};
use crate::procfs::{self, CpuSnapshot};
use crate::wrk_floor::{self, Baseline, WrkFigures};
use crate::{Cli, flush, mib};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

pub(crate) async fn run(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    kiosk: &str,
) -> anyhow::Result<()> {
    // The lookup finds what it should before it is timed.
    let answer = reqwest::Client::builder()
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
        .bytes()
        .await?;
    let probe: serde_json::Value = serde_json::from_slice(&answer)?;
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
        "GET /v1/customers?phone=",
        cli.timed(),
        make,
        200,
    )
    .await?;
    print_table(&[&measured]);
    println!();
    if cli.wrk {
        run_wrk(cli, edge, kiosk, answer).await?;
    }
    flush();
    Ok(())
}

/// A kiosk lookup of seeded customer `i` by phone.
pub(crate) fn lookup_request(host: &str, key: &str, i: u64) -> Request<Full<Bytes>> {
    // `%2B` is the `+`; a literal `+` in a query string decodes as a space.
    let phone = &seeded_phone(i)[1..];
    Request::get(format!("/v1/customers?phone=%2B{phone}"))
        .header("host", host)
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// The same lookups from `wrk`, then the same `wrk` against the baseline server of
/// [`wrk_floor`] answering `answer` (one lookup's body): with no work, with half the edge's CPU
/// per lookup under this `wrk`, and with all of it.
pub(crate) async fn run_wrk(
    cli: &Cli,
    edge: &EdgeProcess,
    kiosk: &str,
    answer: Bytes,
) -> anyhow::Result<()> {
    let Ok(wrk) = which("wrk") else {
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
    let report =
        wrk_floor::run_wrk(&wrk, cli, &format!("http://{}/", edge.addr), Some(&script)).await?;
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
    println!("```text\n{report}```\n");
    let Some(edge_figures) = WrkFigures::parse(&report) else {
        return Ok(());
    };
    let edge_cpu =
        Duration::from_secs_f64(cpu.edge / (edge_figures.per_second * cli.seconds as f64).max(1.0));
    println!(
        "The same `wrk` against a baseline server in the bench process (hyper, one runtime worker per core, each request answered with the edge's {} bytes of one lookup; no routing, pipeline, database or JSON):\n",
        answer.len()
    );
    println!("| server | per second | p50 ms | p99 ms |\n|---|---|---|---|");
    let row = |name: &str, f: &WrkFigures| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            f.per_second, f.p50_ms, f.p99_ms
        );
    };
    row("the edge (above)", &edge_figures);
    for (what, work) in [
        ("no work", Duration::ZERO),
        ("half the edge's", edge_cpu / 2),
        ("the edge's under this `wrk`", edge_cpu),
    ] {
        let name = format!(
            "baseline, {:.1} µs of CPU per request ({what})",
            work.as_secs_f64() * 1e6
        );
        let baseline = Baseline::start(answer.clone(), work)?;
        let report =
            wrk_floor::run_wrk(&wrk, cli, &format!("http://{}/", baseline.addr), None).await?;
        drop(baseline);
        match WrkFigures::parse(&report) {
            Some(figures) => row(&name, &figures),
            None => println!("| {name} | wrk's report unreadable: {report:?} | | |"),
        }
    }
    println!();
    Ok(())
}

pub(crate) fn which(name: &str) -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found"))
}

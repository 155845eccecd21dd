//! Central's change hints at chain scale: simulated edges hold the hint socket open and pull as
//! an edge does when hinted, while HQ changes one venue's data once a second. What it costs
//! central, and how many venues woke up and pulled for each change.

use crate::central::Central;
use crate::procfs::{self, CpuSnapshot};
use anyhow::Context;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// What the simulated edges did, summed over all of them.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    hints: AtomicU64,
    pulls: AtomicU64,
    changes_pulled: AtomicU64,
    failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.hints.load(Ordering::Relaxed),
            self.pulls.load(Ordering::Relaxed),
            self.changes_pulled.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        ]
    }
}

pub async fn run(
    central: &Central,
    load: &Handle,
    venues: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    println!(
        "## Change hints: {venues} venues on the hint socket, one venue's data changed per second\n"
    );
    let started = Instant::now();
    let mut sites = Vec::with_capacity(venues);
    for i in 0..venues {
        let site = central.create_site(&format!("Hinted venue {i:03}")).await?;
        let key = central.enroll_edge(site).await?;
        sites.push((site, key));
    }
    eprintln!(
        "aero-bench: {venues} venues enrolled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let counters = Arc::new(Counters::default());
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut edges = Vec::with_capacity(venues);
    for (_, key) in &sites {
        edges.push(load.spawn(simulated_edge(
            central.url(),
            key.clone(),
            http.clone(),
            Arc::clone(&counters),
        )));
    }
    // Every edge is connected and has made the pull its first hint asks for.
    let deadline = Instant::now() + Duration::from_secs(120);
    let settled = loop {
        let [_, pulls, _, failures] = counters.snapshot();
        anyhow::ensure!(failures == 0, "a simulated edge failed while connecting");
        if counters.connected.load(Ordering::Relaxed) == venues as u64 && pulls >= venues as u64 {
            let quiet = counters.snapshot();
            tokio::time::sleep(Duration::from_secs(2)).await;
            if counters.snapshot() == quiet {
                break quiet;
            }
            continue;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the simulated edges did not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let before = CpuSnapshot::take(None);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for i in 0..seconds {
        tick.tick().await;
        let (site, _) = &sites[i as usize % sites.len()];
        central
            .rename_site(*site, &format!("Renamed venue {i}"))
            .await?;
    }
    // The last change's hints and pulls land well within a second on loopback.
    tick.tick().await;
    tick.tick().await;
    let after = CpuSnapshot::take(None);
    let [hints, pulls, pulled, failures] = counters.snapshot();
    let cpu = procfs::cpu_between(&before, &after);
    let measured = (seconds + 2) as f64;
    let (hints, pulls, pulled) = (hints - settled[0], pulls - settled[1], pulled - settled[2]);
    println!("| measure | value |\n|---|---|");
    println!("| venues on the hint socket | {venues} |");
    println!("| changes made (one venue's site renamed per second) | {seconds} |");
    println!(
        "| hints sent | {hints} ({:.1} per change) |",
        hints as f64 / seconds as f64
    );
    println!(
        "| pulls made | {pulls} ({:.1} per change), {pulled} changes pulled |",
        pulls as f64 / seconds as f64
    );
    println!(
        "| central CPU over {measured:.0} s | **{:.3} s** ({:.1} ms per change, {:.3} cores) |",
        cpu.central,
        cpu.central * 1000.0 / seconds as f64,
        cpu.central / measured
    );
    println!("| simulated edges' CPU | {:.3} s |", cpu.loadgen);
    println!("| simulated edge failures | {failures} |");
    println!();
    for edge in edges {
        edge.abort();
    }
    Ok(())
}

/// Holds the hint socket and, for each hint, pulls from its cursor until central says there is
/// no more, as an edge does.
async fn simulated_edge(
    central: String,
    key: String,
    http: reqwest::Client,
    counters: Arc<Counters>,
) {
    if let Err(err) = hinted_pulls(&central, &key, &http, &counters).await {
        eprintln!("aero-bench: a simulated edge stopped: {err:#}");
        counters.failures.fetch_add(1, Ordering::Relaxed);
    }
}

async fn hinted_pulls(
    central: &str,
    key: &str,
    http: &reqwest::Client,
    counters: &Counters,
) -> anyhow::Result<()> {
    let ws = central.replacen("http://", "ws://", 1);
    let mut request = format!("{ws}/v1/sync/notify").into_client_request()?;
    request
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_str(key)?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut cursor = 0i64;
    while let Some(message) = socket.next().await {
        let Message::Text(_) = message? else {
            continue;
        };
        counters.hints.fetch_add(1, Ordering::Relaxed);
        loop {
            let page: serde_json::Value = http
                .get(format!("{central}/v1/sync/pull?after={cursor}"))
                .header("x-api-key", key)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            counters.pulls.fetch_add(1, Ordering::Relaxed);
            let changes = page["changes"].as_array().map_or(0, Vec::len);
            counters
                .changes_pulled
                .fetch_add(changes as u64, Ordering::Relaxed);
            cursor = page["next_cursor"].as_i64().context("next_cursor")?;
            if !page["more"].as_bool().unwrap_or(false) {
                break;
            }
        }
    }
    Ok(())
}

//! Durable orders and check-ins at the POS, central online and then offline, and the catalog and
//! requests they use.

use crate::central::Central;
use crate::edge::EdgeProcess;
use crate::load::{MakeRequest, Stop};
use crate::measure::{Measured, measure, print_table};
use crate::{Cli, flush};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use uuid::Uuid;

/// The products the sales scenario sells.
pub(crate) struct SalesCatalog {
    pub(crate) pass: Uuid,
    pub(crate) socks: Uuid,
}

/// Passes each jumper buys before the check-ins are timed.
pub(crate) const PASSES_PER_JUMPER: u64 = 100;

impl SalesCatalog {
    pub(crate) async fn create(central: &Central) -> anyhow::Result<Self> {
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
pub(crate) async fn run(
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
    let timed = cli.timed();
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
    let online_orders = measure(
        cli,
        load,
        edge,
        "POST /v1/orders, central online",
        timed,
        Arc::clone(&orders),
        201,
    )
    .await?;
    let online_checkins = measure(
        cli,
        load,
        edge,
        "POST /v1/checkins, central online",
        timed,
        Arc::clone(&checkins),
        201,
    )
    .await?;

    // The same sales during an outage: no push, no pull, only the venue's own work.
    edge.wait_outbox_empty(pos, Duration::from_millis(50), Duration::from_secs(300))
        .await?;
    central.stop().await;
    let offline_orders = measure(
        cli,
        load,
        edge,
        "POST /v1/orders, central offline",
        timed,
        orders,
        201,
    )
    .await?;
    let offline_checkins = measure(
        cli,
        load,
        edge,
        "POST /v1/checkins, central offline",
        timed,
        checkins,
        201,
    )
    .await?;
    central.restart().await?;
    print_table(&[
        &seeded,
        &online_orders,
        &online_checkins,
        &offline_orders,
        &offline_checkins,
    ]);
    println!();
    flush();
    Ok(())
}

/// Builds JSON POSTs to `path` from the device holding `key`.
pub(crate) fn poster(
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
pub(crate) fn order_body(customer: Uuid, pass: Uuid, socks: Uuid) -> String {
    format!(
        r#"{{"customer_id":"{customer}","lines":[{{"product_id":"{pass}","quantity":2}},{{"product_id":"{socks}","quantity":1}}],"tenders":[{{"kind":"cash","amount_cents":3300,"received_cents":4000}}]}}"#
    )
}

/// A check-in of `wristband` (unused: one at a time per wristband) spending one pass.
pub(crate) fn checkin_body(customer: Uuid, wristband: &str, pass: Uuid) -> String {
    format!(r#"{{"customer_id":"{customer}","wristband":"{wristband}","product_id":"{pass}"}}"#)
}

/// Untimed: waits until the edge holds the jumpers (and their waivers), then sells each
/// [`PASSES_PER_JUMPER`] passes in one order at the POS, so that they can check in.
pub(crate) async fn sell_passes(
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
        "POST /v1/orders (100 passes per jumper, untimed setup)",
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

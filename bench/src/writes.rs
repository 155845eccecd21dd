//! Durable registrations `POST /v1/customers` with central online, and the registration requests
//! other scenarios send.

use crate::edge::EdgeProcess;
use crate::load::MakeRequest;
use crate::measure::{measure, print_table};
use crate::{Cli, flush};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Durable registrations, central online, so the push loop (and the pull of the same customers
/// back from central) runs alongside.
pub(crate) async fn run(
    cli: &Cli,
    load: &Handle,
    edge: &EdgeProcess,
    kiosk: &str,
) -> anyhow::Result<()> {
    println!("## Durable writes, central online\n");
    let measured = measure(
        cli,
        load,
        edge,
        "POST /v1/customers, central online",
        cli.timed(),
        register_request(edge, kiosk, 1),
        201,
    )
    .await?;
    print_table(&[&measured]);
    let status = edge.status(kiosk).await?.unwrap_or_default();
    println!(
        "\nOutbox right after the load: {} pending ops (the push loop ran alongside).\n",
        status["pending_ops"]
    );
    flush();
    Ok(())
}

/// A registration with a fresh name and phone per request; `tag` keeps scenarios apart.
pub(crate) fn register_request(edge: &EdgeProcess, kiosk: &str, tag: u8) -> MakeRequest {
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
pub(crate) fn register_body(tag: u8, n: u64) -> String {
    format!(
        r#"{{"first_name":"Bench","last_name":"Writer{tag}x{n}","birth_date":"1990-01-01","phone":"+44{tag}8{n:08}","email":null}}"#
    )
}

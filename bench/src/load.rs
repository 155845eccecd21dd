//! A lean HTTP/1.1 load generator: one task per connection, each sending keep-alive requests
//! back to back over `hyper`'s connection-level client (no pool, no per-request URL parsing),
//! recording every latency into an HDR histogram.
//!
//! reqwest costs several times more CPU per request; on a 2-core machine shared with the server
//! that cost would be measured as the server's slowness.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Builds the next request from a per-connection random number.
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// When the load stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Run `warmup` unrecorded, then record for `measure`.
    Timed { warmup: Duration, measure: Duration },
    /// Send exactly this many requests in total (all recorded).
    Count(u64),
}

/// What a load run observed inside its measurement window.
#[derive(Debug)]
pub struct Outcome {
    /// Requests answered with the expected status inside the window.
    pub ok: u64,
    /// Other statuses, by code.
    pub unexpected: BTreeMap<u16, u64>,
    /// Connection or protocol errors.
    pub failures: u64,
    pub window: Duration,
    /// Latency of the expected answers, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

struct ConnResult {
    ok: u64,
    unexpected: BTreeMap<u16, u64>,
    failures: u64,
    hist: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `connections` keep-alive connections against `addr` until `stop`.
pub async fn run(
    addr: SocketAddr,
    connections: usize,
    stop: Stop,
    make: MakeRequest,
    expect: u16,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (record_from, end) = match stop {
        Stop::Timed { warmup, measure } => (started + warmup, Some(started + warmup + measure)),
        Stop::Count(_) => (started, None),
    };
    let budget = match stop {
        Stop::Count(n) => Some(Arc::new(AtomicU64::new(n))),
        Stop::Timed { .. } => None,
    };
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        let make = Arc::clone(&make);
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            connection(addr, index as u64, make, expect, record_from, end, budget).await
        }));
    }
    let mut total = ConnResult {
        ok: 0,
        unexpected: BTreeMap::new(),
        failures: 0,
        hist: histogram(),
    };
    for task in tasks {
        let result = task.await??;
        total.ok += result.ok;
        total.failures += result.failures;
        for (status, n) in result.unexpected {
            *total.unexpected.entry(status).or_default() += n;
        }
        total.hist.add(&result.hist)?;
    }
    let window = match stop {
        Stop::Timed { measure, .. } => measure,
        Stop::Count(_) => started.elapsed(),
    };
    Ok(Outcome {
        ok: total.ok,
        unexpected: total.unexpected,
        failures: total.failures,
        window,
        latency_us: total.hist,
    })
}

async fn connection(
    addr: SocketAddr,
    index: u64,
    make: MakeRequest,
    expect: u16,
    record_from: Instant,
    end: Option<Instant>,
    budget: Option<Arc<AtomicU64>>,
) -> anyhow::Result<ConnResult> {
    let mut result = ConnResult {
        ok: 0,
        unexpected: BTreeMap::new(),
        failures: 0,
        hist: histogram(),
    };
    let mut rng = XorShift::new(index);
    let mut sender = None;
    loop {
        if let Some(budget) = &budget {
            // Take one request from the shared budget; stop when it is spent.
            if budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                break;
            }
        }
        if end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if sender.is_none() {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender = Some(tx);
        }
        let Some(tx) = sender.as_mut() else {
            unreachable!("connected above");
        };
        let request = make(rng.next());
        let start = Instant::now();
        let outcome = async {
            tx.ready().await?;
            let response = tx.send_request(request).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        let elapsed = start.elapsed();
        let recorded = start >= record_from && end.is_none_or(|end| start < end);
        match outcome {
            Ok(status) if status == expect => {
                if recorded {
                    result.ok += 1;
                    result
                        .hist
                        .saturating_record(elapsed.as_micros().max(1) as u64);
                }
            }
            Ok(status) => {
                if recorded {
                    *result.unexpected.entry(status).or_default() += 1;
                }
            }
            Err(_) => {
                if recorded {
                    result.failures += 1;
                }
                // Reconnect; do not spin if the server is gone.
                sender = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(result)
}

/// A tiny xorshift64*: request parameters need spread, not cryptographic quality.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

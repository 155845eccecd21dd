//! A lean HTTP/1.1 load generator over `hyper`'s connection-level client (no per-request URL
//! parsing). Closed loop ([`run`]): one task per connection sending keep-alive requests back to
//! back, every latency into an HDR histogram. Open loop ([`run_open`]): requests scheduled at a
//! fixed rate whatever the answers do, over a pool of keep-alive connections, each latency
//! counted from the moment the request was due, so waiting for a free connection is included.
//!
//! reqwest costs several times more CPU per request; on a 2-core machine shared with the server
//! that cost would be measured as the server's slowness.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Builds the next request from a per-connection random number.
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Which answers count as the expected ones.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Any 2xx (a mix of reads and writes).
    Success,
}

impl Expect {
    fn accepts(self, status: u16) -> bool {
        match self {
            Self::Status(expected) => status == expected,
            Self::Success => (200..300).contains(&status),
        }
    }
}

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

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `connections` keep-alive connections against `addr` until `stop`.
pub async fn run(
    addr: SocketAddr,
    connections: usize,
    stop: Stop,
    make: MakeRequest,
    expect: Expect,
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
    expect: Expect,
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
            Ok(status) if expect.accepts(status) => {
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

/// An open-loop schedule: `rate` requests per second for `duration`, whatever the answers do.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    pub rate: f64,
    pub duration: Duration,
    /// Keep-alive connections in the pool: at most this many requests in flight.
    pub connections: usize,
    /// A request sent more than this after it was due counts as late.
    pub late_after: Duration,
    /// Due requests still waiting for a connection beyond which the next one is not sent at
    /// all (missed): the client has fallen this far behind its schedule.
    pub max_waiting: usize,
    /// An answer slower than this is abandoned and its connection closed.
    pub timeout: Duration,
}

/// What became of one scheduled request.
#[derive(Clone, Copy, Debug)]
pub enum Sent {
    /// Answered with `status`; `latency` is from when it was due to the end of the body.
    Answered {
        status: u16,
        latency: Duration,
        late: bool,
    },
    /// No answer: connecting, sending or reading failed, or [`OpenLoop::timeout`] passed.
    Failed {
        why: &'static str,
        latency: Duration,
        late: bool,
    },
    /// Never sent: too many requests were already waiting for a connection.
    Missed,
}

/// Told about every scheduled request: its random number (the one `make` built it from) and
/// what became of it.
pub type Report = Arc<dyn Fn(u64, Sent) + Send + Sync>;

type Sender = http1::SendRequest<Full<Bytes>>;

/// Idle keep-alive connections, used first in first out so that each one carries traffic
/// often and none sits idle long enough for the server to close it.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<VecDeque<Sender>>,
    /// One permit per connection: a request holds one while in flight.
    slots: Semaphore,
    waiting: AtomicUsize,
}

impl Pool {
    async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(tx)
    }

    /// An idle connection that is still open, or a new one.
    async fn checkout(&self) -> anyhow::Result<Sender> {
        loop {
            let idle = self.idle.lock().expect("pool lock").pop_front();
            match idle {
                Some(mut tx) => {
                    // Closed by the server while idle: the request was not sent, take another.
                    if tx.ready().await.is_ok() {
                        return Ok(tx);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, tx: Sender) {
        self.idle.lock().expect("pool lock").push_back(tx);
    }
}

/// Sends `make(r)` requests to `addr` on the [`OpenLoop`] schedule and tells `report` about
/// each; returns once every request sent has been answered or has failed.
pub async fn run_open(
    addr: SocketAddr,
    plan: OpenLoop,
    make: MakeRequest,
    report: Report,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.rate > 0.0 && plan.connections > 0,
        "an open loop needs a rate and connections"
    );
    let pool = Arc::new(Pool {
        addr,
        idle: Mutex::new(VecDeque::new()),
        slots: Semaphore::new(plan.connections),
        waiting: AtomicUsize::new(0),
    });
    let total = (plan.rate * plan.duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let mut rng = XorShift::new(u64::MAX);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let r = rng.next();
        if pool.waiting.load(Ordering::Relaxed) >= plan.max_waiting {
            report(r, Sent::Missed);
            continue;
        }
        pool.waiting.fetch_add(1, Ordering::Relaxed);
        let request = make(r);
        let (pool, report) = (Arc::clone(&pool), Arc::clone(&report));
        tokio::spawn(async move {
            let permit = pool.slots.acquire().await;
            pool.waiting.fetch_sub(1, Ordering::Relaxed);
            let late = due.elapsed() > plan.late_after;
            let sent = match tokio::time::timeout(plan.timeout, exchange(&pool, request)).await {
                Ok(Ok(status)) => Sent::Answered {
                    status,
                    latency: due.elapsed(),
                    late,
                },
                Ok(Err(why)) => Sent::Failed {
                    why,
                    latency: due.elapsed(),
                    late,
                },
                Err(_) => Sent::Failed {
                    why: "timeout",
                    latency: due.elapsed(),
                    late,
                },
            };
            drop(permit);
            report(r, sent);
        });
    }
    // The semaphore is fair: all of it is granted once every request queued before is done.
    let permits = u32::try_from(plan.connections)?;
    let _all = pool.slots.acquire_many(permits).await?;
    Ok(())
}

/// One request on a pooled connection; the connection goes back to the pool only after a
/// complete answer.
async fn exchange(pool: &Pool, request: Request<Full<Bytes>>) -> Result<u16, &'static str> {
    let mut tx = pool.checkout().await.map_err(|_| "connect")?;
    let response = tx.send_request(request).await.map_err(|_| "send")?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|_| "read body")?;
    pool.checkin(tx);
    Ok(status)
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

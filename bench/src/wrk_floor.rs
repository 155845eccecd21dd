//! What `wrk` itself leaves a server on this machine: the same `wrk` command that measured the
//! edge, run against a baseline server in this process that answers every request with the
//! edge's own bytes and does nothing else (no routing, pipeline, database or JSON), then against
//! the same server burning, per request, half the CPU the edge spent on one lookup, and all of it.
//!
//! On two cores `wrk`'s threads and the server's share the machine, and the latency `wrk` sees is
//! as much the kernel's scheduling of the four threads as the server's work. A baseline that
//! does no work shows the most answers the machine allows (and a p99 that is no better for it:
//! a few answers wait for a scheduler tick); one that burns the edge's CPU shows what
//! an edge with nothing but that CPU would measure, and half of it what an edge twice as lean
//! would.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Latency and rate of one `wrk --latency` run, read from its report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrkFigures {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkFigures {
    /// Reads `Requests/sec:` and the 50% and 99% lines of the latency distribution.
    pub fn parse(report: &str) -> Option<Self> {
        let mut per_second = None;
        let (mut p50_ms, mut p99_ms) = (None, None);
        for line in report.lines().map(str::trim) {
            if let Some(rate) = line.strip_prefix("Requests/sec:") {
                per_second = rate.trim().parse().ok();
            } else if let Some(latency) = line.strip_prefix("50%") {
                p50_ms = milliseconds(latency.trim());
            } else if let Some(latency) = line.strip_prefix("99%") {
                p99_ms = milliseconds(latency.trim());
            }
        }
        Some(Self {
            per_second: per_second?,
            p50_ms: p50_ms?,
            p99_ms: p99_ms?,
        })
    }
}

/// A `wrk` duration (`112.00us`, `1.08ms`, `1.20s`) in milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// Runs `wrk` with the bench's threads, connections and duration against `url`, with `script`
/// if given; returns its report.
pub async fn run_wrk(
    wrk: &Path,
    cli: &crate::Cli,
    url: &str,
    script: Option<&Path>,
) -> anyhow::Result<String> {
    let mut args = vec![
        format!("-t{}", cli.wrk_threads),
        format!("-c{}", cli.connections),
        format!("-d{}s", cli.seconds),
        "--latency".to_string(),
    ];
    if let Some(script) = script {
        args.extend(["-s".to_string(), script.display().to_string()]);
    }
    args.push(url.to_string());
    let output = tokio::process::Command::new(wrk)
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The baseline server: as many runtime workers as the edge has (one per core), each request
/// answered `200` with `body` as JSON after burning `work` of the worker thread's CPU.
pub struct Baseline {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Baseline {
    pub fn start(body: Bytes, work: Duration) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("baseline-worker")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("baseline".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = serve(listener, body, work) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, body: Bytes, work: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let answer = service_fn(move |_request| {
                let body = body.clone();
                async move {
                    burn_thread_cpu(work);
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .expect("a fixed response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}

/// Spins until this thread has run for `work` more CPU time (time it spends preempted does not
/// count, so the cost per request is the same however busy the machine is).
fn burn_thread_cpu(work: Duration) {
    if work.is_zero() {
        return;
    }
    let start = thread_cpu();
    while thread_cpu().saturating_sub(start) < work {
        std::hint::spin_loop();
    }
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_gives_its_rate_and_percentiles_in_milliseconds() {
        let report = "Running 10s test @ http://127.0.0.1:41361/\n  2 threads and 32 connections\n  Latency Distribution\n     50%  112.00us\n     75%    1.47ms\n     90%    1.90ms\n     99%    2.94ms\n  275112 requests in 10.00s, 226.37MB read\nRequests/sec:  27498.59\nTransfer/sec:     22.63MB\n";
        assert_eq!(
            WrkFigures::parse(report),
            Some(WrkFigures {
                per_second: 27498.59,
                p50_ms: 0.112,
                p99_ms: 2.94,
            })
        );
        assert_eq!(WrkFigures::parse("wrk: connection refused"), None);
    }

    #[test]
    fn burning_cpu_takes_at_least_the_time_asked_for() {
        let start = thread_cpu();
        burn_thread_cpu(Duration::from_micros(300));
        assert!(thread_cpu() - start >= Duration::from_micros(300));
    }
}

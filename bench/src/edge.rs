//! The edge under test, run as its own process (the release `aero-edge` binary next to this
//! one, or one given with `--edge`) so its memory and CPU can be read from /proc without the
//! load generator mixed in.

use anyhow::Context;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `aero-edge` binary built alongside this one (`cargo build --release --workspace`).
pub fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let edge = dir.join("aero-edge");
    anyhow::ensure!(
        edge.exists(),
        "{} not found: run `cargo build --release --workspace` first",
        edge.display()
    );
    Ok(edge)
}

/// Environment every benchmarked edge runs with: rate limits far above the offered load (one
/// kiosk key sends everything), and a 1 s backoff cap so the drain measures throughput rather
/// than the default 60 s cap of an edge that has been offline for a while.
pub fn bench_env() -> Vec<(&'static str, String)> {
    vec![
        ("AERO_LIMITS__REQUESTS_PER_SECOND", "10000000".into()),
        ("AERO_LIMITS__BURST", "10000000".into()),
        ("AERO_SYNC__BACKOFF_MAX_SECS", "1".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// `aero-edge enroll` into `data_dir`, with the edge binary `binary`.
pub fn enroll(
    binary: &Path,
    data_dir: &Path,
    central_url: &str,
    token: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = Command::new(binary)
        .args(["enroll", "--central", central_url, "--token", token])
        .env("AERO_DATA_DIR", data_dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "aero-edge enroll failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(started.elapsed())
}

pub struct EdgeProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl EdgeProcess {
    /// Starts `binary serve` on a loopback port it picks itself and waits for its address.
    pub async fn serve(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let log = data_dir.join("edge.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .arg("serve")
            .env("AERO_DATA_DIR", data_dir)
            .env("AERO_LISTEN", "127.0.0.1:0")
            .envs(bench_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let pid = child.id();
        let mut edge = Self {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&edge.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(|l| {
                l.strip_prefix("aero-edge serving http://")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
            }) {
                edge.addr = addr;
                return Ok(edge);
            }
            if let Some(status) = edge.child.try_wait()? {
                anyhow::bail!("aero-edge exited ({status}) before serving:\n{text}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "aero-edge did not start:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `GET /v1/status` with a device key; `None` until the key is known at the edge.
    pub async fn status(&self, api_key: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .http
            .get(format!("http://{}/v1/status", self.addr))
            .header("x-api-key", api_key)
            .send()
            .await?;
        if response.status().as_u16() != 200 {
            return Ok(None);
        }
        Ok(Some(response.json().await?))
    }

    /// Polls the status every `every` until the outbox is empty, or fails after `limit`.
    pub async fn wait_outbox_empty(
        &self,
        api_key: &str,
        every: Duration,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_status(api_key, every, limit, |s| {
            s["pending_ops"].as_i64() == Some(0)
        })
        .await
    }

    /// Polls the status every `every` until `done` holds, or fails after `limit`.
    pub async fn wait_status(
        &self,
        api_key: &str,
        every: Duration,
        limit: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.status(api_key).await
                && done(&status)
            {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "gave up after {limit:?}; last status: {:?}",
                self.status(api_key).await.ok().flatten()
            );
            tokio::time::sleep(every).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    pub fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.pid).unwrap_or(0);
        if pid > 0 {
            // SAFETY: signalling our own child, whose pid has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

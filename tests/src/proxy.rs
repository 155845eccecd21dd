//! A TCP proxy on loopback between an edge and central, for link failures the caller controls:
//! cut every live connection and refuse new ones for a while (a flapping link), and watch or
//! hold the edge's pull requests as they pass (it reads the request line, nothing more).
//!
//! It needs nothing but tokio, so `aero-bench` compiles this same file into its soak scenario.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PULL_REQUEST: &[u8] = b"GET /v1/sync/pull?after=";

/// Finds `GET /v1/sync/pull?after=N` request lines in a byte stream that arrives in
/// arbitrary chunks, reporting each `N` once.
#[derive(Debug, Default)]
pub struct PullScanner {
    tail: Vec<u8>,
}

impl PullScanner {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<i64> {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(chunk);
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = find(&buf[from..], PULL_REQUEST).map(|i| from + i) {
            let digits_start = at + PULL_REQUEST.len();
            let digits = buf[digits_start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = digits_start + digits;
            if end == buf.len() {
                // The number may continue in the next chunk.
                self.tail = buf[at..].to_vec();
                return found;
            }
            if let Some(n) = std::str::from_utf8(&buf[digits_start..end])
                .ok()
                .and_then(|t| t.parse().ok())
            {
                found.push(n);
            }
            from = end;
        }
        // Keep what could be the start of a request line split across chunks; a complete
        // match is longer than this, so nothing is reported twice.
        let keep = (PULL_REQUEST.len() - 1).min(buf.len() - from);
        self.tail = buf[buf.len() - keep..].to_vec();
        found
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Bumped to drop every live connection.
    generation: watch::Sender<u64>,
    refuse_until: Mutex<Option<Instant>>,
    /// Set by [`TcpProxy::stall`]: connections are accepted and never answered.
    stalling: std::sync::atomic::AtomicBool,
    /// `None`: pulls pass. `Some(n)`: n more pulls pass, then they are held.
    pull_budget: watch::Sender<Option<usize>>,
    /// The `after` of every pull forwarded, in order.
    pulls: Mutex<Vec<i64>>,
    held: AtomicUsize,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

/// Dropping it stops accepting; live connections end with the test's runtime.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Binds a loopback port (so it is accepting before anyone is told about it) and
    /// forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            generation: watch::channel(0).0,
            refuse_until: Mutex::new(None),
            stalling: std::sync::atomic::AtomicBool::new(false),
            pull_budget: watch::channel(None).0,
            pulls: Mutex::new(Vec::new()),
            held: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every live connection and, for `refuse_for`, closes new ones right after
    /// accepting them: to a client, the link is down.
    pub fn cut_all(&self, refuse_for: Duration) {
        *self.shared.refuse_until.lock().expect("lock") = Some(Instant::now() + refuse_for);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Drops every live connection, then accepts new ones and never forwards or answers
    /// anything on them: to a client, a dead link where requests hang until they time out.
    pub fn stall(&self) {
        self.shared.stalling.store(true, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Lets `n` more pull requests through, then holds every further one (unanswered)
    /// until [`TcpProxy::release_pulls`].
    pub fn hold_pulls_after(&self, n: usize) {
        self.shared.pull_budget.send_replace(Some(n));
    }

    pub fn release_pulls(&self) {
        self.shared.pull_budget.send_replace(None);
    }

    /// Pull requests currently held.
    pub fn held_pulls(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// The `after` of every pull forwarded since the last call, in order.
    pub fn take_pull_afters(&self) -> Vec<i64> {
        std::mem::take(&mut *self.shared.pulls.lock().expect("lock"))
    }

    /// Ends a [`TcpProxy::cut_all`] early: new connections are forwarded again.
    pub fn reopen(&self) {
        *self.shared.refuse_until.lock().expect("lock") = None;
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed right after accepting, while the link was down.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// How many times [`TcpProxy::cut_all`] ran.
    pub fn cuts(&self) -> u64 {
        *self.shared.generation.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let refusing = shared
            .refuse_until
            .lock()
            .expect("lock")
            .is_some_and(|until| Instant::now() < until);
        if refusing {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        if shared.stalling.load(Ordering::SeqCst) {
            // Held open, silent, until the proxy is dropped.
            let mut dropped = shared.generation.subscribe();
            tokio::spawn(async move {
                let _client = client;
                let _ = dropped.changed().await;
            });
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        // Subscribed before spawning: a cut from now on ends this connection.
        let cut = shared.generation.subscribe();
        tokio::spawn(forward(client, Arc::clone(&shared), cut));
    }
}

async fn forward(client: TcpStream, shared: Arc<Shared>, mut cut: watch::Receiver<u64>) {
    let relay = async {
        let Ok(server) = TcpStream::connect(shared.upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let upstream = async {
            let mut scanner = PullScanner::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for after in scanner.feed(&buf[..n]) {
                    admit_pull(&shared).await;
                    shared.pulls.lock().expect("lock").push(after);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = server_write.shutdown().await;
        };
        let downstream = async {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        tokio::join!(upstream, downstream);
    };
    tokio::select! {
        () = relay => {}
        _ = cut.changed() => {}
    }
}

/// Waits until the pull budget lets one more pull through, and takes it.
async fn admit_pull(shared: &Shared) {
    let mut budget = shared.pull_budget.subscribe();
    let mut held: Option<HeldGuard<'_>> = None;
    loop {
        let admitted = shared.pull_budget.send_if_modified(|b| match b {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        });
        if admitted {
            return;
        }
        held.get_or_insert_with(|| {
            shared.held.fetch_add(1, Ordering::SeqCst);
            HeldGuard(&shared.held)
        });
        if budget.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Counts a held pull until it is admitted or its connection is cut.
struct HeldGuard<'a>(&'a AtomicUsize);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::PullScanner;

    #[test]
    fn finds_pull_requests_split_across_chunks_once() {
        let stream = b"POST /v1/sync/push HTTP/1.1\r\n\r\n{}GET /v1/sync/pull?after=0&limit=5 HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/sync/pull?after=1234&limit=5 HTTP/1.1\r\n\r\nGET /v1/sync/notify HTTP/1.1\r\n\r\nGET /v1/sync/pull?after=99 HTTP/1.1\r\n";
        for size in 1..stream.len() {
            let mut scanner = PullScanner::default();
            let found: Vec<i64> = stream
                .chunks(size)
                .flat_map(|chunk| scanner.feed(chunk))
                .collect();
            assert_eq!(found, [0, 1234, 99], "chunk size {size}");
        }
    }
}

//! Serving a router on a bound listener: our own accept loop over hyper (HTTP/1.1 with
//! upgrades, so websockets work), a connection limit, a header read timeout, optional TLS, and a
//! shutdown that drains in-flight requests and then closes what is still open at a deadline.

pub mod tls;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The most connections a service may be configured to hold open.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// First pause after a failed accept (out of file descriptors, say); doubled up to the maximum
/// while accepts keep failing, so a starved process does not spin on the listener.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Once connections are told to close at the drain deadline, how long their tasks get to drop
/// their sockets before the server returns anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How connections are served; the `[server]` table of both services' configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Most connections open at once (websockets, once upgraded, are bounded by their own
    /// limit instead). Past it, new connections wait in the listen backlog until one closes;
    /// the open ones are not disturbed.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, or its connection is closed:
    /// one that trickles bytes must not hold a connection slot. It also bounds the TLS
    /// handshake and how long an idle keep-alive connection is kept.
    pub header_read_timeout_secs: u64,
    /// On shutdown, how long requests already running get to finish; connections still open
    /// then are closed and the process goes on stopping.
    pub drain_deadline_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::with_max_connections(1024)
    }
}

impl ServerSettings {
    /// The defaults with a service's own connection limit.
    pub const fn with_max_connections(max_connections: usize) -> Self {
        Self {
            max_connections,
            header_read_timeout_secs: 10,
            drain_deadline_secs: 10,
        }
    }

    /// Range rules, as `(dotted key, problem)` for [`crate::settings::Layered::problems`].
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            problems.push((
                "server.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if !(1..=3600).contains(&self.header_read_timeout_secs) {
            problems.push((
                "server.header_read_timeout_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if self.drain_deadline_secs > 3600 {
            problems.push(("server.drain_deadline_secs", "must be at most 3600".into()));
        }
        problems
    }

    /// These settings as serving options, without TLS.
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            drain_deadline: Duration::from_secs(self.drain_deadline_secs),
            tls: None,
        }
    }
}

/// What [`serve_with`] needs: [`ServerSettings`] in their runtime form (tests use sub-second
/// timeouts), and the TLS acceptor when the service speaks HTTPS.
#[derive(Clone)]
pub struct ServeOptions {
    /// See [`ServerSettings::max_connections`].
    pub max_connections: usize,
    /// See [`ServerSettings::header_read_timeout_secs`]; also bounds the TLS handshake.
    pub header_read_timeout: Duration,
    /// See [`ServerSettings::drain_deadline_secs`].
    pub drain_deadline: Duration,
    /// `Some`: every connection must complete a TLS handshake first; plain HTTP is dropped.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServerSettings::default().options()
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("drain_deadline", &self.drain_deadline)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its running request and closed within the deadline.
    Complete,
    /// The deadline ran out with this many connections still open; they were closed.
    Closed(usize),
}

/// Where the server is in its life; every connection task watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the running request, then close (idle keep-alive connections close at once).
    Draining,
    /// The drain deadline passed: close now.
    Closing,
}

/// [`serve_with`] on default options, for tests and tools that need no deadline of their own.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeOptions::default())
        .await
        .map(|_| ())
}

/// Serves until `shutdown` resolves. The caller binds the listener first, so tests know the
/// port before anything runs.
///
/// Each connection holds one of `max_connections` permits from before it is accepted until it
/// closes (or is upgraded to a websocket, which leaves HTTP behind). On shutdown the listener
/// closes, idle connections end, and running requests have `drain_deadline` to finish;
/// connections still open then are closed, counted in [`Drained::Closed`].
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<Drained> {
    let max = options.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let shared = Arc::new(Shared {
        http,
        router,
        tls: options.tls,
        handshake_timeout: options.header_read_timeout,
        phase: phase_rx,
    });
    tokio::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        match accepted {
            Ok((stream, peer, slot)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tokio::spawn(Arc::clone(&shared).connection(stream, peer, slot));
            }
            Err(err) => {
                tracing::warn!(error = %err, pause_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let open = max - slots.available_permits();
    tracing::info!(
        open,
        drain_deadline_secs = options.drain_deadline.as_secs_f64(),
        "shutting down: no longer accepting, finishing running requests"
    );
    let _ = phase_tx.send(Phase::Draining);
    if tokio::time::timeout(options.drain_deadline, slots.acquire_many(all))
        .await
        .is_ok()
    {
        return Ok(Drained::Complete);
    }
    let open = max - slots.available_permits();
    tracing::warn!(
        closing = open,
        drain_deadline_secs = options.drain_deadline.as_secs_f64(),
        "drain deadline over: closing connections still open"
    );
    let _ = phase_tx.send(Phase::Closing);
    // Dropping a connection's future closes its socket; this waits for the tasks to do it.
    let _ = tokio::time::timeout(CLOSE_WAIT, slots.acquire_many(all)).await;
    Ok(Drained::Closed(open))
}

/// Waits for a free slot, then for a connection: past the limit, new clients wait in the
/// kernel's backlog rather than being accepted and starved.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let Ok(slot) = Arc::clone(slots).acquire_owned().await else {
        unreachable!("the connection semaphore is never closed")
    };
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, slot))
}

/// What every connection task reads.
struct Shared {
    /// HTTP/1.1 with the header read timeout; built once, used by reference per connection.
    http: http1::Builder,
    router: Router,
    /// Set when every connection must speak TLS first.
    tls: Option<TlsAcceptor>,
    /// A handshake that trickles is the same attack as headers that do.
    handshake_timeout: Duration,
    /// Tells each connection to drain, then to close.
    phase: watch::Receiver<Phase>,
}

impl Shared {
    /// Serves one connection, holding its slot until the connection ends.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        // Requests and answers are small and interactive: no Nagle delay on answers.
        let _ = stream.set_nodelay(true);
        let mut phase = self.phase.clone();
        match &self.tls {
            None => self.http_on(TokioIo::new(stream), peer, &mut phase).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream));
                let tls = tokio::select! {
                    done = handshake => done,
                    () = reached(&mut phase, |p| *p != Phase::Serving) => return,
                };
                match tls {
                    Ok(Ok(stream)) => self.http_on(TokioIo::new(stream), peer, &mut phase).await,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
        drop(slot);
    }

    async fn http_on<I>(&self, io: TokioIo<I>, peer: SocketAddr, phase: &mut watch::Receiver<Phase>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = PerConnection {
            router: self.router.clone(),
            peer: ConnectInfo(peer),
        };
        let conn = self.http.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            () = reached(phase, |p| *p != Phase::Serving) => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    served = conn.as_mut() => served,
                    () = reached(phase, |p| *p == Phase::Closing) => return,
                }
            }
        };
        if let Err(err) = served {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
    }
}

/// Resolves once the server's phase satisfies `reached` (or the server is gone). The borrow of
/// the phase ends here: a select arm that held it would block the next phase change.
async fn reached(phase: &mut watch::Receiver<Phase>, reached: impl FnMut(&Phase) -> bool) {
    let _ = phase.wait_for(reached).await;
}

/// The router as hyper calls it on one connection: each request gets the peer's address, as
/// `into_make_service_with_connect_info` would give it.
struct PerConnection {
    router: Router,
    peer: ConnectInfo<SocketAddr>,
}

impl hyper::service::Service<http::Request<Incoming>> for PerConnection {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.peer);
        // A router clone is a reference count: the routes themselves are shared.
        tower::Service::call(&mut self.router.clone(), request)
    }
}

/// Resolves on SIGTERM or Ctrl-C: what systemd and an operator send.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives while the service is still opening its store ends it gracefully (the
/// process is not killed by the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => tracing::info!("SIGTERM received"),
                        _ = interrupt.recv() => tracing::info!("SIGINT received"),
                    }
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM/SIGINT; stopping only on Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

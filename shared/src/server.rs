//! Serving a router on a bound listener with client addresses and graceful shutdown.

use axum::Router;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::util::MapFutureLayer;

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
/// The caller binds the listener first, so tests know the port before anything runs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// How a bounded drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every request running when shutdown began got its answer.
    Complete,
    /// The grace period ran out with this many requests still running; they were left behind
    /// (they end with the process) rather than holding the shutdown up.
    Abandoned(usize),
}

/// [`serve`] with a deadline: once `shutdown` resolves the listener closes, idle connections
/// end and running requests have `grace` to finish. Requests still running then are abandoned,
/// logged with their count, so a stuck client cannot hold a stopping service past its unit's
/// stop timeout.
pub async fn serve_with_grace(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<Drained> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let router = router.layer(MapFutureLayer::new({
        let in_flight = Arc::clone(&in_flight);
        move |answer: RouteFuture<Infallible>| count_in_flight(&in_flight, answer)
    }));
    let (began_tx, began_rx) = oneshot::channel::<()>();
    let server = serve(listener, router, async move {
        shutdown.await;
        let _ = began_tx.send(());
    });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return served.map(|()| Drained::Complete),
        began = began_rx => {
            if began.is_err() {
                // The server ended on its own (an accept error) without a shutdown.
                return server.await.map(|()| Drained::Complete);
            }
        }
    }
    let running = in_flight.load(Ordering::SeqCst);
    tracing::info!(
        running,
        grace_secs = grace.as_secs_f64(),
        "shutting down: no longer accepting, finishing running requests"
    );
    match tokio::time::timeout(grace, &mut server).await {
        Ok(served) => served.map(|()| Drained::Complete),
        Err(_) => {
            let abandoned = in_flight.load(Ordering::SeqCst);
            tracing::warn!(
                abandoned,
                grace_secs = grace.as_secs_f64(),
                "shutdown grace period over: abandoning requests still running"
            );
            Ok(Drained::Abandoned(abandoned))
        }
    }
}

/// Counts a request from its arrival until its answer is ready or dropped (a websocket counts
/// until upgraded). Called as the request enters the route, so the count is up before the
/// handler runs; wrapping the answer's future (`MapFutureLayer`) rather than using `from_fn`
/// spares every request a clone of the services beneath.
fn count_in_flight(
    in_flight: &Arc<AtomicUsize>,
    answer: RouteFuture<Infallible>,
) -> impl Future<Output = Result<Response, Infallible>> + use<> {
    struct Running(Arc<AtomicUsize>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    in_flight.fetch_add(1, Ordering::SeqCst);
    let running = Running(Arc::clone(in_flight));
    async move {
        let _running = running;
        answer.await
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

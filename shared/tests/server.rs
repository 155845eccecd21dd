//! The accept loop over real loopback sockets: the connection limit, the header read timeout,
//! and a shutdown that lets running requests finish but closes stuck ones at the deadline.

use aero_shared::server::{Drained, ServeOptions, serve_with};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<Drained>>,
}

impl Server {
    async fn start(router: Router, options: ServeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            router,
            async {
                let _ = stopped.await;
            },
            options,
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Begins the shutdown; the server's answer comes from [`Server::stopped`].
    fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    async fn stopped(self) -> Drained {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap()
    }
}

fn options(configure: impl FnOnce(&mut ServeOptions)) -> ServeOptions {
    let mut options = ServeOptions::default();
    configure(&mut options);
    options
}

fn hello_router() -> Router {
    Router::new().route(
        "/hello",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}") }),
    )
}

/// Sends one request on a keep-alive connection and reads its whole answer.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    read_answer(stream).await
}

/// Reads one answer (headers and a `Content-Length` body).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content length");
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Reads until the server closes the connection; what it sent before that.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&all).to_string()
}

#[tokio::test]
async fn the_connection_limit_holds_and_a_waiting_client_is_served_when_a_place_frees() {
    let server = Server::start(hello_router(), options(|o| o.max_connections = 2)).await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    assert!(
        exchange(&mut first, HELLO)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        exchange(&mut second, HELLO)
            .await
            .starts_with("HTTP/1.1 200")
    );

    // A third client gets through TCP (the kernel's backlog) but is not served.
    let mut third = server.connect().await;
    third.write_all(HELLO).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(waited.is_err(), "a connection past the limit was served");

    // The open connections are not disturbed by the one waiting.
    assert!(
        exchange(&mut first, HELLO)
            .await
            .starts_with("HTTP/1.1 200")
    );

    // One closes: the waiting client is accepted and answered.
    drop(second);
    let answer = tokio::time::timeout(PATIENCE, read_answer(&mut third))
        .await
        .expect("the waiting client is served once a place frees");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Handlers still see the peer's address.
    let local = third.local_addr().unwrap();
    assert!(answer.ends_with(&format!("hello {local}")), "{answer}");
}

#[tokio::test]
async fn a_client_that_sends_headers_too_slowly_is_disconnected() {
    let timeout = Duration::from_millis(300);
    let server = Server::start(hello_router(), options(|o| o.header_read_timeout = timeout)).await;

    // A client that sends its headers at once is answered.
    let mut prompt = server.connect().await;
    assert!(
        exchange(&mut prompt, HELLO)
            .await
            .starts_with("HTTP/1.1 200")
    );

    // One that sends part of them and stalls is dropped once the timeout passes.
    let mut slow = server.connect().await;
    let started = Instant::now();
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let sent = read_to_close(&mut slow).await;
    assert!(started.elapsed() >= timeout, "closed before the timeout");
    assert!(!sent.contains("200 OK"), "{sent}");
}

#[tokio::test]
async fn shutdown_lets_a_running_request_finish_and_refuses_new_connections() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Mutex::new(None::<oneshot::Receiver<()>>));
    let (release_tx, release_rx) = oneshot::channel::<()>();
    *release.lock().unwrap() = Some(release_rx);
    let router = Router::new().route(
        "/slow",
        get(move || {
            let entered = entered_tx.clone();
            let release = release.lock().unwrap().take().expect("one slow request");
            async move {
                let _ = entered.send(());
                let _ = release.await;
                "finished"
            }
        }),
    );
    let mut server = Server::start(router, options(|o| o.drain_deadline = PATIENCE)).await;
    let addr = server.addr;
    let mut client = server.connect().await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    entered
        .recv()
        .await
        .expect("the request reached its handler");

    server.shut_down();
    // The listener closes: a new client is refused rather than left waiting.
    tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes");

    release_tx.send(()).unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_answer(&mut client))
        .await
        .expect("the running request is answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("finished"), "{answer}");
    assert_eq!(server.stopped().await, Drained::Complete);
}

#[tokio::test]
async fn the_drain_deadline_closes_a_stuck_connection() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let router = Router::new().route(
        "/stuck",
        get(move || {
            let entered = entered_tx.clone();
            async move {
                let _ = entered.send(());
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let deadline = Duration::from_millis(300);
    let mut server = Server::start(router, options(|o| o.drain_deadline = deadline)).await;
    let mut idle = server.connect().await;
    let mut stuck = server.connect().await;
    stuck
        .write_all(b"GET /stuck HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    entered
        .recv()
        .await
        .expect("the request reached its handler");

    let started = Instant::now();
    server.shut_down();
    // The idle connection closes as soon as the drain begins; the stuck one at the deadline.
    read_to_close(&mut idle).await;
    let sent = read_to_close(&mut stuck).await;
    assert!(sent.is_empty(), "the stuck request got an answer: {sent}");
    assert!(started.elapsed() >= deadline, "closed before the deadline");
    assert_eq!(server.stopped().await, Drained::Closed(1));
}

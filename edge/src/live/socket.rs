//! One live client's connection: what it missed, then the feed as it happens, filtered for its
//! audience; pings to notice a client that vanished; and a close with the reason when it has to
//! go.
//!
//! Every connection runs in its own task with its own receiver, so a slow client only ever
//! delays itself. A client whose receiver lags (it fell [`super::RETAINED`] events behind) is
//! closed and reconnects with `since`. Each message must reach the socket within the send
//! timeout: a peer that stopped reading fills its socket buffers, and is dropped then instead of
//! pinning its task forever. What a client sends is bounded too: a message over the size limit
//! closes it with 1009, more messages than its rate allows with 1008.

use super::Subscription;
use super::visibility::Audience;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, close_code};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior, timeout};

/// Pings a client may leave unanswered; at the next ping it is closed.
pub const MISSED_PONGS: u32 = 2;

/// Sent instead of the backlog when `since` is older than what is retained (or from before the
/// server started): the client reloads its state, then follows the feed.
pub const RESET: &str = r#"{"type":"reset"}"#;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed, went away or broke the protocol.
    ClientLeft,
    /// The client fell too far behind the feed.
    TooSlow,
    /// A message could not be handed to the client's socket in time.
    Stalled,
    /// The client left pings unanswered.
    Unresponsive,
    /// The server is stopping.
    ServerClosing,
    /// The client sent a message over the size limit.
    TooBig,
    /// The client sent messages faster than its rate allows.
    Flooding,
}

/// What one client may send: [`super::LiveSettings`] in the form a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub max_message_bytes: usize,
    pub per_sec: u32,
    pub burst: u32,
}

/// A read error from a client's socket that may say the client's message was too big (the
/// protocol layer refuses it before reading it whole).
pub trait ReadError {
    fn too_big(&self) -> bool;
}

impl ReadError for axum::Error {
    fn too_big(&self) -> bool {
        use tokio_tungstenite::tungstenite::Error;
        std::error::Error::source(self)
            .and_then(|inner| inner.downcast_ref::<Error>())
            .is_some_and(|err| matches!(err, Error::Capacity(_)))
    }
}

impl ReadError for std::convert::Infallible {
    fn too_big(&self) -> bool {
        match *self {}
    }
}

/// A token bucket over the client's messages: `burst` at once, refilled at `per_sec`.
struct Allowance {
    tokens: f64,
    at: Instant,
    per_sec: f64,
    burst: f64,
}

impl Allowance {
    fn new(inbound: &Inbound) -> Self {
        let burst = f64::from(inbound.burst.max(1));
        Self {
            tokens: burst,
            at: Instant::now(),
            per_sec: f64::from(inbound.per_sec.max(1)),
            burst,
        }
    }

    /// Spends one message; false when none is left.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The size a client message counts for against the limit.
fn size(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

/// Serves one client until it leaves or has to go. `tx`/`rx` are the two halves of its socket.
#[allow(clippy::too_many_arguments)]
pub async fn run<Tx, Rx, E>(
    mut tx: Tx,
    mut rx: Rx,
    audience: Audience,
    subscription: Subscription,
    ping_interval: Duration,
    send_timeout: Duration,
    inbound: Inbound,
    mut closing: watch::Receiver<bool>,
) -> Ended
where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: ReadError,
{
    let mut allowance = Allowance::new(&inbound);
    let Subscription { backlog, mut live } = subscription;
    // The last event this client has been given or had filtered out: where it resumes.
    let mut cursor = None;
    match backlog {
        None => {
            if !send(&mut tx, Message::Text(RESET.into()), send_timeout).await {
                return Ended::Stalled;
            }
        }
        Some(missed) => {
            for event in missed {
                cursor = Some(event.seq);
                if audience.sees(&event.event)
                    && !send(&mut tx, Message::Text(event.text()), send_timeout).await
                {
                    return Ended::Stalled;
                }
            }
        }
    }
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    loop {
        tokio::select! {
            // The client's own messages first: a flood of events never hides its pong or close.
            biased;
            () = server_closing(&mut closing) => {
                close(&mut tx, close_code::AWAY, "the venue server is restarting", send_timeout).await;
                return Ended::ServerClosing;
            }
            incoming = rx.next() => match incoming {
                Some(Ok(message)) if size(&message) > inbound.max_message_bytes => {
                    close(&mut tx, close_code::SIZE, "message too big", send_timeout).await;
                    return Ended::TooBig;
                }
                Some(Err(err)) if err.too_big() => {
                    close(&mut tx, close_code::SIZE, "message too big", send_timeout).await;
                    return Ended::TooBig;
                }
                Some(Ok(message)) if !matches!(message, Message::Close(_)) && !allowance.take() => {
                    close(&mut tx, close_code::POLICY, "too many messages", send_timeout).await;
                    return Ended::Flooding;
                }
                Some(Ok(Message::Pong(_))) => unanswered = 0,
                // Clients have nothing to say; their pings are answered by the protocol layer.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // Flushes the protocol's answer to a close frame, if the client sent one.
                    let _ = timeout(send_timeout, tx.close()).await;
                    return Ended::ClientLeft;
                }
            },
            _ = ping.tick() => {
                if unanswered >= MISSED_PONGS {
                    close(&mut tx, close_code::POLICY, "no answer to pings", send_timeout).await;
                    return Ended::Unresponsive;
                }
                unanswered += 1;
                if !send(&mut tx, Message::Ping(Bytes::new()), send_timeout).await {
                    return Ended::Stalled;
                }
            }
            received = live.recv() => match received {
                Ok(event) => {
                    cursor = Some(event.seq);
                    if audience.sees(&event.event)
                        && !send(&mut tx, Message::Text(event.text()), send_timeout).await
                    {
                        return Ended::Stalled;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let resume = cursor.map_or(String::new(), |seq| format!(" since={seq}"));
                    let reason = format!("too slow: {missed} events behind; reconnect with{resume}");
                    close(&mut tx, close_code::AGAIN, &reason, send_timeout).await;
                    return Ended::TooSlow;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    close(&mut tx, close_code::AWAY, "the venue server is restarting", send_timeout).await;
                    return Ended::ServerClosing;
                }
            },
        }
    }
}

/// Resolves when the server is stopping (or the hub is gone).
async fn server_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Hands one message to the socket (and flushes it) within `limit`; false if it could not.
async fn send<Tx: Sink<Message> + Unpin>(tx: &mut Tx, message: Message, limit: Duration) -> bool {
    matches!(timeout(limit, tx.send(message)).await, Ok(Ok(())))
}

/// Sends a close frame saying why, as far as the socket takes it; the connection ends anyway.
async fn close<Tx: Sink<Message> + Unpin>(tx: &mut Tx, code: u16, reason: &str, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    send(tx, Message::Close(Some(frame)), limit).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LiveEvent, LiveHub, RETAINED};
    use aero_shared::auth::principal::DeviceKind;
    use chrono::Utc;
    use std::convert::Infallible;
    use std::sync::Arc;
    use tokio::sync::{Semaphore, mpsc};
    use uuid::Uuid;

    /// The server side of a socket whose client takes a message only when `reads` allows it.
    fn gated_socket() -> (
        impl Sink<Message, Error = ()> + Unpin,
        Arc<Semaphore>,
        mpsc::UnboundedReceiver<Message>,
    ) {
        let reads = Arc::new(Semaphore::new(0));
        let (delivered, received) = mpsc::unbounded_channel();
        let gate = Arc::clone(&reads);
        let sink = futures_util::sink::unfold(
            (gate, delivered),
            |(gate, delivered), message: Message| async move {
                gate.acquire().await.map_err(|_| ())?.forget();
                delivered.send(message).map_err(|_| ())?;
                Ok::<_, ()>((gate, delivered))
            },
        );
        (Box::pin(sink), reads, received)
    }

    fn silent_client() -> impl Stream<Item = Result<Message, Infallible>> + Unpin {
        futures_util::stream::pending()
    }

    fn score(n: i64) -> LiveEvent {
        LiveEvent::Score {
            score_id: Uuid::now_v7(),
            game_id: Uuid::nil(),
            customer_id: Uuid::nil(),
            first_name: None,
            score: n,
        }
    }

    fn order() -> LiveEvent {
        LiveEvent::Order {
            order_id: Uuid::now_v7(),
            customer_id: None,
            total_cents: 100,
        }
    }

    const LONG: Duration = Duration::from_secs(3600);
    /// Inbound limits no test client reaches unless it means to.
    const OPEN: Inbound = Inbound {
        max_message_bytes: 4096,
        per_sec: 1000,
        burst: 1000,
    };

    fn text(message: &Message) -> serde_json::Value {
        match message {
            Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_closed_saying_where_to_resume() {
        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        let subscription = hub.subscribe(None);
        let client = tokio::spawn(run(
            tx,
            silent_client(),
            Audience::Staff,
            subscription,
            LONG,
            LONG,
            OPEN,
            hub.closing(),
        ));
        // The client takes the first event, then stops reading while the feed runs on.
        hub.publish(score(0), Utc::now());
        reads.add_permits(1);
        assert_eq!(text(&received.recv().await.unwrap())["seq"], 1);
        for n in 1..=(RETAINED as i64 + 5) {
            hub.publish(score(n), Utc::now());
        }
        // Its task hands over what it already holds, then finds it lagged.
        reads.add_permits(RETAINED * 2);
        assert_eq!(client.await.unwrap(), Ended::TooSlow);
        let mut last = None;
        while let Ok(message) = received.try_recv() {
            last = Some(message);
        }
        let Some(Message::Close(Some(frame))) = last else {
            panic!("expected a close frame last, got {last:?}");
        };
        assert_eq!(frame.code, close_code::AGAIN);
        assert!(frame.reason.as_str().starts_with("too slow"), "{frame:?}");
        assert!(frame.reason.as_str().contains("since="), "{frame:?}");
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_is_dropped_after_the_send_timeout() {
        let hub = LiveHub::new();
        let (tx, _reads, _received) = gated_socket();
        let client = tokio::spawn(run(
            tx,
            silent_client(),
            Audience::Staff,
            hub.subscribe(None),
            LONG,
            Duration::from_millis(50),
            OPEN,
            hub.closing(),
        ));
        hub.publish(score(1), Utc::now());
        let ended = timeout(Duration::from_secs(10), client).await;
        assert_eq!(
            ended.expect("the stalled client is dropped").unwrap(),
            Ended::Stalled
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_two_pings_unanswered_is_closed() {
        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(100);
        let interval = Duration::from_millis(30);
        let started = Instant::now();
        let ended = run(
            tx,
            silent_client(),
            Audience::Staff,
            hub.subscribe(None),
            interval,
            LONG,
            OPEN,
            hub.closing(),
        )
        .await;
        assert_eq!(ended, Ended::Unresponsive);
        assert!(started.elapsed() >= interval * 3);
        assert!(matches!(received.recv().await, Some(Message::Ping(_))));
        assert!(matches!(received.recv().await, Some(Message::Ping(_))));
        assert!(
            matches!(received.recv().await, Some(Message::Close(Some(f))) if f.code == close_code::POLICY)
        );
    }

    #[tokio::test]
    async fn a_client_that_answers_pings_stays() {
        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(1000);
        let (pongs, client_rx) = mpsc::unbounded_channel::<Result<Message, Infallible>>();
        let client_rx = futures_util::stream::unfold(client_rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let task = tokio::spawn(run(
            tx,
            Box::pin(client_rx),
            Audience::Staff,
            hub.subscribe(None),
            Duration::from_millis(100),
            LONG,
            OPEN,
            hub.closing(),
        ));
        for _ in 0..4 {
            assert!(matches!(received.recv().await, Some(Message::Ping(_))));
            pongs.send(Ok(Message::Pong(Bytes::new()))).unwrap();
        }
        assert!(!task.is_finished());
        hub.close();
        assert_eq!(task.await.unwrap(), Ended::ServerClosing);
    }

    /// A client whose messages the test sends through the returned channel.
    fn talking_client() -> (
        mpsc::UnboundedSender<Result<Message, Infallible>>,
        impl Stream<Item = Result<Message, Infallible>> + Unpin,
    ) {
        let (said, client_rx) = mpsc::unbounded_channel::<Result<Message, Infallible>>();
        let stream = futures_util::stream::unfold(client_rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        (said, Box::pin(stream))
    }

    async fn close_frame(received: &mut mpsc::UnboundedReceiver<Message>) -> CloseFrame {
        loop {
            match received.recv().await {
                Some(Message::Close(Some(frame))) => return frame,
                Some(_) => {}
                None => panic!("no close frame"),
            }
        }
    }

    #[tokio::test]
    async fn a_message_over_the_size_limit_closes_the_client_with_1009() {
        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(100);
        let (said, client) = talking_client();
        let task = tokio::spawn(run(
            tx,
            client,
            Audience::Staff,
            hub.subscribe(None),
            LONG,
            LONG,
            Inbound {
                max_message_bytes: 200,
                ..OPEN
            },
            hub.closing(),
        ));
        said.send(Ok(Message::Text("x".repeat(200).into())))
            .unwrap();
        said.send(Ok(Message::Text("x".repeat(201).into())))
            .unwrap();
        assert_eq!(task.await.unwrap(), Ended::TooBig);
        assert_eq!(close_frame(&mut received).await.code, close_code::SIZE);
    }

    #[tokio::test]
    async fn a_client_sending_faster_than_its_rate_is_closed_with_1008() {
        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(100);
        let (said, client) = talking_client();
        let task = tokio::spawn(run(
            tx,
            client,
            Audience::Staff,
            hub.subscribe(None),
            LONG,
            LONG,
            Inbound {
                per_sec: 1,
                burst: 5,
                ..OPEN
            },
            hub.closing(),
        ));
        for _ in 0..5 {
            said.send(Ok(Message::Pong(Bytes::new()))).unwrap();
        }
        // The burst is spent, not exceeded: the client stays.
        hub.publish(score(1), Utc::now());
        assert_eq!(text(&received.recv().await.unwrap())["seq"], 1);
        assert!(!task.is_finished());
        said.send(Ok(Message::Pong(Bytes::new()))).unwrap();
        assert_eq!(task.await.unwrap(), Ended::Flooding);
        assert_eq!(close_frame(&mut received).await.code, close_code::POLICY);
    }

    #[tokio::test]
    async fn resuming_sends_what_the_audience_may_see_or_a_reset() {
        let hub = LiveHub::new();
        hub.publish(order(), Utc::now());
        hub.publish(score(5), Utc::now());
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(100);
        let task = tokio::spawn(run(
            tx,
            silent_client(),
            Audience::Device(DeviceKind::Game),
            hub.subscribe(Some(0)),
            LONG,
            LONG,
            OPEN,
            hub.closing(),
        ));
        let first = text(&received.recv().await.unwrap());
        assert_eq!(
            (first["type"].as_str(), first["seq"].as_u64()),
            (Some("score"), Some(2))
        );
        hub.close();
        assert_eq!(task.await.unwrap(), Ended::ServerClosing);

        let hub = LiveHub::new();
        let (tx, reads, mut received) = gated_socket();
        reads.add_permits(100);
        let task = tokio::spawn(run(
            tx,
            silent_client(),
            Audience::Staff,
            hub.subscribe(Some(99)),
            LONG,
            LONG,
            OPEN,
            hub.closing(),
        ));
        assert_eq!(text(&received.recv().await.unwrap())["type"], "reset");
        hub.publish(score(1), Utc::now());
        assert_eq!(text(&received.recv().await.unwrap())["seq"], 1);
        hub.close();
        task.await.unwrap();
    }
}

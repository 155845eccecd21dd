//! The venue's live feed: what happens at the venue (check-ins, sessions ending, scores, sales,
//! plugs switching) as typed events, for scoreboards, staff screens and terminals.
//!
//! Routes publish an event after the write it reports has committed. Every event gets a
//! sequence number; the hub keeps the latest [`RETAINED`] so a client that reconnects with
//! `since` gets what it missed, then follows the broadcast. The broadcast channel is bounded: a
//! client that falls [`RETAINED`] events behind is dropped (it reconnects with `since`), and
//! never delays the others. Who sees which event is decided in [`visibility`]; one client's
//! connection is [`socket`]; [`sessions`] announces jump sessions running out.

pub mod sessions;
pub mod socket;
pub mod visibility;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use uuid::Uuid;

/// Events kept for clients resuming with `since`, and the most a client may lag behind.
pub const RETAINED: usize = 1024;

/// How live clients are served; the `[live]` table of the edge's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSettings {
    /// How often each client is pinged. A client that leaves [`socket::MISSED_PONGS`] pings
    /// unanswered is gone (a scoreboard unplugged mid-stream never closes its TCP connection).
    pub ping_interval_ms: u64,
    /// Longest one message may take to be handed to a client's socket. A peer that stopped
    /// reading fills its socket buffers; it is dropped then, instead of pinning its task.
    pub send_timeout_ms: u64,
    /// Most clients connected at once; more are refused with 503.
    pub max_clients: usize,
    /// Largest message (and frame) a client may send; a bigger one closes it with 1009.
    /// Clients only answer pings and close, so this stays small.
    pub max_message_bytes: usize,
    /// Messages (pongs and pings included) a client may send per second, sustained; past that
    /// and its burst it is closed with 1008, so a flood cannot keep its task busy.
    pub inbound_messages_per_sec: u32,
    pub inbound_burst: u32,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            ping_interval_ms: 20_000,
            send_timeout_ms: 5_000,
            max_clients: 256,
            max_message_bytes: 4 * 1024,
            inbound_messages_per_sec: 5,
            inbound_burst: 20,
        }
    }
}

impl LiveSettings {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.max(1))
    }

    /// What one client may send.
    pub fn inbound(&self) -> socket::Inbound {
        socket::Inbound {
            max_message_bytes: self.max_message_bytes,
            per_sec: self.inbound_messages_per_sec,
            burst: self.inbound_burst,
        }
    }

    /// Range rules, as `(dotted key, problem)` for the settings loader.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        // A pong echoes a ping's payload, up to 125 bytes: a smaller limit would refuse it.
        if !(125..=1024 * 1024).contains(&self.max_message_bytes) {
            problems.push((
                "live.max_message_bytes",
                "must be between 125 and 1048576".into(),
            ));
        }
        if self.inbound_messages_per_sec == 0 {
            problems.push(("live.inbound_messages_per_sec", "must be at least 1".into()));
        }
        if self.inbound_burst == 0 {
            problems.push(("live.inbound_burst", "must be at least 1".into()));
        }
        problems
    }
}

/// One thing that happened at the venue.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Checkin {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        product_id: Uuid,
        #[serde(serialize_with = "aero_shared::timestamp::serialize")]
        ends_at: DateTime<Utc>,
    },
    SessionExpiring {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        #[serde(serialize_with = "aero_shared::timestamp::serialize")]
        ends_at: DateTime<Utc>,
    },
    SessionExpired {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        #[serde(serialize_with = "aero_shared::timestamp::serialize")]
        ends_at: DateTime<Utc>,
    },
    Score {
        score_id: Uuid,
        game_id: Uuid,
        customer_id: Uuid,
        /// What a scoreboard shows beside the score (scoreboards cannot look customers up).
        first_name: Option<String>,
        score: i64,
    },
    Order {
        order_id: Uuid,
        customer_id: Option<Uuid>,
        total_cents: i64,
    },
    PlugState {
        plug_id: Uuid,
        state: String,
        reachable: bool,
    },
}

impl LiveEvent {
    /// The event's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Checkin { .. } => "checkin",
            Self::SessionExpiring { .. } => "session_expiring",
            Self::SessionExpired { .. } => "session_expired",
            Self::Score { .. } => "score",
            Self::Order { .. } => "order",
            Self::PlugState { .. } => "plug_state",
        }
    }
}

/// An event as clients receive it: its place in the feed, when it was published, and the event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    pub seq: u64,
    #[serde(serialize_with = "aero_shared::timestamp::serialize")]
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: LiveEvent,
}

/// A published envelope with its JSON text, serialized once for every client that receives it.
#[derive(Debug)]
pub struct Published {
    pub envelope: Envelope,
    text: Utf8Bytes,
}

impl Published {
    fn new(envelope: Envelope) -> Self {
        // Ids, numbers, strings and timestamps: serializing cannot fail.
        let text = serde_json::to_string(&envelope).unwrap_or_default();
        Self {
            envelope,
            text: text.into(),
        }
    }

    /// The envelope's JSON, cheap to clone.
    pub fn text(&self) -> Utf8Bytes {
        self.text.clone()
    }
}

impl std::ops::Deref for Published {
    type Target = Envelope;

    fn deref(&self) -> &Envelope {
        &self.envelope
    }
}

/// Where a new client starts: what it missed, then the live receiver.
#[derive(Debug)]
pub struct Subscription {
    /// The retained events after `since`; `None` when `since` is older than what is retained,
    /// or from before this server started: the client must start over.
    pub backlog: Option<Vec<Arc<Published>>>,
    pub live: broadcast::Receiver<Arc<Published>>,
}

/// What the session watcher learns when it wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionsStarted {
    /// Nothing new: what woke it was already taken by an earlier wake.
    Nothing,
    /// Check-ins were published; the soonest of their sessions ends then.
    EndingFrom(DateTime<Utc>),
    /// Sessions changed in a way not told (a pull, a nudge): plan again from the replica.
    Unknown,
}

impl SessionsStarted {
    fn merge(self, news: Self) -> Self {
        match (self, news) {
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            (Self::EndingFrom(a), Self::EndingFrom(b)) => Self::EndingFrom(a.min(b)),
            (Self::Nothing, other) | (other, Self::Nothing) => other,
        }
    }
}

/// Live clients in Prometheus.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    pub clients: Gauge,
    pub slow_clients_dropped: Counter,
}

#[derive(Debug)]
struct Feed {
    /// The latest events, oldest first.
    retained: VecDeque<Arc<Published>>,
    next_seq: u64,
}

/// Where events are published and subscribed to.
#[derive(Debug)]
pub struct LiveHub {
    /// The lock also orders publishing, and makes subscribing atomic with the backlog.
    feed: Mutex<Feed>,
    sender: broadcast::Sender<Arc<Published>>,
    settings: LiveSettings,
    /// One permit per connected client: bounds them to `max_clients`.
    slots: Arc<Semaphore>,
    /// Wakes the session watcher when a session starts, so it can plan that session's end.
    sessions_changed: Notify,
    /// What started since the watcher last asked (see [`LiveHub::sessions_started`]).
    unplanned: Mutex<SessionsStarted>,
    /// Tells every connected client to close: the server is stopping.
    closing: watch::Sender<bool>,
    metrics: Arc<LiveMetrics>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveHub {
    pub fn new() -> Self {
        Self::with_settings(LiveSettings::default())
    }

    pub fn with_settings(settings: LiveSettings) -> Self {
        Self {
            feed: Mutex::new(Feed {
                retained: VecDeque::with_capacity(RETAINED),
                next_seq: 1,
            }),
            sender: broadcast::channel(RETAINED).0,
            settings,
            slots: Arc::new(Semaphore::new(settings.max_clients)),
            sessions_changed: Notify::new(),
            unplanned: Mutex::new(SessionsStarted::Nothing),
            closing: watch::channel(false).0,
            metrics: Arc::new(LiveMetrics::default()),
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &LiveMetrics {
        &self.metrics
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "live_clients",
            "Clients connected to the live feed",
            self.metrics.clients.clone(),
        );
        registry.register(
            "live_slow_clients_dropped",
            "Live clients closed because they fell too far behind the feed or stopped reading",
            self.metrics.slow_clients_dropped.clone(),
        );
    }

    /// Publishes an event to every subscriber; never waits for any of them.
    pub fn publish(&self, event: LiveEvent, at: DateTime<Utc>) -> u64 {
        let session_end = match &event {
            LiveEvent::Checkin { ends_at, .. } => Some(*ends_at),
            _ => None,
        };
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let published = Arc::new(Published::new(Envelope {
            seq: feed.next_seq,
            at,
            event,
        }));
        feed.next_seq += 1;
        if feed.retained.len() == RETAINED {
            feed.retained.pop_front();
        }
        feed.retained.push_back(Arc::clone(&published));
        // No subscriber is not an error: the event stays retained for the next one.
        let _ = self.sender.send(Arc::clone(&published));
        drop(feed);
        if let Some(end) = session_end {
            self.tell_watcher(SessionsStarted::EndingFrom(end));
        }
        published.seq
    }

    /// Subscribes from after `since` (or from now): the retained events after it, then the
    /// live receiver.
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        // Subscribing under the lock: no event falls between the backlog and the receiver.
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.sender.subscribe();
        let latest = feed.next_seq - 1;
        let oldest = feed.retained.front().map_or(feed.next_seq, |e| e.seq);
        let backlog = match since {
            None => Some(Vec::new()),
            // A cursor from before this server started (sequences restart with it).
            Some(since) if since > latest => None,
            Some(since) if since.saturating_add(1) < oldest => None,
            Some(since) => Some(
                feed.retained
                    .iter()
                    .filter(|e| e.seq > since)
                    .cloned()
                    .collect(),
            ),
        };
        Subscription { backlog, live }
    }

    /// A place for one more client, held while it is connected; `None` when the venue's
    /// limit is reached.
    pub fn admit(&self) -> Option<ClientSlot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        self.metrics.clients.inc();
        Some(ClientSlot {
            _permit: permit,
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Wakes the session watcher: sessions changed other than through a published check-in.
    pub fn sessions_changed(&self) {
        self.tell_watcher(SessionsStarted::Unknown);
    }

    /// Resolves when sessions may have started since the last call, with what is known of them.
    pub async fn sessions_started(&self) -> SessionsStarted {
        self.sessions_changed.notified().await;
        let mut unplanned = self.unplanned.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *unplanned, SessionsStarted::Nothing)
    }

    fn tell_watcher(&self, news: SessionsStarted) {
        let mut unplanned = self.unplanned.lock().unwrap_or_else(|e| e.into_inner());
        *unplanned = unplanned.merge(news);
        drop(unplanned);
        self.sessions_changed.notify_one();
    }

    /// Closes every live connection (the server is stopping); new ones close at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when the server is stopping.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// A connected client's place; frees it when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<LiveMetrics>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.metrics.clients.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(n: i64) -> LiveEvent {
        LiveEvent::Score {
            score_id: Uuid::now_v7(),
            game_id: Uuid::nil(),
            customer_id: Uuid::nil(),
            first_name: Some("Ada".into()),
            score: n,
        }
    }

    #[tokio::test]
    async fn a_resuming_client_gets_what_it_missed_then_follows() {
        let hub = LiveHub::new();
        for n in 0..5 {
            hub.publish(score(n), Utc::now());
        }
        let Subscription { backlog, mut live } = hub.subscribe(Some(3));
        let seqs: Vec<u64> = backlog.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert!(hub.subscribe(Some(5)).backlog.unwrap().is_empty());
        hub.publish(score(9), Utc::now());
        assert_eq!(live.recv().await.unwrap().seq, 6);
    }

    #[test]
    fn a_cursor_older_than_the_retained_events_is_refused() {
        let hub = LiveHub::new();
        for n in 0..(RETAINED as i64 + 10) {
            hub.publish(score(n), Utc::now());
        }
        assert!(hub.subscribe(Some(1)).backlog.is_none());
        assert_eq!(hub.subscribe(Some(10)).backlog.unwrap().len(), RETAINED);
    }

    #[test]
    fn a_cursor_from_before_a_restart_is_refused() {
        let hub = LiveHub::new();
        assert!(hub.subscribe(Some(0)).backlog.unwrap().is_empty());
        assert!(hub.subscribe(Some(40)).backlog.is_none());
        hub.publish(score(1), Utc::now());
        assert!(hub.subscribe(Some(2)).backlog.is_none());
        assert!(hub.subscribe(Some(u64::MAX)).backlog.is_none());
        assert_eq!(hub.subscribe(Some(0)).backlog.unwrap().len(), 1);
    }

    #[test]
    fn events_carry_their_type_on_the_wire() {
        let hub = LiveHub::new();
        hub.publish(score(7), Utc::now());
        let backlog = hub.subscribe(Some(0)).backlog.unwrap();
        let json: serde_json::Value = serde_json::from_str(backlog[0].text().as_str()).unwrap();
        assert_eq!(json["type"], "score");
        assert_eq!(json["score"], 7);
        assert_eq!(json["first_name"], "Ada");
        assert_eq!(json["seq"], 1);
    }

    #[test]
    fn clients_are_bounded_and_counted() {
        let hub = LiveHub::with_settings(LiveSettings {
            max_clients: 2,
            ..LiveSettings::default()
        });
        let first = hub.admit().unwrap();
        let _second = hub.admit().unwrap();
        assert!(hub.admit().is_none());
        assert_eq!(hub.metrics().clients.get(), 2);
        drop(first);
        assert_eq!(hub.metrics().clients.get(), 1);
        assert!(hub.admit().is_some());
    }
}

//! The venue's live feed: what happens at the venue (check-ins, sessions ending, scores, sales,
//! plugs switching) as typed events, for scoreboards, staff screens and terminals.
//!
//! Routes publish an event after the write it reports has committed. Every event gets a
//! sequence number; the hub keeps the latest [`RETAINED`] so a client that reconnects with
//! `since` gets what it missed, then follows the broadcast. The broadcast channel is bounded: a
//! client that falls [`RETAINED`] events behind is dropped (it reconnects with `since`), and
//! never delays the others.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Events kept for clients resuming with `since`, and the most a client may lag behind.
pub const RETAINED: usize = 1024;

/// One thing that happened at the venue.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Checkin {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        product_id: Uuid,
        ends_at: DateTime<Utc>,
    },
    SessionExpiring {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        ends_at: DateTime<Utc>,
    },
    SessionExpired {
        checkin_id: Uuid,
        customer_id: Uuid,
        wristband: String,
        ends_at: DateTime<Utc>,
    },
    Score {
        score_id: Uuid,
        game_id: Uuid,
        customer_id: Uuid,
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
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: LiveEvent,
}

/// Where events are published and subscribed to.
#[derive(Debug)]
pub struct LiveHub {
    /// The latest events, oldest first; the lock also orders publishing.
    retained: Mutex<VecDeque<Arc<Envelope>>>,
    next_seq: Mutex<u64>,
    sender: broadcast::Sender<Arc<Envelope>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveHub {
    pub fn new() -> Self {
        Self {
            retained: Mutex::new(VecDeque::with_capacity(RETAINED)),
            next_seq: Mutex::new(1),
            sender: broadcast::channel(RETAINED).0,
        }
    }

    /// Publishes an event to every subscriber; never waits for any of them.
    pub fn publish(&self, event: LiveEvent, at: DateTime<Utc>) -> u64 {
        let mut retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        let mut next_seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let envelope = Arc::new(Envelope {
            seq: *next_seq,
            at,
            event,
        });
        *next_seq += 1;
        if retained.len() == RETAINED {
            retained.pop_front();
        }
        retained.push_back(Arc::clone(&envelope));
        // No subscriber is not an error: the event stays retained for the next one.
        let _ = self.sender.send(Arc::clone(&envelope));
        envelope.seq
    }

    /// Subscribes from after `since` (or from now): the retained events after it, then the
    /// live receiver. `None` for the backlog means `since` is older than what is retained, and
    /// the client must start over.
    pub fn subscribe(
        &self,
        since: Option<u64>,
    ) -> (
        Option<Vec<Arc<Envelope>>>,
        broadcast::Receiver<Arc<Envelope>>,
    ) {
        // Subscribing under the lock: no event falls between the backlog and the receiver.
        let retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.sender.subscribe();
        let backlog = match since {
            None => Some(Vec::new()),
            Some(since) => {
                let oldest = retained.front().map_or(u64::MAX, |e| e.seq);
                if since + 1 < oldest && !retained.is_empty() {
                    None
                } else {
                    Some(retained.iter().filter(|e| e.seq > since).cloned().collect())
                }
            }
        };
        (backlog, receiver)
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
            score: n,
        }
    }

    #[tokio::test]
    async fn a_resuming_client_gets_what_it_missed_then_follows() {
        let hub = LiveHub::new();
        for n in 0..5 {
            hub.publish(score(n), Utc::now());
        }
        let (backlog, mut live) = hub.subscribe(Some(3));
        let seqs: Vec<u64> = backlog.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        hub.publish(score(9), Utc::now());
        assert_eq!(live.recv().await.unwrap().seq, 6);
    }

    #[test]
    fn a_cursor_older_than_the_retained_events_is_refused() {
        let hub = LiveHub::new();
        for n in 0..(RETAINED as i64 + 10) {
            hub.publish(score(n), Utc::now());
        }
        assert!(hub.subscribe(Some(1)).0.is_none());
        assert_eq!(hub.subscribe(Some(10)).0.unwrap().len(), RETAINED);
    }

    #[test]
    fn events_carry_their_type_on_the_wire() {
        let json = serde_json::to_value(Envelope {
            seq: 1,
            at: Utc::now(),
            event: score(7),
        })
        .unwrap();
        assert_eq!(json["type"], "score");
        assert_eq!(json["score"], 7);
        assert_eq!(json["seq"], 1);
    }
}

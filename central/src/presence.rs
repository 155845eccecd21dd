//! Which venues' edges hold a change-hint socket open to this instance right now, since when,
//! and when the last one closed, and [`is_online`]: what "online" means on HQ's chain overview.
//!
//! An edge keeps its hint socket open for as long as it runs and central pings it every
//! [`HINT_PING_EVERY`], so the socket closing is the quickest sign a venue went dark (a stopped
//! edge closes it at once; a cut cable is noticed when [`HINT_SILENCE`] passes without a pong).
//! The map is per instance: behind a load balancer an edge's socket lands on one instance. So
//! the instance holding it also writes to the shared database when it hears the socket (on
//! connecting and at each pong, `hint_seen_at`) and when it closes (`hint_closed_at`), and every
//! instance counts a socket heard within [`HEARTBEAT_FRESH`] and not closed since as online.

use crate::store::{HintSocketEvent, Store};
use aero_shared::clock::SharedClock;
use aero_shared::wire::SiteSyncStatus;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A push or pull this recent counts as the edge being online even without a socket here.
pub const RECENT_CONTACT: Duration = Duration::seconds(3);

/// How often central pings an edge's hint socket; each pong is a heartbeat.
pub const HINT_PING_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// A hint socket unheard for this long (three pings) is closed as dead.
pub const HINT_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The least time between two heartbeats an instance writes for one socket.
pub const HEARTBEAT_EVERY: Duration = Duration::seconds(15);

/// A socket last heard (by any instance) this recently, and not closed since, is open: two
/// pings' worth, with room for the write and a slow pong.
pub const HEARTBEAT_FRESH: Duration = Duration::seconds(50);

/// Whether a venue's edge is online as of `now`: a hint socket open on this instance; or one an
/// instance heard within [`HEARTBEAT_FRESH`] and has not seen close since; or a push or pull
/// within [`RECENT_CONTACT`] with no close seen after it.
pub fn is_online(here: &Presence, sync: &SiteSyncStatus, now: DateTime<Utc>) -> bool {
    if here.sockets > 0 {
        return true;
    }
    let closed = here.disconnected_at.max(sync.hint_closed_at);
    let after_close = |at: DateTime<Utc>| closed.is_none_or(|closed| at > closed);
    let heard = sync
        .hint_seen_at
        .is_some_and(|seen| now - seen < HEARTBEAT_FRESH && after_close(seen));
    let synced = sync
        .last_push_at
        .max(sync.last_pull_at)
        .is_some_and(|at| now - at < RECENT_CONTACT && after_close(at));
    heard || synced
}

/// One venue's sockets on this instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Presence {
    /// Hint sockets open now (a re-enrolled or restarted edge can briefly hold two).
    pub sockets: u32,
    /// When the oldest socket still open connected.
    pub connected_since: Option<DateTime<Utc>>,
    /// When the last socket closed; `None` while one is open or none ever was.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// What the edge said it runs, in `X-Aero-Edge-Version` when it connected.
    pub edge_version: Option<String>,
}

/// The presence of every venue seen since this instance started.
#[derive(Clone)]
pub struct EdgePresence {
    venues: Arc<Mutex<HashMap<Uuid, Presence>>>,
    clock: SharedClock,
}

impl EdgePresence {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            venues: Arc::default(),
            clock,
        }
    }

    /// Records a socket opening; the venue stays connected until the returned guard drops.
    pub fn connect(&self, site_id: Uuid, edge_version: Option<String>) -> Connected {
        let now = self.clock.now();
        let mut venues = self.venues.lock().unwrap_or_else(|p| p.into_inner());
        let entry = venues.entry(site_id).or_default();
        if entry.sockets == 0 {
            entry.connected_since = Some(now);
        }
        entry.sockets += 1;
        entry.disconnected_at = None;
        if edge_version.is_some() {
            entry.edge_version = edge_version;
        }
        Connected {
            presence: self.clone(),
            site_id,
        }
    }

    /// The venue's presence as of now (the default when its edge never connected here).
    pub fn of(&self, site_id: Uuid) -> Presence {
        let venues = self.venues.lock().unwrap_or_else(|p| p.into_inner());
        venues.get(&site_id).cloned().unwrap_or_default()
    }

    fn disconnect(&self, site_id: Uuid) {
        let now = self.clock.now();
        let mut venues = self.venues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = venues.get_mut(&site_id) {
            entry.sockets = entry.sockets.saturating_sub(1);
            if entry.sockets == 0 {
                entry.connected_since = None;
                entry.disconnected_at = Some(now);
            }
        }
    }
}

/// What this instance writes to the shared database about one hint socket it holds, for the
/// other instances: a heartbeat when it is heard (at most every [`HEARTBEAT_EVERY`]) and, when it
/// closes, the time it was last heard.
pub struct Heartbeat {
    store: Arc<dyn Store>,
    clock: SharedClock,
    site_id: Uuid,
    last_heard: DateTime<Utc>,
    last_heard_instant: tokio::time::Instant,
    written: Option<DateTime<Utc>>,
}

impl Heartbeat {
    pub fn new(store: Arc<dyn Store>, clock: SharedClock, site_id: Uuid) -> Self {
        let last_heard = clock.now();
        Self {
            store,
            clock,
            site_id,
            last_heard,
            last_heard_instant: tokio::time::Instant::now(),
            written: None,
        }
    }

    /// The socket connected or sent something (a pong): it is alive now.
    pub async fn heard(&mut self) {
        let now = self.clock.now();
        self.last_heard = now;
        self.last_heard_instant = tokio::time::Instant::now();
        if self.written.is_some_and(|at| now - at < HEARTBEAT_EVERY) {
            return;
        }
        match self
            .store
            .record_hint_socket(self.site_id, HintSocketEvent::Heard, now)
            .await
        {
            Ok(()) => self.written = Some(now),
            Err(err) => {
                tracing::warn!(site_id = %self.site_id, error = %err, "could not record a hint socket's heartbeat");
            }
        }
    }

    /// Whether nothing was heard for [`HINT_SILENCE`]: the connection is dead.
    pub fn is_silent(&self) -> bool {
        self.last_heard_instant.elapsed() >= HINT_SILENCE
    }

    /// The socket closed: records when it was last heard.
    pub async fn closed(self) {
        if let Err(err) = self
            .store
            .record_hint_socket(self.site_id, HintSocketEvent::Closed, self.last_heard)
            .await
        {
            tracing::warn!(site_id = %self.site_id, error = %err, "could not record a hint socket's close");
        }
    }
}

/// An open hint socket; dropping it records the close.
pub struct Connected {
    presence: EdgePresence,
    site_id: Uuid,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.presence.disconnect(self.site_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::clock::{Clock, ManualClock};

    #[test]
    fn a_venue_is_connected_while_any_socket_is_open_and_remembers_the_last_close() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let presence = EdgePresence::new(clock.clone());
        let site = Uuid::now_v7();
        assert_eq!(presence.of(site), Presence::default());
        let first = presence.connect(site, Some("1.2.3".into()));
        let opened = clock.now();
        clock.advance(Duration::seconds(5));
        let second = presence.connect(site, None);
        drop(first);
        let seen = presence.of(site);
        assert_eq!(seen.sockets, 1);
        assert_eq!(seen.connected_since, Some(opened));
        assert_eq!(seen.edge_version.as_deref(), Some("1.2.3"));
        clock.advance(Duration::seconds(5));
        drop(second);
        let seen = presence.of(site);
        assert_eq!(seen.sockets, 0);
        assert_eq!(seen.connected_since, None);
        assert_eq!(seen.disconnected_at, Some(clock.now()));
    }

    fn sync(
        seen: Option<i64>,
        closed: Option<i64>,
        pulled: Option<i64>,
        t0: DateTime<Utc>,
    ) -> SiteSyncStatus {
        let at = |s: Option<i64>| s.map(|s| t0 + Duration::seconds(s));
        SiteSyncStatus {
            site_id: Uuid::nil(),
            last_push_at: None,
            last_pull_at: at(pulled),
            acked_seq: 0,
            pull_cursor: 0,
            pull_lag: 0,
            outbox: None,
            hint_seen_at: at(seen),
            hint_closed_at: at(closed),
        }
    }

    #[test]
    fn a_socket_held_by_another_instance_counts_while_its_heartbeat_is_fresh_and_it_is_not_closed()
    {
        let t0 = Utc::now();
        let none_here = Presence::default();
        let at = |s: i64| t0 + Duration::seconds(s);
        // Heard at 0 by another instance, nothing since: online until the heartbeat is stale.
        let heard = sync(Some(0), None, None, t0);
        assert!(is_online(&none_here, &heard, at(49)));
        assert!(!is_online(&none_here, &heard, at(50)));
        // Closed after it was last heard: offline at once.
        let closed = sync(Some(0), Some(1), None, t0);
        assert!(!is_online(&none_here, &closed, at(2)));
        // Heard again after a close (the edge reconnected to some instance): online.
        let reconnected = sync(Some(10), Some(1), None, t0);
        assert!(is_online(&none_here, &reconnected, at(12)));
        // A close this instance saw counts like one in the database.
        let closed_here = Presence {
            disconnected_at: Some(at(11)),
            ..Presence::default()
        };
        assert!(!is_online(&closed_here, &reconnected, at(12)));
        // A socket open here is online whatever the database says.
        let open_here = Presence {
            sockets: 1,
            ..Presence::default()
        };
        assert!(is_online(
            &open_here,
            &sync(None, Some(5), None, t0),
            at(100)
        ));
    }

    #[test]
    fn a_recent_pull_counts_unless_a_close_came_after_it() {
        let t0 = Utc::now();
        let at = |s: i64| t0 + Duration::seconds(s);
        let none_here = Presence::default();
        assert!(is_online(&none_here, &sync(None, None, Some(0), t0), at(2)));
        assert!(!is_online(
            &none_here,
            &sync(None, None, Some(0), t0),
            at(3)
        ));
        assert!(!is_online(
            &none_here,
            &sync(None, Some(1), Some(0), t0),
            at(2)
        ));
    }
}

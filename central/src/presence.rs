//! Which venues' edges hold a change-hint socket open to this instance right now, since when,
//! and when the last one closed: what "online" means on HQ's chain overview.
//!
//! An edge keeps its hint socket open for as long as it runs and central pings it every 20 s,
//! so the socket closing is the quickest sign a venue went dark (a stopped edge closes it at
//! once; a cut cable is noticed by the ping). The map is per instance: behind a load balancer an
//! edge's socket lands on one instance, so the status answer also counts a push or pull
//! within [`RECENT_CONTACT`] as online, which every instance reads from the shared database.

use aero_shared::clock::SharedClock;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A push or pull this recent counts as the edge being online even without a socket here.
pub const RECENT_CONTACT: Duration = Duration::seconds(3);

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
}

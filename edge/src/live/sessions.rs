//! Announces jump sessions running out: `session_expiring` once when a session has
//! [`EXPIRING_WITHIN`] or less left, `session_expired` once when it ends.
//!
//! The watcher plans from the check-ins table (indexed by `ends_at`): it sleeps until the next
//! session reaches either moment, or until a check-in is published (a new session may end
//! sooner). It starts from "now": after a restart, sessions that ended while the edge was down
//! are not announced, and sessions already inside the warning window are not warned again.
//! Time comes from an injected clock, and [`SessionWatcher::step`] is one pass on its own.

use super::{LiveEvent, LiveHub, SessionsStarted};
use crate::replica::{Replica, parse_ts, ts};
use aero_shared::clock::SharedClock;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How long before its end a session is announced as expiring.
pub const EXPIRING_WITHIN: chrono::Duration = chrono::Duration::minutes(5);

/// Longest the watcher sleeps without looking again: sessions can also arrive through the pull
/// (no check-in is published for those), and the wall clock can be set while it sleeps.
const MAX_NAP: Duration = Duration::from_secs(60);

/// How long to sleep before announcing what falls due at `due`.
fn nap(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    due.map_or(MAX_NAP, |due| {
        (due - now).to_std().unwrap_or(Duration::ZERO).min(MAX_NAP)
    })
}

/// Whether sessions started since the plan was made can change it: only one whose first
/// announcement (its warning) falls before the planned one. The others are found by the step
/// at `due`, which reads every session from the replica.
fn changes_plan(started: SessionsStarted, due: Option<DateTime<Utc>>) -> bool {
    match (started, due) {
        (SessionsStarted::Nothing, _) => false,
        (SessionsStarted::EndingFrom(end), Some(due)) => end - EXPIRING_WITHIN < due,
        (SessionsStarted::EndingFrom(_) | SessionsStarted::Unknown, _) => true,
    }
}

/// A session as the announcements need it.
#[derive(Clone, Debug, PartialEq)]
struct Session {
    checkin_id: Uuid,
    customer_id: Uuid,
    wristband: String,
    ends_at: DateTime<Utc>,
}

/// Sessions ending in `(after, until]`, earliest first.
fn sessions_ending(
    c: &Connection,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<Session>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, customer_id, wristband, ends_at FROM checkins
         WHERE ends_at > ?1 AND ends_at <= ?2 ORDER BY ends_at, id",
    )?;
    let rows = stmt.query_map(params![ts(after), ts(until)], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
    })?;
    rows.map(|row| {
        let (checkin_id, customer_id, wristband, ends_at) = row?;
        Ok(Session {
            checkin_id,
            customer_id,
            wristband,
            ends_at: parse_ts(&ends_at)?,
        })
    })
    .collect()
}

/// The earliest end of a session ending after `after`.
fn next_end_after(c: &Connection, after: DateTime<Utc>) -> anyhow::Result<Option<DateTime<Utc>>> {
    let next: Option<String> = c
        .prepare_cached("SELECT MIN(ends_at) FROM checkins WHERE ends_at > ?1")?
        .query_row([ts(after)], |r| r.get(0))?;
    next.map(|t| parse_ts(&t)).transpose()
}

/// Watches the venue's sessions and publishes their expiry announcements.
#[derive(Debug)]
pub struct SessionWatcher {
    replica: Arc<Replica>,
    hub: Arc<LiveHub>,
    clock: SharedClock,
    /// Sessions ending at or before this have been dealt with.
    expired_through: DateTime<Utc>,
    /// Sessions inside the warning window already warned about, with their end (dropped once
    /// ended). Bounded by the sessions ending within [`EXPIRING_WITHIN`].
    warned: HashMap<Uuid, DateTime<Utc>>,
}

impl SessionWatcher {
    /// Starts watching from the clock's "now", announcing nothing that is already due.
    pub fn start(
        replica: Arc<Replica>,
        hub: Arc<LiveHub>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let now = clock.now();
        // Indexed range reads of a handful of rows: in place (see `Replica::read_now`).
        let warned = replica
            .read_now(|c| sessions_ending(c, now, now + EXPIRING_WITHIN))?
            .into_iter()
            .map(|s| (s.checkin_id, s.ends_at))
            .collect();
        Ok(Self {
            replica,
            hub,
            clock,
            expired_through: now,
            warned,
        })
    }

    /// Publishes what is due now; returns when the next announcement falls due (`None`: no
    /// session is running).
    pub fn step(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let now = self.clock.now();
        let horizon = now + EXPIRING_WITHIN;
        let after = self.expired_through;
        let (ended, ending, next_end, next_warning) = self.replica.read_now(|c| {
            Ok((
                sessions_ending(c, after, now)?,
                sessions_ending(c, now, horizon)?,
                next_end_after(c, now)?,
                next_end_after(c, horizon)?,
            ))
        })?;
        for session in ended {
            self.warned.remove(&session.checkin_id);
            self.hub.publish(
                LiveEvent::SessionExpired {
                    checkin_id: session.checkin_id,
                    customer_id: session.customer_id,
                    wristband: session.wristband,
                    ends_at: session.ends_at,
                },
                now,
            );
        }
        self.expired_through = self.expired_through.max(now);
        for session in ending {
            if self.warned.contains_key(&session.checkin_id) {
                continue;
            }
            self.warned.insert(session.checkin_id, session.ends_at);
            self.hub.publish(
                LiveEvent::SessionExpiring {
                    checkin_id: session.checkin_id,
                    customer_id: session.customer_id,
                    wristband: session.wristband,
                    ends_at: session.ends_at,
                },
                now,
            );
        }
        self.warned.retain(|_, ends_at| *ends_at > now);
        let next_warning = next_warning.map(|end| end - EXPIRING_WITHIN);
        Ok(next_end.into_iter().chain(next_warning).min())
    }

    /// Steps whenever something falls due or a session starts that changes the plan, until
    /// `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut due = None;
        let mut replan = true;
        loop {
            if replan {
                due = self.step().unwrap_or_else(|err| {
                    tracing::warn!(error = format!("{err:#}"), "could not check jump sessions");
                    None
                });
            }
            let nap = nap(due, self.clock.now());
            replan = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(nap) => true,
                started = self.hub.sessions_started() => changes_plan(started, due),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Subscription;
    use crate::outbox::Writer;
    use crate::replica::venue::insert_checkin;
    use aero_shared::clock::{Clock, ManualClock};
    use aero_shared::wire::CheckinRecord;
    use chrono::TimeZone;
    use tokio::sync::broadcast::error::TryRecvError;

    struct Venue {
        _dir: tempfile::TempDir,
        replica: Arc<Replica>,
        writer: Writer,
        hub: Arc<LiveHub>,
    }

    fn venue() -> Venue {
        let dir = tempfile::tempdir().unwrap();
        let (replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).unwrap();
        Venue {
            _dir: dir,
            replica,
            writer: Writer::start(conn).unwrap(),
            hub: Arc::new(LiveHub::new()),
        }
    }

    async fn check_in(venue: &Venue, wristband: &str, ends_at: DateTime<Utc>) -> Uuid {
        let record = CheckinRecord {
            id: Uuid::now_v7(),
            site_id: Uuid::nil(),
            customer_id: Uuid::now_v7(),
            wristband: wristband.into(),
            product_id: Uuid::nil(),
            order_id: Some(Uuid::nil()),
            ledger_entry_id: None,
            starts_at: ends_at - chrono::Duration::hours(1),
            ends_at,
            created_at: ends_at - chrono::Duration::hours(1),
        };
        let id = record.id;
        venue
            .writer
            .write(move |c| insert_checkin(c, &record).map(drop))
            .await
            .unwrap();
        id
    }

    fn drain(subscription: &mut Subscription) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        loop {
            match subscription.live.try_recv() {
                Ok(e) => {
                    let wristband = match &e.event {
                        LiveEvent::SessionExpiring { wristband, .. }
                        | LiveEvent::SessionExpired { wristband, .. } => wristband.clone(),
                        other => panic!("unexpected {other:?}"),
                    };
                    seen.push((e.event.kind().to_string(), wristband));
                }
                Err(TryRecvError::Empty) => return seen,
                Err(err) => panic!("{err}"),
            }
        }
    }

    fn pair(kind: &str, wristband: &str) -> (String, String) {
        (kind.to_string(), wristband.to_string())
    }

    #[tokio::test]
    async fn each_session_is_warned_once_and_ended_once() {
        let venue = venue();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let clock = ManualClock::new(t0);
        let minutes = chrono::Duration::minutes;
        check_in(&venue, "A", t0 + minutes(10)).await;
        check_in(&venue, "B", t0 + minutes(12)).await;
        let mut feed = venue.hub.subscribe(None);
        let mut watcher = SessionWatcher::start(
            Arc::clone(&venue.replica),
            Arc::clone(&venue.hub),
            Arc::new(clock.clone()),
        )
        .unwrap();

        assert_eq!(watcher.step().unwrap(), Some(t0 + minutes(5)));
        assert!(drain(&mut feed).is_empty());
        clock.advance(minutes(5));
        assert_eq!(watcher.step().unwrap(), Some(t0 + minutes(7)));
        assert_eq!(drain(&mut feed), [pair("session_expiring", "A")]);
        // Stepping again at the same moment announces nothing twice.
        watcher.step().unwrap();
        assert!(drain(&mut feed).is_empty());
        clock.advance(minutes(6));
        watcher.step().unwrap();
        assert_eq!(
            drain(&mut feed),
            [pair("session_expired", "A"), pair("session_expiring", "B")]
        );
        clock.advance(minutes(1));
        assert_eq!(watcher.step().unwrap(), None);
        assert_eq!(drain(&mut feed), [pair("session_expired", "B")]);
        clock.advance(minutes(60));
        watcher.step().unwrap();
        assert!(drain(&mut feed).is_empty());
    }

    #[tokio::test]
    async fn after_a_restart_nothing_already_due_is_announced_again() {
        let venue = venue();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let minutes = chrono::Duration::minutes;
        check_in(&venue, "gone", t0 - minutes(30)).await;
        check_in(&venue, "warned", t0 + minutes(3)).await;
        check_in(&venue, "later", t0 + minutes(20)).await;
        let clock = ManualClock::new(t0);
        let mut feed = venue.hub.subscribe(None);
        let mut watcher = SessionWatcher::start(
            Arc::clone(&venue.replica),
            Arc::clone(&venue.hub),
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(watcher.step().unwrap(), Some(t0 + minutes(3)));
        assert!(drain(&mut feed).is_empty());
        clock.advance(minutes(3));
        watcher.step().unwrap();
        assert_eq!(drain(&mut feed), [pair("session_expired", "warned")]);
    }

    #[tokio::test]
    async fn a_short_session_checked_in_inside_the_window_is_warned_at_once() {
        let venue = venue();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let clock = ManualClock::new(t0);
        let mut watcher = SessionWatcher::start(
            Arc::clone(&venue.replica),
            Arc::clone(&venue.hub),
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(watcher.step().unwrap(), None);
        let mut feed = venue.hub.subscribe(None);
        clock.advance(chrono::Duration::minutes(1));
        check_in(&venue, "short", clock.now() + chrono::Duration::minutes(2)).await;
        watcher.step().unwrap();
        assert_eq!(drain(&mut feed), [pair("session_expiring", "short")]);
    }

    #[tokio::test]
    async fn the_running_watcher_wakes_for_a_new_check_in_and_when_nudged() {
        let venue = venue();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let clock = ManualClock::new(t0);
        let watcher = SessionWatcher::start(
            Arc::clone(&venue.replica),
            Arc::clone(&venue.hub),
            Arc::new(clock.clone()),
        )
        .unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(watcher.run(stop));
        let mut feed = venue.hub.subscribe(None);
        // A session that is short from the start: the check-in alone wakes the watcher.
        let ends_at = t0 + chrono::Duration::minutes(4);
        let checkin_id = check_in(&venue, "W7", ends_at).await;
        venue.hub.publish(
            LiveEvent::Checkin {
                checkin_id,
                customer_id: Uuid::nil(),
                wristband: "W7".into(),
                product_id: Uuid::nil(),
                ends_at,
            },
            clock.now(),
        );
        let within = std::time::Duration::from_secs(10);
        assert_eq!(feed_kind(&mut feed, within).await, "checkin");
        assert_eq!(feed_kind(&mut feed, within).await, "session_expiring");
        clock.advance(chrono::Duration::minutes(4));
        venue.hub.sessions_changed();
        let expired = tokio::time::timeout(within, feed.live.recv())
            .await
            .expect("the end of the session")
            .unwrap();
        assert_eq!(expired.event.kind(), "session_expired");
        assert_eq!(expired.at, ends_at);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    async fn feed_kind(feed: &mut Subscription, within: std::time::Duration) -> &'static str {
        tokio::time::timeout(within, feed.live.recv())
            .await
            .expect("an event")
            .unwrap()
            .event
            .kind()
    }

    #[test]
    fn the_watcher_naps_until_the_next_announcement_at_most_a_minute() {
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let seconds = chrono::Duration::seconds;
        assert_eq!(nap(Some(t0 + seconds(7)), t0), Duration::from_secs(7));
        assert_eq!(nap(Some(t0 - seconds(7)), t0), Duration::ZERO);
        assert_eq!(nap(Some(t0 + seconds(3600)), t0), MAX_NAP);
        assert_eq!(nap(None, t0), MAX_NAP);
    }

    #[test]
    fn only_a_session_to_announce_before_the_plan_makes_the_watcher_read_again() {
        let due = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let ending = |end| SessionsStarted::EndingFrom(end);
        // Warned at `due` or later: the step at `due` finds it.
        assert!(!changes_plan(ending(due + EXPIRING_WITHIN), Some(due)));
        assert!(!changes_plan(
            ending(due + chrono::Duration::hours(1)),
            Some(due)
        ));
        // Warned before `due`, or nothing planned at all: read the sessions again.
        let sooner = due + EXPIRING_WITHIN - chrono::Duration::milliseconds(1);
        assert!(changes_plan(ending(sooner), Some(due)));
        assert!(changes_plan(ending(due + chrono::Duration::hours(1)), None));
        assert!(changes_plan(SessionsStarted::Unknown, Some(due)));
        assert!(!changes_plan(SessionsStarted::Nothing, Some(due)));
    }

    #[tokio::test]
    async fn the_hub_tells_the_watcher_the_soonest_end_of_the_sessions_started() {
        let hub = LiveHub::new();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        let checkin = |minutes| LiveEvent::Checkin {
            checkin_id: Uuid::now_v7(),
            customer_id: Uuid::nil(),
            wristband: "W1".into(),
            product_id: Uuid::nil(),
            ends_at: t0 + chrono::Duration::minutes(minutes),
        };
        hub.publish(checkin(60), t0);
        hub.publish(checkin(30), t0);
        hub.publish(checkin(90), t0);
        assert_eq!(
            hub.sessions_started().await,
            SessionsStarted::EndingFrom(t0 + chrono::Duration::minutes(30))
        );
        hub.publish(checkin(10), t0);
        hub.sessions_changed();
        assert_eq!(hub.sessions_started().await, SessionsStarted::Unknown);
    }
}

//! What each plug should be doing: its schedules (cron expressions in the site's timezone) and
//! its overrides, evaluated at an instant the caller names. Only [`DesiredTracker::run`] reads a
//! clock, and it takes that clock as a parameter.
//!
//! The rules, in the order they apply:
//!
//! - **Overrides replace each other.** The override set last (greatest `set_at`, then greatest
//!   id) is the plug's override. It is in force from its `set_at` until its `until`; from `until`
//!   on the schedules govern again, even if an override set before it would still be running.
//! - **The latest schedule event wins.** Otherwise the desired state is that of the latest
//!   schedule event at or before `now`, so an event missed while the plug or the edge was down
//!   still applies when it comes back. With no event within the look-back
//!   ([`DEFAULT_LOOKBACK`]) there is no desired state, and the plug is left as it is.
//! - **Each wall-clock time fires once.** An expression names local wall-clock times. A time
//!   that happens twice (the hour repeated when the clocks go back) fires once, at its first
//!   occurrence. A time that never happens (the hour skipped when the clocks go forward) fires
//!   at the instant the clocks jump, so "on at 02:30" in New York still switches the plug on
//!   on the spring-forward day, at 03:00 EDT. Left to itself, the `cron` crate skips such a
//!   time and fires a repeated one twice: expressions are therefore run in UTC, where every
//!   wall-clock time exists once, and [`instant_of`] places each time in the site's zone.
//! - **Ties.** Events that land on the same instant are ordered by their wall-clock time (the
//!   times a spring gap skipped all land on the jump, and keep their order). At the same
//!   wall-clock time `off` beats `on`, so contradicting schedules can never leave equipment
//!   powered; between schedules that agree, the greater id (UUIDv7: created last) is named.

use aero_shared::clock::SharedClock;
pub use aero_shared::cron_expr::{CronError, MAX_CRON_LEN, parse_cron};
use aero_shared::wire::{PowerState, ScheduleRecord};
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// How far back a schedule event still sets the desired state. A week covers every cycle a
/// venue's opening hours follow (weekdays and weekends); the extra day covers a 25-hour DST day
/// and the plug or edge coming back after it. An event older than this has been applied or
/// superseded long ago, so a schedule that fires less often (monthly, yearly) asserts its
/// state for this long after each firing and then leaves the plug alone. Adjustable per plan
/// with [`PlugPlan::with_lookback`].
pub const DEFAULT_LOOKBACK: Duration = Duration::days(8);

/// Longest run of wall-clock minutes a DST or zone change skips. The largest in the tz database
/// is a whole day (Samoa crossing the date line in 2011).
const MAX_GAP_MINUTES: i64 = 24 * 60 + 60;

/// The instant a wall-clock time of `tz` fires at: its first occurrence when the clocks go
/// back, and the moment the clocks jump when they skip it.
pub fn instant_of(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The instant the clocks jumped over `local`. Zone transitions fall on whole minutes (every
/// one in the tz database since 1970), so the first wall-clock minute after `local` that exists
/// is where the clocks landed.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let minute = local
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(local);
    (1..=MAX_GAP_MINUTES)
        .find_map(|m| {
            tz.from_local_datetime(&(minute + Duration::minutes(m)))
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&local),
            |at| at.with_timezone(&Utc),
        )
}

/// The latest wall-clock time `tz` showed at any instant up to `now`. That is `now`'s own
/// unless `now` is in the repeat of an hour the clocks went back over: then the end of the
/// first pass was later, and times up to `now` plus the first pass's offset have fired.
fn wall_clock_ceiling(tz: Tz, now: DateTime<Utc>) -> NaiveDateTime {
    let local = now.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&local) {
        LocalResult::Ambiguous(first, _) => {
            let offset = first.offset().fix().local_minus_utc();
            now.naive_utc() + Duration::seconds(i64::from(offset))
        }
        _ => local,
    }
}

/// A wall-clock time as the `cron` crate iterates it: in UTC, where every one exists once.
fn as_wall_clock(local: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&local)
}

/// One firing of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduleEvent {
    /// When it takes effect.
    pub at: DateTime<Utc>,
    /// The wall-clock time the expression names. Not the local time of `at` when a spring gap
    /// skipped it.
    pub local: NaiveDateTime,
    pub schedule_id: Uuid,
    pub state: PowerState,
}

impl ScheduleEvent {
    /// Of two events, the greater key is the later one (see the module's rules on ties).
    fn precedence(&self) -> (DateTime<Utc>, NaiveDateTime, bool, Uuid) {
        (
            self.at,
            self.local,
            self.state == PowerState::Off,
            self.schedule_id,
        )
    }
}

/// One of a plug's schedules, parsed.
#[derive(Clone, Debug)]
pub struct PlugSchedule {
    pub id: Uuid,
    pub state: PowerState,
    cron: cron::Schedule,
}

impl PlugSchedule {
    pub fn new(id: Uuid, expression: &str, state: PowerState) -> Result<Self, CronError> {
        Ok(Self {
            id,
            state,
            cron: parse_cron(expression)?,
        })
    }

    pub fn from_record(record: &ScheduleRecord) -> Result<Self, CronError> {
        Self::new(record.id, &record.cron, record.state)
    }

    pub fn expression(&self) -> &str {
        self.cron.source()
    }

    fn event(&self, tz: Tz, local: NaiveDateTime) -> ScheduleEvent {
        ScheduleEvent {
            at: instant_of(tz, local),
            local,
            schedule_id: self.id,
            state: self.state,
        }
    }

    /// This schedule's latest event at or before `now`, if it is later than `after`.
    fn last_event(
        &self,
        tz: Tz,
        now: DateTime<Utc>,
        after: DateTime<Utc>,
    ) -> Option<ScheduleEvent> {
        // The crate's reverse iteration starts strictly before its argument, at whole seconds.
        let ceiling = wall_clock_ceiling(tz, now);
        let start = ceiling.with_nanosecond(0).unwrap_or(ceiling) + Duration::seconds(1);
        // Instants never decrease with wall-clock times, so walking back the first event at or
        // before `now` is the latest; the ones skipped before it are the rest of a repeated hour.
        self.cron
            .after(&as_wall_clock(start))
            .rev()
            .map(|wall| self.event(tz, wall.naive_utc()))
            .find(|event| event.at <= now)
            .filter(|event| event.at > after)
    }

    /// This schedule's first event after `now`.
    fn next_event(&self, tz: Tz, now: DateTime<Utc>) -> Option<ScheduleEvent> {
        let local = now.with_timezone(&tz).naive_local();
        // Skips the times of a repeated hour that already fired in its first pass.
        self.cron
            .after(&as_wall_clock(local))
            .map(|wall| self.event(tz, wall.naive_utc()))
            .find(|event| event.at > now)
    }
}

/// A manual "on" or "off" from HQ or a manager, holding until a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub id: Uuid,
    pub state: PowerState,
    /// When it was set, by the server that accepted it (the edge for a manager, central for
    /// HQ), never by a terminal. Decides which of several overrides counts, and when it starts.
    pub set_at: DateTime<Utc>,
    /// The first instant the schedules govern again.
    pub until: DateTime<Utc>,
}

/// What a plug should be doing, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Desired {
    /// No override in force and no schedule event within the look-back: leave the plug alone.
    Unset,
    /// The latest schedule event, which took effect at `since`.
    Schedule {
        state: PowerState,
        schedule_id: Uuid,
        since: DateTime<Utc>,
    },
    /// An override, in force until `until`.
    Override {
        state: PowerState,
        override_id: Uuid,
        until: DateTime<Utc>,
    },
}

impl Desired {
    pub fn state(&self) -> Option<PowerState> {
        match self {
            Self::Unset => None,
            Self::Schedule { state, .. } | Self::Override { state, .. } => Some(*state),
        }
    }
}

/// Everything that decides one plug's desired state: its site's timezone, its schedules and
/// its overrides.
#[derive(Clone, Debug)]
pub struct PlugPlan {
    tz: Tz,
    schedules: Vec<PlugSchedule>,
    overrides: Vec<Override>,
    lookback: Duration,
}

impl PlugPlan {
    pub fn new(tz: Tz, schedules: Vec<PlugSchedule>, overrides: Vec<Override>) -> Self {
        Self {
            tz,
            schedules,
            overrides,
            lookback: DEFAULT_LOOKBACK,
        }
    }

    /// The same plan with schedule events counting for `lookback` instead of
    /// [`DEFAULT_LOOKBACK`].
    pub fn with_lookback(self, lookback: Duration) -> Self {
        Self { lookback, ..self }
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The desired state at `now`.
    pub fn desired_at(&self, now: DateTime<Utc>) -> Desired {
        if let Some(o) = self.override_at(now) {
            return Desired::Override {
                state: o.state,
                override_id: o.id,
                until: o.until,
            };
        }
        self.last_event(now)
            .map_or(Desired::Unset, |event| Desired::Schedule {
                state: event.state,
                schedule_id: event.schedule_id,
                since: event.at,
            })
    }

    /// The override in force at `now`: the one set last, if it has not ended.
    pub fn override_at(&self, now: DateTime<Utc>) -> Option<&Override> {
        self.overrides
            .iter()
            .filter(|o| o.set_at <= now)
            .max_by_key(|o| (o.set_at, o.id))
            .filter(|o| o.until > now)
    }

    /// The schedule event that governs at `now`: the latest at or before it, within the
    /// look-back. Overrides are not considered.
    pub fn last_event(&self, now: DateTime<Utc>) -> Option<ScheduleEvent> {
        let after = now - self.lookback;
        self.schedules
            .iter()
            .filter_map(|s| s.last_event(self.tz, now, after))
            .max_by_key(ScheduleEvent::precedence)
    }

    /// The first schedule event after `now`: the one that will govern at that instant when
    /// several land on it.
    pub fn next_event(&self, now: DateTime<Utc>) -> Option<ScheduleEvent> {
        let at = self
            .schedules
            .iter()
            .filter_map(|s| s.next_event(self.tz, now))
            .map(|event| event.at)
            .min()?;
        self.last_event(at)
    }

    /// The first instant after `now` at which [`Self::desired_at`] may change: a schedule
    /// event, an override starting or ending, or the latest event leaving the look-back.
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next_event = self.next_event(now).map(|event| event.at);
        let forgotten = self.last_event(now).map(|event| event.at + self.lookback);
        let override_end = self.override_at(now).map(|o| o.until);
        let override_start = self
            .overrides
            .iter()
            .map(|o| o.set_at)
            .filter(|set_at| *set_at > now)
            .min();
        [next_event, forgotten, override_end, override_start]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Every plug's plan, by plug id, as the tracker follows them.
pub type Plans = Arc<HashMap<Uuid, PlugPlan>>;

/// One plug's desired state changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DesiredChange {
    pub plug_id: Uuid,
    /// The clock's time when the change was noticed.
    pub at: DateTime<Utc>,
    pub desired: Desired,
}

/// Longest the tracker sleeps without looking again: the wall clock can be set while it sleeps.
const MAX_NAP: std::time::Duration = std::time::Duration::from_secs(60);

/// Follows every plug's desired state through time and reports each change once.
#[derive(Debug, Default)]
pub struct DesiredTracker {
    /// What was last reported per plug, so an unchanged state is not reported again.
    reported: HashMap<Uuid, Desired>,
}

impl DesiredTracker {
    /// The plugs whose desired state at `now` differs from what was last reported (every plug
    /// the first time it is seen), and the next instant one may change.
    pub fn step(
        &mut self,
        plans: &HashMap<Uuid, PlugPlan>,
        now: DateTime<Utc>,
    ) -> (Vec<DesiredChange>, Option<DateTime<Utc>>) {
        self.reported
            .retain(|plug_id, _| plans.contains_key(plug_id));
        let mut changes = Vec::new();
        let mut due: Option<DateTime<Utc>> = None;
        for (plug_id, plan) in plans {
            let desired = plan.desired_at(now);
            if self.reported.insert(*plug_id, desired) != Some(desired) {
                changes.push(DesiredChange {
                    plug_id: *plug_id,
                    at: now,
                    desired,
                });
            }
            if let Some(next) = plan.next_change(now) {
                debug_assert!(
                    next > now,
                    "plug {plug_id}: next change {next} is not after {now}"
                );
                due = Some(due.map_or(next, |due| due.min(next)));
            }
        }
        changes.sort_by_key(|change| change.plug_id);
        (changes, due)
    }

    /// Steps whenever a desired state may change or the plans do, sending each change to
    /// `changes`, until `stop` turns true or nobody receives the changes any more.
    pub async fn run(
        mut self,
        mut plans: watch::Receiver<Plans>,
        clock: SharedClock,
        changes: mpsc::Sender<DesiredChange>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut plans_open = true;
        loop {
            let current = Arc::clone(&plans.borrow_and_update());
            let (found, due) = self.step(&current, clock.now());
            for change in found {
                if changes.send(change).await.is_err() {
                    return;
                }
            }
            let nap = due.map_or(MAX_NAP, |due| {
                (due - clock.now())
                    .to_std()
                    .unwrap_or(std::time::Duration::ZERO)
                    .min(MAX_NAP)
            });
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(nap) => {}
                changed = plans.changed(), if plans_open => plans_open = changed.is_ok(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PowerState::{Off, On};
    use aero_shared::clock::Clock;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::London;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, 0))
            .unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A plan whose schedules get ids 1, 2, ... in the order given.
    fn plan(tz: Tz, schedules: &[(&str, PowerState)]) -> PlugPlan {
        let schedules = schedules
            .iter()
            .zip(1..)
            .map(|((cron, state), n)| PlugSchedule::new(id(n), cron, *state).unwrap())
            .collect();
        PlugPlan::new(tz, schedules, Vec::new())
    }

    fn scheduled(state: PowerState, schedule: u128, since: DateTime<Utc>) -> Desired {
        Desired::Schedule {
            state,
            schedule_id: id(schedule),
            since,
        }
    }

    fn overridden(state: PowerState, id: Uuid, until: DateTime<Utc>) -> Desired {
        Desired::Override {
            state,
            override_id: id,
            until,
        }
    }

    /// Consecutive next events after `from` up to `until`, each strictly later than the one
    /// before (a walk that stalls fails here rather than looping).
    fn events_between(
        plan: &PlugPlan,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<ScheduleEvent> {
        let mut events = Vec::new();
        let mut now = from;
        while let Some(event) = plan.next_event(now).filter(|event| event.at <= until) {
            assert!(event.at > now, "next event {event:?} is not after {now}");
            now = event.at;
            events.push(event);
        }
        events
    }

    #[test]
    fn the_cron_crate_alone_skips_a_spring_gap_and_fires_a_repeated_time_twice() {
        // Why wall-clock times are placed by `instant_of` rather than by the crate.
        let cron = parse_cron("0 30 1 * * *").unwrap();
        let from = utc(2026, 3, 28, 12, 0, 0).with_timezone(&London);
        let next: Vec<_> = cron.after(&from).take(1).map(|t| t.to_utc()).collect();
        assert_eq!(next, [utc(2026, 3, 30, 0, 30, 0)], "29 March has no 01:30");
        let from = utc(2026, 10, 24, 12, 0, 0).with_timezone(&London);
        let next: Vec<_> = cron.after(&from).take(2).map(|t| t.to_utc()).collect();
        assert_eq!(
            next,
            [utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 25, 1, 30, 0)],
            "01:30 BST and 01:30 GMT"
        );
    }

    #[test]
    fn wall_clock_times_skipped_or_repeated_by_dst_get_one_instant() {
        // London skips 01:00-02:00 on 29 March 2026 (the clocks jump at 01:00 UTC)...
        assert_eq!(
            instant_of(London, local(2026, 3, 29, 1, 30)),
            utc(2026, 3, 29, 1, 0, 0)
        );
        // ...and repeats it on 25 October 2026: the first pass is BST.
        assert_eq!(
            instant_of(London, local(2026, 10, 25, 1, 30)),
            utc(2026, 10, 25, 0, 30, 0)
        );
        // New York skips 02:00-03:00 on 8 March 2026, jumping at 07:00 UTC.
        assert_eq!(
            instant_of(New_York, local(2026, 3, 8, 2, 30)),
            utc(2026, 3, 8, 7, 0, 0)
        );
        assert_eq!(
            instant_of(New_York, local(2026, 11, 1, 1, 30)),
            utc(2026, 11, 1, 5, 30, 0)
        );
        assert_eq!(
            instant_of(New_York, local(2026, 7, 1, 9, 0)),
            utc(2026, 7, 1, 13, 0, 0)
        );
    }

    #[test]
    fn london_spring_forward_a_skipped_time_fires_when_the_clocks_jump() {
        let plan = plan(London, &[("0 30 1 * * *", On), ("0 0 12 * * *", Off)]);
        assert_eq!(
            plan.desired_at(utc(2026, 3, 29, 0, 59, 59)),
            scheduled(Off, 2, utc(2026, 3, 28, 12, 0, 0))
        );
        assert_eq!(
            plan.desired_at(utc(2026, 3, 29, 1, 0, 0)),
            scheduled(On, 1, utc(2026, 3, 29, 1, 0, 0))
        );
        assert_eq!(
            plan.next_event(utc(2026, 3, 28, 12, 0, 0)),
            Some(ScheduleEvent {
                at: utc(2026, 3, 29, 1, 0, 0),
                local: local(2026, 3, 29, 1, 30),
                schedule_id: id(1),
                state: On,
            })
        );
        let after_the_jump: Vec<_> =
            events_between(&plan, utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 12, 0, 0))
                .iter()
                .map(|event| (event.at, event.state))
                .collect();
        assert_eq!(
            after_the_jump,
            [
                (utc(2026, 3, 29, 11, 0, 0), Off),
                (utc(2026, 3, 30, 0, 30, 0), On),
                (utc(2026, 3, 30, 11, 0, 0), Off),
            ]
        );
    }

    #[test]
    fn new_york_spring_forward_skipped_times_keep_their_local_order() {
        // 02:15 and 02:45 both land on the jump (03:00 EDT); the later wall-clock time governs,
        // even though `off` beats `on` between events at the same wall-clock time.
        let plan = plan(
            New_York,
            &[
                ("0 15 2 * * *", Off),
                ("0 45 2 * * *", On),
                ("0 0 20 * * *", Off),
            ],
        );
        let jump = utc(2026, 3, 8, 7, 0, 0);
        assert_eq!(
            plan.desired_at(jump - Duration::seconds(1)),
            scheduled(Off, 3, utc(2026, 3, 8, 1, 0, 0))
        );
        assert_eq!(plan.desired_at(jump), scheduled(On, 2, jump));
        let next = plan.next_event(jump - Duration::seconds(1)).unwrap();
        assert_eq!(
            (next.at, next.local, next.state),
            (jump, local(2026, 3, 8, 2, 45), On)
        );
        // The next day both times exist again, in EDT, each at its own instant.
        assert_eq!(
            plan.desired_at(utc(2026, 3, 9, 6, 30, 0)),
            scheduled(Off, 1, utc(2026, 3, 9, 6, 15, 0))
        );
        assert_eq!(
            plan.desired_at(utc(2026, 3, 9, 6, 45, 0)),
            scheduled(On, 2, utc(2026, 3, 9, 6, 45, 0))
        );
    }

    #[test]
    fn london_fall_back_a_repeated_time_fires_once() {
        let plan = plan(London, &[("0 30 1 * * *", On), ("0 45 1 * * *", Off)]);
        // First pass of 01:00-02:00 (BST).
        assert_eq!(
            plan.desired_at(utc(2026, 10, 25, 0, 40, 0)),
            scheduled(On, 1, utc(2026, 10, 25, 0, 30, 0))
        );
        // The repeat (GMT): 01:10 shows an earlier wall-clock time than both events, yet both
        // have fired; at 01:35 GMT the 01:30 event does not fire again.
        for now in [utc(2026, 10, 25, 1, 10, 0), utc(2026, 10, 25, 1, 35, 0)] {
            assert_eq!(
                plan.desired_at(now),
                scheduled(Off, 2, utc(2026, 10, 25, 0, 45, 0)),
                "at {now}"
            );
            let next = plan.next_event(now).unwrap();
            assert_eq!((next.at, next.state), (utc(2026, 10, 26, 1, 30, 0), On));
        }
    }

    #[test]
    fn new_york_fall_back_fires_once_and_next_event_skips_the_repeat() {
        let plan = plan(New_York, &[("0 30 1 * * *", On), ("0 0 3 * * *", Off)]);
        let events: Vec<_> = events_between(
            &plan,
            utc(2026, 10, 31, 12, 0, 0),
            utc(2026, 11, 2, 12, 0, 0),
        )
        .iter()
        .map(|event| (event.at, event.state))
        .collect();
        assert_eq!(
            events,
            [
                (utc(2026, 11, 1, 5, 30, 0), On),
                (utc(2026, 11, 1, 8, 0, 0), Off),
                (utc(2026, 11, 2, 6, 30, 0), On),
                (utc(2026, 11, 2, 8, 0, 0), Off),
            ]
        );
        // 01:45 EST, in the repeated hour: still the one 01:30 event (EDT).
        assert_eq!(
            plan.desired_at(utc(2026, 11, 1, 6, 45, 0)),
            scheduled(On, 1, utc(2026, 11, 1, 5, 30, 0))
        );
    }

    #[test]
    fn a_frequent_schedule_fires_once_per_wall_clock_time_through_both_transitions() {
        let plan = plan(London, &[("0 */15 * * * *", On)]);
        let at = |events: Vec<ScheduleEvent>| -> Vec<_> { events.iter().map(|e| e.at).collect() };
        // Spring: the four skipped quarter hours and 02:00 BST are one event at the jump.
        assert_eq!(
            at(events_between(
                &plan,
                utc(2026, 3, 29, 0, 50, 0),
                utc(2026, 3, 29, 1, 30, 0)
            )),
            [
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 1, 15, 0),
                utc(2026, 3, 29, 1, 30, 0),
            ]
        );
        // Autumn: 01:00-01:45 fire in BST only, then nothing until 02:00 GMT.
        assert_eq!(
            at(events_between(
                &plan,
                utc(2026, 10, 24, 23, 50, 0),
                utc(2026, 10, 25, 2, 15, 0)
            )),
            [
                utc(2026, 10, 25, 0, 0, 0),
                utc(2026, 10, 25, 0, 15, 0),
                utc(2026, 10, 25, 0, 30, 0),
                utc(2026, 10, 25, 0, 45, 0),
                utc(2026, 10, 25, 2, 0, 0),
                utc(2026, 10, 25, 2, 15, 0),
            ]
        );
    }

    #[test]
    fn walking_forward_and_looking_back_agree_across_dst() {
        let schedules = [
            ("0 30 1 * * *", On),
            ("0 45 1 * * *", Off),
            ("0 15 2 * * *", On),
            ("0 45 2 * * *", Off),
            ("0 0 3 * * *", On),
            ("0 0 */6 * * *", Off),
            ("30 10 1 * * *", On),
        ];
        let windows = [
            (London, utc(2026, 3, 28, 12, 0, 0)),
            (London, utc(2026, 10, 24, 12, 0, 0)),
            (New_York, utc(2026, 3, 7, 12, 0, 0)),
            (New_York, utc(2026, 10, 31, 12, 0, 0)),
        ];
        for (tz, start) in windows {
            let plan = plan(tz, &schedules);
            let end = start + Duration::days(2);
            let walked = events_between(&plan, start - Duration::days(1), end);
            let mut sample = start;
            while sample <= end {
                let expected = walked
                    .iter()
                    .rfind(|event| event.at <= sample)
                    .map(|event| scheduled(event.state, event.schedule_id.as_u128(), event.at));
                assert_eq!(Some(plan.desired_at(sample)), expected, "{tz} at {sample}");
                sample += Duration::seconds(150);
            }
            for event in walked.iter().filter(|event| event.at > start) {
                assert_eq!(
                    plan.desired_at(event.at).state(),
                    Some(event.state),
                    "{tz} at {}",
                    event.at
                );
            }
        }
    }

    #[test]
    fn a_missed_on_applies_when_the_edge_comes_back() {
        let plan = plan(London, &[("0 0 9 * * *", On), ("0 0 22 * * *", Off)]);
        // Down from 08:00 to 15:00: the 09:00 "on" was never seen happening.
        assert_eq!(
            plan.desired_at(utc(2026, 1, 10, 15, 0, 0)),
            scheduled(On, 1, utc(2026, 1, 10, 9, 0, 0))
        );
        // Down for three days: the latest event counts, not the first one missed.
        assert_eq!(
            plan.desired_at(utc(2026, 1, 13, 10, 30, 0)),
            scheduled(On, 1, utc(2026, 1, 13, 9, 0, 0))
        );
        assert_eq!(
            plan.desired_at(utc(2026, 1, 13, 23, 0, 0)),
            scheduled(Off, 2, utc(2026, 1, 13, 22, 0, 0))
        );
    }

    #[test]
    fn without_an_event_in_the_lookback_the_plug_is_left_alone() {
        let monthly = plan(London, &[("0 0 9 1 * *", On)]);
        let fired = utc(2026, 1, 1, 9, 0, 0);
        assert_eq!(
            monthly.desired_at(fired + DEFAULT_LOOKBACK - Duration::seconds(1)),
            scheduled(On, 1, fired)
        );
        assert_eq!(monthly.desired_at(fired + DEFAULT_LOOKBACK), Desired::Unset);
        assert_eq!(
            monthly.desired_at(fired - Duration::seconds(1)),
            Desired::Unset
        );
        assert_eq!(
            monthly.next_change(utc(2026, 1, 5, 0, 0, 0)),
            Some(fired + DEFAULT_LOOKBACK),
            "the event leaving the look-back is a change"
        );
        assert_eq!(
            monthly.next_change(fired + DEFAULT_LOOKBACK),
            Some(utc(2026, 2, 1, 9, 0, 0))
        );
        let longer = monthly.with_lookback(Duration::days(40));
        assert_eq!(
            longer.desired_at(utc(2026, 1, 20, 0, 0, 0)),
            scheduled(On, 1, fired)
        );
        let empty = PlugPlan::new(London, Vec::new(), Vec::new());
        assert_eq!(empty.desired_at(fired), Desired::Unset);
        assert_eq!(empty.next_event(fired), None);
        assert_eq!(empty.next_change(fired), None);
    }

    #[test]
    fn simultaneous_events_off_wins_and_the_newest_agreeing_schedule_is_named() {
        let at_nine = utc(2026, 1, 10, 9, 0, 0);
        for order in [[On, Off], [Off, On]] {
            let plan = plan(
                London,
                &[("0 0 9 * * *", order[0]), ("0 0 9 * * *", order[1])],
            );
            let off_id = if order[0] == Off { 1 } else { 2 };
            assert_eq!(plan.desired_at(at_nine), scheduled(Off, off_id, at_nine));
            let next = plan.next_event(at_nine - Duration::hours(1)).unwrap();
            assert_eq!((next.state, next.schedule_id), (Off, id(off_id)));
        }
        let agreeing = plan(London, &[("0 0 9 * * *", On), ("0 0 9 * * *", On)]);
        assert_eq!(agreeing.desired_at(at_nine), scheduled(On, 2, at_nine));
    }

    #[test]
    fn an_override_wins_until_it_ends_then_the_schedules_govern() {
        let maintenance = Override {
            id: id(100),
            state: Off,
            set_at: utc(2026, 1, 10, 10, 0, 0),
            until: utc(2026, 1, 10, 12, 0, 0),
        };
        let late_party = Override {
            id: id(101),
            state: On,
            set_at: utc(2026, 1, 10, 21, 0, 0),
            until: utc(2026, 1, 10, 23, 0, 0),
        };
        let base = plan(London, &[("0 0 9 * * *", On), ("0 0 22 * * *", Off)]);
        let plan = PlugPlan::new(
            London,
            base.schedules.clone(),
            vec![maintenance, late_party],
        );
        let morning = scheduled(On, 1, utc(2026, 1, 10, 9, 0, 0));
        assert_eq!(plan.desired_at(utc(2026, 1, 10, 9, 59, 59)), morning);
        assert_eq!(
            plan.next_change(utc(2026, 1, 10, 9, 30, 0)),
            Some(maintenance.set_at)
        );
        let off = overridden(Off, maintenance.id, maintenance.until);
        assert_eq!(plan.desired_at(maintenance.set_at), off);
        assert_eq!(plan.desired_at(utc(2026, 1, 10, 11, 59, 59)), off);
        assert_eq!(
            plan.next_change(utc(2026, 1, 10, 10, 30, 0)),
            Some(maintenance.until)
        );
        assert_eq!(plan.desired_at(maintenance.until), morning);
        // An override spanning a schedule event holds through it.
        assert_eq!(
            plan.desired_at(utc(2026, 1, 10, 22, 30, 0)),
            overridden(On, late_party.id, late_party.until)
        );
        assert_eq!(
            plan.desired_at(late_party.until),
            scheduled(Off, 2, utc(2026, 1, 10, 22, 0, 0))
        );
    }

    #[test]
    fn the_override_set_last_replaces_the_earlier_ones() {
        let from_hq = Override {
            id: id(200),
            state: On,
            set_at: utc(2026, 1, 10, 10, 0, 0),
            until: utc(2026, 1, 10, 20, 0, 0),
        };
        let from_manager = Override {
            id: id(201),
            state: Off,
            set_at: utc(2026, 1, 10, 11, 0, 0),
            until: utc(2026, 1, 10, 12, 0, 0),
        };
        let schedules = plan(London, &[("0 0 9 * * *", On)]).schedules;
        for overrides in [vec![from_hq, from_manager], vec![from_manager, from_hq]] {
            let plan = PlugPlan::new(London, schedules.clone(), overrides);
            assert_eq!(
                plan.desired_at(utc(2026, 1, 10, 10, 30, 0)),
                overridden(On, from_hq.id, from_hq.until)
            );
            assert_eq!(
                plan.desired_at(utc(2026, 1, 10, 11, 30, 0)),
                overridden(Off, from_manager.id, from_manager.until)
            );
            // The manager's override replaced HQ's: when it ends, the schedule governs.
            assert_eq!(
                plan.desired_at(utc(2026, 1, 10, 12, 30, 0)),
                scheduled(On, 1, utc(2026, 1, 10, 9, 0, 0))
            );
        }
    }

    /// Wall-clock time that follows tokio's clock, so paused-time tests move both together.
    #[derive(Debug)]
    struct TokioClock {
        origin: DateTime<Utc>,
        started: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            self.origin + Duration::from_std(self.started.elapsed()).unwrap()
        }
    }

    struct Running {
        plans: watch::Sender<Plans>,
        changes: mpsc::Receiver<DesiredChange>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        clock: Arc<TokioClock>,
    }

    fn start(origin: DateTime<Utc>, plans: HashMap<Uuid, PlugPlan>) -> Running {
        let clock = Arc::new(TokioClock {
            origin,
            started: tokio::time::Instant::now(),
        });
        let (plans_tx, plans_rx) = watch::channel(Arc::new(plans));
        let (changes_tx, changes) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        let shared: SharedClock = Arc::clone(&clock) as SharedClock;
        let task =
            tokio::spawn(DesiredTracker::default().run(plans_rx, shared, changes_tx, stop_rx));
        Running {
            plans: plans_tx,
            changes,
            stop,
            task,
            clock,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracker_wakes_at_each_event_across_the_spring_gap() {
        let plug = id(7);
        let origin = utc(2026, 3, 28, 12, 0, 0);
        let plans = HashMap::from([(
            plug,
            plan(London, &[("0 30 1 * * *", On), ("0 0 6 * * *", Off)]),
        )]);
        let mut running = start(origin, plans);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let change = running.changes.recv().await.unwrap();
            assert_eq!(change.plug_id, plug);
            seen.push((change.at, change.desired));
        }
        assert_eq!(
            seen,
            [
                (origin, scheduled(Off, 2, utc(2026, 3, 28, 6, 0, 0))),
                (
                    utc(2026, 3, 29, 1, 0, 0),
                    scheduled(On, 1, utc(2026, 3, 29, 1, 0, 0))
                ),
                (
                    utc(2026, 3, 29, 5, 0, 0),
                    scheduled(Off, 2, utc(2026, 3, 29, 5, 0, 0))
                ),
                (
                    utc(2026, 3, 30, 0, 30, 0),
                    scheduled(On, 1, utc(2026, 3, 30, 0, 30, 0))
                ),
                (
                    utc(2026, 3, 30, 5, 0, 0),
                    scheduled(Off, 2, utc(2026, 3, 30, 5, 0, 0))
                ),
            ]
        );
        running.stop.send(true).unwrap();
        running.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracker_reports_a_new_override_at_once_and_its_end_on_time() {
        let plug = id(8);
        let origin = utc(2026, 11, 1, 4, 0, 0);
        // New York, the fall-back night: on at 01:30 (fires once, 05:30 UTC).
        let schedules = plan(New_York, &[("0 30 1 * * *", On)]).schedules;
        let plan_with = |overrides| PlugPlan::new(New_York, schedules.clone(), overrides);
        let mut running = start(origin, HashMap::from([(plug, plan_with(Vec::new()))]));
        let first = running.changes.recv().await.unwrap();
        assert_eq!(first.desired, scheduled(On, 1, utc(2026, 10, 31, 5, 30, 0)));
        tokio::time::sleep(std::time::Duration::from_secs(20 * 60)).await;
        let set_at = running.clock.now();
        let hold = Override {
            id: id(300),
            state: Off,
            set_at,
            until: utc(2026, 11, 1, 6, 15, 0),
        };
        running
            .plans
            .send(Arc::new(HashMap::from([(plug, plan_with(vec![hold]))])))
            .unwrap();
        let held = running.changes.recv().await.unwrap();
        assert_eq!(
            (held.at, held.desired),
            (set_at, overridden(Off, hold.id, hold.until))
        );
        // The 05:30 event falls inside the override; at its end the schedule governs again.
        let released = running.changes.recv().await.unwrap();
        assert_eq!(
            (released.at, released.desired),
            (hold.until, scheduled(On, 1, utc(2026, 11, 1, 5, 30, 0)))
        );
        // Nothing more tonight: the repeated 01:30 (06:30 UTC) does not fire.
        let quiet = tokio::time::timeout(
            std::time::Duration::from_secs(12 * 3600),
            running.changes.recv(),
        )
        .await;
        assert!(quiet.is_err(), "unexpected change {quiet:?}");
        running.stop.send(true).unwrap();
        running.task.await.unwrap();
    }

    #[test]
    fn the_tracker_reports_each_plug_once_until_it_changes() {
        let (a, b) = (id(1), id(2));
        let plans = HashMap::from([
            (a, plan(London, &[("0 0 9 * * *", On)])),
            (b, plan(London, &[("0 0 10 * * *", Off)])),
        ]);
        let mut tracker = DesiredTracker::default();
        let now = utc(2026, 1, 10, 9, 30, 0);
        let (changes, due) = tracker.step(&plans, now);
        assert_eq!(
            changes.iter().map(|c| c.plug_id).collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(
            changes[1].desired,
            scheduled(Off, 1, utc(2026, 1, 9, 10, 0, 0))
        );
        assert_eq!(due, Some(utc(2026, 1, 10, 10, 0, 0)));
        let (changes, _) = tracker.step(&plans, now + Duration::minutes(10));
        assert!(changes.is_empty(), "{changes:?}");
        let (changes, _) = tracker.step(&plans, utc(2026, 1, 10, 10, 0, 0));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].plug_id, b);
        let only_a = HashMap::from([(a, plans[&a].clone())]);
        let (changes, _) = tracker.step(&only_a, utc(2026, 1, 10, 10, 0, 1));
        assert!(changes.is_empty(), "a removed plug is forgotten quietly");
        let (changes, _) = tracker.step(&plans, utc(2026, 1, 10, 10, 0, 2));
        assert_eq!(
            changes.iter().map(|c| c.plug_id).collect::<Vec<_>>(),
            [b],
            "and reported again when it comes back"
        );
    }
}

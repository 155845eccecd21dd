//! Failed authentications per client address: an address that has used up its budget of
//! failures is refused before its next credential is even looked up, so guessing keys,
//! passwords or tokens costs the attacker time and the database nothing.

use crate::problem::ApiError;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

type FailureLimiter<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, StateInformationMiddleware>;

/// Counts failures per address in a `governor` bucket (`per_minute` sustained, `burst` at
/// once). The failure that empties the bucket locks the address until the bucket has room for
/// one more; only locked addresses are remembered outside the bucket, and only until they
/// unlock.
pub struct FailedAuthThrottle<C: Clock + Clone = DefaultClock> {
    failures: FailureLimiter<C>,
    /// Addresses refused until the instant given: `governor` cannot tell whether a key has
    /// room without spending it, and the check before a lookup must not spend anything.
    locked: Mutex<HashMap<IpAddr, C::Instant>>,
    /// Whether `locked` holds anyone, kept with it under its lock: the check every request
    /// makes is then one atomic load while nobody is locked out, not a shared mutex.
    any_locked: AtomicBool,
    clock: C,
}

impl FailedAuthThrottle {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self::with_clock(per_minute, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> FailedAuthThrottle<C> {
    pub fn with_clock(per_minute: u32, burst: u32, clock: C) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("clamped to at least 1");
        let quota = Quota::per_minute(nz(per_minute)).allow_burst(nz(burst));
        Self {
            failures: RateLimiter::<_, _, C, NoOpMiddleware<C::Instant>>::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            locked: Mutex::new(HashMap::new()),
            any_locked: AtomicBool::new(false),
            clock,
        }
    }

    /// Refuses an address that is locked out, with the seconds until it may try again.
    pub fn check(&self, addr: IpAddr) -> Result<(), ApiError> {
        if !self.any_locked.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = self.clock.now();
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        match locked.get(&addr) {
            Some(until) if *until > now => Err(ApiError::RateLimited {
                retry_after_secs: seconds_until(*until, now),
            }),
            Some(_) => {
                locked.remove(&addr);
                self.any_locked.store(!locked.is_empty(), Ordering::Release);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one failure of `addr`; the one that uses up the budget locks it out.
    pub fn record_failure(&self, addr: IpAddr) {
        let until = match self.failures.check_key(&addr) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return,
            // A cell comes back one replenish interval after the bucket ran dry at the latest.
            Ok(state) => self.clock.now() + Nanos::from(state.quota().replenish_interval()),
            // Attempts that passed the check together before their failures were counted.
            Err(not_until) => not_until.earliest_possible(),
        };
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        locked.insert(addr, until);
        self.any_locked.store(true, Ordering::Release);
    }

    /// Forgets addresses whose lock has expired and buckets that are full again.
    pub fn housekeeping(&self) {
        let now = self.clock.now();
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        locked.retain(|_, until| *until > now);
        locked.shrink_to_fit();
        self.any_locked.store(!locked.is_empty(), Ordering::Release);
        drop(locked);
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
    }

    /// Addresses currently remembered (failing recently or locked out).
    pub fn tracked(&self) -> usize {
        self.failures
            .len()
            .max(self.locked.lock().unwrap_or_else(|e| e.into_inner()).len())
    }
}

fn seconds_until<I: Reference>(until: I, now: I) -> u64 {
    let wait: std::time::Duration = until.duration_since(now).into();
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn an_address_is_locked_after_its_burst_of_failures_and_others_are_not() {
        let clock = FakeRelativeClock::default();
        let throttle = FailedAuthThrottle::with_clock(6, 3, clock.clone());
        let attacker = ip("203.0.113.9");
        for _ in 0..3 {
            assert!(
                throttle.check(attacker).is_ok(),
                "three failures fit the burst"
            );
            throttle.record_failure(attacker);
        }
        match throttle.check(attacker) {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 10, "6 per minute: one every 10 s")
            }
            other => panic!("expected a lockout, got {other:?}"),
        }
        assert!(throttle.check(ip("198.51.100.7")).is_ok());
        clock.advance(Duration::from_secs(10));
        assert!(
            throttle.check(attacker).is_ok(),
            "unlocked once a failure is forgiven"
        );
    }

    #[test]
    fn checking_spends_nothing_and_housekeeping_forgets_the_recovered() {
        let clock = FakeRelativeClock::default();
        let throttle = FailedAuthThrottle::with_clock(60, 1, clock.clone());
        let who = ip("203.0.113.9");
        for _ in 0..100 {
            assert!(throttle.check(who).is_ok(), "checks alone never lock");
        }
        throttle.record_failure(who);
        assert!(
            throttle.check(who).is_err(),
            "a burst of one is used up at once"
        );
        assert_eq!(throttle.tracked(), 1);
        clock.advance(Duration::from_secs(5));
        throttle.housekeeping();
        assert_eq!(throttle.tracked(), 0);
        assert!(throttle.check(who).is_ok());
    }
}

//! Per-principal request rate limits, per-address login throttling and per-address throttling
//! of failed authentications (`governor`).

use crate::auth::throttle::FailedAuthThrottle;
use crate::problem::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use uuid::Uuid;

use crate::pipeline::LimitSettings;

pub struct RateLimits {
    per_principal: DefaultKeyedRateLimiter<Uuid>,
    /// Edge nodes syncing: one credential carries a whole venue's traffic, so it gets its own,
    /// larger budget instead of a terminal's.
    sync: DefaultKeyedRateLimiter<Uuid>,
    login: DefaultKeyedRateLimiter<IpAddr>,
    failed_auth: FailedAuthThrottle,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new(settings: &LimitSettings) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("clamped to at least 1");
        let per_principal = Quota::per_second(nz(settings.requests_per_second))
            .allow_burst(nz(settings.burst.max(settings.requests_per_second)));
        let sync = Quota::per_second(nz(settings.sync_requests_per_second))
            .allow_burst(nz(settings.sync_requests_per_second.saturating_mul(2)));
        let login = Quota::per_minute(nz(settings.login_per_minute));
        Self {
            per_principal: DefaultKeyedRateLimiter::keyed(per_principal),
            sync: DefaultKeyedRateLimiter::keyed(sync),
            login: DefaultKeyedRateLimiter::keyed(login),
            failed_auth: FailedAuthThrottle::new(
                settings.failed_auth_per_minute,
                settings.failed_auth_burst,
            ),
        }
    }

    pub fn check_principal(&self, principal: Uuid) -> Result<(), ApiError> {
        Self::check(&self.per_principal, principal)
    }

    /// The budget of an edge node's sync requests (push, pull, change hints).
    pub fn check_sync(&self, edge: Uuid) -> Result<(), ApiError> {
        Self::check(&self.sync, edge)
    }

    fn check(limiter: &DefaultKeyedRateLimiter<Uuid>, key: Uuid) -> Result<(), ApiError> {
        limiter.check_key(&key).map_err(|not_until| {
            retry_after(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    pub fn check_login(&self, addr: IpAddr) -> Result<(), ApiError> {
        self.login.check_key(&addr).map_err(|not_until| {
            retry_after(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Refuses a client address that failed to authenticate too often, before any credential
    /// it sends is looked up.
    pub fn check_failed_auth(&self, addr: IpAddr) -> Result<(), ApiError> {
        self.failed_auth.check(addr)
    }

    /// Counts a failed authentication (unknown key, bad token, wrong password) from `addr`.
    pub fn record_failed_auth(&self, addr: IpAddr) {
        self.failed_auth.record_failure(addr);
    }

    /// Forgets keys whose buckets are full again, so memory stays bounded by active callers.
    pub fn housekeeping(&self) {
        self.per_principal.retain_recent();
        self.per_principal.shrink_to_fit();
        self.sync.retain_recent();
        self.sync.shrink_to_fit();
        self.login.retain_recent();
        self.login.shrink_to_fit();
        self.failed_auth.housekeeping();
    }
}

fn retry_after(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limits = RateLimits::new(&LimitSettings {
            requests_per_second: 1,
            burst: 2,
            login_per_minute: 1,
            ..LimitSettings::default()
        });
        let who = Uuid::now_v7();
        assert!(limits.check_principal(who).is_ok());
        assert!(limits.check_principal(who).is_ok());
        match limits.check_principal(who) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(
            limits.check_principal(Uuid::now_v7()).is_ok(),
            "keys are independent"
        );
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limits.check_login(addr).is_ok());
        assert!(limits.check_login(addr).is_err());
    }

    #[test]
    fn edge_sync_has_its_own_larger_budget() {
        let limits = RateLimits::new(&LimitSettings {
            requests_per_second: 1,
            burst: 1,
            sync_requests_per_second: 5,
            ..LimitSettings::default()
        });
        let edge = Uuid::now_v7();
        for _ in 0..10 {
            assert!(limits.check_sync(edge).is_ok(), "burst of twice the rate");
        }
        assert!(limits.check_sync(edge).is_err());
        assert!(
            limits.check_principal(edge).is_ok(),
            "the budgets are separate"
        );
    }
}

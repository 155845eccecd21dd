//! Per-principal request rate limits and per-address login throttling (`governor`).

use crate::problem::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use uuid::Uuid;

use crate::pipeline::LimitSettings;

pub struct RateLimits {
    per_principal: DefaultKeyedRateLimiter<Uuid>,
    login: DefaultKeyedRateLimiter<IpAddr>,
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
        let login = Quota::per_minute(nz(settings.login_per_minute));
        Self {
            per_principal: DefaultKeyedRateLimiter::keyed(per_principal),
            login: DefaultKeyedRateLimiter::keyed(login),
        }
    }

    pub fn check_principal(&self, principal: Uuid) -> Result<(), ApiError> {
        self.per_principal
            .check_key(&principal)
            .map_err(|not_until| {
                retry_after(not_until.wait_time_from(DefaultClock::default().now()))
            })
    }

    pub fn check_login(&self, addr: IpAddr) -> Result<(), ApiError> {
        self.login.check_key(&addr).map_err(|not_until| {
            retry_after(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Forgets keys whose buckets are full again, so memory stays bounded by active callers.
    pub fn housekeeping(&self) {
        self.per_principal.retain_recent();
        self.per_principal.shrink_to_fit();
        self.login.retain_recent();
        self.login.shrink_to_fit();
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
}

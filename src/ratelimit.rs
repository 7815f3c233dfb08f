//! Per-client rate limits on what an anonymous client can make gatehouse do for it: starting
//! a login and completing one. GCRA (the `governor` crate), keyed by client address.
//!
//! Rules:
//! 1. Login starts and callbacks each have their own budget per client: `auth.login_rate_limit`
//!    per minute, `auth.login_rate_burst` at once; past it, 429 with `Retry-After`.
//! 2. The key is the client IP after the trusted-proxy rules; IPv6 clients are keyed by their
//!    /64, which one host can fill with addresses at will.
//! 3. Keys of clients that went quiet are dropped every minute, so a spray of source addresses
//!    cannot grow memory without bound.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

type Keyed = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, DefaultClock>;

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    LoginStart,
    Callback,
}

/// The login budgets; `None` inside means no limit.
pub struct LoginLimits {
    limiters: Option<(Keyed, Keyed)>,
}

impl LoginLimits {
    pub fn new(rate: Option<(NonZeroU32, NonZeroU32)>) -> Self {
        let limiters = rate.map(|(per_minute, burst)| {
            let quota = Quota::per_minute(per_minute).allow_burst(burst);
            (RateLimiter::keyed(quota), RateLimiter::keyed(quota))
        });
        Self { limiters }
    }

    /// `Ok` when `ip` may go on; `Err(wait)` when it must wait that long.
    pub fn check(&self, budget: Budget, ip: IpAddr) -> Result<(), Duration> {
        let Some((login, callback)) = &self.limiters else {
            return Ok(());
        };
        let limiter = match budget {
            Budget::LoginStart => login,
            Budget::Callback => callback,
        };
        limiter
            .check_key(&key(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets clients whose budget is full again (rule 3).
    pub fn forget_quiet(&self) {
        if let Some((login, callback)) = &self.limiters {
            for limiter in [login, callback] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.limiters.is_some()
    }
}

/// Rule 2: an IPv4 address as is, an IPv6 address by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, burst: u32) -> LoginLimits {
        LoginLimits::new(Some((
            NonZeroU32::new(per_minute).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )))
    }

    #[test]
    fn the_burst_passes_and_the_next_one_waits() {
        let l = limits(30, 10);
        let ip: IpAddr = [192, 0, 2, 1].into();
        for i in 0..10 {
            assert!(l.check(Budget::LoginStart, ip).is_ok(), "request {i}");
        }
        let wait = l.check(Budget::LoginStart, ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(
            l.check(Budget::Callback, ip).is_ok(),
            "callbacks have their own budget"
        );
        assert!(
            l.check(Budget::LoginStart, [192, 0, 2, 2].into()).is_ok(),
            "another client"
        );
    }

    #[test]
    fn ipv6_clients_share_the_budget_of_their_64() {
        let l = limits(30, 1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(Budget::LoginStart, a).is_ok());
        assert!(l.check(Budget::LoginStart, b).is_err(), "same /64");
        assert!(l.check(Budget::LoginStart, other).is_ok());
    }

    #[test]
    fn no_limit_configured_means_no_limit() {
        let l = LoginLimits::new(None);
        for _ in 0..1000 {
            assert!(l.check(Budget::LoginStart, [10, 0, 0, 1].into()).is_ok());
        }
    }
}

//! Failed API-token attempts, counted per client address: after `max`
//! failures within a minute the address gets 429 (with `Retry-After`) on
//! every route that takes the API token, right token or not, until the
//! minute is over. That makes guessing the token by brute force hopeless
//! while a typo costs nothing.
//!
//! Only attempts that present a wrong token count (a browser's first visit
//! without one does not). Job callback tokens are not counted: they are
//! random 256-bit secrets, and one misconfigured trainer must not lock out
//! the other trainers behind the same address. An IPv6 client counts by
//! its /64 (one host usually holds a whole /64). Memory is bounded: at
//! most [`MAX_TRACKED`] addresses, expired windows first out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The counting window.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// Failures in the current window of one address.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Per-address failure counts.
pub struct AuthFailures {
    /// Failures allowed per window; 0 turns the limit off.
    max: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthFailures {
    /// At most `max` failures per minute per address (0: no limit).
    pub fn new(max: u32) -> Self {
        AuthFailures {
            max,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until `ip` may try again, when it is blocked now.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        self.blocked_at(ip, Instant::now())
    }

    /// Counts a failed attempt from `ip`.
    pub fn record(&self, ip: IpAddr) {
        self.record_at(ip, Instant::now());
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        let ip = client_key(ip);
        let w = *self.windows().get(&ip)?;
        let left = WINDOW.checked_sub(now.duration_since(w.started))?;
        (w.failures >= self.max && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    fn record_at(&self, ip: IpAddr, now: Instant) {
        if self.max == 0 {
            return;
        }
        let ip = client_key(ip);
        let mut windows = self.windows();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&ip) {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
            if windows.len() >= MAX_TRACKED {
                // Every window is live: drop the oldest to stay bounded.
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    windows.remove(&k);
                }
            }
        }
        let w = windows.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures == self.max {
            tracing::warn!(client = %ip, "too many failed API-token attempts: refusing this address for a minute");
        }
    }
}

/// The address a client is counted by: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_window() {
        let limits = AuthFailures::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limits.blocked_at(a, t0), None, "attempt {i}");
            limits.record_at(a, t0);
        }
        assert_eq!(limits.blocked_at(a, t0 + Duration::from_secs(15)), Some(45));
        assert_eq!(
            limits.blocked_at(b, t0),
            None,
            "other addresses are not affected"
        );
        assert_eq!(limits.blocked_at(a, t0 + WINDOW), None, "a new minute");
        limits.record_at(a, t0 + WINDOW);
        assert_eq!(
            limits.blocked_at(a, t0 + WINDOW),
            None,
            "counting starts over"
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let limits = AuthFailures::new(2);
        limits.record("2001:db8::1".parse().unwrap());
        limits.record("2001:db8::ffff:2".parse().unwrap());
        assert!(limits.blocked("2001:db8::3".parse().unwrap()).is_some());
        assert!(limits.blocked("2001:db8:0:1::1".parse().unwrap()).is_none());
        limits.record("::ffff:10.0.0.1".parse().unwrap());
        limits.record("10.0.0.1".parse().unwrap());
        assert!(limits.blocked("10.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn memory_stays_bounded() {
        let limits = AuthFailures::new(5);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            limits.record_at(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(limits.windows().len(), MAX_TRACKED);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limits = AuthFailures::new(0);
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..100 {
            limits.record(ip);
        }
        assert_eq!(limits.blocked(ip), None);
        assert!(limits.windows().is_empty());
    }
}

//! Pacing decisions, kept pure so they are tested without a CA: the global order limit, the
//! per-host backoff and the renewal time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::acme::Fraction;

/// A sliding-window limit on new orders across all tenants: at most `max` orders in any
/// `window`. Bulk onboarding drains at this rate instead of bursting into the CA's limits.
#[derive(Debug)]
pub struct OrderLimiter {
    max: usize,
    window: Duration,
    placed: VecDeque<Instant>,
}

impl OrderLimiter {
    /// A limiter allowing `max` orders per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        OrderLimiter {
            max: usize::try_from(max).unwrap_or(usize::MAX).max(1),
            window,
            placed: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&first) = self.placed.front() {
            if now.duration_since(first) >= self.window {
                self.placed.pop_front();
            } else {
                break;
            }
        }
    }

    /// When the next order may be placed (`now` if at once).
    pub fn available_at(&mut self, now: Instant) -> Instant {
        self.prune(now);
        if self.placed.len() < self.max {
            now
        } else {
            self.placed[self.placed.len() - self.max] + self.window
        }
    }

    /// Counts orders placed elsewhere (`placed`: by the previous issuer of a cluster, as the
    /// store knows them): the window holds whichever view has more orders in it, this
    /// limiter's own or `placed`, so an order both know of is not counted twice and the limit
    /// is never exceeded by forgetting one. How many the window holds now.
    pub fn seed(&mut self, placed: &[Instant], now: Instant) -> usize {
        self.prune(now);
        let mut theirs: Vec<Instant> = placed
            .iter()
            .copied()
            .filter(|&at| at <= now && now.duration_since(at) < self.window)
            .collect();
        if theirs.len() > self.placed.len() {
            theirs.sort();
            self.placed = theirs.into();
        }
        self.placed.len()
    }

    /// Takes one order slot, or says when one frees up.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let at = self.available_at(now);
        if at > now {
            return Err(at);
        }
        self.placed.push_back(now);
        Ok(())
    }
}

/// Wait after `failures` consecutive failures (1 = the first): `base · 2^(failures-1)`, capped,
/// then scaled by `0.5 + jitter/2` (`jitter` in `[0, 1)`) so hosts that failed together do not
/// retry together.
pub fn backoff(base: Duration, cap: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let delay = base.saturating_mul(1u32 << exp).min(cap);
    delay.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is due for renewal.
pub fn renew_at(not_before: i64, not_after: i64, fraction: Fraction) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_before + fraction.of(lifetime)
}

/// Unix seconds of a tokio instant (rounded up, so "in 200 ms" is never shown as the past).
pub fn unix_of(at: Instant) -> i64 {
    let ahead = at.saturating_duration_since(Instant::now());
    crate::util::unix_now() + i64::try_from(ahead.as_secs_f64().ceil() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_max_per_window() {
        let t0 = Instant::now();
        let mut l = OrderLimiter::new(2, Duration::from_secs(10));
        assert!(l.try_take(t0).is_ok());
        assert!(l.try_take(t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(
            l.try_take(t0 + Duration::from_secs(2)),
            Err(t0 + Duration::from_secs(10))
        );
        assert!(l.try_take(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(
            l.available_at(t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(11)
        );
    }

    #[test]
    fn seeding_keeps_the_fuller_view_of_the_window() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let window = Duration::from_secs(60);
        let mut l = OrderLimiter::new(2, window);
        assert!(l.try_take(t0).is_ok());
        // Two orders the store knows of (one outside the window): one counts, and the own
        // view (one order) is as full, so it stays.
        let stored = [t0 - Duration::from_secs(90), t0 - Duration::from_secs(10)];
        assert_eq!(l.seed(&stored, t0), 1);
        assert!(l.try_take(t0).is_ok());
        // A new issuer that knows nothing itself takes the store's view: the limit holds.
        let mut fresh = OrderLimiter::new(2, window);
        let stored = [t0 - Duration::from_secs(30), t0 - Duration::from_secs(10)];
        assert_eq!(fresh.seed(&stored, t0), 2);
        assert_eq!(fresh.try_take(t0), Err(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(60);
        let cap = Duration::from_secs(600);
        assert_eq!(backoff(base, cap, 1, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(base, cap, 2, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(base, cap, 3, 0.0), Duration::from_secs(120));
        assert_eq!(backoff(base, cap, 10, 1.0), cap);
        assert_eq!(backoff(base, cap, u32::MAX, 1.0), cap);
    }

    #[test]
    fn renews_at_two_thirds() {
        let f = Fraction(666_666_667);
        assert_eq!(renew_at(0, 90 * 86_400, f), 60 * 86_400);
    }
}

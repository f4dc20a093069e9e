//! Per-source response rate limiting for UDP, so the zone cannot be used to flood a spoofed
//! address with answers (an answer is larger than the query).
//!
//! Sources are counted by network, as BIND's RRL does (IPv4 /24, IPv6 /56), with a token
//! bucket each. Over the limit, every other answer is "slipped" (an empty answer with TC set,
//! so a real resolver behind the address retries over TCP, which needs a handshake a spoofer
//! cannot complete) and the others dropped. TCP is not limited. The limits are generous for
//! a zone whose answers resolvers cache for `dns.ttl`: one resolver prefix asking for every
//! tenant of a 100 000-tenant zone within one TTL of 300 s needs ~670 answers/s at most once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answers per second each source network gets once its burst is spent.
pub const PER_SECOND: f64 = 200.0;
/// Answers a source network may receive at once.
pub const BURST: f64 = 1000.0;
/// Source networks tracked at most; past this, idle ones are forgotten first (a full bucket
/// is the same as none), and a source that still finds no room is answered untracked.
const MAX_SOURCES: usize = 65_536;
/// A bucket idle this long is full again and may be forgotten.
const IDLE: Duration = Duration::from_secs(5);

/// What to do with one UDP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Answer,
    /// Send an empty truncated answer instead.
    Slip,
    /// Send nothing.
    Drop,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Whether the last limited answer was slipped (so the next is dropped).
    slipped: bool,
}

/// The buckets of every source network seen recently.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::with_rate(PER_SECOND, BURST)
    }
}

/// The network a source is counted under: its /24 or /56.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 72) - 1),
        )),
    }
}

impl RateLimit {
    /// No source seen yet; [`PER_SECOND`] and [`BURST`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The limit `config` sets (`rate_per_second: 0` is none).
    pub fn of(config: &crate::config::DnsConfig) -> Self {
        if config.rate_per_second == 0 {
            return Self::with_rate(f64::INFINITY, f64::INFINITY);
        }
        Self::with_rate(
            f64::from(config.rate_per_second),
            f64::from(config.rate_burst),
        )
    }

    /// Other rates: `f64::INFINITY` answers everything (the benchmark measures the server,
    /// not the limit).
    pub fn with_rate(per_second: f64, burst: f64) -> Self {
        RateLimit {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict for one answer to `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES {
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        }
        let room = buckets.len() < MAX_SOURCES;
        let key = network(ip);
        let Some(bucket) = buckets.get_mut(&key) else {
            if room {
                let bucket = Bucket {
                    tokens: self.burst - 1.0,
                    last: now,
                    slipped: false,
                };
                buckets.insert(key, bucket);
            }
            return Verdict::Answer;
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Answer;
        }
        bucket.slipped = !bucket.slipped;
        if bucket.slipped {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_answered_then_every_other_answer_slips_until_tokens_return() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..BURST as usize {
            assert_eq!(limit.check(ip, t0), Verdict::Answer);
        }
        assert_eq!(limit.check(ip, t0), Verdict::Slip);
        assert_eq!(limit.check(ip, t0), Verdict::Drop);
        assert_eq!(limit.check(ip, t0), Verdict::Slip);
        // The same /24 shares the bucket; another network has its own.
        assert_eq!(
            limit.check("192.0.2.200".parse().unwrap(), t0),
            Verdict::Drop
        );
        assert_eq!(
            limit.check("192.0.3.7".parse().unwrap(), t0),
            Verdict::Answer
        );
        // A tenth of a second later, PER_SECOND / 10 answers are due again.
        let later = t0 + Duration::from_millis(100);
        for _ in 0..(PER_SECOND / 10.0) as usize {
            assert_eq!(limit.check(ip, later), Verdict::Answer);
        }
        assert_ne!(limit.check(ip, later), Verdict::Answer);
    }

    #[test]
    fn ipv6_sources_count_by_56() {
        let a: IpAddr = "2001:db8:0:ab::1".parse().unwrap();
        let b: IpAddr = "2001:db8:0:ff:1::2".parse().unwrap();
        let c: IpAddr = "2001:db8:0:100::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
    }
}

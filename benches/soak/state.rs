//! What every load task shares: addresses, tenants and their expected bodies, the restart
//! clock, the stop flag, counters and the failure log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::net::Tls;
use crate::setup::{Expectations, Layout};

/// A small xorshift generator (no shared RNG state between tasks, reproducible per seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// When the daemon was killed and when its successor was ready.
#[derive(Default)]
pub struct RestartClock {
    pub kill_at: OnceLock<Instant>,
    pub ready_at: OnceLock<Instant>,
}

/// Which daemon answered a request that ran from `start` to `end`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Ended before the kill: the first daemon.
    Before,
    /// Started before the kill and ended after it: either.
    Straddle,
    /// Started after the kill: the second daemon.
    After,
}

impl RestartClock {
    pub fn era(&self, start: Instant, end: Instant) -> Era {
        match self.kill_at.get() {
            Some(&k) if start > k => Era::After,
            Some(&k) if end >= k => Era::Straddle,
            _ => Era::Before,
        }
    }

    /// Whether a request from `start` to `end` overlapped the window with no daemon.
    pub fn in_window(&self, start: Instant, end: Instant) -> bool {
        match self.kill_at.get() {
            Some(&k) => end >= k && self.ready_at.get().is_none_or(|&r| start <= r),
            None => false,
        }
    }
}

/// Counts of one kind of request (fetch kind, report kind, ...).
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Transport failures overlapping the restart window (reported, not failures).
    pub in_window: AtomicU64,
    /// Requests retried on a fresh connection after the server closed a reused one.
    pub retried: AtomicU64,
    /// Successes answered by the restarted daemon for certain, and those that straddle.
    pub ok_after: AtomicU64,
    pub ok_straddle: AtomicU64,
    /// Successes that got a body older than the current one (allowed while a change was
    /// not yet visible when the request started).
    pub earlier_body: AtomicU64,
    /// Longest successful request, and successes that took over a second, in ms.
    pub max_ms: AtomicU64,
    pub over_1s: AtomicU64,
}

impl Counts {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// A success that took `took`.
    pub fn took(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        self.max_ms.fetch_max(ms, Ordering::Relaxed);
        if ms > 1000 {
            Self::add(&self.over_1s);
        }
    }

    pub fn ok_era(&self, era: Era) {
        Self::add(&self.ok);
        match era {
            Era::After => Self::add(&self.ok_after),
            Era::Straddle => Self::add(&self.ok_straddle),
            Era::Before => {}
        }
    }
}

/// The fetch kinds, in table order.
pub const FETCH_KINDS: [&str; 4] = [
    "HTTP/1.1 keep-alive",
    "h2 keep-alive (4 streams)",
    "HTTP/1.1 new connection",
    "h2 new connection",
];

pub struct Shared {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub layout: Layout,
    pub expect: Expectations,
    pub tls: Tls,
    pub stop: AtomicBool,
    /// Set by the orchestrator around the restart; the churner repairs and idles.
    pub pause_churn: AtomicBool,
    pub churn_idle: AtomicBool,
    pub restart: RestartClock,
    /// Tenant files broken right now (indices into the layout's files), and a counter bumped
    /// on every change of that set.
    pub broken: Mutex<std::collections::BTreeSet<usize>>,
    pub broken_gen: AtomicU64,
    pub fetch: [Counts; 4],
    failures: Mutex<Vec<String>>,
    pub failure_count: AtomicU64,
    pub t0: Instant,
}

impl Shared {
    pub fn new(
        addr: SocketAddr,
        admin: SocketAddr,
        layout: Layout,
        expect: Expectations,
        tls: Tls,
    ) -> Self {
        Shared {
            addr,
            admin,
            layout,
            expect,
            tls,
            stop: AtomicBool::new(false),
            pause_churn: AtomicBool::new(false),
            churn_idle: AtomicBool::new(false),
            restart: RestartClock::default(),
            broken: Mutex::new(Default::default()),
            broken_gen: AtomicU64::new(0),
            fetch: Default::default(),
            failures: Mutex::new(Vec::new()),
            failure_count: AtomicU64::new(0),
            t0: Instant::now(),
        }
    }

    /// Marks file `f` broken (before it is written) or good again (after the repair shows).
    pub fn set_broken(&self, f: usize, broken: bool) {
        let mut set = self.broken.lock().unwrap();
        if broken {
            set.insert(f);
        } else {
            set.remove(&f);
        }
        self.broken_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// The broken-set generation, to pass to [`Shared::was_broken`] afterwards.
    pub fn broken_mark(&self) -> (u64, bool) {
        (
            self.broken_gen.load(Ordering::SeqCst),
            !self.broken.lock().unwrap().is_empty(),
        )
    }

    /// Whether file `f` (any file when `None`) may have been broken since `mark`.
    pub fn was_broken(&self, mark: (u64, bool), f: Option<usize>) -> bool {
        let set = self.broken.lock().unwrap();
        let now = match f {
            Some(f) => set.contains(&f),
            None => !set.is_empty(),
        };
        now || self.broken_gen.load(Ordering::SeqCst) != mark.0 || (f.is_none() && mark.1)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Logs a failure (the first 200 are kept with their time since the start).
    pub fn fail(&self, what: String) {
        self.failure_count.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 200 {
            let t = self.t0.elapsed().as_secs_f64();
            eprintln!("soak: FAIL at {t:.1}s: {what}");
            f.push(format!("{t:.1}s {what}"));
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Sleeps `d` or until stopped; false when stopped.
    pub async fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
        false
    }
}

//! Who gives up a slot when the HTTPS listener is at `limits.max_connections`.
//!
//! Leaving a newcomer in the kernel backlog until some slot ends let connections that never
//! speak starve good clients: 3 000 idle connects held 50 slots for the whole handshake timeout
//! each. Now the newcomer is accepted and takes the slot of the oldest connection that is
//! silent (accepted, nothing received) for [`SILENT_GRACE`], still in its handshake after
//! [`HANDSHAKE_GRACE`], or idle between requests for [`IDLE_GRACE`], as nginx reuses
//! keep-alive connections. A connection with a request in flight is never taken; when no
//! connection qualifies the newcomer waits for a slot as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A real client's ClientHello follows the TCP handshake at once (it usually arrives with the
/// final ACK); this only covers the time until the connection's task first runs.
const SILENT_GRACE: Duration = Duration::from_millis(100);
/// A handshake that started but has not finished: more than one round trip on slow paths.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(1);
/// A connection between requests (or before its first one) keeps its slot this long.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Accepted, nothing received yet.
const SILENT: u8 = 0;
/// Bytes received, handshake not finished.
const HANDSHAKE: u8 = 1;
/// Handshake done: serving HTTP.
const OPEN: u8 = 2;
/// Closed or evicted: no longer a candidate.
const GONE: u8 = 3;

/// Every open connection of one listener, in the order they may be evicted.
pub(super) struct Slots {
    epoch: Instant,
    queues: Mutex<Queues>,
    /// Registered and not yet dropped, to know when the queues need compacting.
    live: AtomicUsize,
}

/// Connections still in their handshake in accept order, and open ones in the order their
/// handshake finished. Entries that moved on or ended are dropped lazily.
#[derive(Default)]
struct Queues {
    pending: VecDeque<Arc<Slot>>,
    open: VecDeque<Arc<Slot>>,
}

/// One connection's state as the evictor sees it.
pub(super) struct Slot {
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds after `epoch`: when accepted (pending) or when last idle (open).
    since_ms: AtomicU64,
    in_flight: AtomicU32,
    evict: Notify,
}

/// A connection's registration; dropping it (when the connection ends) frees the entry.
pub(super) struct SlotHandle {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

/// Marks a request in flight until dropped; the connection is idle from then on.
pub(super) struct Busy(Arc<Slot>);

impl Slots {
    /// No connections yet.
    pub(super) fn new() -> Self {
        Slots {
            epoch: Instant::now(),
            queues: Mutex::new(Queues::default()),
            live: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // The queues hold no invariant a panicking holder could break halfway.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection accepted now.
    pub(super) fn register(self: &Arc<Self>) -> SlotHandle {
        let slot = Arc::new(Slot {
            epoch: self.epoch,
            phase: AtomicU8::new(SILENT),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            evict: Notify::new(),
        });
        slot.mark_since();
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        let mut queues = self.lock();
        queues.pending.push_back(slot.clone());
        queues.compact(live);
        SlotHandle {
            slots: self.clone(),
            slot,
        }
    }

    /// Asks the best candidate to close. `Err` holds when one may next qualify (a busy
    /// connection going idle is not signalled, so the caller also looks again on its own).
    pub(super) fn evict_one(&self) -> Result<(), Option<Instant>> {
        let now = self.epoch.elapsed();
        let mut queues = self.lock();
        let mut next: Option<Duration> = None;
        let mut later = |at: Duration| next = Some(next.map_or(at, |n| n.min(at)));
        queues.drop_settled();
        for slot in &queues.pending {
            let since = slot.since();
            let grace = match slot.phase.load(Ordering::Relaxed) {
                SILENT => SILENT_GRACE,
                HANDSHAKE => HANDSHAKE_GRACE,
                _ => continue,
            };
            if now >= since + grace {
                slot.evict();
                return Ok(());
            }
            later(since + grace);
            // Accept order: everything after this one is younger still, so nothing after it
            // qualifies before this one's silent grace ends.
            if now < since + SILENT_GRACE {
                later(since + SILENT_GRACE);
                break;
            }
        }
        for slot in &queues.open {
            if slot.phase.load(Ordering::Relaxed) != OPEN
                || slot.in_flight.load(Ordering::Relaxed) > 0
            {
                continue;
            }
            let idle_until = slot.since() + IDLE_GRACE;
            if now >= idle_until {
                slot.evict();
                return Ok(());
            }
            later(idle_until);
        }
        Err(next.map(|n| self.epoch + n))
    }
}

impl Queues {
    /// Drops the entries at the front that are no longer candidates of their queue.
    fn drop_settled(&mut self) {
        while let Some(front) = self.pending.front()
            && !matches!(front.phase.load(Ordering::Relaxed), SILENT | HANDSHAKE)
        {
            self.pending.pop_front();
        }
        while let Some(front) = self.open.front()
            && front.phase.load(Ordering::Relaxed) != OPEN
        {
            self.open.pop_front();
        }
    }

    /// Removes ended entries once they outnumber the live ones: a long-lived connection at the
    /// front must not let the queues grow without bound.
    fn compact(&mut self, live: usize) {
        let limit = 2 * live + 64;
        if self.pending.len() > limit {
            self.pending
                .retain(|s| matches!(s.phase.load(Ordering::Relaxed), SILENT | HANDSHAKE));
        }
        if self.open.len() > limit {
            self.open
                .retain(|s| s.phase.load(Ordering::Relaxed) == OPEN);
        }
    }
}

impl Slot {
    fn since(&self) -> Duration {
        Duration::from_millis(self.since_ms.load(Ordering::Relaxed))
    }

    fn mark_since(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Relaxed);
    }

    fn evict(&self) {
        self.phase.store(GONE, Ordering::Relaxed);
        self.evict.notify_one();
    }
}

impl SlotHandle {
    /// The client has sent its first bytes.
    pub(super) fn heard(&self) {
        let _ = self.slot.phase.compare_exchange(
            SILENT,
            HANDSHAKE,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The handshake finished: from now on the connection is idle whenever no request is in
    /// flight.
    pub(super) fn opened(&self) {
        let slot = &self.slot;
        slot.mark_since();
        if slot
            .phase
            .compare_exchange(HANDSHAKE, OPEN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            || slot
                .phase
                .compare_exchange(SILENT, OPEN, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let live = self.slots.live.load(Ordering::Relaxed);
            let mut queues = self.slots.lock();
            queues.open.push_back(slot.clone());
            queues.compact(live);
        }
    }

    /// A request in flight until the guard drops.
    pub(super) fn busy(&self) -> Busy {
        self.slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.slot.clone())
    }

    /// Completes when the evictor chose this connection.
    pub(super) async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        self.slot.phase.store(GONE, Ordering::Relaxed);
        self.slots.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_since();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_first_then_stale_handshakes_then_idle_never_busy() {
        let slots = Arc::new(Slots::new());
        let busy = slots.register();
        busy.heard();
        busy.opened();
        let _request = busy.busy();
        let idle = slots.register();
        idle.heard();
        idle.opened();
        let talking = slots.register();
        talking.heard();
        let silent = slots.register();
        // Everyone is within their grace.
        let next = slots.evict_one().unwrap_err().unwrap();
        assert_eq!(next, slots.epoch + SILENT_GRACE);
        tokio::time::advance(SILENT_GRACE).await;
        assert_eq!(slots.evict_one(), Ok(()));
        assert_eq!(silent.slot.phase.load(Ordering::Relaxed), GONE);
        tokio::time::advance(HANDSHAKE_GRACE).await;
        assert_eq!(slots.evict_one(), Ok(()));
        assert_eq!(talking.slot.phase.load(Ordering::Relaxed), GONE);
        assert_eq!(slots.evict_one(), Ok(()));
        assert_eq!(idle.slot.phase.load(Ordering::Relaxed), GONE);
        // Only the connection with a request in flight is left, and it is never taken.
        assert_eq!(slots.evict_one(), Err(None));
    }

    #[test]
    fn ended_connections_do_not_accumulate() {
        let slots = Arc::new(Slots::new());
        let _long_lived = slots.register();
        for _ in 0..10_000 {
            let conn = slots.register();
            conn.opened();
        }
        let queues = slots.lock();
        assert!(queues.pending.len() < 200, "{}", queues.pending.len());
        assert!(queues.open.len() < 200, "{}", queues.open.len());
    }
}

//! Hosts waiting for a certificate from a local issuer, in arrival order, each once.
//!
//! Issuing one internal-CA leaf costs about 100 µs of CPU: a million tenants issued one after
//! another on the start-up path took minutes before the first policy was served. The provider
//! queues hosts instead; background workers drain the queue on every core, and a handshake for
//! a host still queued takes it out and issues it at once.

use crate::util::hash::FastSet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A FIFO of host names without duplicates.
#[derive(Debug, Default)]
pub struct IssueQueue {
    inner: Mutex<Inner>,
    /// Wakes the workers when hosts arrive.
    pub wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<String>,
    queued: FastSet<String>,
}

impl IssueQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `host` unless it is queued already.
    pub fn push(&self, host: &str) {
        let mut inner = self.lock();
        if inner.queued.insert(host.to_owned()) {
            inner.order.push_back(host.to_owned());
        }
    }

    /// The oldest queued host. Entries taken out of turn are skipped here, so
    /// [`IssueQueue::take`] stays O(1) with a million hosts waiting.
    pub fn pop(&self) -> Option<String> {
        let mut inner = self.lock();
        let host = loop {
            let host = inner.order.pop_front()?;
            if inner.queued.remove(&host) {
                break host;
            }
        };
        // A long queue drained to empty gives its memory back.
        if inner.queued.is_empty() {
            inner.order = VecDeque::new();
            inner.queued = FastSet::default();
        }
        Some(host)
    }

    /// Takes `host` out of the queue (it is being issued elsewhere); whether it was queued.
    pub fn take(&self, host: &str) -> bool {
        self.lock().queued.remove(host)
    }

    /// Hosts waiting.
    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes hosts out of the queue `of(owner)` and hands each to `work`, on one blocking thread
/// per core, until the queue is empty or `stop` is set; how many were handed over. The
/// internal CA's issuing and ACME's reading of stored certificates both drain this way.
pub async fn drain_on_every_core<S: Send + Sync + 'static>(
    owner: &Arc<S>,
    of: fn(&S) -> &IssueQueue,
    work: fn(&S, &str),
    stop: &tokio::sync::watch::Receiver<bool>,
) -> usize {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let done = Arc::new(AtomicUsize::new(0));
    let drains: Vec<_> = (0..workers)
        .map(|_| {
            let (owner, stop, done) = (owner.clone(), stop.clone(), done.clone());
            tokio::task::spawn_blocking(move || {
                while !*stop.borrow()
                    && let Some(host) = of(&owner).pop()
                {
                    work(&owner, &host);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for drain in drains {
        let _ = drain.await;
    }
    done.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_in_order_once() {
        let q = IssueQueue::default();
        for h in ["a", "b", "a", "c"] {
            q.push(h);
        }
        assert_eq!(q.len(), 3);
        assert!(q.take("b"));
        assert!(!q.take("b"));
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.push("a");
        assert_eq!(q.pop().as_deref(), Some("c"));
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }
}

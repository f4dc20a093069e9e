//! Reading tenant files in parallel and off the reloader's lock, smallest first. A file of
//! more than [`BIG_FILE_BYTES`] takes a parse slot but never the last free one, so while a
//! huge bulk file is parsed the other files' changes keep being read and applied.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Above this size a file counts as big (about 12 000 tenants in a bulk file; parsing it takes
/// a noticeable fraction of a second).
pub const BIG_FILE_BYTES: u64 = 1 << 20;

/// The parse slots shared by every reload of one daemon.
#[derive(Debug)]
pub struct Slots {
    /// (slots in use, of those by big files).
    used: Mutex<(usize, usize)>,
    freed: Condvar,
    total: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Slots::new()
    }
}

/// A taken parse slot, given back on drop.
struct Slot<'a> {
    slots: &'a Slots,
    big: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut used = self.slots.lock();
        used.0 -= 1;
        used.1 -= usize::from(self.big);
        drop(used);
        self.slots.freed.notify_all();
    }
}

impl Slots {
    /// One slot per core, at least two (one of which a big file never takes).
    pub fn new() -> Slots {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Slots {
            used: Mutex::new((0, 0)),
            freed: Condvar::new(),
            total: cores.max(2),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (usize, usize)> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot; a big file also waits while it would take the last one.
    fn take(&self, big: bool) -> Slot<'_> {
        let mut used = self.lock();
        loop {
            let free = self.total - used.0;
            let allowed = if big {
                free > 0 && used.1 < (self.total - 1).max(1)
            } else {
                free > 0
            };
            if allowed {
                break;
            }
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        used.0 += 1;
        used.1 += usize::from(big);
        Slot { slots: self, big }
    }

    /// Parses every job (holding a slot) and applies each result as soon as it is parsed (not
    /// holding one), smallest job first, on up to one thread per slot. Returns what `apply`
    /// returned, in the order the jobs finished.
    pub fn run<J, P, R>(
        &self,
        mut jobs: Vec<J>,
        size: impl Fn(&J) -> u64,
        parse: impl Fn(&J) -> P + Sync,
        apply: impl Fn(J, P) -> R + Sync,
    ) -> Vec<R>
    where
        J: Send,
        R: Send,
    {
        jobs.sort_by_key(|j| std::cmp::Reverse(size(j)));
        let sizes: Vec<u64> = jobs.iter().map(&size).collect();
        let queue = Mutex::new(jobs.into_iter().zip(sizes).collect::<Vec<_>>());
        let results = Mutex::new(Vec::new());
        let work = || {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((job, len)) = next else { break };
                let slot = self.take(len > BIG_FILE_BYTES);
                let parsed = parse(&job);
                drop(slot);
                let r = apply(job, parsed);
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            }
        };
        let threads = queue.lock().unwrap_or_else(|e| e.into_inner()).len();
        let threads = threads.min(self.total);
        if threads <= 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
        results.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_big_job_never_takes_the_last_slot() {
        let slots = Slots {
            used: Mutex::new((0, 0)),
            freed: Condvar::new(),
            total: 2,
        };
        let big = slots.take(true);
        // Another big job must wait, a small one need not.
        let small = slots.take(false);
        drop(small);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = slots.take(true);
                tx.send(()).unwrap();
            });
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(200))
                    .is_err()
            );
            drop(big);
            rx.recv().unwrap();
        });
    }

    #[test]
    fn run_applies_every_job_smallest_first_on_one_thread() {
        let slots = Slots {
            used: Mutex::new((0, 0)),
            freed: Condvar::new(),
            total: 1,
        };
        let order = slots.run(vec![3u64, 1, 2], |j| *j, |j| j * 10, |j, p| (j, p));
        assert_eq!(order, vec![(1, 10), (2, 20), (3, 30)]);
        let many = Slots::new().run((0..50u64).collect(), |j| *j, |j| *j, |_, p| p);
        assert_eq!(many.len(), 50);
    }
}

//! The daemon's background tasks: started by name in one place, told to stop by one signal,
//! and drained within one deadline.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// Every background task of a running daemon.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }
}

impl Supervisor {
    /// A supervisor with no tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stop signal to hand a task: it changes to `true` once, at shutdown.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Starts `task` under `name` (used in logs). The task must watch a [`Self::stop_signal`].
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Starts `task`, which knows no stop signal, and drops it when the signal comes.
    pub fn spawn_until_stopped(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut stop = self.stop_signal();
        self.spawn(name, async move {
            tokio::select! {
                () = task => {}
                _ = stop.changed() => {}
            }
        });
    }

    /// Signals every task to stop and waits up to `grace` in all for them; the ones still
    /// running then are named in a warning and aborted.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(None) => return,
                Ok(Some(Ok((id, ())))) => {
                    self.names.remove(&id);
                }
                Ok(Some(Err(err))) => {
                    let task = self.names.remove(&err.id()).unwrap_or("?");
                    tracing::error!(task, error = %err, "background task failed");
                }
                Err(_) => break,
            }
        }
        let mut late: Vec<&str> = self.names.values().copied().collect();
        late.sort_unstable();
        for task in late {
            tracing::warn!(task, "background task did not stop in time");
        }
        self.tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stops_every_task_within_the_grace() {
        let mut sup = Supervisor::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let mut stop = sup.stop_signal();
        let flag = stopped.clone();
        sup.spawn("watcher", async move {
            let _ = stop.changed().await;
            flag.store(true, Ordering::SeqCst);
        });
        sup.spawn_until_stopped("retention", std::future::pending());
        let started = tokio::time::Instant::now();
        sup.shutdown(Duration::from_secs(5)).await;
        assert!(stopped.load(Ordering::SeqCst), "the watcher saw the signal");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing waited out the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_signal_is_aborted_at_the_deadline() {
        let mut sup = Supervisor::new();
        let dropped = Arc::new(AtomicBool::new(false));
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(dropped.clone());
        sup.spawn("stubborn", async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        sup.shutdown(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        tokio::task::yield_now().await;
        assert!(dropped.load(Ordering::SeqCst), "the task was aborted");
    }
}

//! The bounded accept loop shared by the plain-HTTP listeners (admin API, ACME HTTP-01), and
//! the backoff every listener uses when accepting fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// First pause after an accept error; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between accept attempts while they keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While accepting keeps failing, one warning per this period.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Pauses and logging after failed accepts. Out of file descriptors (EMFILE), the listener
/// stays readable and every accept fails at once: without a growing pause the loop spins, and
/// a warning per failure wrote ten a second.
pub struct AcceptBackoff {
    what: &'static str,
    failures: u64,
    pause: Duration,
    warned: Option<Instant>,
}

impl AcceptBackoff {
    /// No failures yet; `what` names the listener in logs.
    pub fn new(what: &'static str) -> Self {
        AcceptBackoff {
            what,
            failures: 0,
            pause: BACKOFF_MIN,
            warned: None,
        }
    }

    /// Counts a failed accept and returns how long to pause. Warns on the first failure of a
    /// run and then once per minute; the others go to debug.
    pub fn failed(&mut self, err: &std::io::Error) -> Duration {
        self.failures += 1;
        let due = self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            self.warned = Some(Instant::now());
            tracing::warn!(listener = self.what, error = %err, failures = self.failures,
                "accept failed; backing off");
        } else {
            tracing::debug!(listener = self.what, error = %err, "accept failed");
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(BACKOFF_MAX);
        pause
    }

    /// An accept succeeded: ends a run of failures (logging how long it was).
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.what,
                failures = self.failures,
                "accepting again"
            );
            *self = AcceptBackoff::new(self.what);
        }
    }
}

/// Accepts on `listener` until `stop` changes, serving at most `max` connections at once
/// (more wait in the kernel backlog); each connection runs `serve` in its own task. `what`
/// names the listener in logs.
pub async fn accept_bounded<F, Fut>(
    listener: TcpListener,
    max: usize,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
    let mut backoff = AcceptBackoff::new(what);
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let tcp = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    backoff.succeeded();
                    tcp
                }
                Err(err) => {
                    tokio::time::sleep(backoff.failed(&err)).await;
                    continue;
                }
            },
        };
        let conn = serve(tcp, stop.clone());
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

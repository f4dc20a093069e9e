//! The limits a background prober keeps: a few connections at once, one probe per MX host per
//! interval (the same MX usually serves many tenants).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ProbeOptions, ProbeOutcome, Step, probe_mx};

/// The map of last probes is pruned of expired entries once it holds this many.
const PRUNE_AT: usize = 1024;

/// A probe refused because the same MX host was probed less than an interval ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the host may be probed again.
    pub next: Instant,
}

/// Probes MX hosts under a concurrency limit and a per-host minimum interval.
#[derive(Debug)]
pub struct Prober {
    opts: Arc<ProbeOptions>,
    permits: Arc<Semaphore>,
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

/// Leave to probe one host: holds a connection permit until dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Prober {
    /// At most `concurrency` probes at once (at least one), each MX host at most once per
    /// `interval`.
    pub fn new(opts: Arc<ProbeOptions>, concurrency: usize, interval: Duration) -> Self {
        Prober {
            opts,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The options probes use.
    pub fn options(&self) -> &ProbeOptions {
        &self.opts
    }

    /// Waits for a connection permit, then claims `mx_host` for this interval. A host probed
    /// (or claimed) less than an interval ago is refused at once, without waiting.
    pub async fn admit(&self, mx_host: &str) -> Result<Admission, Throttled> {
        let key = host_key(mx_host);
        self.check(&key, Instant::now())?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the prober's semaphore is never closed");
        // Another caller may have claimed the host while this one waited.
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&at) = last.get(&key)
            && now < at + self.interval
        {
            return Err(Throttled {
                next: at + self.interval,
            });
        }
        if last.len() >= PRUNE_AT {
            last.retain(|_, at| now < *at + self.interval);
        }
        last.insert(key, now);
        Ok(Admission { _permit: permit })
    }

    fn check(&self, key: &str, now: Instant) -> Result<(), Throttled> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(key) {
            Some(&at) if now < at + self.interval => Err(Throttled {
                next: at + self.interval,
            }),
            _ => Ok(()),
        }
    }

    /// Probes `mx_host` as a sender would: the addresses in order, moving on only when one
    /// cannot be connected to; the first that answers gives the verdict. `Err` when the host
    /// was probed less than an interval ago.
    pub async fn probe(
        &self,
        mx_host: &str,
        addrs: &[SocketAddr],
    ) -> Result<ProbeOutcome, Throttled> {
        let _admission = self.admit(mx_host).await?;
        let mut outcome =
            ProbeOutcome::unreachable(Step::Connect, format!("{mx_host}: no address to try"));
        for &addr in addrs {
            outcome = probe_mx(&self.opts, mx_host, addr).await;
            if !matches!(
                outcome,
                ProbeOutcome::Unreachable {
                    step: Step::Connect,
                    ..
                }
            ) {
                break;
            }
        }
        Ok(outcome)
    }
}

/// MX host names compare without case and without a final dot.
fn host_key(mx_host: &str) -> String {
    mx_host
        .strip_suffix('.')
        .unwrap_or(mx_host)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn prober(concurrency: usize) -> Prober {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let roots = super::super::TrustRoots::Only(vec![ca.cert.der().clone()]);
        let opts = ProbeOptions::new("probe.test", roots).unwrap();
        Prober::new(Arc::new(opts), concurrency, Duration::from_secs(3600))
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_host_per_interval() {
        let prober = prober(4);
        let first = prober.admit("mx1.example").await.unwrap();
        drop(first);
        // Dropping the admission frees the permit, not the host.
        let refused = prober.admit("MX1.example.").await.unwrap_err();
        assert_eq!(refused.next, Instant::now() + Duration::from_secs(3600));
        // Other hosts are not affected.
        prober.admit("mx2.example").await.unwrap();
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(prober.admit("mx1.example").await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        prober.admit("mx1.example").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let prober = prober(2);
        let a = prober.admit("a.example").await.unwrap();
        let _b = prober.admit("b.example").await.unwrap();
        // A third host waits for a permit...
        let mut c = Box::pin(prober.admit("c.example"));
        assert!((&mut c).now_or_never().is_none());
        // ...and gets it when one is released.
        drop(a);
        assert!(c.now_or_never().expect("a permit is free").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_does_not_claim_the_host_until_admitted() {
        let prober = prober(1);
        let a = prober.admit("a.example").await.unwrap();
        let waiting = prober.admit("b.example");
        let mut waiting = Box::pin(waiting);
        assert!((&mut waiting).now_or_never().is_none());
        drop(waiting);
        drop(a);
        // The abandoned wait left no claim on b.
        prober.admit("b.example").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn two_waiters_for_one_host_give_one_probe() {
        let prober = prober(1);
        let a = prober.admit("a.example").await.unwrap();
        let mut first = Box::pin(prober.admit("b.example"));
        let mut second = Box::pin(prober.admit("b.example"));
        assert!((&mut first).now_or_never().is_none());
        assert!((&mut second).now_or_never().is_none());
        drop(a);
        let first = first.await.unwrap();
        drop(first);
        assert!(second.await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn old_entries_are_pruned() {
        let prober = prober(1);
        for i in 0..PRUNE_AT {
            prober.admit(&format!("mx{i}.example")).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        prober.admit("new.example").await.unwrap();
        assert_eq!(prober.last.lock().unwrap().len(), 1);
    }
}

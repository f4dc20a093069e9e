//! The scheduler task: picks hosts that are due, runs their attempts (I/O only) and applies
//! each outcome through [`Rules::next`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use instant_acme::{Account, CertificateIdentifier};
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::dns01;
use super::host::{Now, Outcome, Rules};
use super::issue::{self, IssueError, Issued};
use super::preflight::PreflightError;
use super::{AcmeProvider, ORDER_LOG_LEN, describe};
use crate::certs::store::{CertMeta, StoredCert};
use crate::certs::{CertEntry, CertState};
use crate::config::ChallengeKind;

/// The scheduler looks again at least this often even when nothing is due (clock jumps).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What an attempt starts from, read from the host when it begins.
struct Look {
    domain: String,
    /// The host has a certificate: a new order renews it.
    renewal: bool,
    needs_order: bool,
}

impl AcmeProvider {
    /// Runs the scheduler until `stop` turns true. Started once by the daemon.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            directory = %self.cfg.directory,
            max_concurrent = self.cfg.schedule.max_concurrent,
            orders_per_window = self.cfg.schedule.orders_per_window,
            window_secs = self.cfg.schedule.window.as_secs_f64(),
            "ACME scheduler started"
        );
        // Orders wait for the stored certificates: a host whose certificate is not read yet
        // must not look like one without a certificate.
        self.read_stored(&stop).await;
        let mut attempts = JoinSet::new();
        let mut lead = Leadership::new(self.joined().map(|j| j.may_order.clone()));
        loop {
            if lead.changed_to_leader() && !self.start_leading().await {
                lead.retry_later();
            }
            let wake_at = if lead.leading() {
                self.start_due(&mut attempts)
            } else {
                lead.retry_at()
            };
            tokio::select! {
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                _ = self.wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                () = lead.next_change() => {}
            }
        }
        attempts.abort_all();
        while attempts.join_next().await.is_some() {}
        if let Some(joined) = self.joined() {
            // The aborted attempts could not withdraw their shared challenges themselves.
            joined.withdraw_all().await;
        }
        tracing::info!("ACME scheduler stopped");
    }

    /// Reads what the previous issuer left before this replica orders (on a blocking thread:
    /// the store blocks). Whether it could.
    async fn start_leading(self: &Arc<Self>) -> bool {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.take_over()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the previous issuer's state; not ordering yet");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the previous issuer's state failed");
                false
            }
        }
    }

    /// The rules of [`Rules::next`] as configured, with what is known about ARI now.
    pub(super) fn rules(&self) -> Rules<'_> {
        Rules {
            directory: &self.cfg.directory,
            schedule: &self.cfg.schedule,
            dns_recheck: self.cfg.preflight.recheck,
            ari: self.ari_supported.load(Ordering::Relaxed),
        }
    }

    /// When the next new order may be placed: the order limit and the CA's Retry-After.
    fn order_gate(&self, now: Instant) -> Instant {
        let mut gate = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .available_at(now);
        if let Some(until) = *self.retry_after.lock().unwrap_or_else(|e| e.into_inner())
            && let Ok(ahead) = until.duration_since(SystemTime::now())
        {
            gate = gate.max(now + ahead);
        }
        gate
    }

    /// Starts attempts for due hosts (oldest first) while slots are free; returns when to look
    /// again.
    fn start_due(self: &Arc<Self>, attempts: &mut JoinSet<()>) -> Instant {
        let now = Instant::now();
        let now_unix = crate::util::unix_now();
        let order_gate = self.order_gate(now);
        let mut hosts = self.lock_hosts();
        let mut due: Vec<(Instant, String)> = hosts
            .iter()
            .filter(|(_, h)| h.wanted && !h.in_flight)
            .map(|(name, h)| (h.due, name.clone()))
            .collect();
        due.sort();
        let mut wake_at = now + IDLE_WAKE;
        for (at, name) in due {
            let host = hosts.get_mut(&name).expect("listed above");
            let at = if host.needs_order(now_unix) && order_gate > at {
                // Held by the order limit or the CA's Retry-After: show when it will go.
                host.due = order_gate;
                self.board.set(&name, host.status());
                order_gate
            } else {
                at
            };
            if at > now || attempts.len() >= self.cfg.schedule.max_concurrent {
                wake_at = wake_at.min(at.max(now + Duration::from_millis(10)));
                continue;
            }
            host.in_flight = true;
            let this = self.clone();
            attempts.spawn(async move {
                let outcome = this.attempt_while_leading(&name).await;
                this.finish(&name, outcome);
            });
        }
        wake_at
    }

    /// [`AcmeProvider::attempt`], dropped when this replica stops being a cluster's issuer.
    ///
    /// Dropped rather than let finish: the lock has passed to another replica, which reads
    /// the store and may order the same host at once; two issuers' orders for one host would
    /// race (and each replica holds one TLS-ALPN-01 answer per host, so one validation would
    /// fail). Dropping the future removes the local answers (their guards); the shared ones
    /// are withdrawn below, after any publish still committing (see `Joined::share`).
    async fn attempt_while_leading(&self, host: &str) -> Outcome {
        let Some(joined) = self.joined() else {
            return self.attempt(host).await;
        };
        let mut may_order = joined.may_order.clone();
        let outcome = tokio::select! {
            outcome = self.attempt(host) => outcome,
            _ = may_order.wait_for(|leads| !*leads) => {
                tracing::info!(host, "no longer the issuer; the attempt in flight is dropped");
                Outcome::Abandoned
            }
        };
        joined.withdraw_host(host).await;
        outcome
    }

    /// One look at one host: ARI while its certificate is not due, otherwise preflight,
    /// account, order slot and the order.
    async fn attempt(&self, host: &str) -> Outcome {
        let Some(look) = self.look(host) else {
            return Outcome::NotDue;
        };
        if !look.needs_order {
            return self.ask_ari(host).await;
        }
        let challenges = match self.choose_challenges(host, &look.domain).await {
            Ok(challenges) => challenges,
            Err(why) => return Outcome::DnsNotReady(why),
        };
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => return self.failed(e.into()),
        };
        if let Err(at) = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(Instant::now())
        {
            return Outcome::RateLimited(at);
        }
        match self.order(&account, host, &look, &challenges).await {
            Ok((cert, order_url, issued_at)) => Outcome::Issued {
                cert,
                order_url,
                issued_at,
            },
            Err(error) => self.failed(error),
        }
    }

    fn look(&self, host: &str) -> Option<Look> {
        let hosts = self.lock_hosts();
        let h = hosts.get(host)?;
        Some(Look {
            domain: h.domain.clone(),
            renewal: h.cert.is_some(),
            needs_order: h.needs_order(crate::util::unix_now()),
        })
    }

    /// The challenge types this order may use: DNS-01 alone when the host's challenge CNAME
    /// leads into the built-in zone, otherwise the other configured types once the preflight
    /// finds the host pointing here.
    async fn choose_challenges(
        &self,
        host: &str,
        domain: &str,
    ) -> Result<Vec<ChallengeKind>, PreflightError> {
        let configured = &self.cfg.challenges;
        let (Some(zone), Some(checker)) = (&self.cfg.dns01_zone, &self.preflight) else {
            self.preflight(host, domain).await?;
            return Ok(configured.clone());
        };
        let target = dns01::target(host, zone);
        let missing = match checker
            .cname_to(&dns01::challenge_name(host), &target)
            .await
        {
            Ok(()) => {
                tracing::info!(%domain, host, %target, "DNS-01 challenge CNAME in place");
                return Ok(vec![ChallengeKind::Dns01]);
            }
            Err(why) => why,
        };
        let rest: Vec<ChallengeKind> = configured
            .iter()
            .copied()
            .filter(|c| *c != ChallengeKind::Dns01)
            .collect();
        if rest.is_empty() {
            tracing::warn!(%domain, host, why = %missing, "DNS-01 challenge CNAME missing; no order placed");
            return Err(missing);
        }
        self.preflight(host, domain).await?;
        Ok(rest)
    }

    /// Whether `host` points here, when the preflight is enabled.
    async fn preflight(&self, host: &str, domain: &str) -> Result<(), PreflightError> {
        let Some(checker) = self
            .preflight
            .as_ref()
            .filter(|_| self.cfg.preflight.enabled)
        else {
            return Ok(());
        };
        match checker.check(host).await {
            Ok(matched) => {
                tracing::info!(%domain, host, %matched, "DNS preflight passed");
                Ok(())
            }
            Err(why) => {
                tracing::warn!(%domain, host, %why, "DNS preflight failed; no order placed");
                Err(why)
            }
        }
    }

    /// Places the order (its slot already taken), then checks and stores the certificate.
    async fn order(
        &self,
        account: &Account,
        host: &str,
        look: &Look,
        challenges: &[ChallengeKind],
    ) -> Result<(Arc<CertEntry>, String, i64), IssueError> {
        // The order counts from when it is sent (what the CA's own limits measure).
        let sent_at = Instant::now();
        let state = if look.renewal {
            CertState::Renewing
        } else {
            CertState::Pending
        };
        self.set_status(host, state);
        let timeout = self.cfg.schedule.order_timeout;
        let responders = issue::Responders {
            resolver: &self.resolver,
            tokens: &self.tokens,
            dns01: &self.dns01,
            dns01_zone: self.cfg.dns01_zone.as_deref(),
            cluster: self.joined(),
        };
        let placed = |url: &str| self.log_order(host, &look.domain, url, look.renewal, sent_at);
        let order = issue::issue(account, host, challenges, timeout, responders, placed);
        let issued = tokio::time::timeout(timeout + Duration::from_secs(30), order)
            .await
            .map_err(|_| IssueError::Timeout)??;
        let cert = CertEntry::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
            .map_err(IssueError::BadCertificate)?;
        let (order_url, issued_at) = self.keep(host, &look.domain, issued);
        Ok((Arc::new(cert), order_url, issued_at))
    }

    /// Remembers a new order for [`AcmeProvider::recent_orders`].
    fn log_order(&self, host: &str, domain: &str, url: &str, renewal: bool, sent_at: Instant) {
        let mut log = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == ORDER_LOG_LEN {
            log.pop_front();
        }
        log.push_back((host.to_owned(), sent_at));
        tracing::info!(%domain, host, order = url, renewal, "ACME order placed");
    }

    /// Stores a new certificate; returns its order URL and the time stored with it.
    fn keep(&self, host: &str, domain: &str, issued: Issued) -> (String, i64) {
        let issued_at = crate::util::unix_now();
        let stored = StoredCert {
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            meta: CertMeta {
                directory: self.cfg.directory.clone(),
                order_url: Some(issued.order_url.clone()),
                issued_at,
            },
        };
        if let Err(e) = self.store.save_cert(host, &stored) {
            // Serve it anyway: the next start orders again rather than serving nothing now.
            tracing::error!(%domain, host, error = %e, "cannot store the new certificate");
        }
        (issued.order_url, issued_at)
    }

    /// Asks the CA's renewal information (RFC 9773) when to renew; falls back to the lifetime
    /// fraction when the CA has none.
    async fn ask_ari(&self, host: &str) -> Outcome {
        let leaf = {
            let hosts = self.lock_hosts();
            hosts
                .get(host)
                .and_then(|h| h.cert.as_ref())
                .and_then(|c| c.key.end_entity_cert().ok().map(|der| der.to_vec()))
        };
        let Some(leaf) = leaf else {
            return Outcome::NotDue;
        };
        if !self.ari_supported.load(Ordering::Relaxed) {
            return Outcome::NotDue;
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot ask the CA for renewal information");
                return Outcome::AriUnavailable;
            }
        };
        let id = match CertificateIdentifier::try_from(&CertificateDer::from(leaf)) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(host, error = %e, "no ARI identifier; using the lifetime fraction");
                return Outcome::NotDue;
            }
        };
        match account.renewal_info(&id).await {
            Ok((info, retry)) => Outcome::AriWindow {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                retry,
            },
            Err(instant_acme::Error::Unsupported(_)) => {
                tracing::info!(
                    "the CA offers no renewal information (ARI); renewing at the configured fraction of the lifetime"
                );
                self.ari_supported.store(false, Ordering::Relaxed);
                Outcome::NotDue
            }
            Err(e) => {
                tracing::warn!(host, error = %describe(&e), "ARI query failed");
                Outcome::AriUnavailable
            }
        }
    }

    /// The CA's Retry-After, if it sent one that lies in the future.
    fn take_retry_after(&self) -> Option<SystemTime> {
        let slot = self.retry_after.lock().unwrap_or_else(|e| e.into_inner());
        slot.filter(|at| *at > SystemTime::now())
    }

    /// A failed attempt, with the time the CA asked us to wait for.
    fn failed(&self, error: IssueError) -> Outcome {
        let retry_after = match &error {
            IssueError::Ca(instant_acme::Error::Timeout(Some(at))) => {
                Some(SystemTime::now() + at.saturating_duration_since(std::time::Instant::now()))
            }
            IssueError::Account(_) | IssueError::Ca(_) => self.take_retry_after(),
            _ => None,
        };
        Outcome::Failed { error, retry_after }
    }

    /// Applies an attempt's outcome: the host's next state, then its effects, the board and
    /// the stored status.
    fn finish(&self, host: &str, outcome: Outcome) {
        let now = Now::current();
        let rules = self.rules();
        let record = {
            let mut hosts = self.lock_hosts();
            let Some(h) = hosts.get_mut(host) else { return };
            *h = rules.next(h, &outcome, &now);
            self.announce(host, h, &outcome, &now);
            if !h.wanted {
                return;
            }
            self.board.set(host, h.status());
            if matches!(outcome, Outcome::Abandoned) {
                // Not the issuer any more: the status in the store is the new leader's.
                return;
            }
            h.record()
        };
        if let Err(e) = self.store.save_status(host, &record) {
            tracing::warn!(host, error = %e, "cannot store certificate status");
        }
        self.wake.notify_one();
    }

    /// What an outcome does beyond the host's state: the order counter, publishing a new
    /// certificate, a new account when the CA forgot ours, and the log line. `h` is the host
    /// after the transition.
    fn announce(&self, host: &str, h: &super::host::Host, outcome: &Outcome, now: &Now) {
        if let Some(result) = outcome.order_result() {
            self.metrics.acme_order(result);
        }
        match outcome {
            Outcome::Issued {
                cert, order_url, ..
            } => {
                tracing::info!(
                    domain = %h.domain, host, order = order_url,
                    serial = %cert.info.serial,
                    not_after = %crate::util::format_unix(cert.info.not_after),
                    "certificate issued"
                );
                if h.wanted {
                    self.resolver.publish_shared(host, cert.clone());
                }
            }
            Outcome::RateLimited(_) => {
                tracing::info!(domain = %h.domain, host, "order limit reached; waiting for the window");
            }
            Outcome::Failed { error, .. } => {
                if error.account_gone() {
                    // A reset staging or test CA: make a new account before the next order.
                    self.account_stale.store(true, Ordering::Relaxed);
                }
                if h.account_retry {
                    tracing::warn!(
                        domain = %h.domain, host, error = %error,
                        "the CA does not know the stored ACME account; creating a new one and ordering again at once"
                    );
                } else {
                    tracing::warn!(
                        domain = %h.domain, host, error = %error, failures = h.failures,
                        retry_in_secs = h.due.saturating_duration_since(now.at).as_secs_f64(),
                        "certificate order failed; backing off"
                    );
                }
            }
            Outcome::AriWindow { .. } => {
                tracing::info!(domain = %h.domain, host, renew_at = %crate::util::format_unix(h.renew_due), "ARI renewal window");
            }
            Outcome::DnsNotReady(_)
            | Outcome::NotDue
            | Outcome::AriUnavailable
            | Outcome::Abandoned => {}
        }
    }

    /// Shows `state` on the board while an attempt runs.
    fn set_status(&self, host: &str, state: CertState) {
        let mut hosts = self.lock_hosts();
        if let Some(h) = hosts.get_mut(host) {
            h.state = state;
            if h.wanted {
                self.board.set(host, h.status());
            }
        }
    }
}

/// Whether this replica may order, as the scheduler loop follows it. Alone (no cluster) it
/// always may.
struct Leadership {
    may_order: Option<watch::Receiver<bool>>,
    /// Acting as the issuer: told so, and the previous issuer's state is read.
    leading: bool,
    /// Told to lead but the store could not be read: try again then.
    retry: Option<Instant>,
}

/// Wait before trying again to read the previous issuer's state.
const TAKE_OVER_RETRY: Duration = Duration::from_secs(5);

impl Leadership {
    fn new(may_order: Option<watch::Receiver<bool>>) -> Self {
        Leadership {
            leading: may_order.is_none(),
            may_order,
            retry: None,
        }
    }

    fn leading(&self) -> bool {
        self.leading
    }

    /// Follows the latest value; true when this replica was just told to lead (or a retry
    /// is due): the caller reads the previous issuer's state, then orders.
    fn changed_to_leader(&mut self) -> bool {
        let Some(rx) = &mut self.may_order else {
            return false;
        };
        let told = *rx.borrow_and_update();
        if !told {
            self.leading = false;
            self.retry = None;
            return false;
        }
        if self.leading || self.retry.is_some_and(|at| at > Instant::now()) {
            return false;
        }
        self.leading = true;
        self.retry = None;
        true
    }

    /// The previous issuer's state could not be read: not leading, again in a moment.
    fn retry_later(&mut self) {
        self.leading = false;
        self.retry = Some(Instant::now() + TAKE_OVER_RETRY);
    }

    /// When to look again while not ordering.
    fn retry_at(&self) -> Instant {
        self.retry
            .unwrap_or_else(|| Instant::now() + IDLE_WAKE)
            .max(Instant::now() + Duration::from_millis(10))
    }

    /// Returns when `may_order` changes; never without a cluster, or once its sender is gone
    /// (the daemon is stopping: the last value holds, as false).
    async fn next_change(&mut self) {
        match &mut self.may_order {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    self.may_order = Some(watch::channel(false).1);
                    self.leading = false;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leadership_follows_may_order_and_reads_the_store_once_per_term() {
        assert!(Leadership::new(None).leading(), "alone, it always orders");
        let (tx, rx) = watch::channel(false);
        let mut lead = Leadership::new(Some(rx));
        assert!(!lead.changed_to_leader());
        assert!(!lead.leading());
        tx.send_replace(true);
        assert!(
            lead.changed_to_leader(),
            "told to lead: read the store first"
        );
        assert!(lead.leading());
        assert!(!lead.changed_to_leader(), "once per term");
        tx.send_replace(false);
        assert!(!lead.changed_to_leader());
        assert!(!lead.leading());
        tx.send_replace(true);
        assert!(lead.changed_to_leader(), "a new term reads the store again");
        lead.retry_later();
        assert!(!lead.leading());
        assert!(!lead.changed_to_leader(), "not before the retry is due");
        assert!(lead.retry_at() > Instant::now() + Duration::from_secs(4));
    }
}

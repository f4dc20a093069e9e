//! The ACME issuer: one certificate per `mta-sts.<domain>`, from one shared account, paced by
//! our own scheduler.
//!
//! Built on `instant-acme` (the protocol: JWS, nonces, orders, ARI, EAB) with our own
//! scheduler and storage, rather than `rustls-acme`: the latter issues one SAN certificate per
//! configuration (per-tenant use would mean one state, and one new account, per domain), has no
//! global order limit, no Retry-After, no ARI, and writes keys non-atomically with mode 0644.
//!
//! The parts:
//! - [`AcmeProvider`] implements [`CertProvider`]: `sync` publishes cached certificates and
//!   records which hosts are wanted, nothing more (it never blocks).
//! - [`AcmeProvider::run`] is the scheduler task the daemon starts: it picks hosts that are due,
//!   runs at most `max_concurrent` attempts at once, and places at most `orders_per_window`
//!   new orders per window ([`pace::OrderLimiter`]).
//! - An attempt: DNS preflight ([`preflight`]) → account → order slot → [`issue::issue`]
//!   (TLS-ALPN-01 through the resolver, HTTP-01 through [`http01`]) → store → publish.
//!   A failure backs the host off exponentially with jitter, or until the CA's Retry-After.

pub mod client;
pub mod http01;
pub mod issue;
pub mod pace;
pub mod preflight;

pub use client::AccountError;
pub use issue::IssueError;
pub use preflight::PreflightError;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{Account, CertificateIdentifier};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::provider::drop_removed;
use super::store::{CertMeta, CertStore, StatusRecord, StoredCert};
use super::{CertBoard, CertEntry, CertProvider, CertResolver, CertState, CertStatus};
use crate::config::{AcmeConfig, Tenant};
use crate::stats::Metrics;
use client::{CaClient, RetryAfterSlot};
use pace::{OrderLimiter, backoff, instant_at, renew_at, unix_of};

/// Name in logs, metrics and [`CertStatus::provider`].
const NAME: &str = "acme";
/// The scheduler looks again at least this often even when nothing is due (clock jumps).
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// New orders remembered for [`AcmeProvider::recent_orders`].
const ORDER_LOG_LEN: usize = 1000;
/// Least time between two ARI queries for one certificate, whatever the CA suggests.
const ARI_MIN_INTERVAL: Duration = Duration::from_secs(3600);

/// What the scheduler knows about one host.
struct Host {
    domain: String,
    /// In the current tenant set.
    wanted: bool,
    /// The newest certificate (also published while wanted).
    cert: Option<Arc<CertEntry>>,
    /// Directory of the CA that issued `cert`.
    cert_directory: String,
    /// When `cert` should be replaced, Unix seconds (fraction of the lifetime, or ARI).
    renew_due: i64,
    /// When the scheduler next looks at this host.
    due: Instant,
    /// Consecutive failures.
    failures: u32,
    /// An attempt is running.
    in_flight: bool,
    state: CertState,
    last_error: Option<String>,
}

impl Host {
    fn new(domain: String) -> Self {
        Host {
            domain,
            wanted: false,
            cert: None,
            cert_directory: String::new(),
            renew_due: 0,
            due: Instant::now(),
            failures: 0,
            in_flight: false,
            state: CertState::Pending,
            last_error: None,
        }
    }

    /// Whether the next attempt would place an order (rather than only ask ARI).
    fn needs_order(&self, now: i64) -> bool {
        match &self.cert {
            None => true,
            Some(c) => c.info.not_after <= now || self.renew_due <= now,
        }
    }
}

/// How an attempt ended.
enum Outcome {
    Issued(Arc<CertEntry>, String),
    DnsNotReady(String),
    RateLimited(Instant),
    Failed(String, Option<SystemTime>),
    /// ARI (or nothing) said the certificate is not due yet.
    NotDue,
    /// The CA could not be asked about renewal; the certificate stays valid, ask later.
    AriUnavailable,
}

/// The ACME certificate provider and its scheduler.
pub struct AcmeProvider {
    cfg: AcmeConfig,
    store: Arc<dyn CertStore>,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    /// HTTP-01 answers, served by [`http01::run`].
    pub tokens: Arc<http01::Tokens>,
    client: CaClient,
    retry_after: RetryAfterSlot,
    preflight: Option<preflight::Checker>,
    account: tokio::sync::Mutex<Option<Account>>,
    ari_supported: AtomicBool,
    /// The CA said the account does not exist: create a new one before the next order.
    account_stale: AtomicBool,
    hosts: Mutex<HashMap<String, Host>>,
    /// The last tenant list and the extra (non-tenant) hosts, together the wanted set.
    tenants: Mutex<Vec<Arc<Tenant>>>,
    extra: Mutex<Vec<String>>,
    limiter: Mutex<OrderLimiter>,
    wake: Notify,
    /// Recent new orders (host, when), newest last, at most [`ORDER_LOG_LEN`].
    orders: Mutex<VecDeque<(String, Instant)>>,
    /// Where finished orders are counted (`mta_stsd_acme_orders_total{result}`).
    metrics: Arc<Metrics>,
}

impl AcmeProvider {
    /// Builds the provider and loads every cached certificate from `store` (published by the
    /// first `sync` for the hosts that are tenants). Finished orders are counted in `metrics`.
    pub fn new(
        cfg: AcmeConfig,
        store: Arc<dyn CertStore>,
        resolver: Arc<CertResolver>,
        board: Arc<CertBoard>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let retry_after = RetryAfterSlot::default();
        let client = CaClient::new(&cfg.trusted_roots, retry_after.clone())?;
        let preflight = if cfg.preflight.enabled {
            Some(preflight::Checker::new(&cfg.preflight)?)
        } else {
            None
        };
        let limiter = OrderLimiter::new(cfg.schedule.orders_per_window, cfg.schedule.window);
        metrics.init_acme_orders();
        let provider = AcmeProvider {
            store,
            resolver,
            board,
            tokens: Arc::default(),
            client,
            retry_after,
            preflight,
            account: tokio::sync::Mutex::new(None),
            ari_supported: AtomicBool::new(true),
            account_stale: AtomicBool::new(false),
            hosts: Mutex::new(HashMap::new()),
            tenants: Mutex::default(),
            extra: Mutex::default(),
            limiter: Mutex::new(limiter),
            wake: Notify::new(),
            orders: Mutex::default(),
            metrics,
            cfg,
        };
        provider.load_cache();
        Ok(provider)
    }

    /// The most recent new orders (host, when placed), oldest first.
    pub fn recent_orders(&self) -> Vec<(String, Instant)> {
        let log = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every stored certificate into memory. A bad file is logged and skipped: that
    /// host is ordered again, the others are served.
    fn load_cache(&self) {
        let hosts = match self.store.hosts() {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::error!(error = %e, "cannot list stored certificates");
                return;
            }
        };
        let now = crate::util::unix_now();
        let mut map = self.lock_hosts();
        for host in hosts {
            let mut entry = Host::new(host.trim_start_matches("mta-sts.").to_owned());
            match self.store.load_cert(&host) {
                Ok(Some(stored)) => match CertEntry::from_pem(
                    stored.chain_pem.as_bytes(),
                    stored.key_pem.as_bytes(),
                ) {
                    Ok(cert) if cert.info.not_after > now => {
                        self.adopt(&mut entry, Arc::new(cert), stored.meta.directory);
                    }
                    Ok(_) => tracing::info!(host, "cached certificate expired; ordering anew"),
                    Err(e) => tracing::error!(host, error = %e, "cached certificate unusable"),
                },
                Ok(None) => {}
                Err(e) => tracing::error!(host, error = %e, "cannot read cached certificate"),
            }
            // A restart must not reset a backoff: a crash loop would otherwise hammer the CA.
            if let Ok(Some(status)) = self.store.load_status(&host)
                && status.state == CertState::Backoff
                && let Some(next) = status.next_attempt
            {
                entry.due = entry.due.max(instant_at(next));
                entry.last_error = status.last_error;
            }
            map.insert(host, entry);
        }
    }

    /// Makes `cert` the host's current certificate and schedules its renewal.
    fn adopt(&self, host: &mut Host, cert: Arc<CertEntry>, directory: String) {
        let info = &cert.info;
        host.renew_due = if directory == self.cfg.directory {
            renew_at(
                info.not_before,
                info.not_after,
                self.cfg.schedule.renew_fraction,
            )
        } else {
            // Issued by another CA (e.g. staging before production): replace it now.
            0
        };
        // With ARI possibly offered, look at the certificate soon; the attempt asks the CA.
        host.due = if self.ari_supported.load(Ordering::Relaxed) {
            Instant::now()
        } else {
            instant_at(host.renew_due)
        };
        host.cert_directory = directory;
        host.cert = Some(cert);
        host.state = CertState::Valid;
        host.failures = 0;
        host.last_error = None;
    }

    /// The account, restored or created on first use and shared by every order.
    async fn account(&self) -> Result<Account, AccountError> {
        let mut slot = self.account.lock().await;
        let force_new = self.account_stale.swap(false, Ordering::Relaxed);
        if !force_new && let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let account =
            client::load_or_create_account(&self.cfg, self.store.as_ref(), &self.client, force_new)
                .await?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Runs the scheduler until `stop` turns true. Started once by the daemon.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            directory = %self.cfg.directory,
            max_concurrent = self.cfg.schedule.max_concurrent,
            orders_per_window = self.cfg.schedule.orders_per_window,
            window_secs = self.cfg.schedule.window.as_secs_f64(),
            "ACME scheduler started"
        );
        let mut attempts = JoinSet::new();
        loop {
            let wake_at = self.start_due(&mut attempts);
            tokio::select! {
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                _ = self.wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        attempts.abort_all();
        while attempts.join_next().await.is_some() {}
        tracing::info!("ACME scheduler stopped");
    }

    /// Starts attempts for due hosts (oldest first) while slots are free; returns when to look
    /// again.
    fn start_due(self: &Arc<Self>, attempts: &mut JoinSet<()>) -> Instant {
        let now = Instant::now();
        let now_unix = crate::util::unix_now();
        // No new order before the order limit or the CA's Retry-After allows one.
        let mut order_gate = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .available_at(now);
        if let Some(until) = *self.retry_after.lock().unwrap_or_else(|e| e.into_inner())
            && let Ok(ahead) = until.duration_since(SystemTime::now())
        {
            order_gate = order_gate.max(now + ahead);
        }
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
                self.board.set(&name, status_of(host));
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
                let outcome = this.attempt(&name).await;
                this.finish(&name, outcome);
            });
        }
        wake_at
    }

    /// One look at one host: ARI, preflight, order.
    async fn attempt(&self, host: &str) -> Outcome {
        let (domain, has_cert, needs_order) = {
            let hosts = self.lock_hosts();
            let Some(h) = hosts.get(host) else {
                return Outcome::NotDue;
            };
            (
                h.domain.clone(),
                h.cert.is_some(),
                h.needs_order(crate::util::unix_now()),
            )
        };
        if !needs_order {
            return self.ask_ari(host).await;
        }
        if let Some(checker) = &self.preflight {
            match checker.check(host).await {
                Ok(matched) => {
                    tracing::info!(%domain, host, %matched, "DNS preflight passed")
                }
                Err(why) => {
                    tracing::warn!(%domain, host, %why, "DNS preflight failed; no order placed");
                    return Outcome::DnsNotReady(why.to_string());
                }
            }
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => return Outcome::Failed(e.to_string(), self.take_retry_after()),
        };
        if let Err(at) = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(Instant::now())
        {
            return Outcome::RateLimited(at);
        }
        // The order counts from when it is sent (what the CA's own limits measure).
        let sent_at = Instant::now();
        self.set_status(
            host,
            if has_cert {
                CertState::Renewing
            } else {
                CertState::Pending
            },
        );
        let timeout = self.cfg.schedule.order_timeout;
        let responders = issue::Responders {
            resolver: &self.resolver,
            tokens: &self.tokens,
        };
        let result = tokio::time::timeout(
            timeout + Duration::from_secs(30),
            issue::issue(
                &account,
                host,
                &self.cfg.challenges,
                timeout,
                responders,
                |url| {
                    let mut log = self.orders.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == ORDER_LOG_LEN {
                        log.pop_front();
                    }
                    log.push_back((host.to_owned(), sent_at));
                    tracing::info!(%domain, host, order = url, renewal = has_cert, "ACME order placed");
                },
            ),
        )
        .await;
        let issued = match result {
            Ok(Ok(issued)) => issued,
            Ok(Err(err)) => {
                let (message, hint) = self.explain(err);
                return Outcome::Failed(message, hint);
            }
            Err(_) => return Outcome::Failed("the order timed out".into(), None),
        };
        let cert = match CertEntry::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
        {
            Ok(cert) => Arc::new(cert),
            Err(e) => {
                return Outcome::Failed(format!("the CA sent an unusable certificate: {e}"), None);
            }
        };
        let stored = StoredCert {
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            meta: CertMeta {
                directory: self.cfg.directory.clone(),
                order_url: Some(issued.order_url.clone()),
                issued_at: crate::util::unix_now(),
            },
        };
        if let Err(e) = self.store.save_cert(host, &stored) {
            // Serve it anyway: the next start orders again rather than serving nothing now.
            tracing::error!(%domain, host, error = %e, "cannot store the new certificate");
        }
        Outcome::Issued(cert, issued.order_url)
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
            Ok((info, retry)) => {
                let start = info.suggested_window.start.unix_timestamp();
                let end = info.suggested_window.end.unix_timestamp().max(start);
                let pick = start + ((end - start) as f64 * rand::random::<f64>()) as i64;
                let retry = retry.max(ARI_MIN_INTERVAL);
                let mut hosts = self.lock_hosts();
                if let Some(h) = hosts.get_mut(host) {
                    h.renew_due = pick;
                    h.due = if pick <= crate::util::unix_now() {
                        Instant::now()
                    } else {
                        instant_at(pick).min(Instant::now() + retry)
                    };
                    tracing::info!(domain = %h.domain, host, renew_at = %crate::util::format_unix(pick), "ARI renewal window");
                }
                Outcome::NotDue
            }
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

    /// A one-line message with the CA's detail, and the time the CA asked us to wait for.
    fn explain(&self, err: IssueError) -> (String, Option<SystemTime>) {
        if err.account_gone() {
            // The CA forgot the account (a reset staging or test CA): make a new one next time.
            tracing::warn!("the CA does not know the stored ACME account; creating a new one");
            self.account_stale.store(true, Ordering::Relaxed);
        }
        let hint = match &err {
            IssueError::Ca(instant_acme::Error::Timeout(Some(at))) => {
                Some(SystemTime::now() + at.saturating_duration_since(std::time::Instant::now()))
            }
            IssueError::Ca(_) => self.take_retry_after(),
            _ => None,
        };
        (err.to_string(), hint)
    }

    /// Applies an attempt's outcome: state, next look, board, stored status, logs.
    fn finish(&self, host: &str, outcome: Outcome) {
        let sched = &self.cfg.schedule;
        let now = Instant::now();
        let record = {
            let mut hosts = self.lock_hosts();
            let Some(h) = hosts.get_mut(host) else { return };
            h.in_flight = false;
            match outcome {
                Outcome::Issued(cert, order) => {
                    self.metrics.acme_order("success");
                    tracing::info!(
                        domain = %h.domain, host, order,
                        serial = %cert.info.serial,
                        not_after = %crate::util::format_unix(cert.info.not_after),
                        "certificate issued"
                    );
                    if h.wanted {
                        self.resolver.publish_shared(host, cert.clone());
                    }
                    self.adopt(h, cert, self.cfg.directory.clone());
                }
                Outcome::DnsNotReady(why) => {
                    h.state = CertState::DnsNotReady;
                    h.last_error = Some(why);
                    h.due = now + self.cfg.preflight.recheck;
                }
                Outcome::RateLimited(at) => {
                    tracing::info!(domain = %h.domain, host, "order limit reached; waiting for the window");
                    h.due = at;
                }
                Outcome::Failed(message, hint) => {
                    self.metrics.acme_order("failure");
                    h.failures = h.failures.saturating_add(1);
                    let delay = backoff(
                        sched.backoff_base,
                        sched.backoff_cap,
                        h.failures,
                        rand::random(),
                    );
                    let mut due = now + delay;
                    if let Some(at) = hint
                        && let Ok(ahead) = at.duration_since(SystemTime::now())
                    {
                        due = due.max(now + ahead);
                    }
                    h.due = due;
                    h.state = CertState::Backoff;
                    tracing::warn!(
                        domain = %h.domain, host, error = %message, failures = h.failures,
                        retry_in_secs = due.saturating_duration_since(now).as_secs_f64(),
                        "certificate order failed; backing off"
                    );
                    h.last_error = Some(message);
                }
                Outcome::AriUnavailable => {
                    h.due = instant_at(h.renew_due).min(now + ARI_MIN_INTERVAL);
                }
                Outcome::NotDue => {
                    if !self.ari_supported.load(Ordering::Relaxed) || h.due <= now {
                        h.due = instant_at(h.renew_due).max(now + Duration::from_millis(10));
                    }
                }
            }
            if !h.wanted {
                return;
            }
            self.board.set(host, status_of(h));
            StatusRecord {
                state: h.state,
                last_error: h.last_error.clone(),
                next_attempt: Some(unix_of(h.due)),
                updated: crate::util::unix_now(),
            }
        };
        if let Err(e) = self.store.save_status(host, &record) {
            tracing::warn!(host, error = %e, "cannot store certificate status");
        }
        self.wake.notify_one();
    }

    /// Shows `state` on the board while an attempt runs.
    fn set_status(&self, host: &str, state: CertState) {
        let mut hosts = self.lock_hosts();
        if let Some(h) = hosts.get_mut(host) {
            h.state = state;
            if h.wanted {
                self.board.set(host, status_of(h));
            }
        }
    }
}

/// The board entry of a host.
fn status_of(h: &Host) -> CertStatus {
    let mut status = CertStatus::new(h.state, NAME);
    status.cert = h.cert.as_ref().map(|c| c.info.clone());
    status.last_error = h.last_error.clone();
    status.next_attempt = Some(unix_of(h.due));
    status
}

impl AcmeProvider {
    /// Brings the wanted set in step with the last tenant list and the extra hosts: publishes
    /// cached certificates, forgets removed hosts (their files stay), wakes the scheduler.
    fn apply_wanted(&self) {
        let tenants = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let wanted = drop_removed(&self.resolver, &self.board, &tenants, &extra);
        let labels = tenants
            .iter()
            .map(|t| (t.host.clone(), t.domain.clone()))
            .chain(extra.iter().map(|h| (h.clone(), h.clone())));
        let mut hosts = self.lock_hosts();
        for (name, h) in hosts.iter_mut() {
            if h.wanted && !wanted.contains(name) {
                tracing::info!(domain = %h.domain, "host removed; its renewals stop, its files stay");
            }
            h.wanted = false;
        }
        for (host, domain) in labels {
            let h = hosts
                .entry(host.clone())
                .or_insert_with(|| Host::new(domain.clone()));
            h.domain = domain;
            h.wanted = true;
            if let Some(cert) = &h.cert
                && !self.resolver.contains(&host)
            {
                self.resolver.publish_shared(&host, cert.clone());
            }
            self.board.set(&host, status_of(h));
        }
        drop(hosts);
        self.wake.notify_one();
    }
}

impl CertProvider for AcmeProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sync(&self, tenants: &[Arc<Tenant>]) {
        *self.tenants.lock().unwrap_or_else(|e| e.into_inner()) = tenants.to_vec();
        self.apply_wanted();
    }

    fn sync_extra(&self, hosts: &[String]) {
        *self.extra.lock().unwrap_or_else(|e| e.into_inner()) =
            hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self.apply_wanted();
    }
}

/// One line for an instant-acme error, with the CA's problem type and detail.
pub fn describe(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => describe_problem(p),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// `type: detail (subproblems)` of an RFC 7807 problem document.
pub fn describe_problem(p: &instant_acme::Problem) -> String {
    let kind = p
        .r#type
        .as_deref()
        .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"))
        .unwrap_or("error");
    let mut text = format!("{kind}: {}", p.detail.as_deref().unwrap_or("(no detail)"));
    for sub in &p.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str(&format!("; {detail}"));
        }
    }
    text
}

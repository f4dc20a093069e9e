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
//! - An attempt (`scheduler.rs`): DNS preflight ([`preflight`]) → account → order slot →
//!   [`issue::issue`] (TLS-ALPN-01 through the resolver, HTTP-01 through [`http01`]) → store.
//!   Its outcome goes through the pure transition of `host.rs`, which decides the host's state:
//!   the new certificate and its renewal time, the next ARI query, the preflight re-check, or a
//!   backoff (exponential with jitter, or until the CA's Retry-After).

pub mod client;
mod host;
pub mod http01;
pub mod issue;
pub mod pace;
pub mod preflight;
mod scheduler;

pub use client::AccountError;
pub use issue::IssueError;
pub use preflight::PreflightError;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use instant_acme::Account;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::provider::drop_removed;
use super::store::CertStore;
use super::{CertBoard, CertEntry, CertProvider, CertResolver, HostChanges};
use crate::config::{AcmeConfig, Tenant};
use crate::stats::Metrics;
use client::{CaClient, RetryAfterSlot};
use host::{Host, NAME, Now};
use pace::OrderLimiter;

/// New orders remembered for [`AcmeProvider::recent_orders`].
const ORDER_LOG_LEN: usize = 1000;

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
    tenants: Mutex<HashMap<String, Arc<Tenant>>>,
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

    /// Reads every stored certificate into memory, with any backoff that was running. A bad
    /// file is logged and skipped: that host is ordered again, the others are served.
    fn load_cache(&self) {
        let hosts = match self.store.hosts() {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::error!(error = %e, "cannot list stored certificates");
                return;
            }
        };
        let now = Now::current();
        let rules = self.rules();
        let mut map = self.lock_hosts();
        for host in hosts {
            let mut entry = Host::new(host.trim_start_matches("mta-sts.").to_owned());
            if let Some((cert, directory)) = self.cached_cert(&host, now.unix) {
                entry = rules.adopt(&entry, cert, directory, &now);
            }
            if let Ok(Some(status)) = self.store.load_status(&host) {
                entry = entry.resume(&status, &now);
            }
            map.insert(host, entry);
        }
    }

    /// The stored certificate of `host` and the directory of its CA, while it is valid.
    fn cached_cert(&self, host: &str, now: i64) -> Option<(Arc<CertEntry>, String)> {
        let stored = match self.store.load_cert(host) {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(host, error = %e, "cannot read cached certificate");
                return None;
            }
        };
        match CertEntry::from_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes()) {
            Ok(cert) if cert.info.not_after > now => Some((Arc::new(cert), stored.meta.directory)),
            Ok(_) => {
                tracing::info!(host, "cached certificate expired; ordering anew");
                None
            }
            Err(e) => {
                tracing::error!(host, error = %e, "cached certificate unusable");
                None
            }
        }
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

    /// Brings the wanted set in step with the last tenant list and the extra hosts: publishes
    /// cached certificates, forgets removed hosts (their files stay), wakes the scheduler.
    fn apply_wanted(&self) {
        let tenants: Vec<Arc<Tenant>> = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
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
            self.want(&mut hosts, host, domain);
        }
        drop(hosts);
        self.wake.notify_one();
    }

    /// Marks `host` wanted and publishes its cached certificate and status.
    fn want(&self, hosts: &mut HashMap<String, Host>, host: String, domain: String) {
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
        self.board.set(&host, h.status());
    }

    /// [`AcmeProvider::apply_wanted`] for the hosts one swap changed only.
    fn apply_changes(&self, changes: &HostChanges) {
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut hosts = self.lock_hosts();
        for host in changes.removed.iter().filter(|h| !extra.contains(h)) {
            self.resolver.remove(host);
            self.board.remove(host);
            if let Some(h) = hosts.get_mut(host)
                && std::mem::replace(&mut h.wanted, false)
            {
                tracing::info!(domain = %h.domain, "host removed; its renewals stop, its files stay");
            }
        }
        for t in changes.added.iter().chain(&changes.changed) {
            self.want(&mut hosts, t.host.clone(), t.domain.clone());
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
        *self.tenants.lock().unwrap_or_else(|e| e.into_inner()) = tenants
            .iter()
            .map(|t| (t.host.clone(), t.clone()))
            .collect();
        self.apply_wanted();
    }

    fn sync_changes(&self, changes: &HostChanges, _all: &dyn Fn() -> Vec<Arc<Tenant>>) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        for host in &changes.removed {
            tenants.remove(host);
        }
        for t in changes.added.iter().chain(&changes.changed) {
            tenants.insert(t.host.clone(), t.clone());
        }
        drop(tenants);
        self.apply_changes(changes);
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

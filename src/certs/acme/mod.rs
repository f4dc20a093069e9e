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
//! - An attempt (`scheduler.rs`): DNS preflight ([`preflight`]; with DNS-01, the challenge
//!   CNAME decides the challenge) → account → order slot → [`issue::issue`] (TLS-ALPN-01
//!   through the resolver, HTTP-01 through [`http01`], DNS-01 through [`dns01`]) → store.
//!   Its outcome goes through the pure transition of `host.rs`, which decides the host's state:
//!   the new certificate and its renewal time, the next ARI query, the preflight re-check, or a
//!   backoff (exponential with jitter, or until the CA's Retry-After).
//! - In a cluster ([`cluster`], [`AcmeProvider::join_cluster`]) only the leader runs attempts;
//!   every answer is shared with the other replicas, which install it, and each replica
//!   serves the certificates the leader stores once told of them.

pub mod client;
pub mod cluster;
pub mod dns01;
mod host;
pub mod http01;
pub mod issue;
pub mod pace;
pub mod preflight;
mod scheduler;

pub use client::AccountError;
pub use issue::IssueError;
pub use preflight::PreflightError;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use instant_acme::Account;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::provider::drop_removed;
use super::queue::IssueQueue;
use super::store::CertStore;
use super::{CertBoard, CertEntry, CertProvider, CertResolver, HostChanges};
use crate::config::{AcmeConfig, Tenant};
use crate::stats::Metrics;
use crate::util::hash::FastMap;
use client::{CaClient, RetryAfterSlot};
use host::{Host, NAME, Now};
use pace::OrderLimiter;

/// New orders remembered for [`AcmeProvider::recent_orders`].
const ORDER_LOG_LEN: usize = 1000;

/// Stored certificates read on the start-up path; above this many they are read in the
/// background (and each at its host's first handshake): reading and parsing a million stored
/// certificates one after another kept a restart from serving for minutes.
pub const INLINE_LOAD_LIMIT: usize = 1000;

/// The ACME certificate provider and its scheduler.
pub struct AcmeProvider {
    cfg: AcmeConfig,
    store: Arc<dyn CertStore>,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    /// HTTP-01 answers, served by [`http01::run`].
    pub tokens: Arc<http01::Tokens>,
    /// DNS-01 answers, served by the built-in zone.
    pub dns01: Arc<dns01::Answers>,
    client: CaClient,
    retry_after: RetryAfterSlot,
    /// The DNS preflight's resolver: built when the preflight is enabled or DNS-01 is
    /// configured (whose challenge CNAME is always checked before an order).
    preflight: Option<preflight::Checker>,
    account: tokio::sync::Mutex<Option<Account>>,
    ari_supported: AtomicBool,
    /// The CA said the account does not exist: create a new one before the next order.
    account_stale: AtomicBool,
    hosts: Mutex<FastMap<String, Host>>,
    /// Hosts with stored files not read yet (see [`INLINE_LOAD_LIMIT`]). The scheduler
    /// starts only once it is empty, so no host is ordered for while its certificate waits.
    unread: IssueQueue,
    /// The last tenant list and the extra (non-tenant) hosts, together the wanted set.
    tenants: Mutex<FastMap<String, Arc<Tenant>>>,
    extra: Mutex<Vec<String>>,
    limiter: Mutex<OrderLimiter>,
    wake: Notify,
    /// Recent new orders (host, when), newest last, at most [`ORDER_LOG_LEN`].
    orders: Mutex<VecDeque<(String, Instant)>>,
    /// Where finished orders are counted (`mta_stsd_acme_orders_total{result}`).
    metrics: Arc<Metrics>,
    /// Set when the provider is one replica of a cluster ([`AcmeProvider::join_cluster`]).
    cluster: cluster::ClusterSlot,
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
        let parts = (store, resolver, board, metrics);
        Self::with_inline_limit(cfg, parts, INLINE_LOAD_LIMIT)
    }

    /// [`AcmeProvider::new`] reading at most `inline_limit` stored certificates at once.
    fn with_inline_limit(
        cfg: AcmeConfig,
        (store, resolver, board, metrics): (
            Arc<dyn CertStore>,
            Arc<CertResolver>,
            Arc<CertBoard>,
            Arc<Metrics>,
        ),
        inline_limit: usize,
    ) -> anyhow::Result<Self> {
        let retry_after = RetryAfterSlot::default();
        let client = CaClient::new(&cfg.trusted_roots, retry_after.clone())?;
        let preflight = if cfg.preflight.enabled || cfg.dns01_zone.is_some() {
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
            dns01: Arc::default(),
            client,
            retry_after,
            preflight,
            account: tokio::sync::Mutex::new(None),
            ari_supported: AtomicBool::new(true),
            account_stale: AtomicBool::new(false),
            hosts: Mutex::new(FastMap::default()),
            unread: IssueQueue::default(),
            tenants: Mutex::default(),
            extra: Mutex::default(),
            limiter: Mutex::new(limiter),
            wake: Notify::new(),
            orders: Mutex::default(),
            metrics,
            cluster: cluster::ClusterSlot::new(),
            cfg,
        };
        provider.list_cache(inline_limit);
        Ok(provider)
    }

    /// The most recent new orders (host, when placed), oldest first.
    pub fn recent_orders(&self) -> Vec<(String, Instant)> {
        let log = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, FastMap<String, Host>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the stored certificates now if there are at most `inline_limit`, else queues
    /// them for [`AcmeProvider::read_stored`] and the handshakes.
    fn list_cache(&self, inline_limit: usize) {
        let hosts = match self.store.hosts() {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::error!(error = %e, "cannot list stored certificates");
                return;
            }
        };
        if hosts.len() <= inline_limit {
            for host in hosts {
                self.load_one(&host);
            }
            return;
        }
        tracing::info!(
            certificates = hosts.len(),
            "stored certificates are read in the background; a handshake reads its own at once"
        );
        for host in hosts {
            self.unread.push(&host);
        }
    }

    /// Reads `host`'s stored certificate into memory, with any backoff that was running, and
    /// publishes it if the host is wanted. A bad file is logged and skipped: that host is
    /// ordered again, the others are served.
    fn load_one(&self, host: &str) {
        let now = Now::current();
        let mut entry = Host::new(host.trim_start_matches("mta-sts.").to_owned());
        if let Some((cert, directory, issued_at)) = self.cached_cert(host, now.unix) {
            entry = self.rules().adopt(&entry, cert, directory, &now);
            entry.issued_at = issued_at;
        }
        if let Ok(Some(status)) = self.store.load_status(host) {
            entry = entry.resume(&status, &now);
        }
        let mut hosts = self.lock_hosts();
        // Wanted before it was read (the first sync runs before the background reads).
        if let Some(known) = hosts.get(host) {
            entry.domain.clone_from(&known.domain);
            entry.wanted = known.wanted;
        }
        if entry.wanted {
            if let Some(cert) = &entry.cert {
                self.resolver.publish_shared(host, cert.clone());
            }
            self.board.set(host, entry.status());
        }
        hosts.insert(host.to_owned(), entry);
    }

    /// Reads every queued stored certificate on one blocking thread per core, until `stop`.
    pub(super) async fn read_stored(self: &Arc<Self>, stop: &tokio::sync::watch::Receiver<bool>) {
        if self.unread.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let read =
            super::queue::drain_on_every_core(self, |p| &p.unread, Self::load_one, stop).await;
        tracing::info!(
            certificates = read,
            elapsed_ms = started.elapsed().as_millis(),
            "stored certificates read"
        );
    }

    /// The stored certificate of `host`, the directory of its CA and when it was issued
    /// (the store's time), while it is valid.
    fn cached_cert(&self, host: &str, now: i64) -> Option<(Arc<CertEntry>, String, i64)> {
        let stored = match self.store.load_cert(host) {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(host, error = %e, "cannot read cached certificate");
                return None;
            }
        };
        match CertEntry::from_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes()) {
            Ok(cert) if cert.info.not_after > now => {
                Some((Arc::new(cert), stored.meta.directory, stored.meta.issued_at))
            }
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
    fn want(&self, hosts: &mut FastMap<String, Host>, host: String, domain: String) {
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

    /// A handshake for a host whose stored certificate is not read yet reads it now.
    fn issue_now(&self, host: &str) -> bool {
        if self.unread.take(host) {
            self.load_one(host);
        }
        self.resolver.contains(host)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertState;
    use crate::certs::store::{CertMeta, FileStore, StoredCert};

    fn stored(host: &str, directory: &str) -> StoredCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        StoredCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            meta: CertMeta {
                directory: directory.to_owned(),
                order_url: None,
                issued_at: crate::util::unix_now(),
            },
        }
    }

    fn tenant(domain: &str) -> Arc<Tenant> {
        let yaml = format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\n");
        let parsed = crate::config::parse_tenants(std::path::Path::new("t.yaml"), &yaml);
        Arc::new(parsed.tenants.into_iter().next().unwrap())
    }

    #[tokio::test]
    async fn stored_certificates_over_the_limit_are_read_at_a_handshake_or_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AcmeConfig::default();
        cfg.preflight.enabled = false;
        let store = Arc::new(FileStore::new(dir.path()));
        let domains = ["a.example", "b.example", "c.example"];
        for d in domains {
            let host = format!("mta-sts.{d}");
            store
                .save_cert(&host, &stored(&host, &cfg.directory))
                .unwrap();
        }
        let (resolver, board) = (Arc::new(CertResolver::new()), Arc::new(CertBoard::new()));
        let parts = (store as Arc<dyn CertStore>, resolver.clone(), board.clone());
        let parts = (parts.0, parts.1, parts.2, Arc::new(Metrics::default()));
        let provider = Arc::new(AcmeProvider::with_inline_limit(cfg, parts, 2).unwrap());
        provider.sync(&domains.map(tenant));
        assert_eq!(
            resolver.len(),
            0,
            "three stored, limit two: none read at start"
        );
        let valid = |host: &str| board.get(host).is_some_and(|s| s.state == CertState::Valid);
        assert!(!valid("mta-sts.b.example"), "not ready before it is read");

        assert!(
            provider.issue_now("mta-sts.b.example"),
            "read at its handshake"
        );
        assert!(valid("mta-sts.b.example"));
        assert!(!resolver.contains("mta-sts.a.example"));
        assert!(!provider.issue_now("mta-sts.unknown.example"));

        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        provider.read_stored(&stop).await;
        assert_eq!(resolver.len(), 3);
        assert!(domains.iter().all(|d| valid(&format!("mta-sts.{d}"))));
        assert!(provider.unread.is_empty());
        assert!(provider.recent_orders().is_empty());
    }
}
